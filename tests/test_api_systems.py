"""Systems, their listing and pagination, labels and groups through the HTTP API."""

from __future__ import annotations

import base64
import json
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from sqlalchemy import text

SEED_YAML = """\
env: dev
machine:
  hostname: red1
  user: ubuntu
  os: ubuntu-12.10
simulated:
  image: x
type: redis
"""


def problem(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["status"] == status and body["type"].startswith("urn:armillary:problem:")
    return body


def fields(body: dict) -> set[str]:
    return {e["field"] for e in body["errors"]}


def ok(response: httpx.Response, status: int = 200) -> dict:
    assert response.status_code == status, response.text
    return response.json()


def hostnames(api: httpx.Client, **params) -> list[str]:
    """Hostnames of the first page of ``GET /systems`` with these query parameters."""
    return [s["hostname"] for s in ok(api.get("/systems", params=params))["items"]]


def all_systems(api: httpx.Client) -> list[dict]:
    return ok(api.get("/systems", params={"limit": 1000}))["items"]


@pytest.fixture
def inventory(api: httpx.Client) -> httpx.Client:
    """Two environments with one simulated hypervisor each, and two types."""
    for env in ("dev", "qa"):
        ok(api.post("/environments", json={"name": env}), 201)
        ok(
            api.post("/hypervisors", json={"name": f"sim-{env}", "environment": env, "driver": "simulated"}),
            201,
        )
    for name in ("redis", "web"):
        ok(api.post("/types", json={"name": name}), 201)
    return api


def set_state(live_server, hostname: str, state: str) -> None:
    """Jobs move states; the API cannot. Tests that need another state write the row directly."""
    _, db = live_server
    with db.engine.begin() as conn:
        conn.execute(text("UPDATE systems SET state = :s WHERE hostname = :h"), {"s": state, "h": hostname})


# ---------------------------------------------------------------- create and read


def test_create_system_with_machine_props_labels_and_variables(inventory: httpx.Client) -> None:
    api = inventory
    created = api.post(
        "/systems",
        json={
            "hostname": "red1",
            "environment": "dev",
            "hypervisor": "sim-dev",
            "type": "redis",
            "machine": {
                "user": "ubuntu",
                "os": "ubuntu-22.04",
                "cpu": 2,
                "memory": "2G",
                "disk": "20G",
                "addresses": ["10.0.0.5"],
            },
            "driver": {"image": "x"},
            "labels": {"cell": "c1", "service": "cache"},
            "variables": {"port": 6379, "conf": {"maxmemory": "1gb"}},
        },
    )
    system = ok(created, 201)
    assert created.headers["location"].endswith(f"/systems/{system['id']}")
    assert created.headers["etag"] == f'"{system["version"]}"'
    assert system["hostname"] == "red1"
    assert system["environment"]["name"] == "dev"
    assert system["hypervisor"]["name"] == "sim-dev" and system["driver_name"] == "simulated"
    assert system["type"]["name"] == "redis"
    assert system["machine"] == {
        "user": "ubuntu",
        "os": "ubuntu-22.04",
        "cpu": 2,
        "memory": 2048,
        "disk": 20,
        "addresses": ["10.0.0.5"],
    }
    assert system["driver"] == {"image": "x"}
    assert system["labels"] == {"cell": "c1", "service": "cache"}
    assert system["variables"] == {"port": 6379, "conf": {"maxmemory": "1gb"}}
    assert system["state"] == "defined"
    # What was stored is what comes back on a later read.
    read = ok(api.get(f"/systems/{system['id']}"))
    assert read == system


@pytest.mark.parametrize(
    ("machine", "memory", "disk"),
    [
        ({"memory": 512, "disk": 10}, 512, 10),
        ({"memory": "512M", "disk": "1T"}, 512, 1024),
        ({"memory": "1.5G", "disk": "40GB"}, 1536, 40),
        ({"memory": "4GiB", "disk": "2048M"}, 4096, 2),
    ],
)
def test_machine_sizes_accept_units(inventory: httpx.Client, machine: dict, memory: int, disk: int) -> None:
    system = ok(
        inventory.post("/systems", json={"hostname": "h1", "environment": "dev", "machine": machine}), 201
    )
    assert (system["machine"]["memory"], system["machine"]["disk"]) == (memory, disk)


@pytest.mark.parametrize(
    ("machine", "field"),
    [
        ({"memory": "lots"}, "machine.memory"),
        ({"memory": 0}, "machine.memory"),
        ({"disk": "-1G"}, "machine.disk"),
        ({"cpu": 0}, "machine.cpu"),
        ({"addresses": ["10.0.0.300"]}, "machine.addresses[0]"),
        ({"ram": "2G"}, "machine.ram"),
    ],
)
def test_bad_machine_props_name_the_field(inventory: httpx.Client, machine: dict, field: str) -> None:
    body = problem(
        inventory.post("/systems", json={"hostname": "h1", "environment": "dev", "machine": machine}), 422
    )
    assert field in fields(body)
    assert all_systems(inventory) == []


def test_read_by_id_and_by_hostname_and_ambiguous_hostname(inventory: httpx.Client) -> None:
    api = inventory
    dev = ok(api.post("/systems", json={"hostname": "red1", "environment": "dev"}), 201)
    assert ok(api.get("/systems/red1"))["id"] == dev["id"]
    assert ok(api.get("/systems/RED1"))["id"] == dev["id"]  # hostnames are case-insensitive
    problem(api.get("/systems/blue1"), 404)
    problem(api.get("/systems/999999"), 404)
    # The same hostname in another environment is allowed...
    qa = ok(api.post("/systems", json={"hostname": "red1", "environment": "qa"}), 201)
    assert qa["id"] != dev["id"]
    # ...but then the bare hostname no longer says which one: 409, naming both environments.
    body = problem(api.get("/systems/red1"), 409)
    assert "red1" in body["detail"] and "dev" in body["detail"] and "qa" in body["detail"]
    assert ok(api.get(f"/systems/{dev['id']}"))["environment"]["name"] == "dev"
    assert ok(api.get(f"/systems/{qa['id']}"))["environment"]["name"] == "qa"


def test_hostname_is_unique_per_environment(inventory: httpx.Client) -> None:
    api = inventory
    ok(api.post("/systems", json={"hostname": "red1", "environment": "dev"}), 201)
    body = problem(api.post("/systems", json={"hostname": "red1", "environment": "dev"}), 409)
    assert "red1" in body["detail"] and "already" in body["detail"]
    assert fields(body) == {"hostname"}
    # Case does not make a different hostname.
    problem(api.post("/systems", json={"hostname": "RED1", "environment": "dev"}), 409)
    # Renaming onto a taken hostname is refused the same way.
    other = ok(api.post("/systems", json={"hostname": "red2", "environment": "dev"}), 201)
    body = problem(api.patch(f"/systems/{other['id']}", json={"hostname": "red1"}), 409)
    assert "red1" in body["detail"]
    assert ok(api.get(f"/systems/{other['id']}"))["hostname"] == "red2"
    assert sorted(s["hostname"] for s in all_systems(api)) == ["red1", "red2"]


def test_hostname_is_lower_cased(inventory: httpx.Client) -> None:
    system = ok(
        inventory.post("/systems", json={"hostname": "Web-01.Example.COM", "environment": "dev"}), 201
    )
    assert system["hostname"] == "web-01.example.com"
    renamed = ok(inventory.patch(f"/systems/{system['id']}", json={"hostname": "WEB-02"}))
    assert renamed["hostname"] == "web-02"


@pytest.mark.parametrize(
    "hostname",
    ["bad_host", "-lead", "trail-", "a..b", "", "sp ace", "x" * 64, ".".join(["a" * 63] * 4), "host/name"],
)
def test_invalid_hostname_is_refused(inventory: httpx.Client, hostname: str) -> None:
    body = problem(inventory.post("/systems", json={"hostname": hostname, "environment": "dev"}), 422)
    assert fields(body) == {"hostname"}
    assert all_systems(inventory) == []


def test_an_all_digit_hostname_cannot_be_mistaken_for_an_id(inventory: httpx.Client) -> None:
    api = inventory
    first = ok(api.post("/systems", json={"hostname": "h1", "environment": "dev"}), 201)
    numeric = api.post("/systems", json={"hostname": str(first["id"]), "environment": "dev"})
    if numeric.status_code == 422:  # refused, naming the field: the reference stays unambiguous
        assert fields(problem(numeric, 422)) == {"hostname"}
        return
    numeric_system = ok(numeric, 201)
    # Accepted: then the reference must not silently answer with a different system than the one so named.
    read = api.get(f"/systems/{numeric_system['hostname']}")
    assert read.status_code == 409 or ok(read)["id"] == numeric_system["id"], read.text


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"environment": "nowhere"}, "environment"),
        ({"environment": 999999}, "environment"),
        ({"type": "nope"}, "type"),
        ({"type": 999999}, "type"),
        ({"hypervisor": "nope"}, "hypervisor"),
        ({"hypervisor": 999999}, "hypervisor"),
    ],
)
def test_unknown_reference_is_a_422_naming_the_field(
    inventory: httpx.Client, change: dict, field: str
) -> None:
    body = problem(inventory.post("/systems", json={"hostname": "h1", "environment": "dev", **change}), 422)
    assert fields(body) == {field}
    assert all_systems(inventory) == []


