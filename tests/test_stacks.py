"""Stacks over HTTP on the simulated driver, on SQLite and PostgreSQL: a stored numbered plan, apply as a
job with one child job per resource, re-plan all no-op, replace (and why) vs update in place, a stale plan
refused, delete in reverse order, secrets never returned, one operation at a time, check / converge /
abandon, and a cycle refused at validation."""

from __future__ import annotations

import httpx
from sqlalchemy import delete

from armillary.domain.jobs import SimulatedMachine
from tests.support.jobs import run, wait_job

SECRET = "s3cret-Pa55word-xyz"

TEMPLATE = {
    "armillary_template_version": 1,
    "description": "web + db + cluster",
    "parameters": {
        "image": {"type": "string", "default": "nginx"},
        "tier": {"type": "string", "default": "web"},
        "db_password": {"type": "string", "hidden": True},
    },
    "resources": {
        "vip": {"type": "Armillary::IPReservation", "properties": {"pool": "lan"}},
        "profile": {"type": "Armillary::Profile",
                    "properties": {"hypervisor": "sim", "machine": {"cpu": 1}, "labels": {"role": "worker"}}},
        "workers": {"type": "Armillary::Cluster",
                    "properties": {"profile": {"get_resource": "profile"}, "desired": 2}},
        "db": {"type": "Armillary::System",
               "properties": {"hypervisor": "sim", "driver": {"image": "postgres"},
                              "variables": {"password": {"get_param": "db_password"}}}},
        "web": {"type": "Armillary::System", "depends_on": ["db"],
                "properties": {"hypervisor": "sim", "driver": {"image": {"get_param": "image"}},
                               "labels": {"tier": {"get_param": "tier"}},
                               "variables": {"db_host": {"get_attr": ["db", "hostname"]},
                                             "vip": {"get_attr": ["vip", "address"]}}}},
    },
    "outputs": {
        "web_address": {"value": {"get_attr": ["web", "address"]}},
        "workers": {"value": {"get_attr": ["workers", "members"]}},
        "password": {"value": {"get_param": "db_password"}},
    },
}


def setup(api: httpx.Client, config: dict | None = None) -> None:
    assert api.post("/environments", json={"name": "dev"}).status_code == 201
    made = api.post("/hypervisors", json={"name": "sim", "environment": "dev", "driver": "simulated",
                                          "config": config or {}})
    assert made.status_code == 201, made.text
    made = api.post("/ip-pools", json={"name": "lan", "environment": "dev", "cidr": "10.9.0.0/24"})
    assert made.status_code == 201, made.text


def define(api: httpx.Client, template: dict | None = None, name: str = "app", **params) -> dict:
    made = api.post("/stacks", json={"name": name, "environment": "dev", "template": template or TEMPLATE,
                                     "parameters": {**({"db_password": SECRET} if template is None else {}),
                                                    **params}})
    assert made.status_code == 201, made.text
    return made.json()


def plan(api: httpx.Client, name: str = "app", **body) -> dict:
    made = api.post(f"/stacks/{name}/plans", json=body)
    assert made.status_code == 201, made.text
    return made.json()


def actions(p: dict) -> dict[str, str]:
    return {c["resource"]: c["action"] for c in p["changes"]}



