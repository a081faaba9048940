"""``residuals train``: train one net on one dataset with one recipe, into a run folder.

The library behind the command (the command itself is :mod:`residuals.bench.train_cli`)::

    from residuals.bench.train import RECIPES, run
    outcome = run(RECIPES["default"].with_options(model="resnet56", epochs=3))
    outcome.headline

Modules: ``recipes`` (:class:`Recipe`, the named recipes and the articles' figures), ``runner``
(:func:`run`: checks, run folder, training, report; :class:`RunWriter`), ``logs`` (the line
per epoch, the progress bar, TensorBoard), ``report`` (the renderer of these run folders).
It lives beside the benches because it writes the same run folders, which ``residuals
report`` lists, rebuilds and compares.
"""

from typing import TYPE_CHECKING

from residuals._lazy import lazy_exports

if TYPE_CHECKING:  # the exports, imported on first use (residuals._lazy)
    from residuals.bench.train.recipes import (
        ARTICLE_FIGURES,
        DEFAULT_RECIPE,
        RECIPES,
        Recipe,
        get_recipe,
        parse_warmup,
    )
    from residuals.bench.train.runner import (
        BENCH,
        RecipeMismatch,
        RunWriter,
        TrainInterrupted,
        TrainOutcome,
        median_images_per_s,
        prepare,
        resume_recipe,
        run,
    )

__getattr__, __dir__, __all__ = lazy_exports(__name__, __file__)
