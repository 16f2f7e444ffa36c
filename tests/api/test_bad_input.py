"""Bad input through the API answers a 4xx JSON with the reason and leaves no file or row behind."""

import json

import pytest
from django.test import Client

from functions.models import AgentCredential, Function, Revision
from functions.sources.archives import pack_files
from tests.support.archive_samples import ALIAS_BOMB, NODE_INDEX, func_yaml, sparse_archive

URL = "/api/v1/projects/acme/functions/hello/revisions"
GZIP = "application/gzip"

MALFORMED = {
    "deploy: nope": ("deploy: nope\n", "deploy must be a mapping"),
    "deploy.options: [1, 2]": ("deploy:\n  options: [1, 2]\n", "deploy.options must be a mapping"),
    "limits.concurrency: abc": (
        "deploy:\n  options:\n    resources:\n      limits:\n        concurrency: abc\n",
        "concurrency must be a whole number",
    ),
    "run.envs: 5": ("run:\n  envs: 5\n", "run.envs must be a list"),
    "scale.min: -5": ("deploy:\n  options:\n    scale:\n      min: -5\n", "scale.min must be between 0"),
    "scale.min above max": (
        "deploy:\n  options:\n    scale:\n      min: 9\n      max: 2\n",
        "cannot be above max",
    ),
    "scale.max: true": ("deploy:\n  options:\n    scale:\n      max: true\n", "whole number"),
    "run.envs A=B": ("run:\n  envs:\n  - name: A=B\n    value: x\n", "not a valid environment variable name"),
    "run.envs NUL": ('run:\n  envs:\n  - name: A\n    value: "x\\0y"\n', "NUL"),
    "run.envs nested": ("run:\n  envs:\n  - name: A\n    value: {a: 1}\n", "text value"),
    "invoke: [1]": ("invoke: [1]\n", "invoke must be text"),
}


def _archive(extra: str) -> bytes:
    return pack_files({"func.yaml": func_yaml("hello", "node", extra), "index.js": NODE_INDEX})


@pytest.mark.parametrize("case", sorted(MALFORMED))
@pytest.mark.parametrize("create", [False, True])
def test_malformed_func_yaml_is_a_400_with_the_reason_and_leaves_nothing(
    case, create, project, developer, api_client_for, media_files, request
):
    if not create:
        request.getfixturevalue("hello")
    extra, reason = MALFORMED[case]
    url = URL + ("?create=true&runtime=node" if create else "")
    response = api_client_for(developer).post(url, _archive(extra), content_type=GZIP)
    assert response.status_code == 400, response.content
    assert reason in response.json()["detail"]
    assert Revision.objects.count() == 0 and media_files() == []
    assert Function.objects.count() == (0 if create else 1)


@pytest.mark.parametrize(
    "archive,reason",
    [
        (lambda: sparse_archive(1 << 30), "sparse"),
        (lambda: pack_files({"func.yaml": ALIAS_BOMB, "index.js": NODE_INDEX}), "aliases"),
        (lambda: pack_files({"func.yaml": func_yaml(), "a" * 300 + ".js": b"x"}), "longer than 255"),
    ],
)
def test_expensive_archives_are_refused_by_the_api(
    archive, reason, project, developer, hello, api_client_for, media_files
):
    response = api_client_for(developer).post(URL, archive(), content_type=GZIP)
    assert response.status_code == 400 and reason in response.json()["detail"]
    assert Revision.objects.count() == 0 and media_files() == []


@pytest.mark.parametrize(
    "env,reason",
    [
        ({"A=B": "1"}, "not a valid environment variable name"),
        ({"A": "x\x00y"}, "NUL"),
        ({"A": "x" * (10 * 1024 * 1024)}, "the limit is"),
        ({f"V{i}": "1" for i in range(5000)}, "the limit is"),
    ],
)
def test_settings_api_refuses_bad_env_up_front(env, reason, project, developer, hello, api_client_for):
    response = api_client_for(developer).patch(
        "/api/v1/projects/acme/functions/hello", {"env": env}, content_type="application/json"
    )
    assert response.status_code in (400, 413, 422), response.content[:300]
    assert reason in json.dumps(response.json())
    hello.refresh_from_db()
    assert hello.env == {}


# The internal API -------------------------------------------------------------------------------


@pytest.fixture
def agent_token(project, tmp_path, settings):
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.HKS_INTERNAL_JWT_KEY_FILE = str(tmp_path / "jwt.pem")
    _, secret = AgentCredential.issue(project=project, name="agent")
    response = Client().post("/internal/v1/token", {"credential": secret}, content_type="application/json")
    return response.json()["token"]


def _agent_deploy(token, **payload):
    body = json.dumps({"runtime": "python", "code": "print(1)", **payload})
    return Client().post(
        "/internal/v1/operations/deploy-function",
        body,
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {token}",
    )


@pytest.mark.parametrize(
    "payload,reason",
    [
        ({"env": {"A=B": "1"}}, "not a valid environment variable name"),
        ({"env": {"A": "x\x00"}}, "NUL"),
        ({"env": {f"V{i}": "1" for i in range(5000)}}, "the limit is"),
        ({"files": {"a" * 300: "x"}}, "longer than 255"),
    ],
)
def test_internal_api_refuses_bad_env_and_names_up_front(payload, reason, agent_token):
    response = _agent_deploy(agent_token, **payload)
    assert response.status_code == 400, response.content[:300]
    assert reason in response.json()["detail"] and "/work" not in response.json()["detail"]
    assert Function.objects.count() == 0 and Revision.objects.count() == 0


def test_a_huge_files_payload_on_the_internal_api_is_a_json_413(agent_token, settings):
    response = _agent_deploy(
        agent_token, files={"big.txt": "x" * (settings.DATA_UPLOAD_MAX_MEMORY_SIZE + 10)}
    )
    assert response.status_code == 413
    assert "larger than" in response.json()["detail"]
    assert Function.objects.count() == 0
