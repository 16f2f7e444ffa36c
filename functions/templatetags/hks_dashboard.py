"""Formatting for the dashboard, and charts drawn as server-side SVG (no third-party JavaScript)."""

from __future__ import annotations

import datetime as dt
import math

from django import template
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from functions.status import function_state

register = template.Library()

# Fixed colours per series, the same on every chart (CSS variables, so the dark theme has its own):
# 2xx green, 3xx blue, 4xx orange, 5xx red; quantiles from light to dark.
SERIES_COLOURS = {
    "2xx": "var(--c2xx)",
    "3xx": "var(--c3xx)",
    "4xx": "var(--c4xx)",
    "5xx": "var(--c5xx)",
    "1xx": "var(--muted)",
    "p50": "#4f8fd6",
    "p95": "#c77700",
    "p99": "#b3261e",
}
PALETTE = ("#2f6fd6", "#c62828", "#1a7f37", "#9a6700", "#6f42c1", "#0a7ea4")
WIDTH, HEIGHT, PAD_LEFT, PAD_BOTTOM, PAD_TOP, PAD_RIGHT = 600, 220, 96, 56, 10, 14
Y_TICKS = 4


@register.simple_tag
def status_badge(function, figures=None) -> SafeString:
    """The shown state (functions.status): scaled to zero, degraded and unknown included."""
    return badge(function_state(function, figures))


@register.simple_tag
def badge(state) -> SafeString:
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


def human(value: float, unit: str) -> str:
    """A value in the unit people read: 100 ms (not 1e+02), 1.5 s, 12 %, 3.2 MiB, 0.25 cores, 1.2k."""
    if unit == "bytes":
        return bytes_(value)
    if unit == "ms":
        if value >= 1000:
            return f"{value / 1000:.3g} s"
        if 0 < value < 1:
            return f"{_plain(value)} ms"
        return f"{value:.3g} ms" if value < 100 else f"{value:.0f} ms"
    if unit == "%":
        return f"{value:.0f} %" if value >= 10 or value == 0 else f"{_plain(value)} %"
    if unit == "cores" and 0 < abs(value) < 1:
        return f"{_plain(value * 1000)}m"  # millicores, as Kubernetes (and the Settings tab) write them
    # counts and cores: the chart's caption names the unit
    if value >= 10_000:
        return f"{value / 1000:.0f}k"
    if value >= 1000:
        return f"{value / 1000:.1f}k"
    if value == int(value):
        return f"{value:.0f}"
    return _plain(value)


def _plain(value: float) -> str:
    """Two significant digits, never an exponent: 0.0075, not 7.5e-03."""
    if value == int(value):
        return f"{value:.0f}"
    text = f"{value:.{max(0, 1 - math.floor(math.log10(abs(value))))}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def nice_top(value: float) -> float:
    """The smallest 1, 2, 2.5 or 5 × 10^n at or above ``value``: round gridlines."""
    if value <= 0:
        return 1.0
    magnitude = 10 ** math.floor(math.log10(value))
    for factor in (1, 2, 2.5, 5, 10):
        if value <= factor * magnitude * (1 + 1e-9):
            return factor * magnitude
    return 10 * magnitude


def _time_label(t: float, span: float, last: bool = False) -> tuple[str, str]:
    """A time axis label in two short lines, so that neighbours never overlap: the date over the time
    for a day or more (the date alone past three days), the time alone otherwise; "UTC" on the last."""
    moment = dt.datetime.fromtimestamp(t, dt.UTC)
    if span > 20 * 3600:  # a day or more: dates on the axis
        if span > 3 * 86400:
            return moment.strftime("%b %d"), "UTC" if last else ""
        return moment.strftime("%b %d"), moment.strftime("%H:%M") + (" UTC" if last else "")
    return moment.strftime("%H:%M" if span >= 600 else "%H:%M:%S"), "UTC" if last else ""


def _colour(label: str, i: int) -> str:
    return SERIES_COLOURS.get(label, PALETTE[i % len(PALETTE)])


def _nice_axis_top(top: float, unit: str) -> float:
    if top <= 0:
        return 1024.0 * 1024 if unit == "bytes" else 1.0
    if unit == "bytes":  # round in the binary unit the labels use (64 MiB, not 47.7 MiB)
        scale = 1024 ** max(0, min(3, int(math.log(top, 1024))))
        return nice_top(top / scale) * scale
    return nice_top(top)


class _Plot:
    def __init__(self, series, start: float, end: float, unit: str = ""):
        top = max((v for s in series for _, v in s.points), default=0.0)
        self.top = _nice_axis_top(top, unit)
        self.start, self.span = start, max(end - start, 1.0)
        self.w, self.h = WIDTH - PAD_LEFT - PAD_RIGHT, HEIGHT - PAD_TOP - PAD_BOTTOM

    def x(self, t: float) -> float:
        return PAD_LEFT + (t - self.start) / self.span * self.w

    def y(self, v: float) -> float:
        return PAD_TOP + self.h - v / self.top * self.h

    def xy(self, t: float, v: float) -> str:
        return f"{self.x(t):.1f},{self.y(v):.1f}"


