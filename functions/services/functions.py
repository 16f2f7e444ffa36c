"""Writes to functions: create, deploy (build, then deploy a revision), settings, rollback, delete. Tasks are
enqueued on commit (functions/services/enqueue.py) and take ids; the backend calls they drive run here."""

from __future__ import annotations

import datetime as dt
import logging
import time

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.files.base import ContentFile
from django.db import IntegrityError, transaction
from django.db.models import F, Q
from django.utils import timezone

from functions.backends import BackendError, function_ref, get_backend
from functions.backends.base import BuildSpec, Resources, Scale, ServiceSpec
from functions.errors import ServiceError
from functions.models import (
    Backend,
    Build,
    BuildStatus,
    Function,
    FunctionStatus,
    Membership,
    Project,
    Revision,
    Role,
    SandboxProfile,
)
from functions.secret_env import MAX_SECRET_BYTES, secret_env_updated, secret_env_version, secret_values
from functions.services import enqueue, storage, usage
from functions.services.audit import audit
from functions.sources.archives import ArchiveError, inspect_archive
from functions.sources.funcyaml import FuncYamlError, parse_func_yaml
from functions.validators import check_env, validate_dns_label

log = logging.getLogger(__name__)


# Projects and members -----------------------------------------------------------------------------


@transaction.atomic
def membership_set(*, project: Project, user, role: str, actor) -> Membership:
    owners = project.memberships.filter(role=Role.OWNER)
    if role != Role.OWNER and owners.filter(user=user).exists() and owners.count() == 1:
        raise ServiceError("a project needs at least one owner", code=409)
    membership, _ = Membership.objects.update_or_create(project=project, user=user, defaults={"role": role})
    audit(project=project, action="member.set", actor=actor, user=user.username, role=role)
    return membership


@transaction.atomic
def membership_remove(*, project: Project, user, actor) -> None:
    owners = project.memberships.filter(role=Role.OWNER)
    if owners.filter(user=user).exists() and owners.count() == 1:
        raise ServiceError("a project needs at least one owner", code=409)
    project.memberships.filter(user=user).delete()
    audit(project=project, action="member.remove", actor=actor, user=user.username)


# Functions ----------------------------------------------------------------------------------------


def _check_quota(project: Project, *, ephemeral: bool) -> None:
    alive = Function.objects.alive().filter(project=project)
    if alive.filter(ephemeral=False).count() >= project.max_functions and not ephemeral:
        raise ServiceError(
            f"project {project.slug} has reached its quota of {project.max_functions} functions", code=403
        )
    active_agents = alive.filter(ephemeral=True).exclude(status=FunctionStatus.DELETING).count()
    if ephemeral and active_agents >= project.max_agent_functions:
        raise ServiceError(
            f"project {project.slug} already runs {active_agents} agent functions "
            f"(its quota is {project.max_agent_functions})",
            code=429,
            retry_after=1,  # an agent function is deleted once it has answered: seconds, usually
        )


def _check_resources(project: Project, *, cpu_millicores: int, memory_mb: int) -> None:
    if cpu_millicores > project.max_cpu_millicores:
        raise ServiceError(
            f"cpu {cpu_millicores}m is over the project's cap of {project.max_cpu_millicores}m"
        )
    if memory_mb > project.max_memory_mb:
        raise ServiceError(f"memory {memory_mb}Mi is over the project's cap of {project.max_memory_mb}Mi")


