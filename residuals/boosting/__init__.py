"""Gradient boosting, stage by stage (Friedman 2001), as a :class:`residuals.core.Stagewise` model.

* :class:`BoostingRegressor`, :class:`BoostingClassifier` -- same parameters as
  scikit-learn's ``GradientBoosting*``; with ``tree_method="exact"`` their
  results equal scikit-learn's bit for bit; ``tree_method="hist"`` uses the
  project's histogram trees (CPU or CUDA).
* :mod:`residuals.boosting._losses` -- the losses as small objects (init,
  negative gradient, TreeBoost leaf update, link).
"""

from residuals.boosting._estimators import BoostingClassifier, BoostingRegressor
from residuals.boosting._losses import (
    AbsoluteError,
    BinomialLogLoss,
    BoostingLoss,
    ExponentialLoss,
    HuberLoss,
    MultinomialLogLoss,
    QuantileLoss,
    SquaredError,
    make_loss,
)
from residuals.boosting._validation import InvalidParameterError
from residuals.runs.environment import register_machine_fact


def cpu_threads() -> int:
    """Threads a hist-mode fit on the CPU uses, if started now: scikit-learn's rule for
    HistGradientBoosting -- the physical cores this process may run on, fewer under
    ``OMP_NUM_THREADS`` or a ``threadpoolctl.threadpool_limits`` block (``docs/boosting.md``,
    "Threads"). A fit's trees are the same bits at any count."""
    from residuals.boosting import _kernels

    return _kernels.threads()


def _hist_cpu_loops() -> str | None:
    """Which loops hist mode runs on the CPU (docs/boosting.md), once hist mode has loaded them."""
    import sys

    kernels = sys.modules.get("residuals.boosting._kernels")
    if kernels is None:
        return None
    return "C" if kernels.available() else "torch (C extension not built)"


register_machine_fact("hist_cpu_loops", _hist_cpu_loops)

__all__ = [
    "AbsoluteError",
    "BinomialLogLoss",
    "BoostingClassifier",
    "BoostingLoss",
    "BoostingRegressor",
    "ExponentialLoss",
    "HuberLoss",
    "InvalidParameterError",
    "MultinomialLogLoss",
    "QuantileLoss",
    "SquaredError",
    "cpu_threads",
    "make_loss",
]
