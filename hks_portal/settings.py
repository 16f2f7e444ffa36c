"""Settings for the HKS Functions portal.

Every knob is an environment variable (``HKS_*``, ``DATABASE_URL``, ``REDIS_URL``) with an embedded
default, so nothing needs to be set to start: SQLite in ``HKS_DATA_DIR`` and an embedded Redis on a unix
socket there (started by the run command and by the test suite when ``REDIS_URL`` is unset).
"""

import secrets
import shlex
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from .envtools import env_bool, env_int, env_list, env_str

BASE_DIR = Path(__file__).resolve().parent.parent
DATA_DIR = Path(env_str("HKS_DATA_DIR", str(BASE_DIR / "var"))).resolve()
DATA_DIR.mkdir(parents=True, exist_ok=True)


def _secret_key() -> str:
    configured = env_str("HKS_SECRET_KEY")
    if configured:
        return configured
    path = DATA_DIR / "secret_key"
    if not path.exists():
        path.write_text(secrets.token_urlsafe(50))
        path.chmod(0o600)
    return path.read_text().strip()


SECRET_KEY = _secret_key()
DEBUG = env_bool("HKS_DEBUG", False)
ALLOWED_HOSTS = env_list("HKS_ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]", "testserver"])
CSRF_TRUSTED_ORIGINS = env_list("HKS_CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_htmx",
    "channels",
    "functions",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "functions.api.throttling.DashboardThrottleMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
]

ROOT_URLCONF = "hks_portal.urls"
ASGI_APPLICATION = "hks_portal.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "functions.context_processors.projects",
            ],
        },
    },
]

# A connection per request, closed at its end (CONN_MAX_AGE 0), on every database: the portal serves
# ASGI, where each request's sync code runs on a thread of its own, so a persistent connection is never
# reused but stays open until its thread's objects are collected (Django ticket #33497) - thirty executions
# at once left thirty PostgreSQL connections behind, three bursts sixty-nine, of its 100: a tenant's bursts
# would have taken the database from every other tenant.
DATABASES = {
    "default": dj_database_url.parse(
        env_str("DATABASE_URL", f"sqlite:///{DATA_DIR / 'db.sqlite3'}"), conn_max_age=0
    )
}
if DATABASES["default"]["ENGINE"].endswith("sqlite3"):
    DATABASES["default"].setdefault("OPTIONS", {})["timeout"] = 20
    # Take the write lock at BEGIN: a read-then-write transaction upgrading later gets "database is locked"
    # at once when another writer is active (the worker's threads and the portal write concurrently).
    DATABASES["default"]["OPTIONS"]["transaction_mode"] = "IMMEDIATE"
    # Write-ahead log: readers no longer wait for a writer, and a commit appends to the -wal file instead of
    # writing a rollback journal and fsyncing it and the database each time; synchronous=NORMAL fsyncs at
    # checkpoints only. A burst of agent executions (two writes each) queues on this lock. The cost: a crash
    # of the machine (not of a process) may lose the last commits, and a copy of the database must take its
    # -wal file too or use SQLite's backup (docs/operations.md, "Backups").
    DATABASES["default"]["OPTIONS"]["init_command"] = "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Redis: Celery's broker and the Channels layer. Unset means the embedded server on a unix socket.
EMBEDDED_REDIS_SOCKET = DATA_DIR / "redis.sock"
REDIS_URL = env_str("REDIS_URL") or f"unix://{EMBEDDED_REDIS_SOCKET}"
REDIS_EMBEDDED = not env_str("REDIS_URL")

