"""Options every command spells the same way, as click decorators.

``--device`` (default ``auto``), ``--out`` (default ``$RESIDUALS_REPORTS``, else ``reports``),
``--seed``, ``--jobs``, ``--lr`` (with ``--learning-rate`` as a hidden alias, so older
scripts keep working), and the nets' ``--preset``, ``--dataset``, ``--precision`` and
``--data-dir``. Only click and the standard library are imported here: ``--help``
stays instant.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

__all__ = [
    "DEVICES",
    "PRECISIONS",
    "REPORTS_ENV",
    "data_dir_option",
    "dataset_option",
    "device_option",
    "jobs_option",
    "lr_option",
    "out_option",
    "precision_option",
    "preset_option",
    "reports_root_option",
    "seed_option",
]

DEVICES = ("auto", "cpu", "cuda")  # residuals.device.DEVICES; kept here so --help needs no torch
REPORTS_ENV = "RESIDUALS_REPORTS"  # the reports folder, for `bench --out` and `report --root`
PRECISIONS = {"auto": None, "bf16": True, "fp32": False}  # --precision -> TrainConfig.amp

Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]


def device_option(help: str) -> Decorator:
    """``--device auto|cpu|cuda``, default ``auto`` (CUDA when available)."""
    return click.option(
        "--device", type=click.Choice(DEVICES), default="auto", show_default=True, help=help
    )


def out_option(help: str = "Folder in which the new run folder is created.") -> Decorator:
    """``--out DIR``: where run folders go; ``$RESIDUALS_REPORTS``, else ``reports``."""
    return click.option(
        "--out",
        type=click.Path(file_okay=False, path_type=Path),
        default=Path("reports"),
        envvar=REPORTS_ENV,
        show_default=True,
        show_envvar=True,
        help=help,
    )


def reports_root_option(help: str = "Reports folder that holds the run folders.") -> Decorator:
    """``--root DIR`` of the report commands: the same folder as the benches' ``--out``."""
    return click.option(
        "--root",
        type=click.Path(file_okay=False, path_type=Path),
        default=Path("reports"),
        envvar=REPORTS_ENV,
        show_default=True,
        show_envvar=True,
        help=help,
    )


def seed_option(help: str, default: int | None = 0) -> Decorator:
    """``--seed N`` (an integer >= 0)."""
    return click.option(
        "--seed",
        type=click.IntRange(min=0),
        default=default,
        show_default=default is not None,
        help=help,
    )


def jobs_option(help: str) -> Decorator:
    """``--jobs N``: how many things run at once (an integer >= 1; default: the command's)."""
    return click.option("--jobs", type=click.IntRange(min=1), default=None, metavar="N", help=help)


def lr_option(help: str, default: float | None = None, *, max: float | None = None) -> Decorator:
    """``--lr X`` (> 0), with ``--learning-rate`` accepted as a hidden alias of it."""
    kind = click.FloatRange(min=0, max=max, min_open=True)

    def decorate(f: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(f)
        def command(*args: Any, learning_rate: float | None = None, **kwargs: Any) -> Any:
            if learning_rate is not None:
                ctx = click.get_current_context()
                if ctx.get_parameter_source("lr") is click.core.ParameterSource.COMMANDLINE:
                    raise click.UsageError("--learning-rate is another name for --lr: give one")
                kwargs["lr"] = learning_rate
            return f(*args, **kwargs)

        command = click.option(
            "--learning-rate",
            "learning_rate",
            type=kind,
            default=None,
            hidden=True,
            help="Old name of --lr.",
        )(command)
        return click.option(
            "--lr", type=kind, default=default, show_default=default is not None, help=help
        )(command)

    return decorate


def preset_option(names: tuple[str, ...]) -> Decorator:
    """``--preset NAME``, one of ``names``; the bench's ``--help`` lists them below."""
    return click.option(
        "--preset",
        type=click.Choice(names),
        default=None,
        help="Start from a preset (default: digits); see Presets below.",
    )


def dataset_option(
    help: str = "Dataset: digits (embedded), fashion-mnist or cifar10.",
) -> Decorator:
    """``--dataset NAME`` (default: the preset's or recipe's)."""
    return click.option("--dataset", default=None, metavar="NAME", help=help)


def data_dir_option(
    help: str = "Folder holding (or receiving) the dataset files "
    "[default: $RESIDUALS_DATA or ~/.cache/residuals].",
) -> Decorator:
    """``--data-dir DIR``: where the dataset files are (or are downloaded to)."""
    return click.option(
        "--data-dir", type=click.Path(file_okay=False, path_type=Path), default=None, help=help
    )


def precision_option(help: str) -> Decorator:
    """``--precision auto|bf16|fp32`` (:data:`PRECISIONS` maps it to ``TrainConfig.amp``)."""
    return click.option(
        "--precision", type=click.Choice(tuple(PRECISIONS)), default=None, help=help
    )
