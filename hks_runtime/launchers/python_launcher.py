"""Serve the function in /app with func-python (the runtime `kn func` uses for Python) on an inherited socket.

The runtime daemon binds 127.0.0.1:<port> and passes the listening fd as HKS_LISTEN_FD (socket activation:
the function needs no network of its own). This mirrors knative/func's Python service main - import
``new`` (or ``handle``) from the ``function`` package and call func-python's ``serve`` - except that
func-python's address parsing, which rejects ``fd://``, is replaced by hypercorn's own ``fd://N`` bind.
HKS_FUNCTION_KIND picks ``func_python.http`` or ``func_python.cloudevent``.

HKS_PREWARM=1: import the runtime first, then wait for one line on stdin before importing the function. The
line may be a JSON object {"env": {...}}: the function's own environment, set before its code is imported.
"""

import json
import logging
import os
import sys


def main() -> None:
    fd = int(os.environ["HKS_LISTEN_FD"])
    if os.environ.get("HKS_FUNCTION_KIND") == "cloudevents":
        from func_python.cloudevent import serve
    else:
        from func_python.http import serve
    import func_python.sock

    func_python.sock.bind = lambda: [f"fd://{fd}"]
    if os.environ.get("HKS_PREWARM") == "1":
        line = sys.stdin.readline().strip()
        if line.startswith("{"):
            os.environ.update({key: str(value) for key, value in json.loads(line).get("env", {}).items()})
    # The function's own code first, then the runtime layer, then the function's installed dependencies.
    sys.path.insert(0, "/app")
    sys.path.append("/app/.hks/site-packages")
    logging.basicConfig(level=logging.INFO)
    try:
        from function import new as handler
    except ImportError:
        try:
            from function import handle as handler
        except ImportError:
            logging.error("Function must export either 'new' or 'handle'")
            raise
    serve(handler)


if __name__ == "__main__":
    main()
