"""CPU data parallelism (residuals.replicas and TrainConfig.replicas): the step's gradient is the
batch's, BatchNorm works per shard as on the paper's two GPUs, runs are deterministic and resume
bit for bit, threads are set and restored, errors in a worker thread reach the caller."""

from __future__ import annotations

import copy
import threading
from dataclasses import asdict

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from train_helpers import host_reads, same_weights, small_cnn, stop_after, untimed

import residuals.device as rdevice
from residuals.replicas import MIN_SHARD, Replicas
from residuals.train import TrainConfig, TrainError, load_checkpoint, train

pytestmark = pytest.mark.usefixtures("one_thread")


bn_cnn = small_cnn


def no_bn_cnn(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 10),
    )


def shard_step(net, x, y, weight):
    loss = F.cross_entropy(net(x), y)
    (loss * weight).backward()
    return loss.detach()


# --------------------------------------------------------------------------- the step


@pytest.mark.parametrize("n, sizes", [(2, [5, 5]), (3, [4, 3, 3])])
def test_gradient_is_the_weighted_sum_of_per_shard_gradients(n, sizes):
    """Step 1-2: with BatchNorm per shard, the model's gradient is sum_k (n_k/n) grad(mean loss_k),
    each computed on the shard alone, as on the paper's two GPUs."""
    model = bn_cnn().train()
    reference = copy.deepcopy(model)
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(10, 1, 8, 8, generator=g), torch.randint(0, 10, (10,), generator=g)
    with Replicas(model, n) as reps:
        out = reps.forward_backward(shard_step, x, y)
    assert [size for _, size in out] == sizes
    expected = [torch.zeros_like(p) for p in reference.parameters()]
    losses = []
    for xs, ys in zip(x.tensor_split(n), y.tensor_split(n)):
        net = copy.deepcopy(reference)
        loss = F.cross_entropy(net(xs), ys)
        loss.backward()
        losses.append(loss.detach())
        for e, p in zip(expected, net.parameters()):
            e += p.grad * (len(ys) / len(y))
    for got, e in zip(model.parameters(), expected):
        torch.testing.assert_close(got.grad, e, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(torch.stack([loss for loss, _ in out]), torch.stack(losses))


def test_without_batchnorm_the_step_is_the_one_model_step():
    """No per-shard statistics: two replicas give the full batch's gradient (up to rounding)."""
    model = no_bn_cnn()
    whole = copy.deepcopy(model)
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(16, 1, 8, 8, generator=g), torch.randint(0, 10, (16,), generator=g)
    with Replicas(model, 2) as reps:
        reps.forward_backward(shard_step, x, y)
    F.cross_entropy(whole(x), y).backward()
    for a, b in zip(model.parameters(), whole.parameters()):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-5, atol=1e-7)


def test_after_step_averages_batchnorm_statistics_and_copies_the_model_out():
    model = bn_cnn().train()
    g = torch.Generator().manual_seed(2)
    x, y = torch.randn(12, 1, 8, 8, generator=g), torch.randint(0, 10, (12,), generator=g)
    with torch.no_grad():
        whole = model[0](x).mean(dim=(0, 2, 3))  # the first BatchNorm's input, whole batch
    with Replicas(model, 2) as reps:
        reps.forward_backward(shard_step, x, y)
        shard_means = [m[1].running_mean.clone() for m in reps.models]
        with torch.no_grad():
            for p in model.parameters():
                p.sub_(0.1 * p.grad)  # an optimiser step on the model only
        reps.after_step()
        torch.testing.assert_close(model[1].running_mean, (shard_means[0] + shard_means[1]) / 2)
        # equal shards: the running mean tracks the whole batch's mean (0.9 * 0 + 0.1 * mean)
        torch.testing.assert_close(model[1].running_mean, 0.1 * whole, rtol=1e-4, atol=1e-6)
        assert all(same_weights(model, other) for other in reps.models[1:])
        assert int(model[1].num_batches_tracked) == 1


