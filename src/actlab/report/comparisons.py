"""Each row of a summary against its baseline row, as `actlab report` states it: one sentence per comparison.

Per comparison (a row of `actlab summarize` and the baseline row with the same config but for the
activation and the seed; actlab.report.groups):
  * the effect: difference of the means (ours minus baseline; points for metrics shown in %);
  * its 95 % CI: paired (both rows ran the same seeds) the Student-t interval of the per-seed differences,
    else Welch's interval, diff ± t_{0.975, ν} sqrt(s1²/n1 + s2²/n2) with the Welch–Satterthwaite ν;
  * the two-sided p of the same test (actlab.report.stats.compare: paired t, else Welch t), and the p
    adjusted with Holm over the comparisons of one metric in one section (statsmodels multipletests,
    "holm"): the family is what one section claims about that metric;
  * the minimum detectable difference (MDD): the true difference that a two-sided test at α = 0.05
    detects with 80 % power for this n and the variance observed, from the noncentral t
    (statsmodels TTestPower on the per-seed differences when paired; TTestIndPower with the pooled
    std otherwise, the equal-variance approximation of Welch's test). A row with "no significant
    difference" and an MDD of 20 points says little; one with an MDD of 0.5 says the effect is small.
Runs are averaged per seed first (stats.per_seed, as compare does: duplicates of a seed are not replicates).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import special
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.power import TTestIndPower, TTestPower

from actlab.report import paper, style
from actlab.report.frame import is_nan
from actlab.report.groups import is_activation_key
from actlab.report.stats import compare, per_seed, t_ci
from actlab.report.summarize import Summary, scale_of
from actlab.report.tables import fmt_key, fmt_num, fmt_p

ALPHA = 0.05  # two-sided, for the tests, the CIs (95 %) and the MDD
POWER = 0.80
# The paper's Table 1 setting per dataset (/work/shared/paper/README.md): shown beside ours, never as ours.
PAPER_SETTING = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100", "imagenette": "Imagenette"}
PAPER_EPOCHS = {"cifar10": 100, "cifar100": 100, "imagenette": 50}
# Our image-classification datasets whose test accuracy mirrors Table 1's (XOR and GLUE do not).
TABLE1_MIRRORS = ("fashionmnist", *PAPER_SETTING)


@dataclass
class Comparison:
    """One row against its baseline row, in raw units (fractions for accuracies); `p_holm` and `m` are
    filled by `adjust` over a family of comparisons."""

    keys: dict  # the row's --by keys and values (activation, margin, ...)
    base_keys: dict
    metric: str
    test: str  # "paired", "welch" or "" (a side with n < 2: no test)
    n: int  # seeds (runs averaged per seed) of the row
    n_base: int
    diff: float
    ci: tuple[float, float]
    p: float
    mdd: float
    identical: bool = False  # paired and equal on every seed
    p_holm: float = math.nan
    m: int = 0
    dataset: object = None  # the row's dataset (for the paper's claim), whether or not it is a --by key

    @property
    def label(self) -> str:
        return style.label_for(self.keys.get("activation"), self.keys.get("margin"))

    @property
    def base_label(self) -> str:
        return style.label_for(self.base_keys.get("activation"), self.base_keys.get("margin"))

    @property
    def context(self) -> str:
        """The row's other keys ("model=mlp"), the ones it shares with its baseline row."""
        return ", ".join(f"{k}={fmt_key(v)}" for k, v in self.keys.items() if not is_activation_key(k))


# --- statistics ----------------------------------------------------------------------------------------
def welch_ci(a: np.ndarray, b: np.ndarray, level: float = 1 - ALPHA) -> tuple[float, float]:
    """Welch's interval of mean(a) - mean(b) (NaN when a side has n < 2)."""
    if len(a) < 2 or len(b) < 2:
        return (math.nan, math.nan)
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    diff = float(a.mean() - b.mean())
    if va + vb == 0:
        return (diff, diff)
    nu = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    half = float(special.stdtrit(nu, (1 + level) / 2)) * math.sqrt(va + vb)
    return (diff - half, diff + half)


def mdd_paired(d: np.ndarray, alpha: float = ALPHA, power: float = POWER) -> float:
    """Smallest mean difference a two-sided paired t-test on n differences detects with `power`."""
    sd = float(np.std(d, ddof=1)) if len(d) >= 2 else math.nan
    if not sd > 0:
        return math.nan
    effect = TTestPower().solve_power(effect_size=None, nobs=len(d), alpha=alpha, power=power,
                                      alternative="two-sided")
    return float(effect) * sd


