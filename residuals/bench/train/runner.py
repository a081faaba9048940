"""``residuals train`` as a library function: train one net with one recipe into a run folder.

::

    from residuals.bench.train import RECIPES, run
    outcome = run(RECIPES["d2l-resnet18"].with_options(epochs=1), out="reports")
    outcome.run.path, outcome.history[-1].test_error

The run folder (listed, rebuilt and compared by ``residuals report`` like a bench's)::

    <out>/<stamp>-train-<model>-<dataset>/
        meta.json       the recipe (``config``), command, machine, status, headline, the
                        schedule's plans (one more per resume that asked for more epochs)
        results.csv     one row per epoch: every field of the trainer's EpochRecord
        steps.csv       one row per optimiser step: iteration, epoch, loss, error, lr
        checkpoint.pt   written atomically after every epoch (and every N steps)
        index.html      the report: loss and error curves, learning rate, images/s

Training and writing are apart: the trainer (:func:`residuals.train.train`) trains and
hands over records through its callbacks; :class:`RunWriter` writes them. A data-parallel
run writes from one process only (rank 0) by giving the others no writer.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import math
import os
import shlex
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from residuals.bench.train.logs import ProgressBar, epoch_line, open_tensorboard
from residuals.bench.train.recipes import Recipe
from residuals.runs import BrokenRun, RunDir, typed_command

__all__ = [
    "BENCH",
    "RecipeMismatch",
    "RunWriter",
    "TrainInterrupted",
    "TrainOutcome",
    "prepare",
    "run",
]

BENCH = "train"  # meta.json's "bench": the renderer registered for these run folders
CHECKPOINT = "checkpoint.pt"


class RecipeMismatch(ValueError):
    """``--resume`` with a recipe that differs from the run's in more than its epochs."""


class TrainInterrupted(KeyboardInterrupt):
    """Ctrl-C (or SIGTERM under the command) stopped a run that has a folder: its
    checkpoint is kept and ``resume_command`` continues it (or, once training is over,
    builds its report)."""

    def __init__(self, run: RunDir, resume_command: str):
        super().__init__(resume_command)
        self.run, self.resume_command = run, resume_command


@dataclass
class TrainOutcome:
    run: RunDir
    recipe: Recipe
    history: list  # EpochRecord, the whole run's (across resumes)
    result: Any  # residuals.train.TrainResult
    headline: str


def prepare(recipe: Recipe, *, data_dir: str | os.PathLike | None = None, download: bool = True):
    """Check and load what ``recipe`` trains: ``(model, data, device)``.

    Raises ``ValueError`` (an unknown model, a bad option, a device this machine lacks),
    :class:`residuals.nets.InputSizeError` (images the net cannot take) or
    :class:`residuals.data.DatasetError` before anything is trained or written.
    """
    import torch

    from residuals.data import load_dataset
    from residuals.device import resolve_device
    from residuals.nets import build_model, check_input_size

    device = resolve_device(recipe.train.device)
    with torch.device("meta"):  # the name and options first, in no time
        build_model(recipe.model, **recipe.model_options())
    data = load_dataset(
        recipe.dataset,
        data_dir=data_dir,
        device=device,
        download=download,
        resize=recipe.resize,
    )
    if recipe.subset is not None and recipe.subset < len(data.train_y):
        data = dataclasses.replace(
            data,
            train_x=data.train_x[: recipe.subset],
            train_y=data.train_y[: recipe.subset],
            extra={**data.extra, "subset": recipe.subset},
        )
    torch.manual_seed(recipe.train.seed)  # the weights, as the degradation bench seeds them
    model = build_model(
        recipe.model,
        in_channels=data.in_channels,
        num_classes=data.num_classes,
        **recipe.model_options(),
    )
    check_input_size(model, data.in_channels, data.image_size, name=recipe.model)
    return model, data, device


