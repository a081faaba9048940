"""One run's HTML page: content, self-containment, saved figure data, rebuilds, broken runs."""

import base64
import re
import shutil
import struct

import pandas as pd
import pytest
import report_helpers as H
from click.testing import CliRunner

from residuals.cli import main
from residuals.report.html import build_report
from residuals.report.layout import format_table, prose
from residuals.runs import BrokenRun


@pytest.fixture(autouse=True)
def _fake_bench(monkeypatch):
    H.register(monkeypatch)


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    return struct.unpack(">II", data[16:24])


def embedded_images(page: str) -> list[bytes]:
    return [
        base64.b64decode(m)
        for m in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    ]


def test_page_has_headline_figures_tables_command_and_details(tmp_path):
    run = H.make_run(tmp_path / "reports", name="r1", device="cpu")
    page_path = build_report(run.path)
    assert page_path == run.path / "index.html"
    page = page_path.read_text()
    meta = run.read_meta()

    # verdict on top, green: the fake data degrades
    assert re.search(r'class="verdict ok".*Degradation reproduced', page)
    assert (
        page.index('id="headline"')
        < page.index('id="figures"')
        < page.index('id="tables"')
        < page.index('id="reproduce"')
        < page.index('id="details"')
    )
    assert "Error during training" in page and "Dashed: train, solid: test." in page
    assert 'href="./figures/curves.csv"' in page and 'href="./tables/final.csv"' in page
    # the table shows mean ± std merged, from the _mean/_std column pair
    assert "error (mean \u00b1 std)" in page and "\u00b1" in page
    # reproduce box and every meta field
    assert "residuals bench fake --lr 0.1" in page and f"residuals report build {run.path}" in page
    for needle in (
        meta["git_commit"],
        meta["versions"]["torch"],
        meta["versions"]["scikit-learn"],
        meta["machine"]["platform"],
        "config",
        "model.widths",
        "16, 32",
        "wall time",
    ):
        assert needle and needle in page, needle
    start = meta["started_at"][:10]
    assert page.count(start) >= 2  # started and finished dates
    # headline, verdict and summary recorded for the index
    assert meta["headline"].startswith("Degradation reproduced") and meta["verdict"] is True
    assert meta["report_problem"] is None


def test_page_is_self_contained_and_survives_being_copied(tmp_path):
    run = H.make_run(tmp_path / "reports", name="r1")
    page = build_report(run.path).read_text()
    assert "http://" not in page and "https://" not in page
    srcs = re.findall(r'\bsrc="([^"]*)"', page)
    assert srcs and all(s.startswith("data:image/png;base64,") for s in srcs)
    assert "<script" not in page and "@import" not in page and "url(" not in page
    for href in re.findall(r'\bhref="([^"]*)"', page):
        assert href.startswith("data:") or not re.match(r"^[a-z]+:|/", href), href  # relative only
        if not href.startswith("data:"):
            assert (run.path / href).is_file(), f"dangling link {href}"
    # copied elsewhere (without its CSVs), the images are still all there
    copy = tmp_path / "elsewhere" / "copy.html"
    copy.parent.mkdir()
    shutil.copy(run.path / "index.html", copy)
    shutil.rmtree(run.path)
    images = embedded_images(copy.read_text())
    assert len(images) == 1
    w, h = png_size(images[0])
    assert w >= 900 and h > 300


def test_figure_and_table_csvs_equal_the_renderers_data(tmp_path):
    run = H.make_run(tmp_path, name="r1")
    build_report(run.path, update_index=False)
    content = H.render(run)
    for f in content.figures:
        saved = pd.read_csv(run.figures_dir / f"{f.key}.csv")
        pd.testing.assert_frame_equal(saved, f.data.reset_index(drop=True), check_dtype=False)
        w, _ = png_size((run.figures_dir / f"{f.key}.png").read_bytes())
        assert w >= 900  # readable at laptop width, sharp on high-density screens
    for t in content.tables:
        pd.testing.assert_frame_equal(
            pd.read_csv(run.path / "tables" / f"{t.key}.csv"), t.data, check_dtype=False
        )
    assert not (tmp_path / "index.html").exists()  # update_index=False leaves the parent alone


def test_rebuild_without_retraining_and_stale_figures_removed(tmp_path):
    run = H.make_run(tmp_path, name="r1")
    build_report(run.path)
    (run.figures_dir / "old_figure.png").write_bytes(b"stale")
    (run.figures_dir / "old_figure.csv").write_text("x\n1\n")
    (run.path / "index.html").unlink()
    result = CliRunner().invoke(main, ["report", "build", str(run.path)])
    assert result.exit_code == 0, result.output
    assert f"wrote {run.path / 'index.html'}" in result.output
    assert (run.path / "index.html").is_file() and (tmp_path / "index.html").is_file()
    assert sorted(p.name for p in run.figures_dir.iterdir()) == ["curves.csv", "curves.png"]


def test_running_and_failed_runs_say_so(tmp_path):
    run = H.make_run(tmp_path, name="r1", status="running")
    page = build_report(run.path).read_text()
    assert "still running, or it was killed" in page
    failed = H.make_run(tmp_path, name="r2", status="failed")
    assert 'class="notice bad"' in build_report(failed.path).read_text()


def test_run_without_results_gets_a_page_that_says_what_is_missing(tmp_path):
    run = H.make_run(tmp_path, name="r1", results=False)
    page = build_report(run.path).read_text()
    assert "No results to report: results.csv is missing" in page and 'class="verdict none"' in page
    assert "residuals bench fake" in page  # the run details and command are still there
    assert run.read_meta()["report_problem"] == "results.csv is missing"
    result = CliRunner().invoke(main, ["report", "build", str(run.path)])
    assert result.exit_code == 1
    assert "incomplete: results.csv is missing" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