def test_replicas_follow_the_models_train_or_eval_mode():
    """A model handed over in eval mode (say, just evaluated) trains its copies in train mode
    once it is switched to train mode, as the trainer does every epoch."""
    model = bn_cnn().eval()
    x, y = torch.randn(8, 1, 8, 8), torch.randint(0, 10, (8,))
    with Replicas(model, 2) as reps:
        model.train()
        reps.forward_backward(shard_step, x, y)
        copy_bn = reps.models[1][1]
        assert copy_bn.training and int(copy_bn.num_batches_tracked) == 1
        assert not torch.equal(copy_bn.running_mean, torch.zeros(8))  # batch statistics used


def test_a_small_last_batch_uses_fewer_replicas():
    model = bn_cnn()
    x, y = torch.randn(5, 1, 8, 8), torch.randint(0, 10, (5,))
    with Replicas(model, 4) as reps:
        out = reps.forward_backward(shard_step, x, y)
    assert [size for _, size in out] == [3, 2]  # 5 // MIN_SHARD = 2 shards
    assert MIN_SHARD == 2


def test_an_error_in_a_worker_thread_reaches_the_caller_after_every_shard():
    model = bn_cnn()
    finished = []

    def fail_on_worker(net, x, y, weight):
        if threading.current_thread() is not threading.main_thread():
            raise RuntimeError("shard failed")
        finished.append(len(y))
        return shard_step(net, x, y, weight)

    with Replicas(model, 2) as reps, pytest.raises(RuntimeError, match="shard failed"):
        reps.forward_backward(fail_on_worker, torch.randn(8, 1, 8, 8), torch.randint(0, 10, (8,)))
    assert finished == [4]


@pytest.mark.parametrize("threads_each", [1, 2])
def test_threads_are_set_per_replica_and_restored(threads_each):
    seen = []

    class Probe(nn.Module):
        def forward(self, x):
            seen.append(
                (threading.current_thread() is threading.main_thread(), torch.get_num_threads())
            )
            return x

    model = nn.Sequential(Probe(), nn.Flatten(), nn.Linear(64, 10))
    torch.set_num_threads(2 * threads_each)
    with Replicas(model, 2, threads_each=threads_each) as reps:
        with reps.threads():
            reps.forward_backward(shard_step, torch.randn(8, 1, 8, 8), torch.randint(0, 10, (8,)))
        assert torch.get_num_threads() == 2 * threads_each
    assert sorted(seen) == [(False, threads_each), (True, threads_each)]


def test_bad_replica_counts_are_refused():
    with pytest.raises(ValueError, match="n >= 2"):
        Replicas(bn_cnn(), 1)
    with pytest.raises(ValueError, match="threads_each"):
        Replicas(bn_cnn(), 2, threads_each=0)


# --------------------------------------------------------------------------- in the trainer


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"replicas": 0}, "replicas must be an integer >= 1"),
        ({"replicas": True}, "replicas must be an integer"),
        ({"replicas": 2.0}, "replicas must be an integer"),
        ({"replicas": 3, "batch_size": 5}, "needs batch_size >= 6"),
        ({"replicas": 2, "compile": True}, "cannot be combined with compile"),
    ],
)
def test_invalid_replicas_are_clear_value_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig(**kwargs)


@pytest.mark.parametrize(
    "threads, batch, kwargs, expected",
    [
        (2, 128, {}, (2, 1)),  # the 2-core default: one replica per core
        (8, 128, {}, (4, 2)),  # at least 32 images each: 4, two threads each
        (2, 32, {}, (1, 2)),  # too small a batch to split
        (1, 128, {}, (1, 1)),
        (2, 128, {"compile": True}, (1, 2)),
        (4, 128, {"replicas": 3}, (3, 1)),  # explicit
    ],
)
def test_resolve_replicas(threads, batch, kwargs, expected):
    assert (
        rdevice.resolve_replicas(
            kwargs.get("replicas"),
            "cpu",
            batch,
            threads=threads,
            compile=kwargs.get("compile", False),
        )
        == expected
    )
    assert rdevice.resolve_replicas(None, "cuda:0", batch, threads=threads)[0] == 1


