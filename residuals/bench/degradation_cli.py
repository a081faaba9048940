"""``residuals bench degradation``: the command line of :mod:`residuals.bench.degradation`.

Only click and the standard library are imported at module level, so ``--help``
never loads torch; everything else is imported inside the command.
"""

from __future__ import annotations

import contextlib
import shlex
import signal
import sys
from pathlib import Path

import click
from click.core import ParameterSource

PRESET_NAMES = ("digits", "fashion-mnist", "paper")
VARIANT_NAMES = ("plain", "residual")
WARMUPS = ("linear", "paper", "none")
DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = {"auto": None, "bf16": True, "fp32": False}   # --precision -> TrainConfig.amp

# options that define the sweep (or its folder); with --resume they come from the run's meta.json
SWEEP_OPTIONS = ("preset", "dataset", "depths", "variants", "seeds", "epochs", "batch_size", "lr",
                 "warmup", "precision", "device", "out")

EPILOG = """\b
Presets (options given on the command line override them):
  digits         the default: scikit-learn's embedded 8x8 digits (no download),
                 depths 20 and 56, 2 seeds, 12 epochs, lr 0.05 with a 2-epoch
                 linear warm-up then cosine; 3 minutes or less on 2 CPU cores.
  fashion-mnist  Fashion-MNIST (downloads ~30 MB): depths 20, 32, 44, 56, 1 seed,
                 15 epochs of 60k 28x28 images; meant for a GPU.
  paper          CIFAR-10 with He et al.'s recipe (Sec. 4.2): depths 20, 32, 44,
                 56, 110, lr 0.1, batch 128, wd 1e-4, /10 at 32k and 48k of 64k
                 iterations (182 epochs on a 45k/5k split), pad-crop-flip,
                 option-A shortcuts, ResNet-110 warmed up at lr 0.01 until
                 training error < 80%; a GPU job.

\b
The verdict: degradation is reproduced when the deepest plain net's final
training error (mean over seeds) exceeds the shallowest plain net's by more than
1 point and by more than 2 standard errors of that gap over seeds, AND the
deepest residual net's exceeds the shallowest residual net's by at most 1 point.
Diverged runs are left out and named.

\b
Examples:
  residuals bench degradation
  residuals bench degradation --depths 20,32,44,56 --seeds 3
  residuals bench degradation --preset paper --device cuda
  residuals bench degradation --resume reports/20261123-101500-degradation-digits
"""


def _int_list(value: str | None, option: str) -> tuple[int, ...] | None:
    if value is None:
        return None
    try:
        items = tuple(int(v) for v in value.replace(" ", "").split(",") if v)
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers such as 20,56; got {value!r}",
                                 param_hint=option) from None
    if not items:
        raise click.BadParameter("give at least one value, e.g. 20,56", param_hint=option)
    return items


def _name_list(value: str | None, option: str, choices: tuple[str, ...]) -> tuple[str, ...] | None:
    if value is None:
        return None
    items = tuple(v for v in value.replace(" ", "").split(",") if v)
    bad = [v for v in items if v not in choices]
    if bad or not items:
        raise click.BadParameter(f"unknown {', '.join(map(repr, bad)) or 'empty list'}; "
                                 f"choose from {', '.join(choices)} (comma-separated)", param_hint=option)
    return items


@click.command(epilog=EPILOG, context_settings={"max_content_width": 100})
@click.option("--preset", type=click.Choice(PRESET_NAMES), default=None,
              help="Start from a preset (default: digits); see Presets below.")
@click.option("--dataset", default=None, metavar="NAME",
              help="Dataset: digits (embedded), fashion-mnist or cifar10.")
@click.option("--depths", default=None, metavar="D,D,...",
              help="Network depths, each 6n+2 (8, 14, 20, 32, 44, 56, 110, ...), e.g. 20,56.")
@click.option("--variants", default=None, metavar="V,V",
              help="Which nets: plain (no shortcuts), residual, or plain,residual (default).")
