"""Pure formulas of the dormancy, rank and revival metrics of the dead-neuron monitor (keys: actlab.monitor).

Every function takes per-unit statistics (or a feature Gram matrix, or masks) as tensors and returns
tensors or floats; gathering those statistics over a probe set is actlab.monitor's job.

    scores = redo_scores(mean_abs)                  # ReDo (Sokar et al. 2023), per unit of one layer
    dormant = redo_dormant(scores, 0.025)           # per-unit bool: tau-dormant
    sv = singular_values_from_gram(F.T @ F)         # singular values of F without keeping F
    effective_rank(sv), approx_rank(sv)             # Roy & Vetterli 2007; smallest k with 99 % of sum sv^2
"""

from __future__ import annotations

import torch

REDO_EPS = 1e-9  # added to the layer mean, as google/dopamine labs/redo/weight_recyclers.py does
REDO_TAUS = (0.0, 0.025, 0.1)  # the thresholds of Sokar et al. 2023
FREQ_THRESHOLD = 0.01  # Dohare et al. 2024: dormant when active on fewer than 1 % of inputs
APPROX_RANK_MASS = 0.99  # approx_rank: share of sum(sv^2) the top-k singular values must hold


def redo_scores(mean_abs: torch.Tensor) -> torch.Tensor:
    """s_i = E|h_i| / (mean_k E|h_k| + 1e-9): ReDo's normalised score of each unit of one layer, from the
    per-unit mean absolute activation output E|h_i| (over inputs and, for conv / sequence layers, positions)."""
    mean_abs = mean_abs.double()
    return mean_abs / (mean_abs.mean() + REDO_EPS)


def redo_dormant(scores: torch.Tensor, tau: float) -> torch.Tensor:
    """Per-unit bool: tau-dormant, score <= tau."""
    return scores <= tau


def freq_dormant(active_frac: torch.Tensor, threshold: float = FREQ_THRESHOLD) -> torch.Tensor:
    """Per-unit bool: active (non-zero output) on fewer than `threshold` of the probe elements."""
    return active_frac < threshold


def singular_values_from_gram(gram: torch.Tensor) -> torch.Tensor:
    """Singular values (descending, float64, on the CPU) of F, given its Gram matrix F^T F: the square
    roots of the Gram's eigenvalues (negative rounding residue clamped to 0)."""
    evals = torch.linalg.eigvalsh(gram.detach().to("cpu", torch.float64))
    return evals.clamp_(min=0).sqrt_().flip(0)


def effective_rank(sv: torch.Tensor) -> float:
    """exp(H(p)), p_k = sv_k / sum(sv), H the Shannon entropy (0 log 0 = 0): Roy & Vetterli 2007.
    n equal singular values give n, one non-zero gives 1; all zero (no signal) gives 0."""
    sv = sv.double().abs()
    total = sv.sum()
    if not total > 0:
        return 0.0
    p = sv[sv > 0] / total
    return float(torch.exp(-(p * p.log()).sum()))


def approx_rank(sv: torch.Tensor, mass: float = APPROX_RANK_MASS) -> int:
    """Smallest k whose k largest singular values hold `mass` of sum(sv^2); 0 for an all-zero matrix."""
    sq = sv.double().square().sort(descending=True).values
    total = sq.sum()
    if not total > 0:
        return 0
    cum = sq.cumsum(0) / total
    # rounding may leave the full sum a hair under 1: never return more than the count of values
    return min(int((cum < mass - 1e-12).sum()) + 1, sv.numel())


def revival(prev_dead: torch.Tensor, dead: torch.Tensor) -> torch.Tensor:
    """int64 [previously dead units, of them still dead, of them revived] from two bool masks of one layer."""
    prev_dead = prev_dead.to(dead.device, torch.bool)
    if prev_dead.shape != dead.shape:
        raise ValueError(f"revival: the layer had {prev_dead.numel()} units, now {dead.numel()}")
    n, still = prev_dead.sum(), (prev_dead & dead).sum()
    return torch.stack([n, still, n - still])


def shares(n: int, still: int, revived: int) -> tuple[float, float]:
    """(still_dead, revived) as shares of the previously dead units; (0.0, 0.0) when there were none,
    as dopamine's dead_intersected_percent does."""
    return (still / n, revived / n) if n else (0.0, 0.0)


def grad_norms(grads: list[torch.Tensor | None]) -> torch.Tensor:
    """L2 norm of each gradient (0 for None), then the global norm sqrt(sum of squares): a float32 vector of
    len(grads) + 1 on the gradients' device, with no host sync (fused with torch._foreach_norm if there)."""
    present = [g for g in grads if g is not None]
    if not present:
        return torch.zeros(len(grads) + 1)
    dev = present[0].device
    try:
        norms = torch._foreach_norm(present)
    except (AttributeError, RuntimeError):  # an old torch, or grads on several devices
        norms = [torch.linalg.vector_norm(g) for g in present]
    it = iter(n.to(dev, torch.float32) for n in norms)
    zero = torch.zeros((), device=dev)
    per = torch.stack([next(it) if g is not None else zero for g in grads])
    return torch.cat([per, per.square().sum().sqrt().reshape(1)])
