"""The portal side of ``hks login``: device flow start/poll/approve and the password exchange."""

import datetime as dt

import pytest
from django.test import Client
from django.utils import timezone

from functions.auth.tokens import user_for_token
from functions.models import ApiToken, CliLoginRequest, hash_token

pytestmark = pytest.mark.django_db


def _start(client=None):
    response = (client or Client()).post(
        "/api/v1/cli/login/start", {"client_name": "laptop"}, content_type="application/json"
    )
    assert response.status_code == 200
    return response.json()


def _poll(device_code):
    return Client().post(
        "/api/v1/cli/login/poll", {"device_code": device_code}, content_type="application/json"
    )


def _signed_in(user):
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    return client


def _approve(client, code):
    page = client.get(f"/cli/approve?code={code}")
    return client.post("/cli/approve", {"code": code, "csrfmiddlewaretoken": page.context["csrf_token"]})


def test_start_gives_a_short_code_and_stores_only_the_device_code_hash():
    started = _start()
    assert len(started["user_code"]) == 9 and started["user_code"][4] == "-"
    assert started["verification_url"].endswith("/cli/approve")
    assert started["interval"] > 0 and started["expires_in"] > 0
    login = CliLoginRequest.objects.get(user_code=started["user_code"])
    assert login.device_code_hash == hash_token(started["device_code"])
    assert started["device_code"] not in str(CliLoginRequest.objects.values().get())


def test_poll_is_pending_until_approved():
    started = _start()
    response = _poll(started["device_code"])
    assert response.status_code == 428
    assert response.json()["status"] == "pending"
    assert not ApiToken.objects.exists()


def test_approved_login_yields_a_token_for_the_approver_once(owner):
    started = _start()
    response = _approve(_signed_in(owner), started["user_code"])
    assert response.status_code == 200
    assert b"cli-approve-done" in response.content
    first = _poll(started["device_code"])
    assert first.status_code == 200
    assert user_for_token(first.json()["token"]) == owner
    second = _poll(started["device_code"])
    assert second.status_code == 410
    assert ApiToken.objects.filter(user=owner).count() == 1


def test_approve_page_shows_the_code_and_needs_sign_in(owner):
    started = _start()
    anonymous = Client().get(f"/cli/approve?code={started['user_code']}")
    assert anonymous.status_code == 302 and "/accounts/login/" in anonymous["Location"]
    page = _signed_in(owner).get(f"/cli/approve?code={started['user_code'].lower().replace('-', '')}")
    assert page.status_code == 200
    assert started["user_code"].encode() in page.content


def test_approve_without_csrf_token_is_refused_and_changes_nothing(owner):
    started = _start()
    response = _signed_in(owner).post("/cli/approve", {"code": started["user_code"]})
    assert response.status_code == 403
    assert CliLoginRequest.objects.get().approved_by is None


def test_a_code_approved_by_one_user_cannot_be_taken_over_by_another(owner, outsider):
    started = _start()
    _approve(_signed_in(owner), started["user_code"])
    response = _approve(_signed_in(outsider), started["user_code"])
    assert response.status_code == 404
    assert CliLoginRequest.objects.get().approved_by == owner
    assert user_for_token(_poll(started["device_code"]).json()["token"]) == owner


def test_unknown_code_is_a_clear_404(owner):
    response = _signed_in(owner).get("/cli/approve?code=ZZZZ-ZZZZ")
    assert response.status_code == 404
    assert b"unknown, expired or already used" in response.content


def test_expired_login_cannot_be_approved_or_redeemed(owner):
    started = _start()
    CliLoginRequest.objects.update(expires_at=timezone.now() - dt.timedelta(seconds=1))
    assert _approve(_signed_in(owner), started["user_code"]).status_code == 404
    response = _poll(started["device_code"])
    assert response.status_code == 410 and response.json()["status"] == "expired"
    assert not ApiToken.objects.exists()


def test_unknown_device_code_is_404():
    assert _poll("not-a-real-code").status_code == 404


def test_password_exchange_issues_a_token(owner):
    response = Client().post(
        "/api/v1/auth/token",
        {"username": owner.username, "password": "correct-horse-battery"},
        content_type="application/json",
    )
    assert response.status_code == 200
    assert user_for_token(response.json()["token"]) == owner


def test_wrong_password_is_401_and_issues_nothing(owner):
    response = Client().post(
        "/api/v1/auth/token",
        {"username": owner.username, "password": "nope"},
        content_type="application/json",
    )
    assert response.status_code == 401
    assert "wrong user name or password" in response.json()["detail"]
    assert not ApiToken.objects.exists()


def _exchange(username, password, address="127.0.0.1"):
    return Client(REMOTE_ADDR=address).post(
        "/api/v1/auth/token", {"username": username, "password": password}, content_type="application/json"
    )


@pytest.fixture
def fresh_cache():
    from django.core.cache import cache

    cache.clear()  # the failure counts and the route's throttle live there
    yield
    cache.clear()


def test_password_guessing_locks_that_user_name_only(owner, developer, fresh_cache):
    for _ in range(10):
        assert _exchange(owner.username, "guess").status_code == 401
    refused = _exchange(owner.username, "correct-horse-battery")  # even the right password, for a while
    assert refused.status_code == 429
    assert "too many failed sign-ins" in refused.json()["detail"]
    assert not ApiToken.objects.filter(user=owner).exists()
    assert _exchange(developer.username, "correct-horse-battery").status_code == 200
    assert _exchange(owner.username.upper(), "correct-horse-battery").status_code == 429  # same name


def test_guesses_from_another_address_do_not_lock_the_user_out(owner, fresh_cache):
    for _ in range(20):  # anonymous requests against the name from a stranger's address
        assert _exchange(owner.username, "guess", address="203.0.113.9").status_code in (401, 429)
    assert _exchange(owner.username, "correct-horse-battery", address="203.0.113.9").status_code == 429
    assert _exchange(owner.username, "correct-horse-battery").status_code == 200


def test_successful_logins_are_not_limited_like_guesses(owner, fresh_cache):
    for _ in range(3):
        assert _exchange(owner.username, "guess").status_code == 401
    for _ in range(30):  # a team behind one address logging in; the old flat limit was 20 a minute
        assert _exchange(owner.username, "correct-horse-battery").status_code == 200
    for _ in range(9):  # a success starts the count again
        assert _exchange(owner.username, "guess").status_code == 401
    assert _exchange(owner.username, "correct-horse-battery").status_code == 200
