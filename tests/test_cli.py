"""The command line's skeleton: help everywhere, and no heavy imports for --help."""

import subprocess
import sys

from click.testing import CliRunner

from residuals.cli import main


def test_help_lists_groups():
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    assert "bench" in result.output and "report" in result.output


def test_help_does_not_import_torch_or_sklearn():
    code = (
        "import sys\n"
        "from click.testing import CliRunner\n"
        "from residuals.cli import main\n"
        "r = CliRunner().invoke(main, ['--help'])\n"
        "assert r.exit_code == 0, r.output\n"
        "heavy = [m for m in ('torch', 'sklearn', 'matplotlib') if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_version():
    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0
    assert "0.1.0" in result.output
