"""Deleted functions give their storage back: archives, artifacts and rows after the retention period (a
controlled clock), an agent's function at once; an artifact another function shares stays. Real worker,
real runtime daemon (sandboxed builds). Debian package: bubblewrap."""

import datetime as dt
from pathlib import Path

import httpx
import pytest
from django.test import Client
from django.utils import timezone

from functions.models import AgentCredential, AuditEvent, Function, FunctionStatus, Revision
from functions.services import storage as services_storage
from tests.support.archive_samples import node_archive
from tests.support.daemon_helpers import wait_until

pytestmark = [pytest.mark.runtime, pytest.mark.usefixtures("local_backend_settings")]

INDEX = b"module.exports = { handle: async () => ({ ok: true }) };\n"


def _deploy(client, name: str, body: bytes = INDEX) -> Function:
    uploaded = client.post(
        f"/api/v1/projects/acme/functions/{name}/revisions?create=true&runtime=node",
        node_archive(body=body),
        content_type="application/gzip",
    )
    assert uploaded.status_code == 201, uploaded.json()
    wait_until(
        lambda: Function.objects.get(name=name).status in (FunctionStatus.READY, FunctionStatus.FAILED),
        300,
        f"{name} to deploy",
    )
    function = Function.objects.get(name=name)
    assert function.status == FunctionStatus.READY, function.status_message
    return function


def _delete(client, name: str) -> Function:
    function = Function.objects.get(name=name)
    assert client.delete(f"/api/v1/projects/acme/functions/{name}").status_code == 202
    deleted = lambda: Function.objects.get(pk=function.pk).status == FunctionStatus.DELETED  # noqa: E731
    wait_until(deleted, 60, "the delete")
    return Function.objects.get(pk=function.pk)


def _files(function: Function) -> tuple[list[Path], list[Path]]:
    revisions = Revision.objects.filter(function=function)
    return [Path(r.archive.path) for r in revisions], [Path(r.artifact) for r in revisions]


def test_a_deleted_functions_storage_goes_after_the_retention_period(
    celery_worker, project, developer, api_client_for, settings
):
    client = api_client_for(developer)
    _deploy(client, "hello")
    function = _delete(client, "hello")
    archives, artifacts = _files(function)
    assert all(p.is_file() for p in archives) and all(p.is_dir() for p in artifacts)

    retention = dt.timedelta(seconds=settings.HKS_DELETED_RETENTION_SECONDS)
    now = timezone.now()
    assert services_storage.functions_reclaim_due(now=now + retention - dt.timedelta(minutes=1)) == []
    assert services_storage.functions_reclaim_due(now=now + retention + dt.timedelta(minutes=1)) == [
        function.pk
    ]
    assert services_storage.function_storage_reclaim(function=function)

    assert not any(p.exists() for p in archives) and not any(p.exists() for p in artifacts)
    assert not Function.objects.filter(pk=function.pk).exists()
    assert not Revision.objects.filter(function_id=function.pk).exists()
    assert AuditEvent.objects.filter(
        function_name="hello", action="function.delete"
    ).exists()  # history stays


def test_an_artifact_another_function_shares_is_kept(celery_worker, project, developer, api_client_for):
    client = api_client_for(developer)
    _deploy(client, "first")
    second = _deploy(client, "second")  # the same source: the runtime shares the artifact
    function = _delete(client, "first")
    archives, artifacts = _files(function)
    assert artifacts == _files(second)[1]
    assert services_storage.function_storage_reclaim(function=function)
    assert not any(p.exists() for p in archives)
    assert all(p.is_dir() for p in artifacts)
    answer = client.post(
        "/api/v1/projects/acme/functions/second/invoke", {"method": "GET"}, content_type="application/json"
    )
    assert answer.json()["status"] == 200


def test_the_runtime_refuses_to_free_an_artifact_a_function_serves(
    celery_worker, project, developer, api_client_for, runtime_daemon
):
    function = _deploy(api_client_for(developer), "hello")
    artifact = Path(Revision.objects.get(function=function).artifact)
    url = f"{runtime_daemon.control_url}/v1/artifacts/{artifact.name}"
    refused = httpx.delete(url, headers=runtime_daemon.headers)
    assert refused.status_code == 409 and "in use" in refused.json()["error"]
    assert artifact.is_dir()
    bad = httpx.delete(f"{runtime_daemon.control_url}/v1/artifacts/..%2F..", headers=runtime_daemon.headers)
    assert bad.status_code in (400, 404)


def test_a_replaced_revision_scaled_to_zero_frees_its_artifact_at_once(
    celery_worker, project, developer, api_client_for, runtime_daemon
):
    """A revision replaced while it ran no instance is not kept "in use" by the runtime: its artifact can
    be freed at once (pruning, reclaim), not only once some other instance of the function has exited."""
    client = api_client_for(developer)
    function = _deploy(client, "idle", body=INDEX.replace(b"true", b"1"))
    first = Path(Revision.objects.get(function=function, number=1).artifact)
    status = f"{runtime_daemon.control_url}/v1/namespaces/{project.effective_namespace}/functions/idle"
    wait_until(
        lambda: not httpx.get(status, headers=runtime_daemon.headers).json()["instances"], 60, "scale to zero"
    )
    _deploy(client, "idle", body=INDEX.replace(b"true", b"2"))
    freed = httpx.delete(
        f"{runtime_daemon.control_url}/v1/artifacts/{first.name}", headers=runtime_daemon.headers
    )
    assert freed.status_code == 200, freed.text
    assert not first.exists()


def _du(*roots: Path) -> int:
    return sum(
        p.stat().st_size for root in roots for p in root.rglob("*") if p.is_file() and not p.is_symlink()
    )


def test_agent_functions_leave_nothing_behind(celery_worker, project, media_root, runtime_daemon):
    _, secret = AgentCredential.issue(project=project, name="reclaim")
    client = Client()
    token = client.post("/internal/v1/token", {"credential": secret}, content_type="application/json").json()
    auth = {"HTTP_AUTHORIZATION": f"Bearer {token['token']}"}
    artifacts_dir = runtime_daemon.data_dir / "artifacts"
    before = _du(media_root, artifacts_dir)
    names = []
    for n in range(3):
        files = {"data.txt": f"payload {n}\n" * 20000}
        deployed = client.post(
            "/internal/v1/operations/deploy-function",
            {"runtime": "python", "code": "open('data.txt').read()[:9]", "files": files},
            content_type="application/json",
            **auth,
        )
        assert deployed.status_code == 202, deployed.content
        names.append(deployed.json()["name"])
    for name in names:
        wait_until(
            lambda n=name: client.get(f"/internal/v1/operations/functions/{n}", **auth).json()["ready"],
            300,
            name,
        )
    assert _du(media_root, artifacts_dir) > before + 3 * 100_000
    for name in names:
        client.post(
            "/internal/v1/operations/delete-function", {"name": name}, content_type="application/json", **auth
        )
    wait_until(lambda: not Function.objects.filter(name__in=names).exists(), 120, "the reclaim")
    assert _du(media_root, artifacts_dir) == before
