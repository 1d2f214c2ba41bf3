"""One figure style for every actlab plot: Okabe-Ito colours (colour-blind safe), one per activation.

Every figure module draws through `color_for` / `label_for` so ReLU is the same blue everywhere.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on servers and CI

import matplotlib.pyplot as plt  # noqa: E402

# Okabe & Ito (2008), "Color Universal Design"; yellow (#F0E442) is left out: unreadable on white.
OKABE_ITO = {
    "orange": "#E69F00",
    "sky": "#56B4E9",
    "green": "#009E73",
    "blue": "#0072B2",
    "vermillion": "#D55E00",
    "purple": "#CC79A7",
    "black": "#000000",
    "grey": "#999999",
}

ACTIVATION_COLORS = {
    "relu": OKABE_ITO["blue"],
    "gelu": OKABE_ITO["orange"],
    "gelu_tanh": OKABE_ITO["orange"],
    "helu": OKABE_ITO["vermillion"],
    "elu": OKABE_ITO["green"],
    "leaky_relu": OKABE_ITO["sky"],
    "prelu": OKABE_ITO["purple"],
    "silu": OKABE_ITO["black"],
    "swish": OKABE_ITO["black"],
    "smelu": OKABE_ITO["grey"],
    # ReLU-forward surrogates: the hue of their closest relative (st_relu's backward is LeakyReLU's)
    "sugar_bsilu": OKABE_ITO["green"],
    "sugar_nelu": OKABE_ITO["purple"],
    "st_relu": OKABE_ITO["sky"],
}

DISPLAY_NAMES = {
    "relu": "ReLU", "gelu": "GELU", "gelu_tanh": "GELU (tanh)", "helu": "HeLU", "elu": "ELU",
    "leaky_relu": "LeakyReLU", "prelu": "PReLU", "silu": "SiLU", "swish": "Swish", "smelu": "SmeLU",
    "sugar_bsilu": "SUGAR B-SiLU", "sugar_nelu": "SUGAR NeLU", "st_relu": "ST-ReLU",
}

# Several HeLU margins in one panel share HeLU's hue and differ by dash pattern.
LINESTYLES = ["-", "--", "-.", ":", (0, (5, 1, 1, 1, 1, 1)), (0, (1, 3))]


def color_for(activation: str) -> str:
    """The activation's colour; unknown names get a stable colour from the palette."""
    name = str(activation).lower()
    if name in ACTIVATION_COLORS:
        return ACTIVATION_COLORS[name]
    palette = list(OKABE_ITO.values())
    return palette[sum(map(ord, name)) % len(palette)]


def shade(activation: str, i: int, n: int) -> str:
    """The i-th of n shades of the activation's hue (light to dark), for one line per HeLU margin."""
    from matplotlib.colors import to_hex, to_rgb

    base = to_rgb(color_for(activation))
    if n <= 1:
        return to_hex(base)
    t = i / (n - 1) * 2 - 1  # -1 (lightest) .. 1 (darkest)
    target = (1, 1, 1) if t < 0 else (0, 0, 0)
    w = abs(t) * (0.45 if t < 0 else 0.5)
    return to_hex(tuple(c + (g - c) * w for c, g in zip(base, target)))


def legend_key(label: str) -> tuple:
    """Sort legend entries: activations in DISPLAY_NAMES order, HeLU margins ascending."""
    names = list(DISPLAY_NAMES.values())
    name, _, margin = label.partition(" α=")
    try:
        m = float(margin) if margin else -1.0
    except ValueError:
        m = -1.0
    return (names.index(name) if name in names else len(names), m, label)


def label_for(activation: str, margin: float | None = None) -> str:
    """Legend label: 'HeLU α=0.05', 'ReLU'."""
    name = DISPLAY_NAMES.get(str(activation).lower(), str(activation))
    if margin is not None and not (isinstance(margin, float) and math.isnan(margin)):
        return f"{name} α={margin:g}"
    return name


def use() -> None:
    """Apply the shared rcParams (small serif-free paper style, light grid, no top/right spines)."""
    plt.rcParams.update({
        "figure.dpi": 100,
        "savefig.dpi": 200,
        "savefig.bbox": "tight",
        "font.size": 9,
        "axes.titlesize": 10,
        "axes.labelsize": 9,
        "legend.fontsize": 8,
        "legend.frameon": False,
        "legend.handlelength": 3.0,  # long enough to tell dash patterns apart
        "axes.grid": True,
        "axes.axisbelow": True,  # grid under bars and bands, not over them
        "grid.alpha": 0.3,
        "grid.linewidth": 0.6,
        "axes.spines.top": False,
        "axes.spines.right": False,
        "lines.linewidth": 1.6,
        "pdf.fonttype": 42,  # embed TrueType so the PDF text stays editable in a paper
    })


def save(fig, out_dir: str | Path, stem: str) -> list[Path]:
    """Write `<stem>.png` and `<stem>.pdf`; metadata dates are dropped so reruns are byte-stable."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{stem}.png", out / f"{stem}.pdf"]
    fig.savefig(paths[0], metadata={"Software": None})
    fig.savefig(paths[1], metadata={"CreationDate": None, "Creator": None, "Producer": None})
    plt.close(fig)
    return paths
