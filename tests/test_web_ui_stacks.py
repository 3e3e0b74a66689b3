"""The web console's stack pages, end to end in Debian's Chromium against a real ``armillary serve``.

What an operator relies on: a stack written in the editor is validated with every problem named by its path;
once defined, its plan is shown as a diff (2 creates), applying that plan runs a job that makes both systems
(the resources and outputs listed, a hidden parameter's output redacted); a changed label plans as an update
in place; a check finds no drift; a plan made before the stack changed is refused in words (409); delete
removes the stack and what it made. Every page is scanned by axe-core, once in the dark theme too.

The fixtures (one server, one browser for the module) are those of tests/test_web_ui.py.
"""

from __future__ import annotations

import re

import httpx
import pytest

from tests.support.accounts import ADMIN_PASSWORD
from tests.test_web_ui import admin, check_page, chromium, login, pick, server, shots, wait_job  # noqa: F401 (fixtures)

pytestmark = pytest.mark.timeout(240)

SECRET = "tok-9f2c-Secret-value"

TEMPLATE = """armillary_template_version: 1
description: a web server and its database
parameters:
  tier: {type: string, default: front}
  token: {type: string, hidden: true}
resources:
  db:
    type: Armillary::System
    properties:
      hypervisor: sim
      labels: {role: db}
  web:
    type: Armillary::System
    depends_on: [db]
    properties:
      hypervisor: sim
      labels: {tier: {get_param: tier}}
      variables: {token: {get_param: token}}
outputs:
  web_host: {value: {get_attr: [web, hostname]}}
  token: {value: {get_param: token}}
"""

BAD = """armillary_template_version: 1
resources:
  web:
    type: Armillary::Nope
    properties: {hypervisor: sim}
  db:
    type: Armillary::System
    depends_on: [ghost]
    properties: {hypervisor: sim}
"""


@pytest.fixture(scope="module")
def sim(server, admin: httpx.Client) -> None:  # noqa: F811
    """An environment and a simulated hypervisor: what the stack's systems are made on."""
    assert admin.post("/environments", json={"name": "dev"}).status_code == 201
    made = admin.post("/hypervisors", json={"name": "sim", "environment": "dev", "driver": "simulated", "config": {}})
    assert made.status_code == 201, made.text


def job_of(page, test_id: str) -> int:
    link = page.get_by_test_id(test_id)
    link.wait_for()
    return int(link.inner_text().split()[-1])


def plan_with(page, number: int) -> None:
    page.get_by_role("button", name="Plan", exact=True).click()
    page.get_by_test_id("plan-summary").filter(has_text=f"Plan {number}:").wait_for()


