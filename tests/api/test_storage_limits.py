"""What one tenant may keep on the disk every tenant shares: a function's revision history is pruned past
HKS_REVISION_HISTORY (archives and artifacts leave the disk, a shared artifact and the serving revision
stay), and a project's uploads stop at its storage quota while another project deploys on. Real worker,
real runtime daemon (sandboxed builds). Debian package: bubblewrap."""

import base64
import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.db import connection

from functions import selectors
from functions.models import AuditEvent, Function, FunctionStatus, Revision
from functions.services import storage as services_storage
from tests.support.archive_samples import node_archive
from tests.support.daemon_helpers import wait_until

pytestmark = [pytest.mark.runtime, pytest.mark.usefixtures("local_backend_settings")]

HISTORY = 2


@pytest.fixture(autouse=True)
def short_history(settings):
    settings.HKS_REVISION_HISTORY = HISTORY


@pytest.fixture
def source(request):
    """Version ``n`` of a function's source, this test's own: the runtime daemon outlives a test (and its
    database), and functions of an earlier test still serve the artifacts of their sources."""

    def make(n: int) -> bytes:
        handler = f"module.exports = {{ handle: async () => ({{ version: {n} }}) }};\n"
        return f"// {request.node.name}\n{handler}".encode()

    return make


def _upload(client, name: str, body: bytes, project: str = "acme"):
    return client.post(
        f"/api/v1/projects/{project}/functions/{name}/revisions?create=true&runtime=node",
        node_archive(body=body),
        content_type="application/gzip",
    )


def _deploy(client, name: str, body: bytes, project: str = "acme") -> Revision:
    """Upload and wait until the new revision serves."""
    uploaded = _upload(client, name, body, project)
    assert uploaded.status_code == 201, uploaded.json()
    number = uploaded.json()["revision"]["number"]

    def served():
        function = Function.objects.get(project__slug=project, name=name)
        assert function.status != FunctionStatus.FAILED, function.status_message
        return function.status == FunctionStatus.READY and function.current_revision.number == number

    wait_until(served, 300, f"{name} revision {number} to serve")
    return Revision.objects.get(function__project__slug=project, function__name=name, number=number)


def _version(client, name: str) -> int:
    """Which source the function serves."""
    answer = client.post(
        f"/api/v1/projects/acme/functions/{name}/invoke", {"method": "GET"}, content_type="application/json"
    )
    assert answer.json()["status"] == 200, answer.json()
    return json.loads(answer.json()["body"])["version"]


def _numbers(function: Function) -> list[int]:
    return sorted(Revision.objects.filter(function=function).values_list("number", flat=True))


def _pruned_to(function: Function, numbers: list[int]) -> None:
    """Wait for the prune after the last deploy; an artifact the runtime still drained then is freed by the
    catch-up (beat's), run here."""

    def done():
        if _numbers(function) != numbers:
            services_storage.revisions_prune(function=function)
        return _numbers(function) == numbers

    wait_until(done, 60, f"{function.name} pruned to {numbers}")


def test_a_function_keeps_its_newest_revisions_and_the_older_ones_leave_the_disk(
    celery_worker, source, project, developer, api_client_for
):
    client = api_client_for(developer)
    revisions = [_deploy(client, "hello", source(n)) for n in range(1, HISTORY + 4)]
    function = Function.objects.get(name="hello")
    older, newest = revisions[:-HISTORY], revisions[-HISTORY:]
    assert len({r.artifact for r in revisions}) == len(revisions)  # changed source: an artifact each

    _pruned_to(function, [r.number for r in newest])
    assert not any(Path(r.archive.path).exists() for r in older)
    assert not any(Path(r.artifact).exists() for r in older)
    assert all(Path(r.archive.path).is_file() and Path(r.artifact).is_dir() for r in newest)
    assert all(r.artifact_bytes >= len(source(1)) for r in newest)  # measured by the runtime
    pruned = AuditEvent.objects.filter(function=function, action="function.revisions_pruned")
    assert sorted(n for e in pruned for n in e.detail["revisions"]) == [r.number for r in older]
    assert _version(client, "hello") == HISTORY + 3

    gone = client.post(f"/api/v1/projects/acme/functions/hello/revisions/{older[0].number}/rollback")
    assert gone.status_code == 404 and "no longer stored" in gone.json()["detail"]
    assert client.get(f"/api/v1/projects/acme/functions/hello/revisions/{older[0].number}").status_code == 404


def test_an_artifact_another_function_shares_survives_the_pruning(
    celery_worker, source, project, developer, api_client_for
):
    client = api_client_for(developer)
    shared = _deploy(client, "first", source(0))
    other = _deploy(client, "second", source(0))  # the same source: the runtime shares the artifact
    assert other.artifact == shared.artifact
    for n in range(1, HISTORY + 1):
        _deploy(client, "first", source(n))
    _pruned_to(Function.objects.get(name="first"), [2, 3])
    assert not Path(shared.archive.path).exists()
    assert Path(shared.artifact).is_dir()
    assert _version(client, "second") == 0


