"""Redaction of secrets: the registry and its masking, log records, job events and job/step columns
on real databases, and a script provisioner job that prints secrets through the real app.

The registry is per process and shared by every test in it, so the values these tests register are
unique (a random part), never words another test expects to read back; tests of eviction and
thread-safety use a registry of their own.
"""

from __future__ import annotations

import io
import json
import logging
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography.fernet import Fernet
from sqlalchemy import select

from armillary import redaction
from armillary.domain.db import Database
from armillary.domain.jobs import Job, JobEvent, Step
from armillary.domain.secrets import SecretBox
from armillary.engine.events import emit, insert_event
from armillary.engine.jobs import create_job
from armillary.engine.service import Engine
from armillary.engine.workflows import StepSpec, Workflow, register
from armillary.failures import PermanentFailure as PermanentStepError
from armillary.logs import JsonFormatter, TextFormatter, configure, install_redaction
from armillary.redaction import (
    MASK,
    MAX_SECRETS,
    MIN_SECRET_LENGTH,
    REBUILD_PAST,
    RedactingFilter,
    SecretRegistry,
    is_secret_key,
    redact_data,
    redact_text,
    register_secrets_in,
)
from tests.support.jobs import act_and_wait
from tests.support.provisioning import events
from tests.support.sshhosts import SshHost, ssh_host