def test_plan_apply_replan_replace_update_and_delete(api: httpx.Client) -> None:
    setup(api)
    stack = define(api)
    assert stack["status"] == "new" and stack["parameters"]["db_password"] == "******"
    first = plan(api)
    assert first["number"] == 1 and set(actions(first).values()) == {"create"} and len(first["changes"]) == 5
    assert first["outputs"]["web_address"] == "(known after apply)" and first["outputs"]["password"] == "******"
    # layers: the cluster after its profile, web after db and vip
    layer = {c["resource"]: c["layer"] for c in first["changes"]}
    assert layer["workers"] > layer["profile"] and layer["web"] > layer["db"] and layer["web"] > layer["vip"]

    job = run(api, api.post("/stacks/app/apply", json={"plan": 1}))
    assert job["action"] == "stack-apply" and job["summary"]["succeeded"] == 5, job
    children = [j for j in api.get("/jobs", params={"limit": 200}).json()["items"] if j["parent_id"] == job["id"]]
    assert {c["action"] for c in children} >= {"create", "cluster-create", "stack-create"}, children
    resources = {r["name"]: r for r in api.get("/stacks/app/resources").json()}
    assert all(r["status"] == "complete" for r in resources.values()), resources
    web = api.get(f"/systems/{resources['web']['physical_id']}").json()
    assert web["hostname"] == "app-web" and web["state"] == "created" and web["labels"]["stack"] == "app"
    assert web["variables"]["db_host"] == "app-db" and web["variables"]["vip"] == resources["vip"]["attributes"]["address"]
    body = api.get("/stacks/app").json()
    assert body["status"] == "complete" and body["outputs"]["web_address"] == web["machine"]["addresses"][0], body
    assert len(body["outputs"]["workers"]) == 2
    assert len(api.get("/systems", params={"label": "cluster=app-workers"}).json()["items"]) == 2

    # nothing changed: every resource a no-op
    again = plan(api)
    assert set(actions(again).values()) == {"no-op"}, again
    # a new image replaces web (the property and why); a stale plan is refused
    image = plan(api, parameters={"image": "httpd"})
    change = next(c for c in image["changes"] if c["resource"] == "web")
    assert change["action"] == "replace" and change["property"] == "driver.image", change
    assert "fixed when the machine is made" in change["reason"]
    assert actions(image)["db"] == "no-op"
    run(api, api.post("/stacks/app/apply", json={"plan": image["number"]}))
    stale = api.post("/stacks/app/apply", json={"plan": again["number"]})
    assert stale.status_code == 409 and stale.json()["type"].endswith(":plan-stale"), stale.text
    web2 = api.get(f"/systems/{resources['web']['physical_id']}").json()
    assert web2["driver"]["image"] == "httpd" and web2["state"] in ("created", "ready"), web2
    # a label changes in place
    label = plan(api, parameters={"tier": "front"})
    change = next(c for c in label["changes"] if c["resource"] == "web")
    assert change["action"] == "update" and change["fields"] == ["labels.tier"], change
    run(api, api.post("/stacks/app/apply", json={"plan": label["number"]}))
    assert api.get(f"/systems/{resources['web']['physical_id']}").json()["labels"]["tier"] == "front"

    # the secret never comes back
    for path in ("/stacks/app", "/stacks/app/resources", "/stacks/app/outputs", "/stacks/app/export",
                 "/stacks/app/plans", "/stacks/app/events"):
        assert SECRET not in api.get(path).text, path

    # events page oldest first with `after`, newest first with `before`; not both
    oldest = api.get("/stacks/app/events", params={"limit": 1000}).json()
    ids = [e["id"] for e in oldest]
    assert ids == sorted(ids) and len(ids) > 4
    newest = api.get("/stacks/app/events", params={"before": 2**31 - 1, "limit": 3}).json()
    assert [e["id"] for e in newest] == ids[::-1][:3]
    older = api.get("/stacks/app/events", params={"before": newest[-1]["id"], "limit": 2}).json()
    assert [e["id"] for e in older] == ids[::-1][3:5]
    both = api.get("/stacks/app/events", params={"before": 10, "after": 1})
    assert both.status_code == 422 and both.json()["errors"][0]["field"] == "before", both.text

    # delete: reverse dependency order (web before db and vip; the cluster before its profile), then the stack
    job = run(api, api.delete("/stacks/app"))
    assert api.get("/stacks/app").status_code == 404
    assert api.get("/systems", params={"label": "stack=app"}).json()["items"] == []
    assert api.get("/clusters/app-workers").status_code == 404
    log = [e["message"] for e in api.get(f"/jobs/{job['id']}/events", params={"limit": 500}).json()["items"]
           if (e.get("message") or "").startswith("✔")]
    order = [m.split()[1].rstrip(":") for m in log]
    assert order.index("web") < order.index("db") and order.index("workers") < order.index("profile"), order


