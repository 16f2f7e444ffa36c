"""Password guessing is limited per user name, on every way in: the portal's sign-in page, the admin's and
``hks login``'s password exchange.

After ``FAILED_LOGIN_LIMIT`` failed sign-ins for a name within ``FAILED_LOGIN_WINDOW``, that name cannot
sign in with a password (the right one included) until the window has passed; other names are unaffected
and a successful sign-in starts the count again. Successful sign-ins are never counted, so a team behind
one address is not locked out by its own logins. Failures are counted from Django's ``user_login_failed``
signal and the lock is enforced by the authentication backend, so no login path can skip it. The counts
live in Django's cache (per portal process unless a shared cache is configured).
"""

from __future__ import annotations

import datetime as dt

from django.contrib.auth.backends import ModelBackend
from django.contrib.auth.forms import AuthenticationForm
from django.contrib.auth.signals import user_logged_in, user_login_failed
from django.core.cache import cache
from django.core.exceptions import PermissionDenied, ValidationError
from django.dispatch import receiver

from .models import hash_token

FAILED_LOGIN_LIMIT = 10
FAILED_LOGIN_WINDOW = dt.timedelta(minutes=15)


def _key(username: str) -> str:
    return f"hks:login-failures:{hash_token(str(username).strip().lower())}"


def is_locked(username: str) -> bool:
    return cache.get(_key(username), 0) >= FAILED_LOGIN_LIMIT


def locked_message() -> str:
    minutes = int(FAILED_LOGIN_WINDOW.total_seconds() // 60)
    return f"too many failed sign-ins for this user; try again in {minutes} minutes"


def record_failure(username: str) -> None:
    key, seconds = _key(username), FAILED_LOGIN_WINDOW.total_seconds()
    cache.add(key, 0, timeout=seconds)  # the window starts at the first failure
    try:
        cache.incr(key)
    except ValueError:  # it expired between add and incr
        cache.set(key, 1, timeout=seconds)


def clear(username: str) -> None:
    cache.delete(_key(username))


@receiver(user_login_failed)
def _count_failure(sender, credentials, request=None, **kwargs):
    username = credentials.get("username")
    if username:
        record_failure(username)


@receiver(user_logged_in)
def _reset_on_sign_in(sender, request, user, **kwargs):
    clear(user.get_username())


class GuardedModelBackend(ModelBackend):
    """Django's model backend, refusing a locked user name before the password is even checked."""

    def authenticate(self, request, username=None, password=None, **kwargs):
        if username is not None and is_locked(username):
            raise PermissionDenied(locked_message())  # stops authenticate(); counted as a failure
        return super().authenticate(request, username=username, password=password, **kwargs)


class GuardedAuthenticationForm(AuthenticationForm):
    """The sign-in page's form: says why a locked name is refused instead of "wrong password"."""

    def clean(self):
        username = self.cleaned_data.get("username")
        if username and is_locked(username):
            raise ValidationError(locked_message().capitalize() + ".", code="locked")
        return super().clean()
