"""Signals during a run: SIGTERM (SLURM preemption and time limits, `scancel`, `kill`), SIGINT (Ctrl-C)
and SIGUSR2 (SLURM's `--signal=USR2@<s>` warning before a time limit, which submitit asks for) end the
run as `interrupted` (resumable) and the process with 128 + the signal number, never 0. Under
hydra/launcher=slurm the job then requeues itself or ends as SLURM says (actlab.run.slurm).

Lightning's own SIGTERM handling raises SIGTERMException, a SystemExit with code 0, at the next batch
boundary; `during_run` instead raises RunInterrupted at once (Lightning composes it with its handler
during fit), and `from_exception` maps Lightning's exception and KeyboardInterrupt onto the same thing.
"""

from __future__ import annotations

import contextlib
import signal
import threading


class RunInterrupted(Exception):
    """The run was stopped by a signal; its record says `interrupted` and a relaunch resumes it."""

    def __init__(self, signum: int):
        self.signum = signum
        self.exit_code = 128 + signum
        super().__init__(f"interrupted by {signal.Signals(signum).name}; relaunch the same command to resume "
                         "from the last checkpoint")


class SweepStopped(KeyboardInterrupt):
    """SIGTERM to a sweep's launching process outside its runs: stops the sweep the way Ctrl-C does (a
    KeyboardInterrupt, which joblib answers by stopping its workers), with the signal's own exit code."""

    def __init__(self, signum: int):
        super().__init__(f"stopped by {signal.Signals(signum).name}")
        self.signum = signum


def stop_sweep_on_sigterm() -> None:
    """In a sweep's launching process (main thread): SIGTERM raises SweepStopped. A run inside that process
    (basic launcher) swaps in its own handlers while it runs (during_run) and restores this one after."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _raise_stopped)


def _raise_stopped(signum, frame):
    raise SweepStopped(signum)


def from_exception(err: BaseException) -> RunInterrupted | None:
    """The RunInterrupted an exception stands for (Lightning's SIGTERMException, Ctrl-C), else None."""
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    if isinstance(err, RunInterrupted):
        return err
    if isinstance(err, SIGTERMException):
        return RunInterrupted(signal.SIGTERM)
    if isinstance(err, KeyboardInterrupt):
        return RunInterrupted(getattr(err, "signum", signal.SIGINT))
    return None


@contextlib.contextmanager
def during_run():
    """SIGTERM, SIGINT and SIGUSR2 raise RunInterrupted in the main thread for the duration of the block
    (Lightning turns a KeyboardInterrupt into exit code 1; an exception of ours passes through it). USR2's
    default action would kill the process without a record; submitit's handler for it would exit from
    the middle of training, leaving a `failed` record that says SystemExit."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise RunInterrupted(signum)

    handled = [signal.SIGTERM, signal.SIGINT, *([signal.SIGUSR2] if hasattr(signal, "SIGUSR2") else [])]
    old = {s: signal.signal(s, handler) for s in handled}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)
