"""Compare runs of one bench on one page: overlaid curves and side-by-side tables.

``residuals report compare RUN_A RUN_B [...]`` re-renders every run from its
saved CSVs (no retraining) and writes a self-contained page:

* a table of the runs (A, B, ...): dataset, date, device, status, headline;
* what differs between them: config values, dataset, device, versions, commit;
* for each figure the runs share (same ``Figure.key``):

  - if the figure carries an :class:`~residuals.report.content.Overlay` spec,
    one redrawn figure overlays every run's curves: colours and line styles keep
    their meaning (plain/residual, train/test, from ``style``), runs are told
    apart by marker shape; rows sharing (facet, hue, style, x), e.g. seeds, are
    averaged with a +-1 std band; the plotted numbers are saved as
    ``figures/<key>.csv`` with a ``run`` column;
  - otherwise the runs' own figures are shown one under the other, at full width;

* for each table the runs share, the runs' tables side by side (and one CSV with
  a ``run`` column).

Runs of different benches cannot be compared (:class:`CompareError`); run
folders that cannot be rendered are skipped with a warning, and at least two
must remain.
"""

from __future__ import annotations

import base64
import datetime as _dt
import io
import json
import math
import os
import shlex
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from residuals.report import layout as L
from residuals.report.content import Overlay, ReportContent
from residuals.report.index import COMPARE_FILE
from residuals.runs import BrokenRun, RunDir

__all__ = ["CompareError", "compare_runs", "config_differences", "draw_overlay"]

WIDE_TABLE_COLUMNS = 5  # more columns than this and two tables no longer fit side by side
RUN_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
RUN_COLORS = (
    "#000000",
    "#CC79A7",
    "#009E73",
    "#E69F00",
    "#56B4E9",
    "#D55E00",
    "#0072B2",
    "#F0E442",
)


class CompareError(ValueError):
    """The runs given cannot be compared (different benches, fewer than two usable runs)."""


@dataclass
class _Run:
    label: str  # "A", "B", ...
    run: RunDir
    meta: dict
    content: ReportContent


def _label(i: int) -> str:
    return chr(ord("A") + i) if i < 26 else f"R{i + 1}"


def _load(paths, warn) -> list[_Run]:
    from residuals.report.html import render_content

    metas = []
    for p in paths:
        run = RunDir(p)
        try:
            metas.append((run, run.read_meta()))
        except BrokenRun as e:
            warn(f"skipping {p}: {str(e).removeprefix(f'{run.path}: ')}")
    benches = {m["bench"] for _, m in metas}
    if len(benches) > 1:
        listing = ", ".join(f"{r.path.name} is {m['bench']}" for r, m in metas)
        raise CompareError(
            f"cannot compare runs of different benches ({listing}); "
            "compare runs of one bench at a time"
        )
    loaded: list = []
    for run, meta in metas:
        try:
            content = render_content(run)
        except BrokenRun as e:
            warn(f"skipping {run.path}: {str(e).removeprefix(f'{run.path}: ')}")
            continue
        loaded.append(_Run(_label(len(loaded)), run, meta, content))
    if len(loaded) < 2:
        raise CompareError(f"need at least two readable runs to compare, got {len(loaded)}")
    return loaded


def _describe(meta: dict) -> dict:
    from residuals.report.html import device_label

    d = {f"config.{k}": v for k, v in L.flatten(meta.get("config") or {}).items()}
    d.update(
        {
            "dataset": meta.get("dataset"),
            "device": device_label(meta),
            "git commit": meta.get("git_commit"),
        }
    )
    d.update({f"version.{k}": v for k, v in (meta.get("versions") or {}).items()})
    return d


def config_differences(metas: list[dict], labels: list[str]) -> pd.DataFrame:
    """One row per setting whose value differs between the runs; one column per run."""
    described = [_describe(m) for m in metas]
    keys = list(dict.fromkeys(k for d in described for k in d))
    rows = []
    for k in keys:
        values = [d.get(k) for d in described]
        if len({json.dumps(v, sort_keys=True, default=str) for v in values}) > 1:
            rows.append({"setting": k, **{lab: v for lab, v in zip(labels, values)}})
    return pd.DataFrame(rows, columns=["setting", *labels])


