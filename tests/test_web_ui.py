"""The web console end to end: a real ``armillary serve`` serving the built UI, driven in Debian's Chromium.

What an operator relies on: logging in with the browser session; creating an environment, a simulated
hypervisor (fields from the driver's schema), a type and systems through the forms; staging one and
watching its live log reach "succeeded"; a bulk destroy by label; a viewer seeing no actions and being
refused by the API itself; a 409 (a locked environment) shown in words with who holds the lock; paging
through 10,000 systems. Every page is scanned by axe-core (no serious or critical violation) and
screenshotted (ARMILLARY_UPDATE_SCREENSHOTS=1 also writes them to docs/images/).

One server and one browser for the module; each test opens its own browser context (its own cookies).
The server is SQLite: these tests are about the console, the API's backends are covered by the API tests.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support import browser
from tests.support.accounts import ADMIN_PASSWORD, TEST_PASSWORDS, ensure_user, grant
from tests.support.peers import missing_peer
from tests.support.subprocess_server import ServerProcess

pytestmark = pytest.mark.timeout(150)

OPERATOR_PASSWORD, VIEWER_PASSWORD = TEST_PASSWORDS[1], TEST_PASSWORDS[3]
DOCS_IMAGES = browser.ROOT / "docs" / "images"
DOCS_SHOTS = {"dashboard", "systems", "job", "bulk-confirm", "conflict", "hypervisors",  # shown in the README
              "cluster", "attention"}  # docs/web-ui.md


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[ServerProcess]:
    why = browser.missing()
    if why:
        missing_peer(why)
    srv = ServerProcess(tmp_path_factory.mktemp("web-ui"), env={"ARMILLARY_LOG_LEVEL": "warning"}).start()
    srv.admin_token()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def admin(server) -> Iterator[httpx.Client]:
    with server.client() as client:
        yield client


@pytest.fixture(scope="module")
def chromium(server):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = browser.launch(p)
        yield b
        b.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("screenshots")


def login(chromium, server, username: str, password: str, path: str = "/"):
    context = chromium.new_context(viewport={"width": 1280, "height": 800})
    page = browser.watch(context.new_page())
    page.set_default_timeout(15_000)
    page.goto(server.url + path)
    page.get_by_label("Username").fill(username)
    page.get_by_role("textbox", name="Password").fill(password)
    page.get_by_role("button", name="Log in").click()
    page.get_by_test_id("whoami").wait_for()
    return page


def check_page(page, name: str, shots: Path) -> None:
    """No serious/critical axe violation; a screenshot kept (and in docs/images when asked)."""
    page.wait_for_load_state("networkidle")
    bad = browser.axe_violations(page)
    assert bad == [], f"{name}: accessibility violations: {bad}"
    page.screenshot(path=str(shots / f"{name}.png"))
    if os.environ.get("ARMILLARY_UPDATE_SCREENSHOTS") == "1" and name in DOCS_SHOTS:
        DOCS_IMAGES.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(DOCS_IMAGES / f"ui-{name}.png"))


def pick(page, label: str, option: str) -> None:
    """Choose an option of a Mantine Select by its label, with the keyboard-free path a user clicks."""
    page.get_by_label(re.compile(f"^{label}")).first.click()
    page.get_by_role("option", name=option, exact=True).click()


def wait_job(admin: httpx.Client, job_id: int, timeout_s: float = 60) -> dict:
    import time

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job = admin.get(f"/jobs/{job_id}").json()
        if job["status"] in ("succeeded", "failed", "cancelled"):
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} did not end: {job}")


def test_a_server_without_a_build_says_how_to_build(tmp_path) -> None:
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from armillary import web

    app = FastAPI()
    web.install(app, static=tmp_path / "no-build")
    with TestClient(app) as client:
        page = client.get("/", headers={"accept": "text/html"})
        assert page.status_code == 200 and "npm run build" in page.text and "scripts/bootstrap" in page.text
        assert page.headers["cache-control"] == "no-cache"
        assert client.get("/systems/3", headers={"accept": "text/html"}).text == page.text
        assert client.get("/api/v1/nothing-here", headers={"accept": "text/html"}).status_code == 404


def test_serving_caches_assets_and_falls_back_to_the_console(server) -> None:
    index = httpx.get(server.url + "/", headers={"accept": "text/html"}, timeout=10)
    assert index.status_code == 200 and index.headers["cache-control"] == "no-cache"
    asset = re.search(r'src="(/assets/[^"]+\.js)"', index.text).group(1)
    cached = httpx.get(server.url + asset, timeout=10)
    assert cached.status_code == 200 and "immutable" in cached.headers["cache-control"]
    assert cached.headers["content-encoding"] == "gzip"  # httpx asks for it, as browsers do
    # A client route loaded from a bookmark is the console; an API path keeps its problem+json 404.
    deep = httpx.get(server.url + "/systems/12?tab=jobs", headers={"accept": "text/html"}, timeout=10)
    assert deep.status_code == 200 and deep.text == index.text
    api_404 = httpx.get(server.url + "/api/v1/nope", headers={"accept": "text/html"}, timeout=10)
    assert api_404.status_code in (401, 404) and api_404.headers["content-type"].startswith("application/problem+json")
    assert httpx.get(server.url + "/docs", timeout=10).status_code == 200
    api_client = httpx.get(server.url + "/", timeout=10)  # no text/html: the API's documentation
    assert api_client.status_code == 307 and api_client.headers["location"] == "/docs"


def test_operator_journey(server, admin, chromium, shots) -> None:
    page = login(chromium, server, "admin", ADMIN_PASSWORD, "/environments")
    check_page(page, "login-landing", shots)

    # An environment, through the form.
    page.get_by_label("Name").fill("dev")
    page.get_by_label("Description").fill("Development")
    page.get_by_role("button", name="Create").click()
    page.get_by_role("link", name="dev", exact=True).wait_for()
    check_page(page, "environments", shots)

    # A simulated hypervisor: the settings fields come from GET /drivers/simulated.
    page.get_by_role("link", name="Hypervisors").click()
    page.get_by_role("heading", name="Hypervisors").wait_for()
    page.get_by_label("Name").fill("sim1")
    pick(page, "Environment", "dev")
    pick(page, "Driver", "simulated")
    page.get_by_text("Latency", exact=False).first.wait_for()
    page.get_by_role("button", name="Create").click()
    page.get_by_role("cell", name="sim1", exact=True).wait_for()
    check_page(page, "hypervisors", shots)

    # A type with a script provisioner.
    page.get_by_role("link", name="Types").click()
    page.get_by_role("heading", name="Types").wait_for()
    page.get_by_label("Name").fill("web")
    page.get_by_role("button", name="Create").click()
    page.get_by_role("cell", name="web", exact=True).wait_for()

    # Three systems, labelled tier=web.
    for host in ("web1", "web2", "web3"):
        page.goto(server.url + "/systems/new")
        page.get_by_role("heading", name="New system").wait_for()
        page.get_by_label("Hostname").fill(host)
        pick(page, "Environment", "dev")
        pick(page, "Hypervisor", "sim1")
        pick(page, "Type", "web")
        page.get_by_label("Labels").fill("tier=web")
        page.get_by_role("button", name="Create").click()
        page.get_by_role("heading", name=host).wait_for()
    check_page(page, "system-defined", shots)

    page.get_by_role("link", name="Systems").click()
    page.get_by_role("heading", name="Systems").wait_for()
    page.get_by_label("Labels").fill("tier=web")
    page.get_by_label("Labels").press("Enter")
    expect_rows(page, 3)
    check_page(page, "systems", shots)

    # Stage web1 and follow its live log until it succeeds.
    page.get_by_role("link", name="web1").click()
    page.get_by_role("button", name="stage").click()
    page.get_by_role("dialog").get_by_role("button", name="stage").click()
    page.wait_for_url(re.compile(r"/jobs/\d+$"))
    page.get_by_test_id("job-status").get_by_text("succeeded").wait_for(timeout=60_000)
    # The status may come from the page's re-read of the job before the stream's lines are drawn: wait for them.
    log = page.get_by_test_id("job-log")
    log.locator(".log-line").first.wait_for(timeout=30_000)
    assert log.locator(".log-line").count() > 0
    check_page(page, "job", shots)

    # The other two are created through the API; then all three are destroyed by label from the table.
    for host in ("web2", "web3"):
        job = admin.post(f"/systems/{host}/actions", json={"action": "create"}).json()
        assert wait_job(admin, job["id"])["status"] == "succeeded"
    page.goto(server.url + "/systems?label=tier%3Dweb")
    expect_rows(page, 3)
    page.get_by_label("Select all on this page").check()
    page.get_by_role("button", name="Bulk action…").click()
    page.get_by_role("menuitem", name="destroy").click()
    dialog = page.get_by_role("dialog")
    assert dialog.get_by_test_id("bulk-count").inner_text() == "3"
    page.get_by_role("menu").wait_for(state="detached")  # the closing menu is not part of the dialog's view
    check_page(page, "bulk-confirm", shots)
    dialog.get_by_role("button", name="destroy 3 systems").click()
    page.wait_for_url(re.compile(r"/jobs/\d+$"))
    page.get_by_test_id("job-status").get_by_text("succeeded").wait_for(timeout=60_000)
    page.get_by_test_id("host-summary").get_by_text("web3").wait_for()
    assert page.get_by_test_id("host-summary").inner_text().count("✔") == 3
    states = {s["hostname"]: s["state"] for s in admin.get("/systems", params={"label": "tier=web"}).json()["items"]}
    assert states == {"web1": "destroyed", "web2": "destroyed", "web3": "destroyed"}

    # The remaining pages render and pass the scan.
    for path, name in (("/", "dashboard"), ("/jobs", "jobs"), ("/admin/users", "users"), ("/admin/audit", "audit"),
                       ("/network", "network"), ("/groups", "groups"), ("/schedules", "schedules"),
                       ("/admin/tokens", "tokens")):
        page.goto(server.url + path)
        page.get_by_role("heading", level=2).wait_for()
        check_page(page, name, shots)
    page.context.close()


def expect_rows(page, n: int) -> None:
    """Wait until the table has loaded (not busy) and shows ``n`` rows."""
    page.wait_for_function(f"""document.querySelector('[data-testid=systems-table]')?.getAttribute('aria-busy') === 'false'
        && document.querySelectorAll('[data-testid=system-row]').length === {n}""")


def test_viewer_sees_no_actions_and_the_api_refuses_them(server, admin, chromium, shots) -> None:
    ensure_env(admin, "view")
    system = admin.post("/systems", json={"hostname": "seen1", "environment": "view"}).json()
    db = _db(server)
    ensure_user(db, "viewer", password=VIEWER_PASSWORD)
    grant(db, "viewer", "view", "viewer")
    page = login(chromium, server, "viewer", VIEWER_PASSWORD, f"/systems/{system['id']}")
    page.get_by_role("heading", name="seen1").wait_for()
    assert page.get_by_role("button", name="stage").count() == 0
    assert page.get_by_role("group", name="Actions").count() == 0
    check_page(page, "system-viewer", shots)
    page.goto(server.url + "/systems")
    expect_rows(page, 1)
    assert page.get_by_role("button", name="New system").count() == 0
    assert page.get_by_label("Select all on this page").count() == 0
    # The page's own session cannot do it either: the API says no (403), not just the UI.
    status = page.evaluate(
        """async (id) => {
             const csrf = document.cookie.split('; ').find(c => c.startsWith('armillary_csrf='))?.split('=')[1];
             const r = await fetch(`/api/v1/systems/${id}/actions`, {method: 'POST', credentials: 'same-origin',
               headers: {'Content-Type': 'application/json', 'X-CSRF-Token': csrf}, body: JSON.stringify({action: 'stage'})});
             return r.status; }""", system["id"])
    assert status == 403
    page.context.close()


def test_a_conflict_is_shown_in_words_with_the_lock_holder(server, admin, chromium, shots) -> None:
    ensure_env(admin, "prod")
    admin.post("/hypervisors", json={"name": "simp", "environment": "prod", "driver": "simulated"})
    system = admin.post("/systems", json={"hostname": "db1", "environment": "prod", "hypervisor": "simp"}).json()
    db = _db(server)
    ensure_user(db, "oper", password=OPERATOR_PASSWORD)
    grant(db, "oper", "prod", "operator")
    assert admin.post("/environments/prod/lock", json={"reason": "release freeze"}).status_code in (200, 204)
    try:
        page = login(chromium, server, "oper", OPERATOR_PASSWORD, f"/systems/{system['id']}")
        page.get_by_role("button", name="stage").click()
        page.get_by_role("dialog").get_by_role("button", name="stage").click()
        error = page.get_by_role("dialog").get_by_test_id("error")
        error.wait_for()
        text = error.inner_text()
        assert "admin" in text and "release freeze" in text, text
        check_page(page, "conflict", shots)
        page.context.close()
    finally:
        admin.post("/environments/prod/unlock")


def test_the_systems_table_pages_through_10000_systems(server, admin, chromium, shots) -> None:
    ensure_env(admin, "big")
    for start in range(0, 10_000, 1000):
        items = [{"hostname": f"n{i:05d}", "environment": "big", "labels": {"cell": f"c{i % 7}"}}
                 for i in range(start, start + 1000)]
        response = admin.post("/systems/import", json={"items": items}, timeout=120)
        assert response.status_code in (200, 201), response.text
    page = login(chromium, server, "admin", ADMIN_PASSWORD, "/systems?environment=big&size=1000")
    seen: list[str] = []
    for number in range(1, 11):
        page.get_by_test_id("page-number").get_by_text(f"Page {number}", exact=True).wait_for()
        first_row_is(page, f"n{(number - 1) * 1000:05d}")
        expect_rows(page, 1000)
        seen += page.locator("[data-testid=system-row] td:nth-child(2)").all_inner_texts()
        if number < 10:
            page.get_by_role("button", name="Next").click()
    # A full last page still links on (the API's keyset cannot know it is the last); the next one is empty.
    if page.get_by_role("button", name="Next").is_enabled():
        page.get_by_role("button", name="Next").click()
        page.get_by_text("No systems match.").wait_for()
        assert page.get_by_role("button", name="Next").is_disabled()
        page.get_by_role("button", name="Previous").click()
        page.get_by_test_id("page-number").get_by_text("Page 10", exact=True).wait_for()
    assert len(seen) == 10_000 and len(set(seen)) == 10_000 and seen[0] == "n00000" and seen[-1] == "n09999"
    # Back again keeps the same keyset pages.
    page.get_by_role("button", name="Previous").click()
    page.get_by_test_id("page-number").get_by_text("Page 9", exact=True).wait_for()
    expect_rows(page, 1000)
    first_row_is(page, "n08000")
    page.goto(server.url + "/systems?environment=big&label=cell%3Dc3")
    page.wait_for_function("document.querySelectorAll('[data-testid=system-row]').length === 50")
    assert set(page.locator("[data-testid=system-row] td:nth-child(7)").all_inner_texts()) == {"cell=c3"}
    page.context.close()


def first_row_is(page, hostname: str) -> None:
    page.wait_for_function(
        "h => document.querySelector('[data-testid=system-row] td:nth-child(2)')?.innerText === h", arg=hostname)


def ensure_env(admin: httpx.Client, name: str) -> None:
    response = admin.post("/environments", json={"name": name})
    assert response.status_code in (201, 409), response.text


def _db(server: ServerProcess):
    from armillary.domain.db import Database

    return Database(server.database_url())
