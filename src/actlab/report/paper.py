"""The HeLU paper's numbers (Kimhi et al. 2024) and "paper vs ours" tables for Tables 1, 2 and 3.

The CSVs in report/paper/ were read from the camera-ready PDF. Paper numbers are percent; ours are
fractions in the run records and are shown in percent here. Averages the paper reports are
recomputed and a mismatch is flagged (Table 2, HeLU α=0.05: reported 78.02, row mean 78.11).
Table 3 (INT8 minus full precision, GLUE points) compares with `actlab int8`'s deltas.
A cell of ours pools the runs of its dataset/task, activation and margin; when they are not replicates
(they differ in another config key, e.g. two models; actlab.report.groups) its note says so.
"""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd

from actlab.report import groups
from actlab.report.frame import is_nan
from actlab.report.tables import fmt_key, fmt_mean_std, fmt_num, mean_std, to_latex, to_markdown

FILES = {
    "table1": "table1_vision.csv",
    "table2": "table2_glue.csv",
    "table3": "table3_int8_minus_fp.csv",
    "fig4": "fig4_inference_ms_per_sample_t4.csv",
}
# Table 2 column -> (GLUE task, metric). mnli_mm: a run on dataset "mnli_mm", or "acc_mm" of an mnli run.
GLUE_COLUMNS = {
    "mnli_m_acc": ("mnli", "acc_m"), "mnli_mm_acc": ("mnli_mm", "acc"), "qqp_f1": ("qqp", "f1"),
    "qnli_acc": ("qnli", "acc"), "sst2_acc": ("sst2", "acc"), "stsb_spearman": ("stsb", "spearman"),
    "mrpc_f1": ("mrpc", "f1"), "rte_acc": ("rte", "acc"), "wnli_acc": ("wnli", "acc"),
}
# Table 3 column -> (GLUE task, metric), read from our runs' `int8_delta/test/<metric>` (actlab int8).
INT8_COLUMNS = {
    "mnli_m": ("mnli", "acc_m"), "mnli_mm": ("mnli_mm", "acc"), "qqp_f1": ("qqp", "f1"),
    "qnli": ("qnli", "acc"), "sst2": ("sst2", "acc"), "stsb": ("stsb", "spearman"),
    "mrpc_f1": ("mrpc", "f1"), "rte": ("rte", "acc"), "wnli": ("wnli", "acc"),
}
INT8_PREFIX = "int8_delta/test/"
AVG_TOLERANCE = 0.01  # the paper prints two decimals: a larger gap is a real inconsistency


def load_paper(name: str) -> pd.DataFrame:
    """One of the paper's tables (table1, table2, table3, fig4) from the package data."""
    with resources.files("actlab.report").joinpath("paper", FILES[name]).open() as f:
        df = pd.read_csv(f)
    if "margin" in df:
        df["margin"] = pd.to_numeric(df["margin"], errors="coerce").astype("float64")
    return df


