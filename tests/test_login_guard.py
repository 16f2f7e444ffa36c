"""Password guessing is limited per user name on every way in: the sign-in page, the admin's and the
CLI's password exchange (the latter in tests/cli/test_login_api.py)."""

import pytest
from django.core.cache import cache
from django.test import Client

from functions import login_guard

pytestmark = pytest.mark.django_db
RIGHT = "correct-horse-battery"


@pytest.fixture(autouse=True)
def fresh_cache():
    cache.clear()
    yield
    cache.clear()


def _sign_in(client: Client, username: str, password: str, url: str = "/accounts/login/"):
    return client.post(url, {"username": username, "password": password})


def test_the_sign_in_page_locks_a_guessed_name_and_says_why(owner, developer):
    for _ in range(login_guard.FAILED_LOGIN_LIMIT):
        assert _sign_in(Client(), owner.username, "guess").status_code == 200  # the form again, with an error
    client = Client()
    refused = _sign_in(client, owner.username, RIGHT)
    assert refused.status_code == 200
    assert "Too many failed sign-ins for this user" in refused.content.decode()
    assert "_auth_user_id" not in client.session
    signed_in = Client()
    assert _sign_in(signed_in, developer.username, RIGHT).status_code == 302  # another name is unaffected
    assert signed_in.session["_auth_user_id"] == str(developer.pk)


def test_the_admin_sign_in_is_locked_too(owner, settings):
    owner.is_staff = True
    owner.save()
    for _ in range(login_guard.FAILED_LOGIN_LIMIT):
        _sign_in(Client(), owner.username, "guess", url="/admin/login/")
    client = Client()
    assert _sign_in(client, owner.username, RIGHT, url="/admin/login/").status_code == 200
    assert "_auth_user_id" not in client.session


def test_a_successful_sign_in_starts_the_count_again(owner):
    for _ in range(login_guard.FAILED_LOGIN_LIMIT - 1):
        _sign_in(Client(), owner.username, "guess")
    assert _sign_in(Client(), owner.username, RIGHT).status_code == 302
    for _ in range(login_guard.FAILED_LOGIN_LIMIT - 1):
        _sign_in(Client(), owner.username, "guess")
    assert _sign_in(Client(), owner.username, RIGHT).status_code == 302
