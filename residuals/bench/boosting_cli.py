"""``residuals bench boosting``: parse the options, call :func:`residuals.bench.boosting.run`,
print.

Only click and the standard library are imported at module level, so
``residuals bench boosting --help`` is instant (it reads the presets from
:mod:`residuals.bench.boosting.cases`, which needs numpy only); torch, scikit-learn and pandas
load inside the command.
"""

from __future__ import annotations

from pathlib import Path

import click

from residuals.cli_options import device_option, jobs_option, lr_option, out_option, seed_option
from residuals.cli_support import write_error

# Kept in sync with residuals.bench.boosting (checked by the tests); duplicated
# here so that --help does not import numpy, pandas or scikit-learn.
DATASET_NAMES = ("diabetes", "breast_cancer", "wine", "digits", "friedman1", "classification")
METHOD_NAMES = ("ours-exact", "ours-hist", "sklearn-gbrt", "sklearn-hist")
LOSS_NAMES = ("absolute_error", "exponential", "huber", "log_loss", "quantile", "squared_error")


def _csv_choice(allowed: tuple[str, ...], what: str):
    """A click callback: a comma-separated list, each item one of ``allowed``."""

    def convert(ctx, param, value):
        if value is None:
            return None
        items = tuple(v.strip() for v in value.split(",") if v.strip())
        if not items:
            raise click.BadParameter(f"give at least one {what}; choose from: {', '.join(allowed)}")
        for v in items:
            if v not in allowed:
                raise click.BadParameter(f"unknown {what} {v!r}; choose from: {', '.join(allowed)}")
        return tuple(dict.fromkeys(items))

    return convert


def parse_rows(text: str) -> int:
    """A number of rows: ``"1000"``, ``"10k"``, ``"1m"``, ``"1_000"``; ``ValueError`` otherwise."""
    v = text.strip().lower().replace("_", "")
    mult = {"k": 1_000, "m": 1_000_000}.get(v[-1:], 1)
    if mult > 1:
        v = v[:-1]
    try:
        return int(float(v) * mult)
    except ValueError:
        raise ValueError(f"{text!r} is not a number of rows (examples: 1000, 10k, 1m)") from None


def _sizes(ctx, param, value):
    if value is None:
        return None
    try:
        out = [parse_rows(v) for v in value.split(",") if v.strip()]
    except ValueError as e:
        raise click.BadParameter(str(e)) from None
    if not out:
        raise click.BadParameter("give at least one size, e.g. 1000,4000")
    for n in out:
        if n < 20:
            raise click.BadParameter(f"sizes are training rows and must be >= 20, got {n}")
    return tuple(sorted(set(out)))


class _Command(click.Command):
    """Describes the presets in ``--help`` from their configs."""

    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        from residuals.bench.boosting.cases import PRESETS, describe_preset

        with formatter.section("Presets (--quick, --full; options override them)"):
            formatter.write_dl([(name, describe_preset(name)) for name in PRESETS])
        super().format_epilog(ctx, formatter)


