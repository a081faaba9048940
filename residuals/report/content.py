"""What a report is made of: a headline, figures with their data, and tables.

A bench provides a *renderer*, a pure function of a run folder's saved tables::

    def render(run: RunDir) -> ReportContent

registered by bench name in :mod:`residuals.runs.registry`. The HTML builder (``residuals.report.html``)
calls it, writes each figure's PNG and CSV under ``figures/``, and lays the page
out; so ``residuals report build RUN_DIR`` rebuilds a report without retraining.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pandas as pd

from residuals.runs.registry import RENDERERS, get_renderer

if TYPE_CHECKING:
    import matplotlib.figure

__all__ = ["Figure", "Overlay", "Table", "ReportContent", "RENDERERS", "get_renderer"]


@dataclass(frozen=True)
class Overlay:
    """How ``residuals report compare`` redraws a figure's tidy data with other runs'.

    Every name is a column of :attr:`Figure.data`. Rows that share (facet, hue,
    style, x) -- e.g. seeds -- are averaged, with a +-1 std band.
    """

    x: str  # e.g. "epoch"
    y: str  # e.g. "error"
    hue: str | None = None  # values are style.COLORS keys, e.g. "net": plain/residual
    style: str | None = None  # values are style.LINESTYLES keys, e.g. "split": train/test
    facet: str | None = None  # one panel per value, e.g. "depth"
    xlabel: str = ""  # with units; defaults to the column name
    ylabel: str = ""
    logx: bool = False
    logy: bool = False


@dataclass
class Figure:
    """A matplotlib figure and the tidy data it was drawn from."""

    key: str  # file stem under figures/, e.g. "error_curves"
    title: str
    fig: matplotlib.figure.Figure
    data: pd.DataFrame  # everything plotted, saved as figures/<key>.csv
    caption: str = ""  # one or two sentences: what to look at
    overlay: Overlay | None = None  # optional: lets `report compare` overlay runs' curves


@dataclass
class Table:
    """A summary table shown in the page (and saved as tables/<key>.csv)."""

    key: str
    title: str
    data: pd.DataFrame
    caption: str = ""


@dataclass
class ReportContent:
    headline: str  # the verdict, measured from the results
    verdict: bool | None = None  # True: reproduced/passed, False: not, None: no verdict
    summary: str = ""  # one line for the index of all runs
    intro: str = ""  # a short paragraph explaining what the page shows
    figures: list[Figure] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
