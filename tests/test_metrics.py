"""GET /metrics and GET /api/v1/exports/prometheus-sd, through the live server (SQLite and PostgreSQL).

The metrics are the process's: every app of the test run records into the same counters, so a test
compares a scrape after its job with one before it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import timedelta

import httpx
import pytest
from prometheus_client import multiprocess
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import update

from armillary.domain.jobs import Step
from armillary.domain.models import utcnow
from tests.conftest import empty_database
from tests.support.accounts import ADMIN, bearer, ensure_user, grant, token_for
from tests.support.databases import database
from tests.support.jobs import act, act_and_wait, sim_setup
from tests.support.server import running_app

Samples = dict[tuple[str, frozenset], float]


def scrape(base_url: str, headers: dict[str, str] | None = None) -> Samples:
    response = httpx.get(f"{base_url}/metrics", headers=headers or {}, timeout=30)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return {(sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(response.text) for sample in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def grew(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


# ---------------------------------------------------------------- what a job records


def test_a_create_job_on_the_simulated_driver_shows_in_the_metrics(api: httpx.Client, base_url: str) -> None:
    sim_setup(api, config={"latency_ms": 30})
    before = scrape(base_url)
    job = act_and_wait(api, "s1", "create")
    assert job["status"] == "succeeded"
    after = scrape(base_url)

    assert grew(before, after, "armillary_jobs_started_total", workflow="create") == 1
    assert grew(before, after, "armillary_jobs_finished_total", workflow="create", status="succeeded") == 1
    for step in ("prepare", "create_machine"):
        assert grew(before, after, "armillary_steps_total", workflow="create", step=step, status="succeeded") == 1
        assert grew(before, after, "armillary_step_duration_seconds_count", workflow="create", step=step) == 1
    # The driver's create, timed: the simulated driver sleeps latency_ms in every call.
    assert grew(before, after, "armillary_driver_call_duration_seconds_count", driver="simulated",
                operation="create") == 1
    assert grew(before, after, "armillary_driver_call_duration_seconds_sum", driver="simulated",
                operation="create") >= 0.03
    assert grew(before, after, "armillary_driver_call_errors_total", driver="simulated", operation="create") == 0
    # API latency by route template and status: the action's route, never the raw path of system s1.
    assert grew(before, after, "armillary_http_request_duration_seconds_count", method="POST",
                route="/api/v1/systems/{ref}/actions", status="202") == 1
    assert not [key for key in after if "/api/v1/systems/s1/actions" in dict(key[1]).values()]
    # Nothing left waiting once the job is done; the pool gauge is there.
    assert value(after, "armillary_queued_steps") == 0
    assert value(after, "armillary_oldest_queued_step_age_seconds") == 0
    assert ("armillary_db_pool_checked_out_connections", frozenset()) in after


def test_a_failing_driver_call_is_counted_as_an_error_and_a_failed_job(api: httpx.Client, base_url: str) -> None:
    sim_setup(api, config={"fail_at": ["create"]})
    before = scrape(base_url)
    assert act_and_wait(api, "s1", "create")["status"] == "failed"
    after = scrape(base_url)
    assert grew(before, after, "armillary_driver_call_errors_total", driver="simulated", operation="create") == 1
    assert grew(before, after, "armillary_driver_call_duration_seconds_count", driver="simulated",
                operation="create") == 1
    assert grew(before, after, "armillary_steps_total", workflow="create", step="create_machine",
                status="failed") == 1
    assert grew(before, after, "armillary_jobs_finished_total", workflow="create", status="failed") == 1


# ---------------------------------------------------------------- the token


def test_the_metrics_token_is_required_when_set(api: httpx.Client, base_url: str, server_settings) -> None:
    assert httpx.get(f"{base_url}/metrics").status_code == 200  # unset: open
    server_settings(metrics_token="metrics-token-1f3a")
    refused = httpx.get(f"{base_url}/metrics")
    assert refused.status_code == 401
    assert refused.headers["www-authenticate"].lower().startswith("bearer")
    assert httpx.get(f"{base_url}/metrics", headers=bearer("wrong")).status_code == 401
    assert httpx.get(f"{base_url}/metrics", headers=api.headers).status_code == 401  # an API token is not it
    assert "armillary_queued_steps" in {name for name, _ in scrape(base_url, bearer("metrics-token-1f3a"))}


# ---------------------------------------------------------------- the queue gauges


@pytest.fixture(scope="module")
def idle_app(backend: str, tmp_path_factory) -> Iterator[tuple[str, object, str]]:
    """A server whose job engine is off: its jobs stay queued."""
    data_dir = tmp_path_factory.mktemp(f"idle-{backend}")
    with database(backend, data_dir) as url, running_app(url, data_dir, engine="off") as (base_url, db):
        ensure_user(db, ADMIN, admin=True)
        yield base_url, db, token_for(db, ADMIN)


@pytest.fixture
def idle_server(idle_app) -> tuple[str, object, str]:
    """``idle_app`` emptied, with systems q1 and q2 on a simulated hypervisor."""
    base_url, db, token = idle_app
    empty_database(db)
    with httpx.Client(base_url=base_url + "/api/v1", headers=bearer(token), timeout=30) as api:
        sim_setup(api, systems=("q1", "q2"))
    return idle_app


def test_queue_depth_and_the_oldest_due_steps_wait(idle_server) -> None:
    base_url, db, token = idle_server
    with httpx.Client(base_url=base_url + "/api/v1", headers=bearer(token), timeout=30) as api:
        assert act(api, "q1", "create").status_code == 202
        time.sleep(0.5)
        samples = scrape(base_url)
        assert value(samples, "armillary_queued_steps") == 1  # the job's first step; the next is pending
        assert 0.5 <= value(samples, "armillary_oldest_queued_step_age_seconds") < 30
        # A step waiting for its retry time is queued, but not late.
        with db.engine.begin() as conn:
            conn.execute(update(Step).values(next_attempt_at=utcnow() + timedelta(days=1)))
        posted = time.monotonic()
        assert act(api, "q2", "create").status_code == 202
        samples = scrape(base_url)
        waited = time.monotonic() - posted
        assert value(samples, "armillary_queued_steps") == 2
        # only q2's first step is due: no older than q2 itself (q1's is over 0.5 s older)
        assert value(samples, "armillary_oldest_queued_step_age_seconds") <= waited + 0.05


def test_an_sse_follower_is_counted_while_it_reads(idle_server) -> None:
    base_url, _, token = idle_server
    with httpx.Client(base_url=base_url + "/api/v1", headers=bearer(token), timeout=30) as api:
        job = act(api, "q1", "create").json()  # stays queued: the stream stays open until the client leaves
    _follow(base_url, token, job["id"])


def _follow(base_url: str, token: str, job_id: int) -> None:
    """The gauge counts one more follower while a client reads the job's stream, and not once it left."""
    followers = value(scrape(base_url), "armillary_sse_followers")
    url = f"{base_url}/api/v1/jobs/{job_id}/events"
    with httpx.stream("GET", url, headers={"Accept": "text/event-stream", **bearer(token)}, timeout=30) as stream:
        lines = stream.iter_lines()  # kept: a dropped iterator closes the connection
        next(lines)  # the stream has started
        assert value(scrape(base_url), "armillary_sse_followers") == followers + 1
    deadline = time.monotonic() + 5
    while value(scrape(base_url), "armillary_sse_followers") != followers:
        assert time.monotonic() < deadline, "the follower was still counted after it went away"
        time.sleep(0.05)


