"""The ensemble benchmark: do residual networks behave like boosted ensembles?

Veit, Wilber and Belongie (NeurIPS 2016, "Residual networks behave like ensembles
of relatively shallow networks") deleted single blocks from a trained ResNet-110
at test time: its CIFAR-10 error barely moved, while deleting one layer of a
plain VGG-style net sent it to chance; deleting several blocks raised the error
smoothly. A boosted ensemble should behave that way by construction. This
bench trains four families on one dataset (:mod:`residuals.bench.ensemble.families`:
a booster, a ResNet, its plain twin, and the ResNet trained block by block like
a booster) and measures each through :class:`residuals.core.Stagewise` alone
(:mod:`residuals.bench.ensemble.measurement`)::

    from residuals.bench import ensemble
    result = ensemble.run(ensemble.PRESETS["digits"], out="reports", device="cpu")
    result.verdict.headline          # the run folder: lesions.csv, staged.csv, contributions.csv,
    result.run.read_table("lesions") # models.csv, meta.json and index.html

The verdict (:func:`ensemble_verdict`) is a rule on ``lesions.csv``, stated here
once. For a model, let ``D`` be the mean over its stages of the test error with
that stage deleted minus the test error of the whole model, in percentage
points. Veit's contrast is reproduced when, on every seed,

    D(residual) <= CONTRAST_FACTOR * D(plain)   and   D(plain) >= PLAIN_MIN_POINTS

(factor 1/4, 10 points): deleting a block of the residual net costs at most a
quarter of what deleting a block of the plain net costs, and deleting a plain
block does break the plain net. The booster's and the stagewise net's ``D``
are reported beside it.

Modules: ``config`` (the run, presets, the rule's constants), ``families`` (the
registry of model families and the four built in), ``measure`` (lesion plans and
their measurement), ``runner`` (one model, every model, the tables), ``pool``
(worker processes), ``verdict`` and ``report`` (the renderer); the command is
:mod:`residuals.bench.ensemble_cli`.
"""

from typing import TYPE_CHECKING

from residuals._lazy import lazy_exports

if TYPE_CHECKING:  # the exports, imported on first use (residuals._lazy)
    from residuals.bench.ensemble.config import (
        CONTRAST_FACTOR,
        DEFAULT_FAMILIES,
        DEFAULT_PRESET,
        PLAIN_MIN_POINTS,
        PRESET_INFO,
        PRESETS,
        EnsembleConfig,
        describe_preset,
        verdict_rule,
    )
    from residuals.bench.ensemble.families import (
        FAMILIES,
        FitRequest,
        Fitted,
        family_names,
        register_family,
    )
    from residuals.bench.ensemble.measurement import (
        LESION_COLUMNS,
        lesion_counts,
        lesion_plan,
        measure,
    )
    from residuals.bench.ensemble.runner import (
        EnsembleError,
        EnsembleResult,
        fit_and_measure,
        load_data,
        open_resume,
        plan,
        resume_command,
        run,
        run_bench,
    )
    from residuals.bench.ensemble.verdict import Verdict, ensemble_verdict, lesion_summary

__getattr__, __dir__, __all__ = lazy_exports(__name__, __file__)
