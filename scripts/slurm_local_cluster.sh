#!/usr/bin/env bash
# A real one-node SLURM cluster on this machine, for tests/test_slurm.py (hydra/launcher=slurm):
#
#     make slurm                                     # apt-get install slurm-wlm munge, then `start`
#     bash scripts/slurm_local_cluster.sh start      # munged, slurmctld, slurmd; waits for the node to be idle
#     bash scripts/slurm_local_cluster.sh status     # daemons and `sinfo`
#     bash scripts/slurm_local_cluster.sh stop
#
# Needs root (slurmd runs jobs as their submitting user) and Debian's slurm-wlm and munge; it installs
# nothing. It writes /etc/slurm/slurm.conf (where every SLURM command looks for it), marked as ours and
# never over a file it did not write, naming this host (`hostname -s`, reached on 127.0.0.1) with the
# CPUs and memory `slurmd -C` reports; state, spool and logs live under $ACTLAB_SLURM_DIR
# (/tmp/actlab-slurm). No systemd: the daemons detach themselves and are stopped by their pid files.
#
# Choices:
# - Accounting: none (AccountingStorageType=accounting_storage/none). `sacct` needs slurmdbd and a
#   MariaDB server, too heavy for a test machine. Job states come from `squeue`/`scontrol show job`
#   while a job is known (MinJobAge=600 s after it ends) and from the completion log
#   (JobCompType=jobcomp/filetxt, $ACTLAB_SLURM_DIR/log/jobcomp.log: one line per finished job with its
#   final JobState and ExitCode). actlab's launcher (actlab.run.slurm) waits on squeue, not sacct, so a
#   job that dies without a result does not hang the sweep.
# - SelectType=select/cons_tres with CR_Core_Memory: jobs get cores and memory, not the whole node, so
#   two 1-CPU jobs share a 2-core node; DefMemPerCPU keeps a job without --mem from taking all memory.
# - JobRequeue=1 (batch jobs may be requeued: `scontrol requeue`, submitit's own requeue on USR2) and a
#   short KillWait (SIGTERM, then SIGKILL 10 s later: time for a run to write its record, not more).
# - ProctrackType=proctrack/linuxproc, TaskPlugin=task/none: no cgroups in a container.
set -euo pipefail

DIR=${ACTLAB_SLURM_DIR:-/tmp/actlab-slurm}
CONF=/etc/slurm/slurm.conf
MARK="# written by actlab scripts/slurm_local_cluster.sh"
PARTITION=actlab
TIMEOUT_S=${ACTLAB_SLURM_TIMEOUT_S:-60}

die() { echo "slurm_local_cluster: $*" >&2; exit 1; }

logs_tail() {
    for f in "$DIR"/munge/munged.log "$DIR"/log/slurmctld.log "$DIR"/log/slurmd.log; do
        [ -f "$f" ] && { echo "--- tail of $f" >&2; tail -n 15 "$f" >&2; }
    done
    return 0
}

pidfile() { if [ "$1" = munged ]; then echo "$DIR/munge/munged.pid"; else echo "$DIR/$1.pid"; fi; }
pid_alive() { [ -f "$1" ] && kill -0 "$(cat "$1" 2>/dev/null)" 2>/dev/null; }

checks() {
    [ "$(id -u)" = 0 ] || die "needs root (slurmd runs the jobs); run it as root, or skip the slurm tests"
    local missing=""
    for cmd in munged munge slurmctld slurmd sinfo sbatch scontrol; do
        command -v "$cmd" >/dev/null || missing="$missing $cmd"
    done
    [ -z "$missing" ] || die "missing:$missing; install them with: make slurm (apt-get install slurm-wlm munge)"
    if [ -f "$CONF" ] && ! grep -qF "$MARK" "$CONF"; then
        die "$CONF exists and was not written by this script (a real cluster?); move it away to use the local one"
    fi
}