def unique(prefix: str = "s3cr3t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


# ---------------------------------------------------------------- the registry


def test_registered_values_are_masked_anywhere_in_text() -> None:
    reg = SecretRegistry()
    assert reg.redact_text("nothing registered") == "nothing registered"
    reg.register("hunter2", "hunter2-secret", "correct horse", "a.b*c+(x)|y")
    assert reg.redact_text("pw=hunter2-secret; old=hunter2.") == f"pw={MASK}; old={MASK}."  # longest first
    assert reg.redact_text("say correct horse battery") == f"say {MASK} battery"
    # Regular expression metacharacters are literal: only the exact value matches.
    assert reg.redact_text("[a.b*c+(x)|y]") == f"[{MASK}]"
    assert reg.redact_text("aXb*c+(x)|y aab") == "aXb*c+(x)|y aab"
    assert reg.redact_text("hunter") == "hunter"
    assert reg.redact_text("") == ""


def test_overlapping_and_adjacent_values_are_masked_together() -> None:
    reg = SecretRegistry()
    reg.register("abcdef", "cdefgh", "XYZW")
    assert reg.redact_text("[abcdefgh]") == f"[{MASK}]"  # no "gh" of the second value left over
    assert reg.redact_text("abcdefXYZW!") == f"{MASK}!"
    assert reg.redact_text("abcdef cdefgh") == f"{MASK} {MASK}"


def test_short_values_are_not_registered_and_other_types_are() -> None:
    reg = SecretRegistry()
    assert MIN_SECRET_LENGTH == 4
    reg.register("abc", "", None, True, 12, "   ")
    assert len(reg) == 0
    assert reg.redact_text("abc yes 12 True") == "abc yes 12 True"
    reg.register(b"bytes-secret", b"\xff\xfe not utf-8", 20250917, bytearray(b"from-bytearray"))
    assert reg.redact_text("b=bytes-secret n=20250917 a=from-bytearray") == f"b={MASK} n={MASK} a={MASK}"
    assert len(reg) == 3  # the undecodable bytes were skipped
    # Surrounding whitespace (a key file's newline) is no part of the secret; the value as given is.
    reg.register("  padded-secret\n")
    assert reg.redact_text("[padded-secret]") == f"[{MASK}]"
    # Containers: their leaves.
    reg.register({"a": ["leaf-one-x", {"b": "leaf-two-x"}]})
    assert reg.redact_text("leaf-one-x leaf-two-x") == f"{MASK} {MASK}"


def test_lines_of_a_multi_line_secret_are_masked_alone() -> None:
    body = [uuid.uuid4().hex + uuid.uuid4().hex for _ in range(3)]
    pem = "-----BEGIN OPENSSH PRIVATE KEY-----\n" + "\n".join(body) + "\n-----END OPENSSH PRIVATE KEY-----\n"
    reg = SecretRegistry()
    reg.register(pem)
    assert reg.redact_text(f"key: {pem}") == f"key: {MASK}"
    assert reg.redact_text(f"line 2 is {body[1]}") == f"line 2 is {MASK}"
    # The armour is no secret: it is not masked on its own.
    assert reg.redact_text("-----BEGIN OPENSSH PRIVATE KEY-----") == "-----BEGIN OPENSSH PRIVATE KEY-----"


def test_url_passwords_are_masked_without_registration() -> None:
    assert redact_text("db at postgresql+psycopg://app:pa55word@db:5432/x") == (
        f"db at postgresql+psycopg://app:{MASK}@db:5432/x"
    )
    assert redact_text("see https://example.org/a:b@c") == "see https://example.org/a:b@c"
    assert redact_text("plain https://example.org/") == "plain https://example.org/"


def test_the_registry_is_bounded_dropping_the_oldest() -> None:
    assert MAX_SECRETS == 10_000 and redaction._registry.max_values == MAX_SECRETS
    reg = SecretRegistry(max_values=5)
    values = [f"value-{i:04d}" for i in range(8)]
    reg.register(*values[:4])
    reg.register(values[0])  # registered again: now the most recent
    reg.register(*values[4:])
    assert len(reg) == 5
    assert values[0] in reg and all(v in reg for v in values[4:])
    assert all(v not in reg for v in values[1:4])
    assert reg.redact_text(" ".join(values)) == " ".join(
        MASK if v in reg else v for v in values
    )


def test_a_full_registry_still_redacts_fast() -> None:
    """10,000 values: one automaton, not an alternation tried value by value at every position."""
    reg = SecretRegistry()
    values = [uuid.uuid4().hex[:20] for _ in range(MAX_SECRETS)]
    reg.register(*values)
    line = "TASK [web : install packages] changed: [web1] => (item=nginx) ok=12 changed=3 " * 3
    reg.redact_text(line)  # builds the pattern
    started = time.perf_counter()
    for _ in range(200):
        assert reg.redact_text(line) == line
    assert time.perf_counter() - started < 2.0
    assert reg.redact_text(f"x {values[1234]} y {values[-1]}") == f"x {MASK} y {MASK}"


def test_values_registered_one_at_a_time_past_full_builds_and_drops_are_masked_exactly() -> None:
    """Each new value goes to the small automaton of recent values, a full build comes every ``REBUILD_PAST``
    changes, and a dropped value still in the full automaton is shown again: what is masked is always
    exactly what the registry holds."""
    reg = SecretRegistry(max_values=300)
    values = [f"one-by-one-{i:04d}-{uuid.uuid4().hex[:6]}" for i in range(3 * REBUILD_PAST)]
    for value in values:
        reg.register(value)
        assert reg.redact_text(f"<{value}>") == f"<{MASK}>"
    assert sum(value in reg for value in values) == 300
    line = " ".join(values)
    assert reg.redact_text(line) == " ".join(MASK if value in reg else value for value in values)


def test_register_and_redact_from_many_threads() -> None:
    reg = SecretRegistry(max_values=100_000)
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            for i in range(200):
                value = f"thread{n}-value{i:03d}"
                reg.register(value)
                assert reg.redact_text(f"<{value}>") == f"<{MASK}>"
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(reg) == 1600


# ---------------------------------------------------------------- keys and structured data


@pytest.mark.parametrize("name", [
    "password", "db_password", "dbPassword", "DB_PASSWORD", "db-password", "passwd", "passphrase",
    "private_key_passphrase", "secret", "secrets", "client_secret", "token", "access_token", "api_token",
    "session_token", "private_key", "ssh_private_key", "api_key", "apiKey", "X-Api-Key", "access_key",
    "secret_access_key", "aws_secret_access_key", "AWS_SECRET_ACCESS_KEY", "secret_key", "credential",
    "credentials", "registry_credentials", "Authorization",
])
def test_secret_looking_keys(name: str) -> None:
    assert is_secret_key(name)


@pytest.mark.parametrize("name", [
    "token_name", "secrets_set", "secret_fields", "key", "public_key", "ssh_public_key", "access_key_id",
    "password_file", "secret_key_file", "tokenizer", "max_tokens", "keyboard", "monkey", "passwordless",
    "colour", "pwd", "user", "hostname", "session_token_expiry", "", "keys", "client_token", "ClientToken",
    "NextToken", "next_token", "idempotency_token",
])
def test_keys_that_are_not_secret(name: str) -> None:
    assert not is_secret_key(name)


def test_redact_data_masks_secret_keys_and_registered_values() -> None:
    known = unique()
    redaction.register(known)
    data = {
        "db_password": "unregistered-pw",
        "nested": {"apiKey": {"any": "shape"}, "items": [{"token": 1234}, f"uses {known}", ("t", known)]},
        "token_name": "deploy-bot",
        "secrets_set": ["password"],
        "password": None,
        "secret": "",
        "count": 3,
        "enabled": True,
        f"key-{known}": "value",
    }
    original = json.dumps(data, default=list)
    out = redact_data(data)
    assert out == {
        "db_password": MASK,
        "nested": {"apiKey": MASK, "items": [{"token": MASK}, f"uses {MASK}", ("t", MASK)]},
        "token_name": "deploy-bot",
        "secrets_set": ["password"],
        "password": None,  # "not set" stays visible
        "secret": "",
        "count": 3,
        "enabled": True,
        f"key-{MASK}": "value",
    }
    assert json.dumps(data, default=list) == original, "the input was changed"
    assert redact_data(None) is None and redact_data(42) == 42 and redact_data(f"x{known}") == f"x{MASK}"


def test_register_secrets_in_registers_only_values_under_secret_keys() -> None:
    db, nested, listed, plain = unique("db"), unique("nested"), unique("listed"), unique("plain")
    register_secrets_in({
        "db_password": db,
        "app": {"credentials": {"user": nested, "port": 5432}},
        "tokens_of": [{"api_token": listed}],
        "greeting": plain,
        "empty_secret": None,
    })
    assert redact_text(f"{db} {nested} {listed} {plain}") == f"{MASK} {MASK} {MASK} {plain}"


def test_the_secret_box_registers_what_it_handles() -> None:
    material = unique("key-material")
    box = SecretBox(material)
    assert redact_text(f"key {material}") == f"key {MASK}"
    encrypted = unique("encrypted")
    token = box.encrypt({"password": encrypted, "port_secret": 99})
    assert redact_text(encrypted) == MASK
    # Decrypting registers too: a value encrypted elsewhere (another process), seen here first.
    key = Fernet.generate_key()
    decrypted = unique("decrypted")
    other = Fernet(key).encrypt(json.dumps({"private_key": decrypted}).encode()).decode()
    assert redact_text(decrypted) == decrypted
    assert SecretBox(key.decode()).decrypt(other) == {"private_key": decrypted}
    assert redact_text(f"[{decrypted}]") == f"[{MASK}]"
    assert redact_text(key.decode()) == MASK
    assert box.decrypt(token)["password"] == encrypted  # the box itself still sees the plaintext


# ---------------------------------------------------------------- log records


@pytest.fixture
def logged() -> Iterator[tuple[logging.Logger, io.StringIO, logging.Handler]]:
    stream = io.StringIO()
    handler = install_redaction(logging.StreamHandler(stream))
    logger = logging.getLogger(f"test.redaction.{uuid.uuid4().hex[:8]}")
    logger.handlers[:] = [handler]
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    yield logger, stream, handler
    logger.handlers[:] = []


def _log_everything(logger: logging.Logger, secret: str, extra_secret: str) -> None:
    logger.debug("connecting as root with %s to %s", secret, "web1")
    logger.info("note", extra={"password": extra_secret, "detail": f"tried {secret}", "attempt": 2})
    try:
        try:
            raise ValueError(f"inner {secret}")
        except ValueError as inner:
            raise RuntimeError(f"login refused for password {secret}") from inner
    except RuntimeError:
        logger.exception("step failed")
    logger.error("bad %d format", secret)  # a format error must not print its arguments raw


def test_log_records_are_redacted_with_a_plain_formatter(logged) -> None:
    logger, stream, handler = logged
    secret, extra_secret = unique(), unique("extra")
    redaction.register(secret)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    _log_everything(logger, secret, extra_secret)
    out = stream.getvalue()
    assert secret not in out and extra_secret not in out
    assert f"DEBUG connecting as root with {MASK} to web1" in out
    assert "Traceback (most recent call last)" in out  # the traceback is kept, redacted
    assert f"RuntimeError: login refused for password {MASK}" in out and f"ValueError: inner {MASK}" in out
    assert "bad %d format" in out and MASK in out


def test_log_records_are_redacted_through_the_json_formatter(logged) -> None:
    logger, stream, handler = logged
    secret, extra_secret = unique(), unique("extra")
    redaction.register(secret)
    handler.setFormatter(JsonFormatter())
    _log_everything(logger, secret, extra_secret)
    out = stream.getvalue()
    assert secret not in out and extra_secret not in out
    lines = [json.loads(line) for line in out.splitlines()]
    assert lines[0]["message"] == f"connecting as root with {MASK} to web1" and lines[0]["level"] == "debug"
    assert lines[1]["password"] == MASK and lines[1]["detail"] == f"tried {MASK}" and lines[1]["attempt"] == 2
    assert lines[2]["message"] == "step failed"
    assert f"RuntimeError: login refused for password {MASK}" in lines[2]["exception"]
    assert lines[3]["level"] == "error" and MASK in lines[3]["message"]


def test_log_records_are_redacted_through_the_text_formatter(logged) -> None:
    logger, stream, handler = logged
    secret = unique()
    redaction.register(secret)
    handler.setFormatter(TextFormatter())
    _log_everything(logger, secret, unique("extra"))
    out = stream.getvalue()
    assert secret not in out
    assert f"RuntimeError: login refused for password {MASK}" in out


def test_a_filter_on_the_handler_covers_every_logger_and_is_installed_once() -> None:
    stream = io.StringIO()
    handler = install_redaction(install_redaction(logging.StreamHandler(stream)))
    assert sum(isinstance(f, RedactingFilter) for f in handler.filters) == 1
    secret = unique()
    redaction.register(secret)
    parent = logging.getLogger(f"test.redaction.parent{uuid.uuid4().hex[:6]}")
    parent.handlers[:] = [handler]
    parent.propagate = False
    try:
        parent.getChild("httpx").warning("request with Authorization: Bearer %s", secret)
    finally:
        parent.handlers[:] = []
    assert stream.getvalue() == f"request with Authorization: Bearer {MASK}\n"


def test_configure_installs_the_filter() -> None:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    uvicorn = {name: (logging.getLogger(name).handlers[:], logging.getLogger(name).propagate,
                      logging.getLogger(name).disabled) for name in ("uvicorn", "uvicorn.error", "uvicorn.access")}
    try:
        configure(json_lines=True)
        (handler,) = root.handlers
        assert any(isinstance(f, RedactingFilter) for f in handler.filters)
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)
        for name, (handlers, propagate, disabled) in uvicorn.items():
            logger = logging.getLogger(name)
            logger.handlers[:], logger.propagate, logger.disabled = handlers, propagate, disabled


