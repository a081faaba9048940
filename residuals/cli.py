"""The ``residuals`` command line.

Commands live in their own modules and are imported only when invoked, so
``residuals --help`` stays instant (no torch import)::

    residuals train               one net, one dataset, one recipe
    residuals bench degradation   plain vs residual nets at several depths
    residuals bench boosting      our booster against scikit-learn's
    residuals bench ensemble      lesions: do residual nets behave like boosted ensembles?
    residuals report build|list|open|serve|compare
"""

from __future__ import annotations

import importlib

import click


class LazyGroup(click.Group):
    """A click group whose subcommands are imported on first use (click docs, "Lazy loading")."""

    def __init__(self, *args, lazy_subcommands: dict[str, str] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.lazy_subcommands = lazy_subcommands or {}

    def list_commands(self, ctx):
        return sorted({*super().list_commands(ctx), *self.lazy_subcommands})

    def get_command(self, ctx, cmd_name):
        if cmd_name in self.lazy_subcommands:
            module_name, _, attr = self.lazy_subcommands[cmd_name].partition(":")
            return getattr(importlib.import_module(module_name), attr)
        return super().get_command(ctx, cmd_name)


@click.group(
    cls=LazyGroup,
    lazy_subcommands={"train": "residuals.bench.train_cli:train"},
    context_settings={"help_option_names": ["-h", "--help"]},
)
@click.version_option(package_name="residuals")
def main():
    """Fit the residual: gradient boosting and residual networks, side by side."""


@main.group(
    cls=LazyGroup,
    lazy_subcommands={
        "degradation": "residuals.bench.degradation_cli:degradation",
        "boosting": "residuals.bench.boosting_cli:boosting",
        "ensemble": "residuals.bench.ensemble_cli:ensemble",
    },
)
def bench():
    """Run a benchmark and write its HTML report."""


@main.group(
    cls=LazyGroup,
    lazy_subcommands={
        "build": "residuals.report.cli:build",
        "list": "residuals.report.cli:list_runs",
        "open": "residuals.report.cli:open_run",
        "serve": "residuals.report.cli:serve",
        "compare": "residuals.report.cli:compare",
    },
)
def report():
    """Build, list, open, serve and compare run reports."""


if __name__ == "__main__":  # pragma: no cover
    main()
