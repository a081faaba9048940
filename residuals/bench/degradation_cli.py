"""``residuals bench degradation``: parse the options, call
:func:`residuals.bench.degradation.run`, print.

Only click and the standard library are imported at module level; ``--help`` reads the
presets and the verdict's rule from :mod:`residuals.bench.degradation.config`, which loads
no torch.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from residuals.cli_options import (
    PRECISIONS,
    data_dir_option,
    dataset_option,
    device_option,
    jobs_option,
    lr_option,
    out_option,
    precision_option,
    preset_option,
    seed_option,
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

PRESET_NAMES = ("digits", "fashion-mnist", "paper")  # residuals.bench.degradation.PRESETS
VARIANT_NAMES = ("plain", "residual")  # residuals.bench.degradation.VARIANTS
WARMUPS = ("linear", "paper", "none")  # residuals.train.WARMUPS

# options that define the sweep (or its folder); with --resume they come from the run's meta.json
SWEEP_OPTIONS = (
    "preset",
    "dataset",
    "depths",
    "variants",
    "seeds",
    "seed",
    "epochs",
    "batch_size",
    "lr",
    "learning_rate",
    "warmup",
    "precision",
    "device",
    "out",
)

EXAMPLES = """\b
Examples:
  residuals bench degradation
  residuals bench degradation --depths 20,56 --seeds 3
  residuals bench degradation --preset paper --device cuda
  residuals bench degradation --resume reports/20261123-101500-degradation-digits