def test_unknown_reference_in_an_update_is_a_422_and_changes_nothing(inventory: httpx.Client) -> None:
    system = ok(inventory.post("/systems", json={"hostname": "h1", "environment": "dev", "type": "web"}), 201)
    body = problem(
        inventory.patch(f"/systems/{system['id']}", json={"type": "nope", "labels": {"a": "b"}}), 422
    )
    assert fields(body) == {"type"}
    after = ok(inventory.get(f"/systems/{system['id']}"))
    assert after["type"]["name"] == "web" and after["labels"] == {} and after["version"] == system["version"]


def test_hypervisor_from_another_environment_is_refused(inventory: httpx.Client) -> None:
    api = inventory
    body = problem(
        api.post("/systems", json={"hostname": "h1", "environment": "dev", "hypervisor": "sim-qa"}), 422
    )
    assert fields(body) == {"hypervisor"}
    assert "qa" in body["detail"]
    system = ok(
        api.post("/systems", json={"hostname": "h1", "environment": "dev", "hypervisor": "sim-dev"}), 201
    )
    body = problem(api.patch(f"/systems/{system['id']}", json={"hypervisor": "sim-qa"}), 422)
    assert fields(body) == {"hypervisor"}
    assert ok(api.get(f"/systems/{system['id']}"))["hypervisor"]["name"] == "sim-dev"


