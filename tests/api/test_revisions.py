"""Deploying by uploading a source archive; revisions, rollback, builds and their logs."""

import os

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from functions.models import AuditEvent, Build, BuildStatus, Function, FunctionStatus, Revision
from tests.support.archive_samples import HOSTILE, gzip_bomb, node_archive, python_archive

URL = "/api/v1/projects/acme/functions/hello/revisions"
GZIP = "application/gzip"


def upload_raw(client, data: bytes, url: str = URL):
    return client.post(url, data, content_type=GZIP)


def upload_multipart(client, data: bytes, url: str = URL):
    return client.post(url, {"archive": SimpleUploadedFile("src.tar.gz", data, content_type=GZIP)})


@pytest.mark.parametrize("upload", [upload_raw, upload_multipart])
def test_upload_makes_a_revision_and_queues_its_build(
    upload, project, developer, hello, api_client_for, media_files
):
    response = upload(api_client_for(developer), node_archive())
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["revision"]["number"] == 1 and body["revision"]["name"] == "hello-00001"
    assert body["revision"]["build"]["status"] == "queued"
    assert body["function"]["status"] == "building" and body["created_function"] is False
    revision = Revision.objects.get(function=hello)
    assert revision.archive.read() == node_archive()
    assert len(media_files()) == 1


def test_each_upload_is_a_new_numbered_revision(project, developer, hello, api_client_for):
    client = api_client_for(developer)
    upload_raw(client, node_archive())
    response = upload_raw(client, node_archive(body=b"module.exports = { handle: () => 'v2' };"))
    assert response.json()["revision"]["number"] == 2
    assert [r["number"] for r in client.get(URL).json()] == [2, 1]


def test_create_flag_creates_the_function_then_deploys(project, developer, api_client_for):
    response = upload_raw(api_client_for(developer), python_archive(), URL + "?create=true&runtime=python")
    assert response.status_code == 201
    assert response.json()["created_function"] is True
    function = Function.objects.get(project=project, name="hello")
    assert function.runtime == "python" and function.revisions.count() == 1


def test_upload_to_a_missing_function_without_create_is_404(project, developer, api_client_for, media_files):
    response = upload_raw(api_client_for(developer), node_archive())
    assert response.status_code == 404 and "create" in response.json()["detail"]
    assert not Function.objects.exists() and media_files() == []


def test_create_without_runtime_is_refused(project, developer, api_client_for):
    response = upload_raw(api_client_for(developer), node_archive(), URL + "?create=1")
    assert response.status_code == 400 and "runtime" in response.json()["detail"]
    assert not Function.objects.exists()


def test_a_bad_archive_with_create_leaves_no_function_behind(project, developer, api_client_for, media_files):
    response = upload_raw(api_client_for(developer), b"not an archive", URL + "?create=1&runtime=node")
    assert response.status_code == 400
    assert not Function.objects.exists() and not AuditEvent.objects.exists() and media_files() == []


def test_viewer_cannot_deploy(project, viewer, hello, api_client_for, media_files):
    assert upload_raw(api_client_for(viewer), node_archive()).status_code == 403
    assert not Revision.objects.exists() and media_files() == []


def test_unchanged_source_reuses_the_built_artifact(project, developer, built_revision, api_client_for):
    from functions.sources.archives import inspect_archive

    Revision.objects.filter(pk=built_revision.pk).update(
        content_hash=inspect_archive(node_archive()).content_hash
    )
    body = upload_raw(api_client_for(developer), node_archive()).json()
    assert body["revision"]["artifact"] == "/artifacts/hello-00001"
    assert body["revision"]["build"]["status"] == "succeeded"
    assert body["function"]["status"] == "deploying"


# Hostile archives: refused with the reason, and nothing left behind -------------------------------


def _state(function):
    function.refresh_from_db()
    return (
        function.status,
        Revision.objects.count(),
        Build.objects.count(),
        AuditEvent.objects.count(),
        Function.objects.count(),
    )


@pytest.mark.parametrize("kind", sorted(HOSTILE))
@pytest.mark.parametrize("upload", [upload_raw, upload_multipart])
def test_hostile_archive_is_refused_and_leaves_nothing(
    kind, upload, project, developer, hello, api_client_for, media_files, settings
):
    settings.HKS_MAX_UNPACKED_BYTES = 10 * 1024 * 1024  # the bomb is 200 MB: stop it sooner
    archive, reason = HOSTILE[kind]
    before = _state(hello)
    response = upload(api_client_for(developer), archive())
    assert response.status_code == 400
    assert reason in response.json()["detail"]
    assert _state(hello) == before
    assert media_files() == []


