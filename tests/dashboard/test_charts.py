"""Server-side SVG charts: every sample is drawn, so a single first sample is visible."""

import re

from functions.metrics import Chart, Series
from functions.templatetags.hks_dashboard import svg_chart


def test_a_series_of_one_sample_is_drawn_as_a_dot():
    chart = Chart(key="requests", title="Requests", unit="", series=[Series("2xx", [(1_000.0, 3.0)])])
    svg = str(svg_chart(chart, 0.0, 1_000.0))
    dots = re.findall(r'<circle r="[\d.]+" cx="([\d.]+)" cy="([\d.]+)"/>', svg)
    assert len(dots) == 1
    x, y = map(float, dots[0])
    assert x > 300 and y < 20  # the right end (the last moment) and the top (the largest value)


def test_each_sample_of_each_series_gets_a_dot():
    series = [Series("2xx", [(0.0, 1.0), (5.0, 2.0)]), Series("5xx", [(5.0, 1.0)])]
    svg = str(svg_chart(Chart(key="c", title="C", unit="", series=series), 0.0, 10.0))
    assert svg.count("<circle") == 3
    assert svg.count("<polyline") == 2