def test_driver_props_are_validated_by_the_hypervisors_driver(inventory: httpx.Client) -> None:
    api = inventory
    base = {"environment": "dev", "hypervisor": "sim-dev"}
    good = ok(api.post("/systems", json={"hostname": "h1", "driver": {"image": "x"}, **base}), 201)
    assert good["driver"] == {"image": "x"}
    body = problem(api.post("/systems", json={"hostname": "h2", "driver": {"imagee": 1}, **base}), 422)
    assert fields(body) == {"driver.imagee"}
    body = problem(api.post("/systems", json={"hostname": "h2", "driver": {"image": "x" * 256}, **base}), 422)
    assert fields(body) == {"driver.image"}
    # Driver properties without a hypervisor have nothing to check them.
    body = problem(
        api.post("/systems", json={"hostname": "h2", "environment": "dev", "driver": {"image": "x"}}), 422
    )
    assert fields(body) == {"driver"}
    # Updates are checked too, and a refused update changes nothing.
    body = problem(api.patch(f"/systems/{good['id']}", json={"driver": {"imagee": "y"}}), 422)
    assert fields(body) == {"driver.imagee"}
    assert ok(api.get(f"/systems/{good['id']}"))["driver"] == {"image": "x"}
    assert [s["hostname"] for s in all_systems(api)] == ["h1"]


# ---------------------------------------------------------------- the seed shape


def _check_seed_system(system: dict, hostname: str) -> None:
    assert system["hostname"] == hostname
    assert system["environment"]["name"] == "dev"
    assert system["hypervisor"]["name"] == "sim-dev"  # the environment's only simulated hypervisor
    assert system["driver_name"] == "simulated"
    assert system["driver"] == {"image": "x"}
    assert system["type"]["name"] == "redis"
    assert system["machine"]["user"] == "ubuntu" and system["machine"]["os"] == "ubuntu-12.10"
    assert system["state"] == "defined"


def test_seed_shape_as_yaml_creates_a_system_on_the_only_simulated_hypervisor(
    inventory: httpx.Client,
) -> None:
    created = inventory.post("/systems", content=SEED_YAML, headers={"content-type": "application/yaml"})
    _check_seed_system(ok(created, 201), "red1")
    _check_seed_system(ok(inventory.get("/systems/red1")), "red1")


def test_seed_shape_as_json_creates_a_system_on_the_only_simulated_hypervisor(
    inventory: httpx.Client,
) -> None:
    seed = {
        "env": "dev",
        "machine": {"hostname": "red1", "user": "ubuntu", "os": "ubuntu-12.10"},
        "simulated": {"image": "x"},
        "type": "redis",
    }
    _check_seed_system(ok(inventory.post("/systems", json=seed), 201), "red1")


def test_seed_shape_without_such_a_hypervisor_is_refused(inventory: httpx.Client) -> None:
    api = inventory
    ok(api.post("/environments", json={"name": "bare"}), 201)
    yaml_body = SEED_YAML.replace("env: dev", "env: bare")
    body = problem(api.post("/systems", content=yaml_body, headers={"content-type": "application/yaml"}), 422)
    assert fields(body) == {"hypervisor"} and "simulated" in body["detail"]
    # A driver that is installed but has no hypervisor in the environment.
    body = problem(
        api.post(
            "/systems",
            content=SEED_YAML.replace("simulated:", "docker:"),
            headers={"content-type": "application/yaml"},
        ),
        422,
    )
    assert fields(body) == {"hypervisor"} and "docker" in body["detail"]
    # Two candidates: the seed cannot say which, so the client must name one.
    ok(api.post("/hypervisors", json={"name": "sim-dev-2", "environment": "dev", "driver": "simulated"}), 201)
    body = problem(api.post("/systems", content=SEED_YAML, headers={"content-type": "application/yaml"}), 422)
    assert fields(body) == {"hypervisor"}
    assert all_systems(api) == []


