"""What the commands share besides their options (those are in :mod:`residuals.cli_options`).

A ``--help`` epilog written from a bench's presets (:class:`PresetsHelp`), the command line
as typed (:func:`command_line`), the options given next to ``--resume``
(:func:`given_options`), ``kill`` handled like Ctrl-C (:func:`sigterm_as_interrupt`), the
errors a user can fix turned into one message (:func:`user_error`, :func:`library_error`,
:func:`write_error`) and a bench's verdict printed (:func:`echo_verdict`).

Only click and the standard library are imported here, so ``--help`` stays instant; the
library's error types are imported inside the functions that test for them.
"""

from __future__ import annotations

import contextlib
import errno
import importlib
import shlex
import signal
from collections.abc import Iterable, Iterator
from typing import Any

import click
from click.core import ParameterSource

__all__ = [
    "name_list",
    "PresetsHelp",
    "command_line",
    "echo_verdict",
    "given_options",
    "library_error",
    "sigterm_as_interrupt",
    "user_error",
    "write_error",
]


class PresetsHelp(click.Command):
    """A bench command whose ``--help`` ends with its presets, its verdict's rule and examples.

    ``presets_from`` names the bench's config module (``PRESET_INFO``, ``describe_preset``,
    ``verdict_rule``; it must load no torch), imported only when help is shown::

        @click.command(cls=PresetsHelp, presets_from="residuals.bench.NAME.config", examples=...)
    """

    def __init__(self, *args: Any, presets_from: str, examples: str = "", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.presets_from = presets_from
        self.examples = examples

    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        config = importlib.import_module(self.presets_from)
        with formatter.section("Presets (options given on the command line override them)"):
            formatter.write_dl(
                [(name, config.describe_preset(name)) for name in config.PRESET_INFO]
            )
        with formatter.section("The verdict"):
            formatter.write_text(config.verdict_rule())
        formatter.write_paragraph()
        formatter.write_text(self.examples)


def command_line() -> str:
    """The command as typed (``residuals ...``, shell-quoted), for a run's resume hint."""
    from residuals.runs.rundir import typed_command

    return typed_command()


def given_options(ctx: click.Context, names: Iterable[str]) -> list[str]:
    """Those of ``names`` given on the command line, spelled as flags (``--batch-size``)."""
    return [
        f"--{n.replace('_', '-')}"
        for n in names
        if ctx.get_parameter_source(n) is ParameterSource.COMMANDLINE
    ]


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Treat ``kill PID`` (SIGTERM, e.g. a job scheduler's stop) like Ctrl-C: keep and report."""

    def handler(signum, frame):
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def library_error(e: Exception) -> str | None:
    """The message of the library's own errors a user can act on (data, training, a run
    folder); None for any other exception."""
    from residuals.data import DatasetError
    from residuals.runs import BrokenRun
    from residuals.train import TrainError

    if isinstance(e, (DatasetError, TrainError, BrokenRun)):
        return str(e)
    return None


def user_error(e: Exception) -> str | None:
    """A bench's message for an error the user can fix (data, memory, disk); None for a bug."""
    from concurrent.futures.process import BrokenProcessPool

    message = library_error(e)
    if message is not None:
        return message
    if isinstance(e, BrokenProcessPool):
        return (
            "a worker process died without a Python error (killed by the system, e.g. when "
            "memory ran out?); try fewer --jobs"
        )
    if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
        where = f" while writing {e.filename}" if e.filename else ""
        return f"the disk is full (no space left on the device{where}); free some space"
    if isinstance(e, OSError):  # a folder that became unwritable, ...
        return f"{type(e).__name__}: {e}"
    return None


def write_error(e: OSError, hint: str = "") -> str:
    """An OSError met while writing, as one line a user can act on."""
    where = f" {e.filename}" if e.filename else ""
    return f"cannot write{where}: {e.strerror or e}" + (f"; {hint}" if hint else "")


def echo_verdict(result: Any) -> None:
    """Print a finished bench run's verdict, its notes and its report (or, for a run that was
    already complete, how to rebuild its report)."""
    if result.already_complete:
        click.echo(f"{result.run.path} is already complete: {result.verdict.headline}")
        click.echo(
            f"Rebuild its report with: residuals report build {shlex.quote(str(result.run.path))}"
        )
        return
    click.echo("")
    click.echo(result.verdict.headline)
    for note in result.verdict.notes:
        click.echo(f"  note: {note}")
    if result.report is not None:
        click.echo(f"report: {result.report}")


def name_list(
    value: str | None, option: str, choices: Iterable[str], noun: str = ""
) -> tuple[str, ...] | None:
    """A comma-separated ``--option a,b`` as a tuple of names, each one of ``choices``
    (None when the option was not given); anything else is a usage error that lists them."""
    if value is None:
        return None
    choices = tuple(choices)
    items = tuple(v for v in value.replace(" ", "").split(",") if v)
    bad = [v for v in items if v not in choices]
    if bad or not items:
        raise click.BadParameter(
            f"unknown {noun + ' ' if noun else ''}{', '.join(map(repr, bad)) or '(none given)'}; "
            f"choose from {', '.join(choices)} (comma-separated)",
            param_hint=option,
        )
    return items
