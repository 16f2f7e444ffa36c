"""The platform's state: tenants (projects), who may act in them, and their functions."""

import hashlib
import secrets
from datetime import timedelta

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Q
from django.utils import timezone as dj_timezone

from functions.validators import reserved_namespace, validate_dns_label


class Backend(models.TextChoices):
    LOCAL = "local", "Local runtime"
    KNATIVE = "knative", "Knative"


class ClusterState(models.TextChoices):
    """Where a ``knative`` project's place on the cluster stands (functions/backends/knative_provision.py)."""

    NONE = "", "Not provisioned"
    PENDING = "pending", "Provisioning"
    READY = "ready", "Provisioned"
    FAILED = "failed", "Failed"
    DELETING = "deleting", "Deleting"


class Project(models.Model):
    """A tenant: the security boundary for functions, members and tokens."""

    slug = models.CharField(max_length=63, unique=True, validators=[validate_dns_label])
    name = models.CharField(max_length=200)
    backend = models.CharField(max_length=16, choices=Backend.choices, default=Backend.LOCAL)
    namespace = models.CharField(max_length=63, blank=True, validators=[validate_dns_label])
    kubeconfig_encrypted = models.TextField(blank=True, editable=False)
    max_functions = models.PositiveIntegerField(default=50)
    max_agent_functions = models.PositiveIntegerField(default=5)
    max_cpu_millicores = models.PositiveIntegerField(default=1000, help_text="Per function")
    max_memory_mb = models.PositiveIntegerField(default=512, help_text="Per function")
    max_sessions = models.PositiveIntegerField(default=5, help_text="Concurrent agent sessions")
    max_executions_per_minute = models.PositiveIntegerField(
        default=120, help_text="Agent executions started per minute (fast path and deployed code)"
    )
    max_cpu_seconds_per_day = models.PositiveIntegerField(
        default=0, help_text="CPU seconds agent executions and sessions may use per day (UTC); 0: no limit"
    )
    max_storage_mb = models.PositiveIntegerField(
        default=5120, help_text="MiB the kept revisions' source archives and built artifacts may take"
    )
    max_instances = models.PositiveIntegerField(
        default=20, help_text="Function instances running at once, on the local runtime"
    )
    created_at = models.DateTimeField(default=dj_timezone.now)
    cluster_state = models.CharField(max_length=16, choices=ClusterState.choices, blank=True, default="")
    cluster_message = models.TextField(blank=True)
    cluster_synced_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["slug"]

    def __str__(self) -> str:
        return self.slug

    @property
    def effective_namespace(self) -> str:
        return self.namespace or self.slug

    def clean(self) -> None:
        """Where a knative project lives on the cluster is its own: no system or trusted namespace
        (``reserved_namespace``), and no other project's (the admin form checks this)."""
        if self.backend != Backend.KNATIVE:
            return  # a local project has no namespace yet; switching it to knative runs this again
        ns = self.effective_namespace
        field = "namespace" if self.namespace else "slug"
        if ns and reserved_namespace(ns):
            raise ValidationError({field: f"{ns!r} is reserved for the cluster and the platform"})
        others = Project.objects.exclude(pk=self.pk)
        if ns and (others.filter(namespace=ns).exists() or others.filter(namespace="", slug=ns).exists()):
            raise ValidationError({field: f"namespace {ns!r} belongs to another project"})

    @property
    def has_kubeconfig(self) -> bool:
        return bool(self.kubeconfig_encrypted)


class Role(models.TextChoices):
    OWNER = "owner", "Owner"
    DEVELOPER = "developer", "Developer"
    VIEWER = "viewer", "Viewer"


ROLE_RANK = {Role.VIEWER: 0, Role.DEVELOPER: 1, Role.OWNER: 2}


class Membership(models.Model):
    """A user's role in a project: viewers read, developers deploy, owners manage members."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.DEVELOPER)
    created_at = models.DateTimeField(default=dj_timezone.now)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["project", "user"], name="unique_membership")]

    def __str__(self) -> str:
        return f"{self.user} in {self.project} ({self.role})"

    def allows(self, role: str) -> bool:
        return ROLE_RANK[Role(self.role)] >= ROLE_RANK[Role(role)]


class Invitation(models.Model):
    """An owner's offer of a role in a project to a user name; it becomes a Membership only when that user
    accepts. Kept by name, whether or not such a user exists, so the inviter learns nothing about who has an
    account."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="invitations")
    username = models.CharField(max_length=150)
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.DEVELOPER)
    invited_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=dj_timezone.now)

    class Meta:
        ordering = ["-created_at"]
        constraints = [models.UniqueConstraint(fields=["project", "username"], name="unique_invitation")]

    def __str__(self) -> str:
        return f"{self.username} invited to {self.project} ({self.role})"


