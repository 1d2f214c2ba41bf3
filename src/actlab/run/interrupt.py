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
    """A signal that stops a sweep in its launching process, outside its runs (SIGTERM to a basic or SLURM
    launcher; a parallel sweep's second signal, or its end once stopping: actlab.run.sweep_stop): handled as
    Ctrl-C is (a KeyboardInterrupt, which joblib answers by stopping its workers), with the signal's own
    exit code."""

    def __init__(self, signum: int, gentle: bool = False):
        super().__init__(f"stopped by {signal.Signals(signum).name}")
        self.signum = signum
        self.gentle = gentle  # every job that started has logged its outcome (actlab.run.sweep_stop)


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
    if _received:  # our exception, turned into another by code that catches Exception (inspect.getfullargspec
        return RunInterrupted(_received)  # raises TypeError('unsupported callable') from it): still the signal
    return None


_pending: int | None = None  # a signal a sweep's worker got between its runs (defer_between_runs)
_holding = False  # the current run is writing its final record (hold)
_received: int | None = None  # the first signal the current run got (during_run)


def defer_between_runs() -> None:
    """In a parallel sweep's worker process (main thread): SIGINT and SIGTERM between runs are noted, not
    raised, so an idle worker survives the Ctrl-C that also reaches its launcher (loky would report it
    as a crashed worker); a run that starts after one is interrupted at once (during_run)."""
    if threading.current_thread() is threading.main_thread():
        for s in (signal.SIGINT, signal.SIGTERM):
            signal.signal(s, _note)


def _note(signum, frame):
    global _pending
    _pending = _pending or signum


def pending() -> int | None:
    """The signal this worker noted between runs, if any (its sweep is stopping)."""
    return _pending


@contextlib.contextmanager
def during_run():
    """SIGTERM, SIGINT and SIGUSR2 raise RunInterrupted in the main thread for the duration of the block
    (Lightning turns a KeyboardInterrupt into exit code 1; an exception of ours passes through it). USR2's
    default action would kill the process without a record; submitit's handler for it would exit from
    the middle of training, leaving a `failed` record that says SystemExit. Once the run is writing its
    interrupted or failed record (hold), further signals are noted, not raised: Ctrl-C reaches a parallel
    sweep's worker from the terminal and again from its launcher, and the second must not cut the record.
    Until then every signal raises, so one swallowed by library code does not make the run unstoppable."""
    global _holding, _received
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    if _pending:  # a worker whose sweep is stopping: no new run
        raise RunInterrupted(_pending)

    def handler(signum, frame):
        global _received
        if not _holding:
            _received = _received or signum
            raise RunInterrupted(signum)

    handled = [signal.SIGTERM, signal.SIGINT, *([signal.SIGUSR2] if hasattr(signal, "SIGUSR2") else [])]
    old = {s: signal.signal(s, handler) for s in handled}
    _holding, _received = False, None
    try:
        yield
    finally:
        _holding, _received = False, None
        for s, h in old.items():
            signal.signal(s, h)


def hold() -> None:
    """The run is writing its final record: signals until the end of during_run are ignored."""
    global _holding
    _holding = True
