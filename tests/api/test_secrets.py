"""Secret env values: write-only for everyone (viewers included), encrypted at rest, masked in log lines and
pages, never in an audit entry; on Knative a Secret the container reads with ``secretKeyRef``."""

import base64
import json
import time

import pytest
from django.test import Client

from functions import crypto
from functions.backends import get_backend
from functions.models import AuditEvent, Function
from functions.secret_env import MASK
from functions.services.functions import function_ref, service_spec
from functions.services.projects import project_set_kubeconfig

JSON = "application/json"
VALUE = "sk-live-7f3a9c1e5b"
URL = "/api/v1/projects/acme/functions/hello"


def _set_secret(client, name="API_KEY", value=VALUE):
    return client.patch(URL, {"secrets": {name: value}}, content_type=JSON)


def test_a_secret_is_write_only_for_every_role(project, owner, developer, viewer, hello, api_client_for):
    response = _set_secret(api_client_for(developer))
    assert response.status_code == 200
    assert response.json()["secrets"] == ["API_KEY"]
    assert VALUE not in response.content.decode()
    for user in (owner, developer, viewer):
        client = api_client_for(user)
        for url in (URL, "/api/v1/projects/acme/functions", f"/api/v1/audit?project={project.slug}"):
            answer = client.get(url)
            assert VALUE not in answer.content.decode(), (user.username, url)
    detail = client.get(URL).json()
    assert detail["secrets"] == ["API_KEY"] and "API_KEY" not in detail["env"]
    audit = AuditEvent.objects.filter(action="function.settings").get()
    assert audit.detail["secrets_set"] == ["API_KEY"] and VALUE not in json.dumps(audit.detail)


def test_a_secret_is_encrypted_at_rest_and_reaches_the_backend(
    project, developer, hello, built_revision, api_client_for
):
    _set_secret(api_client_for(developer))
    row = Function.objects.filter(pk=hello.pk).values().get()
    assert VALUE not in json.dumps(row, default=str)  # nowhere in the row, in no column
    hello.refresh_from_db()
    assert crypto.decrypt_text(hello.secret_env["API_KEY"]) == VALUE
    spec = service_spec(hello, built_revision)
    assert spec.secret_env == {"API_KEY": VALUE} and "API_KEY" not in spec.env


def test_a_plain_value_from_func_yaml_never_replaces_a_secret(
    project, developer, hello, built_revision, api_client_for
):
    _set_secret(api_client_for(developer))
    Function.objects.filter(pk=hello.pk).update(env={"API_KEY": "from-func-yaml", "MODE": "x"})
    hello.refresh_from_db()
    spec = service_spec(hello, built_revision)
    assert spec.env == {"MODE": "x"} and spec.secret_env == {"API_KEY": VALUE}
    assert "from-func-yaml" not in api_client_for(developer).get(URL).content.decode()


def test_setting_a_plain_value_over_a_secret_is_refused(project, developer, hello, api_client_for):
    client = api_client_for(developer)
    _set_secret(client)
    refused = client.patch(URL, {"env": {"API_KEY": "plain"}}, content_type=JSON)
    assert refused.status_code == 400 and "secret" in refused.json()["detail"]
    hello.refresh_from_db()
    assert hello.env == {} and list(hello.secret_env) == ["API_KEY"]


def test_a_secret_is_removed_with_null(project, developer, hello, api_client_for):
    client = api_client_for(developer)
    _set_secret(client)
    _set_secret(client, name="OTHER", value="another-secret")
    body = client.patch(URL, {"secrets": {"API_KEY": None}}, content_type=JSON).json()
    assert body["secrets"] == ["OTHER"]


def test_viewers_cannot_set_secrets(project, viewer, hello, api_client_for):
    assert _set_secret(api_client_for(viewer)).status_code == 403
    hello.refresh_from_db()
    assert hello.secret_env == {}


