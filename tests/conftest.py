"""Test-wide settings.

Tests run torch on one thread: on small shared machines (2 cores, sometimes one of
them taken by another tenant) a single thread was measured 10-25x faster than two
for the tiny convolutions the tests use. Set RESIDUALS_TEST_THREADS to change it.
"""

import os

import pytest

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def pytest_configure(config):
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a hard dependency
        return
    torch.set_num_threads(int(os.environ.get("RESIDUALS_TEST_THREADS", "1")))


@pytest.fixture(scope="module")
def digits():
    """The embedded digits as the trainer's ImageData (8x8, 1 channel, 10 classes)."""
    from residuals.data import load_dataset

    return load_dataset("digits")


@pytest.fixture
def one_thread():
    """One torch thread for the test (bitwise comparisons need a fixed count), restored after."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