def hash_token(plaintext: str) -> str:
    return hashlib.sha256(plaintext.encode()).hexdigest()


class ApiToken(models.Model):
    """A personal API token. Only its SHA-256 is stored; the plaintext is shown once."""

    PREFIX = "hks_"

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100)
    token_prefix = models.CharField(max_length=12, editable=False)
    token_hash = models.CharField(max_length=64, unique=True, editable=False)
    created_at = models.DateTimeField(default=dj_timezone.now)
    expires_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.name} ({self.token_prefix}…)"

    @classmethod
    def issue(cls, *, user, name: str, ttl: timedelta | None = None) -> tuple["ApiToken", str]:
        plaintext = cls.PREFIX + secrets.token_urlsafe(32)
        token = cls.objects.create(
            user=user,
            name=name,
            token_prefix=plaintext[:12],
            token_hash=hash_token(plaintext),
            expires_at=dj_timezone.now() + ttl if ttl else None,
        )
        return token, plaintext

    @property
    def is_active(self) -> bool:
        if self.revoked_at is not None:
            return False
        return self.expires_at is None or self.expires_at > dj_timezone.now()


class Runtime(models.TextChoices):
    NODE = "node", "Node.js"
    PYTHON = "python", "Python"


class FunctionKind(models.TextChoices):
    HTTP = "http", "HTTP"
    CLOUDEVENTS = "cloudevents", "CloudEvents"


class FunctionStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    BUILDING = "building", "Building"
    DEPLOYING = "deploying", "Deploying"
    READY = "ready", "Ready"
    UNKNOWN = "unknown", "Unknown"  # deployed, but its backend does not answer (status_message says why)
    FAILED = "failed", "Failed"
    DELETING = "deleting", "Deleting"
    DELETED = "deleted", "Deleted"


class SandboxProfile(models.TextChoices):
    STANDARD = "standard", "Standard"
    RESTRICTED = "restricted", "Restricted (agent code)"


class Visibility(models.TextChoices):
    PUBLIC = "public", "Public"
    CLUSTER_LOCAL = "cluster-local", "Cluster-local"


class FunctionQuerySet(models.QuerySet):
    def alive(self):
        return self.exclude(status=FunctionStatus.DELETED)


