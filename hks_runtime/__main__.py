"""``python -m hks_runtime --data-dir var/runtime --control-port 8070 --gateway-port 8080``, token from
``HKS_RUNTIME_TOKEN`` or ``--token``. Port 0 picks free ports; the first stdout line is JSON with the URLs."""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
from pathlib import Path

from .client_limits import ClientLimits
from .daemon import Daemon, Options
from .pool_policy import execute_pool_default


def _env_float(name: str, default: float) -> float:
    value = os.environ.get(name)
    try:
        return float(value) if value else default
    except ValueError:
        sys.exit(f"{name} must be a number, not {value!r}")


def parse_args(argv: list[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(prog="python -m hks_runtime", description="HKS Functions local runtime")
    parser.add_argument("--data-dir", type=Path, default=Path("var/runtime"))
    parser.add_argument("--host", default="127.0.0.1", help="address both servers bind (default loopback)")
    parser.add_argument("--control-port", type=int, default=8070)
    parser.add_argument("--gateway-port", type=int, default=8080)
    parser.add_argument(
        "--token",
        default=os.environ.get("HKS_RUNTIME_TOKEN", ""),
        help="bearer token of the control API (default: $HKS_RUNTIME_TOKEN)",
    )
    parser.add_argument("--domain", default=os.environ.get("HKS_RUNTIME_DOMAIN", "localhost"))
    parser.add_argument(
        "--idle-seconds",
        type=float,
        default=_env_float("HKS_RUNTIME_IDLE_SECONDS", 90.0),
        help="scale an instance down after this long without requests (Knative: 60 s + 30 s)",
    )
    parser.add_argument("--max-body-mb", type=float, default=_env_float("HKS_RUNTIME_MAX_BODY_MB", 10.0))
    parser.add_argument("--layers-dir", type=Path, default=None, help="default DATA_DIR/layers")
    parser.add_argument(
        "--pool-size",
        type=int,
        default=int(_env_float("HKS_RUNTIME_POOL_SIZE", 1)),
        help="pre-warmed instances kept per function shape in use (0 disables)",
    )
    parser.add_argument(
        "--pool-recent-shapes",
        type=int,
        default=int(_env_float("HKS_RUNTIME_POOL_RECENT_SHAPES", 2)),
        help="function shapes no longer in use that keep their pre-warmed instances, the latest given up "
        "(an agent's next throwaway function finds one waiting)",
    )
    parser.add_argument(
        "--session-pool-size",
        type=int,
        default=int(_env_float("HKS_RUNTIME_SESSION_POOL_SIZE", 2)),
        help="agent sandboxes started ahead for sessions, at least (0: none when idle)",
    )
    parser.add_argument(
        "--session-pool-max",
        type=int,
        default=int(_env_float("HKS_RUNTIME_SESSION_POOL_MAX", 50)),
        help="the most agents (and one-shot kernels, per language) a pool grows to after a burst of "
        "claims (~35 MB each; also at most a quarter of the machine's memory); at most the pool's size "
        "keeps it fixed",
    )
    parser.add_argument(
        "--session-pool-window",
        type=float,
        default=_env_float("HKS_RUNTIME_SESSION_POOL_WINDOW", 300.0),
        help="seconds: the pool holds the peak of concurrent claims seen within this long (0: fixed pool)",
    )
    parser.add_argument(
        "--session-libraries",
        choices=("eager", "lazy", "off"),
        default=os.environ.get("HKS_RUNTIME_SESSION_LIBRARIES", "lazy"),
        help="the agent library layer (numpy, pandas...): build at start, at the first session, or never",
    )
    parser.add_argument(
        "--node-pool-size",
        type=int,
        default=int(_env_float("HKS_RUNTIME_NODE_POOL_SIZE", 2)),
        help="agent sandboxes started ahead with their Node kernel, for JavaScript sessions "
        "(0: none; they then take a Python one and start Node)",
    )
    parser.add_argument(
        "--execute-pool-size",
        type=int,
        default=int(_env_float("HKS_RUNTIME_EXECUTE_POOL_SIZE", execute_pool_default())),
        help="bare Python kernels started ahead for execute(), at least (default: one per GiB of memory, "
        "2 to 16; ~6 MB each); grown toward recent demand as the session pool is (0: none when idle)",
    )
    parser.add_argument(
        "--execute-node-pool-size",
        type=int,
        default=int(_env_float("HKS_RUNTIME_EXECUTE_NODE_POOL_SIZE", 2)),
        help="bare Node kernels started ahead for JavaScript execute(), at least (0: none when idle)",
    )
    parser.add_argument(
        "--data-path",
        choices=("auto", "python", "haproxy"),
        default=os.environ.get("HKS_RUNTIME_DATA_PATH", "auto"),
        help="haproxy: HAProxy proxies warm traffic, the Python gateway only activates; "
        "auto (default): haproxy when installed",
    )
    parser.add_argument(
        "--project-memory-mb",
        type=int,
        default=int(_env_float("HKS_RUNTIME_PROJECT_MEMORY_MB", 0)),
        help="memory a project's function instances may use together (their project's cgroup, v1 or v2; "
        "default: half the machine's)",
    )
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    if not args.token:
        parser.error("no control token: set HKS_RUNTIME_TOKEN or pass --token")
    if args.data_path == "auto":
        args.data_path = "haproxy" if shutil.which("haproxy") else "python"
    if args.idle_seconds <= 0:
        parser.error("--idle-seconds must be positive")
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    return Options(
        data_dir=args.data_dir,
        token=args.token,
        host=args.host,
        control_port=args.control_port,
        gateway_port=args.gateway_port,
        domain=args.domain,
        idle_seconds=args.idle_seconds,
        max_body_bytes=int(args.max_body_mb * 1024 * 1024),
        layers_dir=args.layers_dir,
        pool_size=args.pool_size,
        pool_recent_shapes=max(0, args.pool_recent_shapes),
        data_path=args.data_path,
        client_limits=ClientLimits.from_env(),
        session_pool_size=max(0, args.session_pool_size),
        session_pool_max=max(0, args.session_pool_max),
        session_pool_window=max(0.0, args.session_pool_window),
        session_libraries=args.session_libraries,
        node_pool_size=max(0, args.node_pool_size),
        execute_pool_size=max(0, args.execute_pool_size),
        execute_node_pool_size=max(0, args.execute_node_pool_size),
        project_memory_mb=max(0, args.project_memory_mb),
    )


def main(argv: list[str] | None = None) -> None:
    Daemon(parse_args(argv)).run()


if __name__ == "__main__":
    main()