def test_state_is_read_only_and_starts_defined(inventory: httpx.Client) -> None:
    api = inventory
    body = problem(api.post("/systems", json={"hostname": "h1", "environment": "dev", "state": "ready"}), 422)
    assert body["errors"] == [{"field": "state", "message": "unknown field", "code": "extra_forbidden"}]
    assert all_systems(api) == []
    system = ok(api.post("/systems", json={"hostname": "h1", "environment": "dev"}), 201)
    assert system["state"] == "defined"
    body = problem(api.patch(f"/systems/{system['id']}", json={"state": "ready"}), 422)
    assert fields(body) == {"state"}
    assert ok(api.get(f"/systems/{system['id']}"))["state"] == "defined"


# ---------------------------------------------------------------- updates, ETags, delete


def test_patch_labels_bumps_etag_and_if_match_guards_updates(inventory: httpx.Client) -> None:
    api = inventory
    system = ok(
        api.post("/systems", json={"hostname": "h1", "environment": "dev", "labels": {"a": "1"}}), 201
    )
    first = api.get(f"/systems/{system['id']}")
    etag1 = first.headers["etag"]
    patched = api.patch(
        f"/systems/{system['id']}", json={"labels": {"a": "2", "b": "x"}}, headers={"If-Match": etag1}
    )
    assert ok(patched)["labels"] == {"a": "2", "b": "x"}
    etag2 = patched.headers["etag"]
    assert etag2 != etag1
    assert api.get(f"/systems/{system['id']}").headers["etag"] == etag2
    # A client holding the old copy is refused, and nothing changes.
    stale = api.patch(
        f"/systems/{system['id']}", json={"labels": {}, "variables": {"x": 1}}, headers={"If-Match": etag1}
    )
    assert problem(stale, 412)["current_etag"] == etag2
    after = api.get(f"/systems/{system['id']}")
    assert after.json()["labels"] == {"a": "2", "b": "x"} and after.json()["variables"] == {}
    assert after.headers["etag"] == etag2
    # Deleting against a stale copy is refused too.
    problem(api.delete(f"/systems/{system['id']}", headers={"If-Match": etag1}), 412)
    assert api.get(f"/systems/{system['id']}").status_code == 200


def test_if_none_match_answers_304_until_the_system_changes(inventory: httpx.Client) -> None:
    api = inventory
    system = ok(api.post("/systems", json={"hostname": "h1", "environment": "dev"}), 201)
    etag = api.get(f"/systems/{system['id']}").headers["etag"]
    cached = api.get(f"/systems/{system['id']}", headers={"If-None-Match": etag})
    assert cached.status_code == 304 and cached.content == b"" and cached.headers["etag"] == etag
    assert api.get("/systems/h1", headers={"If-None-Match": etag}).status_code == 304
    ok(api.patch(f"/systems/{system['id']}", json={"labels": {"k": "v"}}))
    fresh = api.get(f"/systems/{system['id']}", headers={"If-None-Match": etag})
    assert fresh.status_code == 200 and fresh.json()["labels"] == {"k": "v"} and fresh.headers["etag"] != etag


def test_if_none_match_takes_a_list_of_tags(inventory: httpx.Client) -> None:
    system = ok(inventory.post("/systems", json={"hostname": "h1", "environment": "dev"}), 201)
    etag = inventory.get(f"/systems/{system['id']}").headers["etag"]
    assert inventory.get("/systems/h1", headers={"If-None-Match": f'"old", {etag}'}).status_code == 304
    assert inventory.get("/systems/h1", headers={"If-None-Match": f"W/{etag}"}).status_code == 304
    assert inventory.get("/systems/h1", headers={"If-None-Match": "*"}).status_code == 304


def test_patch_machine_changes_only_the_given_properties(inventory: httpx.Client) -> None:
    api = inventory
    system = ok(
        api.post(
            "/systems",
            json={
                "hostname": "h1",
                "environment": "dev",
                "machine": {"cpu": 2, "memory": "2G", "os": "debian-12"},
            },
        ),
        201,
    )
    patched = ok(api.patch(f"/systems/{system['id']}", json={"machine": {"memory": "4G"}}))
    assert patched["machine"]["memory"] == 4096
    assert patched["machine"]["cpu"] == 2 and patched["machine"]["os"] == "debian-12"