def test_a_stack_written_in_the_editor_planned_applied_edited_checked_and_deleted(
        server, admin, chromium, shots, sim) -> None:  # noqa: F811
    page = login(chromium, server, "admin", ADMIN_PASSWORD, "/stacks")
    page.get_by_text("No stacks yet.").wait_for()
    check_page(page, "stacks-empty", shots)

    # New: a bad template lists every problem with its path; nothing is defined.
    page.get_by_role("button", name="New stack").click()
    page.get_by_role("heading", name="New stack").wait_for()
    page.get_by_label("Stack name").fill("app")
    pick(page, "Environment", "dev")
    editor = page.get_by_label("Template (YAML)")
    editor.fill(BAD)
    page.get_by_role("button", name="Validate").click()
    problems = page.get_by_test_id("template-problem")
    problems.first.wait_for()
    texts = problems.all_inner_texts()
    assert any(t.startswith("resources.web.type") and "Armillary::Nope" in t for t in texts), texts
    assert any(t.startswith("resources.db.depends_on") and "ghost" in t for t in texts), texts
    check_page(page, "stack-new-invalid", shots)

    # A good one: its parameters get fields (the hidden one a password field), the required one missing is
    # named; once given, valid. Created: nothing is made yet.
    editor.fill(TEMPLATE)
    page.get_by_role("button", name="Validate").click()
    problems.filter(has_text="parameters.token").wait_for()
    assert problems.count() == 1 and "required" in problems.inner_text()
    page.get_by_label("token (hidden)", exact=True).fill(SECRET)
    page.get_by_role("button", name="Validate").click()
    page.get_by_test_id("valid").wait_for()
    assert problems.count() == 0
    check_page(page, "stack-new", shots)
    page.get_by_role("button", name="Create stack").click()
    page.get_by_role("heading", name="Stack app").wait_for()
    assert admin.get("/stacks/app").json()["resources"] == 0

    # Plan 1: two creates, shown as a diff; applied as one job, followed to the end.
    plan_with(page, 1)
    assert "2 to add, 0 to change, 0 to replace, 0 to destroy, 0 unchanged" in page.get_by_test_id("plan-summary").inner_text()
    creates = page.locator("[data-testid=plan-change][data-action=create]")
    assert sorted(creates.all_inner_texts()) == ["+ db (Armillary::System) — create", "+ web (Armillary::System) — create"]
    check_page(page, "stack-plan", shots)
    page.get_by_role("button", name="Apply plan 1").click()
    job = job_of(page, "apply-job")
    assert wait_job(admin, job, timeout_s=90)["status"] == "succeeded"
    page.get_by_test_id("stack-status").filter(has_text="complete").wait_for()

    page.get_by_role("tab", name="Resources (2)").click()
    rows = page.get_by_test_id("stack-resource")
    rows.nth(1).wait_for()
    assert [r.split("\t")[0] for r in rows.all_inner_texts()] == ["db", "web"]
    assert all("complete" in r.lower() and "not checked" in r for r in rows.all_inner_texts()), rows.all_inner_texts()
    check_page(page, "stack-resources", shots)
    page.get_by_role("tab", name="Outputs (2)").click()
    outputs = {o.split("\t")[0]: o.split("\t")[1] for o in page.get_by_role("tabpanel").get_by_test_id("stack-output").all_inner_texts()}
    assert outputs["web_host"] == "app-web" and outputs["token"].startswith("******"), outputs
    assert SECRET not in page.content()
    check_page(page, "stack-outputs", shots)

    # A changed label: an update in place of db only (web unchanged, collapsed); applied.
    page.get_by_role("tab", name="Template and plan").click()
    text = editor.input_value()
    assert "role: db" in text, text
    editor.fill(text.replace("role: db", "role: database"))
    plan_with(page, 2)
    update = page.locator("[data-testid=plan-change][data-action=update]")
    assert update.all_inner_texts() == ["~ db (Armillary::System) — update in place: labels.role"]
    assert "0 to add, 1 to change, 0 to replace, 0 to destroy, 1 unchanged" in page.get_by_test_id("plan-summary").inner_text()
    assert not page.get_by_text("web (Armillary::System) — no-op").is_visible()  # collapsed
    page.get_by_text("1 unchanged", exact=True).click()
    page.get_by_text("web (Armillary::System) — no-op").wait_for()
    page.get_by_test_id("plan").screenshot(path=str(shots / "stack-plan-update.png"))
    page.get_by_role("button", name="Apply plan 2").click()
    page.get_by_test_id("apply-job").filter(has_text=re.compile(r"^job (?!%d$)" % job)).wait_for()
    assert wait_job(admin, job_of(page, "apply-job"), timeout_s=90)["status"] == "succeeded"
    db = admin.get("/systems", params={"q": "app-db"}).json()["items"][0]
    assert db["labels"]["role"] == "database", db

    # Plan 3 (nothing to change), then a check: no drift, and the check made plan 3 stale (409, in words).
    plan_with(page, 3)
    page.get_by_text("Nothing to change.").wait_for()
    page.get_by_role("tab", name="Resources (2)").click()
    page.get_by_role("button", name="Check for drift").click()
    page.get_by_test_id("last-check").filter(has_text="Last check").wait_for(timeout=60_000)
    assert "no drift" in page.get_by_test_id("last-check").inner_text()
    page.get_by_test_id("resource-drift").nth(1).wait_for()
    assert page.get_by_test_id("resource-drift").all_inner_texts() == ["no drift", "no drift"]
    page.get_by_role("tab", name="Template and plan").click()
    page.get_by_role("button", name="Apply plan 3").click()
    error = page.get_by_test_id("error")
    error.wait_for()
    assert "make a new plan" in error.inner_text(), error.inner_text()
    page.get_by_text("The stack changed since this plan was made: plan again.").wait_for()
    assert page.get_by_role("button", name="Apply plan 3").is_disabled()

    # Events, and the page in the dark theme.
    page.get_by_role("tab", name="Events").click()
    page.get_by_role("cell", name="(stack)").first.wait_for()
    page.get_by_role("button", name="Switch to dark theme").click()
    check_page(page, "stack-events-dark", shots)
    page.get_by_role("button", name="Switch to light theme").click()

    # The list: the stack with its status and resources; its name opens it.
    page.get_by_role("link", name="Stacks", exact=True).click()
    row = page.get_by_test_id("stack-row").filter(has_text="app")
    row.wait_for()
    assert "complete" in row.inner_text().lower() and "\t2\t" in row.inner_text(), row.inner_text()
    check_page(page, "stacks", shots)
    row.get_by_role("link", name="app").click()
    page.get_by_role("heading", name="Stack app").wait_for()

    # Delete: asked first; the job removes both systems, then the stack.
    page.get_by_role("button", name="Delete", exact=True).click()
    check_page(page, "stack-delete-confirm", shots)
    page.get_by_role("button", name="Delete stack and its resources").click()
    page.wait_for_url(re.compile(r"/jobs/\d+$"))
    deleting = int(page.url.rsplit("/", 1)[1])
    assert wait_job(admin, deleting, timeout_s=90)["status"] == "succeeded"
    assert admin.get("/stacks/app").status_code == 404
    assert admin.get("/systems", params={"label": "stack=app"}).json()["items"] == []
    page.goto(server.url + "/stacks")
    page.get_by_text("No stacks yet.").wait_for()
    page.context.close()
