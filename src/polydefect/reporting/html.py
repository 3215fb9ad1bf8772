"""The self-contained HTML page of an inspection: summary, per-batch nQI verdicts, per-image scores and overlays."""

from __future__ import annotations

from html import escape

import pandas as pd

STYLE = """
body { font-family: sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin-bottom: 2em; }
th, td { border: 1px solid #ccc; padding: 4px 8px; text-align: left; vertical-align: middle; }
tr.anomalous td { background: #fde2e2; }
img { max-height: 160px; }
"""


def frame_html(frame: pd.DataFrame, images: str | None = None, flag: str | None = None) -> str:
    """A table; the `images` column (relative paths) becomes thumbnails, rows where `flag` is true are tinted."""
    header = "".join(f"<th>{escape(str(c))}</th>" for c in frame.columns)
    rows = []
    for record in frame.to_dict("records"):
        cells = []
        for column, value in record.items():
            if column == images and isinstance(value, str) and value:
                cells.append(
                    f'<td><a href="{escape(value)}"><img src="{escape(value)}" alt="{escape(value)}"></a></td>'
                )
            elif isinstance(value, float):
                cells.append(f"<td>{value:.4g}</td>")
            else:
                cells.append(f"<td>{escape(str(value))}</td>")
        tint = ' class="anomalous"' if flag and bool(record.get(flag)) else ""
        rows.append(f"<tr{tint}>{''.join(cells)}</tr>")
    return f"<table><tr>{header}</tr>{''.join(rows)}</table>"


def render_report(
    title: str, summary: dict[str, str], images: pd.DataFrame, batches: pd.DataFrame | None, notes: list[str]
) -> str:
    """The whole page; `images` has an `overlay` column of relative PNG paths and a boolean `anomalous`."""
    facts = "".join(f"<tr><th>{escape(k)}</th><td>{escape(v)}</td></tr>" for k, v in summary.items())
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{escape(title)}</title>"]
    parts += [f"<style>{STYLE}</style></head><body><h1>{escape(title)}</h1><table>{facts}</table>"]
    parts += [f"<p>{escape(note)}</p>" for note in notes]
    if batches is not None:
        parts += ["<h2>Batches (nQI, eq. 1.1)</h2>", frame_html(batches, flag="out_of_control")]
    parts += ["<h2>Images</h2>", frame_html(images, images="overlay", flag="anomalous"), "</body></html>"]
    return "\n".join(parts)
