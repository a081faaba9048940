"""Smoke test of benchmarks/fused_throughput.py: tiny sizes on the CPU, every mode, the
documented tables. No speed is asserted (speed figures live in benchmarks/README.md)."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def script():
    sys.path.insert(0, str(BENCH))
    try:
        yield importlib.import_module("fused_throughput")
    finally:
        sys.path.remove(str(BENCH))


@pytest.mark.slow
def test_fused_throughput_main_smoke(script, tmp_path):
    tables = script.main(
        [
            "--depth",
            "8",
            "--image-shape",
            "1",
            "8",
            "8",
            "--members",
            "1",
            "2",
            "--process-members",
            "1",
            "--steps",
            "1",
            "--repeats",
            "1",
            "--peak-n",
            "128",
            "--batch-size",
            "16",
            "--out",
            str(tmp_path),
        ]
    )
    summary = tables["summary"]
    got = sorted(zip(summary["mode"], summary["members"]))
    assert got == [
        ("fused", 1),
        ("fused", 2),
        ("processes", 1),
        ("sequential", 1),
        ("sequential", 2),
    ]
    assert (summary["images_per_s"] > 0).all() and (summary["fraction_of_peak"] > 0).all()
    seq = summary[summary["mode"] == "sequential"]
    assert (seq["vs_sequential"] == 1.0).all()
    assert (seq["images_per_s_per_member"] * seq["members"] == seq["images_per_s"]).all()
    assert tables["limits"]["train_flops_per_image"].iloc[0] > 0
    doc = json.loads((tmp_path / "fused_throughput.json").read_text())
    assert (
        set(doc["tables"]) == {"raw", "summary", "limits"}
        and doc["benchmark"] == "fused_throughput"
    )


def test_config_is_checked(script):
    with pytest.raises(ValueError, match="modes"):
        script.FusedBenchConfig(modes=("threads",))
    with pytest.raises(ValueError, match="members"):
        script.FusedBenchConfig(members=(0,))
