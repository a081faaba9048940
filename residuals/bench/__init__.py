"""The benches: each a library function (``run``) with a thin command line beside it.

* :mod:`residuals.bench.degradation` -- plain vs residual nets at several depths;
* :mod:`residuals.bench.boosting` -- our booster against scikit-learn's;
* :mod:`residuals.bench.ensemble` -- lesions of a booster, a ResNet, its plain twin and a
  ResNet trained stage by stage: do residual nets behave like boosted ensembles?
* :mod:`residuals.bench.train` -- ``residuals train``: one net, one dataset, one recipe (its
  run folders are listed and compared with the benches').

Each bench registers the renderer of its run folders here, by module path, so that
:mod:`residuals.report` builds their pages without naming a bench (and without importing one
until a page is built). A new bench adds its line below.
"""

from residuals.runs.registry import register_renderer

register_renderer("degradation", "residuals.bench.degradation.report:render")
register_renderer("boosting", "residuals.bench.boosting.report:render")
register_renderer("ensemble", "residuals.bench.ensemble.report:render")
register_renderer("train", "residuals.bench.train.report:render")
