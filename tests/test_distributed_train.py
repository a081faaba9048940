"""The trainer under a 2-rank gloo process group on the CPU (DistributedDataParallel).

The reference is one process training the same global batches with 2 CPU replicas, whose
BatchNorm normalises each half of the batch as the ranks' per-rank BatchNorm does (the step
is in residuals.distributed). On the CPU the two are equal bit for bit: the shards, their
kernels (one thread each), the gradient sum (two addends, DDP's division by 2 exact) and the
BatchNorm averages are the same arithmetic. torch's SyncBatchNorm runs on GPUs only; its
test is marked gpu.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pytest
import torch
from dist_helpers import spawn
from train_helpers import small_cnn, stop_after, untimed

from residuals.train import TrainConfig, TrainError, train

N_TRAIN = 64 * 3 + 3  # the last batch (3 images) is too small for two shards: one rank idles
CFG = TrainConfig(
    epochs=2,
    batch_size=64,
    lr=0.05,
    warmup="none",
    augment="crop-flip",
    amp=False,
    eval_batch_size=256,
)


def tiny_digits():
    from residuals.data import load_dataset

    d = load_dataset("digits")
    return dataclasses.replace(
        d,
        train_x=d.train_x[:N_TRAIN],
        train_y=d.train_y[:N_TRAIN],
        test_x=d.test_x[:200],
        test_y=d.test_y[:200],
    )


def _live_ddp() -> list:
    """The DistributedDataParallel wrappers still alive, without collecting garbage: a run
    lets go of its wrapper when it ends, or ends with an error, instead of leaving it in a
    reference cycle for a later collection to destroy at a moment nobody chose."""
    import gc

    from torch.nn.parallel import DistributedDataParallel

    return [o for o in gc.get_objects() if isinstance(o, DistributedDataParallel)]


def _ranks(rank: int, out: str) -> None:
    import gc

    gc.disable()  # what the run leaves behind stays for _live_ddp to see

    out_dir = Path(out)
    data = tiny_digits()
    # rank 0 checkpoints; rank 1 is handed a path it must never write (nor read: rank 0 does)
    mine = out_dir / ("ckpt.pt" if rank == 0 else "rank1/ckpt.pt")
    # an interrupted first attempt, then a resume from another initialisation: the run must
    # end where an uninterrupted run ends
    with pytest.raises(KeyboardInterrupt):
        train(
            small_cnn(), data, CFG, checkpoint_path=mine, on_epoch=stop_after(1), distributed=True
        )
    assert not _live_ddp(), "an interrupted run kept its DDP wrapper (and the group) alive"
    if rank == 0:
        shutil.copy(mine, out_dir / "epoch1.pt")
    resumed = train(
        small_cnn(seed=1), data, CFG, checkpoint_path=mine, resume=True, distributed=True
    )
    assert not _live_ddp(), "a finished run left its DDP wrapper to the garbage collector"
    torch.save(
        {
            "weights": resumed.model.state_dict(),
            "history": untimed(resumed.history),
            "replicas": resumed.replicas,
        },
        out_dir / f"rank{rank}.pt",
    )
    # refused on every rank: a one-process checkpoint (BatchNorm over the whole batch), and
    # SyncBatchNorm on the CPU
    with pytest.raises(TrainError, match="per-rank BatchNorm over 1 shard"):
        train(
            small_cnn(),
            data,
            CFG,
            checkpoint_path=out_dir / "single.pt",
            resume=True,
            distributed=True,
        )
    with pytest.raises(TrainError, match="GPUs only"):
        train(small_cnn(), data, dataclasses.replace(CFG, sync_bn=True), distributed=True)


@pytest.mark.slow
def test_two_ranks_equal_one_process_with_two_replicas(tmp_path, one_thread):
    data = tiny_digits()
    with pytest.raises(KeyboardInterrupt):  # a one-process, one-replica checkpoint
        train(
            small_cnn(),
            data,
            dataclasses.replace(CFG, replicas=None),
            checkpoint_path=tmp_path / "single.pt",
            on_epoch=stop_after(1),
        )
    spawn(_ranks, 2, str(tmp_path))
    ref = train(small_cnn(), data, dataclasses.replace(CFG, replicas=2))
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in range(2))
    assert not (tmp_path / "rank1").exists(), "rank 1 wrote a checkpoint"
    assert r0["replicas"] == 2
    for k, v in ref.model.state_dict().items():
        assert torch.equal(r0["weights"][k], v), k
        assert torch.equal(r1["weights"][k], v), k
    assert r0["history"] == r1["history"] == untimed(ref.history)
    # one process on the CPU resumes the 2-rank run exactly: 2 replicas, from the checkpoint
    alone = train(small_cnn(seed=2), data, CFG, checkpoint_path=tmp_path / "epoch1.pt", resume=True)
    assert alone.replicas == 2
    assert untimed(alone.history) == untimed(ref.history)
    assert all(
        torch.equal(a, b)
        for a, b in zip(alone.model.state_dict().values(), ref.model.state_dict().values())
    )


def _sync_bn_ranks(rank: int, out: str) -> None:
    data = tiny_digits().to("cuda:0")  # both ranks on the one GPU, gloo between them
    result = train(
        small_cnn(), data, dataclasses.replace(CFG, device="cuda:0", sync_bn=True), distributed=True
    )
    torch.save(result.model.state_dict(), Path(out) / f"rank{rank}.pt")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_sync_bn_two_ranks_match_one_process_within_rounding(tmp_path):
    spawn(_sync_bn_ranks, 2, str(tmp_path))
    cfg = dataclasses.replace(CFG, device="cuda:0", cuda_graph=False)
    one = train(small_cnn(), tiny_digits(), cfg).model.state_dict()
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in range(2))
    for k, v in one.items():
        assert torch.equal(r0[k], r1[k]), k
        # SyncBatchNorm combines per-rank sums, cuDNN reduces the whole batch at once: the
        # statistics differ in float32 rounding (~1e-7 relative), which 8 steps carry on
        torch.testing.assert_close(r0[k].cpu(), v.cpu(), rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_residuals_train_under_torchrun_equals_one_process_with_two_replicas(tmp_path):
    """The command end to end: 2 ranks of `residuals train` write the per-epoch results of
    one process training the same recipe with 2 replicas; rank 0 alone writes the folder."""
    import pandas as pd
    from dist_helpers import torchrun

    from residuals.bench import train as lib

    args = (
        "--model resnet8 --epochs 1 --batch-size 64 --precision fp32 --device cpu "
        f"--no-report --subset {N_TRAIN}"
    ).split()
    done = torchrun(["train", *args, "--out", str(tmp_path / "ranks")])
    assert done.stdout.count("run folder:") == 1  # rank 0 alone prints
    (folder,) = (tmp_path / "ranks").iterdir()
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        recipe = lib.get_recipe(lib.DEFAULT_RECIPE).with_options(
            model="resnet8",
            subset=N_TRAIN,
            epochs=1,
            batch_size=64,
            amp=False,
            device="cpu",
            replicas=2,
        )
        one = lib.run(recipe, out=tmp_path / "one", report=False, echo=lambda _: None)
    finally:
        torch.set_num_threads(before)
    timing = ["seconds", "images_per_s"]
    got = pd.read_csv(folder / "results.csv").drop(columns=timing)
    want = one.run.read_table("results").drop(columns=timing)
    pd.testing.assert_frame_equal(got, want, check_exact=True)
