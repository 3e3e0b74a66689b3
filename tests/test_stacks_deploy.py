"""``Armillary::Deploy`` (issue 19): a release of a project put live by a stack, through the deploy jobs.

On a real SSH host (``tests.support.sshhosts``, as tests/test_deploy.py): a stack of an ``Armillary::System``
and an ``Armillary::Deploy`` of release v1 onto it; the plan shows both creates; apply puts v1 live (the
``current`` link on the machine); a new release (and source) is an update in place that puts v2 live;
``check`` finds no drift; ``current`` switched back by hand is drift, and ``converge`` switches it back to
v2 (the rollback action: v2 was deployed there); deleting the stack leaves the release live. Bad targets
are refused by the plan (both targets, a name that is not a hostname, a ``get_resource`` of nothing) or,
for a hostname no system has, by the apply, naming it.

On the simulated driver: a deploy onto a cluster (one bulk job over its members), a new release to all
members, and a member added later found by ``check`` and deployed to by ``converge``.
"""

from __future__ import annotations

import os
from pathlib import Path

import httpx

from tests.support.jobs import run
from tests.support.provisioning import setup_ssh
from tests.support.sshhosts import SshHost
from tests.test_deploy import base_config, current, project, sources, ssh_peer, write_tree  # noqa: F401

NOOP = {"kind": "script", "spec": {"scripts": [{"name": "noop", "inline": "true"}]}}



def plan(api: httpx.Client, stack: str, **body) -> dict:
    made = api.post(f"/stacks/{stack}/plans", json=body)
    assert made.status_code == 201, made.text
    return made.json()


def changes(p: dict) -> dict[str, dict]:
    return {c["resource"]: c for c in p["changes"]}


def resource(api: httpx.Client, stack: str, name: str) -> dict:
    return {r["name"]: r for r in api.get(f"/stacks/{stack}/resources").json()}[name]


def ssh_template(host: SshHost, release: str, **deploy: object) -> dict:
    return {"armillary_template_version": 1, "resources": {
        "web": {"type": "Armillary::System", "properties": {
            "hypervisor": "metal", "type": "web", "driver": {"host": host.address, "port": host.port}}},
        "app": {"type": "Armillary::Deploy", "properties": {
            "system": {"get_resource": "web"}, "release": release, **deploy}},
    }}


def test_deploy_a_release_onto_a_stack_system(api: httpx.Client, ssh_peer: SshHost, sources: Path) -> None:  # noqa: F811
    write_tree(sources / "app", {"index.html": "v1\n", ".armillary/10_build.sh": 'echo "$ARMILLARY_RELEASE" > built\n'})
    write_tree(sources / "app2", {"index.html": "v2\n"})
    setup_ssh(api, ssh_peer, scripts=[{"name": "noop", "inline": "true"}], env={})
    patched = api.patch("/types/web", json={"variables": {"deploy": base_config(ssh_peer)}})
    assert patched.status_code == 200, patched.text
    made = api.post("/stacks", json={"name": "shop", "environment": "dev",
                                     "template": ssh_template(ssh_peer, "v1")})
    assert made.status_code == 201, made.text

    first = plan(api, "shop")
    assert {n: c["action"] for n, c in changes(first).items()} == {"web": "create", "app": "create"}, first
    run(api, api.post("/stacks/shop/apply", json={"plan": first["number"]}))
    live = project(ssh_peer) / "current"
    assert current(ssh_peer) == "releases/v1"
    assert (live / "built").read_text() == "v1\n" and (live / "index.html").read_text() == "v1\n"
    app = resource(api, "shop", "app")
    assert app["status"] == "complete" and app["attributes"]["release"] == "v1", app
    assert app["attributes"]["hosts"] == {"shop-web": "succeeded"} and app["attributes"]["deployed_at"], app
    assert {c["action"] for c in plan(api, "shop")["changes"]} == {"no-op"}

    # a new release from another source: the deploy is updated in place, v2 goes live
    newer = ssh_template(ssh_peer, "v2", source={"path": "app2"})
    change = changes(plan(api, "shop", template=newer))
    assert change["web"]["action"] == "no-op", change
    assert change["app"]["action"] == "update" and change["app"]["fields"] == ["release", "source.path"], change
    run(api, api.post("/stacks/shop/apply", json={"template": newer}))
    assert current(ssh_peer) == "releases/v2" and (live / "index.html").read_text() == "v2\n"
    assert resource(api, "shop", "app")["attributes"]["release"] == "v2"

    run(api, api.post("/stacks/shop/check", json={}))
    stack = api.get("/stacks/shop").json()
    assert stack["status"] == "complete" and stack["drift"] == {}, stack

    # another param alone (keep): recorded for the next release, nothing deployed now
    kept = ssh_template(ssh_peer, "v2", source={"path": "app2"}, keep=3)
    assert changes(plan(api, "shop", template=kept))["app"]["fields"] == ["keep"]
    applied = run(api, api.post("/stacks/shop/apply", json={"template": kept}))
    assert api.get("/jobs", params={"parent": applied["id"]}).json()["items"] == []
    assert current(ssh_peer) == "releases/v2"

    # current switched back by hand: drift; converge puts v2 live again (a rollback to it: it is there)
    os.symlink("releases/v1", project(ssh_peer) / "by-hand")
    os.replace(project(ssh_peer) / "by-hand", live)
    run(api, api.post("/stacks/shop/check", json={}))
    stack = api.get("/stacks/shop").json()
    assert stack["status"] == "drifted", stack
    assert stack["drift"]["app"]["differing"]["release"] == {"expected": "v2", "actual": "v1"}, stack
    converged = run(api, api.post("/stacks/shop/converge", json={}))
    assert current(ssh_peer) == "releases/v2"
    child = api.get("/jobs", params={"parent": converged["id"]}).json()["items"]
    assert [j["action"] for j in child] == ["rollback"], child

    # deleting the stack forgets the deploy: the release stays live on the machine
    run(api, api.delete("/stacks/shop"))
    assert current(ssh_peer) == "releases/v2" and (live / "index.html").read_text() == "v2\n"


