"""`hydra/launcher=local`: Hydra's joblib launcher, stopped gently on Ctrl-C or SIGTERM (actlab.run.sweep_stop).

    actlab-train -m hydra/launcher=local hydra.launcher.n_jobs=2 activation=relu,helu seed=0,1
"""

from __future__ import annotations

from hydra_plugins.hydra_joblib_launcher.joblib_launcher import JoblibLauncher

from actlab.run import interrupt, sweep_stop


class LocalLauncher(JoblibLauncher):
    """Once the sweep is stopping, a sweeper that launches in batches (Optuna) gets no further batch. A
    worker that the signal reaches while it is still starting (unpickling its first job: torch's import)
    dies before any run of ours begins, and joblib raises BrokenProcessPool; while the sweep is stopping,
    that is the stop (its summary and 128 + N), not a crash with a traceback."""

    def launch(self, job_overrides, initial_job_idx):
        if sweep_stop.stopping():  # the last batch ended normally: each of its jobs logged its outcome
            raise interrupt.SweepStopped(sweep_stop.stopping(), gentle=True)
        try:
            return super().launch(job_overrides, initial_job_idx)
        except Exception:
            if sweep_stop.stopping():
                raise interrupt.SweepStopped(sweep_stop.stopping()) from None
            raise