# ---------------------------------------------------------------- job events and columns on real databases


SECRET_STEP = {"logged": "", "failed": ""}


def _prints_a_secret(ctx) -> dict:
    ctx.log(f"connecting with {SECRET_STEP['logged']}", password="not-registered-but-a-secret-key")
    return {"note": f"used {SECRET_STEP['logged']}", "api_token": "tok-unregistered", "count": 1}


def _fails_with_a_secret(ctx) -> dict:
    raise PermanentStepError(f"login refused: password {SECRET_STEP['failed']} is wrong")


register(Workflow("t-redact-ok", [StepSpec("talk", _prints_a_secret)], failure_state=None))
register(Workflow("t-redact-fail", [StepSpec("talk", _prints_a_secret),
                                    StepSpec("fail", _fails_with_a_secret, ("talk",))], failure_state=None))



def _new_job(db: Database, workflow: str) -> int:
    with db.session() as session:
        job = create_job(session, action=workflow, workflow=workflow)
        session.flush()
        return job.id


def test_insert_event_redacts_message_and_data(db: Database) -> None:
    secret = unique()
    redaction.register(secret)
    job_id = _new_job(db, "t-redact-ok")
    with db.engine.begin() as conn:
        insert_event(conn, job_id, "log", f"echo {secret}", step="talk", level="warning",
                     data={"line": f"> {secret}", "db_password": "unregistered", "stream": "stdout"})
    with db.session() as session:
        emit(session, job_id, "job", f"via emit {secret}", data={"private_key": "-----BEGIN..."})
    with db.session() as session:
        rows = session.scalars(select(JobEvent).where(JobEvent.job_id == job_id).order_by(JobEvent.id)).all()
        shown = [(e.message, e.data) for e in rows][-2:]
    assert shown == [
        (f"echo {MASK}", {"line": f"> {MASK}", "db_password": MASK, "stream": "stdout"}),
        (f"via emit {MASK}", {"private_key": MASK}),
    ]


