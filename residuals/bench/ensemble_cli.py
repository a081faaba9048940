"""``residuals bench ensemble``: the command line of :mod:`residuals.bench.ensemble`.

Only click and the standard library are imported at module level, so ``--help``
never loads torch; the command parses its options into an ``EnsembleConfig``,
calls :func:`residuals.bench.ensemble.run` and prints.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click
from click.core import ParameterSource

PRESET_NAMES = ("digits", "fashion-mnist", "paper")
DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = {"auto": None, "bf16": True, "fp32": False}  # --precision -> amp

# options that define the run; with --resume they come from the run's meta.json
RUN_OPTIONS = (
    "preset",
    "dataset",
    "families",
    "depth",
    "seeds",
    "draws",
    "epochs",
    "stage_epochs",
    "n_estimators",
    "max_depth",
    "train_size",
    "test_size",
    "precision",
    "device",
    "out",
)

EPILOG = """\b
Presets (options given on the command line override them):
  digits         the default: scikit-learn's embedded 8x8 digits (no download),
                 ResNet-20 and its plain twin (12 epochs), the stagewise
                 ResNet-20 (6 epochs per block), a booster of 100 iterations of
                 depth-3 trees; 2 seeds; 3 minutes or less on 2 CPU cores.
  fashion-mnist  Fashion-MNIST (downloads ~30 MB): ResNet-56 and its twin (15
                 epochs), the stagewise ResNet-56 (2 epochs per block), a booster
                 of comparable size (500 iterations of depth-6 trees: 635k leaf
                 values and thresholds; ResNet-56 has 0.86M weights); 1 seed; GPU.
  paper          Veit et al.'s setting: CIFAR-10 ResNet-110 with He et al.'s
                 recipe (182 epochs, lr 0.1 /10 at 50% and 75%, pad-crop-flip),
                 the stagewise ResNet-110 (4 epochs per block), a booster of 1000
                 iterations of depth-6 trees; 1 seed; a GPU job.

\b
The verdict: for each model, D is the mean over its stages of the test error
with that stage deleted minus the whole model's, in points. Veit's contrast is
reproduced when, on every seed, D(residual) <= 1/4 x D(plain) and
D(plain) >= 10 points.

\b
Examples:
  residuals bench ensemble
  residuals bench ensemble --seeds 3 --draws 20
  residuals bench ensemble --families residual,plain --depth 56
  residuals bench ensemble --preset fashion-mnist --device cuda
  residuals bench ensemble --resume reports/20261204-180000-ensemble-digits
