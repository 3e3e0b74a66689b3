"""Deploy sources uploaded to the API (``POST /api/v1/sources``), through the real app over HTTP.

Every tarball carries a random marker, so a test's uploads are its own in the session's shared server
(storage is content-addressed); the deploy from an upload, on a real SSH host, is in test_deploy.py.
Who may upload, quotas and ownership run on a server of their own (``uploads``), whose settings a test
may change (``world.configure``), with accounts holding each role.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import tarfile
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select

from armillary.domain.models import Environment
from armillary.domain.uploads import UploadedSource
from tests.conftest import empty_database
from tests.support.accounts import ADMIN, bearer, ensure_user, grant, token_for
from tests.support.databases import database
from tests.support.server import running_app

GZIP = {"Content-Type": "application/gzip"}
PROBLEM = "application/problem+json"


def tarball(files: dict[str, str] | None = None, extra: list[tarfile.TarInfo] | None = None) -> bytes:
    """A .tar.gz of ``files`` (plus a random marker file) and the raw ``extra`` members."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, text in {"marker": uuid.uuid4().hex, **(files or {})}.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
        for info in extra or []:
            tar.addfile(info, io.BytesIO(b"x" * info.size) if info.isfile() else None)
    return buffer.getvalue()


def member(name: str, **fields: Any) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    for key, value in fields.items():
        setattr(info, key, value)
    return info


def test_upload_is_content_addressed_and_idempotent(api: httpx.Client) -> None:
    body = tarball({"index.html": "v1\n", "app/run.sh": "echo hi\n"})
    digest = hashlib.sha256(body).hexdigest()
    first = api.post("/sources", content=body, headers=GZIP)
    assert first.status_code == 201, first.text
    assert first.json()["id"] == digest and first.json()["size"] == len(body)
    assert first.headers["location"].endswith(f"/api/v1/sources/{digest}")
    again = api.post("/sources", content=body, headers={"Content-Type": "application/octet-stream"})
    assert again.status_code == 200, again.text
    assert again.json()["id"] == digest and again.json()["size"] == len(body)

    shown = api.get(f"/sources/{digest}")
    assert shown.status_code == 200 and shown.json()["id"] == digest and shown.json()["size"] == len(body)
    assert api.delete(f"/sources/{digest}").status_code == 204
    assert api.get(f"/sources/{digest}").status_code == 404
    assert api.delete(f"/sources/{digest}").status_code == 404
    assert api.get("/sources/not-a-digest").status_code == 422
    assert api.get("/sources/" + "0" * 64).status_code == 404


@pytest.mark.parametrize(
    ("extra", "says"),
    [
        ([member("../escape", size=1)], "without '..'"),
        ([member("a/../../escape", size=1)], "without '..'"),
        ([member("/etc/cron.d/x", size=1)], "without '..'"),
        ([member("link", type=tarfile.SYMTYPE, linkname="/etc")], "is a link"),
        ([member("hard", type=tarfile.LNKTYPE, linkname="marker")], "is a link"),
        ([member("fifo", type=tarfile.FIFOTYPE)], "special file"),
        ([member("dev", type=tarfile.CHRTYPE, devmajor=1, devminor=3)], "special file"),
        ([member("suid", size=1, mode=0o4755)], "setuid"),
    ],
)
def test_unsafe_tarballs_are_refused(api: httpx.Client, extra: list[tarfile.TarInfo], says: str) -> None:
    body = tarball(extra=extra)
    refused = api.post("/sources", content=body, headers=GZIP)
    assert refused.status_code == 422, refused.text
    assert says in refused.json()["detail"], refused.json()
    assert api.get(f"/sources/{hashlib.sha256(body).hexdigest()}").status_code == 404  # nothing kept