def test_replicas_train_deterministically_and_differ_from_one_model(digits):
    cfg = TrainConfig(
        epochs=2,
        batch_size=64,
        lr=0.05,
        warmup_epochs=1,
        augment=True,
        seed=4,
        replicas=2,
        amp=False,
    )
    a = train(bn_cnn(), digits, cfg)
    b = train(bn_cnn(), digits, cfg)
    assert a.replicas == 2
    assert untimed(a.history) == untimed(b.history) and same_weights(a.model, b.model)
    assert a.history[-1].train_loss < a.history[0].train_loss
    one = train(bn_cnn(), digits, TrainConfig(**{**asdict(cfg), "replicas": 1}))
    assert one.replicas == 1
    assert untimed(one.history) != untimed(a.history)  # BatchNorm saw shards of 32, not 64
    assert torch.get_num_threads() == 1  # restored


def test_without_batchnorm_replicas_train_like_one_model(digits):
    cfg = TrainConfig(epochs=2, batch_size=64, lr=0.05, warmup_epochs=1, seed=5, amp=False)
    one = train(no_bn_cnn(), digits, cfg)
    two = train(no_bn_cnn(), digits, TrainConfig(**{**asdict(cfg), "replicas": 2}))
    for a, b in zip(one.history, two.history):
        assert a.train_loss == pytest.approx(b.train_loss, rel=1e-4)
    for a, b in zip(one.model.parameters(), two.model.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_resume_with_replicas_is_exact_and_keeps_the_replica_count(digits, tmp_path):
    """replicas=None resolves by thread count; a resume keeps the checkpoint's count."""
    cfg = TrainConfig(
        epochs=3, batch_size=64, lr=0.05, warmup_epochs=1, augment=True, seed=6, amp=False
    )
    torch.set_num_threads(2)  # None -> two replicas of one thread
    full = train(bn_cnn(), digits, cfg)
    assert full.replicas == 2
    path = tmp_path / "run.pt"
    with pytest.raises(KeyboardInterrupt):
        train(bn_cnn(), digits, cfg, checkpoint_path=path, on_epoch=stop_after(1))
    assert torch.get_num_threads() == 2  # restored after the interrupt
    assert load_checkpoint(path)["replicas"] == 2
    torch.set_num_threads(1)  # would resolve to one replica afresh
    resumed = train(bn_cnn(seed=9), digits, cfg, checkpoint_path=path, resume=True)
    assert resumed.replicas == 2 and resumed.resumed_from_epoch == 1
    assert untimed(resumed.history) == untimed(full.history)
    assert same_weights(resumed.model, full.model)


def test_default_precision_follows_the_threads_of_each_replica(digits, monkeypatch):
    """Two one-thread replicas run bf16 where the CPU has it natively: no two-thread kernels."""
    monkeypatch.setattr(rdevice, "cpu_has_native_bf16", lambda: True)
    torch.set_num_threads(2)
    r = train(bn_cnn(), digits, TrainConfig(epochs=2, batch_size=64, lr=0.05, warmup_epochs=1))
    assert (r.replicas, r.amp) == (2, True)
    r = train(
        bn_cnn(), digits, TrainConfig(epochs=2, batch_size=64, lr=0.05, warmup_epochs=1, replicas=1)
    )
    assert (r.replicas, r.amp) == (1, False)


def test_a_model_error_on_a_replica_is_explained(digits):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 3))
    with pytest.raises(TrainError, match=r"\(64, 10\)"):
        train(model, digits, TrainConfig(epochs=1, warmup="none", replicas=2))


def test_no_host_synchronisation_inside_the_step_loop_with_replicas(digits, monkeypatch):
    reads = host_reads(monkeypatch)
    r = train(
        bn_cnn(), digits, TrainConfig(epochs=2, batch_size=16, lr=0.05, warmup="paper", replicas=2)
    )
    assert r.iterations == 2 * 85
    assert 0 < len(reads) <= 2 * 4, reads


@pytest.mark.gpu
def test_replicas_are_refused_on_a_gpu(digits):
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    with pytest.raises(TrainError, match="leave replicas unset"):
        train(bn_cnn(), digits, TrainConfig(epochs=1, warmup="none", replicas=2, device="cuda"))
