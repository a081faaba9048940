"""``residuals train``: the command line of :mod:`residuals.bench.train`.

Only click and the standard library are imported at module level, so ``--help`` never
loads torch; the command parses options into a recipe, calls
:func:`residuals.bench.train.run` and turns the errors a user can fix into messages.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click
from click.core import ParameterSource

from residuals.cli_options import (
    PRECISIONS,
    data_dir_option,
    dataset_option,
    device_option,
    lr_option,
    out_option,
    precision_option,
    seed_option,
)
from residuals.cli_support import library_error, sigterm_as_interrupt


def _epilog() -> str:
    from residuals.bench.train.recipes import RECIPES

    lines = [
        "\b",
        "Recipes (--recipe; options given on the command line override them):",
    ]
    for name, r in RECIPES.items():
        t = r.train
        size = f" at {r.resize}x{r.resize}" if r.resize else ""
        lines.append(
            f"  {name:<14} {r.model} on {r.dataset}{size}: {t.optimizer} lr {t.lr:g}, "
            f"batch {t.batch_size}, {t.epochs} epochs, {t.schedule}"
        )
    lines += [
        "",
        "\b",
        "Examples:",
        "  residuals train                                   # resnet20 on digits",
        "  residuals train --model resnet56 --activation elu --epochs 20",
        "  residuals train --recipe d2l-resnet18 --device cuda",
        "  residuals train --recipe tf-preact-elu --dataset digits --tensorboard tb/",
        "  residuals train --resume reports/<run folder> --epochs 20   # 8 more epochs",
        "  residuals train --list-models",
    ]
    return "\n".join(lines)


def _list_models(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if not value or ctx.resilient_parsing:
        return
    import torch

    from residuals.nets import MODELS, build_model

    click.echo(f"{'name':<15} {'depth':>5}  {'block':<18} {'activation':<10} {'head':<6} params")
    for name in MODELS:
        with torch.device("meta"):
            c = build_model(name).config
            params = build_model(name).num_parameters()
        click.echo(
            f"{name:<15} {c.depth:>5}  {c.block:<18} {c.activation:<10} {c.head:<6} "
            f"{params / 1e6:.2f}M"
        )
    click.echo(
        "\nAlso: resnet/plain/preresnet/preplain followed by any depth 6n+2 (CIFAR nets, e.g. "
        "plain14) or 9n+2 (bottleneck), or 101/152 (ImageNet-style). Parameters for 3-channel "
        "images and 10 classes; the dataset sets both when training."
    )
    ctx.exit()


class _Command(click.Command):
    """Its epilog (the recipes) is generated when help is shown, from the recipes themselves."""

    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        self.epilog = _epilog()
        super().format_epilog(ctx, formatter)


@click.command(cls=_Command, context_settings={"max_content_width": 100})
@click.option(
    "--recipe",
    default=None,
    metavar="NAME",
    help="Start from a named recipe (default: default); see Recipes below.",
)
@click.option(
    "--model",
    default=None,
    metavar="NAME",
    help="A registered net (--list-models), e.g. resnet56, preresnet1001, d2l-resnet18.",
)
@click.option(
    "--list-models",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=_list_models,
    help="List the registered nets and exit.",
)
@dataset_option("digits (embedded), fashion-mnist or cifar10.")
@click.option(
    "--resize",
    type=click.IntRange(min=1),
    default=None,
    metavar="N",
    help="Resize the images to NxN pixels first (bilinear; d2l uses 96).",
)
@click.option(
    "--subset",
    type=click.IntRange(min=2),
    default=None,
    metavar="N",
    help="Train on the first N training images only (a quick trial; the test set stays whole).",
)
@click.option(
    "--epochs",
    type=click.IntRange(min=1),
    default=None,
    help="Epochs in all; with --resume, more than the run has continues it.",
)
@click.option("--batch-size", type=click.IntRange(min=1), default=None, help="Images per step.")
@lr_option("Peak learning rate (after the warm-up).")
@click.option(
    "--schedule",
    type=click.Choice(["constant", "step", "cosine"]),
    default=None,
    help="Learning rate over training: constant, step (/10 at 50% and 75%) or cosine.",
)
@click.option(
    "--warmup",
    default=None,
    metavar="EPOCHS|paper",
    help="Linear warm-up over this many epochs (0: none), or 'paper' (lr/10 until "
    "the training error is below 80%, He et al. 2015).",
)
@click.option(
    "--optimizer",
    type=click.Choice(["sgd", "adam", "adamw"]),
    default=None,
    help="SGD with momentum, Adam, or AdamW (decoupled weight decay).",
)
@click.option(
    "--momentum",
    type=click.FloatRange(min=0, max=1, max_open=True),
    default=None,
    help="SGD's momentum, or Adam's beta1.",
)
@click.option(
    "--weight-decay",
    type=click.FloatRange(min=0),
    default=None,
    help="L2 weight decay (AdamW: decoupled).",
)
@click.option(
    "--activation",
    type=click.Choice(["relu", "elu", "gelu"]),
    default=None,
    help="Every activation of the net (default: the model's own).",
)
@click.option(
    "--head",
    type=click.Choice(["linear", "conv"]),
    default=None,
    help="Pooling + linear, or the TensorFlow article's conv head.",
)
@device_option("Where to train: auto picks cuda when available.")
@precision_option(
    "bf16 autocast, fp32, or auto (bf16 on CUDA and on one-thread CPUs with native bf16)."
)
@click.option(
    "--sync-bn/--no-sync-bn",
    default=None,
    help="Under torchrun: SyncBatchNorm, statistics over the global batch (GPUs only); "
    "default: each GPU normalises its own share, as in the paper. See docs/distributed.md.",
)
@seed_option(
    "Seeds the weights, the data order and the augmentation (default: the recipe's, 0).",
    default=None,
)
@out_option()
@click.option(
    "--resume",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    metavar="RUN_DIR",
    help="Continue a run folder from its checkpoint; only --epochs may change it.",
)
@click.option(
    "--checkpoint-every",
    type=click.IntRange(min=1),
    default=None,
    metavar="STEPS",
    help="Also checkpoint every STEPS optimiser steps within an epoch.",
)
@click.option(
    "--tensorboard",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    metavar="DIR",
    help="Write TensorBoard event files into DIR (optional extra: "
    "pip install 'residuals[tensorboard]').",
)
@data_dir_option("Folder holding (or receiving) the dataset files.")
@click.option(
    "--report/--no-report",
    default=True,
    show_default=True,
    help="Build the HTML report at the end (later: residuals report build RUN_DIR).",
)
def train(
    recipe,
    model,
    dataset,
    resize,
    subset,
    epochs,
    batch_size,
    lr,
    schedule,
    warmup,
    optimizer,
    momentum,
    weight_decay,
    activation,
    head,
    device,
    precision,
    sync_bn,
    seed,
    out,
    resume,
    checkpoint_every,
    tensorboard,
    data_dir,
    report,
):
    """Train one net on one dataset with one recipe; write a run folder and its HTML report.

    Prints a line per epoch (and, on a terminal, a progress bar within it). The run
    folder holds results.csv (per epoch), steps.csv (per step), the checkpoint and
    index.html; `residuals report list|build|compare` know it. Ctrl-C keeps the
    checkpoint and prints the command that continues.
    """
    from residuals.bench import train as lib
    from residuals.bench.train.logs import ProgressBar

    ctx = click.get_current_context()
    given = {
        "model": model,
        "dataset": dataset,
        "resize": resize,
        "subset": subset,
        "epochs": epochs,
        "batch_size": batch_size,
        "lr": lr,
        "schedule": schedule,
        "optimizer": optimizer,
        "momentum": momentum,
        "weight_decay": weight_decay,
        "activation": activation,
        "head": head,
        "device": device,
        "amp": PRECISIONS.get(precision),
        "sync_bn": sync_bn,
        "seed": seed,
    }
    # what the command line sets (a recipe's or a resumed run's own values stay otherwise;
    # --device has a default, auto, that a resume must not take for a change)
    options = {k: v for k, v in given.items() if v is not None}
    if ctx.get_parameter_source("device") is not ParameterSource.COMMANDLINE:
        options.pop("device")
    try:
        options.update(lib.parse_warmup(warmup))
        if resume is not None:
            if recipe is not None:
                raise click.UsageError(
                    "--resume continues a run with its own recipe; drop "
                    "--recipe (give --epochs to train it longer)"
                )
            chosen = lib.resume_recipe(resume, **options)
        else:
            options.setdefault("device", device)  # --device's default, auto
            chosen = lib.get_recipe(recipe or lib.DEFAULT_RECIPE).with_options(**options)
        with sigterm_as_interrupt():  # `kill PID` stops it as Ctrl-C does
            outcome = lib.run(
                chosen,
                out=out,
                resume=resume,
                data_dir=data_dir,
                checkpoint_every=checkpoint_every,
                tensorboard=tensorboard,
                echo=click.echo,
                progress=ProgressBar(),
                report=report,
            )
    except lib.TrainInterrupted as e:
        click.echo(
            f"\nInterrupted; the checkpoint is kept. Continue with:\n  {e.resume_command}",
            err=True,
        )
        sys.exit(130)
    except KeyboardInterrupt:  # before the run folder was opened: nothing to continue
        click.echo("\nInterrupted before training began; nothing was written.", err=True)
        sys.exit(130)
    except click.ClickException:
        raise
    except Exception as e:
        message = _user_error(e, resume)
        if message is None:
            raise
        raise click.ClickException(message) from None
    from residuals.distributed import launch

    info = launch()
    if info is not None and info.rank != 0:  # under torchrun, rank 0 tells the outcome
        return
    click.echo(outcome.headline)
    if report:
        click.echo(f"report: {outcome.run.html_path}")


def _user_error(e: Exception, resume: Path | None) -> str | None:
    """The message for an error the user can fix; None for a bug (its traceback is shown)."""
    from residuals.runs import RunInUse
    from residuals.train import TrainError

    if isinstance(e, RunInUse):
        return str(e)
    if isinstance(e, TrainError) and resume is not None:
        return f"{e}\nThe run folder is kept: {resume}"
    message = library_error(e)
    if message is not None:
        return message
    if isinstance(e, (ValueError, ImportError)):  # bad option values; a missing extra
        return str(e)
    if isinstance(e, (FileNotFoundError, NotADirectoryError)) and resume is not None:
        return f"--resume {resume}: {e}"
    if isinstance(e, OSError):
        return f"{type(e).__name__}: {e}"
    return None
