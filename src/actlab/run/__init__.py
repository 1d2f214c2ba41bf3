"""The run layer: one training run from a composed config to its record (build -> runner -> records).

Imports the core (activations, models, data, monitor, margin) and tasks/callbacks; never report, bench or cli.
"""
