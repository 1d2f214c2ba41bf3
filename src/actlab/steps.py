"""Where a training epoch ends, as Lightning will decide it: for per-step code that logs epoch values itself."""

from __future__ import annotations


def last_train_batch(trainer, batch_idx: int) -> bool:
    """Whether training stops after batch `batch_idx`: the epoch's last batch, or the optimizer step that
    reaches trainer.max_steps (so epoch values logged with it reach the epoch-end hooks)."""
    if batch_idx + 1 >= trainer.num_training_batches:
        return True
    steps = (batch_idx + 1) % trainer.accumulate_grad_batches == 0
    return steps and trainer.max_steps is not None and 0 < trainer.max_steps <= trainer.global_step + 1
