"""The degradation benchmark: plain vs residual nets at several depths.

He et al. 2015 ("Deep residual learning for image recognition", Sec. 4.2, Fig. 6)
observed that a deeper *plain* network (no skip connections) reaches a HIGHER
training error than a shallower one -- an optimisation failure, not overfitting --
while the same nets with identity shortcuts get better with depth. This package
runs that experiment as a sweep over ``variants x depths x seeds``::

    cfg = configure("digits", epochs=6)           # a preset with overrides
    result = run(cfg, out="reports", device="cpu")  # results.csv, runs.csv, probes.csv, index.html
    result.verdict.headline

Tables written to the run folder (tidy, one observation per row):

* ``results.csv``: one row per (model, seed, epoch) with every field of the
  trainer's ``EpochRecord`` and the run's ``status`` (``complete`` or ``diverged``);
* ``runs.csv``: one row per (model, seed): final train/test error, training and wall
  seconds, images/s, status;
* ``probes.csv``: one row per (model, seed, block), measured after training on a
  fixed batch of test images: the std of each residual function's output (paper
  Fig. 7) and the gradient norms at each block.

The verdict (:func:`degradation_verdict`) is a rule on ``runs.csv``, stated here
once: with ``d0`` the shallowest and ``d1`` the deepest depth, and every error the
mean final *training* error over the seeds that did not diverge,

    reproduced  <=>  plain[d1] - plain[d0] > max(DEGRADATION_MARGIN, SIGNIFICANCE * se)
                and  resnet[d1] - resnet[d0] <= RESIDUAL_TOLERANCE

in percentage points (margin 1, tolerance 1): the deeper plain net is clearly
worse, the deeper residual net is not. ``se`` is the standard error of the
plain gap over seeds, ``sqrt(s1**2 / n1 + s0**2 / n0)`` (0 when a cell has one
seed), and SIGNIFICANCE is 2: the gap must stand out of the seed-to-seed spread.
He et al. (2015, Fig. 6) report gaps of a few points on CIFAR-10; the presets'
measured gaps are in benchmarks/README.md ("Figures behind the defaults").

Diverged runs (a non-finite loss) are left out of the means and named in the
verdict; a cell with no finished run gives no verdict (``None``).

Independent (model, seed) runs go to worker processes with one torch thread each
(on a shared 2-core machine two 1-thread processes beat one 2-thread process); every run checkpoints each epoch under ``<run>/checkpoints/`` so an
interrupted sweep resumes where it stopped (:func:`run_sweep` skips the runs
already in ``runs.csv``).

Modules: ``config`` (the sweep, presets, plan), ``training`` (one run), ``sweep`` (all runs,
workers), ``progress``, ``verdict``, ``report`` (the renderer) and ``figures`` (its figures);
the command is ``residuals/bench/degradation_cli.py``.
"""

from typing import TYPE_CHECKING

from residuals._lazy import lazy_exports

if TYPE_CHECKING:  # the exports, imported on first use (residuals._lazy)
    from residuals.bench.degradation.config import (
        DEFAULT_PRESET,
        DEGRADATION_MARGIN,
        PRESET_INFO,
        PRESETS,
        RESIDUAL_TOLERANCE,
        RESULT_TABLES,
        RUN_KEYS,
        SIGNIFICANCE,
        VARIANTS,
        DegradationConfig,
        Preset,
        RunSpec,
        configure,
        describe_preset,
        fix_numerics,
        model_label,
        plan_runs,
        verdict_rule,
    )
    from residuals.bench.degradation.fusion import FUSE_CHOICES, FusedJob, plan_jobs, resolve_fuse
    from residuals.bench.degradation.progress import Progress
    from residuals.bench.degradation.runner import (
        DegradationResult,
        SweepError,
        open_resume,
        resume_command,
        run,
    )
    from residuals.bench.degradation.sweep import (
        CUDA_JOBS,
        cuda_mps_running,
        default_jobs,
        run_sweep,
        worker_threads,
    )
    from residuals.bench.degradation.training import (
        RunOutcome,
        checkpoint_path,
        finished_runs,
        load_data,
        probe_inputs,
        probe_model,
        train_job,
        train_run,
    )
    from residuals.bench.degradation.verdict import Verdict, degradation_verdict, final_errors

__getattr__, __dir__, __all__ = lazy_exports(__name__, __file__)
