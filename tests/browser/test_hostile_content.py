"""Tenant-controlled text never runs as markup, in Debian's Chromium against the running platform.

What a tenant - or anyone on the internet, through a function's public URL - can write ends up on pages
other people open: the project's members (the dashboard) and the platform's operators (/ops/ and the
admin, where a script would act with staff rights over every tenant). Here every such field carries
markup that would set ``window.__hksXss`` if a page let it run: a function's environment, its status
message, a revision's func.yaml, a build log, a schedule's path, headers and body, an audit event's
detail, an agent session's metadata, a log line its code wrote, and the path of a request from outside
(the gateway logs it). Each page is opened as the member and as the operator, and the payload must show
as text on it, never as an element, and never run.

Needs: chromium, bubblewrap (Debian packages).
"""

from __future__ import annotations

import httpx
import pytest

from .conftest import PASSWORD, settle, sign_in

pytestmark = [pytest.mark.browser, pytest.mark.runtime]

MARKUP = '<img src=x class=hks-xss onerror="window.__hksXss=1"><script>window.__hksXss=2</script>'
PAYLOAD = f"\"'>{MARKUP}"  # breaks out of an attribute or a quoted string, where one would let it

# Django's own data for one function of acme, every tenant-written field carrying PAYLOAD.
SEED = """
import datetime as dt, json
from django.utils import timezone
from functions.models import (AgentSession, AuditEvent, Build, BuildStatus, Function, FunctionStatus,
    Project, Revision, Schedule)
payload = PAYLOAD_REPR
project = Project.objects.get(slug="acme")
fn = Function.objects.create(project=project, name="hostile", runtime="node", status=FunctionStatus.FAILED,
    status_message="build failed: " + payload, env={"NOTE": payload})
revision = Revision.objects.create(function=fn, number=1, content_hash="e" * 64, archive="none.tar.gz",
    config={"name": "hostile", "runtime": "node", "description": payload})
build = Build.objects.create(revision=revision, status=BuildStatus.FAILED, log=payload + "\\n",
    message=payload)
Function.objects.filter(pk=fn.pk).update(desired_revision=revision)
schedule = Schedule.objects.create(function=fn, name="hostile", cron="0 3 * * *", path="/" + payload,
    headers={"X-Note": payload}, body=payload)
AuditEvent.objects.create(project=project, function=fn, action="function.deploy", detail={"note": payload})
session = AgentSession.objects.create(project=project, sandbox_id="hostile0session", metadata={"n": payload},
    expires_at=timezone.now() + dt.timedelta(hours=1))
print(json.dumps({"function": fn.pk, "revision": revision.pk, "build": build.pk, "schedule": schedule.pk,
    "session": session.pk, "audit": AuditEvent.objects.filter(detail__note=payload).get().pk}))
"""


@pytest.fixture(scope="module")
def hostile(browser_users, two_revisions):
    import json

    platform = browser_users
    seed = SEED.replace("PAYLOAD_REPR", repr(PAYLOAD))
    ids = json.loads(platform.manage("shell", "-c", seed, capture=True).strip().splitlines()[-1])
    # Anyone on the internet writes the served function's log: a request's path is logged (gateway).
    answer = httpx.get(
        f"{platform.gateway_url}/{PAYLOAD}", headers={"Host": f"{two_revisions}.acme.localhost"}, timeout=60
    )
    assert answer.status_code < 500
    yield ids
    # Other tests share this platform's acme: leave it as it was found.
    cleanup = "from functions.models import AgentSession, AuditEvent, Function;"
    cleanup += "AgentSession.objects.filter(sandbox_id='hostile0session').delete();"
    cleanup += "AuditEvent.objects.filter(function__name='hostile').delete();"
    cleanup += "Function.objects.filter(project__slug='acme', name='hostile').delete()"
    platform.manage("shell", "-c", cleanup, capture=True)


def _pages(portal: str, name: str, ids: dict) -> dict[str, list[str]]:
    member = [f"{portal}/p/acme/", f"{portal}/p/acme/usage/"]
    for tab in ("", "builds/", f"builds/{ids['build']}/", "revisions/", "schedules/", "settings/"):
        member.append(f"{portal}/p/acme/f/hostile/{tab}")
    member += [
        f"{portal}/p/acme/f/hostile/schedules/hostile/edit/",
        f"{portal}/p/acme/f/{name}/logs/",
        f"{portal}/p/acme/f/{name}/logs/search/?q=hks-xss",
    ]
    admin = f"{portal}/admin/functions"
    operator = [
        f"{portal}/ops/",
        f"{admin}/function/{ids['function']}/change/",
        f"{admin}/revision/{ids['revision']}/change/",
        f"{admin}/build/{ids['build']}/change/",
        f"{admin}/schedule/{ids['schedule']}/change/",
        f"{admin}/auditevent/",
        f"{admin}/auditevent/{ids['audit']}/change/",
        f"{admin}/agentsession/{ids['session']}/change/",
        f"{admin}/function/?q=hostile",
        *(url for url in member if not url.endswith("/edit/")),  # operators read a tenant's pages too
    ]
    return {"bea": member, "admin": operator}


def test_tenant_written_text_is_shown_as_text_to_members_and_operators(
    browser, browser_users, hostile, two_revisions
):
    platform = browser_users
    ran, injected, shown = [], [], {}
    for who, urls in _pages(platform.portal_url, two_revisions, hostile).items():
        context = browser.new_context()
        page = context.new_page()
        page.set_default_timeout(20_000)
        page.on("dialog", lambda dialog: (ran.append(f"dialog: {dialog.message}"), dialog.dismiss()))
        password = platform.admin_password if who == "admin" else PASSWORD
        if who == "bea":
            sign_in(page, platform, who)
        else:
            _admin_sign_in(page, platform.portal_url, password)
        for url in urls:
            response = page.goto(url)
            assert response.status < 400, f"{who} {url}: HTTP {response.status}"
            settle(page)
            if url.endswith("/logs/"):  # the live view: wait for the logged request to arrive
                page.locator("#log-lines .log-line", has_text="hks-xss").first.wait_for()
            if page.evaluate("window.__hksXss"):
                ran.append(f"{who} {url}")
            if page.locator("img.hks-xss, script:text('__hksXss')").count():
                injected.append(f"{who} {url}")
            shown[(who, url)] = "hks-xss" in page.inner_text("body")
        context.close()
    assert not ran, "tenant-written markup ran:\n" + "\n".join(ran)
    assert not injected, "tenant-written markup became elements:\n" + "\n".join(injected)
    # The control: the payload is on these pages, as text (so the checks above looked at it).
    for url in (f"{platform.portal_url}/ops/", f"{platform.portal_url}/p/acme/f/hostile/settings/"):
        who = "admin" if "/ops/" in url else "bea"
        assert shown[(who, url)], f"{url} does not show the payload at all"
    assert sum(shown.values()) >= len(shown) // 2, [k for k, v in shown.items() if not v]


def _admin_sign_in(page, portal: str, password: str) -> None:
    page.goto(portal + "/accounts/login/")
    page.fill("#id_username", "admin")
    page.fill("#id_password", password)
    page.click("button[type=submit]")
    page.wait_for_load_state()
