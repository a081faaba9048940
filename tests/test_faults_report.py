"""Fault injection on the reports: diverged runs, damaged meta.json and CSV files, hostile
names, read-only folders, and the rough edges a new user hit (docs/reliability.md).

Every test here failed before its fix: it damages or names things the way the issue
found them and checks that every command still works for the other runs, and says what
is wrong with the broken one."""

from __future__ import annotations

import html
import re
import shutil
import sys
from pathlib import Path

import matplotlib
import pandas as pd
import pytest
from click.testing import CliRunner
from fault_helpers import degradation_run, set_meta_field, snapshot

from residuals.bench.degradation.report import render
from residuals.cli import main
from residuals.report.html import build_report
from residuals.report.index import scan
from residuals.runs import BrokenRun, RunDir

matplotlib.use("Agg")
REPO = Path(__file__).resolve().parents[1]


def cli(*args, **kwargs):
    return CliRunner().invoke(main, [str(a) for a in args], **kwargs)


@pytest.fixture(autouse=True)
def close_figures():
    yield
    if "matplotlib.pyplot" in sys.modules:
        sys.modules["matplotlib.pyplot"].close("all")


# ------------------------------------------------------------------ bug 1: diverged runs
def test_a_sweep_that_diverges_still_gets_its_report(tmp_path):
    """The issue's command, made certain to diverge (fp32, a huge learning rate)."""
    out = tmp_path / "reports"
    result = cli(
        "bench",
        "degradation",
        "--depths",
        "8,14",
        "--epochs",
        "1",
        "--seeds",
        "1",
        "--lr",
        "1e8",
        "--precision",
        "fp32",
        "--jobs",
        "1",
        "--out",
        out,
    )
    assert result.exit_code == 0, result.output
    assert "could not be built" not in result.output
    (run,) = [RunDir(p) for p in out.iterdir() if p.is_dir()]
    assert set(run.read_table("runs")["status"]) == {"diverged"}
    page = run.html_path.read_text()
    for key in ("error_curves", "error_vs_depth", "layer_responses", "gradient_norms"):
        assert f'id="fig-{key}"' in page, key
    assert "diverged" in page and "Left out because they diverged" in page


def test_every_figure_renders_when_all_seeds_of_a_net_diverged(tmp_path):
    run = degradation_run(
        tmp_path, "r", depths=(8, 14, 20), diverged={("plain", 14, 0), ("residual", 8, 0)}
    )
    content = render(run)
    assert [f.key for f in content.figures] == [
        "error_curves",
        "error_vs_depth",
        "layer_responses",
        "gradient_norms",
    ]
    curves = content.figures[0].fig
    labels = [t.get_text() for ax in curves.axes for t in ax.get_legend().get_texts()]
    assert "plain-14 train (diverged)" in labels and "plain-8 train" in labels
    responses = content.figures[2]
    assert set(responses.data["depth"]) == {8, 14, 20}
    assert not ((responses.data["variant"] == "plain") & (responses.data["depth"] == 14)).any()
    assert "plain-14 seed 0, resnet-8 seed 0" in responses.caption
    assert "plain-14 seed 0" in content.figures[3].caption
    page = build_report(run.path).read_text()
    assert "No results to report" not in page


def test_every_run_diverged_still_draws_every_figure(tmp_path):
    diverged = {(v, d, 0) for v in ("plain", "residual") for d in (8, 14)}
    content = render(degradation_run(tmp_path, "r", diverged=diverged))
    assert len(content.figures) == 4 and content.verdict is None
    assert content.figures[2].data.empty


# ------------------------------------------------------------------ bug 6: a bad meta.json
BAD_META = {
    "not-utf8": (b'\xff\xfe{"bench": "degradation"}', "not UTF-8"),
    "started-int": ({"started_at": 5}, "'started_at' is a number, expected a string"),
    "config-int": ({"config": 7}, "'config' is a number, expected an object"),
    "config-list": ({"config": [1, 2]}, "'config' is a list, expected an object"),
    "status-dict": ({"status": {"a": 1}}, "'status' is an object, expected a string"),
    "deep": (b"[" * 100_000 + b"]" * 100_000, "unreadable"),
    "empty": (b"", "unreadable"),
}


@pytest.fixture
def damaged_root(tmp_path):
    """Two good runs and one run folder per way of damaging meta.json."""
    root = tmp_path / "reports"
    for name in ("good-a", "good-b"):
        degradation_run(root, name)
    for name, (damage, _) in BAD_META.items():
        run = degradation_run(root, name)
        if isinstance(damage, bytes):
            run.meta_path.write_bytes(damage)
        else:
            set_meta_field(run, **damage)
    return root


def test_a_bad_meta_json_is_listed_as_broken_with_its_reason(damaged_root):
    entries = {e.path.name: e for e in scan(damaged_root)}
    for name, (_, reason) in BAD_META.items():
        assert entries[name].kind == "broken", name
        assert reason in entries[name].problems[0], (name, entries[name].problems)
    with pytest.raises(BrokenRun, match="not UTF-8"):
        RunDir(damaged_root / "not-utf8").read_meta()
    result = cli("report", "list", "--root", damaged_root)
    assert result.exit_code == 0, result.output
    assert result.output.count("BROKEN") == len(BAD_META)
    assert "good-a" in result.output and "good-b" in result.output