# ---------------------------------------------------------------- service discovery


def _sd_world(api: httpx.Client) -> None:
    """dev: port 9100 from the environment; prod: none, but its type says 9200 and one system 9300."""
    assert api.post("/environments", json={"name": "dev", "variables": {"prometheus_port": 9100}}).status_code == 201
    assert api.post("/environments", json={"name": "prod"}).status_code == 201
    assert api.post("/types", json={"name": "db", "variables": {"prometheus_port": "9200"}}).status_code == 201
    systems = [
        {"hostname": "web1", "environment": "dev", "machine": {"addresses": ["10.0.0.5", "10.0.0.6"]},
         "labels": {"team": "a", "app.kubernetes/tier": "front"}},
        {"hostname": "web2.example.org", "environment": "dev", "labels": {"team": "b"}},
        {"hostname": "db1", "environment": "prod", "type": "db", "machine": {"addresses": ["2001:db8::7"]}},
        {"hostname": "db2", "environment": "prod", "type": "db", "variables": {"prometheus_port": 9300}},
        {"hostname": "bare", "environment": "prod", "variables": {"other_port": 8080}},
    ]
    for system in systems:
        made = api.post("/systems", json=system)
        assert made.status_code == 201, made.text


def sd(api: httpx.Client, **params) -> dict[str, dict]:
    response = api.get("/exports/prometheus-sd", params=params)
    assert response.status_code == 200, response.text
    groups = response.json()
    assert all(len(group["targets"]) == 1 for group in groups)
    return {group["labels"]["__meta_armillary_hostname"]: group for group in groups}