class RunWriter:
    """Writes a training run's tables, logs and records as the trainer hands them over."""

    def __init__(
        self,
        run: RunDir,
        epochs: int,
        *,
        echo: Callable[[str], None] = print,
        progress: ProgressBar | None = None,
        tensorboard: Any = None,
    ):
        import pandas as pd

        self.run, self.epochs, self.echo = run, epochs, echo
        self.progress, self.tensorboard = progress, tensorboard
        # a resumed run's tables: each new epoch replaces its rows and any after it
        self.results = run.read_table("results") if run.has_table("results") else pd.DataFrame()
        self.steps = run.read_table("steps") if run.has_table("steps") else pd.DataFrame()
        self._last_iteration = 0

    @staticmethod
    def _append(table: Any, rows: Any, epoch: int) -> Any:
        import pandas as pd

        if len(table):
            table = table[table["epoch"] < epoch]
        return pd.concat([table, rows], ignore_index=True)

    def on_step(self, progress: Any) -> None:
        if self.progress is not None:
            self.progress(progress)

    def on_steps(self, trace: Any) -> None:
        import pandas as pd

        rows = pd.DataFrame(
            {
                "iteration": trace.iteration,
                "epoch": trace.epoch,
                "loss": trace.loss,
                "error": trace.error,
                "lr": trace.lr,
            }
        )
        self.steps = self._append(self.steps, rows, trace.epoch)
        self.run.write_table(self.steps, "steps")
        if self.tensorboard is not None:
            self.tensorboard.steps(trace)
        self._last_iteration = trace.iteration[-1] + 1

    def on_epoch(self, record: Any) -> None:
        import pandas as pd

        if self.progress is not None:
            self.progress.clear()
        self.results = self._append(self.results, pd.DataFrame([asdict(record)]), record.epoch)
        self.run.write_table(self.results, "results")
        if self.tensorboard is not None:
            self.tensorboard.epoch(record, self._last_iteration)
        self.echo(epoch_line(record, self.epochs))

    def close(self) -> None:
        if self.progress is not None:
            self.progress.clear()
        if self.tensorboard is not None:
            self.tensorboard.close()


def _saved_recipe(path: str | os.PathLike) -> tuple[RunDir, Recipe]:
    """The run folder at ``path`` and its recipe; :class:`RecipeMismatch` if it is not a
    training run folder."""
    run = RunDir(path)
    try:
        meta = run.read_meta()
    except BrokenRun as e:
        raise RecipeMismatch(f"--resume: {e}") from None
    if meta.get("bench") != BENCH:
        raise RecipeMismatch(
            f"{path} is a run folder of {meta.get('bench')!r}, not a training run "
            f"of 'residuals train'; resume it with its own command"
        )
    try:
        return run, Recipe.from_dict(meta["config"])
    except (KeyError, TypeError, ValueError) as e:
        raise RecipeMismatch(f"{path}: meta.json has no usable recipe ({e})") from None


def _open_resume(path: str | os.PathLike, recipe: Recipe, held: contextlib.ExitStack) -> RunDir:
    """The run folder to resume, its lock taken into ``held`` (:class:`RunInUse` at once if
    another process trains in it), checked against ``recipe``."""
    run, saved = _saved_recipe(path)
    held.enter_context(run.lock())
    diff = saved.differences(recipe, ignore=("epochs",))
    if diff:
        raise RecipeMismatch(
            f"{path} was trained with another recipe; a resume may only ask for more epochs. "
            "Differences (the run's -> now):\n  "
            + "\n  ".join(diff)
            + "\nDrop these options, or start a new run without --resume."
        )
    ckpt = run.path / CHECKPOINT
    if ckpt.is_file():
        from residuals.train import load_checkpoint

        done = len(load_checkpoint(ckpt)["history"])
        if recipe.train.epochs < done:
            raise RecipeMismatch(
                f"{path} has trained {done} epochs; --epochs {recipe.train.epochs}"
                f" would be fewer: ask for {done} or more"
            )
    return run


def _headline(recipe: Recipe, history: list, diverged: bool) -> str:
    if not history:
        return f"{recipe.model} on {recipe.dataset}: no epoch finished"
    last = history[-1]
    if diverged:
        return f"{recipe.model} on {recipe.dataset}: diverged at epoch {last.epoch}"
    speed = median_images_per_s(history)
    return (
        f"{recipe.model} on {recipe.dataset}"
        f"{f' ({recipe.resize}x{recipe.resize})' if recipe.resize else ''}: test accuracy "
        f"{1 - last.test_error:.3f}, train accuracy {1 - last.train_error:.3f}, loss "
        f"{last.train_loss:.3f} after {last.epoch} epoch{'s' if last.epoch != 1 else ''}; "
        f"{speed:,.0f} images/s"
    )


