"""A view's control chart as inline SVG: nQI per stored batch against its UCL, drawn on the server (the line-side
network reaches no chart library)."""

from __future__ import annotations

from html import escape

from polydefect.serve.store import ControlPoint

WIDTH, HEIGHT = 420, 180
LEFT, RIGHT, TOP, BOTTOM = 52, 12, 24, 28  # margins around the plot, room for the axis labels


def control_chart(view: str, points: list[ControlPoint]) -> str:
    """One view's chart: nQI per batch (oldest left, a red dot where above the limit) and the UCL as a dashed line.

    The UCL is drawn as each batch was judged: it stays flat while one bundle serves, and steps where the
    service was restarted with another bundle.
    """
    values = [p.nqi for p in points] + [p.ucl for p in points]
    low, high = min(*values, 0.0), max(values)
    pad = (high - low) * 0.08 or 1.0
    low, high = low - pad, high + pad
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def x(slot: float) -> float:  # batch i sits in the middle of slot i, i + 1
        return LEFT + plot_w * slot / len(points)

    def y(value: float) -> float:
        return TOP + plot_h * (high - value) / (high - low)

    ucl = " ".join(f"{x(i + s):.1f},{y(p.ucl):.1f}" for i, p in enumerate(points) for s in (0, 1))  # steps
    nqi = " ".join(f"{x(i + 0.5):.1f},{y(p.nqi):.1f}" for i, p in enumerate(points))
    dots = "".join(
        f'<circle cx="{x(i + 0.5):.1f}" cy="{y(p.nqi):.1f}" r="3.5" class="{"out" if p.out_of_control else "in"}">'
        f"<title>batch {p.batch_id}: nQI {p.nqi:.3g} (UCL {p.ucl:.3g})</title></circle>"
        for i, p in enumerate(points)
    )
    last = points[-1]
    parts = [
        f'<svg class="chart" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-label="control chart of view {escape(view)}" data-view="{escape(view)}">',
        f'<text x="{LEFT}" y="15" class="title">{escape(view)}</text>',
        f'<text x="{WIDTH - RIGHT}" y="15" class="legend" text-anchor="end">UCL {last.ucl:.3g}</text>',
        f'<rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" class="frame"/>',
        f'<text x="{LEFT - 6}" y="{TOP + 4}" text-anchor="end">{high:.3g}</text>',
        f'<text x="{LEFT - 6}" y="{TOP + plot_h}" text-anchor="end">{low:.3g}</text>',
        f'<text x="{LEFT}" y="{HEIGHT - 8}">batch {points[0].batch_id}</text>',
        f'<text x="{WIDTH - RIGHT}" y="{HEIGHT - 8}" text-anchor="end">batch {last.batch_id}</text>',
        f'<polyline points="{ucl}" class="ucl"/>',
        f'<polyline points="{nqi}" class="nqi"/>',
        dots,
        "</svg>",
    ]
    return "".join(parts)
