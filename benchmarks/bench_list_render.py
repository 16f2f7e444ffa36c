"""Render time of the function list page with 10, 1,000 and 10,000 functions, and of the operators'
overview (/ops/) with 10 and 1,010 (server side, one request each).

Builds a throwaway SQLite database (tables from the models, no migrations), fills one project with
functions that each have a revision and a schedule, and GETs ``/p/<project>/`` with Django's test client
as a signed-in member: the whole view, its first page of rows (50) and, at 10,000, its last page and a
search, metrics included. Prometheus is pointed at a
port where nothing listens (the list then says "metrics unavailable" after one refused connection per
figure, and skips Prometheus for the next few seconds), so the figure is the portal's own cost. For /ops/
the three health probes (runtime, task queue, Prometheus: network calls with their own timeouts) are
replaced by constant answers, for the same reason; some functions are failed, so the failing list is full.

    .venv/bin/python benchmarks/bench_list_render.py [--repeat 15]

Prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def setup_django(data_dir: Path):
    """Django on a throwaway SQLite file, with its own embedded Redis (the cache: sign-in limits) in
    ``data_dir``; returns that redis-server's process, which the caller stops."""
    os.environ["HKS_DATA_DIR"] = str(data_dir)
    os.environ.pop("REDIS_URL", None)
    os.environ["DATABASE_URL"] = f"sqlite:///{data_dir / 'bench.sqlite3'}"
    os.environ["HKS_PROMETHEUS_URL"] = f"http://127.0.0.1:{free_port()}"
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hks_portal.settings")
    import django
    from django.conf import settings

    django.setup()
    from hks_portal.embedded_redis import ensure_running

    redis_server = ensure_running(settings.EMBEDDED_REDIS_SOCKET)
    settings.ALLOWED_HOSTS = ["*"]
    settings.STATIC_ROOT = None
    settings.DATABASES["default"]["TEST"] = {"NAME": str(data_dir / "bench.sqlite3"), "MIGRATE": False}
    from django.db import connection

    # No setup_test_environment(): its instrumented template rendering would copy every row's context.
    connection.creation.create_test_db(verbosity=0, autoclobber=True)
    return redis_server


def fill(slug: str, count: int, user) -> None:
    from functions.models import Function, Membership, Project, Revision, Schedule

    project = Project.objects.create(slug=slug, name=slug)
    Membership.objects.create(project=project, user=user, role="developer")
    functions = Function.objects.bulk_create(
        Function(
            project=project,
            name=f"fn-{i:04d}",
            runtime="node",
            status="failed" if i % 20 == 0 else "ready",
            status_message="Traceback (most recent call last):\n  ...\nError: boom" if i % 20 == 0 else "",
            replicas=i % 3,
            url=f"http://fn-{i:04d}.{slug}.localhost:8080",
        )
        for i in range(count)
    )
    revisions = Revision.objects.bulk_create(
        Revision(function=f, number=1, content_hash="0" * 64, archive="a.tar.gz", artifact="/x")
        for f in functions
    )
    for function, revision in zip(functions, revisions, strict=True):
        function.current_revision = revision
    Function.objects.bulk_update(functions, ["current_revision"])
    Schedule.objects.bulk_create(Schedule(function=f, name="tick", cron="*/5 * * * *") for f in functions)


def measure(client, url: str, repeat: int) -> dict:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    client.get(url)  # warm templates and caches
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        response = client.get(url)
        times.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 200, response.status_code
    with CaptureQueriesContext(connection) as queries:
        client.get(url)
    return {
        "median_ms": round(statistics.median(times), 2),
        "p95_ms": round(sorted(times)[max(0, int(len(times) * 0.95) - 1)], 2),
        "queries": len(queries.captured_queries),
        "bytes": len(response.content),
    }


def _constant_health() -> None:
    from functions.views import ops as views_ops

    for name in ("runtime_health", "queue_health", "prometheus_health"):
        setattr(
            views_ops, name, lambda name=name: views_ops.Health(name, True, "not probed in the benchmark")
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="hks-bench-list-") as tmp:
        redis_server = setup_django(Path(tmp))
        try:
            figures = run(args.repeat)
        finally:
            if redis_server is not None:
                redis_server.terminate()
                redis_server.wait(timeout=10)
    report(*figures)


def run(repeat: int) -> tuple[dict, dict, dict, dict]:
    from django.contrib.auth import get_user_model
    from django.test import Client

    user = get_user_model().objects.create_user("bench", password="bench-password", is_staff=True)
    _constant_health()
    client = Client()
    client.force_login(user)
    fill("small", 10, user)
    ops_small = measure(client, "/ops/", repeat)
    fill("large", 1000, user)
    ops_large = measure(client, "/ops/", repeat)
    small = measure(client, "/p/small/", repeat)
    large = measure(client, "/p/large/", repeat)
    fill("huge", 10_000, user)
    huge = {
        "first_page": measure(client, "/p/huge/", repeat),
        "last_page": measure(client, "/p/huge/?page=200", repeat),
        "search": measure(client, "/p/huge/?q=fn-9&status=failed", repeat),
    }
    return small, large, ops_small, ops_large, huge


def report(small: dict, large: dict, ops_small: dict, ops_large: dict, huge: dict) -> None:
    print(f"{'functions':>22}{'median ms':>11}{'p95 ms':>9}{'queries':>9}{'KiB':>8}")
    for label, figures in (
        ("list 10", small),
        ("list 1000", large),
        ("list 10000", huge["first_page"]),
        ("list 10000 last page", huge["last_page"]),
        ("list 10000 search", huge["search"]),
        ("ops 10", ops_small),
        ("ops 1010", ops_large),
    ):
        print(
            f"{label:>22}{figures['median_ms']:>11}{figures['p95_ms']:>9}{figures['queries']:>9}"
            f"{figures['bytes'] // 1024:>8}"
        )
    print(
        json.dumps(
            {
                "benchmark": "list_render",
                "functions_10": small,
                "functions_1000": large,
                "ms_per_function": round((large["median_ms"] - small["median_ms"]) / 990, 4),
                "same_query_count": small["queries"] == large["queries"] == huge["first_page"]["queries"],
                "functions_10000": huge,
                "ops_functions_10": ops_small,
                "ops_functions_1010": ops_large,
                "ops_same_query_count": ops_small["queries"] == ops_large["queries"],
            }
        )
    )


if __name__ == "__main__":
    main()