@transaction.atomic
def function_create(
    *,
    project: Project,
    name: str,
    runtime: str,
    user,
    kind: str = "http",
    ephemeral: bool = False,
    ttl_seconds: int | None = None,
    sandbox_profile: str = SandboxProfile.STANDARD,
) -> Function:
    try:
        validate_dns_label(name)
    except ValidationError as exc:
        raise ServiceError(exc.messages[0]) from exc
    if runtime not in ("node", "python"):
        raise ServiceError(f"runtime {runtime!r} is not supported (use node or python)")
    Project.objects.select_for_update(no_key=True).get(pk=project.pk)  # serialise quota checks per project
    if Function.objects.alive().filter(project=project, name=name).exists():
        raise ServiceError(f"a function named {name!r} already exists in {project.slug}", code=409)
    _check_quota(project, ephemeral=ephemeral)
    expires_at = None
    if ephemeral:
        expires_at = timezone.now() + dt.timedelta(seconds=ttl_seconds or settings.HKS_EPHEMERAL_TTL_SECONDS)
    try:
        function = Function.objects.create(
            project=project,
            name=name,
            runtime=runtime,
            kind=kind,
            created_by=user if user and user.is_authenticated else None,
            ephemeral=ephemeral,
            expires_at=expires_at,
            sandbox_profile=SandboxProfile.RESTRICTED if ephemeral else sandbox_profile,
            visibility="cluster-local" if ephemeral else "public",
        )
    except IntegrityError as exc:
        raise ServiceError(f"a function named {name!r} already exists in {project.slug}", code=409) from exc
    audit(project=project, function=function, action="function.create", actor=user, runtime=runtime)
    return function


def _checked_env(env) -> dict[str, str]:
    try:
        return check_env(env)
    except ValueError as exc:
        raise ServiceError(str(exc)) from exc


def _apply_config(function: Function, config) -> None:
    function.kind = config.kind
    if config.envs:
        function.env = _checked_env({**config.envs, **function.env})
    scale = config.scale
    function.min_scale = scale.get("min", function.min_scale)
    function.max_scale = scale.get("max", function.max_scale)
    function.target_concurrency = scale.get("target", function.target_concurrency)
    if config.cpu_millicores:
        function.cpu_millicores = config.cpu_millicores
    if config.memory_mb:
        function.memory_mb = config.memory_mb
    if config.container_concurrency is not None:
        function.container_concurrency = config.container_concurrency
    if function.min_scale > function.max_scale:
        raise ServiceError(f"min scale {function.min_scale} cannot be above max scale {function.max_scale}")


@transaction.atomic
def function_deploy(*, function: Function, archive: bytes, user) -> Revision:
    """Store a new immutable revision from an uploaded archive and start building it.

    The archive is checked completely before anything is written, so a refused one changes nothing.
    """
    if not function.is_alive:
        raise ServiceError(f"function {function.name} is being deleted", code=409)
    enqueue.tasks_queue_check()
    try:
        info = inspect_archive(archive)
        config = parse_func_yaml(info.func_yaml)
    except (ArchiveError, FuncYamlError) as exc:
        raise ServiceError(str(exc)) from exc
    if config.runtime != function.runtime:
        raise ServiceError(
            f"func.yaml says runtime {config.runtime!r} but {function.name} is a {function.runtime} function"
        )
    # The project's row first (as function_create): concurrent uploads to its functions check the storage
    # quota one after another, so two cannot both fit in the same free space. FOR NO KEY UPDATE, here and for
    # every lock on a project or function row: it orders the lockers, but does not stop other transactions
    # inserting rows that refer to the row (PostgreSQL's FOR KEY SHARE), such as the audit event a prune
    # writes while it holds the function's lock - with FOR UPDATE the two deadlocked.
    project = Project.objects.select_for_update(no_key=True).get(pk=function.project_id)
    storage.storage_quota_check(project=project, adding=len(archive))
    function = Function.objects.select_for_update(no_key=True).get(pk=function.pk)
    _apply_config(function, config)
    _check_resources(function.project, cpu_millicores=function.cpu_millicores, memory_mb=function.memory_mb)
    last = function.revisions.order_by("-number").first()
    revision = Revision(
        function=function,
        number=(last.number + 1) if last else 1,
        content_hash=info.content_hash,
        size_bytes=info.size_bytes,
        config=info.func_yaml,
        created_by=user if user and user.is_authenticated else None,
    )
    revision.archive.save(
        f"{function.project.slug}-{function.name}-{revision.number}.tar.gz", ContentFile(archive), save=False
    )
    try:
        return _revision_store(function, revision, info, user)
    except BaseException:
        # The file is written before its row: whatever fails below, the file goes too, so a refused
        # deploy leaves nothing in media/ (the rows roll back with the transaction).
        revision.archive.delete(save=False)
        raise


