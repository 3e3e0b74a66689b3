"""The web console's fleet pages, end to end in Debian's Chromium against a real ``armillary serve``.

What an operator relies on: a cluster scaled out from its page reaches the new size (a second one inside the
scaling policy's cooldown is refused saying until when, and a resize past its max is refused with the bound
named, both in words in the dialog; a rolling update-profile from its dialog leaves every member on the new
profile revision); an attention item acknowledged from the queue
is acknowledged for everyone (the API says so afterwards) and the dashboard counts the queue; an edit form
saves (PATCH) and a 422 lands on the field that caused it; a read the server answered 503 is tried again
after its Retry-After. Every new page is scanned by axe-core.

The fixtures (one server, one browser for the module) are those of tests/test_web_ui.py.
"""

from __future__ import annotations

import json
import re
import time

import httpx
import pytest

from tests.support.accounts import ADMIN_PASSWORD
from tests.test_web_ui import admin, check_page, chromium, login, server, shots, wait_job  # noqa: F401 (fixtures)

pytestmark = pytest.mark.timeout(150)


@pytest.fixture(scope="module")
def fleet(server, admin: httpx.Client) -> dict:  # noqa: F811
    """An environment, a simulated hypervisor, a profile, a cluster of 1 (min 1, max 3), and a system."""
    assert admin.post("/environments", json={"name": "dev"}).status_code == 201
    made = admin.post("/hypervisors", json={"name": "sim", "environment": "dev", "driver": "simulated", "config": {}})
    assert made.status_code == 201, made.text
    made = admin.post("/profiles", json={"name": "web", "environment": "dev", "hypervisor": "sim",
                                         "machine": {"cpu": 1, "memory": "1G"}, "labels": {"tier": "web"}})
    assert made.status_code == 201, made.text
    started = admin.post("/clusters", json={"name": "web", "profile": "web", "desired": 1, "min": 1, "max": 3})
    assert started.status_code == 202, started.text
    assert wait_job(admin, started.json()["id"])["status"] == "succeeded"
    made = admin.post("/systems", json={"hostname": "db1", "environment": "dev", "hypervisor": "sim"})
    assert made.status_code == 201, made.text
    return {"system": made.json()}


def test_a_cluster_scaled_out_from_its_page_reaches_the_new_size(server, admin, chromium, shots, fleet) -> None:  # noqa: F811
    made = admin.post("/policies", json={"name": "out-slowly", "kind": "scaling",
                                         "spec": {"direction": "out", "cooldown": 300}})
    assert made.status_code == 201, made.text
    assert admin.post("/clusters/web/policies", json={"policy": "out-slowly"}).status_code == 200
    page = login(chromium, server, "admin", ADMIN_PASSWORD, "/clusters")
    page.get_by_role("link", name="web", exact=True).wait_for()
    page.get_by_text("1 of 1 desired (min 1, max 3)").first.wait_for()
    check_page(page, "clusters", shots)

    page.get_by_role("link", name="web", exact=True).click()
    page.get_by_role("heading", name="Cluster web").wait_for()
    created_by = admin.get("/clusters/web").json()["last_job_id"]
    page.get_by_test_id("cluster-job").filter(has_text=re.compile(rf"^job {created_by}$")).wait_for()
    page.get_by_role("button", name="Scale out").click()
    page.get_by_label("How many").fill("1")
    page.get_by_role("button", name="Add members").click()
    # The page showed the creation job as the last one: wait for the scale-out's job to take its place.
    page.get_by_test_id("cluster-job").filter(has_text=re.compile(rf"^job {created_by}$")).wait_for(state="detached")
    job_id = int(page.get_by_test_id("cluster-job").inner_text().split()[-1])
    assert wait_job(admin, job_id)["status"] == "succeeded"
    assert admin.get("/clusters/web").json()["members"] == 2
    page.get_by_role("button", name="Refresh").click()
    page.get_by_test_id("cluster-size").filter(has_text="members 2").wait_for()
    assert page.get_by_role("tab", name="Members (2)").is_visible()
    check_page(page, "cluster", shots)

    # Again at once: the policy's cooldown refuses it (409), saying until when, in the dialog.
    page.get_by_role("button", name="Scale out").click()
    page.get_by_role("button", name="Add members").click()
    refused = page.get_by_role("dialog").get_by_test_id("error")
    refused.wait_for()
    assert "cooling down until" in refused.inner_text()
    page.get_by_role("button", name="Cancel").click()

    # Past the max: refused (422) with the bound named, shown in the dialog; nothing changed.
    page.get_by_role("button", name="Resize").click()
    page.get_by_label("New desired size").fill("5")
    page.get_by_role("dialog").get_by_role("button", name="Resize").click()
    error = page.get_by_role("dialog").get_by_test_id("error")
    error.wait_for()
    assert "max" in error.inner_text()
    assert admin.get("/clusters/web").json()["desired"] == 2
    page.get_by_role("button", name="Cancel").click()

    # A rolling update-profile from its dialog: every member ends made from the new revision.
    assert admin.patch("/profiles/web", json={"labels": {"tier": "web", "release": "2"}}).json()["revision"] == 2
    page.get_by_role("button", name="Update profile").click()
    page.get_by_label("Max batch size").fill("2")
    page.get_by_role("button", name="Start rolling update").click()
    page.get_by_test_id("cluster-job").filter(has_text=re.compile(rf"^job {job_id}$")).wait_for(state="detached")
    rollout = int(page.get_by_test_id("cluster-job").inner_text().split()[-1])
    assert wait_job(admin, rollout)["status"] == "succeeded"
    page.reload()
    page.get_by_test_id("member-profile").filter(has_text="web (2)").nth(1).wait_for()
    assert page.get_by_test_id("member-profile").filter(has_text="web (1)").count() == 0
    page.context.close()


