"""What a report is made of: a headline, figures with their data, and tables.

A bench provides a *renderer*, a pure function of a run folder's saved tables::

    def render(run: RunDir) -> ReportContent

registered by name in :data:`RENDERERS`. The HTML builder (``residuals.report.html``)
calls it, writes each figure's PNG and CSV under ``figures/``, and lays the page
out; so ``residuals report build RUN_DIR`` rebuilds a report without retraining.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Callable

import pandas as pd

__all__ = ["Figure", "Overlay", "Table", "ReportContent", "RENDERERS", "get_renderer"]


@dataclass(frozen=True)
class Overlay:
    """How ``residuals report compare`` redraws a figure's tidy data with other runs'.

    Every name is a column of :attr:`Figure.data`. Rows that share (facet, hue,
    style, x) -- e.g. seeds -- are averaged, with a +-1 std band.
    """

    x: str                        # e.g. "epoch"
    y: str                        # e.g. "error"
    hue: str | None = None        # values are style.COLORS keys, e.g. "net": plain/residual
    style: str | None = None      # values are style.LINESTYLES keys, e.g. "split": train/test
    facet: str | None = None      # one panel per value, e.g. "depth"
    xlabel: str = ""              # with units; defaults to the column name
    ylabel: str = ""
    logx: bool = False
    logy: bool = False


@dataclass
class Figure:
    """A matplotlib figure and the tidy data it was drawn from."""

    key: str                      # file stem under figures/, e.g. "error_curves"
    title: str
    fig: "matplotlib.figure.Figure"  # noqa: F821
    data: pd.DataFrame            # everything plotted, saved as figures/<key>.csv
    caption: str = ""             # one or two sentences: what to look at
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
    headline: str                 # the verdict, measured from the results
    verdict: bool | None = None   # True: reproduced/passed, False: not, None: no verdict
    summary: str = ""             # one line for the index of all runs
    intro: str = ""               # a short paragraph explaining what the page shows
    figures: list[Figure] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)


# bench name -> "module:function"; imported lazily so reports load only what they need
RENDERERS: dict[str, str] = {
    "degradation": "residuals.bench.degradation_report:render",
    "boosting": "residuals.bench.boosting_report:render",
}


def get_renderer(bench: str) -> Callable:
    try:
        target = RENDERERS[bench]
    except KeyError:
        raise ValueError(f"no report renderer for bench {bench!r}; known: {sorted(RENDERERS)}") from None
    module, _, func = target.partition(":")
    return getattr(importlib.import_module(module), func)