def test_prometheus_sd_lists_systems_with_their_port_as_targets(api: httpx.Client) -> None:
    _sd_world(api)
    found = sd(api)
    assert {name: group["targets"][0] for name, group in found.items()} == {
        "web1": "10.0.0.5:9100",  # first address, port from the environment
        "web2.example.org": "web2.example.org:9100",  # no address: the hostname
        "db1": "[2001:db8::7]:9200",  # port from the type
        "db2": "db2:9300",  # the system's own value wins
    }  # "bare" has no prometheus_port: left out
    labels = found["web1"]["labels"]
    assert labels["__meta_armillary_environment"] == "dev"
    assert labels["__meta_armillary_state"] == "defined"
    assert labels["__meta_armillary_label_team"] == "a"
    assert labels["__meta_armillary_label_app_kubernetes_tier"] == "front"
    assert labels["__meta_armillary_system_id"].isdigit()
    assert found["db1"]["labels"]["__meta_armillary_type"] == "db"
    assert "__meta_armillary_type" not in labels

    assert sd(api, port=9999)["bare"]["targets"] == ["bare:9999"]  # a default port for the others
    assert sd(api, port=9999)["web1"]["targets"] == ["10.0.0.5:9100"]
    assert {n: g["targets"][0] for n, g in sd(api, port_variable="other_port").items()} == {"bare": "bare:8080"}


def test_prometheus_sd_filters(api: httpx.Client) -> None:
    _sd_world(api)
    assert set(sd(api, environment="prod")) == {"db1", "db2"}
    assert set(sd(api, type="db", port=1)) == {"db1", "db2"}
    assert set(sd(api, label="team=a")) == {"web1"}
    assert set(sd(api, label=["team=a", "app.kubernetes/tier=front"])) == {"web1"}
    assert sd(api, label=["team=b", "app.kubernetes/tier=front"]) == {}
    assert set(sd(api, state="defined")) == {"web1", "web2.example.org", "db1", "db2"}
    assert sd(api, state="ready") == {}
    assert api.get("/exports/prometheus-sd", params={"environment": "nowhere"}).status_code == 404
    assert api.get("/exports/prometheus-sd", params={"label": "team"}).status_code == 422
    assert api.get("/exports/prometheus-sd", params={"type": "nothing"}).status_code == 404


def test_prometheus_sd_shows_only_what_the_caller_can_see(api: httpx.Client, live_server) -> None:
    _sd_world(api)
    db = live_server[1]
    ensure_user(db, "sd-viewer")
    grant(db, "sd-viewer", "dev", "viewer")
    viewer = api.get("/exports/prometheus-sd", headers=bearer(token_for(db, "sd-viewer"))).json()
    assert {group["labels"]["__meta_armillary_hostname"] for group in viewer} == {"web1", "web2.example.org"}


# ---------------------------------------------------------------- several processes


def test_multiprocess_mode_merges_the_values_of_every_process(tmp_path) -> None:
    """With PROMETHEUS_MULTIPROC_DIR (as ``armillary serve --workers N`` sets it), a scrape of one process
    reports what every process recorded."""
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    record = ("import os; from armillary import metrics; metrics.JOBS_STARTED.labels('create').inc(); "
              "metrics.SSE_FOLLOWERS.inc(); print(os.getpid())")
    pids = [int(subprocess.run([sys.executable, "-c", record], env=env, check=True, timeout=60,
                               capture_output=True, text=True).stdout) for _ in range(2)]
    multiprocess.mark_process_dead(pids[0], str(tmp_path))  # what the server does when a worker exits
    scrape_one = ("from prometheus_client import generate_latest; from armillary import metrics; "
                  "print(generate_latest(metrics.Exposition()).decode())")
    text = subprocess.run([sys.executable, "-c", scrape_one], env=env, check=True, timeout=60, capture_output=True,
                          text=True).stdout
    samples = {(s.name, frozenset(s.labels.items())): s.value
               for family in text_string_to_metric_families(text) for s in family.samples}
    assert value(samples, "armillary_jobs_started_total", workflow="create") == 2  # counters outlive workers
    assert value(samples, "armillary_sse_followers") == 1  # live gauges: a worker marked dead no longer counts
