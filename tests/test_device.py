"""The one home of device and precision policy: residuals.device."""

from __future__ import annotations

import pytest
import torch

from residuals import device as D


def test_resolve_device_has_one_error_type():
    assert D.resolve_device("cpu") == "cpu"
    assert D.resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(D.DeviceError, match="not supported|unknown device"):
        D.resolve_device("tpu")
    # a DeviceError is both: code that caught either former error type keeps working
    assert issubclass(D.DeviceError, ValueError) and issubclass(D.DeviceError, RuntimeError)
    if not torch.cuda.is_available():
        with pytest.raises(D.DeviceError, match="no CUDA GPU is available.*--device cpu"):
            D.resolve_device("cuda:0")


def test_every_layer_resolves_through_the_device_module():
    import residuals.data
    import residuals.train

    assert residuals.data.resolve_device is D.resolve_device
    assert residuals.train.resolve_device is D.resolve_device
    assert residuals.train.resolve_amp is D.resolve_amp
    assert residuals.train.resolve_replicas_amp is D.resolve_replicas_amp


def test_replicas_and_precision_follow_the_threads_of_each_replica(monkeypatch):
    from residuals.train import TrainConfig

    monkeypatch.setattr(D, "cpu_has_native_bf16", lambda: True)
    cfg = TrainConfig(device="cpu", batch_size=128)
    assert D.resolve_replicas_amp(cfg, threads=2) == (2, 1, True)  # 2 one-thread replicas: bf16
    assert D.resolve_replicas_amp(TrainConfig(device="cpu", batch_size=32), threads=2) == (
        1,
        2,
        False,
    )
    assert D.resolve_amp(None, "cuda") is True and D.resolve_amp(False, "cuda") is False
    monkeypatch.setattr(D, "cpu_has_native_bf16", lambda: False)
    assert D.resolve_replicas_amp(cfg, threads=2)[2] is False