@click.command(cls=_Command, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--quick/--full",
    "quick",
    default=True,
    show_default=True,
    help="Start from the quick preset (about 2 minutes on a 2-core CPU) or the full one "
    "(long: one GBRT fit at 100k rows takes about a minute); see Presets below.",
)
@click.option(
    "--datasets",
    callback=_csv_choice(DATASET_NAMES, "dataset"),
    metavar="LIST",
    help=f"Comma-separated datasets, from: {', '.join(DATASET_NAMES)}. [default: all]",
)
@click.option(
    "--sizes",
    callback=_sizes,
    metavar="LIST",
    help="Training rows of the generated datasets (friedman1, classification), e.g. "
    "1000,10k,100k. [default: the preset's]",
)
@click.option(
    "--losses",
    callback=_csv_choice(LOSS_NAMES, "loss"),
    metavar="LIST",
    help="Comma-separated losses (each applies to the datasets whose task has it). "
    "[default: the preset's]",
)
@click.option(
    "--methods",
    callback=_csv_choice(METHOD_NAMES, "method"),
    metavar="LIST",
    help=f"Comma-separated learners, from: {', '.join(METHOD_NAMES)}. [default: all]",
)
@click.option(
    "--n-estimators",
    type=click.IntRange(min=1),
    default=None,
    help="Boosting stages (trees per class) for every learner. [default: 100]",
)
@click.option(
    "--max-depth",
    type=click.IntRange(min=1),
    default=None,
    help="Depth of every tree. [default: 3]",
)
@lr_option("Shrinkage lr in F_m = F_{m-1} + lr*h_m. [default: 0.1]", max=10)
@click.option(
    "--max-bins",
    type=click.IntRange(2, 255),
    default=None,
    help="Hist mode: bins per feature (ours and HistGradientBoosting). [default: 255]",
)
@device_option(
    "Where our hist mode runs; auto: cuda when available. Exact mode and "
    "scikit-learn always run on the CPU."
)
@click.option(
    "--threads",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Threads for every learner (OpenMP/BLAS via threadpoolctl, and torch); 1 makes "
    "timings a fair single-thread comparison.",
)
@seed_option("Seed of the data split, the generated data and every learner.")
@jobs_option(
    "Cases measured at once, each in its own process (their timings then share the "
    "machine). [default: 1]"
)
@out_option("Folder under which the run folder is created.")
@click.option(
    "--name",
    default=None,
    help="Name of the run folder. [default: <time>-boosting-<quick|full|custom>]",
)
@click.option(
    "--resume",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    metavar="RUN_DIR",
    help="Continue an interrupted run folder: its finished cases are "
    "kept, the others measured (its saved settings are used).",
)
@click.option("--no-html", is_flag=True, help="Write the tables only, without building index.html.")
def boosting(
    quick,
    datasets,
    sizes,
    losses,
    methods,
    n_estimators,
    max_depth,
    lr,
    max_bins,
    device,
    threads,
    seed,
    jobs,
    out,
    name,
    resume,
    no_html,
):
    """Our gradient booster (exact and hist) against scikit-learn's, measured.

    For each dataset and loss, fits our exact and hist boosters, sklearn's
    GradientBoosting and HistGradientBoosting with the same trees; records fit
    times, staged train/test loss, the residual per stage and the parity of our
    staged predictions with sklearn's; writes a run folder with the tables,
    figures and index.html, and prints its path.

    \b
    Examples:
      residuals bench boosting                      # quick, about 2 minutes
      residuals bench boosting --datasets diabetes,wine --n-estimators 50
      residuals bench boosting --full --device auto --out reports
    """
    from residuals.bench import boosting as B
    from residuals.device import DeviceError
    from residuals.runs import RunInUse

    cfg = None
    if resume is None:
        given = dict(
            datasets=datasets,
            sizes=sizes,
            losses=losses,
            methods=methods,
            n_estimators=n_estimators,
            max_depth=max_depth,
            learning_rate=lr,
            max_bins=max_bins,
            threads=threads,
            seed=seed,
        )
        preset = B.PRESETS["quick" if quick else "full"]
        try:
            cfg = preset.replace(**{k: v for k, v in given.items() if v is not None}).validate()
        except ValueError as e:
            raise click.UsageError(str(e)) from None

    def progress(kind: str, msg: str) -> None:
        click.secho(msg, fg={"error": "red", "case": None}.get(kind), bold=kind == "case")

    started = []  # the run folder, once run() has made or reopened it
    try:
        result = B.run(
            cfg,
            out=out,
            device=device if resume is None else None,
            jobs=jobs or 1,
            resume=resume,
            name=name,
            html=not no_html,
            progress=progress,
            echo=click.echo,
            started=started.append,
        )
    except DeviceError as e:
        raise click.BadParameter(str(e), param_hint="'--device'") from None
    except RunInUse as e:
        raise click.ClickException(str(e)) from None
    except ValueError as e:
        raise click.UsageError(str(e)) from None
    except OSError as e:  # a read-only or full folder
        if not started:
            raise click.BadParameter(
                f"cannot create a run folder under {out}: {e}", param_hint="--out"
            ) from None
        raise click.ClickException(
            f"{write_error(e)}; the results measured so far are kept in {started[0].path}"
        ) from None
    except KeyboardInterrupt:
        if not started:
            raise
        click.secho(
            f"interrupted; partial results kept in {started[0].path} (continue with "
            f"--resume {started[0].path})",
            fg="yellow",
            err=True,
        )
        raise SystemExit(130) from None
    except Exception:
        if started:
            click.secho(
                f"the run failed; partial results kept in {started[0].path}", fg="red", err=True
            )
        raise
    click.echo("")
    click.secho(result.headline, bold=True)
    click.echo(f"report: {result.report or result.run.path}")
