"""The run command's process manager brings up a working portal with a login that works."""

import re

import httpx


def test_bootstrap_login_signs_in_to_the_dashboard(live_platform):  # noqa: F811
    with httpx.Client(base_url=live_platform.portal_url, follow_redirects=True, timeout=30) as client:
        page = client.get("/accounts/login/")
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)
        response = client.post(
            "/accounts/login/",
            data={
                "username": "admin",
                "password": live_platform.admin_password,
                "csrfmiddlewaretoken": token,
            },
            headers={"Referer": f"{live_platform.portal_url}/accounts/login/"},
        )
    assert response.status_code == 200
    assert str(response.url).endswith("/p/demo/")
    assert "Functions in Demo project" in response.text


def test_all_platform_processes_stay_up(live_platform):  # noqa: F811
    assert live_platform.dead() == []
    assert {"portal", "worker", "beat"} <= set(live_platform.procs)


def test_api_answers_with_a_token_made_for_the_admin(live_platform):  # noqa: F811
    out = live_platform.manage(
        "shell",
        "-c",
        (
            "from django.contrib.auth import get_user_model; from functions.models import ApiToken;"
            "print(ApiToken.issue(user=get_user_model().objects.get(username='admin'), name='t')[1])"
        ),
        capture=True,
    )
    token = out.strip().splitlines()[-1]
    response = httpx.get(
        f"{live_platform.portal_url}/api/v1/whoami", headers={"Authorization": f"Bearer {token}"}, timeout=10
    )
    assert response.json()["username"] == "admin"
    assert httpx.get(f"{live_platform.portal_url}/api/v1/whoami", timeout=10).status_code == 401