@pytest.mark.slow
def test_every_report_command_still_works_for_the_other_runs(damaged_root, tmp_path):
    result = cli("report", "build", "--all", "--root", damaged_root)
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), result.exception
    assert (damaged_root / "good-a" / "index.html").is_file()
    for name in BAD_META:
        assert f"skipped {damaged_root / name}" in result.output, name
    for args in (
        ["build", "good-a"],
        ["build", "--index"],
        ["compare", "good-a", "good-b"],
        ["open", "--index"],
    ):
        result = cli("report", *args, "--root", damaged_root)
        assert result.exit_code == 0, (args, result.output)
    index = (damaged_root / "index.html").read_text()
    assert "not UTF-8" in index and "good-a" in index
    resumed = cli("bench", "degradation", "--resume", damaged_root / "not-utf8")
    assert resumed.exit_code == 2 and "not UTF-8" in resumed.output
    assert not isinstance(resumed.exception, UnicodeDecodeError)


# ------------------------------------------------------------------ bug 6: bad CSV tables
BAD_CSV = {
    "empty": ("runs", b"", "runs.csv is empty"),
    "binary": ("results", bytes(range(256)) * 8, "results.csv is not a readable CSV table"),
    "no-column": ("runs", None, "runs.csv lacks the column(s) status"),
    "text-in-numbers": ("probes", None, "probes.csv column 'response_std' holds something other"),
}


@pytest.mark.slow
def test_a_damaged_table_makes_a_page_that_says_so_and_spares_the_others(tmp_path):
    root = tmp_path / "reports"
    degradation_run(root, "good-a")
    degradation_run(root, "good-b")
    for name, (table, damage, _) in BAD_CSV.items():
        run = degradation_run(root, name)
        path = run.table_path(table)
        if damage is not None:
            path.write_bytes(damage)
        elif name == "no-column":
            pd.read_csv(path).drop(columns=["status"]).to_csv(path, index=False)
        else:
            df = pd.read_csv(path)
            df["response_std"] = "oops"
            df.to_csv(path, index=False)
    result = cli("report", "build", "--all", "--root", root)
    assert result.exit_code == 1 and "Traceback" not in result.output
    for name, (_, _, reason) in BAD_CSV.items():
        assert reason in result.output, name
        assert html.escape(reason) in (root / name / "index.html").read_text()
        single = cli("report", "build", name, "--root", root)
        assert single.exit_code == 1, single.output
        assert isinstance(single.exception, SystemExit), single.exception
    compare = cli("report", "compare", "good-a", "empty", "good-b", "--root", root)
    assert (
        compare.exit_code == 0
        and "skipping" in compare.output
        and "runs.csv is empty" in compare.output
    )


