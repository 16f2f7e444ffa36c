"""The internal Operations API: short-lived JWTs, and agents confined to their project's agent functions."""

import datetime as dt
import json

import jwt
import pytest
from django.test import Client
from django.utils import timezone

from functions.agents import tokens as agent_tokens
from functions.models import AuditEvent, Function, Revision
from tests.support.factories import FunctionFactory


def _token(client, secret):
    response = client.post("/internal/v1/token", {"credential": secret}, content_type="application/json")
    assert response.status_code == 200, response.content
    return response.json()["token"]


def _auth(token):
    return {"HTTP_AUTHORIZATION": f"Bearer {token}"}


def _deploy(client, token, **payload):
    body = {"runtime": "python", "code": "print('hi')", **payload}
    return client.post(
        "/internal/v1/operations/deploy-function", body, content_type="application/json", **_auth(token)
    )


def test_token_carries_the_claims_agents_are_checked_against(agent_credential):
    credential, secret = agent_credential
    token = _token(Client(), secret)
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["iss"] == "hks-portal" and claims["aud"] == "hks-internal"
    assert claims["project"] == "acme" and claims["scope"] == "functions:execute"
    assert 0 < claims["exp"] - claims["iat"] <= 600
    assert jwt.get_unverified_header(token)["alg"] == "EdDSA"


def test_a_wrong_credential_gets_no_token(agent_credential):
    response = Client().post(
        "/internal/v1/token", {"credential": "hksa_nope"}, content_type="application/json"
    )
    assert response.status_code == 401
    assert "unknown or revoked" in response.json()["detail"]


def test_deploy_creates_an_expiring_restricted_agent_function(agent_credential):
    _, secret = agent_credential
    client = Client()
    response = _deploy(client, _token(client, secret), runtime="node", code="1 + 1", ttl_seconds=120)
    assert response.status_code == 202, response.content
    function = Function.objects.get(name=response.json()["name"])
    assert function.project.slug == "acme"
    assert function.ephemeral and function.sandbox_profile == "restricted"
    assert function.visibility == "cluster-local"
    assert dt.timedelta(seconds=100) < function.expires_at - timezone.now() <= dt.timedelta(seconds=120)
    assert function.status == "building"
    assert Revision.objects.filter(function=function).count() == 1


def test_an_agent_deploy_sets_env_and_timeout_like_every_settings_change(agent_credential, project, settings):
    """Through function_update_settings: its checks apply (a Knative cluster's timeout limit), and the
    audit trail records the change."""
    _, secret = agent_credential
    client = Client()
    token = _token(client, secret)
    response = _deploy(client, token, env={"GREETING": "hi"}, timeout_seconds=30)
    assert response.status_code == 202, response.content
    function = Function.objects.get(name=response.json()["name"])
    assert function.env == {"GREETING": "hi"} and function.timeout_seconds == 30
    change = AuditEvent.objects.get(function=function, action="function.settings")
    assert change.detail["changed"] == ["env", "timeout_seconds"]

    project.backend = "knative"
    project.save()
    settings.HKS_KNATIVE_MAX_TIMEOUT_SECONDS = 20
    refused = _deploy(client, token, timeout_seconds=30)
    assert refused.status_code == 400 and "over this cluster's limit of 20 s" in refused.json()["detail"]
    assert Function.objects.filter(project=project).count() == 1


def test_an_expired_token_is_refused_with_the_reason(agent_credential):
    credential, _ = agent_credential
    token, _ = agent_tokens.token_mint(credential=credential, now=timezone.now() - dt.timedelta(hours=1))
    response = _deploy(Client(), token)
    assert response.status_code == 401
    assert Function.objects.count() == 0


def test_a_token_signed_by_another_key_is_refused(agent_credential):
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    credential, _ = agent_credential
    claims = {
        "iss": "hks-portal",
        "aud": "hks-internal",
        "sub": f"agent-credential:{credential.pk}",
        "iat": 0,
        "exp": 4102444800,
        "jti": "x",
        "project": "acme",
        "scope": "functions:execute",
    }
    forged = jwt.encode(claims, Ed25519PrivateKey.generate(), algorithm="EdDSA")
    assert _deploy(Client(), forged).status_code == 401
    assert Function.objects.count() == 0


def test_revoking_the_credential_cuts_off_its_live_tokens(agent_credential):
    credential, secret = agent_credential
    client = Client()
    token = _token(client, secret)
    credential.revoked_at = timezone.now()
    credential.save()
    assert _deploy(client, token).status_code == 401


def test_bad_code_request_changes_nothing(agent_credential):
    _, secret = agent_credential
    client = Client()
    response = _deploy(client, _token(client, secret), runtime="ruby")
    assert response.status_code == 422
    assert Function.objects.count() == 0


def test_agent_quota_is_enforced_and_leaves_nothing_behind(agent_credential, project):
    project.max_agent_functions = 1
    project.save()
    _, secret = agent_credential
    client = Client()
    token = _token(client, secret)
    assert _deploy(client, token).status_code == 202
    response = _deploy(client, token)
    assert response.status_code == 429
    assert "quota" in response.json()["detail"]
    assert response["Retry-After"] == "1"
    assert Function.objects.count() == 1


@pytest.mark.parametrize(
    "method,path,payload",
    [
        ("get", "/internal/v1/operations/functions/{name}", None),
        ("post", "/internal/v1/operations/invoke-function", {"name": "{name}"}),
        ("post", "/internal/v1/operations/delete-function", {"name": "{name}"}),
    ],
)
def test_an_agent_of_another_project_gets_404(agent_credential, outsider_credential, method, path, payload):
    _, secret = agent_credential
    client = Client()
    name = _deploy(client, _token(client, secret)).json()["name"]
    outsider_token = _token(client, outsider_credential[1])
    body = json.loads(json.dumps(payload).replace("{name}", name)) if payload else None
    kwargs = {"content_type": "application/json"} if body else {}
    response = getattr(client, method)(path.format(name=name), body, **kwargs, **_auth(outsider_token))
    assert response.status_code == 404
    assert Function.objects.get(name=name).status == "building"


def test_agents_cannot_touch_functions_people_deployed(agent_credential, project):
    FunctionFactory(project=project, name="payroll", status="ready")
    _, secret = agent_credential
    client = Client()
    token = _token(client, secret)
    response = client.post(
        "/internal/v1/operations/delete-function",
        {"name": "payroll"},
        content_type="application/json",
        **_auth(token),
    )
    assert response.status_code == 404
    assert Function.objects.get(name="payroll").status == "ready"
