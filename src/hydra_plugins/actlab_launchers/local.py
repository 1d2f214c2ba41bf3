"""hydra/launcher=local's class: Hydra instantiates launchers only from the hydra_plugins namespace.

    actlab-train -m hydra/launcher=local activation=relu,helu seed=0,1

The code is actlab.run.local_launcher (Hydra's joblib launcher, stopped gently by actlab.run.sweep_stop).
"""

try:
    from actlab.run.local_launcher import LocalLauncher as _LocalLauncher
except ImportError:  # no hydra-joblib-launcher (pip install actlab[launchers]): Hydra's plugin scan stays quiet
    _LocalLauncher = None

if _LocalLauncher is not None:

    class LocalLauncher(_LocalLauncher):
        """actlab.run.local_launcher.LocalLauncher under a name Hydra accepts."""
