"""Run folders: metadata, tables, atomic writes and broken folders."""

import json

import pandas as pd
import pytest

from residuals.runs import BrokenRun, RunDir


def test_create_records_environment_and_finish_records_time(tmp_path):
    run = RunDir.create(
        tmp_path,
        bench="boosting",
        dataset="diabetes",
        config={"n_estimators": 5},
        command="residuals bench boosting --quick",
        device="cpu",
    )
    meta = run.meta
    assert run.path.parent == tmp_path and run.path.name.endswith("-boosting-diabetes")
    assert meta["status"] == "running" and meta["config"] == {"n_estimators": 5}
    assert meta["command"] == "residuals bench boosting --quick"
    assert meta["versions"]["python"] and "scikit-learn" in meta["versions"]
    assert meta["machine"]["device"] == "cpu" and meta["machine"]["cpu_count"] >= 1
    meta = run.finish("complete", headline="all good")
    assert meta["status"] == "complete" and meta["headline"] == "all good"
    assert meta["wall_s"] is not None and meta["wall_s"] >= 0
    with pytest.raises(ValueError, match="status must be one of"):
        run.finish("done")


def test_same_second_runs_get_distinct_folders(tmp_path):
    a = RunDir.create(tmp_path, "degradation", "digits", {}, name="x")
    b = RunDir.create(tmp_path, "degradation", "digits", {}, name="x")
    assert a.path != b.path and b.path.name == "x-2"


def test_tables_round_trip_and_missing_table_is_broken(tmp_path):
    run = RunDir.create(tmp_path, "degradation", "digits", {})
    df = pd.DataFrame({"epoch": [1, 2], "train_error": [0.5, 0.25]})
    run.write_table(df)
    pd.testing.assert_frame_equal(run.read_table(), df)
    assert not list(run.path.glob("*.tmp"))
    with pytest.raises(BrokenRun, match="probes.csv is missing"):
        run.read_table("probes")


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "no meta.json"),
        ("{not json", "unreadable"),
        (json.dumps({"x": 1}), "does not describe a run"),
    ],
)
def test_broken_meta_is_reported(tmp_path, content, message):
    if content is not None:
        (tmp_path / "meta.json").write_text(content)
    with pytest.raises(BrokenRun, match=message):
        RunDir(tmp_path).read_meta()


def test_atomic_write_leaves_the_old_file_and_no_temporary_on_failure(tmp_path):
    from residuals.runs import atomic_write

    target = tmp_path / "sub" / "meta.json"
    atomic_write(target, "old\n")
    assert target.read_text() == "old\n"

    def half_then_fail(f):
        f.write(b"half a fi")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, half_then_fail)
    assert target.read_text() == "old\n"
    assert [p.name for p in target.parent.iterdir()] == ["meta.json"]
    atomic_write(target, b"\x00bytes")
    assert target.read_bytes() == b"\x00bytes"


def test_packages_add_facts_to_the_record_and_benches_register_renderers(tmp_path, monkeypatch):
    from residuals.runs import environment, registry

    monkeypatch.setitem(environment._FACTS, "answer", lambda: 42)
    monkeypatch.setitem(environment._FACTS, "absent", lambda: None)
    run = RunDir.create(tmp_path, "degradation", "digits", {})
    assert run.meta["machine"]["answer"] == 42 and "absent" not in run.meta["machine"]

    import residuals  # noqa: F401  (registers the built-in benches)

    assert {"degradation", "boosting"} <= set(registry.RENDERERS)
    assert callable(registry.get_renderer("degradation"))
    monkeypatch.setitem(registry.RENDERERS, "mine", lambda run: None)
    assert registry.get_renderer("mine")(None) is None
    with pytest.raises(ValueError, match="no report renderer for bench 'nope'"):
        registry.get_renderer("nope")
    with pytest.raises(ValueError, match="module:function"):
        registry.register_renderer("x", "not-a-path")


def test_report_never_names_a_bench():
    from pathlib import Path

    import residuals.report

    for path in Path(residuals.report.__file__).parent.glob("*.py"):
        text = path.read_text()
        assert "residuals.bench" not in text and "residuals.boosting" not in text, path.name
