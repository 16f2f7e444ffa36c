"""The invoke pane and the Logs tab as an owner uses them (issue 15), in Debian's Chromium against the
running platform (tests/support/live.py):

- the invoke pane says which revision answered and shows that call's log lines, keeps the last calls, and
  its "copy as curl" puts on the clipboard a command that, run, gets the same answer;
- a CloudEvents function, invoked with what the pane fills in, gets its event (binary mode), not a 400;
- a request to a function that prints nothing shows its request line in the live log; after 210 more
  requests the live view starts from the newest 200, "Load older" brings the first one back, and the
  search form finds it by time range;
- a custom range of days on the Metrics tab: dates on the time axis, ~60 points, values on hover, labels
  that do not overlap;
- the keyboard alone reaches every control of the list, overview, invoke and settings pages, with a
  visible focus.

Needs: chromium, bubblewrap, curl (Debian packages).
"""

from __future__ import annotations

import datetime as dt
import re
import subprocess
import time
import uuid

import httpx
import pytest

from tests.support.needs import require_binary

from .conftest import BIN, CHART_TICKS, run_cli, screenshot, settle, sign_in

pytestmark = [pytest.mark.browser, pytest.mark.runtime]


def _serving(page) -> str:
    return re.search(r"serving (\S+)", page.inner_text(".status-box")).group(1)


def _send(page, method: str, path: str, body: str = "") -> None:
    page.select_option("#id_method", method)
    page.fill("#id_path", path)
    page.fill("#id_body", body)
    with page.expect_response(lambda r: r.request.method == "POST" and "/invoke/" in r.url):
        page.click("#invoke-send")
    page.wait_for_selector("#invoke-status")


def test_the_invoke_pane_says_who_answered_shows_the_calls_lines_history_and_a_working_curl(
    browser, browser_users, two_revisions
):
    curl = require_binary("curl", hint="apt-get install curl")
    platform, name = browser_users, two_revisions
    context = browser.new_context(permissions=["clipboard-read", "clipboard-write"])
    page = context.new_page()
    page.set_default_timeout(30_000)
    sign_in(page, platform)
    page.goto(f"{platform.portal_url}/p/acme/f/{name}/invoke/")
    marker = f"pane-{uuid.uuid4().hex[:8]}"

    _send(page, "POST", "/", f'{{"note": "{marker}"}}')

    assert "HTTP 200" in page.inner_text("#invoke-status")
    assert page.inner_text("#invoke-revision") == _serving(page)
    assert page.inner_text("#invoke-instance").strip("()").startswith(f"{_serving(page)}-deployment-")
    lines = page.locator("#invoke-lines .log-line")
    printed = lines.filter(has_text=marker)
    assert printed.count() == 1 and printed.locator(".stream").inner_text() == "stdout"
    assert re.match(r"POST / 200 [\d.]+ ?ms", lines.last.locator(".text").inner_text())
    command = page.text_content("#invoke-curl")  # inside a closed <details>
    assert command.startswith("curl -i -X POST") and marker in command

    page.click("#invoke-curl-box summary")
    page.click("#invoke-curl-box button.copy")
    assert page.evaluate("navigator.clipboard.readText()") == command
    ran = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=60)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.startswith("HTTP/1.1 200") and marker in ran.stdout, f"{curl}: {ran.stdout}"

    _send(page, "GET", "/?name=pane")
    assert "Hello, pane!" in page.inner_text("#invoke-body") or "Howdy, pane!" in page.inner_text(
        "#invoke-body"
    )
    page.click("#invoke-history-box summary")  # folded away while an answer is shown
    history = page.locator("#invoke-history li")
    assert history.count() >= 2
    assert "GET /?name=pane" in history.nth(0).inner_text() and "HTTP 200" in history.nth(0).inner_text()
    assert "POST /" in history.nth(1).inner_text()
    page.reload()  # the history is the session's, not the page's
    assert "GET /?name=pane" in page.inner_text("#invoke-history li:first-child")
    screenshot(page, "invoke-history")
    context.close()


def test_a_cloudevents_function_gets_the_sample_event_the_pane_fills_in(
    page, browser_users, cli_env, tmp_path
):
    platform = browser_users
    name = f"ce-{uuid.uuid4().hex[:6]}"
    run_cli("hks-func", "create", "-l", "node", "-t", "cloudevents", name, env=cli_env, cwd=tmp_path)
    run_cli("hks-func", "deploy", env=cli_env, cwd=tmp_path / name)
    sign_in(page, platform)
    page.goto(f"{platform.portal_url}/p/acme/f/{name}/invoke/")
    assert page.locator("#invoke-ce-help").count() == 1
    headers = page.input_value("#id_headers")
    assert "ce-specversion: 1.0" in headers and "ce-type: dev.hks.sample" in headers
    event_id = re.search(r"ce-id: (\S+)", headers).group(1)

    with page.expect_response(lambda r: r.request.method == "POST" and "/invoke/" in r.url):
        page.click("#invoke-send")  # what the pane filled in, unchanged

    assert "HTTP 200" in page.inner_text("#invoke-status")
    body = page.inner_text("#invoke-body")
    assert '"dev.hks.sample"' in body and event_id in body
    assert (
        page.locator("#invoke-lines .log-line", has_text=f"received dev.hks.sample {event_id}").count() == 1
    )
    assert page.inner_text("#invoke-revision") == f"{name}-00001"
    screenshot(page, "invoke-cloudevents")


