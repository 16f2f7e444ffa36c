"""The function list a page at a time, in Debian's Chromium against the running platform
(tests/support/live.py), with a project of 120 functions (rows written through the ORM: nothing is deployed):

- the pager works from the keyboard, without reloading the page, and keeps the focus on the link used;
- page 2 takes a pushed status change of one of its rows over the websocket, with the list's poll held
  back so that only the push can bring it;
- page 1 quietly drops a push for a row it does not show (no error in the console, its rows unchanged) and
  still takes the next push for one of its own;
- a later page, its counts and pager do not scroll sideways at 390, 1280 or 1920 px, and axe-core finds
  nothing serious on it.

Needs: chromium, bubblewrap (Debian packages).
"""

from __future__ import annotations

import time

import pytest

from .conftest import PASSWORD, SCREENSHOTS, _collect_errors, settle

pytestmark = [pytest.mark.browser, pytest.mark.runtime]

FUNCTIONS = 120
WS_OPEN = "document.addEventListener('htmx:wsOpen', () => { window.hksWsOpen = true; })"


@pytest.fixture(scope="module")
def bulk(live_platform):
    """Project "bulk" with 120 pending functions (pending: neither observed nor reconciled), viewer pia."""
    live_platform.create_user("pia", PASSWORD, project="bulk", role="viewer")
    live_platform.manage(
        "shell",
        "-c",
        (
            "from functions.models import Function, Project;"
            "p = Project.objects.get(slug='bulk');"
            "Function.objects.bulk_create(Function(project=p, name=f'item-{i:03d}', status='pending',"
            f" url=f'http://item-{{i:03d}}.bulk.localhost') for i in range({FUNCTIONS}))"
        ),
        capture=True,
    )
    return live_platform


def _push_failure(platform, name: str, message: str) -> None:
    """What a failing build does to a row: the status written, then ``function_changed`` pushes the row."""
    platform.manage(
        "shell",
        "-c",
        (
            "from functions.models import Function;"
            "from functions.realtime.push import function_changed;"
            f"f = Function.objects.get(project__slug='bulk', name={name!r});"
            f"Function.objects.filter(pk=f.pk).update(status='failed', status_message={message!r});"
            "function_changed(function_id=f.pk)"
        ),
        capture=True,
    )


def _sign_in(page, portal: str) -> None:
    page.goto(portal + "/accounts/login/")
    page.fill("#id_username", "pia")
    page.fill("#id_password", PASSWORD)
    page.click("#login-form button[type=submit]")
    page.wait_for_load_state()


def _hold_polls(page, portal: str) -> list[str]:
    """Answer the list's htmx requests (its 5-second poll) with 204, which htmx leaves unswapped."""
    held: list[str] = []

    def handle(route):
        if route.request.headers.get("hx-request"):
            held.append(route.request.url)
            route.fulfill(status=204)
        else:
            route.continue_()

    page.route(f"{portal}/p/bulk/**", handle)
    return held


def _row(page, name: str):
    return page.locator(f"tr:has(a:text-is('{name}'))")


def _live_page(page, portal: str, query: str = "") -> None:
    page.add_init_script(WS_OPEN)
    _sign_in(page, portal)
    page.goto(f"{portal}/p/bulk/{query}")
    page.wait_for_function("window.hksWsOpen === true")
    page.evaluate("window.notReloaded = true")


def test_the_pager_works_from_the_keyboard_without_a_reload(page, bulk):
    portal = bulk.portal_url
    _live_page(page, portal)
    assert page.locator("#function-rows tbody tr").count() == 50

    page.focus("#page-next")
    page.keyboard.press("Enter")

    page.locator("#page-number", has_text="Page 2 of 3").wait_for()
    assert page.url.endswith("/p/bulk/?page=2")
    assert _row(page, "item-050").count() == 1 and _row(page, "item-049").count() == 0
    assert page.evaluate("document.activeElement.id") == "page-next"
    assert page.evaluate("window.notReloaded")


def test_a_row_on_page_two_takes_a_pushed_status_change(page, bulk):
    portal = bulk.portal_url
    _live_page(page, portal, "?page=2")
    held = _hold_polls(page, portal)
    row = _row(page, "item-075")
    assert row.locator("[data-state='pending']").count() == 1

    _push_failure(bulk, "item-075", "pushed to page two")

    row.locator("[data-state='failed']").first.wait_for(timeout=30_000)
    assert "pushed to page two" in row.inner_text()
    assert page.evaluate("window.notReloaded")
    assert all("page=2" in url for url in held)  # what polls there were stayed on page 2, unanswered


def test_page_one_drops_a_push_for_page_two_and_takes_its_own(page, bulk):
    portal = bulk.portal_url
    frames: list[str] = []
    page.on("websocket", lambda ws: ws.on("framereceived", lambda payload: frames.append(str(payload))))
    _live_page(page, portal)
    _hold_polls(page, portal)
    before = page.inner_html("#function-rows tbody")

    _push_failure(bulk, "item-080", "pushed to page two")
    deadline = time.monotonic() + 30
    while not any("item-080" in frame for frame in frames) and time.monotonic() < deadline:
        page.wait_for_timeout(200)
    page.wait_for_timeout(300)  # the frame handled (and dropped) by the page

    assert any("item-080" in frame for frame in frames), "the push never reached the page"
    assert page.inner_html("#function-rows tbody") == before
    assert _row(page, "item-080").count() == 0

    _push_failure(bulk, "item-010", "pushed to page one")

    _row(page, "item-010").locator("[data-state='failed']").first.wait_for(timeout=30_000)
    assert page.locator("#function-rows tbody tr").count() == 50
    assert page.evaluate("window.notReloaded")


@pytest.mark.parametrize("width", [390, 1280, 1920])
def test_a_later_page_fits_the_screen_and_axe_finds_nothing_serious(browser, bulk, width):
    from axe_playwright_python.sync_playwright import Axe

    context = browser.new_context(viewport={"width": width, "height": 900})
    errors: list[str] = []
    context.on("page", lambda new: _collect_errors(new, errors))
    page = context.new_page()
    page.set_default_timeout(20_000)
    _sign_in(page, bulk.portal_url)
    page.goto(f"{bulk.portal_url}/p/bulk/?page=2&q=item")
    settle(page)

    scroll, inner = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    serious = [
        f"{v['id']}: {v['help']}"
        for v in Axe().run(page).response["violations"]
        if v["impact"] in ("serious", "critical")
    ]
    (SCREENSHOTS / "layout").mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "layout" / f"list-page-2-{width}.png"), full_page=True)
    context.close()

    assert scroll <= inner, f"{scroll} px wide in {inner} px"
    assert not serious
    assert not errors, errors
