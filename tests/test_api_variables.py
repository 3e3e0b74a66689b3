"""Variables through the HTTP API: global variables and resolution by precedence.

Precedence, lowest first: global < environment < group < type < system. Keys merge shallowly:
the highest level that sets a key gives its whole value, and ``overrides`` lists every
lower-precedence source that set it too, lowest first.
"""

from __future__ import annotations

import httpx
import pytest


def problem(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["status"] == status and body["type"].startswith("urn:armillary:problem:")
    return body


def ok(response: httpx.Response, status: int = 200) -> dict:
    assert response.status_code == status, response.text
    return response.json()


def resolved(api: httpx.Client, system_ref: str | int) -> dict:
    body = ok(api.get(f"/systems/{system_ref}/variables"))
    assert body["precedence"] == ["global", "environment", "group", "type", "system"]
    return body["variables"]


def source(level: str, name: str | None = None) -> dict:
    return {"level": level, "name": name}


@pytest.fixture
def web1(api: httpx.Client) -> dict:
    """A system ``web1`` in ``dev``, of type ``web``, labelled ``cell=c1, tier=front``."""
    ok(api.post("/environments", json={"name": "dev"}), 201)
    ok(api.post("/types", json={"name": "web"}), 201)
    return ok(
        api.post(
            "/systems",
            json={
                "hostname": "web1",
                "environment": "dev",
                "type": "web",
                "labels": {"cell": "c1", "tier": "front"},
            },
        ),
        201,
    )


def test_precedence_global_environment_group_type_system(api: httpx.Client, web1: dict) -> None:
    ok(api.put("/variables", json={"port": "global"}))
    ok(api.patch("/environments/dev", json={"variables": {"port": "env"}}))
    ok(
        api.post(
            "/groups", json={"name": "cell1", "selector": {"cell": "c1"}, "variables": {"port": "group"}}
        ),
        201,
    )
    ok(api.patch("/types/web", json={"variables": {"port": "type"}}))
    ok(api.patch(f"/systems/{web1['id']}", json={"variables": {"port": "system"}}))

    everything = [
        source("global"),
        source("environment", "dev"),
        source("group", "cell1"),
        source("type", "web"),
        source("system", "web1"),
    ]
    values = ["global", "env", "group", "type", "system"]
    removals = [  # from the top down; after each, the next level down shows through
        lambda: ok(api.patch(f"/systems/{web1['id']}", json={"variables": {}})),
        lambda: ok(api.patch("/types/web", json={"variables": {}})),
        lambda: ok(api.patch("/groups/cell1", json={"variables": {}})),
        lambda: ok(api.patch("/environments/dev", json={"variables": {}})),
        lambda: ok(api.patch("/variables", json={"port": None})),
    ]
    for top in range(len(everything) - 1, -1, -1):
        port = resolved(api, web1["id"])["port"]
        assert port["value"] == values[top]
        assert port["source"] == everything[top]
        assert port["overrides"] == everything[:top]
        removals[len(everything) - 1 - top]()
    assert resolved(api, web1["id"]) == {}


def test_removing_a_middle_level_lets_the_next_one_down_show(api: httpx.Client, web1: dict) -> None:
    ok(api.put("/variables", json={"k": 0}))
    ok(api.patch("/environments/dev", json={"variables": {"k": 1}}))
    ok(api.patch("/types/web", json={"variables": {"k": 3}}))
    assert resolved(api, "web1")["k"] == {
        "value": 3,
        "source": source("type", "web"),
        "overrides": [source("global"), source("environment", "dev")],
    }
    ok(api.patch("/environments/dev", json={"variables": {}}))
    assert resolved(api, "web1")["k"] == {
        "value": 3,
        "source": source("type", "web"),
        "overrides": [source("global")],
    }
    ok(api.patch("/types/web", json={"variables": {}}))
    assert resolved(api, "web1")["k"] == {"value": 0, "source": source("global"), "overrides": []}


def test_keys_from_every_level_merge_and_values_are_not_deep_merged(api: httpx.Client, web1: dict) -> None:
    ok(api.put("/variables", json={"ntp": "pool.ntp.org", "conf": {"a": 1, "b": 2}}))
    ok(api.patch("/environments/dev", json={"variables": {"dns": ["10.0.0.2"]}}))
    ok(api.patch(f"/systems/{web1['id']}", json={"variables": {"conf": {"b": 3}}}))
    variables = resolved(api, "web1")
    assert {k: v["value"] for k, v in variables.items()} == {
        "conf": {"b": 3},
        "dns": ["10.0.0.2"],
        "ntp": "pool.ntp.org",
    }
    assert variables["ntp"]["source"] == source("global")
    assert variables["dns"]["source"] == source("environment", "dev")
    assert variables["conf"]["source"] == source("system", "web1")


def test_only_groups_whose_whole_selector_matches_apply(api: httpx.Client, web1: dict) -> None:
    ok(
        api.post(
            "/groups",
            json={
                "name": "front-c1",
                "selector": {"cell": "c1", "tier": "front"},
                "variables": {"a": "front-c1"},
            },
        ),
        201,
    )
    ok(
        api.post(
            "/groups",
            json={
                "name": "back-c1",
                "selector": {"cell": "c1", "tier": "back"},
                "variables": {"a": "back-c1", "b": "back-c1"},
            },
        ),
        201,
    )
    variables = resolved(api, "web1")
    assert variables["a"] == {"value": "front-c1", "source": source("group", "front-c1"), "overrides": []}
    assert "b" not in variables
    # Relabel the system: membership, and so the variables, follow.
    ok(api.patch(f"/systems/{web1['id']}", json={"labels": {"cell": "c1", "tier": "back"}}))
    variables = resolved(api, "web1")
    assert variables["a"]["source"] == source("group", "back-c1") and variables["b"]["value"] == "back-c1"


def test_group_priority_decides_between_matching_groups(api: httpx.Client, web1: dict) -> None:
    """Two groups that both match set one key.

    Observed rule: groups apply in ascending ``(priority, name)`` order and the last one applied wins,
    so the higher ``priority`` wins whatever the names; on equal priority the group whose name sorts
    *last* wins ("zeta" over "alpha"), and the other appears in ``overrides``.
    """
    ok(
        api.post(
            "/groups",
            json={"name": "alpha", "selector": {"cell": "c1"}, "priority": 10, "variables": {"k": "alpha"}},
        ),
        201,
    )
    ok(
        api.post(
            "/groups",
            json={"name": "zeta", "selector": {"tier": "front"}, "priority": 0, "variables": {"k": "zeta"}},
        ),
        201,
    )
    assert resolved(api, "web1")["k"] == {
        "value": "alpha",
        "source": source("group", "alpha"),
        "overrides": [source("group", "zeta")],
    }
    # Raise zeta above alpha: it wins now.
    ok(api.patch("/groups/zeta", json={"priority": 11}))
    assert resolved(api, "web1")["k"] == {
        "value": "zeta",
        "source": source("group", "zeta"),
        "overrides": [source("group", "alpha")],
    }
    # Equal priority: ordered by name, the last name wins (and it does not depend on creation order).
    ok(api.patch("/groups/zeta", json={"priority": 10}))
    assert resolved(api, "web1")["k"] == {
        "value": "zeta",
        "source": source("group", "zeta"),
        "overrides": [source("group", "alpha")],
    }
    ok(
        api.post(
            "/groups",
            json={"name": "beta", "selector": {"cell": "c1"}, "priority": 10, "variables": {"k": "beta"}},
        ),
        201,
    )
    k = resolved(api, "web1")["k"]
    assert k["value"] == "zeta"
    assert k["overrides"] == [source("group", "alpha"), source("group", "beta")]
    # A negative priority sinks below the default.
    ok(api.patch("/groups/zeta", json={"priority": -5}))
    assert resolved(api, "web1")["k"]["source"] == source("group", "beta")
    # Groups still sit above the environment and below the type.
    ok(api.patch("/environments/dev", json={"variables": {"k": "env"}}))
    ok(api.patch("/types/web", json={"variables": {"k": "type"}}))
    k = resolved(api, "web1")["k"]
    assert k["source"] == source("type", "web")
    assert k["overrides"] == [
        source("environment", "dev"),
        source("group", "zeta"),
        source("group", "alpha"),
        source("group", "beta"),
    ]


def test_resolved_variables_of_an_unknown_system_is_404(api: httpx.Client) -> None:
    problem(api.get("/systems/nope/variables"), 404)
    problem(api.get("/systems/999999/variables"), 404)


def test_global_variables_put_replaces_and_patch_merges(api: httpx.Client) -> None:
    assert ok(api.get("/variables")) == {}
    assert ok(api.put("/variables", json={"a": 1, "b": {"nested": [1, 2]}, "c": "x"})) == {
        "a": 1,
        "b": {"nested": [1, 2]},
        "c": "x",
    }
    # PUT replaces the whole set.
    assert ok(api.put("/variables", json={"b": True, "d": 2.5})) == {"b": True, "d": 2.5}
    assert ok(api.get("/variables")) == {"b": True, "d": 2.5}
    # PATCH sets the given keys, leaves the others, and null removes a key.
    assert ok(api.patch("/variables", json={"d": None, "e": "new", "b": False})) == {"b": False, "e": "new"}
    assert ok(api.patch("/variables", json={"missing": None})) == {"b": False, "e": "new"}
    assert ok(api.get("/variables")) == {"b": False, "e": "new"}
    assert ok(api.put("/variables", json={})) == {}
    assert ok(api.get("/variables")) == {}


def test_global_variables_accept_yaml(api: httpx.Client) -> None:
    body = "ntp: [ntp1, ntp2]\nretries: 3\n"
    assert ok(api.put("/variables", content=body, headers={"content-type": "application/yaml"})) == {
        "ntp": ["ntp1", "ntp2"],
        "retries": 3,
    }


@pytest.mark.parametrize("body", [{"": 1}, {"k" * 256: 1}, {"bad\nkey": 1}, [1, 2], "text"])
def test_bad_global_variables_are_refused_and_change_nothing(api: httpx.Client, body) -> None:
    ok(api.put("/variables", json={"keep": 1}))
    problem(api.put("/variables", json=body), 422)
    problem(api.patch("/variables", json=body), 422)
    assert ok(api.get("/variables")) == {"keep": 1}


def test_global_variables_reach_every_system(api: httpx.Client, web1: dict) -> None:
    ok(api.post("/environments", json={"name": "qa"}), 201)
    ok(api.post("/systems", json={"hostname": "db1", "environment": "qa"}), 201)
    ok(api.patch("/variables", json={"motd": "hello"}))
    for ref in ("web1", "db1"):
        assert resolved(api, ref)["motd"] == {"value": "hello", "source": source("global"), "overrides": []}