def test_gzip_bomb_refusal_names_the_limit(project, developer, hello, api_client_for, settings):
    settings.HKS_MAX_UNPACKED_BYTES = 5 * 1024 * 1024
    response = upload_raw(api_client_for(developer), gzip_bomb())
    assert response.status_code == 400
    assert response.json()["detail"] == (
        "archive unpacks to more than 5242880 bytes (the limit for source archives)"
    )


@pytest.mark.parametrize("upload", [upload_raw, upload_multipart])
def test_oversize_upload_is_413(upload, project, developer, hello, api_client_for, settings, media_files):
    settings.HKS_MAX_ARCHIVE_BYTES = 4096
    before = _state(hello)
    response = upload(api_client_for(developer), node_archive(body=os.urandom(8192)))
    assert response.status_code == 413
    assert "the limit is 4096 bytes" in response.json()["detail"]
    assert _state(hello) == before and media_files() == []


def test_too_many_members_is_refused(project, developer, hello, api_client_for, settings, media_files):
    from functions.sources.archives import pack_files
    from tests.support.archive_samples import func_yaml

    settings.HKS_MAX_ARCHIVE_MEMBERS = 5
    archive = pack_files({f"lib/{i}.js": b"" for i in range(10)} | {"func.yaml": func_yaml()})
    response = upload_raw(api_client_for(developer), archive)
    assert response.status_code == 400 and "more than 5 entries" in response.json()["detail"]
    assert not Revision.objects.exists() and media_files() == []


def test_func_yaml_with_the_wrong_runtime_is_refused(project, developer, hello, api_client_for, media_files):
    before = _state(hello)
    response = upload_raw(api_client_for(developer), python_archive())
    assert response.status_code == 400
    assert response.json()["detail"] == "func.yaml says runtime 'python' but hello is a node function"
    assert _state(hello) == before and media_files() == []


def test_func_yaml_over_the_project_caps_is_refused(project, developer, hello, api_client_for, media_files):
    archive = node_archive(extra="deploy:\n  options:\n    resources:\n      limits:\n        memory: 8Gi\n")
    response = upload_raw(api_client_for(developer), archive)
    assert response.status_code == 400 and "over the project's cap" in response.json()["detail"]
    hello.refresh_from_db()
    assert hello.memory_mb == 256 and not Revision.objects.exists() and media_files() == []


def test_wrong_content_type_is_415(project, developer, hello, api_client_for):
    response = api_client_for(developer).post(URL, node_archive(), content_type="text/plain")
    assert response.status_code == 415 and "application/gzip" in response.json()["detail"]


def test_multipart_without_the_archive_field_is_400(project, developer, hello, api_client_for):
    response = api_client_for(developer).post(URL, {"other": SimpleUploadedFile("a", b"x")})
    assert response.status_code == 400 and "'archive'" in response.json()["detail"]


def test_upload_to_a_deleting_function_is_409(project, developer, hello, api_client_for, media_files):
    Function.objects.filter(pk=hello.pk).update(status=FunctionStatus.DELETING)
    response = upload_raw(api_client_for(developer), node_archive())
    assert response.status_code == 409 and media_files() == []


# Revisions, rollback ------------------------------------------------------------------------------


def test_revision_detail(project, viewer, built_revision, api_client_for):
    body = api_client_for(viewer).get(URL + "/1").json()
    assert body["current"] is True and body["artifact"] == "/artifacts/hello-00001"
    assert body["build"]["status"] == "succeeded"
    assert api_client_for(viewer).get(URL + "/7").status_code == 404


def test_rollback_to_a_built_revision_is_accepted(project, developer, built_revision, api_client_for):
    response = api_client_for(developer).post(URL + "/1/rollback")
    assert response.status_code == 202 and response.json()["status"] == "deploying"
    assert AuditEvent.objects.filter(action="function.rollback").exists()


def test_rollback_to_an_unbuilt_revision_is_409(project, developer, built_revision, api_client_for):
    Revision.objects.filter(pk=built_revision.pk).update(artifact="")
    response = api_client_for(developer).post(URL + "/1/rollback")
    assert response.status_code == 409 and "never built" in response.json()["detail"]
    built_revision.function.refresh_from_db()
    assert built_revision.function.status == "ready"