def test_bad_targets_are_refused(api: httpx.Client) -> None:
    assert api.post("/environments", json={"name": "dev"}).status_code == 201
    made = api.post("/stacks", json={"name": "bad", "environment": "dev",
                                     "template": {"armillary_template_version": 1, "resources": {}}})
    assert made.status_code == 201, made.text

    def refused(properties: dict) -> str:
        tmpl = {"armillary_template_version": 1,
                "resources": {"app": {"type": "Armillary::Deploy", "properties": properties}}}
        answer = api.post("/stacks/bad/plans", json={"template": tmpl})
        assert answer.status_code == 422, answer.text
        return answer.text

    both = refused({"system": "web1", "cluster": "workers", "release": "v1"})
    assert "exactly one target" in both
    assert "'no host!' is not a system" in refused({"system": "no host!", "release": "v1"})
    assert "unknown resource 'nothing'" in refused({"system": {"get_resource": "nothing"}, "release": "v1"})
    assert "root: must be an absolute path" in refused({"system": "web1", "release": "v1", "root": "apps"})

    # a hostname no system has: the apply refuses it, naming it, and starts no deploy
    tmpl = {"armillary_template_version": 1,
            "resources": {"app": {"type": "Armillary::Deploy", "properties": {"system": "ghost", "release": "v1"}}}}
    job = run(api, api.post("/stacks/bad/apply", json={"template": tmpl}), status="failed")
    assert "no system 'ghost' in the stack's environment" in job["error"], job
    assert not api.get("/jobs", params={"action": "deploy"}).json()["items"]


def cluster_template(release: str, desired: int) -> dict:
    return {"armillary_template_version": 1, "resources": {
        "profile": {"type": "Armillary::Profile", "properties": {"hypervisor": "sim", "type": "app"}},
        "workers": {"type": "Armillary::Cluster", "properties": {"profile": {"get_resource": "profile"},
                                                                  "desired": desired}},
        "app": {"type": "Armillary::Deploy", "properties": {
            "cluster": {"get_resource": "workers"}, "release": release, "project": "shop", "root": "/srv"}},
    }}


def deployed(api: httpx.Client) -> dict[str, list[str]]:
    """Per system id, the releases its succeeded deploy jobs put live, oldest first."""
    jobs = api.get("/jobs", params={"action": "deploy", "status": "succeeded", "limit": 100}).json()["items"]
    out: dict[str, list[str]] = {}
    for job in sorted(jobs, key=lambda j: j["id"]):
        if job["workflow"] != "deploy":
            continue  # the bulk job over the cluster's members
        context = api.get(f"/jobs/{job['id']}").json()["context"]  # the listing leaves contexts out
        out.setdefault(str(job["system_id"]), []).append(context["release"])
    return out


def test_deploy_onto_a_cluster_on_the_simulated_driver(api: httpx.Client) -> None:
    assert api.post("/environments", json={"name": "dev"}).status_code == 201
    made = api.post("/hypervisors", json={"name": "sim", "environment": "dev", "driver": "simulated", "config": {}})
    assert made.status_code == 201, made.text
    assert api.post("/types", json={"name": "app", "provisioner": NOOP}).status_code == 201
    made = api.post("/stacks", json={"name": "fleet", "environment": "dev", "template": cluster_template("v1", 2)})
    assert made.status_code == 201, made.text

    run(api, api.post("/stacks/fleet/apply", json={"plan": plan(api, "fleet")["number"]}))
    app = resource(api, "fleet", "app")
    members = sorted(app["attributes"]["hosts"])
    assert len(members) == 2 and set(app["attributes"]["hosts"].values()) == {"succeeded"}, app
    assert sorted(deployed(api).values()) == [["v1"], ["v1"]]

    assert changes(plan(api, "fleet", template=cluster_template("v2", 2)))["app"]["action"] == "update"
    run(api, api.post("/stacks/fleet/apply", json={"template": cluster_template("v2", 2)}))
    assert sorted(deployed(api).values()) == [["v1", "v2"], ["v1", "v2"]]

    # a third member made by a resize: no release on it, which check finds and converge deploys
    run(api, api.post("/stacks/fleet/apply", json={"template": cluster_template("v2", 3)}))
    run(api, api.post("/stacks/fleet/check", json={}))
    stack = api.get("/stacks/fleet").json()
    assert stack["status"] == "drifted" and list(stack["drift"]) == ["app"], stack
    drift = stack["drift"]["app"]["differing"]["release"]
    (newcomer,) = drift["hosts"]
    assert newcomer not in members and drift["actual"] == {newcomer: None}, drift
    run(api, api.post("/stacks/fleet/converge", json={}))
    assert sorted(deployed(api).values()) == [["v1", "v2"], ["v1", "v2"], ["v2"]]
    assert resource(api, "fleet", "app")["attributes"]["hosts"] == {newcomer: "succeeded"}
    run(api, api.post("/stacks/fleet/check", json={}))
    assert api.get("/stacks/fleet").json()["status"] == "complete"