# kombu spells a unix socket "redis+socket://"; redis-py (Channels) spells it "unix://".
_CELERY_REDIS_URL = (
    "redis+socket://" + REDIS_URL.removeprefix("unix://") if REDIS_URL.startswith("unix://") else REDIS_URL
)
CELERY_BROKER_URL = _CELERY_REDIS_URL
CELERY_RESULT_BACKEND = _CELERY_REDIS_URL
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_DEFAULT_QUEUE = env_str("HKS_CELERY_QUEUE", "hks")
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# A task a worker took and never acknowledged (the worker died) is handed out again after this: longer
# than the longest build plus its deploy, so a slow build is never run twice at once. The reconciler
# (functions/services/reconcile.py) notices a lost task much sooner, from its missing heartbeat.
HKS_TASK_VISIBILITY_TIMEOUT = env_int(
    "HKS_TASK_VISIBILITY_TIMEOUT", env_int("HKS_BUILD_TIMEOUT_SECONDS", 900) + 600
)
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": HKS_TASK_VISIBILITY_TIMEOUT,
    "socket_connect_timeout": 3,
}
# Enqueueing while Redis is down fails in about a second instead of retrying for 20 s inside a request.
CELERY_TASK_PUBLISH_RETRY_POLICY = {"max_retries": 1, "interval_start": 0, "interval_step": 0.5}
# Reconciler: how often it runs, after how long without a heartbeat a build/deploy/delete counts as lost,
# how often a running task beats, and how many times a lost one is enqueued again before it is failed.
HKS_RECONCILE_INTERVAL_SECONDS = env_int("HKS_RECONCILE_INTERVAL_SECONDS", 30)
HKS_TASK_STALE_SECONDS = env_int("HKS_TASK_STALE_SECONDS", 120)
HKS_TASK_HEARTBEAT_SECONDS = env_int("HKS_TASK_HEARTBEAT_SECONDS", 15)
HKS_TASK_MAX_RECOVERIES = env_int("HKS_TASK_MAX_RECOVERIES", 3)
CELERY_BEAT_SCHEDULE = {
    "reconcile": {
        "task": "functions.tasks.reconcile",
        "schedule": float(HKS_RECONCILE_INTERVAL_SECONDS),
        "options": {"expires": HKS_RECONCILE_INTERVAL_SECONDS},
    },
    "collect-expired-functions": {"task": "functions.tasks.collect_expired", "schedule": 30.0},
    # Replicas and the serving revision as the backend reports them (functions.services.observe).
    "observe-functions": {
        "task": "functions.tasks.observe_functions",
        "schedule": 5.0,
        "options": {"expires": 5},
    },
    "collect-expired-sessions": {
        "task": "functions.tasks_sessions.collect_expired_sessions",
        "schedule": 5.0,
        "options": {"expires": 5},
    },
    "reclaim-storage": {
        "task": "functions.tasks.reclaim_due",
        "schedule": 300.0,
        "options": {"expires": 300},
    },
    "prune-history": {
        "task": "functions.tasks.prune_history",
        "schedule": 600.0,
        "options": {"expires": 600},
    },
    "collect-orphans": {
        "task": "functions.tasks.collect_orphans",
        "schedule": 600.0,
        "options": {"expires": 600},
    },
    "dispatch-schedules": {
        "task": "functions.tasks_schedules.dispatch_schedules",
        "schedule": 5.0,
        "options": {"expires": 5},
    },
}

CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {
            # redis-py 8 times socket reads out after 5 s by default, which is exactly how long channels-redis
            # blocks waiting for a message: every idle consumer would die (channels_redis#422). Reads wait
            # longer than that; connecting still times out.
            "hosts": [{"address": REDIS_URL, "socket_timeout": 30, "socket_connect_timeout": 5}],
            "prefix": env_str("HKS_CHANNELS_PREFIX", "hks:asgi"),
            "capacity": 200,
            "expiry": 30,
        },
    }
}

# Django's cache holds what every portal replica must agree on - the sign-in limits (functions/auth/)
# above all - so it lives in Redis, under its own prefix beside the broker and Channels (hks_portal/cache.py:
# clear() deletes only its own keys).
CACHES = {
    "default": {
        "BACKEND": "hks_portal.cache.PrefixedRedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": env_str("HKS_CACHE_PREFIX", "hks:cache"),
        "OPTIONS": {"socket_timeout": 5, "socket_connect_timeout": 5},
    }
}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]
# Django's model backend with a per-user-name limit on password guessing (functions/auth/login_guard.py).
AUTHENTICATION_BACKENDS = ["functions.auth.login_guard.GuardedModelBackend"]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
# The image collects static files at build time, outside the data volume.
STATIC_ROOT = Path(env_str("HKS_STATIC_ROOT", str(DATA_DIR / "staticfiles")))
MEDIA_ROOT = DATA_DIR / "media"