"""


def _families(value: str | None) -> tuple[str, ...] | None:
    if value is None:
        return None
    from residuals.bench.ensemble import FAMILIES

    items = tuple(v for v in value.replace(" ", "").split(",") if v)
    bad = [v for v in items if v not in FAMILIES]
    if bad or not items:
        raise click.BadParameter(
            f"unknown family {', '.join(map(repr, bad)) or '(none given)'}; choose from "
            f"{', '.join(FAMILIES)} (comma-separated)",
            param_hint="--families",
        )
    return items


@click.command(epilog=EPILOG, context_settings={"max_content_width": 100})
@click.option(
    "--preset",
    type=click.Choice(PRESET_NAMES),
    default=None,
    help="Start from a preset (default: digits); see Presets below.",
)
@click.option(
    "--dataset",
    default=None,
    metavar="NAME",
    help="Dataset: digits (embedded), fashion-mnist or cifar10.",
)
@click.option(
    "--families",
    default=None,
    metavar="F,F,...",
    help="Which models: booster, residual, plain, stagewise (default: all four).",
)
@click.option(
    "--depth",
    type=int,
    default=None,
    metavar="D",
    help="Depth of the nets, 6n+2 (8, 14, 20, 32, 44, 56, 110, ...).",
)
@click.option(
    "--seeds",
    type=click.IntRange(min=1),
    default=None,
    metavar="N",
    help="Seeds; every family trains with seeds 0..N-1.",
)
@click.option(
    "--draws",
    type=click.IntRange(min=1),
    default=None,
    metavar="N",
    help="Random sets of k deleted stages per k [default: 10].",
)
@click.option(
    "--epochs",
    type=click.IntRange(min=1),
    default=None,
    help="Epochs of the end-to-end nets (residual, plain).",
)
@click.option(
    "--stage-epochs",
    type=click.IntRange(min=1),
    default=None,
    help="Epochs of each block of the stagewise net.",
)
@click.option(
    "--n-estimators",
    type=click.IntRange(min=1),
    default=None,
    metavar="N",
    help="Boosting iterations (stages) of the booster; one tree per class each.",
)
@click.option(
    "--max-depth",
    type=click.IntRange(min=1),
    default=None,
    metavar="D",
    help="Depth of the booster's trees.",
)
@click.option(
    "--train-size",
    type=click.IntRange(min=2),
    default=None,
    metavar="N",
    help="Train every family on a seeded subset of N training images [default: all].",
)
@click.option(
    "--test-size",
    type=click.IntRange(min=2),
    default=None,
    metavar="N",
    help="Measure every model on a seeded subset of N test images [default: all].",
)
@click.option(
    "--precision",
    type=click.Choice(tuple(PRECISIONS)),
    default=None,
    help="Arithmetic of the nets' training: bf16 autocast, fp32, or auto (bf16 on "
    "CUDA and on CPUs with native bf16 where a worker runs one thread).",
)
@click.option(
    "--device",
    type=click.Choice(DEVICES),
    default=None,
    help="Where to train: auto (the default) picks cuda when available.",
)
@click.option(
    "--jobs",
    type=click.IntRange(min=1),
    default=None,
    metavar="N",
    help="Models trained at once, each in its own process [default: one per core on "
    "the CPU, 4 on CUDA].",
)
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Folder holding (or receiving) the dataset files "
    "[default: $RESIDUALS_DATA or ~/.cache/residuals].",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("reports"),
    show_default=True,
    help="Folder in which the new run folder is created.",
)
@click.option(
    "--resume",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    metavar="RUN_DIR",
    help="Continue an interrupted run folder with its saved configuration: measured "
    "models are kept, unfinished nets continue from their checkpoints. Only "
    "--jobs and --data-dir may be given with it.",
)
@click.pass_context
def ensemble(
    ctx,
    preset,
    dataset,
    families,
    depth,
    seeds,
    draws,
    epochs,
    stage_epochs,
    n_estimators,
    max_depth,
    train_size,
    test_size,
    precision,
    device,
    jobs,
    data_dir,
    out,
    resume,
):
    """Do residual nets behave like boosted ensembles? Lesions of four model families.

    Trains a booster, a ResNet, its plain twin and the ResNet trained block by block
    like a booster; deletes single stages and random sets of stages at test time
    (Veit et al. 2016), measures the staged test error and each stage's contribution,
    and writes a run folder under --out (lesions.csv, staged.csv, contributions.csv,
    models.csv, meta.json) with an HTML report whose first line is the verdict.
    """
    from residuals.bench import ensemble as ens
    from residuals.data import DatasetError
    from residuals.device import DeviceError
    from residuals.runs import BrokenRun

    if resume is not None:
        given = [
            f"--{n.replace('_', '-')}"
            for n in RUN_OPTIONS
            if ctx.get_parameter_source(n) is ParameterSource.COMMANDLINE
        ]
        if given:
            raise click.UsageError(
                f"--resume continues a run with its saved configuration; "
                f"drop {', '.join(given)} (or start a new run)."
            )
        config = None
    else:
        config = _config(
            ens,
            preset,
            dataset=dataset,
            families=_families(families),
            depth=depth,
            seeds=seeds,
            draws=draws,
            epochs=epochs,
            stage_epochs=stage_epochs,
            n_estimators=n_estimators,
            max_depth=max_depth,
            train_size=train_size,
            test_size=test_size,
            amp=PRECISIONS.get(precision),
        )
    from residuals.bench.degradation_cli import _sigterm_as_interrupt

    try:
        with _sigterm_as_interrupt():  # `kill` (a scheduler's stop) like Ctrl-C: keep, resume
            ens.run(
                config,
                out=out,
                device=device or "auto",
                jobs=jobs,
                resume=resume,
                data_dir=str(data_dir) if data_dir is not None else None,
                echo=click.echo,
            )
    except BrokenRun as e:
        raise click.BadParameter(str(e), param_hint="--resume") from None
    except DeviceError as e:
        raise click.BadParameter(str(e), param_hint="--device") from None
    except DatasetError as e:
        raise click.ClickException(str(e)) from None
    except KeyboardInterrupt:
        sys.exit(130)  # run() said how to continue
    except ValueError as e:  # a configuration or data a family cannot take
        raise click.UsageError(str(e)) from None


def _config(ens, preset: str | None, **overrides):
    from dataclasses import replace

    cfg = ens.PRESETS[preset or ens.DEFAULT_PRESET]
    changes = {k: v for k, v in overrides.items() if v is not None}
    if "dataset" in changes:
        from residuals.data import DATASETS

        if changes["dataset"] not in DATASETS:
            raise click.BadParameter(
                f"unknown dataset {changes['dataset']!r}; choose from {', '.join(DATASETS)}",
                param_hint="--dataset",
            )
    if "epochs" in changes and cfg.warmup == "linear":
        # the linear warm-up keeps its share of training (the digits preset's: 2 of 12 epochs)
        changes["warmup_epochs"] = cfg.warmup_epochs / cfg.epochs * changes["epochs"]
    try:
        return replace(cfg, **changes)
    except ValueError as e:
        hint = "--depth" if "depth" in str(e) else None
        if hint:
            raise click.BadParameter(str(e), param_hint=hint) from None
        raise click.UsageError(str(e)) from None