def function_deploy_or_create(
    *, project: Project, function: Function | None, name: str, runtime: str | None, archive: bytes, user
) -> tuple[Function, Revision]:
    """Deploy ``archive`` to ``function``, creating it first (``name``, ``runtime``) when it is ``None`` -
    what ``hks-func deploy`` does. A refused archive leaves nothing behind, not even the new function.
    Returns the function (with its project and current revision loaded) and the new revision."""
    with transaction.atomic():
        if function is None:
            function = function_create(project=project, name=name, runtime=runtime, user=user)
        revision = function_deploy(function=function, archive=archive, user=user)
    return Function.objects.select_related("project", "current_revision").get(pk=function.pk), revision


def _revision_store(function: Function, revision: Revision, info, user) -> Revision:
    previous = _reusable_revision(function, info.content_hash)
    reusable = previous.artifact if previous else ""
    if previous:
        revision.artifact, revision.artifact_bytes = previous.artifact, previous.artifact_bytes
    try:
        with transaction.atomic():
            revision.save()
    except IntegrityError as exc:  # a concurrent deploy took this number (SQLite cannot lock the row)
        raise ServiceError(
            f"another deploy of {function.name} was stored as revision {revision.number} at the same time; "
            "deploy again",
            code=409,
        ) from exc
    build = Build.objects.create(revision=revision)
    function.desired_revision = revision
    function.status = FunctionStatus.BUILDING if not reusable else FunctionStatus.DEPLOYING
    function.status_message = ""
    function.task_recoveries = 0
    function.save()
    audit(
        project=function.project,
        function=function,
        action="function.deploy",
        actor=user,
        revision=revision.number,
        content_hash=info.content_hash,
    )
    if reusable:
        build.status, build.log = BuildStatus.SUCCEEDED, f"unchanged source; reusing {reusable}\n"
        build.started_at = build.finished_at = timezone.now()
        build.save()
        enqueue.on_commit(function.pk, lambda: enqueue.tasks().functions.deploy_revision.delay(revision.pk))
    else:
        enqueue.on_commit(function.pk, lambda: enqueue.tasks().functions.build_revision.delay(build.pk))
    return revision


def _reusable_revision(function: Function, content_hash: str) -> Revision | None:
    """A built revision of the same source whose artifact the new one may reuse - only one that pruning
    (services/storage.py) cannot take from under it: one of the newest ``HKS_REVISION_HISTORY - 1`` (the new
    revision keeps them among the newest N) or the one the function serves. An older source is built again;
    the runtime answers with its artifact if it is still there, and guards it while the portal records it."""
    recent = function.revisions.order_by("-number").values_list("pk", flat=True)
    kept = Q(pk__in=list(recent[: settings.HKS_REVISION_HISTORY - 1]))
    if function.current_revision_id:
        kept |= Q(pk=function.current_revision_id)
    same = Revision.objects.filter(function=function, content_hash=content_hash).exclude(artifact="")
    return same.filter(kept).order_by("-number").first()


def build_run(*, build: Build) -> bool:
    """Run a build on the backend. Returns True when the revision has an artifact to deploy."""
    revision = build.revision
    if build.status == BuildStatus.SUCCEEDED and revision.artifact:
        return True  # already done: running the task twice changes nothing
    function = revision.function
    if not function.is_alive:
        return False
    Build.objects.filter(pk=build.pk).update(status=BuildStatus.RUNNING, started_at=timezone.now(), log="")
    lines: list[str] = []

    def on_log(line: str) -> None:
        lines.append(line)
        if len(lines) % 20 == 0:
            Build.objects.filter(pk=build.pk).update(log="\n".join(lines) + "\n")

    spec = BuildSpec(
        ref=function_ref(function),
        revision=revision.name,
        runtime=function.runtime,
        archive_path=revision.archive.path,
        content_hash=revision.content_hash,
        kind=function.kind,
        sandbox_profile=function.sandbox_profile,
    )
    result = get_backend(function.project).build(spec, on_log=on_log)
    Revision.objects.filter(pk=revision.pk).update(
        artifact=result.artifact, artifact_bytes=result.artifact_bytes
    )
    Build.objects.filter(pk=build.pk).update(
        status=BuildStatus.SUCCEEDED,
        finished_at=timezone.now(),
        log="\n".join(lines) + "\n" if lines else result.log,
    )
    return True


