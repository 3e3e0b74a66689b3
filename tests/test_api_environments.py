"""Environments, hypervisors and types through the HTTP API."""

from __future__ import annotations

import httpx

from tests.support.jobs import NOOP_SCRIPT


def problem(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["status"] == status and body["type"].startswith("urn:armillary:problem:")
    return body


def test_environment_crud_by_id_and_name(api: httpx.Client) -> None:
    created = api.post("/environments", json={"name": "dev", "description": "Development", "variables": {"a": 1}})
    assert created.status_code == 201
    env = created.json()
    assert created.headers["location"].endswith(f"/environments/{env['id']}")
    assert api.get(f"/environments/{env['id']}").json()["name"] == "dev"
    by_name = api.get("/environments/dev")
    assert by_name.json()["id"] == env["id"]
    updated = api.patch("/environments/dev", json={"description": "Dev!"}, headers={"If-Match": by_name.headers["etag"]})
    assert updated.status_code == 200 and updated.json()["description"] == "Dev!"
    assert updated.headers["etag"] != by_name.headers["etag"]
    stale = api.patch("/environments/dev", json={"description": "x"}, headers={"If-Match": by_name.headers["etag"]})
    assert problem(stale, 412)["current_etag"] == updated.headers["etag"]
    assert api.get("/environments/dev").json()["description"] == "Dev!"
    assert api.delete("/environments/dev").status_code == 204
    problem(api.get("/environments/dev"), 404)


def test_duplicate_environment_name_is_a_conflict(api: httpx.Client) -> None:
    api.post("/environments", json={"name": "qa"})
    body = problem(api.post("/environments", json={"name": "qa"}), 409)
    assert "qa" in body["detail"]


def test_environment_lock_records_when(api: httpx.Client) -> None:
    api.post("/environments", json={"name": "prod"})
    locked = api.patch("/environments/prod", json={"locked": True, "lock_reason": "release freeze"}).json()
    assert locked["locked"] and locked["lock_reason"] == "release freeze" and locked["locked_at"]
    unlocked = api.patch("/environments/prod", json={"locked": False}).json()
    assert not unlocked["locked"] and unlocked["locked_at"] is None


def test_bad_environment_input_names_the_field_and_changes_nothing(api: httpx.Client) -> None:
    body = problem(api.post("/environments", json={"name": "9lives", "colour": "red"}), 422)
    fields = {e["field"] for e in body["errors"]}
    assert fields == {"name", "colour"}
    body = problem(api.post("/environments", json={"name": "x" * 64}), 422)
    assert body["errors"][0]["field"] == "name"
    problem(api.post("/environments", content=b'{"name": ', headers={"content-type": "application/json"}), 400)
    problem(api.post("/environments", content=b"name: [", headers={"content-type": "application/yaml"}), 400)
    assert api.get("/environments").json()["items"] == []


def test_hypervisor_secrets_are_write_only(api: httpx.Client, live_server) -> None:
    api.post("/environments", json={"name": "dev"})
    created = api.post(
        "/hypervisors",
        json={"name": "ec2-eu", "environment": "dev", "driver": "aws",
              "config": {"region": "eu-west-1", "access_key_id": "AKIA1", "secret_access_key": "s3cr3t-value"}},
    )
    assert created.status_code == 201, created.text
    hv = created.json()
    assert hv["config"] == {"region": "eu-west-1", "access_key_id": "AKIA1"}
    assert hv["secrets_set"] == ["secret_access_key"]
    assert "s3cr3t-value" not in api.get(f"/hypervisors/{hv['id']}").text
    assert "s3cr3t-value" not in api.get("/hypervisors").text
    # Stored encrypted: the raw row does not contain the secret either.
    _, db = live_server
    with db.engine.connect() as conn:
        raw = str(conn.exec_driver_sql("SELECT config, secret_config FROM hypervisors").all())
    assert "s3cr3t-value" not in raw and "gAAAA" in raw  # a Fernet token
    # Changing plain settings keeps the secret; null removes it.
    # PATCH merges: changing a plain setting keeps the others and the secret; null removes settings.
    kept = api.patch("/hypervisors/ec2-eu", json={"config": {"region": "us-east-1"}}).json()
    assert kept["config"] == {"region": "us-east-1", "access_key_id": "AKIA1"}
    assert kept["secrets_set"] == ["secret_access_key"]
    removed = api.patch("/hypervisors/ec2-eu", json={"config": {"access_key_id": None, "secret_access_key": None}})
    assert removed.json()["secrets_set"] == [] and removed.json()["config"] == {"region": "us-east-1"}


def test_hypervisor_config_is_validated_by_its_driver(api: httpx.Client) -> None:
    api.post("/environments", json={"name": "dev"})
    body = problem(api.post("/hypervisors", json={"name": "h", "environment": "dev", "driver": "aws",
                                                   "config": {"regoin": "x"}}), 422)
    assert body["errors"][0]["field"] == "config.regoin"
    body = problem(api.post("/hypervisors", json={"name": "h", "environment": "dev", "driver": "nope"}), 422)
    assert body["errors"][0]["field"] == "driver" and "simulated" in body["detail"]
    body = problem(api.post("/hypervisors", json={"name": "h", "environment": "nowhere", "driver": "simulated"}), 422)
    assert body["errors"][0]["field"] == "environment"
    body = problem(api.post("/hypervisors", json={"name": "h", "environment": "dev", "driver": "simulated",
                                                   "config": {"failure_rate": 2}}), 422)
    assert body["errors"][0]["field"] == "config.failure_rate"
    assert api.get("/hypervisors").json()["items"] == []


def test_environment_in_use_cannot_be_deleted(api: httpx.Client) -> None:
    api.post("/environments", json={"name": "dev"})
    api.post("/hypervisors", json={"name": "sim", "environment": "dev", "driver": "simulated"})
    body = problem(api.delete("/environments/dev"), 409)
    assert "hypervisors" in body["detail"]
    assert api.delete("/hypervisors/sim").status_code == 204
    assert api.delete("/environments/dev").status_code == 204


def test_type_in_seed_shape_becomes_a_puppet_type(api: httpx.Client) -> None:
    seed = (
        "type: redis\n"
        "puppet-std:\n  module: {name: redis-sandbox-0.3.4, src: 'https://example.invalid/redis.tgz'}\n  args: []\n"
        "classes: {redis: {append: true}}\n"
    )
    created = api.post("/types", content=seed, headers={"content-type": "application/yaml"})
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["name"] == "redis"
    assert body["provisioner"] == {
        "kind": "puppet",
        "spec": {"module": {"name": "redis-sandbox-0.3.4", "src": "https://example.invalid/redis.tgz"},
                 "args": [], "classes": {"redis": {"append": True}}},
    }


def test_type_in_use_cannot_be_deleted(api: httpx.Client) -> None:
    api.post("/environments", json={"name": "dev"})
    api.post("/types", json={"name": "web", "provisioner": {"kind": "script", "spec": NOOP_SCRIPT}})
    api.post("/systems", json={"hostname": "w1", "environment": "dev", "type": "web"})
    problem(api.delete("/types/web"), 409)
    assert api.get("/types/web").status_code == 200


def test_drivers_are_listed_with_schemas(api: httpx.Client) -> None:
    drivers = {d["name"]: d for d in api.get("/drivers").json()}
    assert {"simulated", "docker", "libvirt", "ssh", "aws", "vsphere", "proxmox"} <= set(drivers)
    assert drivers["aws"]["secret_fields"] == ["secret_access_key", "session_token"]
    assert "region" in drivers["aws"]["config_schema"]["properties"]
