"""``rollback: true`` and ``update_policy: {replace: create_before_delete}`` over HTTP on the simulated
driver, on SQLite and PostgreSQL. Failures are injected as tests/test_stacks.py does: a hypervisor whose
simulated driver always fails ``create`` (``fail_at``).

- a failed apply with rollback goes back to the last template that applied *successfully* (not to the
  failed attempt before it): the resources and attributes of then, the new resources gone;
- a first apply that fails with rollback deletes everything it made (there is nothing to go back to);
- create_before_delete: the plan says so (``+/-`` in the CLI), the apply makes the new system before it
  destroys the old one, and dependents and outputs read the new one; its rollback gives back the old one;
- a template that fixes the hostname cannot create before delete: refused at plan, with the reason.
"""

from __future__ import annotations

import copy
from pathlib import Path

import httpx
import yaml
from typer.testing import CliRunner

from armillary.cli.main import app as cli_app
from tests.support.cli import clean_env
from tests.support.jobs import run


def setup(api: httpx.Client) -> None:
    assert api.post("/environments", json={"name": "dev"}).status_code == 201
    for name, config in (("sim", {}), ("bad", {"fail_at": ["create"]})):
        made = api.post("/hypervisors", json={"name": name, "environment": "dev", "driver": "simulated",
                                              "config": config})
        assert made.status_code == 201, made.text


def system(hypervisor: str = "sim", **properties) -> dict:
    return {"type": "Armillary::System", "properties": {"hypervisor": hypervisor, **properties}}


def template(resources: dict, outputs: dict | None = None) -> dict:
    return {"armillary_template_version": 1, "resources": resources, "outputs": outputs or {}}


def define(api: httpx.Client, tmpl: dict) -> None:
    made = api.post("/stacks", json={"name": "app", "environment": "dev", "template": tmpl})
    assert made.status_code == 201, made.text



def resources(api: httpx.Client) -> dict[str, dict]:
    return {r["name"]: r for r in api.get("/stacks/app/resources").json()}


def stack_systems(api: httpx.Client) -> dict[str, dict]:
    """The systems labelled with the stack, by hostname."""
    return {s["hostname"]: s for s in api.get("/systems", params={"label": "stack=app"}).json()["items"]}


def plan(api: httpx.Client, **body) -> httpx.Response:
    return api.post("/stacks/app/plans", json=body)


def actions(p: dict) -> dict[str, str]:
    return {c["resource"]: c["action"] for c in p["changes"]}


def log_lines(api: httpx.Client, job_id: int) -> list[str]:
    return [e["message"] for e in api.get(f"/jobs/{job_id}/events", params={"limit": 1000}).json()["items"]
            if (e.get("message") or "")[:1] in ("✔", "✗")]


V1 = template({"db": system(labels={"tier": "data"}),
               "web": system(labels={"tier": "v1"}, variables={"db": {"get_attr": ["db", "hostname"]}})},
              {"web": {"value": {"get_attr": ["web", "hostname"]}}})


