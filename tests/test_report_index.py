"""The runs index and `residuals report list|open|serve`: ordering, broken folders, loopback only."""

import json
import os
import signal
import subprocess
import sys
import threading
import urllib.request

import pytest
import report_helpers as H
from click.testing import CliRunner

from residuals.cli import main
from residuals.report import cli as report_cli
from residuals.report.html import build_report
from residuals.report.index import find_run, scan, write_index
from residuals.report.serve import make_server, url_of


@pytest.fixture(autouse=True)
def _fake_bench(monkeypatch):
    H.register(monkeypatch)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """A reports folder with three good runs (out of time order), the four kinds of broken
    or partial folder, and two committed examples."""
    root = tmp_path_factory.mktemp("index") / "reports"
    with pytest.MonkeyPatch.context() as mp:
        H.register(mp)
        _fill(root)
    return root


def _fill(root):
    for name, started in [
        ("mid", "2026-03-01T10:00:00+00:00"),
        ("new", "2026-05-01T10:00:00+00:00"),
        ("old", "2026-01-01T10:00:00+00:00"),
    ]:
        build_report(H.make_run(root, name=name, started_at=started).path)
    (root / "no-meta").mkdir()
    (root / "compare").mkdir()  # an empty group is not a broken run
    H.corrupt(H.make_run(root, name="corrupt-meta", started_at="2026-02-01T10:00:00+00:00").path)
    H.make_run(root, name="no-results", results=False, started_at="2026-02-02T10:00:00+00:00")
    H.make_run(root, name="killed", status="running", started_at="2026-02-03T10:00:00+00:00")
    H.set_meta(
        H.make_run(root, name="odd-meta", started_at="2025-12-01T10:00:00+00:00"),
        machine=["not", "a", "dict"],
        status=None,
    )
    for name in ("ex-a", "ex-b"):
        H.make_run(root / "examples", name=name, started_at="2025-06-01T10:00:00+00:00")


def test_index_lists_runs_newest_first_and_broken_ones_with_their_problem(root):
    entries = {e.path.name: e for e in scan(root)}
    good = [e.path.name for e in scan(root) if e.ok and e.group == ""]
    assert good == ["new", "mid", "old"]
    assert entries["no-meta"].kind == "broken" and "no meta.json" in entries["no-meta"].problems[0]
    assert (
        entries["corrupt-meta"].kind == "broken"
        and "unreadable" in entries["corrupt-meta"].problems[0]
    )
    assert "results.csv is missing" in entries["no-results"].problems
    assert entries["killed"].status == "running"
    assert entries["odd-meta"].kind == "run" and entries["odd-meta"].device == "cpu"
    assert any("killed before it finished" in p for p in entries["killed"].problems)
    assert {entries["ex-a"].group, entries["ex-b"].group} == {"examples"}

    page = write_index(root).read_text()
    assert page.index(">new<") < page.index(">mid<") < page.index(">old<")
    assert 'href="./new/index.html"' in page and "http" not in page
    for problem in (
        "no meta.json",
        "meta.json is unreadable",
        "results.csv is missing",
        "killed before it finished",
    ):
        assert problem in page
    assert page.index('id="group-runs"') < page.index('id="group-examples"')
    assert "Examples (committed with the repository)" in page
    for field in (
        "fakebench",
        "toy",
        "2026-05-01 10:00",
        "cpu",
        "complete",
        "Degradation reproduced",
    ):
        assert field in page


def test_build_report_regenerates_the_parent_index(tmp_path):
    root = tmp_path / "reports"
    a = H.make_run(root, name="a")
    build_report(a.path)
    b = H.make_run(root, name="b")
    build_report(b.path)
    page = (root / "index.html").read_text()
    assert 'href="./a/index.html"' in page and 'href="./b/index.html"' in page


def test_list_prints_every_run_and_never_crashes_on_broken_ones(root):
    result = CliRunner().invoke(main, ["report", "list", "--root", str(root)])
    assert result.exit_code == 0, result.output
    out = result.output
    assert (
        out.index(f"{root / 'new'}\n")
        < out.index(f"{root / 'mid'}\n")
        < out.index(f"{root / 'old'}\n")
    )
    assert "BROKEN" in out and "results.csv is missing" in out and "[examples]" in out
    assert out.index("[examples]") > out.index(str(root / "old"))

    result = CliRunner().invoke(main, ["report", "list", "--json", "--root", str(root)])
    rows = [json.loads(line) for line in result.output.splitlines()]
    good = [r for r in rows if not r["problems"]]
    assert len(rows) == 10 and good[0]["path"].endswith("new") and good[0]["verdict"] is True

    empty = CliRunner().invoke(main, ["report", "list", "--root", str(root / "nothing")])
    assert empty.exit_code == 0 and "no runs under" in empty.output


def test_list_root_from_environment(root):
    result = CliRunner().invoke(main, ["report", "list"], env={"RESIDUALS_REPORTS": str(root)})
    assert result.exit_code == 0 and "new" in result.output


