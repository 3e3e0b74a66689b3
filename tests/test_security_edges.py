"""Issue 22's attacks on the edge of the API, reproduced through real HTTP: bodies, references,
redaction by choice of the caller, quota growth by PATCH, and racing idempotent retries."""

from __future__ import annotations

import logging
import socket
import threading
import time

import httpx
import pytest

from armillary import redaction
from armillary.logs import install_redaction
from tests.support.accounts import TEST_PASSWORDS, bearer, ensure_user, grant, token_for
from tests.support.jobs import act, sim_setup, wait_job

USER_PASSWORD = TEST_PASSWORDS[2]
BILLION_LAUGHS = "a: &a [x,x,x,x,x,x,x,x,x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{','.join(['*' + chr(97 + i)] * 9)}]\n" for i in range(8)
)
YAML = {"content-type": "application/yaml"}


@pytest.fixture
def url(api: httpx.Client) -> str:
    return str(api.base_url).rstrip("/")


def _raw(base_url: str, head: str, body: bytes = b"", chunks: int = 0) -> tuple[int, float]:
    """Send a request by hand (a lying Content-Length, a body streamed in pieces); its status and seconds."""
    host, port = base_url.removeprefix("http://").split("/")[0].split(":")
    started = time.monotonic()
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(head.encode() + b"\r\n" + body)
        for _ in range(chunks):
            try:
                sock.sendall(b"100000\r\n" + b"[" * 0x100000 + b"\r\n")
            except OSError:
                break  # the server answered and closed: what we want
        answer = sock.recv(4096).decode("latin-1")
    return int(answer.split(" ", 2)[1]), time.monotonic() - started


# ---------------------------------------------------------------- 1. YAML bombs and deep documents


def test_yaml_bomb_without_credentials_is_refused_before_it_is_read(url: str, base_url: str) -> None:
    started = time.monotonic()
    response = httpx.post(url + "/systems", content=BILLION_LAUGHS, headers=YAML)
    assert response.status_code == 401 and response.headers["www-authenticate"].startswith("Bearer")
    assert response.headers["content-type"] == "application/problem+json"
    for path in ("/healthz", "/readyz"):  # outside the API a body is never read at all
        assert httpx.post(base_url + path, content=BILLION_LAUGHS, headers=YAML).status_code in (405, 200)
    assert time.monotonic() - started < 5


@pytest.mark.parametrize("document", [BILLION_LAUGHS, "base: &b {cpu: 1}\nother: *b\n"])
def test_yaml_aliases_are_refused_with_422(api: httpx.Client, url: str, document: str) -> None:
    response = api.post("/systems", content=document, headers=YAML)
    assert response.status_code == 422, response.text
    assert "aliases" in response.json()["detail"]
    # The open login route parses YAML too, under the same rules and a small size limit.
    login = httpx.post(url + "/auth/login", content=document, headers=YAML)
    assert login.status_code == 422, login.text


def test_deep_yaml_and_json_are_422_not_500(api: httpx.Client) -> None:
    deep_yaml = "a: " + "[" * 10_000 + "]" * 10_000
    response = api.post("/systems", content=deep_yaml, headers=YAML)
    assert response.status_code == 422 and "nested" in response.json()["detail"], response.text
    deep_json = '{"hostname": "x", "environment": "dev", "variables": {"v": ' + "[" * 10_000 + "]" * 10_000 + "}}"
    response = api.post("/systems", content=deep_json, headers={"content-type": "application/json"})
    assert response.status_code == 422 and "nested" in response.json()["detail"], response.text


def test_yaml_without_aliases_still_works(api: httpx.Client) -> None:
    assert api.post("/environments", json={"name": "dev"}).status_code == 201
    response = api.post("/systems", content="env: dev\nmachine: {hostname: red1, cpu: 2}\n", headers=YAML)
    assert response.status_code == 201, response.text


# ---------------------------------------------------------------- 5. body size


def test_a_large_body_without_a_token_is_401_before_it_is_read(url: str) -> None:
    size = 100 * 1024 * 1024
    head = (f"POST /api/v1/systems HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {size}\r\n")
    status, seconds = _raw(url, head, b"{")  # one byte of the promised 100 MB: answered at once
    assert status == 401 and seconds < 5


def test_bodies_over_the_limit_are_413_declared_or_streamed(api: httpx.Client, url: str, admin_token: str) -> None:
    head = (f"POST /api/v1/systems HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {admin_token}\r\n"
            f"Content-Type: application/json\r\n")
    status, _ = _raw(url, head + f"Content-Length: {64 * 1024 * 1024}\r\n", b"{")
    assert status == 413
    status, _ = _raw(url, head + "Transfer-Encoding: chunked\r\n", chunks=12)  # 12 MiB, no length given
    assert status == 413
    # The open login route takes small bodies only.
    login = httpx.post(url + "/auth/login", json={"username": "a", "password": "x" * 100_000})
    assert login.status_code == 413


