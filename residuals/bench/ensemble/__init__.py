"""The ensemble benchmark: do residual networks behave like boosted ensembles?

Veit, Wilber and Belongie (NeurIPS 2016, "Residual networks behave like ensembles
of relatively shallow networks") deleted single blocks from a trained ResNet-110
at test time: its CIFAR-10 error barely moved, while deleting one layer of a
plain VGG-style net sent it to chance; deleting several blocks raised the error
smoothly. A boosted ensemble should behave that way by construction. This
bench trains four families on one dataset (:mod:`residuals.bench.ensemble_families`:
a booster, a ResNet, its plain twin, and the ResNet trained block by block like
a booster) and measures each through :class:`residuals.core.Stagewise` alone
(:mod:`residuals.bench.ensemble_measure`)::

    cfg = PRESETS["digits"]                      # the default
    run = RunDir.create("reports", bench="ensemble", dataset=cfg.dataset, config=cfg.to_dict())
    run_bench(run, cfg, device="cpu")            # lesions.csv, staged.csv, contributions.csv,
    ensemble_verdict(run.read_table("lesions"))  # models.csv

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

from residuals.bench.ensemble.config import (
    CONTRAST_FACTOR,
    DEFAULT_FAMILIES,
    DEFAULT_PRESET,
    PLAIN_MIN_POINTS,
    PRESETS,
    EnsembleConfig,
)
from residuals.bench.ensemble.families import (
    FAMILIES,
    FitRequest,
    Fitted,
    family_names,
    register_family,
)
from residuals.bench.ensemble.measure import LESION_COLUMNS, lesion_counts, lesion_plan, measure
from residuals.bench.ensemble.runner import fit_and_measure, load_data, plan, run, run_bench
from residuals.bench.ensemble.verdict import Verdict, ensemble_verdict, lesion_summary

__all__ = [
    "CONTRAST_FACTOR",
    "DEFAULT_FAMILIES",
    "DEFAULT_PRESET",
    "FAMILIES",
    "LESION_COLUMNS",
    "PLAIN_MIN_POINTS",
    "PRESETS",
    "EnsembleConfig",
    "FitRequest",
    "Fitted",
    "Verdict",
    "ensemble_verdict",
    "family_names",
    "fit_and_measure",
    "lesion_counts",
    "lesion_plan",
    "lesion_summary",
    "load_data",
    "measure",
    "plan",
    "register_family",
    "run",
    "run_bench",
]