def test_a_failed_apply_rolls_back_to_the_last_template_that_applied(api: httpx.Client) -> None:
    setup(api)
    define(api, V1)
    run(api, api.post("/stacks/app/apply", json={}))
    good = resources(api)
    good_systems = stack_systems(api)
    assert set(good_systems) == {"app-db", "app-web"}

    # v2 fails without rollback: the stack stays failed, holding v2's template and what it made of it
    v2 = copy.deepcopy(V1)
    v2["resources"]["web"]["properties"]["labels"] = {"tier": "v2"}
    v2["resources"]["cache"] = system()
    v2["resources"]["broken"] = {**system("bad"), "depends_on": ["web"]}
    run(api, api.post("/stacks/app/apply", json={"template": v2}), status="failed")
    assert api.get("/stacks/app").json()["status"] == "failed"
    assert set(resources(api)) == {"db", "web", "cache", "broken"}
    assert stack_systems(api)["app-web"]["labels"]["tier"] == "v2"

    # v3 fails with rollback: back to v1, the last template that applied, not to v2 (the last attempt)
    v3 = copy.deepcopy(v2)
    v3["resources"]["web"]["properties"]["labels"] = {"tier": "v3"}
    v3["resources"]["queue"] = system()
    job = run(api, api.post("/stacks/app/apply", json={"template": v3, "rollback": True}), status="failed")
    assert "broken" in job["error"] and "rolled back" in job["error"], job["error"]
    body = api.get("/stacks/app").json()
    assert body["status"] == "rolled_back", body
    assert "rolled back to the last template that applied successfully" in body["status_reason"], body
    assert body["outputs"] == {"web": "app-web"} and body["running_job_id"] is None

    after = resources(api)
    assert set(after) == {"db", "web"}, after
    assert all(r["status"] == "complete" for r in after.values()), after
    for name in ("db", "web"):  # the very same systems, with v1's properties and attributes
        assert after[name]["physical_id"] == good[name]["physical_id"]
        assert after[name]["properties"] == good[name]["properties"]
        assert after[name]["attributes"] == good[name]["attributes"]
    systems = stack_systems(api)
    assert set(systems) == {"app-db", "app-web"}, systems  # cache, queue and broken are gone
    assert systems["app-web"]["labels"]["tier"] == "v1" and systems["app-web"]["id"] == good_systems["app-web"]["id"]
    assert api.get("/stacks/app/export").json()["template"] == V1
    made = plan(api)
    assert made.status_code == 201 and set(actions(made.json()).values()) == {"no-op"}, made.text
    events = [(e["action"], e["status"]) for e in api.get("/stacks/app/events", params={"limit": 1000}).json()]
    assert ("rollback", "started") in events and ("rollback", "succeeded") in events
    assert job["id"] == body["last_job_id"]
    lines = log_lines(api, job["id"])
    assert "✗ broken: create" in " ".join(lines) and any(m.startswith("✔ queue: delete") for m in lines), lines

    # the stack works on from there: an apply with rollback that succeeds is an ordinary apply
    run(api, api.post("/stacks/app/apply", json={"template": v3 | {"resources": {
        k: v for k, v in v3["resources"].items() if k != "broken"}}, "rollback": True}))
    assert api.get("/stacks/app").json()["status"] == "complete"
    assert stack_systems(api)["app-web"]["labels"]["tier"] == "v3"


def test_a_first_apply_that_fails_with_rollback_deletes_what_it_made(api: httpx.Client) -> None:
    setup(api)
    define(api, template({"good": system(), "other": system(), "broken": {**system("bad"), "depends_on": ["good"]}},
                         {"good": {"value": {"get_attr": ["good", "hostname"]}}}))
    job = run(api, api.post("/stacks/app/apply", json={"rollback": True}), status="failed")
    body = api.get("/stacks/app").json()
    assert body["status"] == "rolled_back", body
    assert "no apply of this stack ever succeeded" in body["status_reason"], body
    assert body["resources"] == 0 and body["outputs"] == {}, body
    assert stack_systems(api) == {}
    assert api.get("/systems").json()["items"] == []  # nothing left behind, not even a failed system row
    lines = log_lines(api, job["id"])
    assert any(m.startswith("✔ good: create") for m in lines) and any(m.startswith("✔ good: delete") for m in lines)
    # rollback is for apply and converge only; a converge takes it as well
    refused = api.post("/stacks/app/converge", json={"rollback": "yes"})
    assert refused.status_code == 422, refused.text
    run(api, api.post("/stacks/app/converge", json={"rollback": True}), status="failed")
    assert api.get("/stacks/app").json()["status"] == "rolled_back" and stack_systems(api) == {}


CBD = {"replace": "create_before_delete"}


