"""Traces from a real server process to a real OTLP/HTTP receiver on loopback.

The receiver decodes each export as the collector would (``ExportTraceServiceRequest``, from
opentelemetry-proto, which the exporter depends on). A request with a ``traceparent`` must continue
that trace and answer with the server span's own ``traceparent``; a create job on the simulated
driver must give spans for its steps and the driver call; without ``OTEL_EXPORTER_OTLP_ENDPOINT``
nothing is sent.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

pytest.importorskip("opentelemetry.sdk", reason="the otel extra (opentelemetry-sdk) is not installed")
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from tests.support.jobs import act_and_wait, sim_setup
from tests.support.subprocess_server import ServerProcess

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"


class Receiver:
    """A minimal OTLP/HTTP trace endpoint: every span it is sent, with its resource's attributes."""

    def __init__(self, port: int = 0) -> None:
        self.spans: list[dict] = []
        self.posts = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.take(self.path, body)
                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def take(self, path: str, body: bytes) -> None:
        assert path == "/v1/traces"
        self.posts += 1
        request = ExportTraceServiceRequest.FromString(body)
        for resource_spans in request.resource_spans:
            resource = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    self.spans.append({
                        "name": span.name, "trace_id": span.trace_id.hex(), "span_id": span.span_id.hex(),
                        "parent_span_id": span.parent_span_id.hex(), "service": resource.get("service.name"),
                        "attributes": {a.key: _value(a.value) for a in span.attributes},
                    })

    def wait_for(self, predicate, timeout_s: float = 20) -> list[dict]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            found = [s for s in list(self.spans) if predicate(s)]
            if found:
                return found
            time.sleep(0.1)
        raise AssertionError(f"no such span among {[s['name'] for s in self.spans]}")


def _value(value) -> object:
    return getattr(value, value.WhichOneof("value")) if value.WhichOneof("value") else None


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    receiver = Receiver()
    yield receiver
    receiver.server.shutdown()
    receiver.server.server_close()


def test_request_job_steps_and_driver_calls_are_exported(receiver: Receiver, tmp_path) -> None:
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url, "OTEL_BSP_SCHEDULE_DELAY": "100"}
    server = ServerProcess(tmp_path / "data", env).start()
    try:
        with server.client() as api:
            sim_setup(api)
            sent = f"00-{TRACE_ID}-{PARENT_ID}-01"
            answer = api.get("/systems/s1", headers={"traceparent": sent, "X-Request-ID": "traced-1"})
            assert answer.status_code == 200
            _version, trace_id, span_id, _flags = answer.headers["traceparent"].split("-")
            assert trace_id == TRACE_ID and span_id != PARENT_ID  # the server's span, in the caller's trace
            job = act_and_wait(api, "s1", "create")
            assert job["status"] == "succeeded", job

        request = receiver.wait_for(lambda s: s["attributes"].get("armillary.request_id") == "traced-1"
                                    and s["attributes"].get("http.route") is not None)[0]
        assert request["name"] == "GET /api/v1/systems/{ref}"
        assert request["attributes"]["http.route"] == "/api/v1/systems/{ref}"
        assert request["trace_id"] == TRACE_ID and request["parent_span_id"] == PARENT_ID
        assert request["span_id"] == span_id and request["service"] == "armillary"
        assert request["attributes"]["http.request.method"] == "GET"
        assert request["attributes"]["http.response.status_code"] == 200

        for step in job["steps"]:  # one span per step (batches may bring them apart)
            receiver.wait_for(lambda s, name=step["name"]: s["attributes"].get("armillary.job.id") == job["id"]
                              and s["attributes"].get("armillary.step.name") == name)
        steps = [s for s in receiver.spans if s["attributes"].get("armillary.job.id") == job["id"]]
        assert sorted(s["attributes"]["armillary.step.name"] for s in steps) == sorted(x["name"] for x in job["steps"])
        create = next(s for s in steps if s["attributes"]["armillary.step.name"] == "create_machine")
        assert create["attributes"]["armillary.workflow"] == job["workflow"]
        assert create["attributes"]["armillary.step.attempt"] == 1
        assert create["attributes"]["armillary.step.outcome"] == "succeeded"

        driver = receiver.wait_for(lambda s: s["trace_id"] == create["trace_id"]
                                   and s["attributes"].get("armillary.driver.operation") == "create")[0]
        assert driver["attributes"]["armillary.driver"] == "simulated"
        assert driver["parent_span_id"] == create["span_id"]  # inside the step, in the step's own thread
    finally:
        server.stop()


def test_nothing_is_exported_without_an_endpoint(tmp_path) -> None:
    # A receiver where the exporter would send by default (localhost:4318), when that port is free.
    try:
        default = Receiver(port=4318)
    except OSError:
        default = None
    server = ServerProcess(tmp_path / "data", {"OTEL_BSP_SCHEDULE_DELAY": "100"}).start()
    try:
        with server.client() as api:
            sim_setup(api)
            answer = api.get("/systems/s1", headers={"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01"})
            assert answer.status_code == 200
            assert "traceparent" not in answer.headers  # no span was made to name
            assert act_and_wait(api, "s1", "create")["status"] == "succeeded"
        time.sleep(1)  # ten times the batch delay a configured exporter would wait
    finally:
        server.stop()
        if default is not None:
            default.server.shutdown()
            default.server.server_close()
    assert default is None or default.posts == 0
