"""``residuals report build|list|open|serve|compare``.

Only click and the standard library are imported at module level; the report
modules (pandas, matplotlib) load inside each command, so ``--help`` is instant.

A RUN argument is a run folder's path, or its name (or a unique prefix/suffix
of the name) under ``--root``; ``open`` without RUN opens the newest run.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import click

from residuals.cli_options import reports_root_option
from residuals.cli_support import write_error

ROOT_OPTION = reports_root_option()  # the benches' --out: $RESIDUALS_REPORTS, else reports


@contextlib.contextmanager
def writing(hint: str = ""):
    """Turn an OSError (a read-only or full folder) into a clean error message."""
    try:
        yield
    except OSError as e:
        raise click.ClickException(write_error(e, hint)) from None


def _resolve(root: Path, name: str | None) -> Path:
    from residuals.report.index import find_run

    try:
        return find_run(root, name)
    except FileNotFoundError as e:
        raise click.ClickException(str(e)) from None


# --------------------------------------------------------------------- build
@click.command()
@click.argument("runs", nargs=-1)
@click.option(
    "--all",
    "all_runs",
    is_flag=True,
    help="Rebuild every run under --root (e.g. after a template change).",
)
@click.option(
    "--index", "index", is_flag=True, help="Regenerate --root/index.html, the list of all runs."
)
@click.option(
    "--examples",
    "examples",
    is_flag=True,
    help="With --all: rebuild the committed examples (the examples/ group) too; without "
    "it --all leaves them as they are, so a checkout stays clean.",
)
@ROOT_OPTION
def build(runs: tuple[str, ...], all_runs: bool, index: bool, examples: bool, root: Path):
    """Rebuild run reports from their saved results, without retraining.

    \b
    residuals report build reports/20261123-101500-degradation-digits
    residuals report build --all        # every run under reports/, but not examples/
    residuals report build --all --examples   # the committed examples too
    residuals report build --index      # only reports/index.html

    Exits with status 1 if a run could not be rendered (its page then says why).
    """
    from residuals.report.html import build_report
    from residuals.report.index import EXAMPLES_GROUP, refresh_indexes, scan, write_index
    from residuals.runs import BrokenRun, RunDir

    if not runs and not all_runs and not index:
        raise click.UsageError("name a RUN folder to rebuild, or use --all or --index")
    paths = [_resolve(root, r) for r in runs]
    if examples and not all_runs:
        raise click.UsageError(
            "--examples goes with --all (name an example's folder to rebuild it alone)"
        )
    if all_runs:
        # broken folders too: each is then "skipped" with its reason, and the exit status is 1
        found = [e for e in scan(root) if e.kind != "comparison" and e.path not in paths]
        kept = [e for e in found if e.group == EXAMPLES_GROUP and not examples]
        paths += [e.path for e in found if e not in kept]
        if kept:
            click.echo(
                f"left {len(kept)} committed example(s) under {root / EXAMPLES_GROUP} as they "
                f"are (add --examples to rebuild them)",
                err=True,
            )
    failed = 0
    parents = set()
    for path in paths:
        try:
            page = build_report(path, update_index=False)
        except BrokenRun as e:
            failed += 1
            click.echo(f"skipped {path}: {str(e).removeprefix(f'{path}: ')}", err=True)
            continue
        except OSError as e:  # a read-only or full folder
            failed += 1
            click.echo(f"skipped {path}: {write_error(e)}", err=True)
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
    with writing("the runs index was not rewritten"):
        written = [write_index(root)] if index or all_runs else []  # asked for: always written
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
            click.echo(
                json.dumps(
                    {
                        "path": str(e.path),
                        "kind": e.kind,
                        "group": e.group,
                        "bench": e.bench,
                        "dataset": e.dataset,
                        "started_at": e.started_at,
                        "device": e.device,
                        "status": e.status,
                        "headline": e.headline,
                        "verdict": e.verdict,
                        "wall_s": e.wall_s,
                        "problems": e.problems,
                        "report": str(e.report) if e.report else None,
                    }
                )
            )
        return
    if not entries:
        click.echo(f"no runs under {root}/ (make one with `residuals bench degradation`)")
        return
    groups: dict[str, list] = {}
    for e in entries:
        groups.setdefault(e.group, []).append(e)
    for line in _listing(groups):
        click.echo(line)


LIST_COLUMNS = (("bench", 14), ("dataset", 16), ("device", 24), ("status", 11))  # name, widest


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


def _listing(groups: dict[str, list]) -> list[str]:
    """`report list` as aligned text: every column as wide as its longest value (up to a
    limit, then cut with "..."), the headline in what is left of the terminal's width."""
    import shutil

    entries = [e for g in groups.values() for e in g]

    def cells(e) -> list[str]:
        return [
            e.bench or "-",
            e.dataset or "-",
            e.device or "-",
            e.status if e.kind != "broken" else "BROKEN",
        ]

    widths = [
        min(limit, max([len(name)] + [len(cells(e)[i]) for e in entries]))
        for i, (name, limit) in enumerate(LIST_COLUMNS)
    ]
    used = 18 + sum(w + 1 for w in widths)
    room = max(30, shutil.get_terminal_size((120, 24)).columns - used)
    lines = []
    for g in sorted(groups, key=lambda g: (g != "", g)):
        if g:
            lines.append(f"\n[{g}]")
        for e in groups[g]:
            date = (e.started_at or "")[:16].replace("T", " ") or "-"
            row = " ".join(f"{_clip(c, w):{w}}" for c, w in zip(cells(e), widths))
            lines.append(f"{date:16}  {row} {_clip(e.headline, room) or '-'}")
            lines.append(f"{'':18}{e.path}")
            lines.extend(f"{'':18}! {p}" for p in e.problems)
    return lines


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
        with writing():
            page = write_index(root)
    else:
        path = _resolve(root, run)
        page = RunDir(path).html_path
        if not page.is_file():
            try:
                with writing():
                    page = build_report(path)
            except BrokenRun as e:
                raise click.ClickException(
                    f"cannot open {path}: {str(e).removeprefix(f'{path}: ')}"
                ) from None
    if _open_in_browser(page):
        click.echo(f"opened {page}")
    else:
        click.echo(f"no browser found; open this file: {page.resolve()}")


