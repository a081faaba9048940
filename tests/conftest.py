"""Test-wide settings.

Tests run torch on one thread: on small shared machines (2 cores, sometimes one of
them taken by another tenant) a single thread was measured 10-25x faster than two
for the tiny convolutions the tests use. Set RESIDUALS_TEST_THREADS to change it.
"""

import os
import subprocess

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


@pytest.fixture
def read_only_dir(tmp_path):
    """A folder nobody may write to: chmod for an ordinary user; for root (whom file modes do
    not stop) a read-only bind mount where the system allows one, else the test is skipped.
    Yields (folder, make_read_only): fill the folder first, then call make_read_only()."""
    folder = tmp_path / "ro"
    folder.mkdir()
    state = {"mounted": False}

    def make_read_only() -> None:
        if not (hasattr(os, "geteuid") and os.geteuid() == 0):
            for p in [folder, *folder.rglob("*")]:
                if p.is_dir():
                    p.chmod(0o555)
            return
        ok = subprocess.run(
            ["mount", "--bind", str(folder), str(folder)], capture_output=True, check=False
        )
        if ok.returncode != 0:
            pytest.skip("running as root without mount privileges: no read-only folder to test")
        state["mounted"] = True
        ro = subprocess.run(
            ["mount", "-o", "remount,bind,ro", str(folder)], capture_output=True, check=False
        )
        if ro.returncode != 0:
            pytest.skip("running as root and a read-only remount is not allowed here")

    yield folder, make_read_only
    if state["mounted"]:
        subprocess.run(["umount", str(folder)], capture_output=True, check=False)
    else:
        for p in [folder, *folder.rglob("*")]:
            if p.is_dir():
                p.chmod(0o755)