class Function(models.Model):
    """A deployable function of a project; its code lives in immutable revisions."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="functions")
    name = models.CharField(max_length=63, validators=[validate_dns_label])
    runtime = models.CharField(max_length=16, choices=Runtime.choices)
    kind = models.CharField(max_length=16, choices=FunctionKind.choices, default=FunctionKind.HTTP)
    status = models.CharField(max_length=16, choices=FunctionStatus.choices, default=FunctionStatus.PENDING)
    status_message = models.TextField(blank=True)
    url = models.URLField(max_length=300, blank=True)
    internal_url = models.URLField(max_length=300, blank=True)
    replicas = models.PositiveIntegerField(default=0)
    # When the backend last reported on this function (services/observe.py); functions.status shows
    # "unknown" once it is too old.
    observed_at = models.DateTimeField(null=True, blank=True)
    current_revision = models.ForeignKey(
        "Revision", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # The revision the owner last asked to serve (a deploy or a rollback). A deploy task for any other one
    # arrived late - a slow build finishing after a newer deploy, a redelivered message - and changes nothing.
    desired_revision = models.ForeignKey(
        "Revision", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    env = models.JSONField(default=dict, blank=True)
    # name -> value encrypted with functions.crypto; write-only (functions/secret_env.py)
    secret_env = models.JSONField(default=dict, blank=True, editable=False)
    min_scale = models.PositiveIntegerField(default=0)
    max_scale = models.PositiveIntegerField(default=10)
    target_concurrency = models.PositiveIntegerField(default=100)
    container_concurrency = models.PositiveIntegerField(default=0, help_text="0 = unlimited")
    cpu_millicores = models.PositiveIntegerField(default=500)
    memory_mb = models.PositiveIntegerField(default=256)
    timeout_seconds = models.PositiveIntegerField(default=300)
    sandbox_profile = models.CharField(
        max_length=16, choices=SandboxProfile.choices, default=SandboxProfile.STANDARD
    )
    visibility = models.CharField(max_length=16, choices=Visibility.choices, default=Visibility.PUBLIC)
    ephemeral = models.BooleanField(default=False)
    expires_at = models.DateTimeField(null=True, blank=True, db_index=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=dj_timezone.now)
    updated_at = models.DateTimeField(auto_now=True)
    deployed_at = models.DateTimeField(null=True, blank=True)
    deleted_at = models.DateTimeField(null=True, blank=True)
    # When the task moving this function (build, deploy, delete) was enqueued or last showed it is alive, and
    # how often the reconciler (services/reconcile.py) has had to enqueue it again since the last deploy.
    task_heartbeat_at = models.DateTimeField(null=True, blank=True)
    task_recoveries = models.PositiveSmallIntegerField(default=0)

    objects = FunctionQuerySet.as_manager()

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(
                fields=["project", "name"],
                condition=~Q(status="deleted"),
                name="unique_live_function_name",
            )
        ]

    def __str__(self) -> str:
        return f"{self.project.slug}/{self.name}"

    @property
    def is_alive(self) -> bool:
        return self.status not in (FunctionStatus.DELETING, FunctionStatus.DELETED)


class Revision(models.Model):
    """One immutable deploy of a function: its source archive, content hash and built artifact."""

    function = models.ForeignKey(Function, on_delete=models.CASCADE, related_name="revisions")
    number = models.PositiveIntegerField()
    archive = models.FileField(upload_to="archives/%Y/%m/")
    content_hash = models.CharField(max_length=64, db_index=True)
    size_bytes = models.PositiveIntegerField(default=0)
    config = models.JSONField(default=dict, blank=True, help_text="func.yaml as deployed")
    artifact = models.CharField(max_length=500, blank=True)
    # The artifact's size on disk as the local runtime measured it after the build; 0 when unknown (an image
    # on a registry, a runtime older than the measurement). Counted once per artifact in the storage quota.
    artifact_bytes = models.PositiveBigIntegerField(default=0)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=dj_timezone.now)

    class Meta:
        ordering = ["-number"]
        constraints = [models.UniqueConstraint(fields=["function", "number"], name="unique_revision_number")]

    def __str__(self) -> str:
        return f"{self.function}@{self.name}"

    @property
    def name(self) -> str:
        """Knative-style revision name: ``{function}-00001``."""
        return f"{self.function.name}-{self.number:05d}"


class BuildStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"


class Build(models.Model):
    """Turning a revision's source into a runnable artifact, with its log."""

    revision = models.ForeignKey(Revision, on_delete=models.CASCADE, related_name="builds")
    status = models.CharField(max_length=16, choices=BuildStatus.choices, default=BuildStatus.QUEUED)
    log = models.TextField(blank=True)
    message = models.TextField(blank=True)
    created_at = models.DateTimeField(default=dj_timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"build {self.pk} of {self.revision}"

    @property
    def is_finished(self) -> bool:
        return self.status in (BuildStatus.SUCCEEDED, BuildStatus.FAILED)


class ConcurrencyPolicy(models.TextChoices):
    ALLOW = "Allow", "Allow"
    FORBID = "Forbid", "Forbid"
    REPLACE = "Replace", "Replace"


class Schedule(models.Model):
    """A cron trigger that sends an HTTP request to its function at each due time."""

    function = models.ForeignKey(Function, on_delete=models.CASCADE, related_name="schedules")
    name = models.CharField(max_length=63, validators=[validate_dns_label])
    cron = models.CharField(max_length=120)
    timezone = models.CharField(max_length=64, default="UTC")
    method = models.CharField(max_length=10, default="POST")
    path = models.CharField(max_length=200, default="/")
    headers = models.JSONField(default=dict, blank=True)
    body = models.TextField(blank=True)
    enabled = models.BooleanField(default=True)
    concurrency_policy = models.CharField(
        max_length=8, choices=ConcurrencyPolicy.choices, default=ConcurrencyPolicy.ALLOW
    )
    starting_deadline_seconds = models.PositiveIntegerField(null=True, blank=True)
    next_run_at = models.DateTimeField(null=True, blank=True, db_index=True)
    last_scheduled_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=dj_timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        constraints = [models.UniqueConstraint(fields=["function", "name"], name="unique_schedule_name")]

    def __str__(self) -> str:
        return f"{self.function}:{self.name} ({self.cron})"


class ScheduleRun(models.Model):
    """One firing of a schedule for one due time; unique per due time so it fires once."""

    schedule = models.ForeignKey(Schedule, on_delete=models.CASCADE, related_name="runs")
    scheduled_for = models.DateTimeField()
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    status_code = models.PositiveIntegerField(null=True, blank=True)
    duration_ms = models.PositiveIntegerField(null=True, blank=True)
    outcome = models.CharField(max_length=16, default="pending")
    error = models.TextField(blank=True)

    class Meta:
        ordering = ["-scheduled_for"]
        constraints = [models.UniqueConstraint(fields=["schedule", "scheduled_for"], name="unique_due_time")]

    def __str__(self) -> str:
        return f"{self.schedule} @ {self.scheduled_for:%Y-%m-%d %H:%M}"


class AuditEvent(models.Model):
    """Who did what to which function (or project), and when."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="audit_events")
    function = models.ForeignKey(
        Function, null=True, blank=True, on_delete=models.SET_NULL, related_name="audit_events"
    )
    function_name = models.CharField(max_length=63, blank=True)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    action = models.CharField(max_length=64)
    detail = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(default=dj_timezone.now, db_index=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.created_at:%Y-%m-%d %H:%M} {self.actor} {self.action} {self.function_name}"


class CliLoginRequest(models.Model):
    """A pending ``hks login`` (device flow): the CLI polls with a secret device code while a signed-in
    user approves the short user code in the portal. Only the device code's SHA-256 is stored, and the
    approved login yields one API token, once."""

    user_code = models.CharField(max_length=9, unique=True)
    device_code_hash = models.CharField(max_length=64, unique=True, editable=False)
    client_name = models.CharField(max_length=100, blank=True)
    created_at = models.DateTimeField(default=dj_timezone.now)
    expires_at = models.DateTimeField()
    approved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    approved_at = models.DateTimeField(null=True, blank=True)
    token = models.ForeignKey(ApiToken, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    consumed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"CLI login {self.user_code}"

    @property
    def is_expired(self) -> bool:
        return self.expires_at <= dj_timezone.now()


class AgentCredential(models.Model):
    """A project-bound secret an AI agent exchanges for short-lived internal JWTs.

    Only the secret's SHA-256 is stored; revoking it stops every token minted from it at once.
    """

    PREFIX = "hksa_"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="agent_credentials")
    name = models.CharField(max_length=100)
    key_prefix = models.CharField(max_length=13, editable=False)
    key_hash = models.CharField(max_length=64, unique=True, editable=False)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=dj_timezone.now)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.project.slug}: {self.name} ({self.key_prefix}…)"

    @classmethod
    def issue(cls, *, project: Project, name: str, user=None) -> tuple["AgentCredential", str]:
        plaintext = cls.PREFIX + secrets.token_urlsafe(32)
        credential = cls.objects.create(
            project=project,
            name=name,
            key_prefix=plaintext[:13],
            key_hash=hash_token(plaintext),
            created_by=user if user is not None and user.is_authenticated else None,
        )
        return credential, plaintext

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None


class SessionStatus(models.TextChoices):
    RUNNING = "running"  # on Knative also while its pod starts (no agent_port yet)
    KILLED = "killed"
    EXPIRED = "expired"
    FAILED = "failed"  # its pod never became ready (Knative)


class AgentSession(models.Model):
    """An agent's stateful sandbox (a Python kernel, files, commands) that lives until killed or its
    deadline; what E2B's SDK calls a sandbox. Its tokens are derived from the id (agents/sessions.py)."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="agent_sessions")
    credential = models.ForeignKey(AgentCredential, on_delete=models.SET_NULL, null=True, blank=True)
    sandbox_id = models.CharField(max_length=40, unique=True)
    template = models.CharField(max_length=100, default="code-interpreter-v1")
    metadata = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=16, choices=SessionStatus.choices, default=SessionStatus.RUNNING)
    agent_host = models.CharField(max_length=100, blank=True)
    agent_port = models.PositiveIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(default=dj_timezone.now)
    expires_at = models.DateTimeField()
    ended_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["project", "status"]), models.Index(fields=["status", "expires_at"])]

    def __str__(self) -> str:
        return self.sandbox_id


class AgentUsage(models.Model):
    """What a project's agents used in one hour (UTC): executions started, sessions created, and the CPU
    seconds their sandboxes spent (the runtime's cgroup or process figures, a session pod's own report),
    and how many of them had no figure. One row per project per hour, so the table stays bounded; written
    only by ``services.usage``."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="agent_usage")
    hour = models.DateTimeField()
    executions = models.PositiveIntegerField(default=0)
    sessions = models.PositiveIntegerField(default=0)
    cpu_seconds = models.FloatField(default=0.0)
    # executions and sessions whose CPU time had no figure (services/usage.py): in cpu_seconds as 0
    cpu_unmeasured = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["-hour"]
        constraints = [models.UniqueConstraint(fields=["project", "hour"], name="unique_agent_usage_hour")]

    def __str__(self) -> str:
        return f"{self.project.slug} @ {self.hour:%Y-%m-%d %H}:00"
