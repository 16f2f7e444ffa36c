"""Formatting for the dashboard, and charts drawn as server-side SVG (no third-party JavaScript)."""

from __future__ import annotations

import datetime as dt

from django import template
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from functions.status import function_state

register = template.Library()

PALETTE = ("#2457c5", "#c62828", "#1a7f37", "#9a6700", "#6f42c1", "#0a7ea4")
WIDTH, HEIGHT, PAD_LEFT, PAD_BOTTOM = 560, 160, 52, 20


@register.simple_tag
def status_badge(function, figures=None) -> SafeString:
    """The shown state (functions.status): scaled to zero, degraded and unknown included."""
    state = function_state(function, figures)
    return format_html(
        '<span class="badge badge-{}" data-state="{}"{}>{}</span>',
        state.css,
        state.key,
        format_html(' title="{}"', state.reason) if state.reason and state.key != "failed" else "",
        state.label,
    )


@register.simple_tag
def state_of(function, figures=None):
    return function_state(function, figures)


@register.filter
def num(value, digits: int = 1) -> str:
    if not isinstance(value, int | float):
        return "—"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}"


@register.filter
def last_line(text) -> str:
    """The last non-empty line of a failure text: where tracebacks and npm put the useful part."""
    lines = [line for line in str(text or "").splitlines() if line.strip()]
    return lines[-1].strip() if lines else ""


@register.filter
def percent(value) -> str:
    return f"{value * 100:.1f}%" if isinstance(value, int | float) else "—"


@register.filter
def bytes_(value) -> str:
    if not isinstance(value, int | float):
        return "—"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(value) < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return str(value)


def _axis_value(value: float, unit: str) -> str:
    if unit == "bytes":
        return bytes_(value)
    if value >= 100:
        return f"{value:.0f}"
    return f"{value:.2g}" if value else "0"


def _scale(charts_series, start: float, end: float):
    top = max((v for s in charts_series for _, v in s.points), default=0.0) or 1.0
    span = max(end - start, 1.0)
    plot_w, plot_h = WIDTH - PAD_LEFT - 8, HEIGHT - PAD_BOTTOM - 8

    def xy(t: float, v: float) -> str:
        return f"{PAD_LEFT + (t - start) / span * plot_w:.1f},{8 + plot_h - v / top * plot_h:.1f}"

    return top, xy


def _dots(points, xy) -> SafeString:
    """A dot on each sample, so a series of one sample (a first request, a new instance) still shows."""
    return format_html_join("", '<circle r="2.5" cx="{}" cy="{}"/>', (xy(t, v).split(",") for t, v in points))


@register.simple_tag
def svg_chart(chart, start: float, end: float) -> SafeString:
    """A line chart of ``metrics.Chart`` between unix times ``start`` and ``end``, with a legend."""
    top, xy = _scale(chart.series, start, end)
    lines = format_html_join(
        "",
        '<g fill="{0}"><polyline fill="none" stroke="{0}" stroke-width="1.5" points="{1}"><title>{2}</title>'
        "</polyline>{3}</g>",
        (
            (PALETTE[i % len(PALETTE)], " ".join(xy(t, v) for t, v in s.points), s.label, _dots(s.points, xy))
            for i, s in enumerate(chart.series)
            if s.points
        ),
    )
    legend = format_html_join(
        " ",
        '<span class="legend"><i style="background:{}"></i>{}</span>',
        ((PALETTE[i % len(PALETTE)], s.label) for i, s in enumerate(chart.series) if s.points),
    )
    label_end = dt.datetime.fromtimestamp(end, dt.UTC).strftime("%H:%M")
    label_start = dt.datetime.fromtimestamp(start, dt.UTC).strftime("%H:%M")
    return format_html(
        '<figure class="chart" id="chart-{key}"><figcaption>{title}{unit}</figcaption>'
        '<svg viewBox="0 0 {w} {h}" role="img" aria-label="{title}">'
        '<line x1="{pl}" y1="8" x2="{pl}" y2="{base}" class="axis"/>'
        '<line x1="{pl}" y1="{base}" x2="{w}" y2="{base}" class="axis"/>'
        '<text x="{tx}" y="14" class="tick" text-anchor="end">{top}</text>'
        '<text x="{tx}" y="{base}" class="tick" text-anchor="end">0</text>'
        '<text x="{pl}" y="{h}" class="tick">{start}</text>'
        '<text x="{w}" y="{h}" class="tick" text-anchor="end">{end} UTC</text>{lines}</svg>'
        '<div class="legend-row">{legend}</div>{empty}</figure>',
        key=chart.key,
        title=chart.title,
        unit=f" ({chart.unit})" if chart.unit else "",
        w=WIDTH,
        h=HEIGHT,
        pl=PAD_LEFT,
        base=HEIGHT - PAD_BOTTOM,
        tx=PAD_LEFT - 4,
        top=_axis_value(top, chart.unit),
        start=label_start,
        end=label_end,
        lines=lines,
        legend=legend,
        empty=format_html('<p class="muted">No data in this window.</p>') if chart.empty else "",
    )


@register.simple_tag(takes_context=True)
def sort_header(
    context, label: str, ascending: str = "", descending: str = "", css: str = "", first: str = ""
) -> SafeString:
    """A list column's header linking to the list sorted by it (search and filters kept), ``first`` (else
    ascending) at the first click; a click on the column already sorted one way sorts it the other way."""
    current = context.get("sort", "")
    if current and current in (ascending, descending):
        direction = "ascending" if current == ascending else "descending"
        target = (descending if current == ascending else ascending) or current
    else:
        direction, target = "", first or ascending or descending
    query = context["request"].GET.copy()
    query["sort"] = target
    return format_html(
        '<th scope="col"{}{}><a href="?{}">{}</a></th>',
        format_html(' class="{}"', css) if css else "",
        format_html(' aria-sort="{}"', direction) if direction else "",
        query.urlencode(),
        label,
    )


@register.filter
def in_list(value, options: str) -> bool:
    return str(value) in options.split(",")


@register.filter
def build_css(status: str) -> str:
    return {"succeeded": "ok", "failed": "bad", "running": "busy", "queued": "muted"}.get(status, "muted")


@register.filter
def build_duration(build) -> str:
    """How long the build took, or has been running: "42 s", "3 min 05 s"."""
    if build.started_at is None:
        return ""
    end = build.finished_at or dt.datetime.now(dt.UTC)
    seconds = max(0, int((end - build.started_at).total_seconds()))
    text = f"{seconds // 60} min {seconds % 60:02d} s" if seconds >= 60 else f"{seconds} s"
    return text if build.finished_at else f"running for {text}"