def mdd_independent(a: np.ndarray, b: np.ndarray, alpha: float = ALPHA, power: float = POWER) -> float:
    """Smallest difference of means a two-sided two-sample t-test detects with `power` (pooled std)."""
    n1, n2 = len(a), len(b)
    if n1 < 2 or n2 < 2:
        return math.nan
    pooled = math.sqrt(((n1 - 1) * a.var(ddof=1) + (n2 - 1) * b.var(ddof=1)) / (n1 + n2 - 2))
    if not pooled > 0:
        return math.nan
    effect = TTestIndPower().solve_power(effect_size=None, nobs1=n1, ratio=n2 / n1, alpha=alpha, power=power,
                                         alternative="two-sided")
    return float(effect) * pooled


def holm(p: list[float]) -> np.ndarray:
    """Holm-adjusted p-values of the finite ones in `p` (the family); NaN stays NaN."""
    p = np.asarray(p, dtype=float)
    out = np.full(len(p), np.nan)
    ok = np.isfinite(p)
    if ok.any():
        out[ok] = multipletests(p[ok], alpha=ALPHA, method="holm")[1]
    return out


def adjust(family: list[Comparison]) -> None:
    """Fill p_holm and m (the number of tested comparisons) of a family, in place."""
    adjusted = holm([c.p for c in family])
    m = int(np.isfinite([c.p for c in family]).sum())
    for c, q in zip(family, adjusted):
        c.p_holm, c.m = float(q), m


def compare_runs(ours: np.ndarray, ours_seeds: np.ndarray, base: np.ndarray, base_seeds: np.ndarray
                 ) -> tuple[str, int, int, float, tuple, float, float, bool]:
    """(test, n, n_base, diff, 95 % CI, p, MDD, identical) of two rows' values and seeds."""
    diff, p, test = compare(ours, ours_seeds, base, base_seeds)
    (a, _), (c, _) = per_seed(np.asarray(ours, float), np.asarray(ours_seeds, float)), per_seed(
        np.asarray(base, float), np.asarray(base_seeds, float))
    if test == "paired":
        d = a - c  # the same seeds, both sorted by seed
        identical = bool(np.all(d == 0))
        return test, len(d), len(d), diff, t_ci(d), p, mdd_paired(d), identical
    return test, len(a), len(c), diff, welch_ci(a, c), p, mdd_independent(a, c), False


# --- rows of a summary -------------------------------------------------------------------------------------
def comparisons(df: pd.DataFrame, s: Summary, metric: str) -> tuple[list[Comparison], int]:
    """The comparisons of `metric` in summary `s` of `df` (summarize(df, ...)'s frame, same positions), in
    the summary table's row order, Holm-adjusted as one family; and how many rows found no single baseline
    row to compare with (none, or several with the same context)."""
    plan, keys = s.plan, s.by
    if not s.baseline or plan is None or "activation" not in keys or metric not in df:
        return [], 0
    a = keys.index("activation")
    excluded = set(s.excluded["run_id"])
    status, run_ids = df["status"].to_numpy(object), df["run_id"].to_numpy(object)
    x = pd.to_numeric(df[metric], errors="coerce").to_numpy(float, na_value=np.nan)
    seeds = pd.to_numeric(df["seed"], errors="coerce").to_numpy(float, na_value=np.nan)
    datasets = df["dataset"].to_numpy(object) if "dataset" in df else np.full(len(df), None, object)

    def counted(gi: int) -> np.ndarray:
        rows = plan.members[gi]
        keep = (status[rows] == "completed") & ~np.isin(run_ids[rows], list(excluded)) & np.isfinite(x[rows])
        return rows[keep]

    bases: dict[tuple, list[int]] = {}
    for gi, kv in enumerate(plan.key_values):
        if kv[a] == s.baseline:
            bases.setdefault(plan.context[gi], []).append(gi)
    position = {_norm(tuple(r[k] for k in keys)): i for i, (_, r) in enumerate(s.stats.iterrows())}
    out, unmatched = [], 0
    for gi in sorted(range(len(plan.members)), key=lambda g: position.get(_norm(plan.key_values[g]), len(position))):
        kv = plan.key_values[gi]
        if kv[a] == s.baseline:
            continue
        mine, match = counted(gi), bases.get(plan.context[gi], [])
        if len(match) != 1:
            unmatched += int(len(mine) > 0)
            continue
        base = counted(match[0])
        if not len(mine) or not len(base):
            continue
        test, n, nb, diff, ci, p, mdd, same = compare_runs(x[mine], seeds[mine], x[base], seeds[base])
        out.append(Comparison(dict(zip(keys, kv)), dict(zip(keys, plan.key_values[match[0]])), metric, test, n,
                              nb, diff, ci, p, mdd, same, dataset=datasets[mine[0]]))
    adjust(out)
    return out, unmatched


def _norm(values: tuple) -> tuple:
    return tuple(None if is_nan(v) else v for v in values)


