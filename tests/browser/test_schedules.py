"""The schedules panel in a real browser (Debian's Chromium via Playwright) against a live portal: typing
an expression previews the next five run times in the chosen zone before saving, a refused expression
shows its reason, and saving adds the schedule to the list."""

import concurrent.futures

import pytest
from django.db import connection
from django.test import Client

from functions.models import Schedule
from tests.support.needs import require_binary
from tests.support.schedules import hello  # noqa: F401  (fixtures of the schedule tests)


def db_read(fn):
    """Playwright's sync API keeps an event loop in this thread, where Django refuses queries: read in
    another thread."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(lambda: _closing(fn)).result()


def _closing(fn):
    try:
        return fn()
    finally:
        connection.close()


pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture
def page(live_server, developer, hello):
    chromium = require_binary("/usr/bin/chromium", hint="apt-get install chromium")
    from playwright.sync_api import sync_playwright

    client = Client()
    client.force_login(developer)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=ARGS)
        context = browser.new_context()
        context.add_cookies(
            [{"name": "sessionid", "value": client.cookies["sessionid"].value, "url": live_server.url}]
        )
        page = context.new_page()
        page.set_default_timeout(20_000)
        page.goto(f"{live_server.url}/p/acme/f/hello/schedules/")
        yield page
        browser.close()


def test_preview_follows_the_expression_and_zone_then_saving_lists_it(page):
    page.select_option("select[name=timezone]", "Europe/Berlin")
    page.fill("input[name=cron]", "30 2 * * *")
    preview = page.locator("#schedule-preview")
    preview.locator("text=At 02:30 every day").wait_for()
    times = preview.locator("ol.next-runs li")
    assert times.count() == 5
    assert all(("02:30 CE" in t or "03:00 CEST" in t) for t in times.all_inner_texts())

    page.select_option("select[name=timezone]", "Asia/Tokyo")
    preview.locator("text=(30 2 * * *, Asia/Tokyo)").wait_for()
    assert all("02:30 JST" in t for t in preview.locator("ol.next-runs li").all_inner_texts())

    page.fill("input[name=cron]", "0 0 * * MON#1")
    page.locator("#schedule-preview-error").wait_for()
    assert "not supported in this dialect" in page.inner_text("#schedule-preview-error")

    page.fill("input[name=cron]", "@daily")
    page.fill("input[name=name]", "nightly")
    page.click("#schedule-form button[type=submit]")
    page.locator("table.schedules-table >> text=nightly").wait_for()
    schedule = db_read(Schedule.objects.get)
    assert (schedule.name, schedule.cron, schedule.timezone) == ("nightly", "0 0 * * *", "Asia/Tokyo")


def test_a_refused_save_shows_the_reason_and_keeps_nothing(page):
    page.fill("input[name=name]", "bad")
    page.fill("input[name=cron]", "0 0 31 2 *")
    page.click("#schedule-form button[type=submit]")
    page.locator("#schedule-form-errors").wait_for()
    assert "bad day-of-month" in page.inner_text("#schedule-form-errors")
    assert not db_read(Schedule.objects.exists)