@click.option("--seeds", type=click.IntRange(min=1), default=None, metavar="N",
              help="Number of seeds; runs use seeds 0..N-1 and the report shows their spread.")
@click.option("--epochs", type=click.IntRange(min=1), default=None,
              help="Training epochs per run; a linear warm-up keeps its share (2 of 12 epochs).")
@click.option("--batch-size", type=click.IntRange(min=1), default=None,
              help="Images per SGD step (on a GPU that runs out of memory: try half).")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Peak learning rate (after the warm-up).")
@click.option("--warmup", type=click.Choice(WARMUPS), default=None,
              help="Learning-rate warm-up for every run: linear (a ramp over the first sixth of "
                   "training in the default preset), paper "
                   "(lr/10 until training error < 80%, He et al.'s ResNet-110 recipe) or none.")
@click.option("--precision", type=click.Choice(tuple(PRECISIONS)), default=None,
              help="Arithmetic of training: bf16 autocast, fp32, or auto (the default): bf16 on "
                   "CUDA and, where each worker (or, with --jobs 1, each data-parallel replica) "
                   "runs one thread, on CPUs with native bf16 (AVX512-BF16, AMX); fp32 elsewhere.")
@click.option("--device", type=click.Choice(DEVICES), default=None,
              help="Where to train: auto (the default) picks cuda when available.")
@click.option("--jobs", type=click.IntRange(min=1), default=None, metavar="N",
              help="Runs trained at once, each in its own process with one torch thread "
                   "[default: number of cores on CPU, 4 on CUDA: small nets leave a GPU idle].")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder holding (or receiving) the dataset files "
                   "[default: $RESIDUALS_DATA or ~/.cache/residuals].")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("reports"),
              show_default=True, help="Folder in which the new run folder is created.")
@click.option("--resume", "resume", type=click.Path(file_okay=False, path_type=Path), default=None,
              metavar="RUN_DIR",
              help="Continue an interrupted run folder with its saved configuration: finished "
                   "runs are skipped, unfinished ones continue from their checkpoints on the "
                   "device they started on. Only --jobs and --data-dir may be given with it.")
@click.pass_context
def degradation(ctx, preset, dataset, depths, variants, seeds, epochs, batch_size, lr, warmup,
                precision, device, jobs, data_dir, out, resume):
    """Plain vs residual nets at several depths: the degradation problem (He et al. 2015, Fig. 6).

    Trains every (variant, depth, seed), writes a run folder under --out with tidy
    results (results.csv, runs.csv, probes.csv), meta.json and an HTML report whose
    first line is the measured verdict. Ctrl-C keeps every checkpoint; the message
    tells the --resume command that continues.
    """
    from residuals.bench import degradation as deg

    depths = _int_list(depths, "--depths")
    variants = _name_list(variants, "--variants", VARIANT_NAMES)

    if resume is not None:
        given = [f"--{n.replace('_', '-')}" for n in SWEEP_OPTIONS
                 if ctx.get_parameter_source(n) is ParameterSource.COMMANDLINE]
        if given:
            raise click.UsageError(f"--resume continues a run with its saved configuration; drop "
                                   f"{', '.join(given)} (or start a new run without --resume).")
        run, cfg, device = _open_resume(resume)
        if run is None:
            return
    else:
        device = device or "auto"
        cfg = _build_config(deg, preset or deg.DEFAULT_PRESET, dataset=dataset, depths=depths,
                            variants=variants, seeds=seeds, epochs=epochs, batch_size=batch_size,
                            lr=lr, warmup=warmup, amp=PRECISIONS.get(precision))
        run = None

    # ---- validate everything that can be checked before any training starts
    _check_dataset_name(cfg.dataset)
    device = _resolve_device(device)
    _check_models(cfg)
    _check_recipe(cfg, device)
    data_dir = str(data_dir) if data_dir is not None else None
    n_jobs = jobs or deg.default_jobs(device)
    # in-process runs keep this copy on their device; workers load their own
    _load_data(deg, cfg, device if n_jobs == 1 else "cpu", data_dir)

    if run is None:
        from residuals.runs import RunDir

        try:
            run = RunDir.create(out, bench="degradation", dataset=cfg.dataset, config=cfg.to_dict(),
                                device=device)
        except OSError as e:
            raise click.BadParameter(f"cannot create a run folder under {out}: {e}",
                                     param_hint="--out") from None
    else:
        run.update_meta(status="running", resumed_command=_command_line())
    from residuals.device import resolve_replicas_amp

    threads = deg.worker_threads(n_jobs) if n_jobs > 1 else None   # None: this process's
    replicas, threads_each, amp = resolve_replicas_amp(cfg.train_config(cfg.depths[0], 0, device),
                                                       threads=threads)
    precision = "bf16 autocast" if amp else "fp32"
    if replicas > 1:
        precision += f", {replicas} data-parallel replicas of {threads_each} thread{'s' * (threads_each > 1)}"
    run.update_meta(precision=precision)
    click.echo(f"run folder: {run.path}")
    n_runs = len(deg.plan_runs(cfg))
    run.update_meta(jobs=min(n_jobs, n_runs), cuda_mps=device.startswith("cuda") and deg.cuda_mps_running())
    click.echo(f"{n_runs} runs ({', '.join(cfg.variants)} x depths {', '.join(map(str, cfg.depths))} x "
               f"{cfg.seeds} seed{'s' * (cfg.seeds > 1)}), {cfg.epochs} epochs each, on {device} "
               f"({precision}), "
               f"{min(n_jobs, n_runs)} at a time")
    _sweep(deg, run, cfg, device=device, jobs=n_jobs, data_dir=data_dir)


