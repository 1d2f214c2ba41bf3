"""LightningModules, one per kind of training: classify (images), glue (sequence classification), mlm."""
