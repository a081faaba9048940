"""``residuals bench ensemble``: parse the options, call
:func:`residuals.bench.ensemble.run`, print.

Only click and the standard library are imported at module level; ``--help`` reads the
presets and the verdict's rule from :mod:`residuals.bench.ensemble.config`, which loads
no torch.
"""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import click

from residuals.cli_options import (
    PRECISIONS,
    data_dir_option,
    dataset_option,
    device_option,
    jobs_option,
    out_option,
    precision_option,
    preset_option,
)
from residuals.cli_support import (
    PresetsHelp,
    command_line,
    echo_verdict,
    given_options,
    name_list,
    sigterm_as_interrupt,
    user_error,
)

PRESET_NAMES = ("digits", "fashion-mnist", "paper")  # residuals.bench.ensemble.PRESETS

# options that define the run (or its folder); with --resume they come from its meta.json
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

EXAMPLES = """\b
Examples:
  residuals bench ensemble
  residuals bench ensemble --seeds 3 --draws 20
  residuals bench ensemble --families residual,plain --depth 56
  residuals bench ensemble --preset fashion-mnist --device cuda
  residuals bench ensemble --resume reports/20261204-180000-ensemble-digits
"""


@click.command(
    cls=PresetsHelp,
    presets_from="residuals.bench.ensemble.config",
    examples=EXAMPLES,
    context_settings={"max_content_width": 100},
)
@preset_option(PRESET_NAMES)
@dataset_option()
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
    help="Epochs of the end-to-end nets (residual, plain); a linear warm-up keeps "
    "its share (2 of 12 epochs).",
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
@precision_option(
    "Arithmetic of the nets' training: bf16 autocast, fp32, or auto (bf16 on "
    "CUDA and on CPUs with native bf16 where a worker runs one thread)."
)
@device_option("Where to train: auto picks cuda when available.")
@jobs_option(
    "Models trained at once, each in its own process [default: one per core on the CPU, 4 on CUDA]."
)
@data_dir_option()
@out_option()
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
    from residuals.device import DeviceError

    config = None
    if resume is not None:
        given = given_options(ctx, RUN_OPTIONS)
        if given:
            raise click.UsageError(
                f"--resume continues a run with its saved configuration; "
                f"drop {', '.join(given)} (or start a new run)."
            )
        device = None  # the device the run started on
    else:
        config = _config(
            ens,
            preset,
            dataset=dataset,
            families=name_list(families, "--families", ens.FAMILIES, "family"),
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

    started: list = []  # the run folder, once run() has made or reopened it
    try:
        with sigterm_as_interrupt():  # `kill` (a scheduler's stop) like Ctrl-C: keep, resume
            result = ens.run(
                config,
                out=out,
                device=device,
                jobs=jobs,
                resume=resume,
                data_dir=data_dir,
                echo=click.echo,
                warn=lambda line: click.echo(line, err=True),
                command=command_line(),
                started=started.append,
            )
    except ens.EnsembleError as e:
        if e.option is None:
            raise click.UsageError(str(e)) from None
        raise click.BadParameter(str(e), param_hint=f"--{e.option.replace('_', '-')}") from None
    except DeviceError as e:
        raise click.BadParameter(str(e), param_hint="--device") from None
    except KeyboardInterrupt:
        if not started:
            raise
        click.echo(
            f"\nInterrupted. Measured models and every checkpoint are kept in {started[0].path}.",
            err=True,
        )
        click.echo(f"Continue with: {ens.resume_command(started[0])}", err=True)
        sys.exit(130)
    except Exception as e:
        message = user_error(e)  # data, memory, disk: said plainly; a bug: the traceback
        if message is None:
            raise
        where = f"\nMeasured models are kept in {started[0].path}." if started else ""
        raise click.ClickException(message + where) from None

    echo_verdict(result)


def _config(ens, preset: str | None, **overrides):
    cfg = ens.PRESETS[preset or ens.DEFAULT_PRESET]
    changes = {k: v for k, v in overrides.items() if v is not None}
    if "epochs" in changes and cfg.warmup == "linear":
        # the linear warm-up keeps its share of training (the digits preset's: 2 of 12 epochs)
        changes["warmup_epochs"] = cfg.warmup_epochs / cfg.epochs * changes["epochs"]
    try:
        return replace(cfg, **changes)
    except ValueError as e:
        if "depth" in str(e):
            raise click.BadParameter(str(e), param_hint="--depth") from None
        raise click.UsageError(str(e)) from None
