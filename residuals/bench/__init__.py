"""The benches: each a library function (``run``) with a thin command line beside it.

* :mod:`residuals.bench.degradation` -- plain vs residual nets at several depths;
* :mod:`residuals.bench.boosting` -- our booster against scikit-learn's.

Each bench registers the renderer of its run folders here, by module path, so that
:mod:`residuals.report` builds their pages without naming a bench (and without importing one
until a page is built). A new bench adds its line below.
"""

from residuals.runs.registry import register_renderer

register_renderer("degradation", "residuals.bench.degradation.report:render")
register_renderer("boosting", "residuals.bench.boosting.report:render")
