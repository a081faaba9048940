"""The trainer: SGD, Adam or AdamW on uint8 images that live on the device.

He et al. 2015 (sec. 4.2) train CIFAR-10 ResNets with SGD, momentum 0.9,
weight decay 1e-4, batch 128, lr 0.1 divided by 10 at 32k and 48k of 64k
iterations; ResNet-110 is first warmed up at lr 0.01 "until the training error
is below 80% (about 400 iterations)". :class:`TrainConfig` holds these, plus a
cosine schedule and a linear warm-up (the default: without it resnet-56 stalled on
digits; benchmarks/README.md, "Figures behind the defaults").

The step loop never waits for the device: the permutation is drawn by a
seeded device generator, batches are indexed, augmented and normalised on the
device, the learning rate is a device tensor set from a precomputed
per-iteration table (so the paper's error-triggered warm-up needs no host
round trip either), and loss and error counts are accumulated in device
tensors and read once per epoch. That one read is also where a non-finite loss
marks the run as diverged.

On CUDA the step (forward, loss, backward, optimiser step and the running sums)
is captured once as a CUDA graph after a few eager warm-up steps and replayed
for every full batch: at batch 128 a ResNet-56 step is hundreds of small
kernels, and launching them one by one from Python costs more than running
them. Selecting, augmenting and normalising the batch and setting the learning
rate stay eager (a handful of kernels) and write into the graph's static input.
A partial last batch runs eagerly.

On a multi-core CPU the batch is split, by default, between data-parallel
replicas of the model that run one thread each (:mod:`residuals.replicas`):
one join per step instead of one per operator. Their BatchNorm layers
normalise their own shards, as on the paper's two GPUs.

Every epoch ends with an atomic checkpoint (temporary file, then
``os.replace``) holding model, optimiser, schedule and RNG states and the
history (and, with ``checkpoint_every=N``, every N steps within an epoch too);
``resume=True`` continues from it bit for bit (on the CPU; cuDNN may pick
different kernels on a GPU) and returns a finished run without redoing it. A
resume may ask for more epochs: the run goes on with its learning-rate schedule
re-planned over the new total (:class:`LRSchedule`), and the plans are recorded.

Per-step loss, error and learning rate are kept on the device and handed over
once per epoch (``on_steps``, a :class:`StepTrace`); ``on_step`` sees every step
(a progress bar) without forcing a synchronisation.

Many nets of one architecture (seeds, an ensemble, a sweep's plain and residual
twins) train as one fused model with :func:`train_many` (:mod:`residuals.train.fused`).
"""

from typing import TYPE_CHECKING

from residuals._lazy import lazy_exports

if TYPE_CHECKING:  # the exports, imported on first use (residuals._lazy)
    from residuals.device import (
        cpu_has_native_bf16,
        resolve_amp,
        resolve_device,
        resolve_replicas,
        resolve_replicas_amp,
    )
    from residuals.train.checkpoint import CHECKPOINT_FORMAT, load_checkpoint, save_checkpoint
    from residuals.train.config import (
        OPTIMIZERS,
        SCHEDULES,
        WARMUPS,
        EpochRecord,
        StepProgress,
        StepTrace,
        TrainConfig,
        TrainError,
        TrainResult,
        steps_per_epoch,
    )
    from residuals.train.fused import train_many
    from residuals.train.loop import train
    from residuals.train.optim import make_optimizer
    from residuals.train.schedule import LRSchedule
    from residuals.train.steps import evaluate

__getattr__, __dir__, __all__ = lazy_exports(__name__, __file__)