def _get(platform, name: str, path: str) -> int:
    host = f"{name}.acme.localhost"
    return httpx.get(f"{platform.gateway_url}{path}", headers={"Host": host}, timeout=30).status_code


def test_a_silent_request_shows_in_the_live_log_and_older_lines_come_back_by_load_older_and_search(
    page, browser_users, two_revisions
):
    platform, name = browser_users, two_revisions
    sign_in(page, platform)
    logs_url = f"{platform.portal_url}/p/acme/f/{name}/logs/"
    page.goto(logs_url)
    page.wait_for_function("document.querySelector('#log-state').textContent === 'live'")
    first = f"/silent-{uuid.uuid4().hex[:8]}"

    status = _get(platform, name, first)  # a GET: the template's function prints nothing for it

    line = page.locator("#log-lines .log-line.stream-request", has_text=f"GET {first} {status} ")
    line.wait_for(timeout=60_000)
    assert re.search(rf"revision={name}-0000\d instance={name}-0000\d-deployment-", line.inner_text())
    assert page.locator("#log-lines .log-line", has_text=first).count() == 1  # nothing printed beside it
    time.sleep(1.2)
    boundary = dt.datetime.now(dt.UTC).replace(microsecond=0)  # the form takes whole seconds
    time.sleep(1.2)
    for n in range(210):
        _get(platform, name, f"/later-{n}")

    page.goto(logs_url)
    page.wait_for_function("document.querySelector('#log-state').textContent === 'live'")
    page.locator("#log-lines .log-line", has_text="/later-209 ").wait_for(timeout=60_000)
    assert page.locator("#log-lines .log-line", has_text=first).count() == 0  # the newest 200 only
    while page.locator("#log-lines .log-line", has_text=first).count() == 0:
        assert page.is_enabled("#log-older"), "no older lines left, and the first request not among them"
        page.click("#log-older")
        page.wait_for_function(
            "!document.querySelector('#log-older').disabled || "
            "document.querySelector('#log-older').textContent === 'No older lines'"
        )
    screenshot(page, "logs-load-older")

    page.fill("#id_search_end", boundary.strftime("%Y-%m-%dT%H:%M:%S"))
    page.check("#log-search input[name=stream][value=request]")
    with page.expect_response(lambda r: "/logs/search/" in r.url):
        page.click("#log-search-go")
    results = page.locator("#log-search-results .log-line")
    results.filter(has_text=first).wait_for()
    assert results.filter(has_text="/later-").count() == 0
    assert all(s == "request" for s in results.locator(".stream").all_inner_texts())
    screenshot(page, "logs-search-time-range")


def test_a_custom_range_of_days_has_dates_on_its_axes_about_sixty_points_and_values_on_hover(
    page, browser_users, two_revisions
):
    require_binary("prometheus", hint="apt-get install prometheus")
    platform, name = browser_users, two_revisions
    assert _get(platform, name, "/?name=chart") == 200  # at least one request in the range
    sign_in(page, platform)
    end = dt.datetime.now(dt.UTC).replace(second=0, microsecond=0) + dt.timedelta(minutes=2)
    start = end - dt.timedelta(days=3)

    def drawn():
        page.goto(f"{platform.portal_url}/p/acme/f/{name}/metrics/")
        page.fill("#id_start", start.strftime("%Y-%m-%dT%H:%M"))
        page.fill("#id_end", end.strftime("%Y-%m-%dT%H:%M"))
        page.click("#metrics-range button[type=submit]")
        page.wait_for_selector("#metrics-summary")
        return page.locator("#chart-requests circle").count() > 0

    deadline = time.monotonic() + 90
    while not drawn():
        assert time.monotonic() < deadline, page.inner_text("#metrics-panel")
        time.sleep(5)

    summary = page.inner_text("#metrics-summary")
    assert f"from {start:%Y-%m-%d %H:%M} to {end:%Y-%m-%d %H:%M} UTC" in summary
    assert "one point every 4320 s" in summary  # 3 days / 60
    assert page.input_value("#id_start") == start.strftime("%Y-%m-%dT%H:%M")  # the form keeps the range
    ticks = page.locator("#chart-requests .tick").all_text_contents()  # SVG: no innerText
    assert any(re.fullmatch(r"[A-Z][a-z]{2} \d\d\d\d:\d\d( UTC)?", t) for t in ticks), (
        ticks
    )  # the date over the time
    assert page.locator("#chart-requests .grid").count() >= 4
    ticks = page.evaluate(CHART_TICKS)
    assert ticks["overlaps"] == [] and ticks["smallest"] >= 11, ticks
    hover = page.locator("#chart-requests circle title").first.text_content()
    assert re.match(r"2xx: \d+ at \d{4}-\d\d-\d\d \d\d:\d\d", hover), hover
    screenshot(page, "metrics-custom-range")


