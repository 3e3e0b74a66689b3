"""Notifications that must survive: a server killed (SIGKILL) between an event and its delivery delivers it
exactly once after a restart; e-mail deliveries reach a real SMTP server (aiosmtpd) on loopback."""

from __future__ import annotations

import time
from email import message_from_bytes, policy

import pytest

from tests.support.jobs import sim_setup, wait_job
from tests.support.subprocess_server import ServerProcess
from tests.support.webhook_receiver import running_receiver

FAST = {"ARMILLARY_NOTIFY_RETRY_BASE_S": "0.2", "ARMILLARY_NOTIFY_LEASE_S": "3"}


def test_a_server_killed_between_event_and_delivery_delivers_once_after_restart(tmp_path) -> None:
    with running_receiver() as receiver:
        receiver.answers = [503] * 1000  # the receiver is down: the delivery stays due, with backoff
        first = ServerProcess(tmp_path, env=FAST).start()
        try:
            with first.client() as api:
                sim_setup(api, systems=("web1", "web2"))
                for name in ("hook-a", "hook-b"):
                    made = api.post("/subscriptions", json={"name": name, "events": ["job.finished"],
                                                            "target": {"kind": "webhook", "url": receiver.url}})
                    assert made.status_code == 201, made.text
                jobs = [api.post(f"/systems/{host}/actions", json={"action": "stage"}).json()["id"]
                        for host in ("web1", "web2")]
                for job in jobs:
                    assert wait_job(api, job)["status"] == "succeeded"
                deadline = time.monotonic() + 20
                while len({r.headers["x-armillary-delivery"] for r in receiver.requests}) < 4:
                    assert time.monotonic() < deadline, receiver.requests
                    time.sleep(0.05)
        finally:
            first.kill()  # SIGKILL: events stored, deliveries due, nothing delivered
        assert receiver.accepted() == []
        receiver.answers = []  # the receiver is back
        second = ServerProcess(tmp_path, env=FAST).start()
        try:
            receiver.wait_for(4, timeout_s=30)
            time.sleep(1.5)  # a second copy, were one coming, would come by now
            counts = receiver.by_delivery()
            assert len(counts) == 4 and set(counts.values()) == {1}, counts
            payload_ids = sorted(r.json["id"] for r in receiver.accepted())
            assert payload_ids == sorted(counts)
            with second.client() as api:
                for name in ("hook-a", "hook-b"):
                    log = api.get(f"/subscriptions/{name}/deliveries").json()["items"]
                    assert sorted(d["status"] for d in log) == ["delivered", "delivered"]
                    for d in log:  # a try the kill cut short (sent, answered 503, not marked) has no row
                        assert d["log"][-1]["status_code"] == 200 and d["log"][-1]["outcome"] == "delivered", d
                        assert {(a["status_code"], a["outcome"]) for a in d["log"][:-1]} <= {(503, "retry")}, d
        finally:
            second.stop()


@pytest.fixture
def smtp_server():
    from aiosmtpd.controller import Controller
    from aiosmtpd.handlers import Message

    received: list = []

    class Keep(Message):
        def handle_message(self, message) -> None:
            received.append(message)

    from tests.support.server import free_port

    controller = Controller(Keep(message_class=None), hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        yield controller.port, received
    finally:
        controller.stop()


def test_e_mail_deliveries_reach_the_smtp_server(tmp_path, smtp_server) -> None:
    port, received = smtp_server
    server = ServerProcess(tmp_path, env={"ARMILLARY_SMTP_HOST": "127.0.0.1", "ARMILLARY_SMTP_PORT": str(port),
                                          "ARMILLARY_SMTP_FROM": "armillary@example.test", **FAST}).start()
    try:
        with server.client() as api:
            api.post("/environments", json={"name": "dev"})
            made = api.post("/subscriptions", json={"name": "mail-ops", "environment": "dev",
                                                    "target": {"kind": "email", "to": ["ops@example.test"]}})
            assert made.status_code == 201 and made.json()["secret"] is None, made.text
            sent = api.post("/subscriptions/mail-ops/test")
            assert sent.status_code == 202, sent.text
            deadline = time.monotonic() + 15
            while not received:
                assert time.monotonic() < deadline, "no mail arrived"
                time.sleep(0.05)
            mail = message_from_bytes(received[0].as_bytes(), policy=policy.default)
            assert mail["To"] == "ops@example.test" and mail["From"] == "armillary@example.test"
            assert "test notification of subscription mail-ops" in mail["Subject"]
            assert mail["X-Armillary-Delivery"] == sent.json()["idempotency_id"]
            deadline = time.monotonic() + 10
            while (log := api.get("/subscriptions/mail-ops/deliveries").json()["items"])[0]["status"] != "delivered":
                assert time.monotonic() < deadline, log
                time.sleep(0.1)
            assert log[0]["last_status_code"] == 250
    finally:
        server.stop()
