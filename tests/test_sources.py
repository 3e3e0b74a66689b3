"""Deploy sources uploaded to the API (``POST /api/v1/sources``), through the real app over HTTP.

Every tarball carries a random marker, so a test's uploads are its own in the session's shared server
(storage is content-addressed); the deploy from an upload, on a real SSH host, is in test_deploy.py.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import tarfile
import uuid
from typing import Any

import httpx
import pytest

GZIP = {"Content-Type": "application/gzip"}


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


def test_not_a_tarball_wrong_type_and_too_large(api: httpx.Client, monkeypatch: pytest.MonkeyPatch) -> None:
    plain = api.post("/sources", content=b"just text", headers=GZIP)
    assert plain.status_code == 422 and "gzip" in plain.json()["detail"], plain.text
    not_tar = api.post("/sources", content=gzip.compress(b"not a tar archive" * 100), headers=GZIP)
    assert not_tar.status_code == 422 and "tarball" in not_tar.json()["detail"], not_tar.text
    empty = api.post("/sources", content=b"", headers=GZIP)
    assert empty.status_code == 422, empty.text
    typed = api.post("/sources", content=tarball(), headers={"Content-Type": "application/json"})
    assert typed.status_code == 415, typed.text

    monkeypatch.setenv("ARMILLARY_SOURCE_MAX_BYTES", "1000")  # the in-process server reads it per request
    big = tarball({"big": "".join(uuid.uuid4().hex for _ in range(200))})
    assert len(big) > 1000
    declared = api.post("/sources", content=big, headers=GZIP)
    assert declared.status_code == 413, declared.text

    def chunks():  # no Content-Length: the limit is enforced while the body streams in
        for start in range(0, len(big), 256):
            yield big[start:start + 256]

    streamed = api.post("/sources", content=chunks(), headers=GZIP)
    assert streamed.status_code == 413, streamed.text
    assert api.get(f"/sources/{hashlib.sha256(big).hexdigest()}").status_code == 404
