"""Functions through the API: create, list, read, settings, delete - and who may do each."""

import pytest

from functions.models import AuditEvent, Function, FunctionStatus
from tests.support.factories import FunctionFactory

JSON = "application/json"


def test_developer_creates_a_function(project, developer, api_client_for):
    response = api_client_for(developer).post(
        "/api/v1/projects/acme/functions", {"name": "hello", "runtime": "python"}, content_type=JSON
    )
    assert response.status_code == 201
    body = response.json()
    assert (body["name"], body["runtime"], body["kind"], body["status"]) == (
        "hello",
        "python",
        "http",
        "pending",
    )
    assert Function.objects.get(project=project, name="hello").created_by == developer


def test_a_second_function_with_the_same_name_is_409(project, developer, hello, api_client_for):
    response = api_client_for(developer).post(
        "/api/v1/projects/acme/functions", {"name": "hello", "runtime": "node"}, content_type=JSON
    )
    assert response.status_code == 409
    assert response.json() == {"detail": "a function named 'hello' already exists in acme"}
    assert Function.objects.filter(name="hello").count() == 1


@pytest.mark.parametrize(
    ("payload", "status", "words"),
    [
        ({"name": "Hello_World", "runtime": "node"}, 400, "is not a valid name"),
        ({"name": "ok", "runtime": "cobol"}, 422, "runtime"),
        ({"runtime": "node"}, 422, "name"),
    ],
)
def test_bad_function_input_is_refused_and_creates_nothing(
    payload, status, words, project, developer, api_client_for
):
    response = api_client_for(developer).post("/api/v1/projects/acme/functions", payload, content_type=JSON)
    assert response.status_code == status
    assert words in str(response.json()["detail"])
    assert not Function.objects.exists()


def test_quota_refuses_one_function_too_many(project, developer, api_client_for):
    project.max_functions = 1
    project.save()
    FunctionFactory(project=project, name="first")
    response = api_client_for(developer).post(
        "/api/v1/projects/acme/functions", {"name": "second", "runtime": "node"}, content_type=JSON
    )
    assert response.status_code == 403 and "quota" in response.json()["detail"]


def test_viewer_reads_but_cannot_create(project, viewer, hello, api_client_for):
    client = api_client_for(viewer)
    assert [f["name"] for f in client.get("/api/v1/projects/acme/functions").json()] == ["hello"]
    assert client.get("/api/v1/projects/acme/functions/hello").json()["runtime"] == "node"
    response = client.post(
        "/api/v1/projects/acme/functions", {"name": "x", "runtime": "node"}, content_type=JSON
    )
    assert response.status_code == 403 and "developer" in response.json()["detail"]


def test_deleted_functions_are_not_listed_or_found(project, developer, api_client_for):
    FunctionFactory(project=project, name="gone", status=FunctionStatus.DELETED)
    client = api_client_for(developer)
    assert client.get("/api/v1/projects/acme/functions").json() == []
    assert client.get("/api/v1/projects/acme/functions/gone").status_code == 404


def test_patch_changes_settings(project, developer, hello, api_client_for):
    response = api_client_for(developer).patch(
        "/api/v1/projects/acme/functions/hello",
        {
            "env": {"GREETING": "hi"},
            "scale": {"min": 1, "max": 3},
            "resources": {"memory_mb": 128},
            "timeout_seconds": 30,
        },
        content_type=JSON,
    )
    assert response.status_code == 200
    body = response.json()
    assert body["env"] == {"GREETING": "hi"}
    assert (body["scale"]["min"], body["scale"]["max"], body["scale"]["target"]) == (1, 3, 100)
    assert body["resources"] == {"cpu_millicores": 500, "memory_mb": 128}
    hello.refresh_from_db()
    assert (hello.min_scale, hello.max_scale, hello.memory_mb, hello.timeout_seconds) == (1, 3, 128, 30)
    assert AuditEvent.objects.filter(action="function.settings").exists()


@pytest.mark.parametrize(
    ("payload", "status", "words"),
    [
        ({"scale": {"min": 5, "max": 2}}, 400, "min scale cannot be above max scale"),
        ({"resources": {"memory_mb": 4096}}, 400, "over the project's cap"),
        ({"env": {"1BAD": "x"}}, 422, "not a valid environment variable name"),
        ({"timeout_seconds": 0}, 422, "timeout_seconds"),
        ({}, 400, "nothing to change"),
    ],
)
def test_bad_settings_are_refused_and_change_nothing(
    payload, status, words, project, developer, hello, api_client_for
):
    before = Function.objects.filter(pk=hello.pk).values().get()
    response = api_client_for(developer).patch(
        "/api/v1/projects/acme/functions/hello", payload, content_type=JSON
    )
    assert response.status_code == status
    assert words in str(response.json()["detail"])
    assert Function.objects.filter(pk=hello.pk).values().get() == before


def test_viewer_cannot_change_settings(project, viewer, hello, api_client_for):
    response = api_client_for(viewer).patch(
        "/api/v1/projects/acme/functions/hello", {"timeout_seconds": 5}, content_type=JSON
    )
    assert response.status_code == 403
    hello.refresh_from_db()
    assert hello.timeout_seconds == 300


def test_delete_is_accepted_and_marks_the_function_deleting(project, developer, hello, api_client_for):
    response = api_client_for(developer).delete("/api/v1/projects/acme/functions/hello")
    assert response.status_code == 202
    assert response.json()["status"] == "deleting"
    hello.refresh_from_db()
    assert hello.status == FunctionStatus.DELETING


def test_viewer_cannot_delete(project, viewer, hello, api_client_for):
    assert api_client_for(viewer).delete("/api/v1/projects/acme/functions/hello").status_code == 403
    hello.refresh_from_db()
    assert hello.status == FunctionStatus.PENDING


def test_function_list_query_count_does_not_grow_with_functions(
    project, developer, api_client_for, django_assert_max_num_queries
):
    client = api_client_for(developer)
    for i in range(10):
        FunctionFactory(project=project, name=f"fn-{i}")
    with django_assert_max_num_queries(8):
        assert len(client.get("/api/v1/projects/acme/functions").json()) == 10