# ------------------------------------------------------------------ figures
def _overlay_frame(frames: list[tuple[str, pd.DataFrame]], ov: Overlay) -> pd.DataFrame | None:
    keys = [c for c in (ov.facet, ov.hue, ov.style) if c]
    need = {ov.x, ov.y, *keys}
    if any(not need <= set(df.columns) for _, df in frames):
        return None
    data = pd.concat([df[list(need)].assign(run=label) for label, df in frames], ignore_index=True)
    agg = (
        data.groupby(["run", *keys, ov.x], sort=True)[ov.y]
        .agg(["mean", "std", "count"])
        .reset_index()
        .rename(columns={"mean": f"{ov.y}_mean", "std": f"{ov.y}_std", "count": "n"})
    )
    return agg


def draw_overlay(title: str, frames: list[tuple[str, pd.DataFrame]], ov: Overlay):
    """Overlay the runs' tidy frames per the spec; return (figure, plotted data) or None
    when a run's frame lacks the spec's columns."""
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    from residuals.report import style

    agg = _overlay_frame(frames, ov)
    if agg is None or agg.empty:
        return None
    y_mean, y_std = f"{ov.y}_mean", f"{ov.y}_std"
    facets = sorted(agg[ov.facet].unique()) if ov.facet else [None]
    ncols = min(len(facets), 3)
    nrows = math.ceil(len(facets) / ncols)
    fig, axes = plt.subplots(
        nrows, ncols, squeeze=False, sharey=True, figsize=(style.FIGSIZE[0], 3.3 * nrows + 1.0)
    )
    labels = [lab for lab, _ in frames]
    series = [c for c in (ov.hue, ov.style) if c]
    for ax, fv in zip(axes.flat, facets):
        sub = agg if fv is None else agg[agg[ov.facet] == fv]
        for i, lab in enumerate(labels):
            run_rows = sub[sub.run == lab]
            groups = run_rows.groupby(series, sort=True) if series else [((), run_rows)]
            for key, s in groups:
                key = key if isinstance(key, tuple) else (key,)
                named = dict(zip(series, key))
                color = (
                    style.color(str(named[ov.hue])) if ov.hue else RUN_COLORS[i % len(RUN_COLORS)]
                )
                ls = style.linestyle(str(named[ov.style])) if ov.style else "-"
                ax.plot(
                    s[ov.x],
                    s[y_mean],
                    color=color,
                    linestyle=ls,
                    linewidth=1.5,
                    marker=RUN_MARKERS[i % len(RUN_MARKERS)],
                    markersize=5,
                    markevery=max(1, len(s) // 8),
                    markerfacecolor="white" if i % 2 else color,
                )
                if s[y_std].notna().any():
                    ax.fill_between(
                        s[ov.x],
                        s[y_mean] - s[y_std].fillna(0),
                        s[y_mean] + s[y_std].fillna(0),
                        color=color,
                        alpha=0.12,
                        linewidth=0,
                    )
        if fv is not None:
            ax.set_title(f"{ov.facet} = {fv}")
        ax.set_xlabel(ov.xlabel or ov.x)
        if ov.logx:
            ax.set_xscale("log")
        if ov.logy:
            ax.set_yscale("log")
    for ax in axes[:, 0]:
        ax.set_ylabel(ov.ylabel or ov.y)
    for ax in list(axes.flat)[len(facets) :]:
        ax.set_visible(False)

    handles = []
    if ov.hue:
        handles += [
            Line2D([], [], color=style.color(str(v)), label=str(v))
            for v in sorted(agg[ov.hue].unique())
        ]
    if ov.style:
        handles += [
            Line2D([], [], color="#555555", linestyle=style.linestyle(str(v)), label=str(v))
            for v in sorted(agg[ov.style].unique())
        ]
    handles += [
        Line2D(
            [],
            [],
            color="#222222" if ov.hue else RUN_COLORS[i % len(RUN_COLORS)],
            marker=RUN_MARKERS[i % len(RUN_MARKERS)],
            markerfacecolor="white" if i % 2 else None,
            linestyle="-" if not ov.hue else "none",
            label=f"run {lab}",
        )
        for i, lab in enumerate(labels)
    ]
    fig.legend(
        handles=handles, loc="outside lower center", ncol=min(len(handles), 6), frameon=False
    )
    fig.suptitle(title)
    return fig, agg


def _img(fig, alt: str) -> str:
    """An <img> of the figure, embedded as a PNG data URI; closes the figure."""
    import matplotlib.pyplot as plt

    width = L.css_width(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=fig.dpi * 1.5, facecolor="white")
    plt.close(fig)
    uri = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
    return f'<img src="{uri}" alt="{L.esc(alt)}" width="{width}">'


# --------------------------------------------------------------------- page
def _runs_table(runs: list[_Run], out: Path) -> str:
    from residuals.report.html import device_label

    rows = []
    for r in runs:
        m = r.meta
        name = L.esc(r.run.path.name)
        if r.run.html_path.is_file():  # the run's own page, relative, where it has one
            name = f'<a href="{L.href(Path(os.path.relpath(r.run.html_path, out)))}">{name}</a>'
        rows.append(
            f"<tr><td><b>{r.label}</b></td><td>{name}</td>"
            f'<td>{L.esc(m.get("dataset"))}</td><td class="num">{L.esc(L.fmt_time(m.get("started_at")))}</td>'
            f'<td>{L.esc(device_label(m))}</td><td><span class="status {L.esc(m.get("status"))}">'
            f'{L.esc(m.get("status"))}</span></td><td class="num">{L.esc(L.fmt_duration(m.get("wall_s")))}</td>'
            f'<td><span class="dot {L.verdict_class(r.content.verdict)}"></span>{L.esc(r.content.headline)}</td></tr>'
        )
    head = (
        "<thead><tr><th>run</th><th>folder</th><th>dataset</th><th>started</th><th>device</th>"
        "<th>status</th><th>wall time</th><th>headline</th></tr></thead>"
    )
    return f'<div class="scroll"><table class="runs">{head}<tbody>{"".join(rows)}</tbody></table></div>'


def _unique_dir(path: Path) -> Path:
    out, k = path, 1
    while out.exists():
        k += 1
        out = path.with_name(f"{path.name}-{k}")
    return out


def compare_runs(paths, out: str | os.PathLike | None = None, *, warn=print) -> Path:
    """Write a comparison page of the runs at ``paths``; return its index.html.

    ``out`` defaults to ``<parent of the first run>/compare/<time>-<bench>/``, and
    then that parent's runs index is rewritten to list the comparison.
    """
    import matplotlib.pyplot as plt

    from residuals.report import style

    style.apply()
    runs = _load([Path(p) for p in paths], warn)
    bench = runs[0].meta["bench"]
    default_out = out is None
    if default_out:
        stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        out = _unique_dir(runs[0].run.path.parent / "compare" / f"{stamp}-{bench}")
    out = Path(out)  # type: ignore[arg-type]  # set above when it was None
    (out / "figures").mkdir(parents=True, exist_ok=True)
    (out / "tables").mkdir(parents=True, exist_ok=True)
    labels = [r.label for r in runs]

    diffs = config_differences([r.meta for r in runs], labels)
    diffs.to_csv(out / "tables" / "differences.csv", index=False)
    differ = ", ".join(diffs["setting"].head(6)) + (", ..." if len(diffs) > 6 else "")
    headline = (
        f"{len(runs)} {bench} runs compared; they differ in {differ}"
        if len(diffs)
        else f"{len(runs)} {bench} runs compared; their configs and environments are identical"
    )

    body = [
        f"<header><h1>Comparison \u00b7 {L.esc(bench)}</h1>"
        f'<p class="sub">{len(runs)} runs, re-rendered from their saved results</p></header>',
        L.verdict_box(headline, None, label="comparison"),
        '<h2 id="runs">Runs</h2>',
        _runs_table(runs, out),
        '<h2 id="differences">What differs</h2>',
    ]
    body.append(
        L.table_html(diffs.astype(object).where(diffs.notna(), None))
        if len(diffs)
        else "<p>Nothing: same config, dataset, device, versions and commit.</p>"
    )

    # figures: those every run has, in the first run's order
    fig_keys = [
        f.key
        for f in runs[0].content.figures
        if all(any(g.key == f.key for g in r.content.figures) for r in runs[1:])
    ]
    by_key = [{f.key: f for f in r.content.figures} for r in runs]
    parts = []
    for key in fig_keys:
        first = by_key[0][key]
        ov = first.overlay
        drawn = (
            draw_overlay(first.title, [(r.label, k[key].data) for r, k in zip(runs, by_key)], ov)
            if ov
            else None
        )
        if drawn is not None:
            fig, data = drawn
            data.to_csv(out / "figures" / f"{key}.csv", index=False)
            parts.append(
                f'<figure id="fig-{L.esc(key)}"><h3>{L.esc(first.title)}</h3>'
                + _img(fig, f"{first.title}, runs overlaid")
                + f"<figcaption>Runs overlaid ({', '.join(labels)}: marker shapes). "
                f'{L.esc(first.caption)} <span class="links"><a href="{L.href(f"figures/{key}.csv")}">'
                f"data (CSV)</a></span></figcaption></figure>"
            )
        else:
            pd.concat(
                [k[key].data.assign(run=r.label) for r, k in zip(runs, by_key)], ignore_index=True
            ).to_csv(out / "figures" / f"{key}.csv", index=False)
            cells = "".join(
                f"<div><b>run {r.label}</b>{_img(k[key].fig, f'{first.title}, run {r.label}')}</div>"
                for r, k in zip(runs, by_key)
            )
            # one under the other, each at full width: figures are drawn for the page's width
            parts.append(
                f'<figure id="fig-{L.esc(key)}"><h3>{L.esc(first.title)}</h3>'
                f'<div class="grid stack">{cells}</div>'
                f"<figcaption>Each run's own figure, one under the other (its panels do not "
                f"overlay into one drawing). "
                f"{L.esc(first.caption)} "
                f'<span class="links"><a href="{L.href(f"figures/{key}.csv")}">data (CSV)</a></span>'
                f"</figcaption></figure>"
            )
    for r in runs:  # close the renderers' figures that were not drawn above
        for f in r.content.figures:
            plt.close(f.fig)
    if parts:
        body.append('<h2 id="figures">Figures</h2>' + "".join(parts))

    table_keys = [
        t.key
        for t in runs[0].content.tables
        if all(any(u.key == t.key for u in r.content.tables) for r in runs[1:])
    ]
    tparts = []
    for key in table_keys:
        tables = [next(t for t in r.content.tables if t.key == key) for r in runs]
        pd.concat(
            [t.data.assign(run=r.label)[["run", *t.data.columns]] for r, t in zip(runs, tables)],
            ignore_index=True,
        ).to_csv(out / "tables" / f"{key}.csv", index=False)
        cells = "".join(
            f"<div><b>run {r.label}</b>{L.table_html(t.data)}</div>" for r, t in zip(runs, tables)
        )
        # side by side while two fit the column; wider tables one under the other
        wide = max(len(L.format_table(t.data).columns) for t in tables) > WIDE_TABLE_COLUMNS
        tparts.append(
            f'<section id="table-{L.esc(key)}"><h3>{L.esc(tables[0].title)}</h3>'
            f'<div class="grid{" stack" if wide else ""}">{cells}</div><p class="sub">{L.esc(tables[0].caption)} '
            f'<span class="links"><a href="{L.href(f"tables/{key}.csv")}">data (CSV)</a></span></p></section>'
        )
    if tparts:
        body.append('<h2 id="tables">Tables</h2>' + "".join(tparts))
    command = "residuals report compare " + " ".join(
        shlex.quote(L.display_path(r.run.path)) for r in runs
    )
    body.append(
        f'<h2 id="reproduce">Reproduce</h2><div class="reproduce"><pre id="command">{L.esc(command)}</pre></div>'
    )

    created = _dt.datetime.now().astimezone().isoformat(timespec="seconds")
    L.atomic_write(
        out / "index.html",
        L.page(
            f"Comparison \u00b7 {bench} \u2014 residuals",
            "\n".join(body),
            generator=f"Comparison written {L.fmt_time(created)}.",
        ),
    )
    from residuals.report.html import device_label

    info = {
        "bench": bench,
        "runs": [r.run.path.name for r in runs],
        "run_paths": [Path(os.path.relpath(r.run.path, out)).as_posix() for r in runs],
        "labels": labels,
        "datasets": [r.meta.get("dataset") for r in runs],
        "devices": sorted({device_label(r.meta) for r in runs}),
        "created_at": created,
        "headline": headline,
    }
    L.atomic_write(out / COMPARE_FILE, json.dumps(info, indent=2) + "\n")
    if default_out:
        from residuals.report.index import refresh_indexes

        refresh_indexes(out.parent.parent)
    return out / "index.html"
