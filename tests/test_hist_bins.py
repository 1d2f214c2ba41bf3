"""Pre-activation histogram bins: asinh edges against the half-angle identity, bin lookup against numpy's
searchsorted, a measured histogram of a network with huge pre-activations, and Fig. 1b drawn from it."""

import json
import math

import matplotlib
import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from actlab.activations import HeLU
from actlab.hist_bins import HistBins
from actlab.monitor import measure

matplotlib.use("Agg")


def test_asinh_edges_known_answer():
    # Uniform in u = asinh(z): the middle inner edge sits at sinh(asinh(10) / 2), which the half-angle
    # identity sinh(a/2) = sqrt((cosh a - 1) / 2), cosh(asinh x) = sqrt(1 + x^2) gives independently.
    e = HistBins(4, -10.0, 10.0, 1.0).edges()
    half = math.sqrt((math.sqrt(101.0) - 1.0) / 2.0)
    assert e[0] == -10.0 and e[-1] == 10.0 and e[2] == pytest.approx(0.0, abs=1e-12)
    assert e[3] == pytest.approx(half, rel=1e-12) and e[1] == pytest.approx(-half, rel=1e-12)
    # linear_width scales the axis: the same bins for z / w
    assert HistBins(4, -20.0, 20.0, 2.0).edges()[3] == pytest.approx(2 * half, rel=1e-12)
    assert HistBins(4, -1.0, 1.0).edges() == [-1.0, -0.5, 0.0, 0.5, 1.0]


@pytest.mark.parametrize("w", [None, 0.01, 1.0])
def test_index_agrees_with_searchsorted(w):
    hb = HistBins(1000, -1e6, 1e6, w) if w else HistBins(1000, -20.0, 20.0)
    z = torch.cat([torch.randn(20000, generator=torch.Generator().manual_seed(1)) * s for s in (0.01, 1.0, 1e3)])
    z = torch.cat([z, torch.tensor([-1e9, 1e9, 0.0])])
    edges = np.asarray(hb.edges())
    want = np.clip(np.searchsorted(edges, z.double().numpy(), side="right") - 1, 0, hb.bins - 1)
    got = hb.index(z).numpy()
    # float rounding may move a value lying within 1e-9 (relative) of an edge by one bin, nothing else
    off = np.flatnonzero(got != want)
    zs = z.double().numpy()
    for i in off:
        assert abs(got[i] - want[i]) == 1 and np.min(np.abs(edges - zs[i])) <= 1e-9 * max(abs(zs[i]), 1e-6), zs[i]
    assert got[-3] == 0 and got[-2] == hb.bins - 1 and len(np.unique(got)) > 300


def test_bad_bins_are_rejected():
    for bad in ((0, -1.0, 1.0), (10, 1.0, -1.0), (10, -1.0, 1.0, 0.0), (10, -math.inf, 1.0)):
        with pytest.raises(ValueError, match="histogram needs"):
            HistBins.of(bad)


def test_huge_preactivations_stay_inside_the_histogram(tmp_path, monkeypatch):
    """Pre-activations of +-5,000 (an unnormalised net gone large) and a HeLU band of 0.001: the default
    asinh bins hold all of them, and the band (-0.001, 0] has bins of its own."""
    from actlab.callbacks.monitor import DeadNeuronMonitor
    from actlab.report import figures

    lin = nn.Linear(1, 4)
    with torch.no_grad():  # z = b + w x with x in [0, 1]: units near -5000, -0.0005, 0.3, 5000
        lin.weight.copy_(torch.tensor([[1.0], [1e-4], [0.1], [1.0]]))
        lin.bias.copy_(torch.tensor([-5000.0, -5e-4, 0.25, 5000.0]))
    model = nn.Sequential(lin, HeLU(0.001))
    x = torch.rand(250, 1, generator=torch.Generator().manual_seed(0))
    h = measure(model, [x], histogram=DeadNeuronMonitor().hist_spec)["preact_hist"]
    counts = np.asarray(h["layers"]["1"])
    edges = np.asarray(h["edges"])
    assert h["scale"] == "asinh" and h["linear_width"] == 0.01 and counts.sum() == 1000
    assert counts[0] == 0 and counts[-1] == 0  # nothing clamped into the edge bins
    band = (edges[:-1] >= -0.001 - 1e-12) & (edges[1:] <= 1e-12)
    assert band.sum() >= 2 and counts[band].sum() == 250  # the -0.0005 unit, resolved inside the band

    (tmp_path / "preact_hist.json").write_text(json.dumps(h))
    df = pd.DataFrame([{"run_id": "r", "status": "completed", "activation": "helu", "margin": 0.001,
                        "dataset": "toy", "preact_hist": str(tmp_path / "preact_hist.json")}])
    drawn_figs = []  # keep the figure to look at its axis instead of writing files
    monkeypatch.setattr(figures.style, "save", lambda fig, out, stem: drawn_figs.append(fig) or [])
    figures.fig_preact_hist(df, tmp_path)
    ax = drawn_figs[0].axes[0]
    assert ax.get_xscale() == "asinh"
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    drawn = next(t for t in labels if t.startswith("drawn range"))
    assert float(drawn.split(": ")[1].split("%")[0]) >= 99.0, labels
    assert not any(t.startswith("outside the histogram") for t in labels)
    assert ax.get_xlim()[0] <= -5000 and ax.get_xlim()[1] >= 5000


@pytest.mark.parametrize("text", ['{"edges": [1, 2', '[1, 2]', '{"edges": [0, 1, 2], "layers": {"a": [1]}}',
                                  '{"edges": [0, 2, 1], "layers": {"a": [1, 1]}}',
                                  '{"edges": [0, 1, 2], "layers": {"a": [0, 0]}}',
                                  '{"edges": [0, 1, 2], "layers": {"a": [1, 1]}, "scale": "asinh"}'])
def test_a_damaged_histogram_file_costs_the_figure_not_the_report(tmp_path, text):
    from actlab.report import figures

    path = tmp_path / "preact_hist.json"
    path.write_text(text)
    df = pd.DataFrame([{"run_id": "r", "status": "completed", "activation": "helu", "margin": 0.1,
                        "dataset": "toy", "preact_hist": str(path)}])
    with pytest.raises(figures.Skip, match=f"^{path} is (unreadable|not a histogram).*--run-id"):
        figures.fig_preact_hist(df, tmp_path)