def cbd_template(image: str, hostname: str | None = None, broken: bool = False) -> dict:
    web = system(driver={"image": image}, **({"hostname": hostname} if hostname else {}))
    web["update_policy"] = CBD
    resources = {"web": web,
                 "app": system(variables={"web_host": {"get_attr": ["web", "hostname"]},
                                          "web_id": {"get_resource": "web"}})}
    if broken:
        resources["broken"] = {**system("bad"), "depends_on": ["app"]}
    return template(resources, {"web_id": {"value": {"get_resource": "web"}},
                                "web_host": {"value": {"get_attr": ["web", "hostname"]}}})


def test_create_before_delete_makes_the_new_system_first_and_points_dependents_at_it(
        api: httpx.Client, base_url: str, admin_token: str, tmp_path: Path) -> None:
    setup(api)
    define(api, cbd_template("nginx"))
    run(api, api.post("/stacks/app/apply", json={}))
    old = resources(api)["web"]
    old_id = int(old["physical_id"])

    made = plan(api, template=cbd_template("httpd"))
    assert made.status_code == 201, made.text
    change = next(c for c in made.json()["changes"] if c["resource"] == "web")
    assert change["action"] == "replace" and change["replace_policy"] == "create_before_delete", change
    assert change["property"] == "driver.image"
    # the CLI marks it +/- (create, then delete), as Terraform does
    path = tmp_path / "v2.yaml"
    path.write_text(yaml.safe_dump(cbd_template("httpd")))
    env = clean_env(ARMILLARY_URL=base_url, ARMILLARY_TOKEN=admin_token, ARMILLARY_CONFIG_DIR=str(tmp_path))
    printed = CliRunner().invoke(cli_app, ["stack", "plan", "app", "-t", str(path)], env=env)
    assert printed.exit_code == 0 and "+/- web" in printed.stdout, printed.stdout
    assert "create before delete" in printed.stdout

    job = run(api, api.post("/stacks/app/apply", json={"plan": made.json()["number"]}))
    after = resources(api)
    assert set(after) == {"web", "app"}, after  # the old one's record went with it
    new_id = int(after["web"]["physical_id"])
    assert new_id > old_id and after["web"]["attributes"]["hostname"] == "app-web-2", after["web"]
    assert api.get(f"/systems/{old_id}").status_code == 404  # destroyed, and its row removed
    new = api.get(f"/systems/{new_id}").json()
    assert new["driver"]["image"] == "httpd" and new["state"] == "created", new
    # the dependent and the outputs read the new system
    dependent = api.get(f"/systems/{after['app']['physical_id']}").json()
    assert dependent["variables"] == {"web_host": "app-web-2", "web_id": new_id}, dependent
    assert api.get("/stacks/app").json()["outputs"] == {"web_id": new_id, "web_host": "app-web-2"}
    # the order: the new web made, the dependent updated, and only then the old web deleted
    lines = log_lines(api, job["id"])
    made_at = next(i for i, m in enumerate(lines) if m.startswith("✔ web: create"))
    updated_at = next(i for i, m in enumerate(lines) if m.startswith("✔ app: update"))
    deleted_at = next(i for i, m in enumerate(lines) if m.startswith(f"✔ web~{job['id']}: delete"))
    assert made_at < updated_at < deleted_at, lines
    children = [j for j in api.get("/jobs", params={"limit": 200}).json()["items"] if j["parent_id"] == job["id"]]
    creates = [j for j in children if j["action"] == "create"]
    destroys = [j for j in children if j["action"] == "destroy"]
    assert len(creates) == 1 and len(destroys) == 1 and creates[0]["id"] < destroys[0]["id"], children
    assert set(actions(plan(api).json()).values()) == {"no-op"}

    # a replacement again takes the default hostname back (it is free now); a failure with rollback
    # gives back the very system the failed apply replaced, and deletes the one it made
    job = run(api, api.post("/stacks/app/apply", json={"template": cbd_template("caddy", broken=True),
                                                       "rollback": True}), status="failed")
    body = api.get("/stacks/app").json()
    assert body["status"] == "rolled_back", body
    back = resources(api)
    assert set(back) == {"web", "app"}, back
    assert int(back["web"]["physical_id"]) == new_id and back["web"]["attributes"]["hostname"] == "app-web-2"
    assert {s["hostname"] for s in stack_systems(api).values()} == {"app-web-2", "app-app"}
    assert api.get(f"/systems/{after['app']['physical_id']}").json()["variables"]["web_host"] == "app-web-2"
    assert body["outputs"] == {"web_id": new_id, "web_host": "app-web-2"}
    assert any(m.startswith(f"✔ web~{job['id']}.rollback: delete") for m in log_lines(api, job["id"]))


