"""Notifications over the API on both backends: signed webhooks from real jobs, retries, the delivery log."""

from __future__ import annotations

import time

import pytest

from armillary.domain.models import utcnow
from armillary.notify.webhook import verify
from tests.support.jobs import act_and_wait, sim_setup
from tests.support.webhook_receiver import Receiver, running_receiver


@pytest.fixture
def receiver():
    with running_receiver() as r:
        yield r


def subscribe(api, name: str, url: str, **filters) -> dict:
    made = api.post("/subscriptions", json={"name": name, "target": {"kind": "webhook", "url": url}, **filters})
    assert made.status_code == 201, made.text
    return made.json()


def deliveries(api, sub: str, done: int, timeout_s: float = 20.0) -> list[dict]:
    """The subscription's deliveries once ``done`` of them are delivered or failed."""
    deadline = time.monotonic() + timeout_s
    while True:
        items = api.get(f"/subscriptions/{sub}/deliveries").json()["items"]
        if sum(d["status"] in ("delivered", "failed") for d in items) >= done:
            return items
        assert time.monotonic() < deadline, items
        time.sleep(0.1)


def test_a_stage_job_is_delivered_once_to_each_matching_subscription_signed(api, receiver: Receiver) -> None:
    sim_setup(api, systems=("web1",), labels={"service": "web"})
    hit = subscribe(api, "ops-web", f"{receiver.url}/a", environment="dev", events=["job.finished"],
                    labels={"service": "web"}, actions=["stage"])
    also = subscribe(api, "ops-all", f"{receiver.url}/b", statuses=["succeeded"])
    subscribe(api, "ops-failed", f"{receiver.url}/c", events=["job.failed"])  # the job succeeds: no match
    subscribe(api, "ops-db", f"{receiver.url}/d", labels={"service": "db"})  # other labels: no match
    assert "secret" in hit and hit["secret"] and api.get("/subscriptions/ops-web").json()["secret"] is None

    job = act_and_wait(api, "web1", "stage")
    assert job["status"] == "succeeded"
    seen = receiver.wait_for(2)
    time.sleep(0.5)  # anything else would have come by now
    assert sorted(r.path for r in receiver.accepted()) == ["/a", "/b"]
    for request, sub in ((r, hit if r.path == "/a" else also) for r in seen):
        assert verify(sub["secret"], request.body, request.headers["x-armillary-signature"])
        body = request.json
        assert body["id"] == request.headers["x-armillary-delivery"]
        assert body["event"] == "job.finished"
        assert body["data"]["job_id"] == job["id"] and body["data"]["action"] == "stage"
        assert body["data"]["status"] == "succeeded" and body["data"]["environment"] == "dev"
        assert body["data"]["labels"] == {"service": "web"}
        assert body["data"]["summary"]["hosts"] == {"web1": "succeeded"}
        assert "web1 ✔" in body["text"]
    assert not verify("not-the-secret-at-all", seen[0].body, seen[0].headers["x-armillary-signature"])
    log = deliveries(api, "ops-web", 1)
    assert [(d["status"], d["attempts"], d["last_status_code"]) for d in log] == [("delivered", 1, 200)]
    assert log[0]["latency_ms"] is not None
    assert api.get("/subscriptions/ops-failed/deliveries").json()["items"] == []


def test_a_500_is_retried_and_logged_with_both_codes(api, receiver: Receiver) -> None:
    api.post("/environments", json={"name": "dev"})
    made = api.post("/subscriptions", json={"name": "flaky", "environment": "dev",
                                            "target": {"kind": "webhook", "url": receiver.url, "format": "slack"}})
    assert made.status_code == 201, made.text
    receiver.answers = [500]
    sent = api.post("/subscriptions/flaky/test")
    assert sent.status_code == 202, sent.text
    receiver.wait_for(1, timeout_s=15)
    log = deliveries(api, "flaky", 1)
    assert len(log) == 1 and log[0]["status"] == "delivered" and log[0]["attempts"] == 2
    assert [(a["status_code"], a["outcome"]) for a in log[0]["log"]] == [(500, "retry"), (200, "delivered")]
    assert len(receiver.requests) == 2
    slack = receiver.accepted()[0].json
    assert slack["text"].startswith("🔔 test notification") and slack["armillary"]["event"] == "test"


