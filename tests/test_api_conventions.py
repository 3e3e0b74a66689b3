"""Conventions every endpoint follows: request ids, problem+json errors, OpenAPI, docs, probes, YAML bodies."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn

from armillary.api.app import create_app
from armillary.config import Settings
from armillary.domain.db import Database
from armillary.domain.migrate import head_revision
from tests.support.server import free_port

GENERATED_ID = re.compile(r"^[0-9a-f]{32}$")


def problem(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["status"] == status and body["type"].startswith("urn:armillary:problem:")
    assert body["title"] and isinstance(body["detail"], str)
    return body


# ---------------------------------------------------------------- request ids


def test_request_id_is_echoed_when_given(api: httpx.Client) -> None:
    response = api.get("/environments", headers={"X-Request-ID": "req-42.abc:1"})
    assert response.status_code == 200
    assert response.headers["x-request-id"] == "req-42.abc:1"


def test_request_id_is_generated_when_absent(api: httpx.Client) -> None:
    first = api.get("/environments").headers["x-request-id"]
    second = api.get("/environments").headers["x-request-id"]
    assert GENERATED_ID.match(first) and GENERATED_ID.match(second)
    assert first != second


@pytest.mark.parametrize("given", ["has space", "x" * 129, "<script>", ""])
def test_unusable_request_id_is_replaced(api: httpx.Client, given: str) -> None:
    response = api.get("/environments", headers={"X-Request-ID": given})
    assert GENERATED_ID.match(response.headers["x-request-id"])


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status"),
    [
        ("GET", "/systems/nope", {}, 404),
        ("GET", "/no/such/path", {}, 404),
        ("DELETE", "/variables", {}, 405),
        ("POST", "/environments", {"json": {"name": "9lives"}}, 422),
        (
            "POST",
            "/environments",
            {"content": b'{"name": ', "headers": {"content-type": "application/json"}},
            400,
        ),
        ("GET", "/systems", {"params": {"limit": 5000}}, 422),
    ],
)
def test_error_responses_carry_the_request_id_in_header_and_body(
    api: httpx.Client, method: str, path: str, kwargs: dict, status: int
) -> None:
    kwargs = dict(kwargs)  # parameters are shared between the backends' runs
    headers = {**kwargs.pop("headers", {}), "X-Request-ID": "trace-me-1"}
    response = api.request(method, path, headers=headers, **kwargs)
    body = problem(response, status)
    assert response.headers["x-request-id"] == "trace-me-1"
    assert body["request_id"] == "trace-me-1"
    # Without one given, the generated id is in both places too.
    response = api.request(method, path, headers=headers | {"X-Request-ID": ""}, **kwargs)
    assert GENERATED_ID.match(response.headers["x-request-id"])
    assert problem(response, status)["request_id"] == response.headers["x-request-id"]


def test_malformed_yaml_problem_carries_the_request_id(api: httpx.Client) -> None:
    response = api.post(
        "/environments",
        content=b"name: [",
        headers={"content-type": "application/yaml", "X-Request-ID": "trace-yaml"},
    )
    body = problem(response, 400)
    assert response.headers["x-request-id"] == "trace-yaml"
    assert body["request_id"] == "trace-yaml"


@pytest.fixture(scope="module")
def failing_server(tmp_path_factory) -> Iterator[str]:
    """The real app plus one route that raises, to see what an unexpected error looks like over HTTP."""
    data_dir: Path = tmp_path_factory.mktemp("failing")
    url = f"sqlite:///{data_dir / 'armillary.db'}"
    db = Database(url)
    app = create_app(Settings(data_dir=data_dir, database_url=url, secret_key="test-secret-key"), db)

    @app.get("/api/v1/_test/boom", include_in_schema=False)
    def boom() -> None:
        raise RuntimeError("boom: secret detail that must not leak")

    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, access_log=False)
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "test server did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def test_unexpected_error_is_a_500_problem_that_leaks_nothing(failing_server: str) -> None:
    response = httpx.get(f"{failing_server}/api/v1/_test/boom", timeout=30)
    body = problem(response, 500)
    assert body["type"] == "urn:armillary:problem:internal-error"
    assert "secret detail" not in response.text and "Traceback" not in response.text
    assert GENERATED_ID.match(body["request_id"])


def test_unexpected_error_carries_the_request_id_header(failing_server: str) -> None:
    response = httpx.get(
        f"{failing_server}/api/v1/_test/boom", headers={"X-Request-ID": "trace-500"}, timeout=30
    )
    body = problem(response, 500)
    assert body["request_id"] == "trace-500"
    assert response.headers.get("x-request-id") == "trace-500"


# ---------------------------------------------------------------- OpenAPI, docs, probes


def test_openapi_document_is_3_1_and_lists_the_paths(base_url: str) -> None:
    response = httpx.get(f"{base_url}/api/v1/openapi.json", timeout=30)
    assert response.status_code == 200 and response.headers["content-type"].startswith("application/json")
    document = response.json()
    assert document["openapi"].startswith("3.1.")
    assert document["info"]["title"] == "Armillary"
    expected = {
        "/api/v1/environments": {"get", "post"},
        "/api/v1/environments/{ref}": {"get", "patch", "delete"},
        "/api/v1/hypervisors": {"get", "post"},
        "/api/v1/hypervisors/{ref}": {"get", "patch", "delete"},
        "/api/v1/types": {"get", "post"},
        "/api/v1/types/{ref}": {"get", "patch", "delete"},
        "/api/v1/systems": {"get", "post"},
        "/api/v1/systems/import": {"post"},
        "/api/v1/systems/{ref}": {"get", "patch", "delete"},
        "/api/v1/systems/{ref}/variables": {"get"},
        "/api/v1/groups": {"get", "post"},
        "/api/v1/groups/{ref}": {"get", "patch", "delete"},
        "/api/v1/groups/{ref}/systems": {"get"},
        "/api/v1/variables": {"get", "put", "patch"},
        "/api/v1/labels": {"get"},
        "/api/v1/drivers": {"get"},
    }
    for path, methods in expected.items():
        assert path in document["paths"], path
        assert methods <= set(document["paths"][path]), (path, set(document["paths"][path]))
    assert "SystemOut" in document["components"]["schemas"]


def test_docs_serve_swagger_ui(base_url: str) -> None:
    response = httpx.get(f"{base_url}/docs", timeout=30)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    assert "swagger-ui" in response.text and "/api/v1/openapi.json" in response.text
    root = httpx.get(f"{base_url}/", timeout=30)
    assert root.status_code in (302, 307) and root.headers["location"] == "/docs"


def test_healthz(base_url: str) -> None:
    response = httpx.get(f"{base_url}/healthz", timeout=30)
    assert response.status_code == 200 and response.json()["status"] == "ok"
    assert GENERATED_ID.match(response.headers["x-request-id"])


def test_readyz_reports_the_schema_revision(base_url: str) -> None:
    response = httpx.get(f"{base_url}/readyz", timeout=30)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "ok" and body["database"] == "ok"
    assert body["schema"] == head_revision() and body["schema"]


# ---------------------------------------------------------------- errors as problem+json


def test_unknown_path_is_a_404_problem(api: httpx.Client, base_url: str) -> None:
    body = problem(api.get("/no/such/thing"), 404)
    assert body["type"] == "urn:armillary:problem:not-found"
    assert body["instance"] == "/api/v1/no/such/thing"
    problem(httpx.get(f"{base_url}/nothing-here", timeout=30), 404)


def test_wrong_method_is_a_405_problem(api: httpx.Client) -> None:
    response = api.delete("/variables")
    body = problem(response, 405)
    assert body["type"] == "urn:armillary:problem:method-not-allowed"
    assert set(response.headers["allow"].replace(" ", "").split(",")) >= {"GET"}
    problem(api.put("/systems"), 405)


def test_malformed_json_is_a_400_problem_and_changes_nothing(api: httpx.Client) -> None:
    for content in (b'{"name": ', b"{name: dev}", b"\xff\xfe"):
        body = problem(
            api.post("/environments", content=content, headers={"content-type": "application/json"}), 400
        )
        assert body["type"] == "urn:armillary:problem:malformed-body"
    assert api.get("/environments").json()["items"] == []


def test_validation_problem_lists_each_bad_field(api: httpx.Client) -> None:
    body = problem(
        api.post("/environments", json={"name": "9lives", "colour": "red", "locked": "maybe"}), 422
    )
    assert body["type"] == "urn:armillary:problem:validation-error"
    assert {e["field"] for e in body["errors"]} == {"name", "colour", "locked"}
    assert all(e["message"] for e in body["errors"])
    assert "colour: unknown field" in body["detail"]


def test_yaml_body_is_accepted(api: httpx.Client) -> None:
    for index, content_type in enumerate(
        ("application/yaml", "application/x-yaml", "text/yaml; charset=utf-8")
    ):
        name = f"env{index}"
        created = api.post(
            "/environments",
            content=f"name: {name}\nvariables: {{a: [1, 2]}}\n",
            headers={"content-type": content_type},
        )
        assert created.status_code == 201, created.text
        assert created.json()["name"] == name and created.json()["variables"] == {"a": [1, 2]}
    # YAML is parsed safely: a Python tag is refused, not executed.
    body = problem(
        api.post(
            "/environments",
            content=b"name: !!python/object/apply:os.getcwd []\n",
            headers={"content-type": "application/yaml"},
        ),
        400,
    )
    assert body["type"] == "urn:armillary:problem:malformed-body"
    # PATCH takes YAML too.
    patched = api.patch(
        f"/environments/{name}",
        content=b"description: from yaml\n",
        headers={"content-type": "application/yaml"},
    )
    assert patched.status_code == 200 and patched.json()["description"] == "from yaml"
