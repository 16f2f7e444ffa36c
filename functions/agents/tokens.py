"""Short-lived internal JWTs for AI agents.

An agent presents its ``AgentCredential`` secret once to ``POST /internal/v1/token`` and gets a JWT signed
with the portal's Ed25519 key: ``iss``/``aud`` fixed, ``exp`` minutes away, a unique ``jti``, the project
and the scopes. Verification checks all of them and that the credential is still active, so revoking a
credential cuts off its tokens before they expire.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from django.conf import settings
from django.core.cache import cache as django_cache
from django.utils import timezone

from functions.models import AgentCredential, Project, hash_token

ISSUER = "hks-portal"
AUDIENCE = "hks-internal"
SCOPE_EXECUTE = "functions:execute"


class TokenError(Exception):
    """The token or credential was refused; the message says why and ``reason`` names it for programs.

    Signature and algorithm are checked before any claim, so only a token the portal signed learns that it
    expired, is not yet valid, is for another audience, or belongs to a revoked credential; a forged one
    hears "bad_signature" (or "malformed"/"algorithm_not_allowed") whatever its claims say.
    """

    def __init__(self, message: str, *, reason: str = "invalid_token"):
        super().__init__(message)
        self.reason = reason


# PyJWT's errors, most specific first (several derive from others), with a fixed message each.
_JWT_REFUSALS: list[tuple[type[Exception], str, str]] = [
    (jwt.ExpiredSignatureError, "expired", "token expired; mint a new one with the agent credential"),
    (jwt.ImmatureSignatureError, "not_yet_valid", "token is not valid yet (nbf or iat in the future)"),
    (jwt.InvalidAudienceError, "wrong_audience", f"token is not for this API (aud must be {AUDIENCE!r})"),
    (jwt.InvalidIssuerError, "wrong_issuer", f"token was not issued by {ISSUER!r}"),
    (jwt.InvalidAlgorithmError, "algorithm_not_allowed", "token algorithm not allowed (EdDSA only)"),
    (jwt.InvalidSignatureError, "bad_signature", "token signature does not verify"),
    (jwt.InvalidIssuedAtError, "bad_claim", "token iat is not a number"),
    (jwt.DecodeError, "malformed", "token is not a well-formed JWT"),
]


@dataclass(frozen=True)
class AgentIdentity:
    project: Project
    credential: AgentCredential
    scopes: frozenset[str]
    jti: str


def _key_path() -> Path:
    configured = getattr(settings, "HKS_INTERNAL_JWT_KEY_FILE", "")
    return Path(configured) if configured else settings.DATA_DIR / "internal-jwt-ed25519.pem"


@cache
def _private_key(path: Path) -> Ed25519PrivateKey:
    if not path.exists():
        pem = Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_bytes(pem)
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise TokenError(f"{path} is not an Ed25519 private key")
    return key


CREDENTIAL_FAILURE_LIMIT = 20
CREDENTIAL_FAILURE_WINDOW = dt.timedelta(minutes=10)
GUESSING_MESSAGE = "too many unknown credentials from this address; try again in 10 minutes"


def _failures_key(address: str) -> str:
    return f"hks:credential-failures:{hash_token(address)}"


def credential_guessing(address: str) -> bool:
    """Whether this client address sent too many unknown credentials lately (counted per address)."""
    return django_cache.get(_failures_key(address), 0) >= CREDENTIAL_FAILURE_LIMIT


def credential_failed(address: str) -> None:
    django_cache.incr_window(_failures_key(address), timeout=int(CREDENTIAL_FAILURE_WINDOW.total_seconds()))


def credential_authenticate(secret: str) -> AgentCredential:
    credential = (
        AgentCredential.objects.select_related("project").filter(key_hash=hash_token(secret or "")).first()
    )
    if credential is None or not credential.is_active:
        raise TokenError("unknown or revoked agent credential", reason="bad_credential")
    AgentCredential.objects.filter(pk=credential.pk).update(last_used_at=timezone.now())
    return credential


def token_mint(*, credential: AgentCredential, now: dt.datetime | None = None) -> tuple[str, dt.datetime]:
    now = now or timezone.now()
    expires = now + dt.timedelta(seconds=settings.HKS_INTERNAL_JWT_TTL_SECONDS)
    claims = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": f"agent-credential:{credential.pk}",
        "iat": int(now.timestamp()),
        "nbf": int(now.timestamp()),
        "exp": int(expires.timestamp()),
        "jti": uuid.uuid4().hex,
        "project": credential.project.slug,
        "scope": SCOPE_EXECUTE,
    }
    return jwt.encode(claims, _private_key(_key_path()), algorithm="EdDSA"), expires


def token_verify(token: str, *, now: dt.datetime | None = None) -> AgentIdentity:
    public_key = _private_key(_key_path()).public_key()
    options = {"require": ["iss", "aud", "exp", "iat", "jti", "sub", "project", "scope"]}
    try:
        claims = jwt.decode(
            token,
            public_key,
            algorithms=["EdDSA"],
            audience=AUDIENCE,
            issuer=ISSUER,
            options=options,
            leeway=5,
        )
    except jwt.MissingRequiredClaimError as exc:
        raise TokenError(f"token lacks the {exc.claim!r} claim", reason="missing_claim") from exc
    except jwt.PyJWTError as exc:
        reason, message = next(
            ((reason, message) for kind, reason, message in _JWT_REFUSALS if isinstance(exc, kind)),
            ("invalid_token", "token refused"),
        )
        raise TokenError(message, reason=reason) from exc
    ttl = settings.HKS_INTERNAL_JWT_TTL_SECONDS
    if not isinstance(claims["iat"], int) or not isinstance(claims["exp"], int):
        raise TokenError("token iat and exp must be whole seconds", reason="bad_claim")
    if claims["exp"] - claims["iat"] > ttl:  # a leaked signing key, or a mint bug, cannot make long tokens
        raise TokenError(f"token lifetime is over the {ttl} s this portal issues", reason="lifetime_too_long")
    credential_id = str(claims["sub"]).removeprefix("agent-credential:")
    credential = (
        AgentCredential.objects.select_related("project").filter(pk=credential_id).first()
        if credential_id.isdigit()
        else None
    )
    if credential is None or not credential.is_active or credential.project.slug != claims["project"]:
        raise TokenError("the credential behind this token was revoked", reason="revoked")
    return AgentIdentity(
        project=credential.project,
        credential=credential,
        scopes=frozenset(str(claims["scope"]).split()),
        jti=claims["jti"],
    )