def test_delete_a_defined_system(inventory: httpx.Client) -> None:
    api = inventory
    system = ok(
        api.post("/systems", json={"hostname": "h1", "environment": "dev", "labels": {"a": "1"}}), 201
    )
    assert api.delete(f"/systems/{system['id']}").status_code == 204
    problem(api.get(f"/systems/{system['id']}"), 404)
    problem(api.delete(f"/systems/{system['id']}"), 404)
    assert ok(api.get("/labels")) == []
    # The hostname is free again.
    ok(api.post("/systems", json={"hostname": "h1", "environment": "dev"}), 201)


def test_a_system_that_runs_somewhere_cannot_be_deleted(inventory: httpx.Client, live_server) -> None:
    api = inventory
    system = ok(api.post("/systems", json={"hostname": "h1", "environment": "dev"}), 201)
    set_state(live_server, "h1", "ready")
    body = problem(api.delete(f"/systems/{system['id']}"), 409)
    assert "ready" in body["detail"]
    assert ok(api.get(f"/systems/{system['id']}"))["state"] == "ready"
    set_state(live_server, "h1", "destroyed")
    assert api.delete(f"/systems/{system['id']}").status_code == 204


# ---------------------------------------------------------------- over-long strings


@pytest.mark.parametrize(
    ("change", "field_prefix"),
    [
        ({"hostname": ".".join(["a" * 63] * 4) + ".abc"}, "hostname"),  # 256 chars of valid labels
        ({"machine": {"user": "u" * 64}}, "machine.user"),
        ({"machine": {"os": "o" * 128}}, "machine.os"),
        ({"labels": {"k" * 64: "v"}}, "labels"),
        ({"labels": {"k": "v" * 256}}, "labels.k"),
        ({"variables": {"v" * 256: 1}}, "variables"),
        ({"labels": {f"k{i}": "v" for i in range(101)}}, "labels"),
    ],
)
def test_over_long_input_is_refused(inventory: httpx.Client, change: dict, field_prefix: str) -> None:
    body = problem(inventory.post("/systems", json={"hostname": "h1", "environment": "dev", **change}), 422)
    assert body["errors"] and all(f.startswith(field_prefix) for f in fields(body)), body
    assert all_systems(inventory) == []


def test_over_long_query_parameters_are_refused(inventory: httpx.Client) -> None:
    body = problem(inventory.get("/systems", params={"q": "a" * 254}), 422)
    assert fields(body) == {"q"}
    body = problem(inventory.get("/systems", params={"environment": "e" * 64}), 422)
    assert fields(body) == {"environment"}


# ---------------------------------------------------------------- import


def test_import_creates_every_item(inventory: httpx.Client) -> None:
    api = inventory
    items = [
        {"hostname": "a1", "environment": "dev", "labels": {"role": "app"}},
        {"hostname": "a2", "environment": "qa", "hypervisor": "sim-qa", "driver": {"image": "i"}},
        {
            "env": "dev",
            "machine": {"hostname": "red1", "user": "ubuntu"},
            "simulated": {"image": "x"},
            "type": "redis",
        },
    ]
    result = ok(api.post("/systems/import", json={"items": items}), 201)
    assert result["created"] == 3 and len(result["ids"]) == 3
    systems = {s["id"]: s for s in all_systems(api)}
    assert sorted(systems) == sorted(result["ids"])
    assert [systems[i]["hostname"] for i in result["ids"]] == ["a1", "a2", "red1"]
    assert systems[result["ids"][2]]["hypervisor"]["name"] == "sim-dev"


def test_import_as_yaml(inventory: httpx.Client) -> None:
    doc = "items:\n" + "".join(f"  - {{hostname: y{i}, environment: dev}}\n" for i in range(3))
    result = ok(
        inventory.post("/systems/import", content=doc, headers={"content-type": "application/yaml"}), 201
    )
    assert result["created"] == 3
    assert sorted(s["hostname"] for s in all_systems(inventory)) == ["y0", "y1", "y2"]


@pytest.mark.parametrize(
    ("bad_item", "field"),
    [
        ({"hostname": "bad_host", "environment": "dev"}, "items[1].hostname"),
        ({"hostname": "b1", "environment": "nowhere"}, "items[1].environment"),
        ({"hostname": "b1", "environment": "dev", "type": "nope"}, "items[1].type"),
        ({"hostname": "b1", "environment": "dev", "hypervisor": "sim-qa"}, "items[1].hypervisor"),
        (
            {"hostname": "b1", "environment": "dev", "hypervisor": "sim-dev", "driver": {"imagee": 1}},
            "items[1].driver.imagee",
        ),
        ({"hostname": "b1", "environment": "dev", "state": "ready"}, "items[1].state"),
        ({"hostname": "b1", "environment": "dev", "machine": {"memory": "lots"}}, "items[1].machine.memory"),
    ],
)
def test_import_is_all_or_nothing_and_names_the_bad_item(
    inventory: httpx.Client, bad_item: dict, field: str
) -> None:
    items = [
        {"hostname": "a1", "environment": "dev"},
        bad_item,
        {"hostname": "a3", "environment": "dev"},
    ]
    body = problem(inventory.post("/systems/import", json={"items": items}), 422)
    assert field in fields(body), body
    assert "items[1]" in body["detail"]
    assert all_systems(inventory) == []