"""


def _int_list(value: str | None, option: str) -> tuple[int, ...] | None:
    if value is None:
        return None
    try:
        items = tuple(int(v) for v in value.replace(" ", "").split(",") if v)
    except ValueError:
        raise click.BadParameter(
            f"expected comma-separated integers such as 20,56; got {value!r}", param_hint=option
        ) from None
    if not items:
        raise click.BadParameter("give at least one value, e.g. 20,56", param_hint=option)
    return items


@click.command(
    cls=PresetsHelp,
    presets_from="residuals.bench.degradation.config",
    examples=EXAMPLES,
    context_settings={"max_content_width": 100},
)
@preset_option(PRESET_NAMES)
@dataset_option()
@click.option(
    "--depths",
    default=None,
    metavar="D,D,...",
    help="Network depths, each 6n+2 (8, 14, 20, 32, 44, 56, 110, ...), e.g. 20,56.",
)
@click.option(
    "--variants",
    default=None,
    metavar="V,V",
    help="Which nets: plain (no shortcuts), residual, or plain,residual (default).",
)
@click.option(
    "--seeds",
    type=click.IntRange(min=1),
    default=None,
    metavar="N",
    help="Number of seeds; the report shows their spread.",
)
@seed_option("First seed: runs use seeds SEED..SEED+N-1 (weights and data order).", default=None)
@click.option(
    "--epochs",
    type=click.IntRange(min=1),
    default=None,
    help="Training epochs per run; a linear warm-up keeps its share (2 of 12 epochs).",
)
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=None,
    help="Images per SGD step (on a GPU that runs out of memory: try half).",
)
@lr_option("Peak learning rate (after the warm-up).")
@click.option(
    "--warmup",
    type=click.Choice(WARMUPS),
    default=None,
    help="Learning-rate warm-up for every run: linear (a ramp over the first sixth of "
    "training in the default preset), paper "
    "(lr/10 until training error < 80%, He et al.'s ResNet-110 recipe) or none.",
)
@precision_option(
    "Arithmetic of training: bf16 autocast, fp32, or auto (the default): bf16 on "
    "CUDA and, where each worker (or, with --jobs 1, each data-parallel replica) "
    "runs one thread, on CPUs with native bf16 (AVX512-BF16, AMX); fp32 elsewhere."
)
@device_option("Where to train: auto picks cuda when available.")
@jobs_option(
    "Runs trained at once, each in its own process with one torch thread "
    "[default: number of cores on CPU, 4 on CUDA: small nets leave a GPU idle]."
)
@click.option(
    "--fuse",
    type=click.Choice(("auto", "on", "off")),
    default="auto",
    show_default=True,
    help="Train the runs of each depth (seeds, plain and residual) as fused models "
    "sized by GPU memory (docs/fused.md); auto: on CUDA, and on a CPU where "
    "measured faster.",
)
@data_dir_option()
@out_option()
@click.option(
    "--resume",
    "resume",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    metavar="RUN_DIR",
    help="Continue an interrupted run folder with its saved configuration: finished "
    "runs are skipped, unfinished ones continue from their checkpoints on the "
    "device they started on. Only --jobs, --fuse and --data-dir may be given with it.",
)
@click.pass_context
def degradation(
    ctx,
    preset,
    dataset,
    depths,
    variants,
    seeds,
    seed,
    epochs,
    batch_size,
    lr,
    warmup,
    precision,
    device,
    jobs,
    fuse,
    data_dir,
    out,
    resume,
):
    """Plain vs residual nets at several depths: the degradation problem (He et al. 2015, Fig. 6).

    Trains every (variant, depth, seed), writes a run folder under --out with tidy
    results (results.csv, runs.csv, probes.csv), meta.json and an HTML report whose
    first line is the measured verdict. Ctrl-C keeps every checkpoint; the message
    tells the --resume command that continues.
    """
    from residuals.bench import degradation as deg
    from residuals.device import DeviceError
    from residuals.runs import RunInUse

    depths = _int_list(depths, "--depths")
    variants = name_list(variants, "--variants", VARIANT_NAMES)
    cfg = None
    if resume is not None:
        given = given_options(ctx, SWEEP_OPTIONS)
        if given:
            raise click.UsageError(
                f"--resume continues a run with its saved configuration; drop "
                f"{', '.join(given)} (or start a new run without --resume)."
            )
        device = None  # the device the run started on
    else:
        try:
            cfg = deg.configure(
                preset or deg.DEFAULT_PRESET,
                dataset=dataset,
                depths=depths,
                variants=variants,
                seeds=seeds,
                first_seed=seed,
                epochs=epochs,
                batch_size=batch_size,
                lr=lr,
                warmup=warmup,
                amp=PRECISIONS.get(precision),
            )
        except ValueError as e:
            raise click.UsageError(str(e)) from None

    started = []  # the run folder, once run() has made or reopened it
    try:
        with sigterm_as_interrupt():
            result = deg.run(
                cfg,
                out=out,
                device=device,
                jobs=jobs,
                fuse=fuse,
                resume=resume,
                data_dir=data_dir,
                echo=click.echo,
                warn=lambda line: click.echo(line, err=True),
                command=command_line(),
                started=started.append,
            )
    except deg.SweepError as e:
        if e.option is None:
            raise click.UsageError(str(e)) from None
        raise click.BadParameter(str(e), param_hint=f"--{e.option.replace('_', '-')}") from None
    except DeviceError as e:
        raise click.BadParameter(str(e), param_hint="--device") from None
    except RunInUse as e:
        raise click.ClickException(str(e)) from None
    except KeyboardInterrupt:
        if not started:
            raise
        click.echo(
            f"\nInterrupted. Finished runs and every checkpoint are kept in {started[0].path}.",
            err=True,
        )
        click.echo(f"Continue with: {deg.resume_command(started[0])}", err=True)
        sys.exit(130)
    except Exception as e:
        message = user_error(e)
        if message is None:
            raise
        if not started:
            raise click.ClickException(message) from None
        raise click.ClickException(
            f"{message}\nFinished runs are kept in {started[0].path}. To change an option (such "
            f"as --batch-size), start a new run; if the cause was outside this run's settings (a "
            f"GPU another process filled, a full disk), continue with: "
            f"{deg.resume_command(started[0])}"
        ) from None

    if not _rank0():  # under torchrun: rank 0 tells the outcome
        return
    echo_verdict(result)


def _rank0() -> bool:
    from residuals.distributed import launch

    info = launch()
    return info is None or info.rank == 0
