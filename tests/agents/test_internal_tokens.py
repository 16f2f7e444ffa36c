"""Internal API token refusals say why (for tokens the portal signed) without helping a forger; a validly
signed token cannot outlive the configured TTL; the token endpoint is limited per client address."""

import hashlib
import hmac
import json

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from django.conf import settings
from django.core.cache import cache
from django.test import Client
from django.utils import timezone

from functions.agents import tokens as agent_tokens
from functions.models import Function

DEPLOY = "/internal/v1/operations/deploy-function"


@pytest.fixture(autouse=True)
def fresh_cache():
    cache.clear()  # failure counts and throttles live there
    yield
    cache.clear()


def _portal_key() -> Ed25519PrivateKey:
    return agent_tokens._private_key(agent_tokens._key_path())


def _claims(credential, **changes) -> dict:
    now = int(timezone.now().timestamp())
    claims = {
        "iss": "hks-portal",
        "aud": "hks-internal",
        "sub": f"agent-credential:{credential.pk}",
        "iat": now,
        "nbf": now,
        "exp": now + 60,
        "jti": "j1",
        "project": "acme",
        "scope": "functions:execute",
    }
    claims.update(changes)
    return {k: v for k, v in claims.items() if v is not None}


def _signed(credential, **changes) -> str:
    return jwt.encode(_claims(credential, **changes), _portal_key(), algorithm="EdDSA")


def _refusal(token: str | None):
    headers = {"HTTP_AUTHORIZATION": f"Bearer {token}"} if token is not None else {}
    response = Client().post(DEPLOY, {"code": "print(1)"}, content_type="application/json", **headers)
    assert Function.objects.count() == 0
    return response


def _public_pem() -> bytes:
    return (
        _portal_key()
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )


CASES = {
    "expired": lambda c: _signed(c, iat=0, nbf=0, exp=60),
    "not_yet_valid": lambda c: _signed(
        c, nbf=int(timezone.now().timestamp()) + 3600, exp=int(timezone.now().timestamp()) + 3650
    ),
    "wrong_audience": lambda c: _signed(c, aud="someone-else"),
    "wrong_issuer": lambda c: _signed(c, iss="evil"),
    "missing_claim": lambda c: _signed(c, jti=None),
    "lifetime_too_long": lambda c: _signed(c, exp=int(timezone.now().timestamp()) + 86400),
    "bad_signature": lambda c: jwt.encode(_claims(c), Ed25519PrivateKey.generate(), algorithm="EdDSA"),
    "algorithm_not_allowed": lambda c: jwt.encode(_claims(c), None, algorithm="none"),
    "malformed": lambda c: "not.a.jwt",
}


@pytest.mark.parametrize("reason", sorted(CASES))
def test_a_refused_token_is_told_why(reason, agent_credential):
    credential, _ = agent_credential
    response = _refusal(CASES[reason](credential))
    assert response.status_code == 401, response.content
    assert response.json()["reason"] == reason
    assert response["WWW-Authenticate"] == f'Bearer error="invalid_token", error_description="{reason}"'


def test_hs256_signed_with_the_public_key_is_refused_as_not_allowed(agent_credential):
    credential, _ = agent_credential
    header = jwt.utils.base64url_encode(b'{"alg":"HS256","typ":"JWT"}').decode()
    body = jwt.utils.base64url_encode(json.dumps(_claims(credential)).encode()).decode()
    signature = hmac.new(_public_pem(), f"{header}.{body}".encode(), hashlib.sha256).digest()
    token = f"{header}.{body}.{jwt.utils.base64url_encode(signature).decode()}"
    assert _refusal(token).json()["reason"] == "algorithm_not_allowed"


def test_a_forged_token_learns_nothing_about_its_claims(agent_credential):
    """Expired, for another audience and for a revoked credential - but not signed by the portal: the
    answer is only that the signature is wrong."""
    credential, _ = agent_credential
    credential.revoked_at = timezone.now()
    credential.save()
    forged = jwt.encode(
        _claims(credential, iat=0, nbf=0, exp=60, aud="x"), Ed25519PrivateKey.generate(), algorithm="EdDSA"
    )
    body = _refusal(forged).json()
    assert body["reason"] == "bad_signature"
    assert "expired" not in body["detail"] and "revoked" not in body["detail"]


def test_a_revoked_credentials_token_is_told_so(agent_credential):
    credential, _ = agent_credential
    token, _ = agent_tokens.token_mint(credential=credential)
    credential.revoked_at = timezone.now()
    credential.save()
    assert _refusal(token).json()["reason"] == "revoked"


def test_no_token_and_a_token_without_the_scope(agent_credential):
    credential, _ = agent_credential
    missing = _refusal(None)
    assert missing.status_code == 401 and missing.json()["reason"] == "missing_token"
    narrow = _refusal(_signed(credential, scope="functions:read"))
    assert narrow.status_code == 403 and narrow.json()["reason"] == "insufficient_scope"


def test_the_verifier_caps_the_lifetime_at_the_configured_ttl(agent_credential, settings):
    credential, _ = agent_credential
    token, _ = agent_tokens.token_mint(credential=credential)
    agent_tokens.token_verify(token)  # as minted: fine
    settings.HKS_INTERNAL_JWT_TTL_SECONDS = 60  # the operator shortened it: older, longer tokens stop
    with pytest.raises(agent_tokens.TokenError) as refused:
        agent_tokens.token_verify(token)
    assert refused.value.reason == "lifetime_too_long"


def _mint(secret: str, address: str):
    return Client(REMOTE_ADDR=address).post(
        "/internal/v1/token", {"credential": secret}, content_type="application/json"
    )


def test_guessing_credentials_from_one_address_is_stopped(agent_credential):
    _, secret = agent_credential
    for _ in range(agent_tokens.CREDENTIAL_FAILURE_LIMIT):
        assert _mint("hksa_guess", "203.0.113.9").status_code == 401
    refused = _mint(secret, "203.0.113.9")  # even the right one, for a while
    assert refused.status_code == 429 and refused.json()["reason"] == "too_many_failures"
    assert _mint(secret, "198.51.100.7").status_code == 200  # another address is unaffected


def test_the_token_endpoint_is_rate_limited_per_address(agent_credential):
    _, secret = agent_credential
    allowed = int(settings.HKS_INTERNAL_TOKEN_RATE.split("/")[0])
    for _ in range(allowed):
        assert _mint(secret, "203.0.113.9").status_code == 200
    assert _mint(secret, "203.0.113.9").status_code == 429
    assert _mint(secret, "198.51.100.7").status_code == 200
    spoofed = Client(REMOTE_ADDR="203.0.113.9", HTTP_X_FORWARDED_FOR="10.9.9.9").post(
        "/internal/v1/token", {"credential": secret}, content_type="application/json"
    )
    assert spoofed.status_code == 429  # a header the client writes itself does not make it someone else