def test_create_before_delete_with_a_fixed_hostname_is_refused_at_plan(api: httpx.Client) -> None:
    setup(api)
    define(api, cbd_template("nginx", hostname="front"))
    run(api, api.post("/stacks/app/apply", json={}))
    refused = plan(api, template=cbd_template("httpd", hostname="front"))
    assert refused.status_code == 422, refused.text
    problem = refused.json()
    assert problem["errors"][0]["field"] == "resources.web.update_policy.replace", problem
    assert "hostname front" in problem["detail"] and "delete_before_create" in problem["detail"], problem
    refused = api.post("/stacks/app/apply", json={"template": cbd_template("httpd", hostname="front")})
    assert refused.status_code == 422, refused.text
    # a new hostname is no conflict: the old system keeps its own until it is deleted
    renamed = plan(api, template=cbd_template("nginx", hostname="front2"))
    assert renamed.status_code == 201, renamed.text
    assert actions(renamed.json())["web"] == "replace"
    # restricted: [replace] still refuses any replacement, whichever the order
    restricted = cbd_template("httpd")
    restricted["resources"]["web"]["update_policy"] = {**CBD, "restricted": ["replace"]}
    refused = plan(api, template=restricted)
    assert refused.status_code == 422 and "restricts replace" in refused.text, refused.text
    # without create_before_delete, a fixed hostname is replaced as before: the same system, remade
    dbc = cbd_template("httpd", hostname="front")
    dbc["resources"]["web"]["update_policy"] = {"replace": "delete_before_create"}
    before = resources(api)["web"]["physical_id"]
    made = plan(api, template=dbc)
    assert made.status_code == 201, made.text
    assert next(c for c in made.json()["changes"] if c["resource"] == "web")["replace_policy"] == \
        "delete_before_create"
    run(api, api.post("/stacks/app/apply", json={"plan": made.json()["number"]}))
    assert resources(api)["web"]["physical_id"] == before


def test_a_rollback_that_fails_says_so(api: httpx.Client) -> None:
    setup(api)
    assert api.post("/hypervisors", json={"name": "flaky", "environment": "dev", "driver": "simulated"}
                    ).status_code == 201
    define(api, template({"web": system("flaky", driver={"image": "nginx"})}))
    run(api, api.post("/stacks/app/apply", json={}))
    # the hypervisor breaks: the replacement fails, and so does the way back (v1's web is a create too)
    assert api.patch("/hypervisors/flaky", json={"config": {"fail_at": ["create"]}}).status_code == 200
    job = run(api, api.post("/stacks/app/apply", json={
        "template": template({"web": system("flaky", driver={"image": "httpd"})}), "rollback": True}),
        status="failed")
    body = api.get("/stacks/app").json()
    assert body["status"] == "rollback_failed", body
    assert "the rollback to the last template that applied successfully failed: web" in body["status_reason"]
    assert "rollback" in job["error"], job["error"]
    web = resources(api)["web"]
    assert web["status"] == "failed" and web["properties"]["driver"] == {"image": "nginx"}, web
    # the cause fixed, an apply of the stack's template (v1 again) repairs it
    assert api.patch("/hypervisors/flaky", json={"config": {"fail_at": []}}).status_code == 200
    run(api, api.post("/stacks/app/apply", json={}))
    assert api.get("/stacks/app").json()["status"] == "complete"
    assert stack_systems(api)["app-web"]["driver"]["image"] == "nginx"
