# Sourced by the experiment scripts (source scripts/sweep.sh; sweep experiment=demo_margins seed=0,1):
# `sweep ARGS...` runs `actlab-train -m ARGS...`. A sweep stopped by a signal (Ctrl-C: 130, SIGTERM: 143)
# stops the calling script with that code, so Ctrl-C never starts the next sweep; a sweep with failed runs
# only sets status=1, and the script goes on to its tables.
sweep() {
    "$BIN/actlab-train" -m "$@"
    local rc=$?
    if [ "$rc" -ge 128 ]; then
        echo "$(basename "$0"): stopped (exit $rc); rerun it to resume (completed runs are skipped)" >&2
        exit "$rc"
    fi
    [ "$rc" -eq 0 ] || status=1
}