def _build_config(deg, preset: str, **overrides):
    from dataclasses import replace

    cfg = deg.PRESETS[preset]
    changes = {k: v for k, v in overrides.items() if v is not None}
    if "warmup" in changes:
        changes["paper_warmup_from_depth"] = None   # --warmup applies to every depth
    # the linear warm-up keeps its share of training (the default preset's: 2 of 12 epochs),
    # also when --warmup linear is asked of a preset without one
    share = cfg.warmup_epochs / cfg.epochs
    if changes.get("warmup") == "linear" and share == 0:
        default = deg.PRESETS[deg.DEFAULT_PRESET]
        share = default.warmup_epochs / default.epochs
    if "epochs" in changes or share != cfg.warmup_epochs / cfg.epochs:
        changes["warmup_epochs"] = share * changes.get("epochs", cfg.epochs)
    try:
        return replace(cfg, **changes)
    except ValueError as e:
        raise click.UsageError(str(e)) from None


def _open_resume(path: Path):
    from residuals.bench import degradation as deg
    from residuals.runs import BrokenRun, RunDir

    run = RunDir(path)
    try:
        meta = run.read_meta()
    except BrokenRun as e:
        raise click.BadParameter(str(e), param_hint="--resume") from None
    if meta.get("bench") != "degradation":
        raise click.BadParameter(f"{path} is a {meta.get('bench')!r} run, not a degradation run",
                                 param_hint="--resume")
    try:
        cfg = deg.DegradationConfig.from_dict(meta["config"])
    except (KeyError, TypeError, ValueError) as e:
        raise click.BadParameter(f"{path}: meta.json has no usable config ({e})",
                                 param_hint="--resume") from None
    if meta.get("status") == "complete":
        click.echo(f"{path} is already complete: {meta.get('headline')}")
        click.echo(f"Rebuild its report with: residuals report build {shlex.quote(str(path))}")
        return None, cfg, None
    device = (meta.get("machine") or {}).get("device") or "auto"
    return run, cfg, device


def _resolve_device(device: str) -> str:
    from residuals.device import DeviceError, resolve_device

    try:
        return resolve_device(device)
    except DeviceError as e:
        raise click.BadParameter(str(e), param_hint="--device") from None


def _check_models(cfg) -> None:
    """Every (variant, depth) must exist: a depth that is not 6n+2 fails here, before training."""
    from residuals.nets import cifar_resnet

    for depth in cfg.depths:
        for variant in cfg.variants:
            try:
                cifar_resnet(depth, skip=variant == "residual")
            except ValueError as e:
                raise click.BadParameter(str(e), param_hint="--depths") from None


