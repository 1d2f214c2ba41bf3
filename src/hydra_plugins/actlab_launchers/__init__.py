"""actlab's Hydra launchers under the namespace Hydra accepts plugins from (the code is in actlab.run)."""