def build_wait(*, build: Build) -> None:
    """Say on a queued build why it has not started: its project's other builds hold every build slot
    (services/build_slots.py)."""
    running = settings.HKS_BUILDS_PER_PROJECT
    Build.objects.filter(pk=build.pk, status=BuildStatus.QUEUED).update(
        log=f"waiting: {running} build{'s' if running != 1 else ''} of this project already running "
        "(builds of a project run one after another; other projects are not held up)\n"
    )


def build_fail(*, build: Build, message: str) -> None:
    """Record a build's failure - unless it already succeeded (a duplicate run failing late is stale)."""
    updated = (
        Build.objects.filter(pk=build.pk)
        .exclude(status=BuildStatus.SUCCEEDED)
        .update(
            status=BuildStatus.FAILED,
            finished_at=timezone.now(),
            message=message,
            log=(build.log or "") + f"\n{message}\n",
        )
    )
    if not updated:
        return
    revision = build.revision
    function = Function.objects.filter(pk=revision.function_id)
    if function.exclude(desired_revision=None).exclude(desired_revision=revision).exists():
        return  # an older build failing late: said on its build, not on a function a newer revision serves
    function.filter(desired_revision=revision).update(desired_revision=F("current_revision"))
    function_mark_failed(function=revision.function, message=f"build failed: {message}")


def function_mark_failed(*, function: Function, message: str) -> None:
    Function.objects.filter(pk=function.pk).exclude(
        status__in=[FunctionStatus.DELETING, FunctionStatus.DELETED]
    ).update(status=FunctionStatus.FAILED, status_message=message[:4000], task_recoveries=0)
    # A deletion that failed stays "deleting" (it must not serve again) but says why; DELETE retries it.
    deleting = Function.objects.filter(pk=function.pk, status=FunctionStatus.DELETING)
    deleting.update(status_message=message[:4000])
    audit(project=function.project, function=function, action="function.failed", message=message[:500])
    enqueue.push(function.pk)


def service_spec(function: Function, revision: Revision) -> ServiceSpec:
    labels = {"hks.dev/project": function.project.slug, "hks.dev/function": function.name}
    if function.ephemeral and function.expires_at:
        labels["hks.dev/ephemeral"] = "true"
        labels["hks.dev/expires-at"] = str(int(function.expires_at.timestamp()))
    return ServiceSpec(
        ref=function_ref(function),
        revision=revision.name,
        runtime=function.runtime,
        kind=function.kind,
        artifact=revision.artifact,
        # a name that is secret takes its secret value, whatever func.yaml or the plain env says
        env={str(k): str(v) for k, v in function.env.items() if k not in (function.secret_env or {})},
        secret_env=secret_values(function),
        secret_env_version=secret_env_version(function),
        scale=Scale(
            function.min_scale,
            function.max_scale,
            function.target_concurrency,
            function.container_concurrency,
        ),
        resources=Resources(function.cpu_millicores, function.memory_mb),
        timeout_seconds=function.timeout_seconds,
        sandbox_profile=function.sandbox_profile,
        visibility=function.visibility,
        labels=labels,
        project_max_instances=function.project.max_instances,
    )