# --------------------------------------------------------------------- serve
@click.command()
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=8000,
    show_default=True,
    help="Port on 127.0.0.1 (0: any free port).",
)
@ROOT_OPTION
def serve(port: int, root: Path):
    """Serve the reports folder on http://127.0.0.1:PORT/ until Ctrl-C.

    Binds the loopback interface only: nothing is exposed to the network.
    """
    from residuals.report.index import write_index
    from residuals.report.serve import make_server, serve_forever, url_of

    if not root.is_dir():
        raise click.ClickException(
            f"{root}/ does not exist yet (make a run with `residuals bench degradation`)"
        )
    try:
        write_index(root)
    except OSError as e:  # a read-only folder can still be served as it is
        click.echo(f"warning: {write_error(e, 'serving the folder as it is')}", err=True)
    try:
        server = make_server(root, port)
    except OSError as e:
        raise click.ClickException(
            f"cannot listen on 127.0.0.1:{port} ({e.strerror or e}); "
            "try another --port, or --port 0 for any free one"
        ) from None
    click.echo(f"serving {root}/ at {url_of(server)}  (Ctrl-C to stop)")
    serve_forever(server, echo=click.echo)


# ------------------------------------------------------------------- compare
@click.command()
@click.argument("runs", nargs=-1, required=True)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Folder for the page [default: ROOT/compare/<time>-<bench>/].",
)
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
        with writing("choose a writable folder with --out"):
            page = compare_runs(paths, out, warn=lambda m: click.echo(f"warning: {m}", err=True))
    except CompareError as e:
        raise click.ClickException(str(e)) from None
    click.echo(f"wrote {page}")
    if open_page and not _open_in_browser(page):
        click.echo(f"no browser found; open this file: {page.resolve()}")
