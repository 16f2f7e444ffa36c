"""Password guessing is limited on every way in (the portal's sign-in page, the admin's and ``hks login``'s
password exchange) without letting a stranger lock a user out.

Failures are counted three ways within ``FAILED_LOGIN_WINDOW``: per user name *and* client address, per
user name, and per address. A password sign-in for a name from an address is refused (the right password
included) when:

- that address failed ``FAILED_LOGIN_LIMIT`` times for that name (someone guessing from one place), or
- that address failed ``ADDRESS_FAILURE_LIMIT`` times over all names (one place guessing many names), or
- the name failed ``FAILED_LOGIN_LIMIT`` times from anywhere *and* this address has failed recently
  (guessing spread over many addresses: each of them gets at most one more try).

So a correct password from an address without recent failures always gets through: ten anonymous requests
from elsewhere cannot lock the owner of a name out. A successful sign-in clears that name's count from its
address and takes those failures off the overall counts. Failures are counted from Django's
``user_login_failed`` signal and the lock is enforced by the authentication backend, so no login path can
skip it. The address is ``client_address`` (``REMOTE_ADDR``, unless ``HKS_NUM_PROXIES`` says which
``X-Forwarded-For`` entry to trust). Counts live in Django's cache (per portal process unless a shared cache
is configured).
"""

from __future__ import annotations

import datetime as dt

from django.conf import settings
from django.contrib.auth.backends import ModelBackend
from django.contrib.auth.forms import AuthenticationForm
from django.contrib.auth.signals import user_logged_in, user_login_failed
from django.core.cache import cache
from django.core.exceptions import PermissionDenied, ValidationError
from django.dispatch import receiver

from functions.models import hash_token

FAILED_LOGIN_LIMIT = 10
ADDRESS_FAILURE_LIMIT = 50
FAILED_LOGIN_WINDOW = dt.timedelta(minutes=15)


def client_address(request) -> str:
    """The client as the API's throttles see it: ``REMOTE_ADDR``, or with ``HKS_NUM_PROXIES`` trusted
    proxies the address the outermost of them saw in ``X-Forwarded-For``."""
    if request is None:
        return "unknown"
    forwarded, proxies = request.META.get("HTTP_X_FORWARDED_FOR"), settings.HKS_NUM_PROXIES
    if proxies and forwarded:
        addresses = forwarded.split(",")
        return addresses[-min(proxies, len(addresses))].strip()
    return request.META.get("REMOTE_ADDR") or "unknown"


def _name(username: str) -> str:
    return hash_token(str(username).strip().lower())


def _keys(username: str, address: str) -> dict[str, str]:
    name, addr = _name(username), hash_token(address)
    return {
        "pair": f"hks:login-failures:pair:{name}:{addr}",
        "name": f"hks:login-failures:name:{name}",
        "address": f"hks:login-failures:addr:{addr}",
    }


def is_locked(username: str, request=None) -> bool:
    keys = _keys(username, client_address(request))
    counts = cache.get_many(keys.values())
    pair, name, address = (counts.get(keys[kind], 0) for kind in ("pair", "name", "address"))
    return (
        pair >= FAILED_LOGIN_LIMIT
        or address >= ADDRESS_FAILURE_LIMIT
        or (name >= FAILED_LOGIN_LIMIT and address > 0)
    )


def locked_message() -> str:
    minutes = int(FAILED_LOGIN_WINDOW.total_seconds() // 60)
    return f"too many failed sign-ins for this user from this address; try again in {minutes} minutes"


def _increment(key: str) -> None:
    # the window starts at the first failure (hks_portal/cache.py)
    cache.incr_window(key, timeout=int(FAILED_LOGIN_WINDOW.total_seconds()))


def record_failure(username: str, request=None) -> None:
    for key in _keys(username, client_address(request)).values():
        _increment(key)


def clear(username: str, request=None) -> None:
    """A right password: this address's failures for this name were its owner's typos, so they leave all
    three counts. Failures from elsewhere and for other names stay, so a guesser cannot wash its record by
    signing in to an account of its own."""
    keys = _keys(username, client_address(request))
    own = cache.get(keys["pair"], 0)
    cache.delete(keys["pair"])
    for key in (keys["name"], keys["address"]):
        try:
            if own and cache.decr(key, own) <= 0:
                cache.delete(key)
        except ValueError:  # already expired
            pass


@receiver(user_login_failed)
def _count_failure(sender, credentials, request=None, **kwargs):
    username = credentials.get("username")
    if username:
        record_failure(username, request)


@receiver(user_logged_in)
def _reset_on_sign_in(sender, request, user, **kwargs):
    clear(user.get_username(), request)


class GuardedModelBackend(ModelBackend):
    """Django's model backend, refusing a locked name/address before the password is even checked."""

    def authenticate(self, request, username=None, password=None, **kwargs):
        if username is not None and is_locked(username, request):
            raise PermissionDenied(locked_message())  # stops authenticate(); counted as a failure
        return super().authenticate(request, username=username, password=password, **kwargs)


class GuardedAuthenticationForm(AuthenticationForm):
    """The sign-in page's form: says why a locked name is refused instead of "wrong password"."""

    def clean(self):
        username = self.cleaned_data.get("username")
        if username and is_locked(username, self.request):
            raise ValidationError(locked_message().capitalize() + ".", code="locked")
        return super().clean()
