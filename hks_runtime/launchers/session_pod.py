"""The session agent as a Knative container (functions/backends/k8s_sessions.py), standard library only.

On the local runtime the daemon opens the agent's socket and hands it the token on stdin
(hks_runtime/sessions.py); in a pod there is no daemon, so this opens the socket itself on Knative's
``$PORT`` (8080) on every address and takes the token from ``HKS_AGENT_TOKEN`` (a Secret). The variable is
dropped before the kernel starts, so the session's code does not inherit it - though code running as the
same user could still read it from this process: the token only lets its holder talk to this very
session, which the code already runs in. The pod's NetworkPolicy keeps everything but the portal and
Knative's data path away from the port.
"""

from __future__ import annotations

import os
import socket
import sys

import session_agent  # beside this file in the image (/hks/launchers)


def main() -> None:
    token = os.environ.pop("HKS_AGENT_TOKEN", "")
    if not token:
        sys.exit("HKS_AGENT_TOKEN is not set; exiting")
    port = int(os.environ.get("PORT", "8080"))
    sock = socket.create_server(("", port), family=socket.AF_INET6, dualstack_ipv6=True, backlog=64)
    os.makedirs(session_agent.HOME, exist_ok=True)
    os.chdir(session_agent.HOME)
    server = session_agent.Server(sock, token=token)
    server.serve_forever(poll_interval=3600)


if __name__ == "__main__":
    main()
