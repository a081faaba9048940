"""`residuals bench boosting` and benchmarks/boosting_speed.py, on tiny configurations."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from residuals.bench import boosting as B
from residuals.bench import boosting_cli
from residuals.bench.boosting.report import gap_class, headline_facts, render
from residuals.cli import main
from residuals.runs import RunDir

ROOT = Path(__file__).resolve().parents[1]
SPEED = ROOT / "benchmarks" / "boosting_speed.py"


def _invoke(*args: str):
    return CliRunner().invoke(main, ["bench", "boosting", *args], catch_exceptions=False)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> tuple[RunDir, str]:
    """One real tiny run of every method: a regression, a binary and a multiclass
    dataset, and one generated dataset at two sizes."""
    out = tmp_path_factory.mktemp("reports")
    res = _invoke(
        "--datasets",
        "diabetes,breast_cancer,wine,friedman1",
        "--sizes",
        "150,300",
        "--losses",
        "squared_error,huber,log_loss",
        "--n-estimators",
        "6",
        "--out",
        str(out),
    )
    assert res.exit_code == 0, res.output
    (run_path,) = [p for p in out.iterdir() if p.is_dir()]
    return RunDir(run_path), res.output


# ------------------------------------------------------------------ the run


@pytest.mark.slow
def test_run_writes_tables_meta_and_report(tiny_run):
    run, output = tiny_run
    meta = run.read_meta()
    assert meta["bench"] == "boosting" and meta["status"] == "complete"
    assert meta["config"]["n_estimators"] == 6 and meta["config"]["threads"] == 1
    assert meta["config"]["datasets"] == ["diabetes", "breast_cancer", "wine", "friedman1"]
    assert meta["versions"]["scikit-learn"] and meta["machine"]["cpu_count"]
    from residuals.boosting import _kernels

    assert meta["machine"]["hist_cpu_loops"] == (
        "C" if _kernels.available() else "torch (C extension not built)"
    )
    results = run.read_table("results")
    ok = results[results["status"] == "ok"]
    fast = ok["fit_s"] < B.FAST_FIT_S
    assert fast.any() and (ok.loc[fast, "fit_repeats"] == B.FAST_FIT_REPEATS).all()
    assert (ok.loc[~fast, "fit_repeats"] >= 1).all()
    assert meta["headline"] and meta["wall_s"] > 0
    for name in ("results", "staged", "parity", "contributions", "hist_gap"):
        assert run.has_table(name), name
    assert (run.path / "index.html").is_file()
    for key in ("staged_loss", "residual", "corrections", "fit_time"):
        assert (run.figures_dir / f"{key}.png").is_file(), key
    # progress on the terminal, and the report's path at the end
    assert "[1/8] diabetes / squared_error" in output
    assert output.strip().splitlines()[-1] == f"report: {run.path / 'index.html'}"


def test_results_cover_every_case_and_method(tiny_run):
    run, _ = tiny_run
    res = run.read_table("results")
    # diabetes x {squared_error, huber}, breast_cancer, wine, friedman1 x 2 sizes x 2 losses
    assert len(res) == 8 * len(B.METHODS)
    assert set(res["method"]) == set(B.METHODS)
    na = res[res["status"] == "unsupported"]
    assert set(na["method"]) == {"sklearn-hist"} and set(na["loss"]) == {"huber"}
    assert (res.loc[res["status"] != "unsupported", "status"] == "ok").all(), res[
        ["method", "message"]
    ]
    ok = res[res["status"] == "ok"]
    assert (ok["fit_s"] > 0).all() and np.isfinite(ok["test_loss"]).all()
    assert sorted(res.loc[res["dataset"] == "friedman1", "n_train"].unique()) == [150, 300]
    staged = run.read_table("staged")
    per = staged.groupby(["dataset", "size", "loss", "method", "split"], dropna=False)["stage"].agg(
        ["min", "max"]
    )
    assert (per["min"] == 1).all() and (per["max"] == 6).all()


def test_exact_mode_matches_sklearn_bit_for_bit(tiny_run):
    run, _ = tiny_run
    parity = run.read_table("parity")
    exact = parity[parity["method"] == "ours-exact"]
    assert len(exact) == 8  # every case, huber included
    assert (exact["reference"] == "sklearn-gbrt").all()
    assert (exact["n_stages"] == 6).all()
    assert (exact["max_abs_diff"] == 0.0).all(), exact
    hist = parity[parity["method"] == "ours-hist"]
    assert len(hist) == 5 and np.isfinite(hist["max_abs_diff"]).all()
    assert run.read_meta()["headline"].startswith(
        "Exact mode matches scikit-learn bit for bit in 8/8 cases"
    )


def test_staged_test_loss_matches_the_final_prediction(tiny_run):
    """The staged table's last stage is the fitted model's own prediction, scored."""
    from sklearn.ensemble import GradientBoostingRegressor
    from sklearn.metrics import mean_squared_error

    run, _ = tiny_run
    data = B.load_split("diabetes", seed=0)
    gbrt = GradientBoostingRegressor(n_estimators=6, max_depth=3, random_state=0).fit(
        data.X_train, data.y_train
    )
    staged = run.read_table("staged")
    last = staged[
        (staged["dataset"] == "diabetes")
        & (staged["loss"] == "squared_error")
        & (staged["method"] == "sklearn-gbrt")
        & (staged["split"] == "test")
        & (staged["stage"] == 6)
    ]
    assert last["loss_value"].item() == pytest.approx(
        mean_squared_error(data.y_test, gbrt.predict(data.X_test)), rel=1e-12
    )


def test_renderer_is_a_pure_function_of_the_tables(tiny_run):
    run, _ = tiny_run
    before = {p.name: p.read_bytes() for p in run.path.glob("*.csv")}
    a, b = render(run), render(run)
    assert a.headline == b.headline == run.read_meta()["headline"]
    assert [f.key for f in a.figures] == [f.key for f in b.figures]
    for fa, fb in zip(a.figures, b.figures):
        pd.testing.assert_frame_equal(fa.data, fb.data)
    assert {t.key for t in a.tables} >= {"parity", "summary", "status"}
    assert {p.name: p.read_bytes() for p in run.path.glob("*.csv")} == before  # read only
    # a copy holding only meta.json and the CSVs renders the same: nothing else is read
    import shutil
    import tempfile

    import matplotlib.pyplot as plt

    with tempfile.TemporaryDirectory() as tmp:
        for name in ["meta.json", *before]:
            shutil.copy(run.path / name, Path(tmp) / name)
        c = render(RunDir(tmp))
    assert c.headline == a.headline
    pd.testing.assert_frame_equal(c.tables[0].data, a.tables[0].data)
    for content in (a, b, c):
        for f in content.figures:
            plt.close(f.fig)


def test_headline_is_computed_from_the_tables(tmp_path):
    """Numbers in the headline come from the CSVs: here, hand-made ones."""
    case = dict(
        task="regression",
        loss="squared_error",
        metric="MSE",
        n_estimators=10,
        max_depth=3,
        threads=1,
        status="ok",
        dataset="friedman1",
        n_features=10,
        device="cpu",
    )
    rows = []
    for size, t_hist, t_gbrt in ((1000, 0.5, 2.0), (4000, 0.8, 16.0)):
        for method, fit_s, loss in (
            ("ours-exact", t_gbrt, 1.00),
            ("ours-hist", t_hist, 1.02),
            ("sklearn-gbrt", t_gbrt, 1.00),
            ("sklearn-hist", t_hist / 2, 1.01),
        ):
            rows.append(
                {
                    **case,
                    "size": size,
                    "n_train": size,
                    "method": method,
                    "fit_s": fit_s,
                    "train_loss": loss,
                    "test_loss": loss,
                }
            )
    results = pd.DataFrame(rows)
    parity = pd.DataFrame(
        [
            {
                "dataset": "friedman1",
                "size": s,
                "loss": "squared_error",
                "method": m,
                "reference": r,
                "max_abs_diff": d,
                "n_stages": 10,
                "first_diff_stage": None,
                "test_loss": 1.0,
                "reference_test_loss": 1.0,
            }
            for s in (1000, 4000)
            for m, r, d in (("ours-exact", "sklearn-gbrt", 0.0), ("ours-hist", "sklearn-hist", 0.1))
        ]
    )
    facts = headline_facts(results, parity)
    assert facts["exact_cases"] == 2 and facts["exact_bitwise"] == 2
    assert facts["hist_vs_exact_rel"] == pytest.approx(0.02)
    assert facts["speed_rows"] == 4000 and facts["hist_vs_gbrt"] == pytest.approx(20.0)
    assert facts["hist_vs_hgb"] == pytest.approx(2.0)
    run = RunDir.create(tmp_path, "boosting", "hand", {})
    run.write_table(results, "results")
    run.write_table(parity, "parity")
    content = render(run)
    assert content.headline == (
        "Exact mode matches scikit-learn bit for bit in 2/2 cases; hist mode test loss "
        "within 2.0% of exact (median 2.0%); hist 20.0x faster than GBRT at 4,000 rows "
        "(2.00x HistGradientBoosting's time)"
    )
    assert content.verdict is True
    parity.loc[0, "max_abs_diff"] = 1e-12
    run.write_table(parity, "parity")
    content = render(run)
    assert "only 1/2 cases" in content.headline and content.verdict is False


def test_hist_gap_table_and_headline(tiny_run, tmp_path):
    run, _ = tiny_run
    gaps = run.read_table("hist_gap")
    results = run.read_table("results")
    ok = results[results["status"] == "ok"].pivot_table(
        index=["dataset", "size", "loss"], columns="method", values="test_loss", dropna=False
    )
    assert len(gaps) == int(ok[["ours-exact", "ours-hist"]].notna().all(axis=1).sum())
    np.testing.assert_allclose(
        gaps["gap"], gaps["hist_test_loss"] - gaps["exact_test_loss"], atol=1e-12
    )
    assert (gaps["gap_se"] >= 0).all()  # 0 where hist and exact agree on every test row
    # hand-made gaps: within 2%, worse beyond it but within 2 SE, worse beyond both, better by 10%
    hand = pd.DataFrame(
        {
            "dataset": ["a", "b", "c", "d"],
            "size": [None] * 4,
            "loss": ["log_loss"] * 4,
            "task": ["binary"] * 4,
            "n_test": [50] * 4,
            "metric": ["log loss"] * 4,
            "exact_test_loss": [1.0, 1.0, 1.0, 1.0],
            "hist_test_loss": [1.01, 1.1, 1.1, 0.9],
            "gap": [0.01, 0.1, 0.1, -0.1],
            "rel_gap": [0.01, 0.1, 0.1, -0.1],
            "gap_se": [0.1, 0.06, 0.01, 0.01],
        }
    )
    assert list(gap_class(hand)) == ["met", "noise", "worse", "better"]
    facts = headline_facts(results, run.read_table("parity"), hand)
    assert (
        facts["gap_cases"],
        facts["gap_met"],
        facts["gap_better"],
        facts["gap_noise"],
        facts["gap_worse"],
    ) == (4, 1, 1, 1, 1)
    copy = RunDir.create(tmp_path, "boosting", "gaps", {})
    for name in ("results", "parity"):
        copy.write_table(run.read_table(name), name)
    copy.write_table(hand, "hist_gap")
    content = render(copy)
    assert (
        "within 2% in 1/4 cases, hist better in 1, hist worse but within 2 standard errors of the "
        "test-set noise in 1, hist worse in 1"
    ) in content.headline
    assert "hist_gap" in [t.key for t in content.tables]


def test_paired_gap():
    ours, ref = np.array([1.0, 2.0, 3.0, 4.0]), np.array([1.0, 1.0, 1.0, 1.0])
    gap, se = B.paired_gap(ours, ref)
    assert gap == pytest.approx(1.5)
    assert se == pytest.approx(np.std([0.0, 1.0, 2.0, 3.0], ddof=1) / 2)
    y, raw = np.array([0.0, 1.0, 2.0]), np.array([0.5, 1.0, 1.0])
    assert B.pointwise_metric(y, raw, "squared_error", "regression").mean() == pytest.approx(
        B.stage_metrics(y, raw, "squared_error", "regression")[0]
    )


# ------------------------------------------------------------------ scoring


def test_stage_metrics_agree_with_sklearn_metrics():
    from sklearn.metrics import log_loss, mean_absolute_error, mean_pinball_loss, mean_squared_error

    rng = np.random.default_rng(0)
    y, raw = rng.normal(size=50), rng.normal(size=50)
    assert B.stage_metrics(y, raw, "squared_error", "regression")[0] == pytest.approx(
        mean_squared_error(y, raw)
    )
    assert B.stage_metrics(y, raw, "absolute_error", "regression")[0] == pytest.approx(
        mean_absolute_error(y, raw)
    )
    assert B.stage_metrics(y, raw, "quantile", "regression")[0] == pytest.approx(
        mean_pinball_loss(y, raw, alpha=B.ALPHA)
    )
    assert B.stage_metrics(y, raw, "squared_error", "regression")[1] == pytest.approx(
        np.sqrt(np.mean((y - raw) ** 2))
    )
    yb = rng.integers(0, 2, size=50)
    p = 1 / (1 + np.exp(-raw))
    assert B.stage_metrics(yb, raw, "log_loss", "binary")[0] == pytest.approx(log_loss(yb, p))
    assert B.stage_metrics(yb, raw, "exponential", "binary")[0] == pytest.approx(
        np.mean(np.exp(-(2 * yb - 1) * raw))
    )
    yk, rawk = rng.integers(0, 3, size=50), rng.normal(size=(50, 3))
    pk = np.exp(rawk) / np.exp(rawk).sum(axis=1, keepdims=True)
    loss, rms = B.stage_metrics(yk, rawk, "log_loss", "multiclass")
    assert loss == pytest.approx(log_loss(yk, pk, labels=[0, 1, 2]))
    assert rms == pytest.approx(np.sqrt(np.mean(np.sum((np.eye(3)[yk] - pk) ** 2, axis=1))))


def test_max_abs_diff_reports_first_differing_stage():
    a = [np.zeros(3), np.ones(3), np.full(3, 2.0)]
    b = [np.zeros(3), np.ones(3) + [0, 0.5, 0], np.full(3, 2.0)]
    assert B.max_abs_diff(iter(a), iter(a)) == (0.0, 3, None)
    assert B.max_abs_diff(iter(a), iter(b)) == (0.5, 3, 2)
    d, n, _ = B.max_abs_diff(iter(a), iter(a[:2]))
    assert np.isnan(d) and n == 2  # different stage counts are never "equal"


def test_cases_and_datasets():
    cfg = B.BoostingBenchConfig.quick(
        datasets=("diabetes", "wine", "classification"), sizes=(100, 50)
    )
    cases = list(B.iter_cases(cfg))
    assert [(c.dataset, c.size, c.loss) for c in cases] == [
        ("diabetes", None, "squared_error"),
        ("diabetes", None, "absolute_error"),
        ("wine", None, "log_loss"),
        ("classification", 50, "log_loss"),
        ("classification", 100, "log_loss"),
    ]
    full = list(B.iter_cases(B.BoostingBenchConfig.full(datasets=("diabetes", "breast_cancer"))))
    assert [c.loss for c in full] == [*B.LOSSES["regression"], *B.LOSSES["binary"]]
    s = B.load_split("friedman1", 120, seed=1)
    assert s.X_train.shape == (120, 10) and s.X_test.shape == (40, 10)
    assert B.load_split("digits").n_classes == 10


# ------------------------------------------------------------------ the command line


def test_cli_names_match_the_bench():
    assert boosting_cli.DATASET_NAMES == tuple(B.DATASETS)
    assert boosting_cli.METHOD_NAMES == B.METHODS
    assert boosting_cli.LOSS_NAMES == tuple(sorted({l for ls in B.LOSSES.values() for l in ls}))


def test_help_is_instant_and_documents_every_option():
    code = (
        "import sys; from residuals.cli import main\n"
        "try: main(['bench', 'boosting', '--help'])\n"
        "except SystemExit: pass\n"
        "print('HEAVY', [m for m in ('torch', 'sklearn', 'pandas', 'matplotlib') if m in sys.modules])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert "HEAVY []" in out
    cmd = boosting_cli.boosting
    for param in cmd.params:
        if param.name != "help":
            assert param.help, f"--{param.name} has no help"
    for opt in ("--quick / --full", "--device", "--threads", "--out", "--sizes"):
        assert opt in out


@pytest.mark.parametrize(
    "args, message",
    [
        (["--datasets", "iris"], "unknown dataset 'iris'; choose from: diabetes"),
        (["--methods", "ours-exact,xgboost"], "unknown method 'xgboost'"),
        (["--losses", "hinge"], "unknown loss 'hinge'"),
        (["--sizes", "1k,ten"], "'ten' is not a number of rows"),
        (["--sizes", "5"], "must be >= 20"),
        (["--n-estimators", "0"], "0 is not in the range x>=1"),
        (["--threads", "0"], "x>=1"),
        (["--max-bins", "1000"], "2<=x<=255"),
        (["--device", "tpu"], "'tpu' is not one of 'auto', 'cpu', 'cuda'"),
        (["--datasets", "diabetes", "--losses", "log_loss"], "no case to run"),
    ],
)
def test_bad_options_give_clear_errors(tmp_path, args, message):
    res = CliRunner().invoke(main, ["bench", "boosting", *args, "--out", str(tmp_path)])
    assert res.exit_code == 2, res.output
    assert message in res.output
    assert not any(tmp_path.iterdir())  # no run folder for a command that never ran


def test_device_cuda_without_a_gpu_is_a_clear_error(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    res = CliRunner().invoke(
        main, ["bench", "boosting", "--device", "cuda", "--out", str(tmp_path)]
    )
    assert res.exit_code == 2 and "no CUDA GPU is available" in res.output


def test_no_html_and_sklearn_only_run(tmp_path):
    import torch

    res = _invoke(
        "--datasets",
        "wine",
        "--methods",
        "sklearn-gbrt,sklearn-hist",
        "--n-estimators",
        "3",
        "--device",
        "auto",
        "--no-html",
        "--out",
        str(tmp_path),
        "--name",
        "only-sklearn",
    )
    assert res.exit_code == 0, res.output
    run = RunDir(tmp_path / "only-sklearn")
    assert run.read_meta()["config"]["device"] == ("cuda" if torch.cuda.is_available() else "cpu")
    assert not (run.path / "index.html").exists()
    assert run.read_meta()["headline"] == "2 fits ran, none of them ours: no parity measured"
    assert run.read_table("parity").empty


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


@pytest.mark.gpu
@pytest.mark.skipif(not _has_cuda(), reason="needs a CUDA device")
def test_hist_mode_on_cuda(tmp_path):
    res = _invoke(
        "--datasets",
        "diabetes,breast_cancer",
        "--methods",
        "ours-hist,sklearn-hist",
        "--device",
        "cuda",
        "--n-estimators",
        "4",
        "--no-html",
        "--out",
        str(tmp_path),
        "--name",
        "gpu",
    )
    assert res.exit_code == 0, res.output
    results = RunDir(tmp_path / "gpu").read_table("results")
    ours = results[results["method"] == "ours-hist"]
    assert (ours["device"] == "cuda").all() and (ours["status"] == "ok").all()


# ------------------------------------------------------------------ benchmarks/boosting_speed.py


@pytest.mark.slow
def test_speed_benchmark_smoke(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [
            sys.executable,
            str(SPEED),
            "--sizes",
            "2000",
            "--depths",
            "3",
            "--repeats",
            "1",
            "--methods",
            "hist,hist-torch,sklearn-hist",
            "--device",
            "cpu",
            "--threads",
            "1,2",
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    df = pd.read_csv(tmp_path / "boosting_speed.csv")
    sys.path.insert(0, str(SPEED.parent))
    try:
        import boosting_speed
    finally:
        sys.path.remove(str(SPEED.parent))
    assert list(df.columns) == boosting_speed.COLUMNS
    assert list(df["method"]) == ["ours-hist"] * 2 + ["ours-hist-torch"] * 2 + ["sklearn-hist"] * 2
    assert list(df["threads"]) == [1, 2] * 3
    from residuals.boosting import _kernels

    kernels = "c" if _kernels.available() else "torch"
    assert list(df["kernels"].fillna("")) == [kernels, kernels, "torch", "torch", "", ""]
    # the same model whichever loops built it, at any thread count
    assert df["test_mse"].iloc[:4].nunique() == 1
    assert (df["status"] == "ok").all() and (df["fit_s_median"] > 0).all()
    assert (df["test_mse"] > 0.9).all() and (
        df["test_mse"] < 10
    ).all()  # friedman1's noise floor is 1
    assert (df["binned_mb"] == 2000 * 20 / 2**20).all()
    scaling = pd.read_csv(tmp_path / "boosting_speed-scaling.csv")
    assert len(scaling) == 3 and {
        "1 threads",
        "2 threads",
        "speed-up 1 threads -> 2 threads",
    } <= set(scaling)
    goals = pd.read_csv(tmp_path / "boosting_speed-goals.csv")
    hist_hgb = goals[goals["goal"].str.startswith("hist (cpu) <= 1.5x")]
    assert len(hist_hgb) == 2 and set(hist_hgb["status"]) <= {"pass", "FAIL"}
    meta = json.loads((tmp_path / "boosting_speed.json").read_text())
    assert meta["machine"]["cpu_model"] and meta["versions"]["scikit-learn"]
    assert "load_average_1_5_15" in meta and meta["config"]["repeats"] == 1 and meta["complete"]
    assert "2,000 x 20, depth 3, ours-hist[cpu], 1 thr" in out.stdout
    assert "fit seconds (median) by thread count" in out.stdout


def test_speed_benchmark_rejects_bad_options():
    out = subprocess.run(
        [sys.executable, str(SPEED), "--methods", "hist,xgboost"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2 and "unknown method 'xgboost'" in out.stderr
    out = subprocess.run(
        [sys.executable, str(SPEED), "--sizes", "1mxabc"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode != 0 and "--sizes" in out.stderr


def test_interrupted_run_keeps_its_partial_results(tmp_path, monkeypatch):
    real = B.run_case
    calls = []

    def interrupt_second(case, *args, **kwargs):
        calls.append(case)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(case, *args, **kwargs)

    monkeypatch.setattr(B.measure, "run_case", interrupt_second)
    res = CliRunner().invoke(
        main,
        [
            "bench",
            "boosting",
            "--datasets",
            "diabetes",
            "--methods",
            "sklearn-gbrt",
            "--n-estimators",
            "3",
            "--no-html",
            "--out",
            str(tmp_path),
            "--name",
            "cut",
        ],
    )
    assert res.exit_code == 130
    run = RunDir(tmp_path / "cut")
    assert run.read_meta()["status"] == "interrupted"
    results = run.read_table("results")
    assert list(results["loss"]) == ["squared_error"] and (results["status"] == "ok").all()
    assert "partial results kept" in res.output


@pytest.mark.slow
def test_hist_profile_smoke(tmp_path):
    """benchmarks/hist_profile.py: per-op and per-function tables of a tiny CPU fit."""
    script = ROOT / "benchmarks" / "hist_profile.py"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [
            sys.executable,
            str(script),
            "--rows",
            "3000",
            "--features",
            "5",
            "--depth",
            "3",
            "--trees",
            "3",
            "--device",
            "cpu",
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    ops, functions = pd.read_csv(tmp_path / "ops.csv"), pd.read_csv(tmp_path / "functions.csv")
    assert {"op", "calls", "self_cpu_ms", "self_device_ms"} <= set(ops) and len(ops) > 5
    assert functions["function"].str.contains("fit").any()
    meta = json.loads((tmp_path / "profile.json").read_text())
    assert meta["fit_s"] > 0 and meta["rows"] == 3000


@pytest.mark.parametrize(
    "loss, task",
    [
        ("squared_error", "regression"),
        ("absolute_error", "regression"),
        ("quantile", "regression"),
        ("log_loss", "binary"),
        ("exponential", "binary"),
        ("log_loss", "multiclass"),
    ],
)
def test_stage_metrics_are_the_boosters_own_training_score(loss, task):
    """The bench scores with the estimators' loss objects: its metric of the training
    rows is ``train_score_`` (``score_factor * mean L``) brought to the metric's scale."""
    from residuals.boosting import BoostingClassifier, BoostingRegressor, make_loss

    rng = np.random.default_rng(1)
    X = rng.normal(size=(200, 4))
    if task == "regression":
        y = X[:, 0] + rng.normal(size=200)
        est = BoostingRegressor(loss=loss, alpha=B.ALPHA, n_estimators=5, random_state=0)
    else:
        y = (X[:, 0] > 0).astype(int) + (task == "multiclass") * (X[:, 1] > 0.5).astype(int)
        est = BoostingClassifier(loss=loss, n_estimators=5, random_state=0)
    est.fit(X, y)
    raw = est.decision_function(X) if task != "regression" else est.predict(X)
    n_classes = None if task == "regression" else len(np.unique(y))
    own = make_loss(loss, n_classes=n_classes, alpha=B.ALPHA)
    factor = 2.0 if loss == "squared_error" else 1.0  # MSE is twice L = r^2 / 2
    expected = est.train_score_[-1] / own.score_factor * factor
    assert B.stage_metrics(y, raw, loss, task)[0] == pytest.approx(expected, rel=1e-12)
