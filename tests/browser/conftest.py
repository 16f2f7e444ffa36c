"""Chromium (Debian's, driven by Playwright) against a running platform; see tests/support/live.py."""

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.support.needs import require_binary

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "test-artifacts" / "screenshots"
BIN = Path(sys.executable).parent
PASSWORD = "live-test-password"  # the same users exist for the CLI tests on this platform
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture(scope="package")
def browser():
    # Package scope, not session: Playwright's sync API keeps an event loop running in this thread while it
    # is open, and later tests that call asyncio.run() would fail.
    chromium = require_binary("/usr/bin/chromium", hint="apt-get install chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1440, "height": 900})
    errors: list[str] = []
    context.on("page", lambda new: _collect_errors(new, errors))
    page = context.new_page()
    page.set_default_timeout(20_000)
    yield page
    context.close()
    assert not errors, f"JavaScript errors in the pages: {errors}"


def _collect_errors(page, errors: list[str]) -> None:
    """Uncaught exceptions and console errors, except the browser asking for a favicon we do not have."""
    page.on("pageerror", lambda exc: errors.append(f"{page.url}: {exc}"))

    def on_console(msg) -> None:
        if msg.type == "error" and not msg.location.get("url", "").endswith("/favicon.ico"):
            errors.append(f"{page.url}: {msg.text} ({msg.location.get('url')})")

    page.on("console", on_console)


@pytest.fixture(scope="session")
def browser_users(live_platform):  # noqa: F811
    """bea develops in acme; oscar owns globex only."""
    live_platform.create_user("bea", PASSWORD, project="acme", role="developer")
    live_platform.create_user("oscar", PASSWORD, project="globex", role="owner")
    return live_platform


def run_cli(exe: str, *args: str, env: dict, cwd=None, input: str | None = None):
    result = subprocess.run(
        [str(BIN / exe), *args], env=env, cwd=cwd, input=input, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, f"{exe} {args}: exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="session")
def cli_env(browser_users, tmp_path_factory):
    home = tmp_path_factory.mktemp("browser-cli")
    env = {k: v for k, v in os.environ.items() if not k.startswith("HKS_")}
    env.update(
        XDG_CONFIG_HOME=str(home / "xdg"),
        HOME=str(home),
        HKS_NO_BROWSER="1",
        HKS_URL=browser_users.portal_url,
    )
    run_cli("hks", "login", "--username", "bea", "--password-stdin", env=env, input=PASSWORD + "\n")
    run_cli("hks", "project", "select", "acme", env=env)
    return env


@pytest.fixture(scope="session")
def two_revisions(cli_env, tmp_path_factory):
    """A Node function deployed twice with the developer's CLI: revision 1 says Hello, 2 says Howdy."""
    require_binary("bwrap", hint="apt-get install bubblewrap")
    workdir = tmp_path_factory.mktemp("browser-fn")
    name = f"web-{uuid.uuid4().hex[:6]}"
    run_cli("hks-func", "create", "-l", "node", name, env=cli_env, cwd=workdir)
    run_cli("hks-func", "deploy", env=cli_env, cwd=workdir / name)
    index = workdir / name / "index.js"
    index.write_text(index.read_text().replace("Hello, ", "Howdy, "))
    run_cli("hks-func", "deploy", env=cli_env, cwd=workdir / name)
    return name


def settle(page) -> None:
    """The page has loaded (Playwright's goto waits for that), its fonts are ready and no htmx request of
    its own is in flight. Not Playwright's "networkidle": the dashboard polls every few seconds (status
    every 3 s, builds every 4 s), so on a loaded machine 500 ms without any request may never come."""
    page.wait_for_load_state("load")
    page.wait_for_function(
        "() => document.fonts.status === 'loaded' && !document.querySelector('.htmx-request')"
    )


def sign_in(page, platform, username="bea"):
    page.goto(platform.portal_url + "/accounts/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_load_state()


def screenshot(page, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


# Each chart's time-axis labels as laid out: any two that overlap, and the smallest tick text in CSS px.
CHART_TICKS = """() => {
  const out = {overlaps: [], smallest: 1000};
  for (const svg of document.querySelectorAll('.chart svg')) {
    const visible = (sel) =>
      [...svg.querySelectorAll(sel)].filter((t) => getComputedStyle(t).display !== 'none');
    const boxes = visible('.tick-x').map((t) => t.getBoundingClientRect());
    for (let i = 1; i < boxes.length; i++) {
      if (boxes[i].left < boxes[i - 1].right - 0.5) out.overlaps.push(svg.closest('figure').id + ' #' + i);
    }
    const scale = svg.getScreenCTM().a;
    for (const t of visible('.tick')) {
      out.smallest = Math.min(out.smallest, parseFloat(getComputedStyle(t).fontSize) * scale);
    }
  }
  return out;
}"""
