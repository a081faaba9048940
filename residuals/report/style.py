"""One visual language for every figure of every bench.

* plain vs residual nets, ours vs scikit-learn: fixed colours (colour-blind safe,
  Okabe-Ito palette);
* train vs test: dashed vs solid (He et al. 2015, Fig. 6 convention);
* figures sized to be readable at laptop width (about 900 px wide at 100 dpi).
"""

from __future__ import annotations

COLORS = {
    # nets
    "plain": "#D55E00",  # vermillion
    "residual": "#0072B2",  # blue
    # the ensemble bench's other families
    "booster": "#009E73",  # bluish green
    "stagewise": "#CC79A7",  # reddish purple
    # boosting methods
    "ours-exact": "#0072B2",
    "ours-hist": "#56B4E9",
    "sklearn-gbrt": "#D55E00",
    "sklearn-hist": "#E69F00",
    "lightgbm": "#009E73",
}
# "ours" drawn over "sklearn": ours thinner, on top, so equality reads as one line
LINEWIDTH = {
    "ours-exact": 1.4,
    "ours-hist": 1.4,
    "sklearn-gbrt": 3.0,
    "sklearn-hist": 3.0,
    "lightgbm": 2.0,
}

LINESTYLES = {"train": "--", "test": "-", "validation": ":"}
MARKERS = {"plain": "s", "residual": "o"}

FIGSIZE = (9.0, 4.2)  # inches, at DPI below: 900 x 420 px
FIGSIZE_WIDE = (9.0, 5.0)
DPI = 100


def color(name: str) -> str:
    return COLORS.get(name, "#444444")


def linestyle(split: str) -> str:
    return LINESTYLES.get(split, "-")


def apply() -> None:
    """Set matplotlib defaults for every report figure (Agg backend, readable fonts)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    plt.rcParams.update(
        {
            "figure.dpi": DPI,
            "savefig.dpi": DPI,
            "figure.figsize": FIGSIZE,
            "font.size": 10,
            "axes.titlesize": 11,
            "axes.labelsize": 10,
            "legend.fontsize": 9,
            "axes.grid": True,
            "grid.alpha": 0.3,
            "axes.spines.top": False,
            "axes.spines.right": False,
            "figure.constrained_layout.use": True,
        }
    )
