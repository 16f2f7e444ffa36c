"""Requests per minute per caller on /api/v1, /internal/v1, E2B's control plane and the dashboard
(functions/api/throttling.py), on the real Redis: past the budget a caller gets 429 with Retry-After,
another tenant at the same moment does not, more credentials do not buy more budget, and a cache that
cannot be reached throttles nobody."""

import pytest
from django.test import Client, override_settings

from functions.api import throttling
from functions.models import AgentCredential
from tests.support.agents import agent_credential, outsider_credential  # noqa: F401
from tests.support.faults import unreachable_caches

LIMIT = 5


@pytest.fixture(autouse=True)
def small_budget(settings, monkeypatch):
    settings.HKS_API_REQUESTS_PER_MINUTE = LIMIT
    monkeypatch.setattr(throttling, "clock", lambda: 1_800_000_010.0)  # 10 s into a minute, held there


def _agent(secret: str) -> Client:
    token = Client().post("/internal/v1/token", {"credential": secret}, content_type="application/json")
    assert token.status_code == 200, token.content
    return Client(HTTP_AUTHORIZATION=f"Bearer {token.json()['token']}")


def test_a_user_past_the_budget_gets_429_with_retry_after_and_another_tenant_does_not(
    project, developer, outsider, api_client_for
):
    mine, another_token_of_mine = api_client_for(developer), api_client_for(developer)
    theirs = api_client_for(outsider)
    answers = [mine.get("/api/v1/projects/acme/functions").status_code for _ in range(LIMIT)]
    assert answers == [200] * LIMIT
    refused = mine.get("/api/v1/projects/acme/functions")
    assert refused.status_code == 429
    assert refused["Retry-After"] == "50" and "Too many requests" in refused.json()["detail"]
    # a second API token of the same user spends the same budget
    assert another_token_of_mine.get("/api/v1/whoami").status_code == 429
    # the dashboard session of the same user too (the API's SessionAuth)
    browser = Client()
    browser.force_login(developer)
    assert browser.get("/api/v1/whoami").status_code == 429
    # another tenant, at the same moment, has its own
    assert [theirs.get("/api/v1/whoami").status_code for _ in range(LIMIT)] == [200] * LIMIT


def test_a_projects_agents_share_one_budget_and_another_projects_have_theirs(
    project,
    agent_credential,  # noqa: F811
    outsider_credential,  # noqa: F811
):
    first = _agent(agent_credential[1])
    second = _agent(AgentCredential.issue(project=project, name="second")[1])
    other = _agent(outsider_credential[1])
    path = "/internal/v1/operations/functions/nothing-here"
    spent = [first.get(path).status_code for _ in range(LIMIT)]
    assert spent == [404] * LIMIT  # answered: the budget counts every authenticated call
    refused = second.get(path)
    assert refused.status_code == 429 and refused["Retry-After"] == "50"
    # E2B's control plane spends the same project's budget, with the same answer
    e2b = Client().get("/e2b/v2/sandboxes", HTTP_X_API_KEY=agent_credential[1])
    assert e2b.status_code == 429 and e2b["Retry-After"] == "50"
    assert other.get(path).status_code == 404
    assert Client().get("/e2b/v2/sandboxes", HTTP_X_API_KEY=outsider_credential[1]).status_code == 200


def test_a_users_dashboard_pages_have_a_budget_of_their_own(project, developer, outsider, api_client_for):
    mine, theirs = Client(), Client()
    mine.force_login(developer)
    theirs.force_login(outsider)
    assert [mine.get("/p/acme/").status_code for _ in range(LIMIT)] == [200] * LIMIT
    refused = mine.get("/p/acme/f/nothing/")
    assert refused.status_code == 429 and refused["Retry-After"] == "50"
    assert mine.get("/static/hks.css").status_code != 429  # static files are not counted
    assert api_client_for(developer).get("/api/v1/whoami").status_code == 200  # the API's budget is apart
    assert theirs.get("/p/globex/").status_code == 200


def test_without_redis_nobody_is_throttled(project, developer, api_client_for, tmp_path):
    client = api_client_for(developer)
    dead = unreachable_caches(tmp_path)
    with override_settings(CACHES=dead):
        answers = [client.get("/api/v1/whoami").status_code for _ in range(LIMIT + 3)]
    assert answers == [200] * (LIMIT + 3)


def test_a_budget_of_zero_is_no_limit(project, developer, api_client_for, settings):
    settings.HKS_API_REQUESTS_PER_MINUTE = 0
    client = api_client_for(developer)
    assert {client.get("/api/v1/whoami").status_code for _ in range(LIMIT * 3)} == {200}
