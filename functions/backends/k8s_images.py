"""The image recipe of the Knative backend: one Dockerfile per runtime and function kind, built by Kaniko.

Kaniko builds into its own root filesystem and leaves out of the image every path that is a mount point
in its container (osscontainertools/kaniko ``pkg/util/fs_util.go`` ``DetectFilesystemIgnoreList``; "kaniko
will not look at any files in mounted volumes", GoogleContainerTools/kaniko#464). So nothing the image
needs may live under a path the build pod mounts: the function goes to ``/app`` (never mounted), the
runtimes are installed globally under ``/usr/local``, and the build pod mounts only below ``/kaniko``
(which Kaniko ignores anyway) - ``tests/backends/test_image_recipe.py`` checks both sides.

The start command is the one ``kn func`` images use: faas-js-runtime for Node (it picks HTTP or
CloudEvents from the function itself), func-python's ``http`` or ``cloudevent`` middleware for Python -
the same choice the local runtime's launcher makes (``hks_runtime/launchers/python_launcher.py``).
"""

from __future__ import annotations

FUNCTION_UID = 1001
FUNCTION_PORT = 8080
APP_DIR = "/app"
FAAS_JS_RUNTIME = "faas-js-runtime@4.0.1"
FUNC_PYTHON = "func-python==0.8.1"
KINDS = ("http", "cloudevents")
RUNTIMES = ("node", "python")

# The function package exports ``new`` (kn func's template) or ``handle``, as the local launcher accepts.
PYTHON_START = {
    kind: f"import function; from func_python.{module} import serve; "
    "serve(getattr(function, 'new', None) or function.handle)"
    for kind, module in (("http", "http"), ("cloudevents", "cloudevent"))
}


def _node(kind: str) -> str:
    return f"""\
FROM node:24-slim
RUN npm install --global --no-audit --no-fund {FAAS_JS_RUNTIME}
WORKDIR {APP_DIR}
COPY . .
RUN if [ -f package.json ]; then npm install --omit=dev --no-audit --no-fund; fi
USER {FUNCTION_UID}
ENV FUNC_PORT={FUNCTION_PORT} NODE_ENV=production
CMD ["faas-js-runtime", "./index.js"]
"""


def _python(kind: str) -> str:
    start = PYTHON_START[kind].replace('"', '\\"')
    return f"""\
FROM python:3.12-slim
RUN pip install --no-cache-dir {FUNC_PYTHON}
WORKDIR {APP_DIR}
COPY . .
RUN if [ -f requirements.txt ]; then pip install --no-cache-dir -r requirements.txt; \\
    elif [ -f pyproject.toml ]; then pip install --no-cache-dir .; fi
USER {FUNCTION_UID}
ENV LISTEN_ADDRESS=0.0.0.0:{FUNCTION_PORT} PYTHONUNBUFFERED=1
CMD ["python", "-c", "{start}"]
"""


def dockerfile(runtime: str, kind: str = "http") -> str:
    """The Dockerfile building a ``runtime`` function of ``kind`` ("http" or "cloudevents")."""
    if runtime not in RUNTIMES:
        raise ValueError(f"runtime {runtime!r} cannot be built on Knative; expected one of {RUNTIMES}")
    if kind not in KINDS:
        raise ValueError(f"unknown function kind {kind!r}; expected one of {KINDS}")
    return _node(kind) if runtime == "node" else _python(kind)
