"""Signal handling inside one process: during_run, its hold while the record is written, a parallel sweep
worker's deferral between runs, and the launcher's view of its workers. Each case runs in a fresh Python
process, since it changes signal handlers and module state (the real sweeps are in test_hostile.py)."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def _python(code: str) -> subprocess.CompletedProcess:
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-3000:]
    return out


def test_every_signal_raises_until_the_run_holds_then_none_does():
    """A signal swallowed by library code must not make the run unstoppable, so each one raises until the
    run starts writing its final record (hold); from then on none cuts it."""
    out = _python("""
        import os, signal
        from actlab.run import interrupt
        raised = []
        with interrupt.during_run():
            for sig in (signal.SIGINT, signal.SIGTERM):
                try:
                    os.kill(os.getpid(), sig)
                except interrupt.RunInterrupted as e:
                    raised.append(e.exit_code)
            interrupt.hold()
            os.kill(os.getpid(), signal.SIGINT)  # noted nowhere, raises nothing
            raised.append("held")
        print(raised, signal.getsignal(signal.SIGINT) is signal.default_int_handler)
    """)
    assert out.stdout.split("\n")[0] == "[130, 143, 'held'] True"


def test_hold_ends_with_the_run():
    out = _python("""
        import os, signal
        from actlab.run import interrupt
        with interrupt.during_run():
            interrupt.hold()
        try:
            with interrupt.during_run():
                os.kill(os.getpid(), signal.SIGTERM)
        except interrupt.RunInterrupted as e:
            print(e.exit_code)
    """)
    assert out.stdout.strip() == "143"


def test_a_worker_notes_signals_between_runs_and_starts_no_run_after_one():
    out = _python("""
        import os, signal
        from actlab.run import interrupt
        interrupt.defer_between_runs()
        print(interrupt.pending())
        os.kill(os.getpid(), signal.SIGTERM)  # an idle worker: survives, notes it
        os.kill(os.getpid(), signal.SIGINT)   # the first signal is the one kept
        print(interrupt.pending())
        try:
            with interrupt.during_run():
                print("run started")
        except interrupt.RunInterrupted as e:
            print(e.exit_code)
    """)
    assert out.stdout.split() == ["None", "15", "143"]


def test_the_launcher_finds_its_worker_processes():
    out = _python("""
        import subprocess, sys
        from actlab.run import sweep_stop
        kids = [subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"]) for _ in range(2)]
        shell = subprocess.Popen(["sh", "-c", "sleep 30 & wait"])  # its sleep is not ours
        found = sweep_stop._children()
        print(sorted(k.pid for k in kids + [shell]) == sorted(found))
        for k in kids + [shell]:
            k.kill()
    """)
    assert out.stdout.strip() == "True"


def test_a_stopping_sweeps_marker_reaches_its_jobs(tmp_path):
    """A queued job in a worker sees the launcher's marker beside the sweep log and does not start."""
    log = tmp_path / "20261206-120000-1.jsonl"
    out = _python(f"""
        from pathlib import Path
        from actlab.run import sweep_stop
        sweep_stop.worker_start({str(log)!r})
        print(sweep_stop.requested())
        sweep_stop.marker_of({str(log)!r}).write_text("2\\n")
        print(sweep_stop.requested(), sweep_stop.marker_of({str(log)!r}).name)
    """)
    assert out.stdout.split() == ["False", "True", "20261206-120000-1.stop"]


def test_a_signal_that_library_code_turned_into_another_error_is_still_an_interruption():
    """inspect.getfullargspec catches Exception and raises TypeError('unsupported callable') from it: a
    Ctrl-C landing there (seen in a real parallel sweep) was recorded as a failed run with that TypeError."""
    out = _python("""
        import os, signal
        from actlab.run import interrupt
        with interrupt.during_run():
            try:
                try:
                    os.kill(os.getpid(), signal.SIGINT)
                except Exception as ex:
                    raise TypeError("unsupported callable") from ex
            except TypeError as e:
                print(interrupt.from_exception(e).exit_code)
        print(interrupt.from_exception(TypeError("a real one")))  # outside a signalled run: not an interruption
        with interrupt.during_run():
            print(interrupt.from_exception(ValueError("no signal in this run")))
    """)
    assert out.stdout.split() == ["130", "None", "None"]