# Platform
HKS_PUBLIC_URL = env_str("HKS_PUBLIC_URL", "http://127.0.0.1:8000")
HKS_FUNCTION_DOMAIN = env_str("HKS_FUNCTION_DOMAIN", "localhost")
# Off on a cluster (deploy/): no local runtime runs beside the portal, /healthz does not ask for one.
HKS_LOCAL_RUNTIME = env_bool("HKS_LOCAL_RUNTIME", True)
HKS_RUNTIME_URL = env_str("HKS_RUNTIME_URL", "http://127.0.0.1:8070")
HKS_RUNTIME_TOKEN = env_str("HKS_RUNTIME_TOKEN") or SECRET_KEY
HKS_GATEWAY_URL = env_str("HKS_GATEWAY_URL", "http://127.0.0.1:8080")
HKS_PROMETHEUS_URL = env_str("HKS_PROMETHEUS_URL", "http://127.0.0.1:9090")
# The dashboard asks Prometheus once, without retries, and leaves it alone this long after a failure.
HKS_PROMETHEUS_TIMEOUT = env_int("HKS_PROMETHEUS_TIMEOUT", 2)
HKS_PROMETHEUS_BACKOFF = env_int("HKS_PROMETHEUS_BACKOFF", 10)
# Shown status (functions/status.py): "degraded" past these figures over the last 5 minutes (5xx share in
# percent, p95 in ms); "unknown" when the backend has not reported on a ready function for this long.
HKS_DEGRADED_ERROR_PERCENT = env_int("HKS_DEGRADED_ERROR_PERCENT", 5)
HKS_DEGRADED_P95_MS = env_int("HKS_DEGRADED_P95_MS", 2000)
HKS_STATUS_STALE_SECONDS = env_int("HKS_STATUS_STALE_SECONDS", 30)
HKS_ENCRYPTION_KEY = env_str("HKS_ENCRYPTION_KEY")  # Fernet key; derived from SECRET_KEY when unset
# Knative backend: image builds (Kaniko; upstream was archived in 2025, this is the maintained fork), the
# registry images are pushed to, the curl image for schedules and fetching sources, gVisor for agent code.
HKS_KANIKO_IMAGE = env_str("HKS_KANIKO_IMAGE", "ghcr.io/osscontainertools/kaniko:v1.28.3")
HKS_KANIKO_EXTRA_ARGS = shlex.split(env_str("HKS_KANIKO_EXTRA_ARGS"))
HKS_REGISTRY = env_str("HKS_REGISTRY", "registry.local/hks")
# A dockerconfigjson Secret in each namespace, for pushing images.
HKS_REGISTRY_SECRET = env_str("HKS_REGISTRY_SECRET")
HKS_REGISTRY_INSECURE = env_bool("HKS_REGISTRY_INSECURE", False)  # plain-HTTP registry (K3s in-cluster)
HKS_REGISTRY_CA_CONFIGMAP = env_str("HKS_REGISTRY_CA_CONFIGMAP")  # ConfigMap with the registry's ca.crt
HKS_PORTAL_CA_CONFIGMAP = env_str("HKS_PORTAL_CA_CONFIGMAP")  # ConfigMap with the portal's ca.crt, for builds
HKS_REGISTRY_MIRRORS = env_list("HKS_REGISTRY_MIRRORS", [])  # Docker Hub mirrors for base images
HKS_BUILD_RETRIES = env_int("HKS_BUILD_RETRIES", 3)
# Fair builds (functions/services/build_slots.py): builds of one project at once, and how long a build
# waits (off the worker) before it asks again when they are all taken
HKS_BUILDS_PER_PROJECT = env_int("HKS_BUILDS_PER_PROJECT", 1)
HKS_BUILD_SLOT_WAIT_SECONDS = env_int("HKS_BUILD_SLOT_WAIT_SECONDS", 3)
HKS_BUILD_CACHE = env_bool("HKS_BUILD_CACHE", False)
HKS_KNATIVE_NODE_ARCH = env_str("HKS_KNATIVE_NODE_ARCH")  # e.g. "amd64" on a mixed-architecture cluster
# NetworkPolicies: where Knative's traffic comes from, what operators add to functions' and builds' egress.
HKS_KNATIVE_INGRESS_NAMESPACES = env_list(
    "HKS_KNATIVE_INGRESS_NAMESPACES",
    ["knative-serving", "kourier-system", "istio-system", "contour-external", "contour-internal"],
)
HKS_KNATIVE_EGRESS_CIDRS = env_list("HKS_KNATIVE_EGRESS_CIDRS", [])
HKS_KNATIVE_EGRESS_NAMESPACES = env_list("HKS_KNATIVE_EGRESS_NAMESPACES", [])
HKS_BUILD_EGRESS_CIDRS = env_list("HKS_BUILD_EGRESS_CIDRS", [])
HKS_BUILD_EGRESS_INTERNET = env_bool("HKS_BUILD_EGRESS_INTERNET", True)
# Whether the portal and workers run inside the functions' cluster: then they call functions by their
# cluster-internal address; otherwise by the public URL (cluster-local functions are then out of reach).
HKS_KNATIVE_PORTAL_IN_CLUSTER = env_bool("HKS_KNATIVE_PORTAL_IN_CLUSTER", False)
HKS_CRON_IMAGE = env_str("HKS_CRON_IMAGE", "curlimages/curl:8.17.0")
HKS_AGENT_RUNTIME_CLASS = env_str("HKS_AGENT_RUNTIME_CLASS")  # e.g. "gvisor"; empty = the cluster default
# The image agent sessions run on Knative (deploy/session-image/Dockerfile builds it); empty = no sessions
# there. A create waits at most CREATE_WAIT for the session's pod (less than clients wait for an answer:
# hks_sdk 30 s, E2B's SDK 60 s) and answers with the session still starting past it; a request to its data
# plane waits at most START_WAIT for it (then 503 "still starting"); a session whose pod is not ready
# READY seconds after its create is deleted.
HKS_AGENT_SESSION_IMAGE = env_str("HKS_AGENT_SESSION_IMAGE")
HKS_KNATIVE_SESSION_CREATE_WAIT_SECONDS = env_int("HKS_KNATIVE_SESSION_CREATE_WAIT_SECONDS", 20)
HKS_KNATIVE_SESSION_START_WAIT_SECONDS = env_int("HKS_KNATIVE_SESSION_START_WAIT_SECONDS", 45)
HKS_KNATIVE_SESSION_READY_SECONDS = env_int("HKS_KNATIVE_SESSION_READY_SECONDS", 300)
# The platform's own identity on the host cluster, which provisions projects' namespaces: a kubeconfig file,
# or (unset) the pod's ServiceAccount when the platform runs on the cluster (deploy/); neither = projects
# need a kubeconfig of their own (manage.py set_kubeconfig).
HKS_KNATIVE_KUBECONFIG = env_str("HKS_KNATIVE_KUBECONFIG")
# The namespace the platform runs in: where it finds the registry Secret it copies into projects.
HKS_PLATFORM_NAMESPACE = env_str("HKS_PLATFORM_NAMESPACE", "hks")
HKS_PLATFORM_SERVICE_ACCOUNT = env_str("HKS_PLATFORM_SERVICE_ACCOUNT", "hks")  # bound in project namespaces
HKS_PROMETHEUS_NAMESPACE = env_str("HKS_PROMETHEUS_NAMESPACE", "monitoring")  # may scrape queue-proxy
# Namespaces no project may be named after, besides the cluster's, Knative's and the trusted ones above
# (functions/validators.reserved_namespace).
HKS_RESERVED_NAMESPACES = env_list("HKS_RESERVED_NAMESPACES", [])
# How many instances of each function, at the project's largest size, its namespace's quota leaves room for.
HKS_QUOTA_INSTANCES = env_int("HKS_QUOTA_INSTANCES", 3)
HKS_PROVISION_INTERVAL_SECONDS = env_int("HKS_PROVISION_INTERVAL_SECONDS", 300)  # drift repair
HKS_BUILD_TIMEOUT_SECONDS = env_int("HKS_BUILD_TIMEOUT_SECONDS", 900)
# Knative refuses a revision timeout over its max-revision-timeout-seconds (600 unless the cluster raised it).
HKS_KNATIVE_MAX_TIMEOUT_SECONDS = env_int("HKS_KNATIVE_MAX_TIMEOUT_SECONDS", 600)
HKS_MAX_ARCHIVE_BYTES = env_int("HKS_MAX_ARCHIVE_BYTES", 20 * 1024 * 1024)
HKS_MAX_UNPACKED_BYTES = env_int("HKS_MAX_UNPACKED_BYTES", 100 * 1024 * 1024)
HKS_MAX_ARCHIVE_MEMBERS = env_int("HKS_MAX_ARCHIVE_MEMBERS", 5000)
HKS_EPHEMERAL_TTL_SECONDS = env_int("HKS_EPHEMERAL_TTL_SECONDS", 900)
# A deleted function's archives, artifacts and rows stay this long (agents' functions: not at all).
HKS_DELETED_RETENTION_SECONDS = env_int("HKS_DELETED_RETENTION_SECONDS", 7 * 24 * 3600)
# A function keeps its newest this many revisions (and the one it serves); older ones are pruned - their
# archive, their artifact when nothing else records it, their row - so deploying in a loop fills no disk.
HKS_REVISION_HISTORY = env_int("HKS_REVISION_HISTORY", 10)
if HKS_REVISION_HISTORY < 1:
    raise ImproperlyConfigured(f"HKS_REVISION_HISTORY must be at least 1, got {HKS_REVISION_HISTORY}")