def run(
    recipe: Recipe,
    *,
    out: str | os.PathLike = "reports",
    resume: str | os.PathLike | None = None,
    data_dir: str | os.PathLike | None = None,
    checkpoint_every: int | None = None,
    tensorboard: str | os.PathLike | None = None,
    echo: Callable[[str], None] = print,
    progress: ProgressBar | None = None,
    report: bool = True,
    command: str | None = None,
) -> TrainOutcome:
    """Train ``recipe`` into a new run folder under ``out`` (or continue ``resume``).

    ``resume``: a run folder of an earlier call; ``recipe`` must be its recipe, except that
    ``epochs`` may be larger (the run goes on, its schedule re-planned over the new total).
    ``checkpoint_every``: also checkpoint every N optimiser steps within an epoch.
    ``tensorboard``: a folder for TensorBoard event files (needs the optional package).
    ``echo`` prints a line per epoch; ``progress`` draws within epochs (a terminal's bar).
    ``report``: build ``index.html`` at the end. Ctrl-C keeps the checkpoint; the run is
    marked interrupted and :class:`TrainInterrupted` (a ``KeyboardInterrupt``) propagates,
    with the command that continues the run.

    Under ``torchrun`` every rank calls it and they train one net together
    (DistributedDataParallel: ``recipe.train.batch_size`` is the global batch; ``sync_bn``
    for SyncBatchNorm): rank 0 alone opens and writes the run folder and the report and
    prints; the other ranks need not see the folder (``docs/distributed.md``).
    """
    from residuals import distributed
    from residuals.device import resolve_device

    with distributed.process_group(resolve_device(recipe.train.device)):
        if distributed.is_rank0():
            # the run folder's lock, held until the run is written (RunInUse for a second
            # process that resumes it meanwhile)
            with contextlib.ExitStack() as held:
                return _run(
                    recipe,
                    held,
                    out=out,
                    resume=resume,
                    data_dir=data_dir,
                    checkpoint_every=checkpoint_every,
                    tensorboard=tensorboard,
                    echo=echo,
                    progress=progress,
                    report=report,
                    command=command,
                )
        return _other_rank(recipe, data_dir=data_dir)


def _other_rank(recipe: Recipe, *, data_dir) -> TrainOutcome:
    """A rank other than 0 under torchrun: the collectives of :func:`_run` in the same order
    (so rank 0's errors are raised here too), training, and nothing written or printed."""
    from residuals import distributed
    from residuals.train import train

    distributed.check_all(lambda: None)  # rank 0 opens the resumed folder
    model, data, _ = distributed.local_first(lambda: prepare(recipe, data_dir=data_dir))
    # rank 0 creates (or reopens) the folder and sends it; this rank's argument is unused
    run_dir: RunDir = distributed.from_rank0(lambda: None)  # type: ignore[arg-type,assignment]
    result = train(
        model,
        data,
        recipe.train,
        checkpoint_path=run_dir.path / CHECKPOINT,
        resume=True,
        distributed=True,
    )
    return TrainOutcome(
        run_dir, recipe, result.history, result, _headline(recipe, result.history, result.diverged)
    )