# ------------------------------------------------------------------ bug 8: hostile names
@pytest.mark.slow
def test_names_never_become_links_with_a_scheme(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    root = Path("reports")
    a = degradation_run(root, "javascript:alert(3)")
    b = degradation_run(root, "b")
    (a.path / "javascript:alert(5).csv").write_text("x\n1\n")
    build_report(a.path)
    build_report(b.path)
    assert cli("report", "compare", a.path, b.path, "--out", root / "cmp").exit_code == 0
    pages = [root / "index.html", a.html_path, root / "cmp" / "index.html"]
    for page in pages:
        text = page.read_text()
        hrefs = re.findall(r'href="([^"]*)"', text)
        assert hrefs, page
        for h in hrefs:
            assert h == "data:," or h.startswith(("./", "../")), (page, h)
            assert ":" not in h.split("/")[0] or h == "data:,", (page, h)
    assert 'href="./javascript%3Aalert%283%29/index.html"' in (root / "index.html").read_text()
    assert 'href="./javascript%3Aalert%285%29.csv"' in a.html_path.read_text()


# ---------------------------------------------------------- newcomer: report list under --root
def test_report_list_suggests_commands_that_work_under_another_root(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    root = Path("elsewhere") / "runs"
    degradation_run(root, "no-page-yet")  # never built: list suggests how to build it
    listed = cli("report", "list", "--root", root)
    (suggestion,) = re.findall(r"no report yet: (residuals report build .*)", listed.output)
    args = suggestion.split()[1:]
    result = cli(*args)  # exactly what it said, without --root
    assert result.exit_code == 0, (suggestion, result.output)
    assert (root / "no-page-yet" / "index.html").is_file()


def test_report_list_columns_stay_aligned_with_long_device_names(tmp_path):
    root = tmp_path / "reports"
    degradation_run(root, "a", device="cpu")
    long_run = degradation_run(root, "b", device="cuda:0")
    set_meta_field(
        long_run, machine={"device": "cuda:0", "gpu": "NVIDIA H200 NVL 141GB HBM3e PCIe"}
    )
    lines = [
        ln for ln in cli("report", "list", "--root", root).output.splitlines() if ln[:4].isdigit()
    ]
    assert len(lines) == 2
    status_at = {ln.index("complete") for ln in lines}
    assert len(status_at) == 1, lines  # the status column starts at one place on every line


# --------------------------------------------------------- newcomer: read-only or blocked folders
@pytest.mark.parametrize("how", ["file-in-the-way", "read-only"])
def test_unwritable_folders_give_a_clean_error(tmp_path, how, read_only_dir):
    folder, make_read_only = read_only_dir
    degradation_run(folder, "a")
    degradation_run(folder, "b")
    if how == "read-only":
        make_read_only()
        out = folder
    else:
        (tmp_path / "file").write_text("not a folder")
        out = tmp_path / "file" / "reports"
    boosting = cli(
        "bench",
        "boosting",
        "--datasets",
        "diabetes",
        "--n-estimators",
        "2",
        "--methods",
        "ours-exact",
        "--out",
        out,
    )
    assert boosting.exit_code == 2 and "cannot create a run folder under" in boosting.output
    assert not isinstance(boosting.exception, OSError)
    if how == "read-only":
        for args in (
            ["build", "a"],
            ["build", "--all"],
            ["compare", "a", "b"],
            ["open", "--index"],
        ):
            result = cli("report", *args, "--root", folder)
            assert result.exit_code != 0, args
            assert not isinstance(result.exception, OSError), (args, result.exception)
            assert "cannot write" in result.output, (args, result.output)


def test_serve_shows_a_read_only_folder_as_it_is(read_only_dir, monkeypatch):
    """`report serve` cannot refresh the index of a read-only folder: it says so in one line
    and serves the folder as it is (no traceback, no exit)."""
    import residuals.report.serve as serve_module

    folder, make_read_only = read_only_dir
    degradation_run(folder, "a")
    make_read_only()
    served = []
    monkeypatch.setattr(serve_module, "serve_forever", lambda server, echo: served.append(server))
    result = cli("report", "serve", "--root", folder, "--port", "0")
    for server in served:
        server.server_close()
    assert result.exit_code == 0, result.output
    assert not isinstance(result.exception, OSError)
    assert (
        "warning: cannot write" in result.output and "serving the folder as it is" in result.output
    )
    assert len(served) == 1 and "serving" in result.output


# ------------------------------------------------------ newcomer: one epoch, few blocks
def test_one_epoch_curves_are_visible_and_block_axes_count_whole_blocks(tmp_path):
    content = render(degradation_run(tmp_path, "r", epochs=1, blocks=3))
    curves = content.figures[0].fig
    for ax in curves.axes:
        lo, hi = ax.get_xlim()
        ticks = [t for t in ax.get_xticks() if lo <= t <= hi]
        assert ticks and all(float(t).is_integer() for t in ticks), ticks
        for line in ax.get_lines():
            assert line.get_marker() not in (None, "None", ""), "a one-point line draws nothing"
    for fig in (content.figures[2].fig, content.figures[3].fig):
        for ax in fig.axes:
            lo, hi = ax.get_xlim()
            ticks = [t for t in ax.get_xticks() if lo <= t <= hi]
            assert all(float(t).is_integer() for t in ticks), ticks


# --------------------------------------------- newcomer: neutral commands, clean checkout
def test_reproduce_box_leaves_out_where_the_files_went(tmp_path):
    run = degradation_run(
        tmp_path,
        "r",
        command="residuals bench degradation --seeds 3 --data-dir /scratch/data --out /tmp/o/sweep",
    )
    page = build_report(run.path).read_text()
    (shown,) = re.findall(r'<pre id="command">(.*?)</pre>', page)
    assert shown == "residuals bench degradation --seeds 3"
    assert "/tmp/o/sweep" in page  # the recorded command stays in the run details


def test_rebuilding_everything_leaves_the_committed_examples_alone(tmp_path):
    root = tmp_path / "reports"
    shutil.copytree(REPO / "reports" / "examples", root / "examples")
    degradation_run(root, "mine")
    before = snapshot(root / "examples")
    result = cli("report", "build", "--all", "--root", root)
    assert result.exit_code == 0, result.output
    assert "--examples" in result.output
    assert snapshot(root / "examples") == before
    assert (root / "mine" / "index.html").is_file()


def test_the_committed_examples_show_neutral_commands():
    for page in (REPO / "reports" / "examples").glob("*/index.html"):
        (shown,) = re.findall(r'<pre id="command">(.*?)</pre>', page.read_text())
        assert "/tmp" not in shown and "--out" not in shown and "--data-dir" not in shown, page


def test_no_committed_example_or_result_names_a_scratch_folder():
    """Every page, table and record under reports/examples and benchmarks/results names
    its folders relative to the repository, not where a run happened to be written."""
    for top in ("reports/examples", "benchmarks/results"):
        for path in (REPO / top).rglob("*"):
            if path.suffix in (".html", ".json", ".csv", ".log", ".md", ".txt"):
                assert "/tmp/" not in path.read_text(errors="replace"), path