def test_the_revision_a_rollback_serves_is_kept(
    celery_worker, source, project, developer, api_client_for, settings, client
):
    settings.HKS_REVISION_HISTORY = 3
    api = api_client_for(developer)
    first, second, third = (_deploy(api, "hello", source(n)) for n in (1, 2, 3))
    assert api.post("/api/v1/projects/acme/functions/hello/revisions/1/rollback").status_code == 202
    function = wait_until(
        lambda: Function.objects.filter(
            name="hello", status=FunctionStatus.READY, current_revision=first
        ).first(),
        120,
        "the rollback",
    )
    settings.HKS_REVISION_HISTORY = 1  # an operator lowers it: beat's catch-up prunes
    assert function.pk in services_storage.functions_prune_due()
    _pruned_to(function, [1, 3])
    assert not Path(second.archive.path).exists() and not Path(second.artifact).exists()
    assert Path(first.artifact).is_dir() and Path(third.artifact).is_dir()
    assert _version(api, "hello") == 1

    refused = api.post("/api/v1/projects/acme/functions/hello/revisions/2/rollback")
    assert refused.status_code == 404 and "no longer stored" in refused.json()["detail"]
    client.force_login(developer)
    page = client.post("/p/acme/f/hello/revisions/2/rollback/")
    assert page.status_code == 404


def _big_source(size: int, source) -> bytes:
    """Source that neither gzip nor the quota can shrink: random bytes in a comment."""
    return b"/* " + base64.b64encode(os.urandom(size)) + b" */\n" + source(1)


def test_a_project_at_its_storage_quota_is_refused_and_another_deploys_meanwhile(
    celery_worker, source, project, developer, outsider, api_client_for, media_files
):
    project.max_storage_mb = 1
    project.save()
    ours, theirs = api_client_for(developer), api_client_for(outsider)
    # ~0.5 MiB of archive and ~0.65 MiB of artifact: past the 1 MiB
    big = _deploy(ours, "big", _big_source(500_000, source))
    used = selectors.project_storage_used(project=project)
    assert used == big.size_bytes + big.artifact_bytes > 1 << 20
    files, functions, revisions = media_files(), Function.objects.count(), Revision.objects.count()

    def refused(name: str):
        try:
            return _upload(ours, name, source(2))
        finally:
            connection.close()

    def accepted():
        try:
            return _upload(theirs, "hello", source(2), project="globex")
        finally:
            connection.close()

    with ThreadPoolExecutor(3) as pool:  # at the same time
        answers = [pool.submit(refused, "small"), pool.submit(refused, "big"), pool.submit(accepted)]
        new_function, new_revision, other = (a.result() for a in answers)
    for answer in (new_function, new_revision):
        assert answer.status_code == 409, answer.json()
        detail = answer.json()["detail"]
        assert "storage quota of 1 MiB" in detail and f"{used / (1 << 20):.1f} MiB" in detail
        assert "deleting functions" in detail and "HKS_REVISION_HISTORY" in detail
    assert other.status_code == 201, other.json()
    wait_until(lambda: Function.objects.get(project__slug="globex").status == FunctionStatus.READY, 300, "B")
    assert not Function.objects.filter(project=project, name="small").exists()
    assert Function.objects.count() == functions + 1 and Revision.objects.count() == revisions + 1
    theirs_archive = Revision.objects.get(function__project__slug="globex").archive.name
    assert [f for f in media_files() if f not in files] == [Path(theirs_archive)]
    usage = ours.get("/api/v1/projects/acme/usage").json()
    assert usage["storage_used_bytes"] == used and usage["max_storage_mb"] == 1


def test_the_quota_counts_an_artifact_two_functions_share_once(
    celery_worker, source, project, developer, api_client_for, owner, client
):
    api = api_client_for(developer)
    first = _deploy(api, "first", source(7))
    second = _deploy(api, "second", source(7))
    third = _deploy(api, "third", source(8))
    assert first.artifact == second.artifact != third.artifact
    archives = first.size_bytes + second.size_bytes + third.size_bytes
    assert first.artifact_bytes > 0 and third.artifact_bytes > 0
    used = selectors.project_storage_used(project=project)
    assert used == archives + first.artifact_bytes + third.artifact_bytes

    shown = f"{used / (1 << 20):.1f}"
    client.force_login(owner)
    page = client.get("/p/acme/usage/").content.decode()
    assert f"{shown} MiB</td>" in page and "5120 MiB" in page
    operator = get_user_model().objects.create_superuser("ops", "ops@example.com", "pw-for-tests-only")
    client.force_login(operator)
    ops = client.get("/ops/").content.decode()
    assert f'id="ops-storage-acme">{shown} / 5120<' in ops
    change = client.get(f"/admin/functions/project/{project.pk}/change/").content.decode()
    assert f"{shown} MiB of 5120 MiB" in change and 'name="max_storage_mb"' in change
    assert 'name="form-0-max_storage_mb"' in client.get("/admin/functions/project/").content.decode()