def test_a_4xx_fails_at_once_and_the_secret_is_write_only_and_rotatable(api, receiver: Receiver) -> None:
    api.post("/environments", json={"name": "dev"})
    made = subscribe(api, "gone", receiver.url, environment="dev", secret="a-secret-of-our-own-choosing")
    assert made["secret"] == "a-secret-of-our-own-choosing"
    receiver.answers = [410]
    api.post("/subscriptions/gone/test")
    log = deliveries(api, "gone", 1)
    assert (log[0]["status"], log[0]["attempts"], log[0]["last_status_code"]) == ("failed", 1, 410)
    listed = api.get("/subscriptions").json()["items"]
    assert all(s["secret"] is None for s in listed) and listed[0]["has_secret"]
    rotated = api.post("/subscriptions/gone/rotate").json()["secret"]
    assert rotated and rotated != made["secret"]
    api.post("/subscriptions/gone/test")
    seen = receiver.wait_for(1)
    assert verify(rotated, seen[-1].body, seen[-1].headers["x-armillary-signature"])
    trail = api.get("/audit", params={"limit": 50}).text
    assert made["secret"] not in trail and rotated not in trail


def test_subscriptions_are_validated(api) -> None:
    api.post("/environments", json={"name": "dev"})
    bad = [{"name": "x", "target": {"kind": "webhook", "url": "ftp://nope"}},
           {"name": "x", "target": {"kind": "email", "to": []}},
           {"name": "x", "target": {"kind": "chat", "connection": "irc", "room": "#ops"}, "secret": "s" * 20},
           {"name": "x", "events": ["job.exploded"], "target": {"kind": "webhook", "url": "http://h/"}}]
    for body in bad:
        assert api.post("/subscriptions", json=body).status_code == 422, body
    assert api.post("/subscriptions", json={"name": "x", "environment": "nope",
                                            "target": {"kind": "webhook", "url": "http://h/"}}).status_code == 422


def test_failed_jobs_reach_job_failed_subscriptions(api, receiver: Receiver) -> None:
    sim_setup(api, systems=("db1",), config={"fail_at": ["create"]})
    subscribe(api, "failures", receiver.url, events=["job.failed"])
    job = act_and_wait(api, "db1", "create")
    assert job["status"] == "failed"
    seen = receiver.wait_for(1)[0].json
    assert seen["data"]["status"] == "failed" and seen["text"].startswith("✗")


def test_lock_unlock_and_quota_events_reach_their_subscriptions(api, live_server, receiver: Receiver) -> None:
    from sqlalchemy import select, update

    from armillary.domain.accounts import RoleGrant, User
    from armillary.domain.models import Environment
    from armillary.notify.events import QuotaWatch
    from tests.support.accounts import ensure_user

    api.post("/environments", json={"name": "dev"})
    subscribe(api, "locks", f"{receiver.url}/locks", events=["environment.locked", "environment.unlocked"])
    subscribe(api, "quotas", f"{receiver.url}/quotas", environment="dev", events=["quota.nearly_spent"])
    assert api.post("/environments/dev/lock", json={"reason": "release freeze"}).status_code == 200
    assert api.post("/environments/dev/unlock").status_code == 200
    locks = sorted((r.json for r in receiver.wait_for(2) if r.path == "/locks"), key=lambda b: b["event_id"])
    assert [b["event"] for b in locks] == ["environment.locked", "environment.unlocked"]
    assert locks[0]["data"]["reason"] == "release freeze" and locks[0]["data"]["environment"] == "dev"

    db = live_server[1]
    ensure_user(db, "quinn")
    with db.session() as session:
        user_id = session.scalar(select(User.id).where(User.name == "quinn"))
        env_id = session.scalar(select(Environment.id).where(Environment.name == "dev"))
        session.add(RoleGrant(user_id=user_id, environment_id=env_id, role="user", max_systems=10, used_systems=9))
    watch = QuotaWatch()
    with db.session() as session:
        watch.scan(session)  # 9 of 10: at 90 % (the server's own scan may say it first: one event either way)
    with db.session() as session:
        assert watch.scan(session) == 0  # said once per crossing
        session.execute(update(RoleGrant).where(RoleGrant.user_id == user_id).values(used_systems=5))
    with db.session() as session:
        assert watch.scan(session) == 0  # back below: re-armed, nothing said
    quota = [r.json for r in receiver.wait_for(3) if r.path == "/quotas"]
    assert len(quota) == 1 and quota[0]["data"]["resource"] == "systems" and quota[0]["data"]["percent"] == 90.0


