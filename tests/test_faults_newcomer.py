"""What a new user reads and installs must be true: the Python version, the licence, and the
labels of the boosting bench's parity checks (docs/reliability.md)."""

from __future__ import annotations

import re
import sys
from importlib import metadata
from pathlib import Path

import pytest
from click.testing import CliRunner
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version

from residuals.bench.boosting.report import render
from residuals.cli import main
from residuals.runs import RunDir

REPO = Path(__file__).resolve().parents[1]


def pyproject() -> dict:
    import tomllib  # Python >= 3.11, the project's floor

    return tomllib.loads((REPO / "pyproject.toml").read_text())


def floor(spec: str) -> Version:
    """The lowest version a specifier set such as ">=3.11" admits."""
    lows = [Version(s.version) for s in SpecifierSet(spec) if s.operator in (">=", "==", "~=")]
    assert lows, f"{spec!r} has no lower bound"
    return max(lows)


def test_requires_python_is_what_the_dependencies_need():
    """A dependency at the lowest version we allow must install on our lowest Python.
    Checked with the installed releases that sit at those floors (scikit-learn 1.9
    needs Python 3.11: with ">=3.10" the quickstart failed to install on 3.10)."""
    project = pyproject()["project"]
    ours = floor(project["requires-python"])
    checked = []
    for dep in project["dependencies"]:
        req = Requirement(dep)
        try:
            meta = metadata.metadata(req.name)
        except metadata.PackageNotFoundError:
            continue
        installed, low = Version(meta["Version"]), floor(str(req.specifier))
        needs = meta.get("Requires-Python")
        if needs and installed.release[:2] == low.release[:2]:  # this release is the floor
            checked.append(req.name)
            assert ours >= floor(needs), (
                f"{req.name} {low} needs Python {needs}, but "
                f"requires-python is {project['requires-python']}"
            )
    assert "scikit-learn" in checked
    assert Version(".".join(map(str, sys.version_info[:2]))) >= ours


def test_readme_states_the_python_floor_of_pyproject():
    ours = floor(pyproject()["project"]["requires-python"])
    readme = (REPO / "README.md").read_text()
    claims = set(re.findall(r"Python (\d+\.\d+)\+", readme))
    assert claims == {f"{ours.major}.{ours.minor}"}, claims


def test_the_licence_pyproject_names_is_in_the_repository():
    licence = (REPO / "LICENSE").read_text()
    assert pyproject()["project"]["license"] == {"text": "MIT"}
    assert licence.startswith("MIT License") and "WITHOUT WARRANTY OF ANY KIND" in licence
    assert re.search(r"Copyright \(c\) \d{4} ", licence)


@pytest.fixture(scope="module")
def boosting_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("boosting")
    result = CliRunner().invoke(
        main,
        ["bench", "boosting", "--datasets", "diabetes", "--n-estimators", "3", "--out", str(out)],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    (run_path,) = [p for p in out.iterdir() if p.is_dir()]
    return RunDir(run_path), result.output


def test_hist_parity_is_labelled_as_not_expected_to_match(boosting_run):
    run, output = boosting_run
    hist = [ln for ln in output.splitlines() if "parity ours-hist" in ln]
    exact = [ln for ln in output.splitlines() if "parity ours-exact" in ln]
    assert hist and all("not expected to match" in ln for ln in hist), hist
    assert exact and not any("not expected" in ln for ln in exact), exact
    table = next(t for t in render(run).tables if t.key == "parity").data
    labels = table.groupby("method")["bit_for_bit"].agg(set)
    assert labels["ours-hist"] == {"not expected"} and labels["ours-exact"] == {"yes"}
    assert "False" not in set(map(str, table["bit_for_bit"]))
    assert "not expected to match HistGradientBoosting" in run.html_path.read_text()


def test_a_comparison_overlays_every_figure_of_both_benches(boosting_run, tmp_path):
    from fault_helpers import degradation_run

    from residuals.bench.degradation.report import render as render_degradation

    content = render_degradation(degradation_run(tmp_path, "r"))
    assert all(f.overlay is not None for f in content.figures), [f.key for f in content.figures]
    figures = render(boosting_run[0]).figures
    assert figures and all(f.overlay is not None for f in figures), [f.key for f in figures]
    other = tmp_path / "copy"
    import shutil

    shutil.copytree(boosting_run[0].path, other)
    page = CliRunner().invoke(
        main,
        [
            "report",
            "compare",
            str(boosting_run[0].path),
            str(other),
            "--out",
            str(tmp_path / "cmp"),
        ],
    )
    assert page.exit_code == 0, page.output
    text = (tmp_path / "cmp" / "index.html").read_text()
    assert text.count("Runs overlaid") == len(figures) and "one under the other" not in text