def revision_deploy_run(*, revision: Revision, wait_seconds: float = 120) -> bool:
    """Apply a built revision and wait for it to be ready; raise BackendError when it is not. Returns True
    when the revision serves now (its function's older revisions may then be pruned), False when the
    function went or a newer revision was asked for meanwhile."""
    function = Function.objects.select_related("project").get(pk=revision.function_id)
    if not function.is_alive:
        return False
    if function.desired_revision_id not in (None, revision.pk):
        log.info(
            "not deploying %s: revision %s was asked for since", revision.name, function.desired_revision_id
        )
        return False
    Function.objects.filter(pk=function.pk).update(status=FunctionStatus.DEPLOYING)
    enqueue.push(function.pk)
    backend = get_backend(function.project)
    backend.apply(service_spec(function, revision))
    started = time.monotonic()
    deadline = started + wait_seconds
    status = backend.status(function_ref(function))
    while not (status.ready and status.latest_ready_revision == revision.name):
        if status.failed:
            raise BackendError(status.message or f"revision {revision.name} failed", permanent=True)
        if time.monotonic() > deadline:
            raise BackendError(status.message or f"revision {revision.name} did not become ready")
        time.sleep(backend.status_poll_seconds(time.monotonic() - started))  # the backend's own pace
        status = backend.status(function_ref(function))
    # A repeated run for the revision already serving keeps its deploy time: running twice changes nothing.
    redeployed = function.current_revision_id == revision.pk and function.deployed_at is not None
    Function.objects.filter(pk=function.pk).exclude(
        status__in=[FunctionStatus.DELETING, FunctionStatus.DELETED]
    ).update(
        status=FunctionStatus.READY,
        status_message="",
        task_recoveries=0,
        current_revision=revision,
        url=status.url,
        internal_url=status.internal_url,
        replicas=status.replicas,
        deployed_at=function.deployed_at if redeployed else timezone.now(),
    )
    enqueue.push(function.pk)
    return True


@transaction.atomic
def revision_rollback(*, function: Function, revision: Revision, user) -> None:
    # The function's row lock orders this with pruning (services/storage.py), which holds it too.
    Function.objects.select_for_update(no_key=True).filter(pk=function.pk).first()
    if not Revision.objects.filter(pk=revision.pk).exists():
        raise ServiceError(
            f"revision {revision.number} is no longer stored: a function keeps its newest "
            f"{settings.HKS_REVISION_HISTORY} revisions and the one it serves",
            code=409,
        )
    if not revision.artifact:
        raise ServiceError(f"revision {revision.number} was never built; it cannot take traffic", code=409)
    enqueue.tasks_queue_check()
    Function.objects.filter(pk=function.pk).update(
        status=FunctionStatus.DEPLOYING, status_message="", desired_revision=revision, task_recoveries=0
    )
    audit(
        project=function.project,
        function=function,
        action="function.rollback",
        actor=user,
        revision=revision.number,
    )
    enqueue.on_commit(function.pk, lambda: enqueue.tasks().functions.deploy_revision.delay(revision.pk))


MAX_SECRETS = 100


def _apply_secret_changes(function: Function, secrets: dict[str, str | None]) -> list[str]:
    """Set (a value) or remove (``None``) secrets; a name becoming secret leaves the plain env."""
    for name, value in secrets.items():
        if value is not None and ("\x00" in value or len(value.encode()) > MAX_SECRET_BYTES):
            raise ServiceError(f"secret {name}: at most {MAX_SECRET_BYTES} bytes, and no NUL character")
    function.secret_env = secret_env_updated(function.secret_env, secrets)
    if len(function.secret_env) > MAX_SECRETS:
        raise ServiceError(f"at most {MAX_SECRETS} secrets per function")
    function.env = {k: v for k, v in function.env.items() if k not in function.secret_env}
    return ["secret_env", "env"]