def test_engine_redacts_events_step_errors_results_and_the_job_error(db: Database) -> None:
    SECRET_STEP.update(logged=unique("logged"), failed=unique("failed"))
    redaction.register(SECRET_STEP["logged"], SECRET_STEP["failed"])
    engine = Engine(db, SecretBox(unique("engine-key")), workers=2, lease_s=5.0, poll_s=0.05)
    engine.start()
    try:
        job_id = _new_job(db, "t-redact-fail")
        engine.wake()
        job = engine.wait_for(job_id, 30)
    finally:
        engine.stop()
    assert job.status == "failed"
    with db.session() as session:
        job = session.get(Job, job_id)
        steps = {s.name: s for s in session.scalars(select(Step).where(Step.job_id == job_id))}
        evs = session.scalars(select(JobEvent).where(JobEvent.job_id == job_id).order_by(JobEvent.id)).all()
        text = json.dumps([[e.message, e.data] for e in evs]) + str(job.error) + json.dumps(
            {n: [s.error, s.result] for n, s in steps.items()})
        assert job.error == f"fail: login refused: password {MASK} is wrong"
        assert steps["fail"].error == f"login refused: password {MASK} is wrong"
        assert steps["talk"].result == {"note": f"used {MASK}", "api_token": MASK, "count": 1}
        log_line = next(e for e in evs if e.kind == "log")
        assert (log_line.message, log_line.data) == (f"connecting with {MASK}", {"password": MASK})
        assert any(e.message == f"✗ job failed: fail: login refused: password {MASK} is wrong" for e in evs)
    for secret in (SECRET_STEP["logged"], SECRET_STEP["failed"], "not-registered-but-a-secret-key",
                   "tok-unregistered"):
        assert secret not in text