def test_a_huge_variable_is_refused_and_nothing_is_stored(api: httpx.Client) -> None:
    sim_setup(api, systems=("s1",))
    response = api.patch("/systems/s1", json={"variables": {"blob": "x" * 300_000}})
    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["field"] == "variables"
    assert "blob" in response.json()["detail"]
    assert api.get("/systems/s1").json()["variables"] == {}


# ---------------------------------------------------------------- 6. deep values stored by import


def _nested(depth: int) -> object:
    value: object = "leaf"
    for _ in range(depth):
        value = {"n": value}
    return value


@pytest.mark.parametrize("depth", [20, 300])
def test_deeply_nested_values_are_refused_on_every_route_that_stores_one(api: httpx.Client, depth: int) -> None:
    sim_setup(api, systems=("s1",))
    item = {"hostname": "deep1", "environment": "dev", "variables": {"v": _nested(depth)}}
    imported = api.post("/systems/import", json={"items": [item]})
    assert imported.status_code == 422, imported.text
    assert api.post("/systems", json=item).status_code == 422
    assert api.patch("/systems/s1", json={"variables": {"v": _nested(depth)}}).status_code == 422
    assert api.patch("/systems/s1", json={"driver": {"v": _nested(depth)}}).status_code == 422
    assert api.put("/variables", json={"v": _nested(depth)}).status_code == 422
    assert api.post("/systems/s1/actions", json={"action": "create", "params": _nested(depth)}).status_code == 422
    # Listing the environment still works: nothing deep got in.
    listing = api.get("/systems", params={"environment": "dev"})
    assert listing.status_code == 200 and [s["hostname"] for s in listing.json()["items"]] == ["s1"]


def test_sixteen_levels_are_still_accepted(api: httpx.Client) -> None:
    sim_setup(api, systems=("s1",))
    response = api.patch("/systems/s1", json={"variables": {"v": _nested(14)}})
    assert response.status_code == 200, response.text
    assert api.get("/systems/s1/variables").status_code == 200


# ---------------------------------------------------------------- 8. references


@pytest.mark.parametrize("collection", ["systems", "environments", "hypervisors", "types", "groups", "schedules",
                                        "users"])
def test_references_that_are_not_ascii_ids_or_overflow_are_404(api: httpx.Client, collection: str) -> None:
    for ref in ("%C2%B2", "%D9%A3", str(2**64), str(2**31)):
        response = api.get(f"/{collection}/{ref}")
        assert response.status_code == 404, (collection, ref, response.text)
        assert response.headers["content-type"] == "application/problem+json"


def test_numbers_past_the_id_bounds_are_422_in_paths_queries_and_bodies(api: httpx.Client) -> None:
    huge = str(2**70)
    for path, params in (("/jobs", {"parent": huge}), ("/jobs", {"system": huge}), (f"/jobs/{huge}", {}),
                         ("/jobs/1/events", {"after": huge}), ("/jobs/%C2%B2", {})):
        response = api.get(path, params=params)
        assert response.status_code == 422, (path, params, response.text)
    assert api.delete(f"/auth/tokens/{huge}").status_code == 422
    sim_setup(api, systems=("s1",))
    for body in ({"hostname": "h2", "environment": 2**70}, {"hostname": "h2", "environment": str(2**70)},
                 {"hostname": "h2", "environment": "dev", "hypervisor": 2**63}):
        response = api.post("/systems", json=body)
        assert response.status_code == 422, (body, response.text)
    response = api.post("/jobs", json={"action": "create", "selector": {"systems": [2**70]}})
    assert response.status_code == 422, response.text
    events = api.get("/jobs/1/events", headers={"Last-Event-ID": huge})
    assert events.status_code in (404, 200)


# ---------------------------------------------------------------- 3. chosen words blanked out of logs


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def test_a_failed_login_cannot_blank_paths_out_of_the_logs_and_the_trail(api: httpx.Client, url: str) -> None:
    handler = install_redaction(_Lines())
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        for password in ("healthz", "/api/v1/auth/login", "/api/v1/environments"):
            httpx.post(url + "/auth/login", json={"username": "mallory", "password": password})
        assert api.get("/environments").status_code == 200
        httpx.post(url + "/auth/login", json={"username": "mallory", "password": "/api/v1/auth/login"})
    finally:
        root.removeHandler(handler)
    assert any(line.startswith("GET /api/v1/environments 200") for line in handler.lines), handler.lines[-10:]
    assert redaction.redact_text("a /api/v1/environments b") == "a /api/v1/environments b"  # never registered
    trail = api.get("/audit", params={"user": "mallory", "limit": 10}).json()["items"]
    assert trail and {row["path"] for row in trail} == {"/api/v1/auth/login"}
    mine = api.get("/audit", params={"resource_type": "environments", "limit": 5}).json()["items"]
    assert any(row["path"] == "/api/v1/environments" for row in mine)


def test_secret_query_parameters_are_masked_by_key_in_the_trail(api: httpx.Client) -> None:
    api.get("/environments", params={"api_token": "zz-query-secret-zz", "q": "visible"})
    row = api.get("/audit", params={"resource_type": "environments", "limit": 1}).json()["items"][0]
    assert "zz-query-secret-zz" not in row["path"] and "api_token=***" in row["path"] and "q=visible" in row["path"]