def _grid(plot: _Plot, unit: str, end: float) -> SafeString:
    rows = []
    for i in range(Y_TICKS + 1):
        v = plot.top * i / Y_TICKS
        y = plot.y(v)
        rows.append(
            format_html(
                '<line x1="{}" y1="{y}" x2="{}" y2="{y}" class="{}"/>'
                '<text x="{}" y="{ty}" class="tick" text-anchor="end">{}</text>',
                PAD_LEFT,
                WIDTH - PAD_RIGHT,
                "axis" if i == 0 else "grid",
                PAD_LEFT - 6,
                human(v, unit),
                y=f"{y:.1f}",
                ty=f"{y + 4:.1f}",
            )
        )
    ticks = 4  # five labels; phones show the first, middle and last (.minor hidden, larger text)
    for i in range(ticks + 1):
        t = plot.start + plot.span * i / ticks
        x = plot.x(t)
        anchor = "start" if i == 0 else "end" if i == ticks else "middle"
        first_line, second_line = _time_label(t, plot.span, last=i == ticks)
        rows.append(
            format_html(
                '<line x1="{x}" y1="{}" x2="{x}" y2="{}" class="grid"/>'
                '<text x="{x}" y="{}" class="tick tick-x{}" text-anchor="{}">{}{}</text>',
                PAD_TOP,
                PAD_TOP + plot.h,
                HEIGHT - PAD_BOTTOM + 20,
                " minor" if i % 2 else "",
                anchor,
                first_line,
                format_html('<tspan x="{}" dy="1.15em">{}</tspan>', f"{x:.1f}", second_line)
                if second_line
                else "",
                x=f"{x:.1f}",
            )
        )
    return SafeString("".join(rows))


def _dots(points, plot: _Plot, label: str, unit: str, span: float) -> SafeString:
    """A dot on each sample (a series of one sample still shows), its time and value on hover."""
    return format_html_join(
        "",
        '<circle r="2.5" cx="{}" cy="{}"><title>{}</title></circle>',
        (
            (
                f"{plot.x(t):.1f}",
                f"{plot.y(v):.1f}",
                f"{label}: {human(v, unit)} at "
                + dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
            )
            for t, v in points
        ),
    )


def _values_table(chart) -> SafeString:
    """The same numbers as a table, for keyboards and screen readers (and anyone who wants them exact)."""
    times = sorted({t for s in chart.series for t, _ in s.points})
    if not times:
        return SafeString("")
    by_series = [dict(s.points) for s in chart.series]
    head = format_html_join("", '<th scope="col">{}</th>', ((s.label,) for s in chart.series))
    body = format_html_join(
        "",
        '<tr><th scope="row">{}</th>{}</tr>',
        (
            (
                dt.datetime.fromtimestamp(t, dt.UTC).strftime("%m-%d %H:%M:%S"),
                format_html_join(
                    "",
                    '<td class="num">{}</td>',
                    ((human(values[t], chart.unit) if t in values else "—",) for values in by_series),
                ),
            )
            for t in reversed(times)
        ),
    )
    return format_html(
        '<details class="chart-values"><summary>Values</summary><div class="table-scroll" tabindex="0">'
        '<table><thead><tr><th scope="col">Time (UTC)</th>{}</tr></thead><tbody>{}</tbody></table>'
        "</div></details>",
        head,
        body,
    )


@register.simple_tag
def svg_chart(chart, start: float, end: float) -> SafeString:
    """A line chart of ``metrics.Chart`` between unix times ``start`` and ``end``: gridlines, axes in the
    chart's unit, a dot per sample with its value on hover, fixed colours per series, a legend, and the
    values as a table."""
    plot = _Plot(chart.series, start, end, chart.unit)
    drawn = [(i, s) for i, s in enumerate(chart.series) if s.points]
    lines = format_html_join(
        "",
        '<g fill="{0}" stroke="{0}"><polyline fill="none" stroke-width="2" points="{1}"><title>{2}</title>'
        "</polyline>{3}</g>",
        (
            (
                _colour(s.label, i),
                " ".join(plot.xy(t, v) for t, v in s.points),
                s.label,
                _dots(s.points, plot, s.label, chart.unit, plot.span),
            )
            for i, s in drawn
        ),
    )
    legend = format_html_join(
        " ",
        '<span class="legend"><i style="background:{}"></i>{}</span>',
        ((_colour(s.label, i), s.label) for i, s in drawn),
    )
    latest = "; ".join(f"{s.label} {human(s.points[-1][1], chart.unit)}" for _, s in drawn)
    unit = {"per step": "", "": ""}.get(chart.unit, chart.unit)
    return format_html(
        '<figure class="chart" id="chart-{key}"><figcaption>{title}{unit}</figcaption>'
        '<svg viewBox="0 0 {w} {h}" role="img" aria-label="{title}: {latest}">'
        "{grid}{lines}</svg>"
        '<div class="legend-row">{legend}</div>{empty}{table}</figure>',
        key=chart.key,
        title=chart.title,
        unit=f" ({unit})" if unit else "",
        w=WIDTH,
        h=HEIGHT,
        latest=latest or "no data",
        grid=_grid(plot, chart.unit, end),
        lines=lines,
        legend=legend,
        empty=format_html('<p class="muted">No data in this window.</p>') if chart.empty else "",
        table=_values_table(chart),
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
    query.pop("page", None)  # another order starts at its first page
    return format_html(
        '<th scope="col"{}{}><a href="?{}">{}</a></th>',
        format_html(' class="{}"', css) if css else "",
        format_html(' aria-sort="{}"', direction) if direction else "",
        query.urlencode(),
        label,
    )


@register.simple_tag(takes_context=True)
def query_with(context, **changes) -> str:
    """This page's query string with ``changes``, a value of None or "" dropping its key: the pager's and
    the status counts' links keep the search, filter and sort."""
    query = context["request"].GET.copy()
    for key, value in changes.items():
        if value is None or value == "":
            query.pop(key, None)
        else:
            query[key] = str(value)
    return f"?{query.urlencode()}"


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


@register.filter
def human_ms(value) -> str:
    return human(float(value), "ms") if isinstance(value, int | float) else "—"
