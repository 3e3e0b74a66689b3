"""Autoscaling end to end with a real Prometheus and Alertmanager: a gauge crosses a threshold, the
alert fires, Alertmanager posts its webhook to the cluster's receiver (secret as bearer token), the
cluster scales out; the cooldown answers 409 to the repeated alert; the resolution changes nothing."""

from __future__ import annotations

import time
from urllib.parse import urlsplit

import httpx
import pytest
from sqlalchemy import select

from armillary.domain.accounts import AuditEvent
from tests.support.clusters import Gauge, running_alertmanager
from tests.support.jobs import wait_job
from tests.support.prometheus import running_prometheus


def hook_answers(db, path: str) -> list[int]:
    with db.session() as session:
        return list(session.scalars(select(AuditEvent.status).where(AuditEvent.path == path)
                                    .order_by(AuditEvent.id)))


def wait_for(predicate, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.25)


# One backend is enough: the database side is covered by test_clusters on both.
pytestmark = pytest.mark.parametrize("backend", ["sqlite"], indirect=True)


def test_alert_scales_out_and_cooldown_holds_the_repeat(api: httpx.Client, live_server, tmp_path) -> None:
    db = live_server[1]
    assert api.post("/environments", json={"name": "dev"}).status_code == 201
    assert api.post("/hypervisors", json={"name": "sim", "environment": "dev", "driver": "simulated"}
                    ).status_code == 201
    assert api.post("/profiles", json={"name": "web", "environment": "dev", "hypervisor": "sim"}).status_code == 201
    assert wait_job(api, api.post("/clusters", json={"name": "web", "profile": "web", "desired": 1}
                                  ).json()["id"])["status"] == "succeeded"
    assert api.post("/policies", json={"name": "out", "kind": "scaling",
                                       "spec": {"direction": "out", "number": 2, "cooldown": 300}}).status_code == 201
    assert api.post("/clusters/web/policies", json={"policy": "out"}).status_code == 200
    receiver = api.post("/receivers", json={"name": "load", "cluster": "web", "operation": "scale_out",
                                            "rate_limit": 60}).json()
    hook_path = urlsplit(receiver["url"]).path

    gauge = Gauge()
    rules = tmp_path / "rules.yml"
    rules.write_text('{"groups": [{"name": "load", "interval": "1s", "rules": [{"alert": "HighLoad", '
                     '"expr": "demo_load > 5", "for": "0s"}]}]}', encoding="utf-8")
    am_config = {
        "route": {"receiver": "armillary", "group_by": ["alertname"], "group_wait": "1s",
                  "group_interval": "1s", "repeat_interval": "2s"},
        "receivers": [{"name": "armillary", "webhook_configs": [{
            "url": receiver["url"], "send_resolved": True, "max_alerts": 10,
            "http_config": {"authorization": {"type": "Bearer", "credentials": receiver["secret"]}}}]}],
    }
    try:
        with running_alertmanager(tmp_path, am_config) as am_url:
            prom_config = {
                "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
                "rule_files": [str(rules)],
                "alerting": {"alertmanagers": [{"static_configs": [{"targets": [urlsplit(am_url).netloc]}]}]},
                "scrape_configs": [{"job_name": "demo", "static_configs": [{"targets": [gauge.target]}]}],
            }
            with running_prometheus(tmp_path, prom_config, ("--rules.alert.resend-delay=1s",)):
                # A fixed pause, kept on purpose: two 1 s scrape/evaluation cycles of the quiet state. Waiting on
                # Prometheus' API for a scrape followed by a rule evaluation took ~15 s in a measured run.
                time.sleep(2)
                assert api.get("/clusters/web").json()["members"] == 1  # below the threshold: nothing
                gauge.value = 10
                wait_for(lambda: api.get("/clusters/web").json()["members"] == 3, 60, "the scale-out")
                assert api.get("/jobs", params={"limit": 20}).json()["items"][0]["actor"] == "receiver:load"
                # the alert keeps firing: Alertmanager repeats it, the cooldown answers 409 and nothing grows
                wait_for(lambda: 409 in hook_answers(db, hook_path), 30, "a repeated alert inside the cooldown")
                assert api.get("/clusters/web").json()["members"] == 3
                # resolution: the receiver has no on_resolve, so nothing happens (200, said so)
                gauge.value = 0
                wait_for(lambda: hook_answers(db, hook_path)[-1] == 200, 40, "the resolved notification")
                assert api.get("/clusters/web").json()["members"] == 3
    finally:
        gauge.close()
    assert hook_answers(db, hook_path).count(202) == 1