def test_not_a_tarball_and_wrong_type(api: httpx.Client) -> None:
    plain = api.post("/sources", content=b"just text", headers=GZIP)
    assert plain.status_code == 422 and "gzip" in plain.json()["detail"], plain.text
    not_tar = api.post("/sources", content=gzip.compress(b"not a tar archive" * 100), headers=GZIP)
    assert not_tar.status_code == 422 and "tarball" in not_tar.json()["detail"], not_tar.text
    empty = api.post("/sources", content=b"", headers=GZIP)
    assert empty.status_code == 422, empty.text
    typed = api.post("/sources", content=tarball(), headers={"Content-Type": "application/json"})
    assert typed.status_code == 415, typed.text


# ---------------------------------------------------------------- who may upload, quotas, ownership

# Accounts of the uploads server: their role in environment "dev" (None: no role anywhere).
PEOPLE = {"uma": "user", "ulla": "user", "olga": "operator", "vic": "viewer", "nora": None}


def chunked(body: bytes, size: int = 256) -> Iterator[bytes]:
    """The body as a generator: sent without Content-Length, so limits apply while it streams in."""
    for start in range(0, len(body), size):
        yield body[start:start + size]


def incompressible(n_bytes: int) -> str:
    """Text that gzip cannot shrink much: a tarball of it is a bit over ``n_bytes`` long."""
    return "".join(uuid.uuid4().hex for _ in range(n_bytes // 32 + 1))[:n_bytes]


@dataclasses.dataclass
class World:
    base: str
    db: Any
    app: FastAPI
    data_dir: Path
    tokens: dict[str, str]

    def client(self, name: str) -> httpx.Client:
        return httpx.Client(base_url=self.base, timeout=30, headers=bearer(self.tokens[name]))

    def upload(self, name: str, body: bytes, **kwargs: Any) -> httpx.Response:
        with self.client(name) as client:
            return client.post("/sources", content=body, headers=GZIP, **kwargs)

    def call(self, name: str, method: str, path: str) -> httpx.Response:
        with self.client(name) as client:
            return client.request(method, path)

    def configure(self, **settings: Any) -> None:
        """Change the running server's settings (it reads them at every request)."""
        self.app.state.settings = dataclasses.replace(self.app.state.settings, **settings)

    def stored(self, source_id: str) -> bool:
        return (self.data_dir / "sources" / f"{source_id}.tar.gz").is_file()


@pytest.fixture(scope="module")
def uploads_server(backend: str, tmp_path_factory) -> Iterator[tuple[str, Any, FastAPI, Path]]:
    data_dir = tmp_path_factory.mktemp(f"uploads-{backend}")
    apps: list[FastAPI] = []
    with database(backend, data_dir) as url, \
            running_app(url, data_dir, apps.append, engine="off") as (base, db):
        yield base + "/api/v1", db, apps[0], data_dir


@pytest.fixture
def world(uploads_server) -> Iterator[World]:
    base, db, app, data_dir = uploads_server
    defaults = app.state.settings
    empty_database(db)
    ensure_user(db, ADMIN, admin=True)
    with db.session() as session:
        session.add(Environment(name="dev"))
    for name, role in PEOPLE.items():
        ensure_user(db, name)
        if role is not None:
            grant(db, name, "dev", role)
    tokens = {name: token_for(db, name) for name in [ADMIN, *PEOPLE]}
    yield World(base, db, app, data_dir, tokens)
    app.state.settings = defaults


def test_viewers_and_accounts_without_a_role_may_not_upload(world: World) -> None:
    body = tarball()
    digest = hashlib.sha256(body).hexdigest()
    for name, says in (("vic", "only the viewer role"), ("nora", "no role in any environment")):
        refused = world.upload(name, body)
        assert refused.status_code == 403, refused.text
        assert refused.headers["content-type"] == PROBLEM
        problem = refused.json()
        assert problem["type"] == "urn:armillary:problem:forbidden"
        assert says in problem["detail"] and "user or operator role" in problem["detail"], problem
    assert not world.stored(digest)
    assert world.call("vic", "GET", f"/sources/{digest}").status_code == 404

    for name in ("uma", "olga", ADMIN):  # who may deploy somewhere, and admins
        mine = tarball()
        accepted = world.upload(name, mine)
        assert accepted.status_code == 201, (name, accepted.text)
        assert accepted.json()["owned"] is True and world.stored(accepted.json()["id"])


def test_quota_of_stored_bytes_per_user(world: World) -> None:
    first = tarball({"data": incompressible(3000)})
    second = tarball({"data": incompressible(3000)})
    quota = len(first) + len(second) - 100  # room for one of them, not both
    world.configure(source_quota_bytes=quota)

    assert world.upload("uma", first).status_code == 201
    for send in ({"content": second}, {"content": chunked(second)}):  # refused up front, then while streaming
        with world.client("uma") as client:
            refused = client.post("/sources", headers=GZIP, **send)
        assert refused.status_code == 403, refused.text
        assert refused.headers["content-type"] == PROBLEM
        problem = refused.json()
        assert problem["type"] == "urn:armillary:problem:quota-exceeded"
        assert problem["limit"] == "source_bytes" and problem["quota"] == quota, problem
        assert problem["usage"] == len(first), problem
        assert str(quota) in problem["detail"] and str(len(first)) in problem["detail"], problem
        assert not world.stored(hashlib.sha256(second).hexdigest())  # nothing stored
    assert not list((world.data_dir / "sources").glob(".incoming-*"))  # no temporary file left either

    # Re-uploading what you already own charges nothing: accepted even near the quota, as a 200.
    again = world.upload("uma", first)
    assert again.status_code == 200, again.text
    again = world.upload("uma", chunked(first))
    assert again.status_code == 200, again.text
    # The quota is per user, and admins have none.
    assert world.upload("ulla", second).status_code == 201
    assert world.upload(ADMIN, tarball({"data": incompressible(3 * quota)})).status_code == 201
    # Deleting gives the room back.
    assert world.call("uma", "DELETE", f"/sources/{hashlib.sha256(first).hexdigest()}").status_code == 204
    assert world.upload("uma", second).status_code == 201


def test_the_quota_is_checked_on_the_recorded_size(world: World) -> None:
    """Two users' same bytes: each is charged in full, so the second may be refused though the file exists."""
    body = tarball({"data": incompressible(2000)})
    world.configure(source_quota_bytes=len(body) + 10)
    assert world.upload("uma", tarball({"data": incompressible(50)})).status_code == 201
    assert world.upload("ulla", body).status_code == 201
    refused = world.upload("uma", body)
    assert refused.status_code == 403 and refused.json()["type"].endswith("quota-exceeded"), refused.text
    assert world.stored(hashlib.sha256(body).hexdigest())  # ulla's still there
    with world.client(ADMIN) as admin:
        assert admin.get(f"/sources/{hashlib.sha256(body).hexdigest()}").json()["owners"] == ["ulla"]


def test_concurrent_uploads_cannot_overshoot_the_quota(world: World) -> None:
    bodies = [tarball({"data": incompressible(1500)}) for _ in range(6)]
    world.configure(source_quota_bytes=max(map(len, bodies)) * 2 + 100)  # room for two
    statuses: list[int] = []

    def send(body: bytes) -> None:
        statuses.append(world.upload("uma", chunked(body)).status_code)  # no Content-Length: no early refusal

    threads = [threading.Thread(target=send, args=(body,)) for body in bodies]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(statuses) == [201, 201, 403, 403, 403, 403], statuses
    with world.client("uma") as client:
        listed = client.get("/sources").json()["items"]
    assert len(listed) == 2
    assert sum(world.stored(hashlib.sha256(body).hexdigest()) for body in bodies) == 2


def test_owners_delete_their_own_and_admins_any(world: World) -> None:
    body = tarball()
    source_id = world.upload("uma", body).json()["id"]
    path = f"/sources/{source_id}"
    for name in ("ulla", "olga", "vic", "nora"):  # they see it (they know its id), but it is not theirs
        shown = world.call(name, "GET", path)
        assert shown.status_code == 200 and shown.json()["owned"] is False and "owners" not in shown.json()
        refused = world.call(name, "DELETE", path)
        assert refused.status_code == 403, refused.text
        assert "only its owners" in refused.json()["detail"]
    assert world.stored(source_id)
    with world.client("uma") as uma:
        assert uma.get(path).json()["owned"] is True
        assert [item["id"] for item in uma.get("/sources").json()["items"]] == [source_id]
        assert uma.delete(path).status_code == 204
        assert uma.get(path).status_code == 404
        assert uma.delete(path).status_code == 404
        assert uma.get("/sources").json()["items"] == []
    assert not world.stored(source_id)

    other = world.upload("uma", tarball()).json()["id"]
    assert world.call(ADMIN, "GET", f"/sources/{other}").json()["owners"] == ["uma"]
    assert world.call(ADMIN, "DELETE", f"/sources/{other}").status_code == 204
    assert not world.stored(other)
    assert world.call("uma", "GET", f"/sources/{other}").status_code == 404


def test_two_owners_of_the_same_bytes(world: World) -> None:
    body = tarball()
    first = world.upload("uma", body)
    second = world.upload("olga", body)
    assert first.status_code == 201 and second.status_code == 201, (first.text, second.text)  # each owns it
    source_id = first.json()["id"]
    assert second.json()["id"] == source_id
    assert world.call(ADMIN, "GET", f"/sources/{source_id}").json()["owners"] == ["olga", "uma"]

    assert world.call("uma", "DELETE", f"/sources/{source_id}").status_code == 204
    assert world.stored(source_id)  # still olga's
    assert world.call("uma", "GET", f"/sources/{source_id}").json()["owned"] is False
    assert world.call("uma", "DELETE", f"/sources/{source_id}").status_code == 403
    assert world.call("olga", "GET", f"/sources/{source_id}").json()["owned"] is True
    assert world.call(ADMIN, "GET", f"/sources/{source_id}").json()["owners"] == ["olga"]

    assert world.call("olga", "DELETE", f"/sources/{source_id}").status_code == 204
    assert not world.stored(source_id)
    with world.db.session() as session:
        assert session.scalar(select(UploadedSource).where(UploadedSource.id == source_id)) is None


def test_sources_stored_before_owners_were_recorded(world: World) -> None:
    """A file on disk without rows stays readable (and deployable); only an admin may delete it."""
    body = tarball()
    source_id = hashlib.sha256(body).hexdigest()
    (world.data_dir / "sources").mkdir(exist_ok=True)
    (world.data_dir / "sources" / f"{source_id}.tar.gz").write_bytes(body)
    shown = world.call("vic", "GET", f"/sources/{source_id}")
    assert shown.status_code == 200 and shown.json()["size"] == len(body) and shown.json()["owned"] is False
    refused = world.call("uma", "DELETE", f"/sources/{source_id}")
    assert refused.status_code == 403 and "only an admin" in refused.json()["detail"], refused.text
    assert world.call(ADMIN, "DELETE", f"/sources/{source_id}").status_code == 204
    assert not world.stored(source_id)

    # Uploading such bytes again makes the uploader their owner.
    (world.data_dir / "sources" / f"{source_id}.tar.gz").write_bytes(body)
    assert world.upload("uma", body).status_code == 201
    assert world.call("uma", "GET", f"/sources/{source_id}").json()["owned"] is True


def test_too_large(world: World) -> None:
    world.configure(source_max_bytes=1000)
    big = tarball({"big": incompressible(6000)})
    assert len(big) > 1000
    declared = world.upload("uma", big)
    assert declared.status_code == 413, declared.text
    streamed = world.upload("uma", chunked(big))  # no Content-Length: enforced while the body streams in
    assert streamed.status_code == 413, streamed.text
    assert not world.stored(hashlib.sha256(big).hexdigest())
    assert world.call("uma", "GET", f"/sources/{hashlib.sha256(big).hexdigest()}").status_code == 404