def test_import_refuses_duplicate_hostnames(inventory: httpx.Client) -> None:
    api = inventory
    items = [
        {"hostname": "d1", "environment": "dev"},
        {"hostname": "x1", "environment": "dev"},
        {"hostname": "D1", "environment": "dev"},
    ]
    body = problem(api.post("/systems/import", json={"items": items}), 409)
    assert "d1" in body["detail"] and "items[2]" in body["detail"]
    assert all_systems(api) == []
    # The same hostname in two environments of one import is fine.
    ok(
        api.post(
            "/systems/import",
            json={
                "items": [{"hostname": "d1", "environment": "dev"}, {"hostname": "d1", "environment": "qa"}]
            },
        ),
        201,
    )
    # A hostname that already exists in the environment fails the whole batch.
    body = problem(
        api.post(
            "/systems/import",
            json={
                "items": [{"hostname": "n1", "environment": "dev"}, {"hostname": "d1", "environment": "dev"}]
            },
        ),
        409,
    )
    assert "items[1]" in body["detail"]
    assert sorted(s["hostname"] for s in all_systems(api)) == ["d1", "d1"]


def test_import_size_is_bounded(inventory: httpx.Client) -> None:
    body = problem(inventory.post("/systems/import", json={"items": []}), 422)
    assert fields(body) == {"items"}
    items = [{"hostname": f"h{i}", "environment": "dev"} for i in range(1001)]
    body = problem(inventory.post("/systems/import", json={"items": items}), 422)
    assert fields(body) == {"items"}
    assert all_systems(inventory) == []


# ---------------------------------------------------------------- listing and filters


@pytest.fixture
def fleet(inventory: httpx.Client, live_server) -> httpx.Client:
    """A small fleet across environments, types, hypervisors, labels and states."""
    api = inventory
    ok(api.post("/hypervisors", json={"name": "sim-dev-b", "environment": "dev", "driver": "simulated"}), 201)
    items = [
        {
            "hostname": "web1",
            "environment": "dev",
            "type": "web",
            "hypervisor": "sim-dev",
            "labels": {"cell": "c1", "tier": "front"},
        },
        {
            "hostname": "web2",
            "environment": "dev",
            "type": "web",
            "hypervisor": "sim-dev-b",
            "labels": {"cell": "c2", "tier": "front"},
        },
        {
            "hostname": "red1",
            "environment": "dev",
            "type": "redis",
            "hypervisor": "sim-dev",
            "labels": {"cell": "c1", "tier": "back"},
        },
        {
            "hostname": "web1",
            "environment": "qa",
            "type": "web",
            "hypervisor": "sim-qa",
            "labels": {"cell": "c1", "tier": "front"},
        },
        {"hostname": "db1", "environment": "qa", "labels": {"cell": "c2"}},
    ]
    ok(api.post("/systems/import", json={"items": items}), 201)
    set_state(live_server, "red1", "ready")
    return api


def test_list_filters(fleet: httpx.Client) -> None:
    api = fleet
    assert hostnames(api) == ["web1", "web2", "red1", "web1", "db1"]  # id order
    assert hostnames(api, environment="dev") == ["web1", "web2", "red1"]
    assert hostnames(api, environment="qa") == ["web1", "db1"]
    assert hostnames(api, type="web") == ["web1", "web2", "web1"]
    assert hostnames(api, type="redis") == ["red1"]
    assert hostnames(api, state="ready") == ["red1"]
    assert hostnames(api, state="defined") == ["web1", "web2", "web1", "db1"]
    assert hostnames(api, hypervisor="sim-dev") == ["web1", "red1"]
    assert hostnames(api, hypervisor="sim-dev-b") == ["web2"]
    assert hostnames(api, label="cell=c1") == ["web1", "red1", "web1"]
    assert hostnames(api, label=["cell=c1", "tier=front"]) == ["web1", "web1"]  # repeated label = AND
    assert hostnames(api, label=["cell=c2", "tier=back"]) == []
    assert hostnames(api, label="tier=") == []
    assert hostnames(api, q="web") == ["web1", "web2", "web1"]
    assert hostnames(api, q="WEB2") == ["web2"]
    assert hostnames(api, q="eb") == []  # a prefix, not a substring
    assert hostnames(api, environment="dev", type="web", label="cell=c1") == ["web1"]
    env_id = ok(api.get("/environments/qa"))["id"]
    assert hostnames(api, environment=str(env_id)) == ["web1", "db1"]