@pytest.mark.parametrize("content", [None, "{not json"])
def test_build_of_a_broken_folder_is_a_clear_error(tmp_path, content):
    folder = tmp_path / "broken"
    folder.mkdir()
    if content is not None:
        (folder / "meta.json").write_text(content)
    with pytest.raises(BrokenRun):
        build_report(folder)
    result = CliRunner().invoke(main, ["report", "build", str(folder)])
    assert result.exit_code == 1 and "skipped" in result.output
    assert not isinstance(result.exception, BrokenRun)  # no traceback


def test_build_all_rebuilds_every_run_and_index_only(tmp_path):
    root = tmp_path / "reports"
    runs = [H.make_run(root, name=n) for n in ("a", "b")]
    H.corrupt(H.make_run(root, name="c").path)
    result = CliRunner().invoke(main, ["report", "build", "--all", "--root", str(root)])
    assert result.exit_code == 1, result.output  # the broken folder is named, with its reason
    assert f"skipped {root / 'c'}: meta.json is unreadable" in result.output
    assert all((r.path / "index.html").is_file() for r in runs)
    assert f"wrote {root / 'index.html'}" in result.output
    (root / "index.html").unlink()
    result = CliRunner().invoke(main, ["report", "build", "--index", "--root", str(root)])
    assert result.exit_code == 0 and (root / "index.html").is_file()
    result = CliRunner().invoke(main, ["report", "build", "--root", str(root)])
    assert result.exit_code == 2 and "name a RUN folder" in result.output


def test_run_names_resolve_under_root(tmp_path):
    root = tmp_path / "reports"
    H.make_run(root, name="20260101-000000-fakebench-toy")
    result = CliRunner().invoke(main, ["report", "build", "20260101", "--root", str(root)])
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(main, ["report", "build", "nope", "--root", str(root)])
    assert result.exit_code == 1 and "no run 'nope'" in result.output


def test_html_escapes_everything_from_data(tmp_path):
    run = H.make_run(tmp_path, name="r1")
    meta = run.read_meta()
    meta["command"] = "residuals <script>alert(1)</script>"
    run.write_meta(meta)
    page = build_report(run.path).read_text()
    assert "<script>" not in page and "&lt;script&gt;" in page


def test_format_table_merges_mean_and_std_and_prose_keeps_code():
    df = pd.DataFrame(
        {
            "depth": [20, 56],
            "err_mean": [0.123456, 0.5],
            "err_std": [0.01234, float("nan")],
            "n": [3, 1],
        }
    )
    shown = format_table(df)
    assert list(shown.columns) == ["depth", "err (mean \u00b1 std)", "n"]
    assert shown.iloc[0, 1] == "0.1235 \u00b1 0.012" and shown.iloc[1, 1] == "0.5"
    assert prose("x `a<b`\n\ny") == "<p>x <code>a&lt;b</code></p><p>y</p>"


def test_odd_meta_and_failed_run_details_are_shown_not_fatal(tmp_path):
    run = H.make_run(tmp_path, name="r1", status="failed")
    H.set_meta(
        run,
        machine="not a dict",
        versions=None,
        error="RuntimeError: CUDA out of memory",
        resume_command="residuals bench fake --resume r1",
    )
    page = build_report(run.path).read_text()
    assert "Error: <code>RuntimeError: CUDA out of memory</code>" in page
    assert "Continue it with: <code>residuals bench fake --resume r1</code>" in page
    assert "resume_command" in page  # bench-specific meta fields are listed in the run details


def test_build_all_goes_on_past_a_renderer_bug(tmp_path, monkeypatch):
    root = tmp_path / "reports"
    good, bad = H.make_run(root, name="good"), H.make_run(root, name="bad")
    render = H.render

    def buggy(run):
        if run.path.name == "bad":
            raise ZeroDivisionError("renderer bug")
        return render(run)

    monkeypatch.setattr(H, "render", buggy)
    result = CliRunner().invoke(main, ["report", "build", "--all", "--root", str(root)])
    assert result.exit_code == 1 and "error in" in result.output and "renderer bug" in result.output
    assert (good.path / "index.html").is_file() and (root / "index.html").is_file()
    single = CliRunner().invoke(main, ["report", "build", str(bad.path)])
    assert isinstance(single.exception, ZeroDivisionError)  # one run: the traceback, for its author


def test_run_of_an_unknown_bench_gets_a_page_not_a_traceback(tmp_path, monkeypatch):
    run = H.make_run(tmp_path, name="r1")
    H.set_meta(run, bench="nosuchbench")
    page = build_report(run.path).read_text()
    assert "cannot render: no report renderer for bench &#x27;nosuchbench&#x27;" in page
    monkeypatch.setattr("webbrowser.get", lambda *a: pytest.fail("no browser here"))
    monkeypatch.setattr("residuals.report.cli._open_in_browser", lambda p: False)
    (run.path / "index.html").unlink()
    result = CliRunner().invoke(main, ["report", "open", "r1", "--root", str(tmp_path)])
    assert result.exit_code == 0 and "open this file" in result.output


def test_rebuild_command_is_the_short_name_under_the_default_root(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run = H.make_run("reports", name="r1")
    assert "<pre>residuals report build r1</pre>" in build_report(run.path).read_text()
    result = CliRunner().invoke(main, ["report", "build", "r1"])  # and that command works
    assert result.exit_code == 0, result.output