def test_viewer_cannot_roll_back(project, viewer, built_revision, api_client_for):
    assert api_client_for(viewer).post(URL + "/1/rollback").status_code == 403


# Builds -------------------------------------------------------------------------------------------

BUILDS = "/api/v1/projects/acme/functions/hello/builds"


def test_build_list_and_detail(project, viewer, built_revision, api_client_for):
    client = api_client_for(viewer)
    [build] = client.get(BUILDS).json()
    assert build["status"] == "succeeded" and build["revision"] == 1
    detail = client.get(f"{BUILDS}/{build['id']}").json()
    assert detail["log"] == "step 1\nstep 2\n"


def test_build_log_follows_from_an_offset(project, viewer, built_revision, api_client_for):
    build = Build.objects.get()
    Build.objects.filter(pk=build.pk).update(status=BuildStatus.RUNNING, log="one\n")
    client = api_client_for(viewer)
    first = client.get(f"{BUILDS}/{build.pk}/log").json()
    assert (first["text"], first["next_offset"], first["finished"]) == ("one\n", 4, False)
    Build.objects.filter(pk=build.pk).update(status=BuildStatus.SUCCEEDED, log="one\ntwo\n")
    second = client.get(f"{BUILDS}/{build.pk}/log?offset={first['next_offset']}").json()
    assert (second["text"], second["offset"], second["finished"]) == ("two\n", 4, True)


def test_build_log_offset_past_the_end_restarts_from_zero(project, viewer, built_revision, api_client_for):
    build = Build.objects.get()
    body = api_client_for(viewer).get(f"{BUILDS}/{build.pk}/log?offset=999").json()
    assert body["offset"] == 0 and body["text"] == "step 1\nstep 2\n"


def test_a_build_of_another_function_is_404(project, viewer, built_revision, api_client_for):
    from tests.support.factories import FunctionFactory

    other = FunctionFactory(project=project, name="other")
    other_build = Build.objects.create(
        revision=Revision.objects.create(function=other, number=1, archive="x")
    )
    response = api_client_for(viewer).get(f"{BUILDS}/{other_build.pk}")
    assert response.status_code == 404


def test_concurrent_uploads_get_consecutive_revisions_and_leave_no_stray_file(
    transactional_db, project, developer, media_files
):
    import threading

    from django.db import connection

    from functions.models import ApiToken
    from tests.support.factories import FunctionFactory

    FunctionFactory(project=project, name="hello", runtime="node")
    _, token = ApiToken.issue(user=developer, name="parallel")
    statuses, start = [], threading.Barrier(4)

    def upload(i: int) -> None:
        from django.test import Client

        client = Client(HTTP_AUTHORIZATION=f"Bearer {token}", raise_request_exception=False)
        start.wait()
        statuses.append(upload_raw(client, node_archive(body=f"// {i}".encode())).status_code)
        connection.close()

    threads = [threading.Thread(target=upload, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert statuses == [201] * 4
    assert sorted(Revision.objects.values_list("number", flat=True)) == [1, 2, 3, 4]
    assert len(media_files()) == 4


def test_create_with_a_bad_name_is_refused_and_creates_nothing(
    project, developer, api_client_for, media_files
):
    url = "/api/v1/projects/acme/functions/Bad_Name/revisions?create=true&runtime=node"
    response = upload_raw(api_client_for(developer), node_archive(), url)
    assert response.status_code == 400 and "is not a valid name" in response.json()["detail"]
    assert not Function.objects.exists() and media_files() == []


def test_create_over_the_quota_is_refused_and_stores_nothing(project, developer, api_client_for, media_files):
    project.max_functions = 0
    project.save()
    response = upload_raw(api_client_for(developer), node_archive(), URL + "?create=true&runtime=node")
    assert response.status_code == 403 and "quota" in response.json()["detail"]
    assert not Function.objects.exists() and media_files() == []


def test_revision_and_build_lists_take_a_fixed_number_of_queries(
    project, viewer, hello, api_client_for, django_assert_max_num_queries
):
    for number in range(1, 11):
        revision = Revision.objects.create(function=hello, number=number, archive=f"{number}.tar.gz")
        Build.objects.create(revision=revision, status=BuildStatus.SUCCEEDED)
    client = api_client_for(viewer)
    client.get(URL)  # the token's first use writes last_used_at
    with django_assert_max_num_queries(8):
        assert len(client.get(URL).json()) == 10
    with django_assert_max_num_queries(8):
        assert len(client.get(BUILDS).json()) == 10