def test_hostname_prefix_filter_treats_wildcards_literally(inventory: httpx.Client) -> None:
    for hostname in ("a-1", "ab1"):
        ok(inventory.post("/systems", json={"hostname": hostname, "environment": "dev"}), 201)
    assert hostnames(inventory, q="a-") == ["a-1"]
    assert hostnames(inventory, q="a_") == []
    assert hostnames(inventory, q="a%") == []


def test_bad_label_filter_is_refused(fleet: httpx.Client) -> None:
    body = problem(fleet.get("/systems", params={"label": "cell"}), 422)
    assert fields(body) == {"label"}


def test_label_counts(fleet: httpx.Client) -> None:
    labels = ok(fleet.get("/labels"))
    assert labels == [
        {"key": "cell", "value": "c1", "systems": 3},
        {"key": "cell", "value": "c2", "systems": 2},
        {"key": "tier", "value": "back", "systems": 1},
        {"key": "tier", "value": "front", "systems": 3},
    ]
    assert ok(fleet.get("/labels", params={"key": "tier"})) == [
        {"key": "tier", "value": "back", "systems": 1},
        {"key": "tier", "value": "front", "systems": 3},
    ]


# ---------------------------------------------------------------- keyset pagination


def follow(client: httpx.Client, params: dict) -> tuple[list[dict], list[str]]:
    """Every page from the first on, following ``next``; the items and the next URLs seen."""
    response = client.get("/systems", params=params)
    items: list[dict] = []
    nexts: list[str] = []
    for _ in range(1000):
        page = ok(response)
        items += page["items"]
        link = response.headers.get("link")
        if page.get("next") is None:
            assert link is None, "the last page has no Link: rel=next"
            return items, nexts
        assert link == f'<{page["next"]}>; rel="next"'
        nexts.append(page["next"])
        response = client.get(page["next"])
    raise AssertionError("pagination never ended")


def test_pagination_returns_every_item_exactly_once_in_id_order(inventory: httpx.Client) -> None:
    api = inventory
    items = [{"hostname": f"n{i:02d}", "environment": "dev"} for i in range(23)]
    ids = ok(api.post("/systems/import", json={"items": items}), 201)["ids"]
    for limit in (1, 5, 7, 23, 1000):
        seen, nexts = follow(api, {"limit": limit})
        assert [s["id"] for s in seen] == sorted(ids), f"limit={limit}"
        assert len(nexts) == (len(ids) - 1) // limit
        for page_url in nexts:
            assert parse_qs(urlsplit(page_url).query)["limit"] == [str(limit)]
    first = api.get("/systems", params={"limit": 10})
    assert len(first.json()["items"]) == 10 and 'rel="next"' in first.headers["link"]


def test_pagination_keeps_the_filters(inventory: httpx.Client) -> None:
    api = inventory
    items = [
        {
            "hostname": f"n{i:02d}",
            "environment": "dev" if i % 3 else "qa",
            "labels": {"cell": "c1" if i % 2 else "c2", "tier": "front"},
        }
        for i in range(30)
    ]
    ok(api.post("/systems/import", json={"items": items}), 201)
    expected = [f"n{i:02d}" for i in range(30) if i % 3 and i % 2]
    params = {"limit": 2, "environment": "dev", "label": ["cell=c1", "tier=front"], "q": "n"}
    seen, nexts = follow(api, params)
    assert [s["hostname"] for s in seen] == expected
    assert len(nexts) >= 3
    for page_url in nexts:
        query = parse_qs(urlsplit(page_url).query)
        assert query["environment"] == ["dev"]
        assert sorted(query["label"]) == ["cell=c1", "tier=front"]
        assert query["q"] == ["n"]


def test_pagination_is_stable_when_rows_are_added_behind_the_cursor(inventory: httpx.Client) -> None:
    api = inventory
    ok(
        api.post(
            "/systems/import", json={"items": [{"hostname": f"s{i}", "environment": "dev"} for i in range(4)]}
        ),
        201,
    )
    first = ok(api.get("/systems", params={"limit": 2}))
    ok(api.post("/systems", json={"hostname": "late", "environment": "dev"}), 201)
    rest = ok(api.get(first["next"]))
    assert [s["hostname"] for s in first["items"] + rest["items"]] == ["s0", "s1", "s2", "s3"]
    assert [s["hostname"] for s in ok(api.get(rest["next"]))["items"]] == ["late"]


@pytest.mark.parametrize("limit", [0, -1, 1001, "many"])
def test_out_of_range_limit_is_refused(inventory: httpx.Client, limit) -> None:
    body = problem(inventory.get("/systems", params={"limit": limit}), 422)
    assert fields(body) == {"limit"}


