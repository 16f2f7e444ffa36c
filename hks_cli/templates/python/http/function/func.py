"""__NAME__: an HTTP function (an ASGI application served by func-python)."""

import json
import logging
from urllib.parse import parse_qs


def new():
    """The platform calls this once per instance and sends every request to the returned object."""
    return Function()


async def read_body(receive) -> bytes:
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            return body


async def send_json(send, status: int, payload) -> None:
    await send(
        {"type": "http.response.start", "status": status, "headers": [[b"content-type", b"application/json"]]}
    )
    await send({"type": "http.response.body", "body": json.dumps(payload).encode()})


class Function:
    async def handle(self, scope, receive, send):
        """Answer every request except the health checks (/health/readiness, /health/liveness)."""
        if scope["method"] in ("POST", "PUT", "PATCH"):
            raw = await read_body(receive)
            try:
                received = json.loads(raw) if raw else None
            except ValueError:
                received = raw.decode(errors="replace")
            print(f"__NAME__ received a {scope['method']} with {json.dumps(received)}", flush=True)
            await send_json(send, 200, {"received": received})
            return
        query = parse_qs(scope.get("query_string", b"").decode())
        name = query.get("name", ["world"])[0]
        await send_json(send, 200, {"message": f"Hello, {name}!"})

    def start(self, cfg):
        """Called when an instance starts; ``cfg`` holds the environment (run.envs and settings)."""
        logging.info("__NAME__ starting")

    def stop(self):
        logging.info("__NAME__ stopping")

    def alive(self):
        return True, "Alive"

    def ready(self):
        return True, "Ready"
