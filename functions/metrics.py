"""Function metrics from Prometheus, behind plain functions returning dataclasses.

Views never see PromQL. All of it lives in ``QUERY_TABLES`` below, one table per backend, so a renamed
metric is a one-line change: the local runtime exposes Knative Serving's OpenTelemetry names (1.19+) and
cAdvisor's container names; on a cluster the same names come from queue-proxy, the autoscaler and cAdvisor,
with pods named after the revision instead of carrying the service label.

Prometheus being down, slow or answering garbage is a normal state: every function here returns an object
with ``available=False`` and a reason, never raises. After a failure the URL is left alone for a short
while, so a page that polls every few seconds does not wait for a timeout on each refresh.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import threading
import time
from dataclasses import dataclass, field

import requests
from django.conf import settings
from prometheus_api_client import PrometheusApiClientException, PrometheusConnect
from urllib3.util.retry import Retry

logger = logging.getLogger(__name__)

# Figures on the list page, each fetched in ONE query for every function of a project.
LIST_FIGURES = ("rpm", "p95_ms", "error_rate", "client_error_rate", "cpu_cores", "memory_bytes")


@dataclass(frozen=True)
class QueryTable:
    """PromQL for one backend.

    Placeholders: ``{sel}`` a label selector for the project (and, for charts, the function), ``{svc}`` the
    label naming the function, ``{w}`` a range window. Container metrics use ``{csel}``/``{cwrap}``
    because cAdvisor on a cluster names pods, not services.
    """

    names: dict[str, str]  # metric and label names: inv, status, replicas, cold_starts
    namespace_label: str
    service_label: str
    container_selector: str  # extra matchers for container_* series (cAdvisor's "namespace", "container")
    container_service_label: str  # regex taking the function's name from "pod", when no label has it
    list_queries: dict[str, str]
    chart_queries: dict[str, tuple[str, str, str]]  # key -> (title, unit, PromQL)
    requests_in_window: str


# Plain str.format templates: {{ }} are literal braces of a PromQL selector.
_LIST = {
    "rpm": "sum by ({svc}) (rate({inv}_count{{{sel}}}[5m])) * 60",
    "p95_ms": "histogram_quantile(0.95, sum by ({svc}, le) (rate({inv}_bucket{{{sel}}}[5m]))) * 1000",
    # Server errors (5xx) and client errors (4xx) apart, each a share of all requests in the last 5 minutes.
    # "or ... * 0" gives functions without any such series a rate of 0 rather than no row at all.
    "error_rate": '(sum by ({svc}) (rate({inv}_count{{{sel}, {status}=~"5.."}}[5m]))'
    " or sum by ({svc}) (rate({inv}_count{{{sel}}}[5m])) * 0)"
    " / sum by ({svc}) (rate({inv}_count{{{sel}}}[5m]))",
    "client_error_rate": '(sum by ({svc}) (rate({inv}_count{{{sel}, {status}=~"4.."}}[5m]))'
    " or sum by ({svc}) (rate({inv}_count{{{sel}}}[5m])) * 0)"
    " / sum by ({svc}) (rate({inv}_count{{{sel}}}[5m]))",
    "cpu_cores": "sum by ({svc}) ({cwrap_open}rate(container_cpu_usage_seconds_total{{{csel}}}[5m])"
    "{cwrap_close})",
    "memory_bytes": "sum by ({svc}) ({cwrap_open}container_memory_working_set_bytes{{{csel}}}{cwrap_close})",
}

_QUANTILE = (
    "label_replace(histogram_quantile({q}, sum by (le) (rate({{inv}}_bucket{{{{{{sel}}}}}}[{{w}}]))) * 1000,"
    ' "quantile", "p{p}", "", "")'
)

_CHARTS = {
    # Requests counted in each step, by status class. Not rate(): a series born at 1 (the first request
    # of a new revision) has no increase Prometheus can see, so "or" falls back to the count itself.
    "requests": (
        "Requests by status class",
        "per step",
        "clamp_min(sum by (class) ({by_class}) - sum by (class) ({by_class_before}), 0)"
        " or sum by (class) ({by_class})",
    ),
    "latency": (
        "Latency p50 / p95 / p99",
        "ms",
        " or ".join(_QUANTILE.format(q=q, p=p) for q, p in ((0.5, 50), (0.95, 95), (0.99, 99))),
    ),
    # 4xx and 5xx as a share of the requests of each step (no request in a step: no point).
    "errors": (
        "Error rate (4xx, 5xx)",
        "%",
        "100 * sum by (class) ({errors_by_class}) / scalar(sum({all_by_class}))",
    ),
    "replicas": ("Replicas", "", "sum({replicas}{{{sel}}})"),
    # Counted per step like requests: a counter born at 1 (the first cold start of a revision) has no
    # increase that rate() can see, and a few cold starts an hour would read as 0.00 per minute.
    "cold_starts": (
        "Cold starts",
        "per step",
        "clamp_min(sum({cold_starts}{{{sel}}}) - sum({cold_starts}{{{sel}}} offset {step}), 0)"
        " or sum({cold_starts}{{{sel}}})",
    ),
    "cpu": (
        "CPU",
        "cores",
        "sum({cwrap_open}rate(container_cpu_usage_seconds_total{{{csel}}}[{w}]){cwrap_close})",
    ),
    "memory": (
        "Memory (working set)",
        "bytes",
        "sum({cwrap_open}container_memory_working_set_bytes{{{csel}}}{cwrap_close})",
    ),
}

_BY_CLASS = 'label_replace({inv}_count{{{sel}}}{offset}, "class", "${{1}}xx", "{status}", "([0-9]).*")'

_REQUESTS_IN_WINDOW = "sum({inv}_count{{{sel}}} @ {end}) - (sum({inv}_count{{{sel}}} @ {start}) or vector(0))"

_KNATIVE_NAMES = {
    "inv": "kn_serving_invocation_duration_seconds",
    "status": "http_response_status_code",
    "replicas": "kn_revision_pods_count",
    "cold_starts": "hks_cold_starts_total",
}

QUERY_TABLES: dict[str, QueryTable] = {
    # The local runtime (hks_runtime/metrics.py) gives container_* series cAdvisor's labels plus
    # kn_service_name, so no pod-name parsing is needed.
    "local": QueryTable(
        names=_KNATIVE_NAMES,
        namespace_label="k8s_namespace_name",
        service_label="kn_service_name",
        container_selector='container="user-container"',
        container_service_label="",
        list_queries=_LIST,
        chart_queries=_CHARTS,
        requests_in_window=_REQUESTS_IN_WINDOW,
    ),
    # Knative: queue-proxy/autoscaler series carry the same attributes; cAdvisor names pods
    # "{revision}-deployment-{hash}", whose revision is "{service}-{00001}".
    "knative": QueryTable(
        names=_KNATIVE_NAMES,
        namespace_label="k8s_namespace_name",
        service_label="kn_service_name",
        container_selector='container="user-container"',
        container_service_label=r"(.+)-[0-9]{5}-deployment-.*",
        list_queries=_LIST,
        chart_queries=_CHARTS,
        requests_in_window=_REQUESTS_IN_WINDOW,
    ),
}


@dataclass(frozen=True)
class FunctionFigures:
    """Current figures of one function for the list page; ``None`` where there is no data."""

    rpm: float | None = None
    p95_ms: float | None = None
    error_rate: float | None = None  # 5xx share of requests, 0..1
    client_error_rate: float | None = None  # 4xx share
    cpu_cores: float | None = None
    memory_bytes: float | None = None


@dataclass(frozen=True)
class ListMetrics:
    available: bool
    by_function: dict[str, FunctionFigures] = field(default_factory=dict)
    reason: str = ""

    def for_function(self, name: str) -> FunctionFigures:
        return self.by_function.get(name, FunctionFigures())


@dataclass(frozen=True)
class Series:
    label: str
    points: list[tuple[float, float]]  # (unix time, value), NaN dropped


@dataclass(frozen=True)
class Chart:
    key: str
    title: str
    unit: str
    series: list[Series]

    @property
    def empty(self) -> bool:
        return not any(s.points for s in self.series)


@dataclass(frozen=True)
class DetailMetrics:
    available: bool
    window: str  # one of WINDOWS, or "custom"
    charts: list[Chart] = field(default_factory=list)
    requests_in_window: float | None = None
    reason: str = ""
    start: dt.datetime | None = None
    end: dt.datetime | None = None
    step: int = 60


WINDOWS = {"15m": 15 * 60, "1h": 3600, "6h": 6 * 3600, "24h": 24 * 3600}


class MetricsUnavailable(Exception):
    pass


_down_until: dict[str, float] = {}
_down_lock = threading.Lock()


def _client() -> PrometheusConnect:
    url = settings.HKS_PROMETHEUS_URL.rstrip("/")
    with _down_lock:
        if _down_until.get(url, 0) > time.monotonic():
            raise MetricsUnavailable(f"Prometheus at {url} did not answer a moment ago")
    # No retries: a slow or absent Prometheus must cost one short timeout, not several.
    return PrometheusConnect(url=url, retry=Retry(total=0), timeout=_timeout())


def _timeout() -> float:
    return float(getattr(settings, "HKS_PROMETHEUS_TIMEOUT", 2.0))


def _mark_down(url: str) -> None:
    with _down_lock:
        _down_until[url] = time.monotonic() + float(getattr(settings, "HKS_PROMETHEUS_BACKOFF", 10.0))


def _run(call, *args, **kwargs):
    """Call the client; turn every way Prometheus can fail into ``MetricsUnavailable``."""
    client = _client()
    try:
        return call(client, *args, **kwargs)
    except (requests.RequestException, PrometheusApiClientException, ValueError, KeyError) as exc:
        _mark_down(client.url)
        logger.warning("Prometheus query failed: %s", exc)
        raise MetricsUnavailable(f"Prometheus at {client.url} is unavailable ({type(exc).__name__})") from exc
    finally:
        client.close()


def _table(project) -> QueryTable:
    return QUERY_TABLES.get(project.backend, QUERY_TABLES["local"])


def _quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


def _format(query: str, table: QueryTable, *, namespace: str, service: str | None = None, **extra) -> str:
    sel = f'{table.namespace_label}="{_quote(namespace)}"'
    if service is not None:
        sel += f', {table.service_label}="{_quote(service)}"'
    csel, cwrap_open, cwrap_close = _container_parts(table, namespace=namespace, service=service)
    if "{by_class" in query or "by_class}" in query:
        step = extra.get("step", "60s")
        by_class = _BY_CLASS.format(sel=sel, offset="", **table.names)
        extra = {
            **extra,
            "by_class": by_class,
            "by_class_before": _BY_CLASS.format(sel=sel, offset=f" offset {step}", **table.names),
        }
        per_step = (
            "(clamp_min(sum by (class) ({now}) - sum by (class) ({before}), 0) or sum by (class) ({now}))"
        )
        errors_sel = f'{sel}, {table.names["status"]}=~"[45].."'
        extra["errors_by_class"] = per_step.format(
            now=_BY_CLASS.format(sel=errors_sel, offset="", **table.names),
            before=_BY_CLASS.format(sel=errors_sel, offset=f" offset {step}", **table.names),
        )
        extra["all_by_class"] = per_step.format(now=extra["by_class"], before=extra["by_class_before"])
    return query.format(
        sel=sel,
        svc=table.service_label,
        csel=csel,
        cwrap_open=cwrap_open,
        cwrap_close=cwrap_close,
        **table.names,
        **extra,
    )


def _container_parts(table: QueryTable, *, namespace: str, service: str | None) -> tuple[str, str, str]:
    """Selector and wrapping for cAdvisor series, which on a cluster name pods rather than services."""
    sel = f'namespace="{_quote(namespace)}"'
    if table.container_selector:
        sel += ", " + table.container_selector
    if not table.container_service_label:
        if service is not None:
            sel += f', {table.service_label}="{_quote(service)}"'
        return sel, "", ""
    wrap_open = "label_replace("
    wrap_close = f', "{table.service_label}", "$1", "pod", "{table.container_service_label}")'
    if service is not None:
        sel += f', pod=~"{_quote(service)}-[0-9]{{5}}-deployment-.*"'
    return sel, wrap_open, wrap_close


def _number(raw) -> float | None:
    try:
        value = float(raw)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(value) or math.isinf(value) else value


def project_list_metrics(*, project) -> ListMetrics:
    """Current figures for every function of ``project``: one query per figure, whatever the row count."""
    table = _table(project)
    values: dict[str, dict[str, float | None]] = {}
    try:
        for figure in LIST_FIGURES:
            query = _format(table.list_queries[figure], table, namespace=project.effective_namespace)
            for row in _run(lambda c, q=query: c.custom_query(q)):
                name = row["metric"].get(table.service_label, "")
                values.setdefault(name, {})[figure] = _number(row["value"][1])
    except MetricsUnavailable as exc:
        return ListMetrics(available=False, reason=str(exc))
    return ListMetrics(
        available=True, by_function={name: FunctionFigures(**figures) for name, figures in values.items()}
    )


def _step(seconds: int) -> int:
    """About 60 points for any window, never closer than Prometheus' scrape interval."""
    return max(15, seconds // 60)


MAX_RANGE_SECONDS = 31 * 24 * 3600


def function_metrics(
    *,
    function,
    window: str = "1h",
    now: dt.datetime | None = None,
    start: dt.datetime | None = None,
    end: dt.datetime | None = None,
) -> DetailMetrics:
    """Charts of one function over ``window`` (one of ``WINDOWS``), or between ``start`` and ``end`` (window
    "custom"), and its request count in that time."""
    if start is not None and end is not None and start < end:
        window = "custom"
        start = max(start, end - dt.timedelta(seconds=MAX_RANGE_SECONDS))
    else:
        window = window if window in WINDOWS else "1h"
        end = now or dt.datetime.now(dt.UTC)
        start = end - dt.timedelta(seconds=WINDOWS[window])
    seconds = int((end - start).total_seconds())
    step = _step(seconds)
    rate_window = f"{max(60, 2 * step)}s"
    table = _table(function.project)
    names = {"namespace": function.project.effective_namespace, "service": function.name}
    span = {"start": f"{start.timestamp():.3f}", "end": f"{end.timestamp():.3f}"}
    try:
        total = _run(lambda c: c.custom_query(_format(table.requests_in_window, table, **span, **names)))
        charts = [
            _chart(
                key,
                title,
                unit.replace("per step", f"per {_duration(step)}"),
                _run(
                    lambda c, q=query: c.custom_query_range(
                        _format(q, table, w=rate_window, step=f"{step}s", **names), start, end, f"{step}s"
                    )
                ),
            )
            for key, (title, unit, query) in table.chart_queries.items()
        ]
    except MetricsUnavailable as exc:
        return DetailMetrics(available=False, window=window, reason=str(exc), start=start, end=end)
    requests_total = _number(total[0]["value"][1]) if total else 0.0
    return DetailMetrics(
        available=True,
        window=window,
        charts=charts,
        requests_in_window=requests_total,
        start=start,
        end=end,
        step=step,
    )


def _duration(seconds: int) -> str:
    if seconds % 3600 == 0:
        return f"{seconds // 3600} h"
    if seconds % 60 == 0:
        return f"{seconds // 60} min"
    return f"{seconds} s"


@dataclass(frozen=True)
class Summary:
    """What an owner looks at first: the last hour of one function."""

    available: bool
    requests: float | None = None
    client_errors: float | None = None  # 4xx answers
    server_errors: float | None = None  # 5xx answers
    p95_ms: float | None = None
    cold_starts: float | None = None
    reason: str = ""

    @property
    def error_rate(self) -> float | None:
        if not self.requests or self.server_errors is None or self.client_errors is None:
            return None
        return (self.server_errors + self.client_errors) / self.requests


# Counted as "total now minus total an hour ago", so a series born in the hour (a new revision's first
# request) counts from its first value; rate()/increase() would miss it.
_SUMMARY = {
    "requests": "sum({inv}_count{{{sel}}}) - (sum({inv}_count{{{sel}}} offset 1h) or vector(0))",
    "client_errors": '(sum({inv}_count{{{sel}, {status}=~"4.."}}) or vector(0))'
    ' - (sum({inv}_count{{{sel}, {status}=~"4.."}} offset 1h) or vector(0))',
    "server_errors": '(sum({inv}_count{{{sel}, {status}=~"5.."}}) or vector(0))'
    ' - (sum({inv}_count{{{sel}, {status}=~"5.."}} offset 1h) or vector(0))',
    "p95_ms": "histogram_quantile(0.95, sum by (le) (increase({inv}_bucket{{{sel}}}[1h]))) * 1000",
    "cold_starts": "(sum({cold_starts}{{{sel}}}) or vector(0))"
    " - (sum({cold_starts}{{{sel}}} offset 1h) or vector(0))",
}


def function_summary(*, function) -> Summary:
    """Requests, 4xx, 5xx, p95 and cold starts of the last hour: one query each."""
    table = _table(function.project)
    names = {"namespace": function.project.effective_namespace, "service": function.name}
    values: dict[str, float | None] = {}
    try:
        for key, query in _SUMMARY.items():
            rows = _run(lambda c, q=query: c.custom_query(_format(q, table, **names)))
            value = _number(rows[0]["value"][1]) if rows else None
            # No series at all is "nothing happened" for counts; a quantile of nothing is unknown.
            values[key] = max(0.0, value) if value is not None else (None if key == "p95_ms" else 0.0)
    except MetricsUnavailable as exc:
        return Summary(available=False, reason=str(exc))
    return Summary(available=True, **values)


def function_figures(*, function) -> FunctionFigures:
    """The list page's figures for one function (the detail header's status needs them)."""
    table = _table(function.project)
    values: dict[str, float | None] = {}
    try:
        for figure in ("p95_ms", "error_rate", "client_error_rate"):
            query = _format(
                table.list_queries[figure],
                table,
                namespace=function.project.effective_namespace,
                service=function.name,
            )
            rows = _run(lambda c, q=query: c.custom_query(q))
            values[figure] = _number(rows[0]["value"][1]) if rows else None
    except MetricsUnavailable:
        return FunctionFigures()
    return FunctionFigures(**values)


def _chart(key: str, title: str, unit: str, rows: list[dict]) -> Chart:
    series = []
    for row in rows:
        metric = row.get("metric", {})
        label = metric.get("class") or metric.get("quantile") or title
        points = [(float(t), v) for t, raw in row.get("values", []) if (v := _number(raw)) is not None]
        series.append(Series(label=label, points=points))
    series.sort(key=lambda s: s.label)
    return Chart(key=key, title=title, unit=unit, series=series)


def prometheus_healthy() -> bool:
    """True when Prometheus answers its readiness endpoint; for the operators' overview."""
    url = settings.HKS_PROMETHEUS_URL.rstrip("/")
    try:
        return requests.get(f"{url}/-/ready", timeout=_timeout()).ok
    except requests.RequestException:
        return False