def test_chat_deliveries_are_claimed_once_and_taken_again_when_a_lease_expires(api, live_server) -> None:
    """The interface the chat bot uses (armillary.notify.deliveries), on the server's database."""
    from armillary.notify import deliveries as rows

    api.post("/environments", json={"name": "dev"})
    made = api.post("/subscriptions", json={"name": "ops-room", "environment": "dev",
                                            "target": {"kind": "chat", "connection": "irc", "room": "#ops"}})
    assert made.status_code == 201 and made.json()["secret"] is None, made.text
    sent = api.post("/subscriptions/ops-room/test").json()
    db = live_server[1]
    with db.session() as session:
        first = rows.claim_pending(session, "chat", 10, "bot-a", lease_s=1.5)
    assert [(d.id, d.target, d.attempts) for d in first] == [(sent["id"], {"connection": "irc", "room": "#ops"}, 1)]
    assert first[0].text.startswith("🔔 test notification") and first[0].payload["id"] == sent["idempotency_id"]
    with db.session() as session:
        assert rows.claim_pending(session, "chat", 10, "bot-b", lease_s=30) == []  # leased to bot-a
        # what an idle claimer sleeps until: bot-a's lease running out
        assert rows.next_due(session, ("chat",), utcnow()) == first[0].lease_expires_at
    time.sleep(1.6)
    with db.session() as session:  # bot-a died: its lease expired
        again = rows.claim_pending(session, "chat", 10, "bot-c", lease_s=30)
        assert [(d.id, d.attempts, d.lease_owner) for d in again] == [(sent["id"], 2, "bot-c")]
        assert rows.mark_failed(session, sent["id"], "no such room", retry=False)
        assert not rows.mark_delivered(session, sent["id"])  # no longer ours to mark
    log = api.get("/subscriptions/ops-room/deliveries").json()["items"][0]
    assert (log["status"], log["attempts"], log["last_error"]) == ("failed", 2, "no such room")


def test_a_bulk_job_is_one_event_with_every_host(api, receiver: Receiver) -> None:
    sim_setup(api, systems=("web1", "web2"), labels={"service": "web"})
    subscribe(api, "web-stages", receiver.url, environment="dev", labels={"service": "web"}, actions=["stage"])
    started = api.post("/jobs", json={"action": "stage", "selector": {"labels": {"service": "web"}}})
    assert started.status_code == 202, started.text
    from tests.support.jobs import wait_job

    assert wait_job(api, started.json()["id"])["status"] == "succeeded"
    seen = receiver.wait_for(1)
    time.sleep(0.5)  # the children's ends would have come by now
    assert len(receiver.accepted()) == 1
    body = seen[0].json
    assert body["data"]["job_id"] == started.json()["id"] and body["data"]["environment"] == "dev"
    assert set(body["data"]["summary"]["hosts"]) == {"web1", "web2"}


def test_the_cli_manages_subscriptions_and_reads_the_delivery_log(api, live_server, admin_token, receiver: Receiver,
                                                                  tmp_path) -> None:
    import json

    from tests.support.cli import Cli

    api.post("/environments", json={"name": "dev"})
    cli = Cli(live_server[0], tmp_path)

    def ok(*args: str):
        result = cli(*args, env={"ARMILLARY_TOKEN": admin_token})
        assert result.code == 0, str(result)
        return result

    made = json.loads(ok("subscription", "create", "cli-hook", "--webhook", receiver.url, "--format", "mattermost",
                         "-e", "dev", "--event", "job.failed", "-l", "service=web", "-o", "json").out)
    assert made["secret"] and made["events"] == ["job.failed"] and made["labels"] == {"service": "web"}
    assert "cli-hook" in ok("subscription", "list").out
    assert json.loads(ok("subscription", "show", "cli-hook", "-o", "json").out)["secret"] is None
    tested = json.loads(ok("subscription", "test", "cli-hook", "--wait", "-o", "json").out)
    assert tested["status"] == "delivered" and tested["last_status_code"] == 200
    assert receiver.accepted()[0].json["props"]["armillary"]["id"] == tested["idempotency_id"]
    assert verify(made["secret"], receiver.accepted()[0].body, receiver.accepted()[0].headers["x-armillary-signature"])
    assert "delivered" in ok("subscription", "deliveries", "cli-hook").out
    assert json.loads(ok("subscription", "rotate", "cli-hook", "-o", "json").out)["secret"] != made["secret"]
    refused = cli("subscription", "create", "bad", "--webhook", receiver.url, "--email", "a@b.c",
                  env={"ARMILLARY_TOKEN": admin_token})
    assert refused.code != 0 and "exactly one target" in refused.err
    ok("subscription", "delete", "cli-hook")
    assert api.get("/subscriptions/cli-hook").status_code == 404