write_conf() {
    local host node
    host=$(hostname -s)
    node=$(slurmd -C | head -n 1)  # NodeName=<host> CPUs=.. Boards=.. SocketsPerBoard=.. CoresPerSocket=.. ThreadsPerCore=.. RealMemory=..
    [[ $node == "NodeName=$host "* ]] || die "slurmd -C says '$node', expected NodeName=$host"
    mkdir -p "$DIR"/state "$DIR"/spool "$DIR"/log /etc/slurm
    cat > "$CONF" <<EOF
$MARK (see there); state and logs in $DIR
ClusterName=actlab
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SwitchType=switch/none
ReturnToService=2
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1024
JobRequeue=1
KillWait=10
MinJobAge=600
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/filetxt
JobCompLoc=$DIR/log/jobcomp.log
SchedulerParameters=sched_interval=2
$node State=UNKNOWN NodeAddr=127.0.0.1
PartitionName=$PARTITION Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
}

start_munge() {
    if munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1; then
        return 0  # a munged already answers (ours from an earlier start, or the machine's)
    fi
    mkdir -p /etc/munge /run/munge /var/lib/munge /var/log/munge
    if [ ! -s /etc/munge/munge.key ]; then
        dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
    fi
    chown munge:munge /etc/munge/munge.key /run/munge /var/lib/munge /var/log/munge
    chmod 400 /etc/munge/munge.key
    chmod 755 /run/munge
    mkdir -p "$DIR/munge" && chown munge:munge "$DIR/munge"  # munged (user munge) writes its pid and log there
    runuser -u munge -- munged --log-file="$DIR/munge/munged.log" --pid-file="$DIR/munge/munged.pid" \
        || { logs_tail; die "munged did not start"; }
    for _ in $(seq 20); do
        munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1 && return 0
        sleep 0.5
    done
    logs_tail
    die "munged started but munge -n | unmunge fails"
}

node_state() { sinfo -h -N -n "$(hostname -s)" -o %T 2>/dev/null | head -n 1; }

start() {
    checks
    if pid_alive "$DIR/slurmctld.pid" && pid_alive "$DIR/slurmd.pid" && [ "$(node_state)" = idle ]; then
        echo "slurm_local_cluster: already running"; sinfo; return 0
    fi
    stop quiet
    write_conf
    start_munge
    # -c: a fresh state, no old jobs; job ids start again at 1, so the completion log starts again too
    if [ -f "$DIR/log/jobcomp.log" ]; then mv "$DIR/log/jobcomp.log" "$DIR/log/jobcomp.log.prev"; fi
    slurmctld -c -i || { logs_tail; die "slurmctld did not start"; }
    slurmd || { logs_tail; die "slurmd did not start"; }
    local deadline=$((SECONDS + TIMEOUT_S)) state=""
    while [ $SECONDS -lt $deadline ]; do
        state=$(node_state || true)
        if [ "$state" = idle ]; then
            echo "slurm_local_cluster: up (conf $CONF, state and logs in $DIR)"; sinfo; return 0
        fi
        case "$state" in drain*|down*) scontrol update nodename="$(hostname -s)" state=resume 2>/dev/null || true ;; esac
        sleep 1
    done
    logs_tail
    die "node $(hostname -s) not idle after ${TIMEOUT_S}s (state: '${state:-unknown}'); daemon logs above"
}

stop() {
    local name pf
    for name in slurmd slurmctld munged; do
        pf=$(pidfile $name)
        if pid_alive "$pf"; then
            kill "$(cat "$pf")"
            for _ in $(seq 20); do pid_alive "$pf" || break; sleep 0.5; done
            if pid_alive "$pf"; then kill -9 "$(cat "$pf")"; fi
        fi
        rm -f "$pf"
    done
    [ "${1:-}" = quiet ] || echo "slurm_local_cluster: stopped"
}

status() {
    local name rc=0
    for name in munged slurmctld slurmd; do
        if pid_alive "$(pidfile $name)"; then echo "$name: running (pid $(cat "$(pidfile $name)"))"
        elif [ $name = munged ] && munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1; then
            echo "munged: running (not started by this script)"
        else echo "$name: not running"; rc=1; fi
    done
    sinfo 2>&1 || rc=1
    return $rc
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) status ;;
    *) die "usage: $0 start|stop|status" ;;
esac