# ---------------------------------------------------------------- 4. quota growth by PATCH


@pytest.fixture
def limited_user(api: httpx.Client, live_server) -> httpx.Client:
    """uma: role user in dev with at most 4 CPUs and 4 GiB; her client."""
    sim_setup(api, systems=())
    db = live_server[1]
    ensure_user(db, "uma", password=USER_PASSWORD)
    grant(db, "uma", "dev", "user", max_cpu=4, max_memory_mb=4096)
    with httpx.Client(base_url=str(api.base_url), headers=bearer(token_for(db, "uma")), timeout=30) as client:
        yield client


def _usage(api: httpx.Client) -> dict:
    user = api.get("/users/uma").json()
    return next(r["usage"] for r in user["roles"] if r["environment"] == "dev")


def test_growing_a_machine_by_patch_is_charged_or_refused(api: httpx.Client, limited_user: httpx.Client) -> None:
    body = {"hostname": "small1", "environment": "dev", "hypervisor": "sim", "machine": {"cpu": 1, "memory": "1G"}}
    assert limited_user.post("/systems", json=body).status_code == 201
    assert wait_job(api, act(limited_user, "small1", "create").json()["id"])["status"] == "succeeded"
    assert (_usage(api)["cpu"], _usage(api)["memory_mb"]) == (1, 1024)
    grown = limited_user.patch("/systems/small1", json={"machine": {"cpu": 64, "memory": "256G"}})
    assert grown.status_code == 403, grown.text
    problem = grown.json()
    assert problem["type"].endswith("quota-exceeded") and problem["limit"] in ("cpu", "memory_mb")
    assert limited_user.get("/systems/small1").json()["machine"]["cpu"] == 1  # nothing changed
    assert (_usage(api)["cpu"], _usage(api)["memory_mb"]) == (1, 1024)
    # Within the quota a growth is charged, a shrink given back.
    assert limited_user.patch("/systems/small1", json={"machine": {"cpu": 4}}).status_code == 200
    assert _usage(api)["cpu"] == 4
    assert limited_user.patch("/systems/small1", json={"machine": {"cpu": 2, "memory": "512M"}}).status_code == 200
    assert (_usage(api)["cpu"], _usage(api)["memory_mb"]) == (2, 512)
    # A reload rebuilds what is charged, and destroying gives it all back.
    assert wait_job(api, act(limited_user, "small1", "destroy").json()["id"])["status"] == "succeeded"
    assert (_usage(api)["cpu"], _usage(api)["memory_mb"], _usage(api)["systems"]) == (0, 0, 0)


def test_a_system_without_a_machine_can_be_resized_freely(api: httpx.Client, limited_user: httpx.Client) -> None:
    body = {"hostname": "plan1", "environment": "dev", "hypervisor": "sim", "machine": {"cpu": 1}}
    assert limited_user.post("/systems", json=body).status_code == 201
    assert limited_user.patch("/systems/plan1", json={"machine": {"cpu": 64}}).status_code == 200
    response = act(limited_user, "plan1", "create")  # charged when a machine is asked for
    assert response.status_code == 403 and response.json()["limit"] == "cpu"


# ---------------------------------------------------------------- 10. racing retries with one Idempotency-Key


@pytest.mark.parametrize("trial", range(3))
def test_concurrent_retries_with_one_key_all_get_the_original_job(api: httpx.Client, admin_token: str,
                                                                  url: str, trial: int) -> None:
    sim_setup(api, systems=("s1",))
    answers: list[httpx.Response] = []
    gate = threading.Barrier(8)

    def retry() -> None:
        with httpx.Client(base_url=url, headers=bearer(admin_token), timeout=30) as client:
            gate.wait()
            answers.append(client.post("/systems/s1/actions", json={"action": "create"},
                                       headers={"Idempotency-Key": f"race-{trial}"}))

    threads = [threading.Thread(target=retry) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [a.status_code for a in answers] == [202] * 8, [a.text for a in answers if a.status_code != 202]
    assert len({a.json()["id"] for a in answers}) == 1
    wait_job(api, answers[0].json()["id"])


def test_a_user_may_not_point_a_system_at_addresses_of_their_choosing(api: httpx.Client,
                                                                        limited_user: httpx.Client) -> None:
    body = {"hostname": "own1", "environment": "dev", "hypervisor": "sim", "machine": {"addresses": ["127.0.0.9"]}}
    refused = limited_user.post("/systems", json=body)
    assert refused.status_code == 403 and refused.json()["errors"][0]["field"] == "machine.addresses"
    body["machine"] = {"cpu": 1}
    assert limited_user.post("/systems", json=body).status_code == 201
    patched = limited_user.patch("/systems/own1", json={"machine": {"addresses": ["127.0.0.9"]}})
    assert patched.status_code == 403, patched.text
    assert api.patch("/systems/own1", json={"machine": {"addresses": ["127.0.0.9"]}}).status_code == 200
    # Sending back what is there already is no change.
    assert limited_user.patch("/systems/own1", json={"machine": {"addresses": ["127.0.0.9"], "cpu": 2}}).status_code == 200