# Audit events, schedule runs and ended agent sessions older than this are removed (services/retention.py),
# and a schedule keeps at most its newest HKS_SCHEDULE_RUNS_KEPT runs: no tenant grows the database forever.
HKS_HISTORY_RETENTION_DAYS = env_int("HKS_HISTORY_RETENTION_DAYS", 90)
HKS_SCHEDULE_RUNS_KEPT = env_int("HKS_SCHEDULE_RUNS_KEPT", 1000)
# Requests per minute each user may make to /api/v1 and to the dashboard, and each project's agents to
# /internal/v1 and E2B's control plane (429 with Retry-After past it; 0: no limit): api/throttling.py.
HKS_API_REQUESTS_PER_MINUTE = env_int("HKS_API_REQUESTS_PER_MINUTE", 1200)
HKS_INTERNAL_JWT_TTL_SECONDS = env_int("HKS_INTERNAL_JWT_TTL_SECONDS", 300)
# How much longer than a function's timeout the portal waits for the backend's own answer (a 504 naming it).
HKS_INVOKE_GRACE_SECONDS = env_int("HKS_INVOKE_GRACE_SECONDS", 5)
HKS_INTERNAL_JWT_KEY_FILE = env_str("HKS_INTERNAL_JWT_KEY_FILE")  # Ed25519 PEM; generated in DATA_DIR
# Request heads the portal accepts (the platform passes the bytes limit to uvicorn's parser too).
HKS_MAX_REQUEST_HEADER_BYTES = env_int("HKS_MAX_REQUEST_HEADER_BYTES", 32 * 1024)
HKS_MAX_REQUEST_HEADERS = env_int("HKS_MAX_REQUEST_HEADERS", 100)
# POST /internal/v1/token per client address (every execute() without a shared Client mints one token).
HKS_INTERNAL_TOKEN_RATE = env_str("HKS_INTERNAL_TOKEN_RATE", "600/m")
# Proxies in front of the portal that append to X-Forwarded-For. 0: the client is REMOTE_ADDR, so a header
# a client sets itself cannot dodge a per-address limit (sign-in guard, API throttles).
HKS_NUM_PROXIES = env_int("HKS_NUM_PROXIES", 0)
NINJA_NUM_PROXIES = HKS_NUM_PROXIES
DATA_UPLOAD_MAX_MEMORY_SIZE = HKS_MAX_ARCHIVE_BYTES + 1024 * 1024
FILE_UPLOAD_MAX_MEMORY_SIZE = DATA_UPLOAD_MAX_MEMORY_SIZE

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": env_str("HKS_LOG_LEVEL", "INFO")},
    "loggers": {"httpx": {"level": "WARNING"}, "httpcore": {"level": "WARNING"}},
}

CELERY_BEAT_SCHEDULE["reconcile-projects"] = {
    "task": "functions.tasks_provision.reconcile_projects",
    "schedule": float(HKS_PROVISION_INTERVAL_SECONDS),
    "options": {"expires": HKS_PROVISION_INTERVAL_SECONDS},
}
