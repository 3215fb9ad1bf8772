"""`/metrics` in the Prometheus text format: the stored history's counts and the mean scoring time."""

from __future__ import annotations

from polydefect.serve.store import Totals

PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"


def prometheus_text(totals: Totals) -> str:
    """Gauges over the database: they survive restarts and agree between servers sharing one database."""
    rows = [
        ("polydefect_batches", "gauge", "Batches inspected and stored.", totals.batches),
        ("polydefect_batches_out_of_control", "gauge", "Stored batches judged out of control (nQI).",
         totals.batches_out_of_control),
        ("polydefect_images", "gauge", "Images inspected and stored.", totals.images),
        ("polydefect_images_flagged", "gauge", "Stored images above their threshold.", totals.images_flagged),
        ("polydefect_scoring_seconds_mean", "gauge", "Mean seconds to score a stored batch.",
         totals.mean_scoring_seconds),
    ]  # fmt: skip
    lines = []
    for name, kind, help_text, value in rows:
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}", f"{name} {value}"]
    return "\n".join(lines) + "\n"