def test_open_uses_the_default_browser(root, monkeypatch):
    opened = []

    class Browser:
        def open(self, url):
            opened.append(url)
            return True

    monkeypatch.setattr("webbrowser.get", lambda *a: Browser())
    result = CliRunner().invoke(main, ["report", "open", "--root", str(root)])
    assert result.exit_code == 0, result.output
    assert opened == [(root / "new" / "index.html").resolve().as_uri()]

    # a run without a report is built first
    result = CliRunner().invoke(main, ["report", "open", "no-results", "--root", str(root)])
    assert result.exit_code == 0 and opened[-1].endswith("no-results/index.html")
    result = CliRunner().invoke(main, ["report", "open", "--index", "--root", str(root)])
    assert result.exit_code == 0 and opened[-1] == (root / "index.html").resolve().as_uri()


def test_open_without_a_browser_prints_the_path(root, monkeypatch):
    import webbrowser

    def no_browser(*a):
        raise webbrowser.Error("could not locate runnable browser")

    monkeypatch.setattr("webbrowser.get", no_browser)
    result = CliRunner().invoke(main, ["report", "open", "mid", "--root", str(root)])
    assert result.exit_code == 0
    assert f"open this file: {(root / 'mid' / 'index.html').resolve()}" in result.output
    assert report_cli._open_in_browser(root / "index.html") is False


def test_open_of_a_broken_or_unknown_run_is_a_clear_error(root, monkeypatch):
    monkeypatch.setattr("webbrowser.get", lambda *a: pytest.fail("must not open"))
    result = CliRunner().invoke(main, ["report", "open", "no-meta", "--root", str(root)])
    assert (
        result.exit_code == 1 and "cannot open" in result.output and "no meta.json" in result.output
    )
    result = CliRunner().invoke(main, ["report", "open", "nope", "--root", str(root)])
    assert result.exit_code == 1 and "no run 'nope'" in result.output
    with pytest.raises(FileNotFoundError, match="no runs under"):
        find_run(root / "empty")


def test_server_binds_loopback_and_serves_the_reports(root):
    server = make_server(root, 0)
    assert server.server_address[0] == "127.0.0.1"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with urllib.request.urlopen(url_of(server) + "new/index.html", timeout=10) as r:
            assert r.status == 200 and b"Degradation reproduced" in r.read()
        with urllib.request.urlopen(url_of(server) + "new/figures/curves.csv", timeout=10) as r:
            assert r.read().startswith(b"depth,net,split,epoch,error")
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
    assert not thread.is_alive()


def test_serve_command_prints_address_and_stops_cleanly_on_ctrl_c(root):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "residuals.cli",
            "report",
            "serve",
            "--port",
            "0",
            "--root",
            str(root),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        line = proc.stdout.readline()
        assert "at http://127.0.0.1:" in line, line + proc.stderr.read()
        url = line.split(" at ")[1].split()[0]
        with urllib.request.urlopen(url, timeout=10) as r:  # the regenerated index
            assert b"new/index.html" in r.read()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert "stopped" in out and "Traceback" not in err


def test_serve_refuses_a_missing_root_and_a_busy_port(tmp_path):
    result = CliRunner().invoke(main, ["report", "serve", "--root", str(tmp_path / "none")])
    assert result.exit_code == 1 and "does not exist" in result.output
    busy = make_server(tmp_path, 0)
    try:
        port = busy.server_address[1]
        result = CliRunner().invoke(
            main, ["report", "serve", "--port", str(port), "--root", str(tmp_path)]
        )
        assert result.exit_code == 1 and f"cannot listen on 127.0.0.1:{port}" in result.output
    finally:
        busy.server_close()


def test_report_help_is_instant_no_heavy_imports():
    code = (
        "import sys\nfrom click.testing import CliRunner\nfrom residuals.cli import main\n"
        "for cmd in ('build', 'list', 'open', 'serve', 'compare'):\n"
        "    r = CliRunner().invoke(main, ['report', cmd, '--help'])\n"
        "    assert r.exit_code == 0 and 'Usage' in r.output, r.output\n"
        "print(','.join(m for m in ('torch', 'sklearn', 'matplotlib') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_concurrent_index_writes_never_collide(root):
    errors = []

    def rewrite():
        try:
            for _ in range(5):
                write_index(root)
        except Exception as e:  # noqa: BLE001 - any error fails the test below
            errors.append(e)

    threads = [threading.Thread(target=rewrite) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert (root / "index.html").read_text().rstrip().endswith("</html>")
    assert not list(root.glob(".*.tmp"))


def test_an_example_run_refreshes_both_indexes_and_foreign_pages_are_left_alone(tmp_path):
    root = tmp_path / "reports"
    build_report(H.make_run(root, name="mine").path)
    example = H.make_run(root / "examples", name="ex")
    build_report(example.path)
    assert 'href="./ex/index.html"' in (root / "examples" / "index.html").read_text()
    assert (
        'href="./examples/ex/index.html"' in (root / "index.html").read_text()
    )  # grouped, refreshed

    site = tmp_path / "site"
    site.mkdir()
    (site / "index.html").write_text("<html>my own page</html>")
    build_report(H.make_run(site, name="r").path)
    assert (site / "index.html").read_text() == "<html>my own page</html>"
