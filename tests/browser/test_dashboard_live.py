"""The dashboard in Debian's Chromium against a running platform (portal, worker, runtime, Prometheus):
sign in, list, detail, invoke from the invoke pane, the logged line arriving in the live log view, the
request counted in the metrics chart, roll back. Screenshots go to test-artifacts/screenshots/.

Needs: chromium, bubblewrap, prometheus (Debian packages).
"""

import re
import time
import uuid

import pytest

from tests.support.needs import require_binary

from .conftest import screenshot, sign_in

pytestmark = [
    pytest.mark.browser,
    pytest.mark.runtime,
]


def _invoke(page, body: str, method: str = "POST") -> str:
    if page.locator("#invoke-form").count():
        page.reload()  # a fresh pane (clicking the tab again would swap it under our typing)
    else:
        page.click("#tab-invoke")
    page.wait_for_selector("#invoke-form")
    page.select_option("#id_method", method)
    page.fill("#id_path", "/")
    page.fill("#id_headers", "Content-Type: application/json")
    page.fill("#id_body", body)
    page.click("#invoke-send")
    page.wait_for_selector("#invoke-status")
    return page.inner_text("#invoke-result")


def _until(check, *, deadline: float, every: float = 2.0):
    end = time.monotonic() + deadline
    while True:
        result = check()
        if result or time.monotonic() > end:
            return result
        time.sleep(every)


def test_list_detail_invoke_live_logs_metrics_and_rollback(page, live_platform, two_revisions):
    require_binary("prometheus", hint="apt-get install prometheus")
    name, portal = two_revisions, live_platform.portal_url

    sign_in(page, live_platform)
    assert page.url.rstrip("/").endswith("/p/acme")
    row = page.locator("tr", has=page.get_by_role("link", name=name, exact=True))
    row.wait_for()
    assert "Ready" in row.inner_text() or "Scaled to zero" in row.inner_text()
    assert f"{name}-00002" in row.inner_text()
    screenshot(page, "function-list")

    page.get_by_role("link", name=name, exact=True).click()
    page.wait_for_selector("#function-tabs")
    assert f"/p/acme/f/{name}/" in page.url
    screenshot(page, "function-detail")

    logs = page.context.new_page()
    logs.goto(f"{portal}/p/acme/f/{name}/logs/")
    logs.wait_for_function("document.querySelector('#log-state').textContent === 'live'")

    marker = f"from-the-browser-{uuid.uuid4().hex[:8]}"
    result = _invoke(page, f'{{"note": "{marker}"}}')
    assert "HTTP 200" in result and marker in result
    assert re.search(r"\d+(\.\d)? ms", page.inner_text("#invoke-duration"))

    logs.wait_for_selector(f"#log-lines .log-line:has-text('{marker}')", timeout=60_000)
    line = logs.locator(f"#log-lines .log-line:has-text('{marker}')").first
    assert line.locator(".stream").inner_text() == "stdout"
    assert line.locator(".instance").inner_text()
    screenshot(logs, "function-logs")

    logs.click("#log-pause")  # paused: lines wait on the server, then come on resume
    held = f"held-while-paused-{uuid.uuid4().hex[:8]}"
    assert "HTTP 200" in _invoke(page, f'{{"note": "{held}"}}')
    time.sleep(2)
    assert logs.locator(f"#log-lines .log-line:has-text('{held}')").count() == 0
    logs.click("#log-pause")
    try:
        logs.wait_for_selector(f"#log-lines .log-line:has-text('{held}')", timeout=60_000)
    except Exception as exc:
        shown = logs.inner_text("#log-lines")[-3000:]
        state = logs.inner_text("#log-state")
        raise AssertionError(f"not shown after resume (state {state!r}); last lines:\n{shown}") from exc
    logs.close()

    def counted():
        page.goto(f"{portal}/p/acme/f/{name}/metrics/?window=15m")
        counter = page.locator("#requests-in-window")
        return counter.count() and float(counter.inner_text() or 0) >= 1

    assert _until(counted, deadline=120), page.inner_text("#metrics-panel")
    assert page.locator("#chart-requests polyline").count() >= 1  # the request is drawn, as 2xx
    assert "2xx" in page.inner_text("#chart-requests")
    screenshot(page, "function-metrics")

    listing = page.context.new_page()  # watches the list update without a reload
    listing.goto(f"{portal}/p/acme/")
    listed = listing.locator("tr", has=listing.get_by_role("link", name=name, exact=True))
    assert f"{name}-00002" in listed.inner_text()

    page.goto(f"{portal}/p/acme/f/{name}/revisions/")
    page.on("dialog", lambda dialog: dialog.accept())
    page.click("#revision-1 button.rollback")
    status = page.locator(".status-box")
    status.filter(has_text=f"serving {name}-00001").wait_for(timeout=120_000)
    status.filter(has_text="Ready").or_(status.filter(has_text="Scaled to zero")).wait_for(timeout=120_000)
    after = _invoke(page, "", method="GET")
    assert "Hello," in after and "Howdy," not in after
    listed.filter(has_text=f"{name}-00001").wait_for(timeout=30_000)
    listing.close()


def test_outsider_sees_no_function_of_another_project(browser, live_platform, two_revisions):
    page = browser.new_context().new_page()  # not the `page` fixture: this 404 is the expected outcome
    sign_in(page, live_platform, username="oscar")

    response = page.goto(f"{live_platform.portal_url}/p/acme/f/{two_revisions}/")
    listing = page.goto(f"{live_platform.portal_url}/p/acme/")

    assert response.status == 404 and listing.status == 404
    assert two_revisions not in page.content()
    page.context.close()
