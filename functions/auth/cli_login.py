"""Services for ``hks login``: the device flow (a code shown by the CLI, approved in the portal) and the
password exchange. Both end in a personal ``ApiToken`` whose plaintext is handed out exactly once."""

from __future__ import annotations

import datetime as dt
import secrets
from dataclasses import dataclass

from django.contrib.auth import authenticate
from django.db import transaction
from django.utils import timezone

from functions.auth import login_guard
from functions.errors import ServiceError
from functions.models import ApiToken, CliLoginRequest, hash_token

# No 0/O, 1/I/L, 5/S, 8/B: the code is read off one screen and typed or compared on another.
USER_CODE_ALPHABET = "ACDEFGHJKMNPQRTUVWXYZ2345679"
LOGIN_TTL = dt.timedelta(minutes=10)
POLL_INTERVAL_SECONDS = 2
TOKEN_TTL = dt.timedelta(days=90)


@dataclass(frozen=True)
class LoginStart:
    request: CliLoginRequest
    device_code: str


def normalize_user_code(raw: str) -> str:
    letters = "".join(ch for ch in (raw or "").upper() if ch.isalnum())
    return f"{letters[:4]}-{letters[4:8]}" if len(letters) == 8 else letters


def _new_user_code() -> str:
    letters = "".join(secrets.choice(USER_CODE_ALPHABET) for _ in range(8))
    return f"{letters[:4]}-{letters[4:]}"


def cli_login_start(*, client_name: str = "") -> LoginStart:
    """Open a login request; the plaintext device code exists only in the returned value."""
    device_code = secrets.token_urlsafe(32)
    for _ in range(5):
        user_code = _new_user_code()
        if not CliLoginRequest.objects.filter(user_code=user_code).exists():
            break
    CliLoginRequest.objects.filter(expires_at__lt=timezone.now() - LOGIN_TTL).delete()
    request = CliLoginRequest.objects.create(
        user_code=user_code,
        device_code_hash=hash_token(device_code),
        client_name=client_name[:100],
        expires_at=timezone.now() + LOGIN_TTL,
    )
    return LoginStart(request=request, device_code=device_code)


def cli_login_pending(*, user_code: str) -> CliLoginRequest | None:
    """The open (unexpired, unapproved) request with this user code, or None."""
    return CliLoginRequest.objects.filter(
        user_code=normalize_user_code(user_code), approved_by__isnull=True, expires_at__gt=timezone.now()
    ).first()


@transaction.atomic
def cli_login_approve(*, user_code: str, user) -> CliLoginRequest:
    # The conditional update makes approval first-come: a code already approved cannot be re-pointed
    # at another account.
    updated = CliLoginRequest.objects.filter(
        user_code=normalize_user_code(user_code), approved_by__isnull=True, expires_at__gt=timezone.now()
    ).update(approved_by=user, approved_at=timezone.now())
    if not updated:
        raise ServiceError("this code is unknown, expired or already used", code=404)
    return CliLoginRequest.objects.get(user_code=normalize_user_code(user_code))


def cli_login_deny(*, user_code: str) -> bool:
    """Refuse an open request: it expires now, so the waiting CLI is told to start again."""
    return bool(
        CliLoginRequest.objects.filter(
            user_code=normalize_user_code(user_code), approved_by__isnull=True, expires_at__gt=timezone.now()
        ).update(expires_at=timezone.now())
    )


class LoginPending(Exception):
    pass


@transaction.atomic
def cli_login_redeem(*, device_code: str) -> str:
    """Exchange an approved device code for a token's plaintext, once.

    Raises ``LoginPending`` while nobody approved it yet, ``ServiceError`` (410) when it expired or was
    already redeemed, (404) when the device code is unknown.
    """
    login = CliLoginRequest.objects.filter(device_code_hash=hash_token(device_code or "")).first()
    if login is None:
        raise ServiceError("unknown device code", code=404)
    if login.consumed_at is not None:
        raise ServiceError("this login was already completed; run hks login again", code=410)
    if login.approved_by_id is None:
        if login.is_expired:
            raise ServiceError("the login code expired; run hks login again", code=410)
        raise LoginPending()
    # Only the caller whose update flips consumed_at gets the token, even with concurrent polls.
    claimed = CliLoginRequest.objects.filter(pk=login.pk, consumed_at__isnull=True).update(
        consumed_at=timezone.now()
    )
    if not claimed:
        raise ServiceError("this login was already completed; run hks login again", code=410)
    name = f"hks login ({login.client_name})" if login.client_name else "hks login"
    token, plaintext = ApiToken.issue(user=login.approved_by, name=name, ttl=TOKEN_TTL)
    CliLoginRequest.objects.filter(pk=login.pk).update(token=token)
    return plaintext


def token_for_password(*, username: str, password: str, client_name: str = "", request=None) -> str:
    if login_guard.is_locked(username, request):  # see login_guard: per name and address, every way in
        raise ServiceError(
            f"{login_guard.locked_message()} (or approve `hks login` in the browser)", code=429
        )
    user = authenticate(request, username=username, password=password)
    if user is None or not user.is_active:
        raise ServiceError("wrong user name or password", code=401)
    login_guard.clear(username, request)
    name = f"hks login ({client_name})" if client_name else "hks login (password)"
    _, plaintext = ApiToken.issue(user=user, name=name[:100], ttl=TOKEN_TTL)
    return plaintext