def check_averages(table: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """Add avg_computed (row mean of `columns`) and avg_mismatch (vs avg_reported) columns."""
    out = table.copy()
    out["avg_computed"] = out[columns].mean(axis=1)
    out["avg_mismatch"] = (out["avg_computed"] - out["avg_reported"]).abs() > AVG_TOLERANCE
    return out


def norm_name(name) -> str:
    """'CIFAR-10' -> 'cifar10', 'glue/sst2' -> 'sst2' (dataset names as the paper and configs write them)."""
    s = re.sub(r"[^a-z0-9]", "", str(name).lower())
    return s.removeprefix("glue") or s


def margin_match(a, b) -> bool:
    """Margins are floats from YAML and CSV: equal within a relative 1e-6, or both absent."""
    if is_nan(a) or is_nan(b):
        return is_nan(a) and is_nan(b)
    return bool(np.isclose(float(a), float(b), rtol=1e-6, atol=1e-12))


def _ours_stats(values: pd.Series) -> tuple[float, float, int]:
    """Mean, std and n of our fractions, in percent (points)."""
    return mean_std(values.astype(float) * 100)


def pooled_note(runs: pd.DataFrame) -> str:
    """"" when `runs` are replicates (identical config but for the seed), else which keys they differ in."""
    if len(runs) < 2:
        return ""
    split = groups.plan(runs, []).split
    return f"pools runs that differ in {', '.join(map(groups.config_key, split))}" if split else ""


def _select(done: pd.DataFrame, activation, margin) -> pd.DataFrame:
    mask = (done["activation"] == activation) & np.array([margin_match(m, margin) for m in done["margin"]],
                                                          dtype=bool)
    return done[mask]


def vision_table(df: pd.DataFrame, metric: str = "test/acc") -> pd.DataFrame:
    """Table 1 rows (paper mean ± pm) next to ours (mean ± std over completed seeds, n) and the delta.

    Our groups on the paper's datasets that the paper lacks (another margin, say) are appended.
    """
    paper = load_paper("table1")
    done = df[(df["status"] == "completed")].copy() if len(df) else df
    done = done.assign(_ds=done["dataset"].map(norm_name)) if len(done) else done.assign(_ds=[])
    rows, used = [], set()
    for _, p in paper.iterrows():
        mine = _select(done[done["_ds"] == p["dataset"]], p["activation"], p["margin"]) if len(done) else done
        used.update(mine.index)
        mean, std, n = _ours_stats(mine[metric]) if metric in mine else (np.nan, np.nan, 0)
        rows.append({"dataset": p["dataset"], "activation": p["activation"], "margin": p["margin"],
                     "paper_mean": p["acc_mean"], "paper_pm": p["acc_pm"], "ours_mean": mean,
                     "ours_std": std, "n": n, "note": pooled_note(mine[mine[metric].notna()]) if n else ""})
    extra = done[done["_ds"].isin(set(paper["dataset"])) & ~done.index.isin(used)] if len(done) else done
    if metric in extra and len(extra):
        for (ds, act, m), g in extra.groupby(["_ds", "activation", "margin"], dropna=False):
            mean, std, n = _ours_stats(g[metric])
            rows.append({"dataset": ds, "activation": act, "margin": m, "paper_mean": np.nan,
                         "paper_pm": np.nan, "ours_mean": mean, "ours_std": std, "n": n,
                         "note": pooled_note(g[g[metric].notna()])})
    out = pd.DataFrame(rows)
    out["delta"] = out["ours_mean"] - out["paper_mean"]
    out["within_pm"] = out["delta"].abs() <= out["paper_pm"]
    # Paper order: dataset as in Table 1, then activation as in Table 1, HeLU margins ascending.
    ds_order = {d: i for i, d in enumerate(dict.fromkeys(paper["dataset"]))}
    act_order = {a: i for i, a in enumerate(dict.fromkeys(paper["activation"]))}
    out["_d"] = out["dataset"].map(ds_order).fillna(len(ds_order))
    out["_a"] = out["activation"].map(act_order).fillna(len(act_order))
    out = out.sort_values(["_d", "_a", "margin"], kind="stable", na_position="first")
    return out.drop(columns=["_d", "_a"]).reset_index(drop=True)


def glue_runs(df: pd.DataFrame) -> pd.DataFrame:
    """Completed runs with `_ds`, the normalised dataset name that GLUE cells select by."""
    done = df[df["status"] == "completed"] if len(df) else df
    return done.assign(_ds=done["dataset"].map(norm_name)) if len(done) else done.assign(_ds=[])


def glue_value(done: pd.DataFrame, task: str, metric: str, prefixes=("val/", "test/")) -> pd.Series:
    """Our values for one GLUE cell: the first of <prefix><metric> present (Table 2: val/, as GLUE's
    test labels are hidden, else test/; Table 3: int8_delta/test/) over `done` (from glue_runs)."""
    if task == "mnli_mm":  # either a separate mnli_mm dataset or the mnli run's mismatched metric
        sub = done[done["_ds"] == "mnlimm"]
        if sub.empty:
            return glue_value(done, "mnli", metric + "_mm", prefixes)
    else:
        sub = done[done["_ds"] == task.replace("_", "")]
    for prefix in prefixes:
        col = prefix + metric
        if col in sub and sub[col].notna().any():
            return sub[col]
    return pd.Series(dtype=float)


def glue_table(df: pd.DataFrame) -> pd.DataFrame:
    """Table 2 long form: activation, margin, task, paper, ours (mean ± std, n), delta; plus Avg rows
    with the paper's reported average, its recomputed mean and a mismatch flag."""
    return _paper_vs_ours(df, "table2", GLUE_COLUMNS, ("val/", "test/"))


def int8_table(df: pd.DataFrame) -> pd.DataFrame:
    """Table 3 long form (INT8 minus full precision, GLUE points): paper vs our mean ± std of
    `int8_delta/test/<metric>` x 100 over runs; Avg rows as in glue_table."""
    return _paper_vs_ours(df, "table3", INT8_COLUMNS, (INT8_PREFIX,))


def has_int8(df: pd.DataFrame) -> bool:
    """Whether any completed run carries `actlab int8` deltas."""
    cols = [c for c in df.columns if str(c).startswith(INT8_PREFIX)]
    return bool(cols) and bool(df.loc[df["status"] == "completed", cols].notna().any().any())


def _paper_vs_ours(df: pd.DataFrame, name: str, columns: dict, prefixes: tuple) -> pd.DataFrame:
    paper = check_averages(load_paper(name), list(columns))
    done = glue_runs(df)
    rows = []
    for _, p in paper.iterrows():
        mine = _select(done, p["activation"], p["margin"]) if len(done) else done
        ours_means = []
        for col, (task, metric) in columns.items():
            values = glue_value(mine, task, metric, prefixes) if len(mine) else pd.Series(dtype=float)
            mean, std, n = _ours_stats(values)
            ours_means.append(mean)
            note = pooled_note(mine.loc[values.dropna().index]) if n else ""
            rows.append({"activation": p["activation"], "margin": p["margin"], "task": col, "paper": p[col],
                         "ours_mean": mean, "ours_std": std, "n": n, "note": note})
        note = (f"reported {p['avg_reported']:.2f} ≠ row mean {p['avg_computed']:.2f}"
                if p["avg_mismatch"] else "")
        ours_avg = np.mean(ours_means) if not np.isnan(ours_means).any() else np.nan
        rows.append({"activation": p["activation"], "margin": p["margin"], "task": "avg",
                     "paper": p["avg_computed"], "paper_reported": p["avg_reported"], "ours_mean": ours_avg,
                     "ours_std": np.nan, "n": np.nan, "note": note})
    out = pd.DataFrame(rows)
    out["delta"] = out["ours_mean"] - out["paper"]
    return out


def vision_display(t: pd.DataFrame) -> pd.DataFrame:
    """Table 1's cells: paper mean ± its reported spread, ours mean ± std, n and the difference."""
    header = ["Dataset", "Activation", "α", "Paper (%)", "Ours (%)", "n", "Δ (pp)"]
    notes = "note" in t and bool(t["note"].astype(bool).any())  # a Note column only when a cell pools non-replicates
    rows = [[r["dataset"], r["activation"], fmt_key(r["margin"]), fmt_mean_std(r["paper_mean"], r["paper_pm"]),
             fmt_mean_std(r["ours_mean"], r["ours_std"]), str(int(r["n"])), fmt_num(r["delta"], sign=True)]
            + ([r["note"]] if notes else []) for _, r in t.iterrows()]
    header += ["Note"] if notes else []
    return pd.DataFrame(rows, columns=header)


def glue_display(t: pd.DataFrame, sign: bool = False) -> pd.DataFrame:
    """A long-form GLUE table's cells; sign=True writes +/- on values (Table 3's deltas)."""
    header = ["Activation", "α", "Task", "Paper", "Ours", "n", "Δ", "Note"]
    rows = [[r["activation"], fmt_key(r["margin"]), r["task"], fmt_num(r["paper"], sign=sign),
             fmt_mean_std(r["ours_mean"], r["ours_std"], sign=sign), "" if is_nan(r["n"]) else str(int(r["n"])),
             fmt_num(r["delta"], sign=True), r["note"]] for _, r in t.iterrows()]
    return pd.DataFrame(rows, columns=header)


def write_paper_tables(df: pd.DataFrame, out: str | Path, force: bool = False, console=None) -> list[Path]:
    """Write paper_table1.* (and paper_table2.* when GLUE runs exist) to `out`; with force also when none
    of our runs is on the paper's datasets (ours columns then stay empty), for the records' modality: a
    vision-only directory gets no GLUE table and the reverse (both when there are no records).
    paper_table3.* only with force (--paper) and runs that `actlab int8` evaluated."""
    out = Path(out)
    paths: list[Path] = []
    glue = df["dataset"].astype(str).str.lower().str.startswith("glue") if len(df) else pd.Series(dtype=bool)
    t1 = vision_table(df)
    if (force and (len(df) == 0 or not glue.all())) or t1["n"].sum() > 0:
        paths += _write(out, "paper_table1", t1, vision_display(t1),
                        "Table 1 (vision, test accuracy %): paper (mean ± its reported spread) vs ours (mean ± std over seeds)")
        _warn_pooled(console, "Table 1", t1, ("dataset", "activation", "margin"))
    t2 = glue_table(df)
    if (force and (len(df) == 0 or glue.any())) or t2["n"].fillna(0).sum() > 0:
        flagged = t2.loc[t2["note"] != "", ["activation", "margin", "note"]]
        caption = "Table 2 (GLUE dev scores): paper vs ours; paper Avg recomputed from its row"
        paths += _write(out, "paper_table2", t2, glue_display(t2), caption)
        _warn_pooled(console, "Table 2", t2, ("activation", "margin", "task"))
        if console is not None:
            for _, r in flagged.iterrows():
                console.print(f"[yellow]paper Table 2 {r['activation']} α={fmt_key(r['margin'])}: "
                              f"{r['note']} (using the row mean)[/yellow]")
    if force and has_int8(df):
        t3 = int8_table(df)
        caption = "Table 3 (INT8 minus full precision, GLUE dev points): paper vs ours (mean ± std over runs)"
        paths += _write(out, "paper_table3", t3, glue_display(t3, sign=True), caption)
        _warn_pooled(console, "Table 3", t3, ("activation", "margin", "task"))
    return paths


def _warn_pooled(console, name: str, table: pd.DataFrame, keys: tuple) -> None:
    """One line per cell of ours that pools runs that are not replicates."""
    if console is None:
        return
    for _, r in table[table["note"].str.startswith("pools", na=False)].iterrows():
        where = " ".join(fmt_key(r[k]) for k in keys)
        console.print(f"paper {name} {where}: ours {r['note']}", style="yellow", markup=False, highlight=False)


def _write(out: Path, stem: str, table: pd.DataFrame, cells: pd.DataFrame, caption: str) -> list[Path]:
    """`table` (raw units) as csv, its display `cells` as Markdown and LaTeX."""
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / f"{stem}.csv", index=False)
    (out / f"{stem}.md").write_text(f"## {caption}\n\n" + to_markdown(cells))
    (out / f"{stem}.tex").write_text(to_latex(cells, caption=caption))
    return [out / f"{stem}.md", out / f"{stem}.tex", out / f"{stem}.csv"]
