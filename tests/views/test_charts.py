"""Server-side SVG charts: every sample drawn (a single first sample is visible), axes in human units with
gridlines, the value of each sample on hover, fixed colours per status class, dates on multi-day axes."""

import re

from functions.metrics import Chart, Series
from functions.templatetags.hks_dashboard import human, nice_top, svg_chart

DOT = re.compile(r'<circle r="[\d.]+" cx="([\d.]+)" cy="([\d.]+)"><title>([^<]*)</title></circle>')


def test_a_series_of_one_sample_is_drawn_as_a_dot_with_its_value_on_hover():
    chart = Chart(key="requests", title="Requests", unit="", series=[Series("2xx", [(1_000.0, 3.0)])])
    svg = str(svg_chart(chart, 0.0, 1_000.0))
    dots = DOT.findall(svg)
    assert len(dots) == 1
    x, title = float(dots[0][0]), dots[0][2]
    assert x > 500  # the right end (the last moment)
    assert title.startswith("2xx: 3 at 1970-01-01 00:16:40 UTC")


def test_each_sample_of_each_series_gets_a_dot():
    series = [Series("2xx", [(0.0, 1.0), (5.0, 2.0)]), Series("5xx", [(5.0, 1.0)])]
    svg = str(svg_chart(Chart(key="c", title="C", unit="", series=series), 0.0, 10.0))
    assert svg.count("<circle") == 3
    assert svg.count("<polyline") == 2


def test_latency_axis_reads_in_milliseconds_not_exponents():
    chart = Chart(key="latency", title="Latency", unit="ms", series=[Series("p95", [(5.0, 100.0)])])
    svg = str(svg_chart(chart, 0.0, 10.0))
    assert "1e+02" not in svg
    assert ">100 ms<" in svg
    assert human(1500.0, "ms") == "1.5 s" and human(12.5, "ms") == "12.5 ms"
    assert human(0.5, "%") == "0.5 %" and human(3 * 1024 * 1024, "bytes") == "3.0 MiB"


def test_gridlines_sit_on_round_values():
    chart = Chart(key="r", title="R", unit="", series=[Series("2xx", [(5.0, 7.0)])])
    svg = str(svg_chart(chart, 0.0, 10.0))
    assert svg.count('class="grid"') >= 4
    assert nice_top(7.0) == 10 and nice_top(0.3) == 0.5 and nice_top(180) == 200
    assert ">10<" in svg and ">5<" in svg


def test_status_classes_keep_their_colour_on_every_chart():
    only_5xx = Chart(key="a", title="A", unit="", series=[Series("5xx", [(1.0, 1.0)])])
    both = Chart(
        key="b", title="B", unit="", series=[Series("4xx", [(1.0, 1.0)]), Series("5xx", [(1.0, 1.0)])]
    )
    assert 'fill="var(--c5xx)"' in str(svg_chart(only_5xx, 0.0, 2.0))
    two = str(svg_chart(both, 0.0, 2.0))
    assert 'fill="var(--c4xx)"' in two and 'fill="var(--c5xx)"' in two


def test_a_multi_day_axis_has_dates_and_an_hour_axis_has_times():
    day = 86_400.0
    start = 1_764_547_200.0  # 2025-12-01 00:00 UTC
    chart = Chart(key="r", title="R", unit="", series=[Series("2xx", [(start + day, 1.0)])])
    three_days = str(svg_chart(chart, start, start + 3 * day))
    assert '>Dec 01<tspan x="96.0" dy="1.15em">00:00</tspan>' in three_days  # the date over the time
    assert '>Dec 04<tspan x="586.0" dy="1.15em">00:00 UTC</tspan>' in three_days
    week = str(svg_chart(chart, start, start + 7 * day))
    assert ">Dec 01</text>" in week and '>Dec 08<tspan x="586.0" dy="1.15em">UTC</tspan>' in week
    hour = str(svg_chart(chart, start, start + 3600))
    assert ">00:00</text>" in hour and '>01:00<tspan x="586.0" dy="1.15em">UTC</tspan>' in hour


def test_axis_labels_are_short_enough_never_to_overlap():
    """Five labels 122 units apart (three on phones): a line of at most 9 characters fits between them."""
    day, start = 86_400.0, 1_764_547_200.0
    chart = Chart(key="r", title="R", unit="", series=[Series("2xx", [(start, 1.0)])])
    for span in (300.0, 3600.0, day, 3 * day, 30 * day):
        svg = str(svg_chart(chart, start, start + span))
        lines = re.findall(
            r'class="tick tick-x(?: minor)?"[^>]*>([^<]*)(?:<tspan[^>]*>([^<]*)</tspan>)?', svg
        )
        assert len(lines) == 5, span
        assert max(len(x) for pair in lines for x in pair) <= 9, (span, lines)


def test_tiny_values_read_without_exponents():
    assert human(7.5e-06, "cores") == "0.0075m" and human(0.25, "cores") == "250m"
    assert human(2.5, "cores") == "2.5" and human(1e-05, "") == "0.00001"
    assert human(0.0004, "ms") == "0.0004 ms" and human(0.005, "%") == "0.005 %"
    cpu = Chart(key="cpu", title="CPU", unit="cores", series=[Series("CPU", [(5.0, 7.5e-06)])])
    svg = str(svg_chart(cpu, 0.0, 10.0))
    assert "e-0" not in svg and ">0.01m<" in svg and ">0.005m<" in svg


def test_values_are_also_a_table_for_keyboards_and_screen_readers():
    chart = Chart(
        key="r", title="R", unit="ms", series=[Series("p50", [(0.0, 12.0)]), Series("p99", [(0.0, 80.0)])]
    )
    svg = str(svg_chart(chart, 0.0, 10.0))
    assert "<summary>Values</summary>" in svg
    assert '<td class="num">12 ms</td><td class="num">80 ms</td>' in svg


def test_a_memory_axis_rounds_in_mebibytes():
    chart = Chart(key="m", title="M", unit="bytes", series=[Series("m", [(5.0, 34 * 1024 * 1024)])])
    svg = str(svg_chart(chart, 0.0, 10.0))
    assert ">50.0 MiB<" in svg and ">25.0 MiB<" in svg and "47.7" not in svg


def test_every_window_has_about_sixty_points():
    from functions.metrics import WINDOWS, _step

    for window, seconds in WINDOWS.items():
        assert 55 <= seconds / _step(seconds) <= 61, window
    assert 3 * 86_400 / _step(3 * 86_400) == 60  # a custom range of days