# --- words ---------------------------------------------------------------------------------------------
def amount(value: float, metric: str, sign: bool = False) -> str:
    """A difference in display units: "4.75 points" for metrics shown in %, else 3 significant digits."""
    if scale_of(metric) == 100:
        return f"{fmt_num(value * 100, sign=sign)} points"
    return f"{value:{'+' if sign else ''}.3g}"


def _interval(ci: tuple, metric: str) -> str:
    lo, hi = ci
    if is_nan(lo):
        return "no CI"
    c = scale_of(metric)
    return f"95 % CI [{fmt_num(lo * c)}, {fmt_num(hi * c)}]"


def sentence(c: Comparison) -> str:
    """One sentence: the verdict, effect with its direction, CI, test, n, p and Holm-adjusted p, and the MDD."""
    who = f"{c.label} vs {c.base_label}" + (f" ({c.context})" if c.context else "")
    direction = "higher" if c.diff > 0 else "lower" if c.diff < 0 else "equal on average"
    effect = f"{c.metric} {direction}" + (f" by {amount(abs(c.diff), c.metric)}" if c.diff else "")
    if c.identical:
        return f"{who}: {c.metric} identical on each of the n = {c.n} seeds both ran (nothing to test)."
    if not c.test:
        return (f"{who}: {effect}, from n = {c.n} vs {c.n_base} run(s): not tested (a test needs at least 2 runs "
                "per row).")
    n = f"n = {c.n}" if c.test == "paired" else f"n = {c.n} vs {c.n_base}"
    stats = (f"{_interval(c.ci, c.metric)}; {'paired' if c.test == 'paired' else 'Welch'} t-test, {n}, "
             f"p = {fmt_p(c.p)}, Holm-adjusted p = {fmt_p(c.p_holm)}")
    if is_nan(c.p_holm):
        verdict = f"{effect} ({stats}; no p-value: zero variance)"
    elif c.p_holm >= ALPHA:
        verdict = f"no significant difference at {n} ({effect}; {stats})"
    else:
        verdict = f"{effect} ({stats}), significant at α = {ALPHA:g} after the correction"
    power = "" if is_nan(c.mdd) else f"; detectable with {POWER * 100:g} % power: {amount(c.mdd, c.metric)}"
    return f"{who}: {verdict}{power}."


def family_note(found: list[Comparison]) -> str:
    """What the sentences of one family share: the correction's m and the MDD's definition ("" if none was tested)."""
    m = max((c.m for c in found), default=0)
    if not m:
        return ""
    return (f"Holm-adjusted over the m = {m} tested comparison{'s' if m != 1 else ''} of {found[0].metric} in this "
            f"section. Detectable with {POWER * 100:g} % power: the smallest true difference that a two-sided test at "
            f"α = {ALPHA:g} finds with probability {POWER:g} at this n and the variance observed (paired: of the "
            "per-seed differences; Welch rows: the pooled variance).")


# --- the paper's claim -------------------------------------------------------------------------------------
def paper_claim(c: Comparison) -> str | None:
    """The paper's Table 1 difference for the same activation/margin vs the same baseline, labelled as the
    paper's setting (WRN-40-4): on our dataset when it is one of the paper's, else on each of its datasets.
    None when the metric is not test accuracy or the paper has no such pair of rows."""
    if c.metric != "test/acc" or paper.norm_name(c.dataset) not in TABLE1_MIRRORS:
        return None
    t1 = paper.load_paper("table1")
    ours_ds = paper.norm_name(c.dataset)
    datasets = [ours_ds] if ours_ds in PAPER_SETTING else list(PAPER_SETTING)
    parts = []
    for ds in datasets:
        rows = [_paper_row(t1, ds, k) for k in (c.keys, c.base_keys)]
        if all(r is not None for r in rows):
            (m, pm), (bm, bpm) = rows
            parts.append(f"{PAPER_SETTING[ds]} ({PAPER_EPOCHS[ds]} epochs) {m:.2f} ± {pm:.2f} vs {bm:.2f} ± {bpm:.2f}, "
                         f"{m - bm:+.2f} points")
    if not parts:
        return None
    where = ("the same dataset" if ours_ds in PAPER_SETTING
             else f"its datasets; ours is {c.dataset}")
    return (f"Paper, Table 1 ({c.label} vs {c.base_label}; the paper's setting, not ours: WRN-40-4 on {where}): "
            + "; ".join(parts) + ".")


def _paper_row(t1: pd.DataFrame, ds: str, keys: dict) -> tuple[float, float] | None:
    act, margin = keys.get("activation"), keys.get("margin")
    hit = t1[(t1["dataset"] == ds) & (t1["activation"] == act)
             & np.array([paper.margin_match(m, margin) for m in t1["margin"]], dtype=bool)]
    return (float(hit["acc_mean"].iloc[0]), float(hit["acc_pm"].iloc[0])) if len(hit) == 1 else None