def _check_recipe(cfg, device: str) -> None:
    for depth in sorted(set(cfg.depths)):
        try:
            cfg.train_config(depth, 0, device)
        except ValueError as e:
            raise click.UsageError(f"invalid training option: {e}") from None


def _check_dataset_name(name: str) -> None:
    from residuals.data import DATASETS

    if name not in DATASETS:
        raise click.BadParameter(f"unknown dataset {name!r}; choose from {', '.join(DATASETS)}",
                                 param_hint="--dataset")


def _load_data(deg, cfg, device: str, data_dir: str | None) -> None:
    """Load (download, checksum) the data once here, so a data problem stops us before training."""
    from residuals.data import DatasetError

    try:
        deg.load_data(cfg, device, data_dir, download=True)
    except DatasetError as e:
        raise click.ClickException(str(e)) from None


def _command_line() -> str:
    return " ".join(["residuals", *map(shlex.quote, sys.argv[1:])])


def _sweep(deg, run, cfg, *, device: str, jobs: int, data_dir: str | None) -> None:
    resume_cmd = f"residuals bench degradation --resume {shlex.quote(str(run.path))}"
    try:
        with _sigterm_as_interrupt():
            runs = deg.run_sweep(run, cfg, device=device, jobs=jobs, data_dir=data_dir, echo=click.echo)
    except KeyboardInterrupt:
        run.finish("interrupted", resume_command=resume_cmd)
        click.echo(f"\nInterrupted. Finished runs and every checkpoint are kept in {run.path}.", err=True)
        click.echo(f"Continue with: {resume_cmd}", err=True)
        sys.exit(130)
    except Exception as e:
        user_error = _user_error(e)
        run.finish("failed", error=f"{type(e).__name__}: {e}", resume_command=resume_cmd)
        if user_error is None:
            raise
        raise click.ClickException(
            f"{user_error}\nFinished runs are kept in {run.path}. To change an option (such as "
            f"--batch-size), start a new run; if the cause was outside this run's settings (a "
            f"GPU another process filled, a full disk), continue with: {resume_cmd}") from None

    verdict = deg.degradation_verdict(runs)
    run.finish("complete", headline=verdict.headline, verdict=verdict.reproduced,
               verdict_notes=list(verdict.notes))
    click.echo("")
    click.echo(verdict.headline)
    for note in verdict.notes:
        click.echo(f"  note: {note}")
    _build_report(run)


@contextlib.contextmanager
def _sigterm_as_interrupt():
    """Treat ``kill PID`` (SIGTERM, e.g. a job scheduler's stop) like Ctrl-C: keep and report."""
    def handler(signum, frame):
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:            # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _user_error(e: Exception) -> str | None:
    """The message for an error the user can fix (data, memory, disk); None for a bug."""
    from concurrent.futures.process import BrokenProcessPool

    from residuals.data import DatasetError
    from residuals.train import TrainError

    if isinstance(e, (DatasetError, TrainError)):
        return str(e)
    if isinstance(e, BrokenProcessPool):
        return ("a worker process died without a Python error (killed by the system, e.g. when "
                "memory ran out?); try fewer --jobs")
    if isinstance(e, OSError):          # a full disk, a folder that became unwritable
        return f"{type(e).__name__}: {e}"
    return None


def _build_report(run) -> None:
    try:
        from residuals.report.html import build_report
    except ImportError as e:
        click.echo(f"warning: the HTML report builder is not available ({e}); "
                   f"the results are saved in {run.path}", err=True)
        return
    try:
        index = build_report(run.path)
    except Exception as e:  # the results are safe; the page can be rebuilt from them
        click.echo(f"warning: the HTML report could not be built ({type(e).__name__}: {e}); the "
                   f"results are saved: residuals report build {shlex.quote(str(run.path))}", err=True)
        return
    click.echo(f"report: {index}")