def test_one_operation_at_a_time_and_plan_apply_in_one_call(api: httpx.Client) -> None:
    setup(api, config={"latency_ms": 300})
    template = {"armillary_template_version": 1, "resources": {
        "one": {"type": "Armillary::System", "properties": {"hypervisor": "sim"}}}}
    define(api, template)
    first = api.post("/stacks/app/apply", json={})
    assert first.status_code == 202, first.text
    busy = api.post("/stacks/app/check", json={})
    assert busy.status_code == 409 and busy.json()["type"].endswith(":stack-busy"), busy.text
    assert str(first.json()["id"]) in busy.json()["detail"]
    assert api.get("/stacks/app").json()["running_job_id"] == first.json()["id"]
    assert wait_job(api, first.json()["id"], timeout_s=60)["status"] == "succeeded"


def test_check_converge_and_abandon(api: httpx.Client, live_server) -> None:
    setup(api)
    template = {"armillary_template_version": 1, "resources": {
        "one": {"type": "Armillary::System", "properties": {"hypervisor": "sim"}},
        "two": {"type": "Armillary::System", "properties": {"hypervisor": "sim"}}}}
    define(api, template)
    run(api, api.post("/stacks/app/apply", json={}))
    resources = {r["name"]: r for r in api.get("/stacks/app/resources").json()}
    # a machine vanishes behind Armillary's back
    with live_server[1].engine.begin() as conn:
        conn.execute(delete(SimulatedMachine).where(SimulatedMachine.system_id == int(resources["two"]["physical_id"])))
    run(api, api.post("/stacks/app/check", json={}))
    body = api.get("/stacks/app").json()
    assert body["status"] == "drifted" and list(body["drift"]) == ["two"], body
    assert body["drift"]["two"]["state"] == "missing"
    drifted = plan(api)
    assert actions(drifted) == {"one": "no-op", "two": "replace"} and "drift" in drifted["changes"][1]["reason"]
    run(api, api.post("/stacks/app/converge", json={}))
    body = api.get("/stacks/app").json()
    assert body["status"] == "complete" and body["drift"] == {}, body
    assert api.get(f"/systems/{resources['two']['physical_id']}").json()["state"] in ("created", "ready")
    run(api, api.post("/stacks/app/check", json={}))
    assert api.get("/stacks/app").json()["status"] == "complete"
    # abandon: the stack is forgotten, the systems stay
    state = api.post("/stacks/app/abandon", json={})
    assert state.status_code == 200, state.text
    assert {r["name"] for r in state.json()["resources"]} == {"one", "two"}
    assert api.get("/stacks/app").status_code == 404
    assert api.get(f"/systems/{resources['one']['physical_id']}").json()["state"] == "created"
    # adopt: a new stack over what the abandoned one held; nothing is made again
    adopted = {r["name"]: r["physical_id"] for r in state.json()["resources"]}
    job = run(api, api.post("/stacks/adopt", json={"name": "again", "environment": "dev", "template": template,
                                                   "resources": adopted}))
    assert job["summary"]["succeeded"] == 2
    again = {r["name"]: r for r in api.get("/stacks/again/resources").json()}
    assert {n: r["physical_id"] for n, r in again.items()} == adopted
    assert set(actions(plan(api, "again")).values()) == {"no-op"}
    children = [j for j in api.get("/jobs", params={"limit": 200}).json()["items"] if j["parent_id"] == job["id"]]
    assert children == []  # adopted, not created