@transaction.atomic
def function_update_settings(
    *, function: Function, user, secrets: dict[str, str | None] | None = None, **changes
) -> Function:
    """Change settings; ``secrets`` sets (value) or removes (``None``) secret env values by name."""
    allowed = {
        "env",
        "min_scale",
        "max_scale",
        "target_concurrency",
        "container_concurrency",
        "cpu_millicores",
        "memory_mb",
        "timeout_seconds",
    }
    unknown = set(changes) - allowed
    if unknown:
        raise ServiceError(f"unknown settings: {', '.join(sorted(unknown))}")
    if function.desired_revision_id or function.current_revision_id:
        enqueue.tasks_queue_check()  # a deployed function is redeployed with its new settings
    if "env" in changes:
        changes["env"] = _checked_env(changes["env"])
    for key, value in changes.items():
        setattr(function, key, value)
    clashing = sorted(set(changes.get("env", {})) & set(function.secret_env or {}) - set(secrets or {}))
    if clashing:
        raise ServiceError(f"{', '.join(clashing)}: secret; remove the secret first to set a plain value")
    fields = [*changes]
    if secrets:
        fields += _apply_secret_changes(function, secrets)
    if not fields:
        raise ServiceError("nothing to change")
    if function.min_scale > function.max_scale:
        raise ServiceError("min scale cannot be above max scale")
    limit = settings.HKS_KNATIVE_MAX_TIMEOUT_SECONDS
    if function.project.backend == Backend.KNATIVE and function.timeout_seconds > limit:
        raise ServiceError(
            f"timeout_seconds {function.timeout_seconds} is over this cluster's limit of {limit} s "
            "(Knative's max-revision-timeout-seconds)"
        )
    _check_resources(function.project, cpu_millicores=function.cpu_millicores, memory_mb=function.memory_mb)
    function.save(update_fields=[*set(fields), "updated_at"])  # not the status or revisions a task moves on
    detail = {"secrets_set": sorted(k for k, v in secrets.items() if v is not None)} if secrets else {}
    if secrets and any(v is None for v in secrets.values()):
        detail["secrets_removed"] = sorted(k for k, v in secrets.items() if v is None)
    audit(  # names only, never a value
        project=function.project,
        function=function,
        action="function.settings",
        actor=user,
        changed=sorted(changes),
        **detail,
    )
    # New settings apply to the revision the function is moving to (as Knative stamps a new revision from
    # its latest template): one still building picks them up when its deploy runs.
    fresh = Function.objects.select_related("desired_revision", "current_revision").get(pk=function.pk)
    target = fresh.desired_revision or fresh.current_revision
    if target is not None and target.artifact:
        transaction.on_commit(
            lambda: enqueue.enqueue(
                function.pk, lambda: enqueue.tasks().functions.deploy_revision.delay(target.pk)
            )
        )
    return function


@transaction.atomic
def function_delete(*, function: Function, user) -> None:
    if function.status == FunctionStatus.DELETED:
        return
    enqueue.tasks_queue_check()
    # Only the call that moves it to deleting records it (concurrent calls: once); every call enqueues the
    # idempotent task, so asking again retries a deletion that got stuck.
    alive = Function.objects.filter(pk=function.pk).exclude(
        status__in=[FunctionStatus.DELETING, FunctionStatus.DELETED]
    )
    if alive.update(status=FunctionStatus.DELETING):
        audit(project=function.project, function=function, action="function.delete", actor=user)
    enqueue.on_commit(function.pk, lambda: enqueue.tasks().functions.delete_function.delay(function.pk))


def function_delete_run(*, function: Function) -> None:
    backend = get_backend(function.project)
    for schedule in function.schedules.all():
        backend.delete_schedule(function_ref(function), schedule.name)
    cpu = backend.delete(function_ref(function))
    done = (
        Function.objects.filter(pk=function.pk)
        .exclude(status=FunctionStatus.DELETED)
        .update(status=FunctionStatus.DELETED, deleted_at=timezone.now(), replicas=0)
    )
    if done and function.ephemeral:  # an agent's code: its instances' CPU goes to the project's usage
        usage.cpu_finished(project=function.project, cpu_seconds=cpu)
    enqueue.push(function.pk)


def functions_collect_expired(*, now: dt.datetime | None = None) -> int:
    now = now or timezone.now()
    expired = (
        Function.objects.alive()
        .filter(ephemeral=True, expires_at__lte=now)
        .exclude(status=FunctionStatus.DELETING)
    )
    count = 0
    for function in expired.select_related("project"):
        function_delete(function=function, user=None)
        count += 1
    return count
