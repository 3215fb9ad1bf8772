"""The operator page: plain HTML and CSS, every stored text escaped, nothing fetched from elsewhere."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from html import escape

from polydefect.serve.charts import control_chart
from polydefect.serve.store import BatchRow, BatchSummary, ControlPoint

STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em 2em; color: #1d2430; background: #f6f7f9; }
h1 { font-size: 1.5em; margin: 0 0 0.2em; } h2 { font-size: 1.15em; margin: 1.4em 0 0.5em; }
a { color: #1f5fbf; } .muted { color: #5d6675; }
table { border-collapse: collapse; background: #fff; }
th, td { border: 1px solid #d5d9e0; padding: 5px 10px; text-align: left; vertical-align: middle; }
th { background: #eceff3; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.flagged td { background: #fde8e8; }
.verdict { font-weight: 600; padding: 2px 8px; border-radius: 4px; white-space: nowrap; }
.verdict.out { background: #c62828; color: #fff; } .verdict.in { background: #2e7d32; color: #fff; }
.verdict.none { background: #cfd5dd; color: #1d2430; }
.charts { display: flex; flex-wrap: wrap; gap: 12px; }
.chart { background: #fff; border: 1px solid #d5d9e0; font-size: 11px; fill: #1d2430; }
.chart .title { font-weight: 600; font-size: 13px; } .chart .legend { fill: #c62828; }
.chart .frame { fill: none; stroke: #d5d9e0; }
.chart .ucl { fill: none; stroke: #c62828; stroke-width: 1.5; stroke-dasharray: 6 4; }
.chart .nqi { fill: none; stroke: #1f5fbf; stroke-width: 1.5; }
.chart circle.in { fill: #1f5fbf; } .chart circle.out { fill: #c62828; }
img.overlay { height: 128px; image-rendering: pixelated; display: block; }
"""


def verdict(out_of_control: bool | None) -> str:
    """The batch's SPC verdict as a coloured label; none where nQI was not computed (the batch page says why:
    a bundle without control limits, or a view uploaded twice)."""
    if out_of_control is None:
        return '<span class="verdict none">no nQI</span>'
    if out_of_control:
        return '<span class="verdict out">OUT OF CONTROL</span>'
    return '<span class="verdict in">in control</span>'


def when(received: datetime) -> str:
    return f"{received:%Y-%m-%d %H:%M:%S} UTC"


def number(value: float | None) -> str:
    return "" if value is None else f"{value:.4g}"


def document(title: str, body: list[str], refresh_s: int = 0) -> str:
    """A whole page; `refresh_s` > 0 reloads it that often (a screen at the line follows new batches)."""
    refresh = f'<meta http-equiv="refresh" content="{refresh_s}">' if refresh_s > 0 else ""
    head = f"<!doctype html><html lang='en'><head><meta charset='utf-8'>{refresh}<title>{escape(title)}</title>"
    return "\n".join([f"{head}<style>{STYLE}</style></head><body>", *body, "</body></html>"])


def charts_html(points: list[ControlPoint]) -> str:
    """One control chart per view, in the order the views first appear."""
    by_view: dict[str, list[ControlPoint]] = defaultdict(list)
    for point in points:
        by_view[point.view].append(point)
    if not by_view:
        return "<p class='muted'>No batch with nQI stored yet (a bundle without control limits gives none).</p>"
    return f"<div class='charts'>{''.join(control_chart(v, p) for v, p in by_view.items())}</div>"


def batch_list_page(
    run_id: str, summaries: list[BatchSummary], total: int, points: list[ControlPoint], refresh_s: int
) -> str:
    """`/`: the control charts over the stored batches, then the batches, newest first."""
    rows = "".join(
        f"<tr{' class=flagged' if s.out_of_control else ''}>"
        f"<td><a href='/batches/{s.id}'>{s.id}</a></td><td>{escape(s.label)}</td><td>{when(s.received)}</td>"
        f"<td class='num'>{s.images}</td><td class='num'>{s.flagged}</td>"
        f"<td class='num'>{'' if s.views_out is None else s.views_out}</td><td>{verdict(s.out_of_control)}</td></tr>"
        for s in summaries
    )
    table = (
        "<table id='batches'><tr><th>batch</th><th>label</th><th>received</th><th>images</th><th>flagged</th>"
        f"<th>views out</th><th>verdict</th></tr>{rows}</table>"
        if summaries
        else "<p class='muted'>No batch inspected yet.</p>"
    )
    shown = f"the newest {len(summaries)} of {total}" if total > len(summaries) else f"{total}"
    body = [
        "<h1>polydefect line inspection</h1>",
        f"<p class='muted'>Bundle of run {escape(run_id)}. Control limits are fixed from its good training "
        "batches; the charts follow the production batches stored here.</p>",
        f"<h2>Control charts: nQI per batch and view (dashed: UCL, last {len({p.batch_id for p in points})} "
        "batches)</h2>",
        charts_html(points),
        f"<h2>Batches ({shown})</h2>",
        table,
    ]
    return document("polydefect line inspection", body, refresh_s)


def batch_page(batch: BatchRow) -> str:
    """`/batches/{id}`: the batch's verdict, then its images with their overlays, highest score first."""
    images = sorted(batch.images, key=lambda image: image.score, reverse=True)
    rows = "".join(
        f"<tr{' class=flagged' if image.anomalous else ''}>"
        f"<td><a href='/overlays/{image.id}.png'><img class='overlay' src='/overlays/{image.id}.png' "
        f"alt='overlay of {escape(image.name)}'></a></td>"
        f"<td>{escape(image.name)}</td><td>{escape(image.view)}</td>"
        f"<td class='num'>{number(image.score)}</td><td class='num'>{number(image.threshold)}</td>"
        f"<td>{'ANOMALOUS' if image.anomalous else 'good'}</td>"
        f"<td class='num'>{number(image.nqi)}</td><td class='num'>{number(image.ucl)}</td>"
        f"<td>{'' if image.out_of_control is None else 'above UCL' if image.out_of_control else 'within'}</td></tr>"
        for image in images
    )
    flagged = sum(image.anomalous for image in images)
    views_out = "" if batch.views_out is None else f", {batch.views_out} view(s) above their UCL"
    title = f"Batch {batch.id}" + (f": {batch.label}" if batch.label else "")
    body = [
        "<p><a href='/'>&larr; all batches</a></p>",
        f"<h1>{escape(title)} {verdict(batch.out_of_control)}</h1>",
        f"<p>Received {when(batch.received)}; {flagged} of {len(images)} images flagged{views_out}; "
        f"scored in {batch.scoring_seconds:.2f} s by the bundle of run {escape(batch.run_id)}.</p>",
        f"<p class='muted'>{escape(batch.note)}</p>",
        "<h2>Images, highest score first (left: as scored; right: anomaly map)</h2>",
        "<table id='images'><tr><th>overlay</th><th>file</th><th>view</th><th>score</th><th>threshold</th>"
        f"<th>verdict</th><th>nQI</th><th>UCL</th><th>nQI vs UCL</th></tr>{rows}</table>",
    ]
    return document(title, body)
