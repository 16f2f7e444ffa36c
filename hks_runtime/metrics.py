"""Prometheus exposition in the names current Knative Serving (1.19+, OpenTelemetry) and cAdvisor use.

Knative's OTel instruments become Prometheus names by the exporter's rules (dots to underscores, unit
suffix), and so do their attributes:

- ``kn_serving_invocation_duration_seconds`` (histogram of ``kn.serving.invocation.duration``, unit s) with
  ``http_response_status_code``, ``k8s_namespace_name``, ``kn_service_name``, ``kn_configuration_name``,
  ``kn_revision_name``; its ``_count`` is the request count.
- ``kn_revision_pods_count`` (gauge): running instances per revision.
- ``hks_cold_starts_total`` and ``hks_cold_start_duration_seconds``: Knative has none, users ask for them;
  a cold start is a request that found its function at zero instances.
- ``container_cpu_usage_seconds_total`` and ``container_memory_working_set_bytes`` per instance, with
  cAdvisor's labels ``namespace``, ``pod``, ``container`` (= "user-container" as on Knative).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

REVISION_LABELS = ("k8s_namespace_name", "kn_service_name", "kn_configuration_name", "kn_revision_name")
LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
    30,
    60,
    300,
)


@dataclass(frozen=True)
class InstanceUsage:
    namespace: str
    function: str
    revision: str
    instance: str
    cpu_seconds: float | None
    memory_bytes: int | None


class _UsageCollector:
    """Reads CPU and memory of live instances at scrape time (cgroup or /proc, via the sandbox)."""

    def __init__(self, usage: Callable[[], Iterable[InstanceUsage]]):
        self.usage = usage

    def collect(self):
        labels = ["namespace", "pod", "container", "kn_service_name", "kn_revision_name"]
        cpu = CounterMetricFamily(
            "container_cpu_usage_seconds", "CPU time used by the instance", labels=labels
        )
        memory = GaugeMetricFamily(
            "container_memory_working_set_bytes", "Memory working set of the instance", labels=labels
        )
        for item in self.usage():
            values = [item.namespace, item.instance, "user-container", item.function, item.revision]
            if item.cpu_seconds is not None:
                cpu.add_metric(values, item.cpu_seconds)
            if item.memory_bytes is not None:
                memory.add_metric(values, item.memory_bytes)
        yield cpu
        yield memory


class Metrics:
    def __init__(self, usage: Callable[[], Iterable[InstanceUsage]] = lambda: ()):
        self.registry = CollectorRegistry()
        self.invocations = Histogram(
            "kn_serving_invocation_duration_seconds",
            "Duration of requests through the gateway",
            [*REVISION_LABELS, "http_response_status_code"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.pods = Gauge(
            "kn_revision_pods_count",
            "Running instances of a revision",
            REVISION_LABELS,
            registry=self.registry,
        )
        self.cold_starts = Counter(
            "hks_cold_starts",
            "Requests that found their function at zero instances",
            REVISION_LABELS,
            registry=self.registry,
        )
        self.cold_start_seconds = Histogram(
            "hks_cold_start_duration_seconds",
            "From a cold request's arrival to its instance being ready",
            REVISION_LABELS,
            buckets=(0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1, 2, 5, 10, 30),
            registry=self.registry,
        )
        self.registry.register(_UsageCollector(usage))

    @staticmethod
    def revision_labels(namespace: str, function: str, revision: str) -> dict[str, str]:
        return {
            "k8s_namespace_name": namespace,
            "kn_service_name": function,
            "kn_configuration_name": function,
            "kn_revision_name": revision,
        }

    def observe_request(self, labels: dict[str, str], status: int, seconds: float) -> None:
        self.invocations.labels(**labels, http_response_status_code=str(status)).observe(seconds)

    def set_pods(self, labels: dict[str, str], count: int) -> None:
        self.pods.labels(**labels).set(count)

    def forget_revision(self, labels: dict[str, str]) -> None:
        try:
            self.pods.remove(*labels.values())
        except KeyError:
            pass

    def observe_cold_start(self, labels: dict[str, str], seconds: float) -> None:
        self.cold_starts.labels(**labels).inc()
        self.cold_start_seconds.labels(**labels).observe(seconds)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
