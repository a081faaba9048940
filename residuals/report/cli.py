"""``residuals report build|list|open|serve|compare``.

Only click and the standard library are imported at module level; the report
modules (pandas, matplotlib) load inside each command, so ``--help`` is instant.

A RUN argument is a run folder's path, or its name (or a unique prefix/suffix
of the name) under ``--root``; ``open`` without RUN opens the newest run.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

ROOT_OPTION = click.option(
    "--root", type=click.Path(file_okay=False, path_type=Path), default=Path("reports"),
    envvar="RESIDUALS_REPORTS", show_default=True, show_envvar=True,
    help="Reports folder that holds the run folders.")


def _resolve(root: Path, name: str | None) -> Path:
    from residuals.report.index import find_run

    try:
        return find_run(root, name)
    except FileNotFoundError as e:
        raise click.ClickException(str(e)) from None


# --------------------------------------------------------------------- build
@click.command()
@click.argument("runs", nargs=-1)
@click.option("--all", "all_runs", is_flag=True, help="Rebuild every run under --root (e.g. after a template change).")
@click.option("--index", "index", is_flag=True, help="Regenerate --root/index.html, the list of all runs.")
@ROOT_OPTION
def build(runs: tuple[str, ...], all_runs: bool, index: bool, root: Path):
    """Rebuild run reports from their saved results, without retraining.

    \b
    residuals report build reports/20261123-101500-degradation-digits
    residuals report build --all        # every run under reports/
    residuals report build --index      # only reports/index.html

    Exits with status 1 if a run could not be rendered (its page then says why).
    """
    from residuals.report.html import build_report
    from residuals.report.index import refresh_indexes, scan, write_index
    from residuals.runs import BrokenRun, RunDir

    if not runs and not all_runs and not index:
        raise click.UsageError("name a RUN folder to rebuild, or use --all or --index")
    paths = [_resolve(root, r) for r in runs]
    if all_runs:
        paths += [e.path for e in scan(root) if e.kind == "run" and e.path not in paths]
    failed = 0
    parents = set()
    for path in paths:
        try:
            page = build_report(path, update_index=False)
        except BrokenRun as e:
            failed += 1
            click.echo(f"skipped {path}: {str(e).removeprefix(f'{path}: ')}", err=True)
            continue
        except Exception as e:  # a renderer bug: show it, but rebuild the other runs
            if len(paths) == 1:
                raise
            failed += 1
            click.echo(f"error in {path}: {type(e).__name__}: {e}", err=True)
            continue
        parents.add(Path(path).parent)
        problem = RunDir(path).read_meta().get("report_problem")
        if problem:
            failed += 1
            click.echo(f"wrote {page} -- but the run is incomplete: {problem}", err=True)
        else:
            click.echo(f"wrote {page}")
    written = [write_index(root)] if index or all_runs else []   # asked for: always written
    for parent in sorted(parents):
        written += refresh_indexes(parent)
    for page in dict.fromkeys(written):
        click.echo(f"wrote {page}")
    if failed:
        raise SystemExit(1)


# ---------------------------------------------------------------------- list
@click.command("list")
@ROOT_OPTION
@click.option("--json", "as_json", is_flag=True, help="One JSON object per run, for scripts.")
def list_runs(root: Path, as_json: bool):
    """List the runs under --root, newest first, broken or partial ones with their problem."""
    from residuals.report.index import scan

    entries = scan(root)
    if as_json:
        for e in entries:
            click.echo(json.dumps({
                "path": str(e.path), "kind": e.kind, "group": e.group, "bench": e.bench,
                "dataset": e.dataset, "started_at": e.started_at, "device": e.device, "status": e.status,
                "headline": e.headline, "verdict": e.verdict, "wall_s": e.wall_s, "problems": e.problems,
                "report": str(e.report) if e.report else None}))
        return
    if not entries:
        click.echo(f"no runs under {root}/ (make one with `residuals bench degradation`)")
        return
    groups: dict[str, list] = {}
    for e in entries:
        groups.setdefault(e.group, []).append(e)
    for g in sorted(groups, key=lambda g: (g != "", g)):
        if g:
            click.echo(f"\n[{g}]")
        for e in groups[g]:
            date = (e.started_at or "")[:16].replace("T", " ") or "-"
            headline = e.headline if len(e.headline) <= 70 else e.headline[:67] + "..."
            status = e.status if e.kind != "broken" else "BROKEN"
            click.echo(f"{date:16}  {e.bench or '-':12} {e.dataset or '-':14} {e.device or '-':10} "
                       f"{status:11} {headline or '-'}")
            click.echo(f"{'':18}{e.path}")
            for p in e.problems:
                click.echo(f"{'':18}! {p}")


# ---------------------------------------------------------------------- open
def _open_in_browser(path: Path) -> bool:
    """Open a file in the default browser; False where there is none."""
    import webbrowser

    try:
        browser = webbrowser.get()
    except webbrowser.Error:
        return False
    try:
        return bool(browser.open(path.resolve().as_uri()))
    except Exception:  # a registered browser that fails to start counts as none
        return False


@click.command("open")
@click.argument("run", required=False)
@click.option("--index", "index", is_flag=True, help="Open the index of all runs instead.")
@ROOT_OPTION
def open_run(run: str | None, index: bool, root: Path):
    """Open a run's report in the default browser (the newest run without RUN).

    Where no browser exists (a server, a container) the report's path is printed.
    """
    from residuals.report.html import build_report
    from residuals.report.index import write_index
    from residuals.runs import BrokenRun, RunDir

    if index:
        page = write_index(root)
    else:
        path = _resolve(root, run)
        page = RunDir(path).html_path
        if not page.is_file():
            try:
                page = build_report(path)
            except BrokenRun as e:
                raise click.ClickException(f"cannot open {path}: {str(e).removeprefix(f'{path}: ')}") from None
    if _open_in_browser(page):
        click.echo(f"opened {page}")
    else:
        click.echo(f"no browser found; open this file: {page.resolve()}")


# --------------------------------------------------------------------- serve
@click.command()
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True,
              help="Port on 127.0.0.1 (0: any free port).")
@ROOT_OPTION
def serve(port: int, root: Path):
    """Serve the reports folder on http://127.0.0.1:PORT/ until Ctrl-C.

    Binds the loopback interface only: nothing is exposed to the network.
    """
    from residuals.report.index import write_index
    from residuals.report.serve import make_server, serve_forever, url_of

    if not root.is_dir():
        raise click.ClickException(f"{root}/ does not exist yet (make a run with `residuals bench degradation`)")
    write_index(root)
    try:
        server = make_server(root, port)
    except OSError as e:
        raise click.ClickException(f"cannot listen on 127.0.0.1:{port} ({e.strerror or e}); "
                                   "try another --port, or --port 0 for any free one") from None
    click.echo(f"serving {root}/ at {url_of(server)}  (Ctrl-C to stop)")
    serve_forever(server, echo=click.echo)


# ------------------------------------------------------------------- compare
@click.command()
@click.argument("runs", nargs=-1, required=True)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder for the page [default: ROOT/compare/<time>-<bench>/].")
@click.option("--open", "open_page", is_flag=True, help="Open the page in the default browser.")
@ROOT_OPTION
def compare(runs: tuple[str, ...], out: Path | None, open_page: bool, root: Path):
    """Overlay the curves and put the tables of RUN_A RUN_B [...] side by side.

    The runs must come from the same bench (e.g. one sweep on CPU and on GPU, or
    two learning rates); they are re-rendered from their saved results.
    """
    from residuals.report.compare import CompareError, compare_runs

    if len(runs) < 2:
        raise click.UsageError("name at least two runs to compare")
    paths = [_resolve(root, r) for r in runs]
    try:
        page = compare_runs(paths, out, warn=lambda m: click.echo(f"warning: {m}", err=True))
    except CompareError as e:
        raise click.ClickException(str(e)) from None
    click.echo(f"wrote {page}")
    if open_page and not _open_in_browser(page):
        click.echo(f"no browser found; open this file: {page.resolve()}")
