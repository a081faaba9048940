"""``residuals bench boosting``: our booster against scikit-learn's, measured.

For every dataset and loss the bench fits four learners on the same split, with
the same trees (depth, shrinkage, number of stages, one sample per leaf at
least, no regularisation):

* ``ours-exact``   -- :class:`residuals.boosting.BoostingRegressor` /
  ``BoostingClassifier`` with ``tree_method="exact"``;
* ``ours-hist``    -- the same with ``tree_method="hist"`` (``device`` applies);
* ``sklearn-gbrt`` -- :class:`sklearn.ensemble.GradientBoostingRegressor` /
  ``Classifier`` (Friedman 2001, the reference for exact mode);
* ``sklearn-hist`` -- :class:`sklearn.ensemble.HistGradientBoostingRegressor` /
  ``Classifier`` (LightGBM-style histograms, the reference for hist mode).

Everything reported is measured here and saved as tidy tables in the run folder
(the report is a pure function of them, see :mod:`residuals.bench.boosting.report`):

``results.csv``
    one row per (case, method): fit time, final train/test loss, status;
``staged.csv``
    one row per (case, method, split, stage): the loss and the RMS residual
    ``y - prediction`` after ``m`` stages (Friedman 2001, eq. 10: the running
    model ``F_m = F_{m-1} + lr * h_m``);
``parity.csv``
    one row per (case, pair): ``max |F_m(x) ours - F_m(x) reference|`` over every
    stage ``m`` and every train and test sample -- raw predictions
    (``staged_predict`` for regressors, ``staged_decision_function`` for
    classifiers, so differences are not squashed by a sigmoid);
``contributions.csv``
    our boosters' per-stage correction sizes ``||lr * h_m(X)||`` and
    ``||F_{m-1}(X)||`` on the training set (:func:`residuals.core.contribution_table`);
``hist_gap.csv``
    one row per case: our hist mode's final test loss against exact mode's,
    the gap (absolute and relative) and its paired standard error over the
    test rows (:func:`paired_gap`), the yardstick for "hist is within x% of exact".

Modules: ``cases`` (datasets, losses, methods, the config and its presets), ``fitting``
(building, timing and reading the learners), ``metrics``, ``measure`` (the tables, case by
case), ``runner`` (:func:`run`), ``report`` (the renderer); the command is
:mod:`residuals.bench.boosting_cli`.
"""

from typing import TYPE_CHECKING

from residuals._lazy import lazy_exports

if TYPE_CHECKING:  # the exports, imported on first use (residuals._lazy)
    from residuals.bench.boosting.cases import (
        ALPHA,
        DATASETS,
        HIST_LOSSES,
        LOSSES,
        METHODS,
        PARITY_PAIRS,
        PRESETS,
        QUICK_LOSSES,
        BoostingBenchConfig,
        Case,
        Split,
        TabularSpec,
        describe_preset,
        iter_cases,
        load_split,
    )
    from residuals.bench.boosting.fitting import (
        FAST_FIT_REPEATS,
        FAST_FIT_S,
        make_estimator,
        method_unsupported,
        staged_raw,
        timed_fit,
    )
    from residuals.bench.boosting.measure import (
        BenchTables,
        ProgressCallback,
        load_tables,
        run_benchmark,
        run_case,
    )
    from residuals.bench.boosting.metrics import (
        max_abs_diff,
        paired_gap,
        pointwise_metric,
        stage_metrics,
    )
    from residuals.bench.boosting.runner import BoostingResult, run, run_label

__getattr__, __dir__, __all__ = lazy_exports(__name__, __file__)
