"""A real Prometheus scrapes /metrics with its bearer token and discovers systems through the SD endpoint.

What an operator relies on: the exposition parses for Prometheus, the token setup works, and
``http_sd_configs`` pointed at /api/v1/exports/prometheus-sd turns systems into scrape targets.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from urllib.parse import urlsplit

import httpx

from tests.support.jobs import act_and_wait, sim_setup
from tests.support.prometheus import config, running_prometheus

METRICS_TOKEN = "prometheus-scrape-token-7d21"
DEADLINE_S = 20  # discovery reaches the scrape loop every 5 s at most (Prometheus's own pacing)


def eventually(probe: Callable[[], object], what: str) -> object:
    deadline = time.monotonic() + DEADLINE_S
    while True:
        found = probe()
        if found:
            return found
        assert time.monotonic() < deadline, f"Prometheus did not show {what} within {DEADLINE_S}s"
        time.sleep(0.25)


def query(prometheus: str, promql: str) -> list[dict]:
    answer = httpx.get(f"{prometheus}/api/v1/query", params={"query": promql}, timeout=5).json()
    assert answer["status"] == "success", answer
    return answer["data"]["result"]


def test_prometheus_scrapes_metrics_and_discovers_systems(api: httpx.Client, base_url: str, admin_token: str,
                                                           server_settings, tmp_path) -> None:
    server_settings(metrics_token=METRICS_TOKEN)
    sim_setup(api, systems=("s1",))
    assert act_and_wait(api, "s1", "create")["status"] == "succeeded"
    # Two systems to discover: "self" is this very server (its /metrics answers), "ghost" answers nothing.
    server = urlsplit(base_url)
    for hostname, address, port in (("self", server.hostname, server.port), ("ghost", "127.0.0.1", 9)):
        made = api.post("/systems", json={"hostname": hostname, "environment": "dev",
                                          "machine": {"addresses": [address]},
                                          "variables": {"prometheus_port": port}, "labels": {"scrape": "yes"}})
        assert made.status_code == 201, made.text
    sd_url = f"{base_url}/api/v1/exports/prometheus-sd?label=scrape=yes"

    with running_prometheus(tmp_path, config(base_url, METRICS_TOKEN, sd_url, admin_token)) as prometheus:
        # Scraped with the token: the job counters are there, with their labels.
        started = eventually(lambda: query(prometheus, 'armillary_jobs_started_total{job="armillary",workflow="create"}'),
                             "armillary_jobs_started_total")
        assert float(started[0]["value"][1]) >= 1
        assert eventually(lambda: query(prometheus, 'armillary_driver_call_duration_seconds_count'
                                                    '{driver="simulated",operation="create"}'), "driver latency")

        def discovered() -> dict[str, dict]:
            targets = httpx.get(f"{prometheus}/api/v1/targets", timeout=5).json()["data"]["activeTargets"]
            return {t["labels"].get("hostname"): t for t in targets if t["labels"]["job"] == "armillary-sd"}

        def both() -> dict[str, dict] | None:
            found = discovered()
            return found if set(found) == {"self", "ghost"} else None

        targets = eventually(both, "the two systems as targets")
        assert targets["self"]["scrapeUrl"] == f"http://{server.hostname}:{server.port}/metrics"
        assert targets["self"]["labels"]["environment"] == "dev"
        assert targets["self"]["discoveredLabels"]["__meta_armillary_label_scrape"] == "yes"
        # The discovered server is scraped like any target: up, with the token of the job.
        assert eventually(lambda: [r for r in query(prometheus, 'up{job="armillary-sd",hostname="self"}')
                                   if r["value"][1] == "1"], "the discovered server up")
        assert [r["value"][1] for r in query(prometheus, 'up{job="armillary-sd",hostname="ghost"}')] in ([], ["0"])