def test_validate_refuses_a_cycle_and_unknown_types(api: httpx.Client) -> None:
    cycle = {"armillary_template_version": 1, "resources": {
        "a": {"type": "Armillary::System", "depends_on": ["b"], "properties": {"hypervisor": "sim"}},
        "b": {"type": "Armillary::System", "properties": {"hypervisor": {"get_attr": ["a", "hostname"]}}}}}
    verdict = api.post("/stacks/validate", json={"template": cycle})
    assert verdict.status_code == 200 and verdict.json()["valid"] is False, verdict.text
    assert any("cycle" in p["message"] and "a" in p["message"] for p in verdict.json()["problems"]), verdict.text
    # the same template is refused where it would be used
    assert api.post("/environments", json={"name": "dev"}).status_code == 201
    refused = api.post("/stacks", json={"name": "app", "environment": "dev", "template": cycle})
    assert refused.status_code == 422 and "cycle" in refused.text, refused.text
    heat = {"heat_template_version": "2018-08-31", "resources": {"s": {"type": "OS::Nova::Server"}}}
    verdict = api.post("/stacks/validate", json={"template": heat})
    assert verdict.json()["valid"] is False and "Armillary::System" in verdict.text, verdict.text
    fine = api.post("/stacks/validate", json={"template": TEMPLATE})
    assert fine.status_code == 200 and fine.json()["hidden_parameters"] == ["db_password"], fine.text


def test_a_failure_stops_new_starts_and_the_next_apply_resumes(api: httpx.Client) -> None:
    setup(api)
    made = api.post("/hypervisors", json={"name": "bad", "environment": "dev", "driver": "simulated",
                                          "config": {"fail_at": ["create"]}})
    assert made.status_code == 201, made.text
    template = {"armillary_template_version": 1, "resources": {
        "good": {"type": "Armillary::System", "properties": {"hypervisor": "sim"}},
        "broken": {"type": "Armillary::System", "properties": {"hypervisor": "bad"}},
        "after": {"type": "Armillary::System", "depends_on": ["broken"], "properties": {"hypervisor": "sim"}}}}
    define(api, template)
    job = run(api, api.post("/stacks/app/apply", json={}), status="failed")
    assert "broken" in job["error"], job
    body = api.get("/stacks/app").json()
    assert body["status"] == "failed" and "broken" in body["status_reason"], body
    # the records say exactly what exists: good made, broken failed (its system recorded), after never started
    resources = {r["name"]: r for r in api.get("/stacks/app/resources").json()}
    assert set(resources) == {"good", "broken"}, resources
    assert resources["good"]["status"] == "complete" and resources["broken"]["status"] == "failed"
    assert resources["broken"]["physical_id"] is not None
    resumed = plan(api)
    assert actions(resumed) == {"good": "no-op", "broken": "create", "after": "create"}, resumed
    # a stack whose only resource failed to be made is deleted all the same
    define(api, {"armillary_template_version": 1, "resources": {
        "broken": {"type": "Armillary::System", "properties": {"hypervisor": "bad"}}}}, name="gone")
    run(api, api.post("/stacks/gone/apply", json={}), status="failed")
    run(api, api.delete("/stacks/gone"))
    assert api.get("/stacks/gone").status_code == 404
    assert api.get("/systems", params={"label": "stack=gone"}).json()["items"] == []
    # the cause fixed, the next apply finishes: broken's create is retried on its system, good is not touched
    fixed = api.patch("/hypervisors/bad", json={"config": {"fail_at": []}})
    assert fixed.status_code == 200, fixed.text
    job = run(api, api.post("/stacks/app/apply", json={}))
    assert set(job["summary"]["hosts"]) == {"broken", "after"}, job
    again = {r["name"]: r for r in api.get("/stacks/app/resources").json()}
    assert again["broken"]["physical_id"] == resources["broken"]["physical_id"]
    assert again["good"]["physical_id"] == resources["good"]["physical_id"]
    assert api.get("/stacks/app").json()["status"] == "complete"