def _run(
    recipe: Recipe,
    held: contextlib.ExitStack,
    *,
    out,
    resume,
    data_dir,
    checkpoint_every,
    tensorboard,
    echo,
    progress,
    report,
    command,
) -> TrainOutcome:
    from residuals import distributed
    from residuals.train import train

    run_dir, tb = distributed.check_all(
        lambda: (
            _open_resume(resume, recipe, held) if resume is not None else None,
            open_tensorboard(tensorboard) if tensorboard is not None else None,
        )
    )
    model, data, device = distributed.local_first(lambda: prepare(recipe, data_dir=data_dir))
    command = command if command is not None else typed_command()

    def open_folder() -> RunDir:
        if run_dir is None:
            stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
            created = RunDir.create(
                out,
                bench=BENCH,
                dataset=recipe.dataset,
                config=recipe.to_dict(),
                device=device,
                command=command,
                name=f"{stamp}-{BENCH}-{recipe.model}-{recipe.dataset}",
            )
            held.enter_context(created.lock())
            return created
        meta = run_dir.read_meta()
        run_dir.update_meta(
            status="running",
            config=recipe.to_dict(),
            resumed_commands=[*meta.get("resumed_commands", []), command],
        )
        return run_dir

    run_dir = distributed.from_rank0(open_folder)  # and to the other ranks
    ckpt = run_dir.path / CHECKPOINT
    writer = RunWriter(run_dir, recipe.train.epochs, echo=echo, progress=progress, tensorboard=tb)
    resume_cmd = _resume_command(
        run_dir, data_dir=data_dir, checkpoint_every=checkpoint_every, tensorboard=tensorboard
    )
    echo(f"run folder: {run_dir.path}")
    try:
        result = train(
            model,
            data,
            recipe.train,
            checkpoint_path=ckpt,
            resume=True,  # from the checkpoint if there is one
            on_epoch=writer.on_epoch,
            on_step=writer.on_step,
            on_steps=writer.on_steps,
            checkpoint_every=checkpoint_every,
            distributed=True,
        )
    except KeyboardInterrupt:
        writer.close()
        run_dir.finish("interrupted", resume_command=resume_cmd)
        raise TrainInterrupted(run_dir, resume_cmd) from None
    except Exception as e:
        writer.close()
        run_dir.finish("failed", error=f"{type(e).__name__}: {e}", resume_command=resume_cmd)
        raise
    writer.close()
    headline = _headline(recipe, result.history, result.diverged)
    run_dir.finish(
        "complete",
        headline=headline,
        epochs_done=len(result.history),
        plans=result.plans,
        precision="bf16" if result.amp else "fp32",
        replicas=result.replicas,
        diverged=result.diverged,
        parameters=sum(p.numel() for p in result.model.parameters()),
        image_size=data.image_size,
    )
    if report:
        from residuals.report.html import build_report

        try:
            build_report(run_dir.path)
        except KeyboardInterrupt:  # the run is complete; its page can be built later
            build = f"residuals report build {shlex.quote(str(run_dir.path))}"
            raise TrainInterrupted(run_dir, build) from None
    return TrainOutcome(run_dir, recipe, result.history, result, headline)


def _resume_command(run_dir: RunDir, **options: Any) -> str:
    """``residuals train --resume RUN_DIR`` and the options, not part of the recipe, that the
    run was given (where its data is, its checkpoints and logs)."""
    words = ["residuals", "train", "--resume", str(run_dir.path)]
    for name, value in options.items():
        if value is not None:
            words += [f"--{name.replace('_', '-')}", str(value)]
    return " ".join(map(shlex.quote, words))


def median_images_per_s(history: list) -> float:
    """The run's training speed: the median over epochs (the first carries one-off costs)."""
    speeds = sorted(h.images_per_s for h in history if math.isfinite(h.images_per_s))
    return speeds[len(speeds) // 2] if speeds else math.nan


def resume_recipe(path: str | os.PathLike, **options: Any) -> Recipe:
    """The recipe saved in run folder ``path`` with ``options`` applied (the CLI's --resume).

    More ``epochs`` keep the run's warm-up as it was (it is behind the run already)."""
    _, saved = _saved_recipe(path)
    options = {k: v for k, v in options.items() if v is not None}
    if "epochs" in options and "warmup" not in options:
        options.setdefault("warmup_epochs", saved.train.warmup_epochs)
        warmup = saved.train.warmup_epochs if saved.train.warmup == "linear" else 0
        if options["epochs"] <= warmup:
            raise RecipeMismatch(
                f"{path}: --epochs {options['epochs']} would end within the run's "
                f"{warmup:g}-epoch warm-up, which a resume keeps; ask for more than "
                f"{warmup:g} epochs"
            )
    return saved.with_options(**options)
