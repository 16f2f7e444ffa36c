"""Password guessing is limited per user name on every way in: the sign-in page, the admin's and the
CLI's password exchange (the latter in tests/cli/test_login_api.py)."""

import pytest
from django.core.cache import cache
from django.test import Client

from functions.auth import login_guard

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


STRANGER = "203.0.113.9"


def test_a_stranger_cannot_lock_a_user_out_from_another_address(owner):
    for _ in range(login_guard.FAILED_LOGIN_LIMIT * 2):
        _sign_in(Client(REMOTE_ADDR=STRANGER), owner.username, "guess")
    stranger = Client(REMOTE_ADDR=STRANGER)
    assert _sign_in(stranger, owner.username, RIGHT).status_code == 200  # the guesser's address is locked
    assert "_auth_user_id" not in stranger.session
    user = Client(REMOTE_ADDR="198.51.100.7")
    assert _sign_in(user, owner.username, RIGHT).status_code == 302  # the owner, from elsewhere, gets in
    assert user.session["_auth_user_id"] == str(owner.pk)


def test_guessing_spread_over_addresses_gives_each_one_more_try_only(owner):
    for n in range(login_guard.FAILED_LOGIN_LIMIT):
        _sign_in(Client(REMOTE_ADDR=f"203.0.113.{n}"), owner.username, "guess")
    again = Client(REMOTE_ADDR="203.0.113.0")  # failed recently, and the name is under attack
    assert _sign_in(again, owner.username, RIGHT).status_code == 200
    assert "_auth_user_id" not in again.session
    clean = Client(REMOTE_ADDR="198.51.100.7")
    assert _sign_in(clean, owner.username, RIGHT).status_code == 302


def test_one_address_guessing_many_names_is_stopped(owner):
    for n in range(login_guard.ADDRESS_FAILURE_LIMIT):
        _sign_in(Client(REMOTE_ADDR=STRANGER), f"user{n}", "guess")
    stranger = Client(REMOTE_ADDR=STRANGER)
    assert _sign_in(stranger, owner.username, RIGHT).status_code == 200
    assert "_auth_user_id" not in stranger.session
    assert _sign_in(Client(), owner.username, RIGHT).status_code == 302