@pytest.mark.parametrize(
    "secrets", [{"1BAD": "x"}, {"A=B": "x"}, {"NUL": "a\x00b"}, {"BIG": "x" * (32 * 1024 + 1)}]
)
def test_bad_secrets_are_refused_and_change_nothing(secrets, project, developer, hello, api_client_for):
    response = api_client_for(developer).patch(URL, {"secrets": secrets}, content_type=JSON)
    assert response.status_code in (400, 422)
    hello.refresh_from_db()
    assert hello.secret_env == {}


# Knative: a Secret, and the logs read back from the cluster --------------------------------------------


@pytest.fixture
def knative(project, owner, fake_k8s):
    project.backend = "knative"
    project.save()
    project_set_kubeconfig(project=project, kubeconfig_text=fake_k8s.kubeconfig, actor=owner)
    return project


def _running(function, fake_k8s) -> str:
    function.refresh_from_db()
    backend = get_backend(function.project)
    backend.apply(service_spec(function, function.current_revision))
    deadline = time.monotonic() + 10
    while not backend.status(function_ref(function)).ready:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    namespace = function_ref(function).namespace
    return fake_k8s.list("pods", namespace, "serving.knative.dev/service=hello")[0]["metadata"]["name"]


def _secret_value(secret: dict, key: str) -> str:
    if key in secret.get("stringData", {}):
        return secret["stringData"][key]
    return base64.b64decode(secret["data"][key]).decode()


def test_on_knative_a_secret_is_a_secret_read_with_secret_key_ref(
    knative, developer, built_revision, fake_k8s, api_client_for
):
    _set_secret(api_client_for(developer))
    _running(built_revision.function, fake_k8s)
    namespace = function_ref(built_revision.function).namespace
    ksvc = fake_k8s.get("services.serving.knative.dev", namespace, "hello")
    assert VALUE not in json.dumps(ksvc)
    env = ksvc["spec"]["template"]["spec"]["containers"][0]["env"]
    ref = next(e for e in env if e["name"] == "API_KEY")["valueFrom"]["secretKeyRef"]
    secret = fake_k8s.get("secrets", namespace, ref["name"])
    assert _secret_value(secret, ref["key"]) == VALUE


def test_log_lines_mask_secret_values_everywhere_they_are_read(
    knative, developer, viewer, built_revision, fake_k8s, api_client_for
):
    _set_secret(api_client_for(developer))
    pod = _running(built_revision.function, fake_k8s)
    namespace = function_ref(built_revision.function).namespace
    fake_k8s.append_log(namespace, pod, "user-container", f"connecting with key={VALUE} to the API")
    lines = api_client_for(viewer).get(URL + "/logs").json()
    assert lines[-1]["text"] == f"connecting with key={MASK} to the API"
    browser = Client()
    browser.force_login(viewer)
    download = browser.get("/p/acme/f/hello/logs.txt")
    assert download.status_code == 200
    assert VALUE not in download.content.decode() and MASK in download.content.decode()


def test_the_settings_page_never_shows_a_secret_not_even_the_one_just_posted(project, developer, hello):
    browser = Client()
    browser.force_login(developer)
    page = "/p/acme/f/hello/settings/"
    form = {
        "env": "",
        "secrets": f"API_KEY={VALUE}",
        "min_scale": 5,  # refused: over max_scale, so the form comes back with what was posted
        "max_scale": 2,
        "target_concurrency": 100,
        "container_concurrency": 0,
        "cpu_millicores": 500,
        "memory_mb": 256,
        "timeout_seconds": 300,
    }
    refused = browser.post(page, form)
    assert refused.status_code == 400 and VALUE not in refused.content.decode()
    saved = browser.post(page, {**form, "min_scale": 0})
    assert saved.status_code == 302
    hello.refresh_from_db()
    assert crypto.decrypt_text(hello.secret_env["API_KEY"]) == VALUE
    shown = browser.get(page).content.decode()
    assert VALUE not in shown and "API_KEY" in shown