def _attention_item(server, system: dict) -> int:  # noqa: F811
    """An item in the queue, written to the server's database: making one for real needs a remediation that
    fails on a reachable machine (tests/test_audits.py does that with an in-process driver, which a separate
    server process cannot load); what this test checks is the console's side of the queue."""
    from armillary.audits.models import AttentionItem
    from armillary.domain.db import Database

    db = Database(server.database_url())
    try:
        with db.session() as session:
            item = AttentionItem(system_id=system["id"], environment_id=system["environment"]["id"],
                                 reason="still fail after the fix: mode=bad in /etc/app.conf")
            session.add(item)
            session.flush()
            return item.id
    finally:
        db.dispose()


def test_an_attention_item_acknowledged_from_the_queue(server, admin, chromium, shots, fleet) -> None:  # noqa: F811
    item_id = _attention_item(server, fleet["system"])
    page = login(chromium, server, "admin", ADMIN_PASSWORD, "/")
    page.get_by_test_id("attention-count").filter(has_text="1 unresolved").wait_for()
    page.get_by_test_id("attention-count").click()
    row = page.get_by_test_id(f"attention-{item_id}")
    row.get_by_text("still fail after the fix").wait_for()
    check_page(page, "attention", shots)
    row.get_by_role("button", name="Acknowledge db1").click()
    page.get_by_label("Note (optional)").fill("looking at it")
    page.get_by_role("dialog").get_by_role("button", name="Acknowledge").click()
    row.get_by_text("ack by admin").wait_for()
    item = admin.get(f"/attention/{item_id}").json()
    assert item["status"] == "acknowledged" and item["acknowledged_by"] == "admin"

    row.get_by_role("button", name="Assign db1").click()
    page.get_by_label("Assignee").fill("nobody-here")
    page.get_by_role("dialog").get_by_role("button", name="Assign").click()
    page.get_by_role("dialog").get_by_test_id("error").wait_for()  # an unknown user: refused in words
    page.get_by_role("button", name="Cancel").click()

    page.goto(server.url + "/audits")
    page.get_by_role("tab", name="Audits").wait_for()
    check_page(page, "audits", shots)
    for tab in ("Checks", "Findings", "Remediations"):
        page.get_by_role("tab", name=tab).click()
        page.wait_for_load_state("networkidle")
        check_page(page, f"audits-{tab.lower()}", shots)
    page.context.close()


def test_an_edit_form_saves_and_puts_a_422_on_its_field(server, admin, chromium, shots, fleet) -> None:  # noqa: F811
    page = login(chromium, server, "admin", ADMIN_PASSWORD, "/environments")
    page.get_by_role("button", name="Edit dev").click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_label("Variables (JSON)").fill('{"ntp": ')  # not JSON: placed on the field before sending
    dialog.get_by_role("button", name="Save").click()
    dialog.get_by_text("not valid JSON").first.wait_for()

    dialog.get_by_label("Name").fill("not a valid name!")  # the API's 422 names the field
    dialog.get_by_label("Variables (JSON)").fill('{"ntp": "pool.ntp.org"}')
    dialog.get_by_role("button", name="Save").click()
    name = dialog.get_by_label("Name")
    page.wait_for_function("el => el.getAttribute('aria-invalid') === 'true'", arg=name.element_handle())
    check_page(page, "environment-edit", shots)

    dialog.get_by_label("Name").fill("dev")
    dialog.get_by_label("Description").fill("Development, edited")
    dialog.get_by_role("button", name="Save").click()
    dialog.wait_for(state="detached")
    env = admin.get("/environments/dev").json()
    assert env["description"] == "Development, edited" and env["variables"] == {"ntp": "pool.ntp.org"}
    page.context.close()


def test_a_read_answered_503_is_tried_again_after_its_retry_after(server, admin, chromium, fleet) -> None:  # noqa: F811
    """The console's reads honour ``503`` + ``Retry-After`` (the database could not serve them now): the
    dashboard's attention count shows once the read is answered, with no reload by the user. The 503 is put
    on the browser's network (Playwright's route): a real server answers one only while its database refuses,
    which a SQLite server cannot be made to do on demand; everything else is the real server."""
    page = login(chromium, server, "admin", ADMIN_PASSWORD, "/")
    tries: list[float] = []

    def refuse_first(route) -> None:
        tries.append(time.monotonic())
        if len(tries) > 1:
            route.continue_()
            return
        problem = {"type": "urn:armillary:problem:database-unavailable", "title": "Database unavailable",
                   "status": 503, "detail": "the database cannot serve this now; try again"}
        route.fulfill(status=503, headers={"Retry-After": "1", "Content-Type": "application/problem+json"},
                      body=json.dumps(problem))

    page.route(lambda url: "/api/v1/attention?" in url, refuse_first)
    page.reload()
    page.get_by_test_id("attention-count").filter(has_text=re.compile(r"^\d+ unresolved$")).wait_for()
    assert len(tries) == 2 and tries[1] - tries[0] >= 0.9  # asked again, after the second it was told to wait