def test_an_audit_kick_out_reaches_its_subscription(api, live_server, receiver: Receiver) -> None:
    """An attention item (written here as the remediation workflow writes it) is an ``audit.kicked_out`` event."""
    from sqlalchemy import select

    from armillary.audits.models import AttentionItem
    from armillary.domain.models import System

    sim_setup(api, systems=("db1",), labels={"service": "db"})
    subscribe(api, "kicked", receiver.url, environment="dev", events=["audit.kicked_out"], labels={"service": "db"})
    with live_server[1].session() as session:
        system = session.scalars(select(System).where(System.hostname == "db1")).one()
        session.add(AttentionItem(system_id=system.id, environment_id=system.environment_id,
                                  reason="sshd still down after the fix"))
    body = receiver.wait_for(1)[0].json
    assert body["event"] == "audit.kicked_out" and body["data"]["system"] == "db1"
    assert body["data"]["reason"] == "sshd still down after the fix" and "db1 needs attention" in body["text"]


def test_a_disabled_subscriptions_deliveries_wait_until_it_is_enabled_again(api, live_server) -> None:
    from armillary.notify import deliveries as rows

    api.post("/subscriptions", json={"name": "paused", "target": {"kind": "chat", "connection": "irc", "room": "#x"}})
    sent = api.post("/subscriptions/paused/test").json()
    assert api.patch("/subscriptions/paused", json={"enabled": False}).status_code == 200
    db = live_server[1]
    with db.session() as session:
        assert rows.claim_pending(session, "chat", 10, "bot", lease_s=30) == []
        assert rows.next_due(session, ("chat",), utcnow()) is None  # nothing to wake up for
    assert api.get("/subscriptions/paused/deliveries").json()["items"][0]["status"] == "pending"
    assert api.patch("/subscriptions/paused", json={"enabled": True}).status_code == 200
    with db.session() as session:
        now = utcnow()
        assert rows.next_due(session, ("chat",), now) <= now  # due already
        assert [d.id for d in rows.claim_pending(session, "chat", 10, "bot", lease_s=30)] == [sent["id"]]


def test_a_webhook_to_an_address_the_operator_did_not_allow_is_refused(api, receiver: Receiver, monkeypatch) -> None:
    """Loopback, private, link-local (a cloud's metadata service) addresses: only the networks the operator
    lists in ARMILLARY_NOTIFY_ALLOWED_NETWORKS — never called on a subscriber's say-so."""
    for url in ("http://169.254.169.254/latest/meta-data/", "http://10.1.2.3:8080/hook"):
        refused = api.post("/subscriptions", json={"name": "probe", "target": {"kind": "webhook", "url": url}})
        assert refused.status_code == 422 and refused.json()["errors"][0]["field"] == "target.url", refused.text
        assert "ARMILLARY_NOTIFY_ALLOWED_NETWORKS" in refused.json()["detail"]
    subscribe(api, "local", receiver.url)  # 127.0.0.0/8 is allowed for the tests' receivers
    monkeypatch.setenv("ARMILLARY_NOTIFY_ALLOWED_NETWORKS", "")  # the operator withdraws it
    api.post("/subscriptions/local/test")
    [delivery] = deliveries(api, "local", done=1)
    assert delivery["status"] == "failed" and "not a public address" in delivery["last_error"], delivery
    assert receiver.requests == []


def test_a_webhook_connects_to_the_address_it_checked_not_to_the_name_again(receiver: Receiver, monkeypatch) -> None:
    """DNS rebinding: a name that resolves to an allowed address when checked and to an internal one a moment
    later must not reach the internal one. The try connects to the checked address, so the name is resolved
    once. No DNS server of ours can answer for a name the system resolver asks about, so the resolver the check
    uses is replaced: ``hook.invalid`` (a name that never resolves for real) is the receiver's loopback address."""
    from urllib.parse import urlsplit

    import httpx

    from armillary.notify import destinations, webhook

    port = urlsplit(receiver.url).port
    asked: list[str] = []
    real = destinations.socket.getaddrinfo

    def answer(host, *args, **kwargs):
        asked.append(host)
        return real("127.0.0.1" if host == "hook.invalid" else host, *args, **kwargs)

    monkeypatch.setattr(destinations.socket, "getaddrinfo", answer)
    with httpx.Client() as client:
        outcome = webhook.send(client, {"url": f"http://hook.invalid:{port}/pinned"}, {"event": "test", "id": "d1"},
                               "hello", None)
    assert outcome.delivered, outcome
    [seen] = receiver.accepted()
    assert seen.path == "/pinned" and seen.headers["host"] == f"hook.invalid:{port}"
    assert asked.count("hook.invalid") == 1  # by the check; the connection went to 127.0.0.1 itself
    pinned = destinations.pinned("https://u:p@[2001:db8::1]:8443/x?y=1", "2001:db8::2")
    assert pinned == "https://u:p@[2001:db8::2]:8443/x?y=1"
