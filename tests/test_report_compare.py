"""`residuals report compare`: overlaid curves, side-by-side tables, differences, clear refusals."""

import json
import re

import pandas as pd
import pytest
import report_helpers as H
from click.testing import CliRunner
from test_report_html import embedded_images, png_size

from residuals.cli import main
from residuals.report import content as content_mod
from residuals.report.compare import CompareError, compare_runs, config_differences
from residuals.report.html import build_report
from residuals.report.index import scan


@pytest.fixture(autouse=True)
def _fake_bench(monkeypatch):
    H.register(monkeypatch)


@pytest.fixture
def two_runs(tmp_path):
    root = tmp_path / "reports"
    return (
        root,
        H.make_run(root, name="lr-0.1", lr=0.1),
        H.make_run(root, name="lr-0.05", lr=0.05, device="cuda"),
    )


def test_compare_overlays_curves_and_puts_tables_side_by_side(two_runs):
    root, a, b = two_runs
    build_report(a.path)  # B has no page yet: it is named, not linked
    result = CliRunner().invoke(
        main, ["report", "compare", "lr-0.1", "lr-0.05", "--root", str(root)]
    )
    assert result.exit_code == 0, result.output
    out = [p for p in (root / "compare").iterdir()][0]
    assert result.output.strip() == f"wrote {out / 'index.html'}"
    page = (out / "index.html").read_text()

    # one overlaid figure (the fake figure has an Overlay spec), data saved with a run column
    images = embedded_images(page)
    assert len(images) == 1 and png_size(images[0])[0] >= 900
    assert "Runs overlaid" in page and "http" not in page
    data = pd.read_csv(out / "figures" / "curves.csv")
    assert set(data.run) == {"A", "B"}
    assert {"depth", "net", "split", "epoch", "error_mean", "error_std", "n"} <= set(data.columns)
    # each plotted mean is the run's own data averaged over seeds
    own = a.read_table().groupby(["depth", "net", "split", "epoch"]).error.mean()
    mine = data[data.run == "A"].set_index(["depth", "net", "split", "epoch"]).error_mean
    pd.testing.assert_series_equal(mine.sort_index(), own.sort_index(), check_names=False)

    # tables side by side and one CSV with both
    assert page.count("<b>run A</b>") == 1 and page.count("<b>run B</b>") == 1
    table = pd.read_csv(out / "tables" / "final.csv")
    assert list(table.columns[:2]) == ["run", "depth"] and set(table.run) == {"A", "B"}
    # what differs: lr and device, named in the headline too
    assert re.search(r"differ in config\.lr, device", page)
    diffs = pd.read_csv(out / "tables" / "differences.csv")
    assert {"config.lr", "device"} <= set(diffs.setting)
    # links to the runs' own pages are relative and resolve
    links = re.findall(r'href="(\.\./[^"]+)"', page)
    assert links == ["../../lr-0.1/index.html"] and (out / links[0]).resolve().is_file()
    # the comparison is listed in the runs index, in its own group
    info = json.loads((out / "compare.json").read_text())
    assert info["runs"] == ["lr-0.1", "lr-0.05"] and info["bench"] == H.BENCH
    index = (root / "index.html").read_text()
    assert "Comparisons" in index and f"compare/{out.name}/index.html" in index
    assert [e.kind for e in scan(root) if e.group == "compare"] == ["comparison"]


def test_config_differences_lists_only_what_differs():
    metas = [
        {
            "config": {"lr": 0.1, "model": {"depth": 20}},
            "dataset": "digits",
            "machine": {"device": "cpu"},
        },
        {
            "config": {"lr": 0.1, "model": {"depth": 56}},
            "dataset": "digits",
            "machine": {"device": "cuda", "gpu": "NVIDIA H100"},
        },
    ]
    d = config_differences(metas, ["A", "B"])
    assert d.to_dict("records") == [
        {"setting": "config.model.depth", "A": 20, "B": 56},
        {"setting": "device", "A": "cpu", "B": "cuda (NVIDIA H100)"},
    ]


def test_figures_without_overlay_spec_are_shown_run_by_run(two_runs, tmp_path, monkeypatch):
    root, a, b = two_runs

    render = H.render

    def render_plain(run):
        c = render(run)
        c.figures[0].overlay = None
        return c

    monkeypatch.setattr(H, "render", render_plain)
    page = compare_runs([a.path, b.path], tmp_path / "cmp", warn=pytest.fail).read_text()
    assert len(embedded_images(page)) == 2 and "Each run's own figure" in page
    data = pd.read_csv(tmp_path / "cmp" / "figures" / "curves.csv")
    assert set(data.run) == {"A", "B"} and len(data) == 2 * len(render(a).figures[0].data)
    assert not (root / "index.html").exists()  # an explicit --out leaves the runs index alone


def test_runs_of_different_benches_are_refused(two_runs, monkeypatch):
    root, a, _ = two_runs
    monkeypatch.setitem(content_mod.RENDERERS, "otherbench", f"{H.__name__}:render")
    other = H.make_run(root, name="other")
    H.set_meta(other, bench="otherbench")
    result = CliRunner().invoke(main, ["report", "compare", str(a.path), str(other.path)])
    assert result.exit_code == 1
    assert "cannot compare runs of different benches" in result.output
    assert "lr-0.1 is fakebench, other is otherbench" in result.output


def test_broken_runs_are_skipped_with_a_warning(two_runs, tmp_path):
    root, a, b = two_runs
    broken = tmp_path / "reports" / "broken"
    broken.mkdir()
    no_results = H.make_run(root, name="no-results", results=False)
    warnings = []
    page = compare_runs(
        [a.path, broken, no_results.path, b.path], tmp_path / "cmp", warn=warnings.append
    )
    assert page.is_file() and len(warnings) == 2
    assert "no meta.json" in warnings[0] and "results.csv is missing" in warnings[1]

    result = CliRunner().invoke(main, ["report", "compare", str(a.path), str(broken)])
    assert result.exit_code == 1 and "need at least two readable runs" in result.output
    assert "warning: skipping" in result.output
    with pytest.raises(CompareError):
        compare_runs([a.path, no_results.path], tmp_path / "cmp2", warn=lambda m: None)
    result = CliRunner().invoke(main, ["report", "compare", str(a.path)])
    assert result.exit_code == 2 and "at least two runs" in result.output