FOCUSABLE = """() => {
  const all = document.querySelectorAll(
    'a[href], button, input, select, textarea, summary, [tabindex]:not([tabindex="-1"])');
  const shown = [...all].filter((el) => !el.disabled && el.getClientRects().length
    && getComputedStyle(el).visibility !== 'hidden' && !el.closest('details:not([open]) > :not(summary)'));
  shown.forEach((el, i) => { el.dataset.kb = String(i); });
  return shown.length;
}"""

FOCUSED = """() => {
  const el = document.activeElement;
  const style = getComputedStyle(el);
  return [el.dataset.kb ?? null, style.outlineStyle !== 'none' && parseFloat(style.outlineWidth) >= 2,
          el.tagName.toLowerCase() + (el.id ? '#' + el.id : '') + ' '
            + (el.textContent || '').trim().slice(0, 30)];
}"""


def test_every_control_of_the_main_pages_is_reached_by_the_keyboard_with_a_visible_focus(
    page, browser_users, two_revisions
):
    platform, name = browser_users, two_revisions
    sign_in(page, platform)
    base = f"{platform.portal_url}/p/acme/f/{name}"
    for url in (f"{platform.portal_url}/p/acme/", f"{base}/", f"{base}/invoke/", f"{base}/settings/"):
        page.goto(url)
        settle(page)
        count = page.evaluate(FOCUSABLE)
        reached, unmarked = set(), []
        page.locator("body").focus()
        for _ in range(count + 3):
            page.keyboard.press("Tab")
            index, visible, what = page.evaluate(FOCUSED)
            if index is None:
                unmarked.append(what)
                continue
            assert visible, f"{url}: no visible focus on {what}"
            reached.add(int(index))
        missing = sorted(set(range(count)) - reached)
        assert not missing, f"{url}: not reached by Tab: {missing} of {count} ({unmarked[:3]})"


def _acme_build_slot(platform, action: str) -> None:
    """Take or give back acme's one build slot in the platform's Redis, as a build of acme running
    elsewhere holds it (functions/services/build_slots.py)."""
    platform.manage(
        "shell",
        "-c",
        "from functions.models import Project; from functions.services import build_slots;"
        f"build_slots.{action}(Project.objects.get(slug='acme').pk, 'browser-test-holder')",
        capture=True,
    )


def test_the_builds_tab_follows_a_build_while_you_watch(page, browser_users, cli_env, tmp_path):
    """A build waiting for its project's build slot, then running, then done: the Builds tab shows each
    state as it comes (status badge, its log, a duration at the end) without being reloaded."""
    require_binary("bwrap", hint="apt-get install bubblewrap")
    platform = browser_users
    name = f"watch-{uuid.uuid4().hex[:6]}"
    run_cli("hks-func", "create", "-l", "node", name, env=cli_env, cwd=tmp_path)
    _acme_build_slot(platform, "take")
    deploy = subprocess.Popen(
        [str(BIN / "hks-func"), "deploy"],
        env=cli_env,
        cwd=tmp_path / name,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        sign_in(page, platform)
        deadline = time.monotonic() + 60
        builds = f"{platform.portal_url}/p/acme/f/{name}/builds/"
        while page.request.get(builds).status != 200:  # the function exists once the CLI has uploaded it
            assert time.monotonic() < deadline, "the deploy made no function"
            time.sleep(0.5)
        page.goto(builds)
        page.locator(".build.card").first.wait_for(timeout=30_000)
        page.evaluate("window.notReloaded = true")
        card = page.locator(".build.card").first
        assert "Queued" in card.locator(".build-status").inner_text()
        card.locator(".build-log:has-text('waiting: 1 build of this project already running')").wait_for(
            timeout=30_000
        )
        _acme_build_slot(platform, "give_back")
        page.locator(".build.card .build-status:text-is('Succeeded')").first.wait_for(timeout=180_000)
        card = page.locator(".build.card").first
        assert card.locator(".build-duration").count() == 1
        assert "artifact" in card.locator(".build-log").text_content()  # its own log (folded once done)
        assert page.evaluate("window.notReloaded")
        screenshot(page, "builds-followed-live")
        assert deploy.wait(timeout=300) == 0, deploy.stdout.read()
    finally:
        _acme_build_slot(platform, "give_back")
        if deploy.poll() is None:
            deploy.kill()
