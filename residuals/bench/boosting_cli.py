"""``residuals bench boosting``: the click command.

Only click and the standard library are imported at module level, so
``residuals bench boosting --help`` is instant; torch, scikit-learn and pandas
load inside the command.
"""

from __future__ import annotations

import click

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


def _resolve_device(device: str) -> str:
    from residuals.device import DeviceError, resolve_device

    try:
        return resolve_device(device)
    except DeviceError as e:
        raise click.BadParameter(str(e), param_hint="'--device'") from None


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--quick/--full", "quick", default=True, show_default=True,
              help="--quick: about 2 minutes on a 2-core CPU (generated data up to 16k rows, the main "
                   "loss of each task). --full: every loss, generated data up to 100k rows (long: "
                   "one GBRT fit at 100k rows takes about a minute).")
@click.option("--datasets", callback=_csv_choice(DATASET_NAMES, "dataset"), metavar="LIST",
              help=f"Comma-separated datasets, from: {', '.join(DATASET_NAMES)}. [default: all]")
@click.option("--sizes", callback=_sizes, metavar="LIST",
              help="Training rows of the generated datasets (friedman1, classification), e.g. "
                   "1000,10k,100k. [default: 1000,4000,16000; --full: 1000,10000,100000]")
@click.option("--losses", callback=_csv_choice(LOSS_NAMES, "loss"), metavar="LIST",
              help="Comma-separated losses (each applies to the datasets whose task has it). "
                   "[default: squared_error,absolute_error and log_loss; --full: all]")
@click.option("--methods", callback=_csv_choice(METHOD_NAMES, "method"), metavar="LIST",
              help=f"Comma-separated learners, from: {', '.join(METHOD_NAMES)}. [default: all]")
@click.option("--n-estimators", type=click.IntRange(min=1), default=100, show_default=True,
              help="Boosting stages (trees per class) for every learner.")
@click.option("--max-depth", type=click.IntRange(min=1), default=3, show_default=True,
              help="Depth of every tree.")
@click.option("--learning-rate", type=click.FloatRange(min=0, max=10, min_open=True), default=0.1,
              show_default=True, help="Shrinkage lr in F_m = F_{m-1} + lr*h_m.")
@click.option("--max-bins", type=click.IntRange(2, 255), default=255, show_default=True,
              help="Hist mode: bins per feature (ours and HistGradientBoosting).")
@click.option("--device", type=click.Choice(["cpu", "cuda", "auto"]), default="cpu", show_default=True,
              help="Where our hist mode runs; auto: cuda when available. Exact mode and "
                   "scikit-learn always run on the CPU.")
@click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True,
              help="Threads for every learner (OpenMP/BLAS via threadpoolctl, and torch); 1 makes "
                   "timings a fair single-thread comparison.")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed of the data split, the generated data and every learner.")
@click.option("--out", type=click.Path(file_okay=False), default="reports", show_default=True,
              help="Folder under which the run folder is created.")
@click.option("--name", default=None, help="Name of the run folder. [default: <time>-boosting-<quick|full|custom>]")
@click.option("--no-html", is_flag=True, help="Write the tables only, without building index.html.")
def boosting(quick, datasets, sizes, losses, methods, n_estimators, max_depth, learning_rate, max_bins,
             device, threads, seed, out, name, no_html):
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
    from residuals.runs import RunDir

    device = _resolve_device(device)
    overrides = {k: v for k, v in dict(datasets=datasets, sizes=sizes, losses=losses, methods=methods).items()
                 if v is not None}
    factory = B.BoostingBenchConfig.quick if quick else B.BoostingBenchConfig.full
    try:
        cfg = factory(n_estimators=n_estimators, max_depth=max_depth, learning_rate=learning_rate,
                      max_bins=max_bins, device=device, threads=threads, seed=seed, **overrides).validate()
        cases = list(B.iter_cases(cfg))
    except ValueError as e:
        raise click.UsageError(str(e)) from None
    if not cases:
        raise click.UsageError("no case to run: none of the chosen losses applies to the chosen datasets "
                               "(regression: squared_error, absolute_error, huber, quantile; "
                               "binary: log_loss, exponential; multiclass: log_loss)")
    label = "custom" if datasets or sizes or losses or methods else ("quick" if quick else "full")
    import residuals.boosting._kernels  # noqa: F401  (so the run's record says which loops hist mode runs)

    run = RunDir.create(out, bench="boosting", dataset=label, config=cfg.as_dict(), device=device, name=name)
    click.echo(f"run folder: {run.path}")
    click.echo(f"{len(cases)} cases x {len(cfg.methods)} methods, {cfg.n_estimators} trees of depth "
               f"{cfg.max_depth}, {cfg.threads} thread(s), hist on {device}")

    def progress(kind: str, msg: str) -> None:
        click.secho(msg, fg={"error": "red", "case": None}.get(kind), bold=kind == "case")

    try:
        B.run_benchmark(cfg, run, progress=progress)
    except KeyboardInterrupt:
        run.finish("interrupted")
        click.secho(f"interrupted; partial results kept in {run.path}", fg="yellow", err=True)
        _build(run, no_html)
        raise SystemExit(130)
    except Exception:
        run.finish("failed")
        click.secho(f"the run failed; partial results kept in {run.path}", fg="red", err=True)
        raise

    if no_html:
        from residuals.bench.boosting.report import render

        content = render(run)
        meta = run.finish("complete", headline=content.headline, verdict=content.verdict,
                          summary=content.summary)
        report = run.path
    else:
        run.finish("complete")
        report = _build(run, no_html)  # renders, and records the headline in meta.json
        meta = run.read_meta()
    click.echo("")
    click.secho(meta.get("headline") or "", bold=True)
    click.echo(f"report: {report}")


def _build(run, no_html: bool):
    """Build index.html (and the runs index beside it); its path, or None with --no-html."""
    if no_html:
        return None
    from residuals.report.html import build_report

    return build_report(run.path)
