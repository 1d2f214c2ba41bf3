"""hydra/launcher=slurm's class: Hydra instantiates launchers only from the hydra_plugins namespace.

    actlab-train -m hydra/launcher=slurm activation=relu,helu seed=0,1,2

The code is actlab.run.slurm (waiting on squeue, requeue and failure handling).
"""

try:
    from actlab.run.slurm import SlurmLauncher as _SlurmLauncher
except ImportError:  # no hydra-submitit-launcher (pip install actlab[launchers]): Hydra's plugin scan stays quiet
    _SlurmLauncher = None

if _SlurmLauncher is not None:

    class SlurmLauncher(_SlurmLauncher):
        """actlab.run.slurm.SlurmLauncher under a name Hydra accepts."""
