"""The OpenAPI document lists every endpoint of the API with its request and response schemas."""

import pytest

REQUIRED = [
    ("get", "/api/v1/projects"),
    ("get", "/api/v1/projects/{slug}"),
    ("get", "/api/v1/projects/{slug}/members"),
    ("get", "/api/v1/projects/{slug}/members/{username}"),
    ("put", "/api/v1/projects/{slug}/members/{username}"),
    ("delete", "/api/v1/projects/{slug}/members/{username}"),
    ("get", "/api/v1/projects/{slug}/kubeconfig"),
    ("get", "/api/v1/projects/{slug}/usage"),
    ("patch", "/api/v1/projects/{slug}/usage"),
    ("get", "/api/v1/projects/{slug}/functions"),
    ("post", "/api/v1/projects/{slug}/functions"),
    ("get", "/api/v1/projects/{slug}/functions/{name}"),
    ("patch", "/api/v1/projects/{slug}/functions/{name}"),
    ("delete", "/api/v1/projects/{slug}/functions/{name}"),
    ("post", "/api/v1/projects/{slug}/functions/{name}/revisions"),
    ("get", "/api/v1/projects/{slug}/functions/{name}/revisions"),
    ("get", "/api/v1/projects/{slug}/functions/{name}/revisions/{number}"),
    ("post", "/api/v1/projects/{slug}/functions/{name}/revisions/{number}/rollback"),
    ("get", "/api/v1/projects/{slug}/functions/{name}/builds"),
    ("get", "/api/v1/projects/{slug}/functions/{name}/builds/{build_id}"),
    ("get", "/api/v1/projects/{slug}/functions/{name}/builds/{build_id}/log"),
    ("post", "/api/v1/projects/{slug}/functions/{name}/invoke"),
    ("get", "/api/v1/projects/{slug}/functions/{name}/logs"),
    ("get", "/api/v1/audit"),
]


@pytest.fixture
def document(client, db):
    response = client.get("/api/v1/openapi.json")
    assert response.status_code == 200
    return response.json()


@pytest.mark.parametrize(("method", "path"), REQUIRED)
def test_endpoint_is_documented_with_a_success_schema_and_error_bodies(document, method, path):
    operation = document["paths"][path][method]
    responses = operation["responses"]
    success = [code for code in responses if code.startswith("2")]
    assert success, f"{method} {path} documents no success response"
    if success != ["204"]:
        assert "schema" in responses[success[0]]["content"]["application/json"]
    if "{slug}" in path:
        assert responses["404"]["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/ErrorOut"
        }
    assert operation.get("security"), "every project endpoint needs a token or the session"


def test_upload_documents_both_ways_to_send_an_archive(document):
    body = document["paths"]["/api/v1/projects/{slug}/functions/{name}/revisions"]["post"]["requestBody"]
    assert set(body["content"]) == {"application/gzip", "multipart/form-data"}
    assert body["content"]["multipart/form-data"]["schema"]["required"] == ["archive"]


def test_json_bodies_have_schemas(document):
    create = document["paths"]["/api/v1/projects/{slug}/functions"]["post"]["requestBody"]
    ref = create["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
    assert set(document["components"]["schemas"][ref]["required"]) == {"name", "runtime"}
    for schema in ("FunctionOut", "RevisionOut", "BuildLogOut", "InvokeIn", "InvokeOut", "MemberIn"):
        assert schema in document["components"]["schemas"]