NESTED = """
armillary_template_version: 1
parameters:
  tier: {type: string}
resources:
  db:
    type: Armillary::System
    properties: {hypervisor: sim, labels: {tier: {get_param: tier}}}
outputs:
  host: {value: {get_attr: [db, hostname]}}
"""


def test_a_nested_stack_is_a_child_job_and_its_outputs_are_attributes(api: httpx.Client) -> None:
    setup(api)
    template = {"armillary_template_version": 1,
                "parameters": {"tier": {"type": "string", "default": "data"}},
                "resources": {
                    "child": {"type": "Armillary::Stack",
                              "properties": {"template": NESTED, "parameters": {"tier": {"get_param": "tier"}}}},
                    "web": {"type": "Armillary::System", "properties": {
                        "hypervisor": "sim", "variables": {"db": {"get_attr": ["child", "outputs", "host"]}}}}},
                "outputs": {"db": {"value": {"get_attr": ["child", "outputs", "host"]}}}}
    define(api, template)
    job = run(api, api.post("/stacks/app/apply", json={}))
    children = [j for j in api.get("/jobs", params={"limit": 200}).json()["items"] if j["parent_id"] == job["id"]]
    assert {c["action"] for c in children} == {"stack-apply", "create"}, children
    nested = api.get("/stacks/app-child").json()
    assert nested["status"] == "complete" and nested["outputs"] == {"host": "app-child-db"}, nested
    assert api.get("/stacks/app").json()["outputs"] == {"db": "app-child-db"}
    web = next(r for r in api.get("/stacks/app/resources").json() if r["name"] == "web")
    assert api.get(f"/systems/{web['physical_id']}").json()["variables"]["db"] == "app-child-db"
    # a parameter passed down changes the nested stack in place
    change = next(c for c in plan(api, parameters={"tier": "cache"})["changes"] if c["resource"] == "child")
    assert change["action"] == "update" and change["fields"] == ["parameters.tier"], change
    run(api, api.post("/stacks/app/apply", json={"parameters": {"tier": "cache"}}))
    db = next(r for r in api.get("/stacks/app-child/resources").json() if r["name"] == "db")
    assert api.get(f"/systems/{db['physical_id']}").json()["labels"]["tier"] == "cache"
    run(api, api.delete("/stacks/app"))
    assert api.get("/stacks/app-child").status_code == 404
    assert api.get("/systems", params={"label": "stack=app-child"}).json()["items"] == []


def test_an_immutable_parameter_keeps_its_value_once_the_stack_has_resources(api: httpx.Client) -> None:
    setup(api)
    template = {"armillary_template_version": 1,
                "parameters": {"size": {"type": "string", "default": "small", "immutable": True},
                               "key": {"type": "string", "hidden": True, "immutable": True},
                               "tier": {"type": "string", "default": "web"}},
                "resources": {"one": {"type": "Armillary::System",
                                      "properties": {"hypervisor": "sim", "labels": {"size": {"get_param": "size"},
                                                                                       "tier": {"get_param": "tier"}},
                                                     "variables": {"key": {"get_param": "key"}}}}}}
    define(api, template, key=SECRET)
    assert actions(plan(api, parameters={"size": "large"})) == {"one": "create"}  # nothing made yet: free to change
    run(api, api.post("/stacks/app/apply", json={"plan": plan(api)["number"]}))
    refused = api.post("/stacks/app/plans", json={"parameters": {"size": "large", "key": "other-" + SECRET}})
    assert refused.status_code == 422, refused.text
    fields = {e["field"]: e["message"] for e in refused.json()["errors"]}
    assert fields["parameters.size"].startswith("is immutable") and "'small'" in fields["parameters.size"]
    assert "parameters.key" in fields and SECRET not in refused.text
    assert actions(plan(api, parameters={"tier": "db"})) == {"one": "update"}  # the others still change
