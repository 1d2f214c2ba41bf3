"""Lightning callbacks a run composes from `conf/callbacks/`: margin schedule, dead-neuron monitor, history."""