# ---------------------------------------------------------------- end to end: a script provisioner job


@pytest.fixture
def ssh_peer(tmp_path: Path) -> Iterator[SshHost]:
    with ssh_host(tmp_path) as host:
        yield host


def test_a_provisioning_job_never_shows_variables_or_hypervisor_secrets(api: httpx.Client, ssh_peer: SshHost) -> None:
    db_password = unique("hunter2-secret")
    hv_password = unique("hv-password")
    key_line = ssh_peer.private_key_pem.splitlines()[1]
    script = (
        'echo "db password is $db_password"\n'
        'echo "colour is $colour"\n'
        f'echo "hypervisor password is {hv_password}"\n'
        f'echo "a line of the key: {key_line}"\n'
    )
    failing = f'echo "about to fail with $db_password and {hv_password}" >&2\nexit 3\n'
    made = api.post("/environments", json={"name": "dev", "variables": {"colour": "blue"}})
    assert made.status_code == 201, made.text
    made = api.post("/hypervisors", json={
        "name": "metal", "environment": "dev", "driver": "ssh",
        "config": {"private_key": ssh_peer.private_key_pem, "password": hv_password, "connect_timeout": 5,
                   "allowed_hosts": [ssh_peer.address]},
    })
    assert made.status_code == 201, made.text
    made = api.post("/types", json={
        "name": "web",
        "variables": {"db_password": db_password},
        "provisioner": {"kind": "script", "spec": {
            "scripts": [{"name": "show", "inline": script}, {"name": "fail", "inline": failing}],
            "remote_tmp": str(ssh_peer.scratch),
        }},
    })
    assert made.status_code == 201, made.text
    made = api.post("/systems", json={
        "hostname": "web1", "environment": "dev", "hypervisor": "metal", "type": "web",
        "driver": {"host": ssh_peer.address, "port": ssh_peer.port},
    })
    assert made.status_code == 201, made.text

    job = act_and_wait(api, "web1", "stage")
    assert job["status"] == "failed", job
    logged = {e["message"] for e in events(api, job["id"]) if e["kind"] == "log"}
    assert f"db password is {MASK}" in logged
    assert "colour is blue" in logged  # ordinary variables are shown
    assert f"hypervisor password is {MASK}" in logged
    assert f"a line of the key: {MASK}" in logged
    assert f"about to fail with {MASK} and {MASK}" in logged
    assert "exited 3" in job["error"] and f"about to fail with {MASK} and {MASK}" in job["error"]
    everything = api.get(f"/jobs/{job['id']}/events", params={"limit": 1000}).text + json.dumps(job)
    for secret in (db_password, hv_password, key_line):
        assert secret not in everything