def _cursor(data) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    "cursor",
    [
        "garbage",
        "!!!",
        "%%%",
        _cursor([1]),
        _cursor({"after": "x"}),
        _cursor({"after": -1}),
        _cursor({"before": 1}),
        "x" * 201,
    ],
)
def test_garbage_cursor_is_refused(inventory: httpx.Client, cursor: str) -> None:
    body = problem(inventory.get("/systems", params={"cursor": cursor}), 422)
    assert fields(body) == {"cursor"}




def test_cursor_beyond_any_id_is_refused(base_url: str, inventory: httpx.Client, admin_headers: dict) -> None:
    # A fresh client: after a 500 the server drops the connection.
    response = httpx.get(
        f"{base_url}/api/v1/systems", params={"cursor": _cursor({"after": 2**64})}, timeout=30, headers=admin_headers
    )
    body = problem(response, 422)
    assert fields(body) == {"cursor"}


def test_cursor_beyond_the_32_bit_id_range_is_not_a_server_error(
    base_url: str, inventory: httpx.Client, admin_headers: dict
) -> None:
    """PostgreSQL ids are 32-bit ``integer``; SQLite's are 64-bit and simply return an empty page."""
    response = httpx.get(
        f"{base_url}/api/v1/systems", params={"cursor": _cursor({"after": 2**31})}, timeout=30, headers=admin_headers
    )
    assert response.status_code in (200, 422), response.text
    if response.status_code == 200:
        assert response.json() == {"items": [], "next": None}
    else:
        assert fields(problem(response, 422)) == {"cursor"}


# ---------------------------------------------------------------- groups


def test_group_crud(inventory: httpx.Client) -> None:
    api = inventory
    created = api.post(
        "/groups",
        json={
            "name": "cell-c1",
            "description": "Cell 1",
            "selector": {"cell": "c1"},
            "priority": 5,
            "variables": {"ntp": "ntp1"},
        },
    )
    group = ok(created, 201)
    assert created.headers["location"].endswith(f"/groups/{group['id']}")
    assert (
        group["selector"] == {"cell": "c1"}
        and group["priority"] == 5
        and group["variables"] == {"ntp": "ntp1"}
    )
    assert ok(api.get(f"/groups/{group['id']}"))["name"] == "cell-c1"
    by_name = api.get("/groups/cell-c1")
    assert ok(by_name)["id"] == group["id"]
    assert [g["name"] for g in ok(api.get("/groups"))["items"]] == ["cell-c1"]
    body = problem(api.post("/groups", json={"name": "cell-c1", "selector": {"cell": "c9"}}), 409)
    assert "cell-c1" in body["detail"]
    problem(api.post("/groups", json={"name": "nosel", "selector": {}}), 422)
    problem(api.post("/groups", json={"name": "prio", "selector": {"a": "b"}, "priority": 5000}), 422)
    updated = api.patch(
        "/groups/cell-c1",
        json={"priority": 7, "variables": {"ntp": "ntp2"}},
        headers={"If-Match": by_name.headers["etag"]},
    )
    assert ok(updated)["priority"] == 7 and updated.json()["variables"] == {"ntp": "ntp2"}
    assert updated.headers["etag"] != by_name.headers["etag"]
    stale = api.patch("/groups/cell-c1", json={"priority": 1}, headers={"If-Match": by_name.headers["etag"]})
    problem(stale, 412)
    assert ok(api.get("/groups/cell-c1"))["priority"] == 7
    assert api.delete("/groups/cell-c1").status_code == 204
    problem(api.get("/groups/cell-c1"), 404)
    assert ok(api.get("/groups"))["items"] == []


def test_group_members_carry_every_selector_label(fleet: httpx.Client) -> None:
    api = fleet
    ok(api.post("/groups", json={"name": "front-c1", "selector": {"cell": "c1", "tier": "front"}}), 201)
    ok(api.post("/groups", json={"name": "c2", "selector": {"cell": "c2"}}), 201)
    members = ok(api.get("/groups/front-c1/systems"))["items"]
    assert [(s["hostname"], s["environment"]["name"]) for s in members] == [("web1", "dev"), ("web1", "qa")]
    assert [s["hostname"] for s in ok(api.get("/groups/c2/systems"))["items"]] == ["web2", "db1"]
    # Membership follows the labels.
    red1 = ok(api.get("/systems/red1"))
    ok(api.patch(f"/systems/{red1['id']}", json={"labels": {"cell": "c1", "tier": "front"}}))
    members = ok(api.get("/groups/front-c1/systems"))["items"]
    assert [s["hostname"] for s in members] == ["web1", "red1", "web1"]
    page1 = ok(api.get("/groups/front-c1/systems", params={"limit": 2}))
    assert len(page1["items"]) == 2 and page1["next"]
    assert [s["hostname"] for s in ok(api.get(page1["next"]))["items"]] == ["web1"]
    problem(api.get("/groups/nope/systems"), 404)
