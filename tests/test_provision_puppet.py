"""The puppet provisioner through the real app (SQLite and PostgreSQL), with Debian's real ``puppet``.

A small module is built here into a tarball and served from a loopback HTTP server; the type is posted
in the seed's shape as YAML (``puppet-std: {module: …}``, ``classes: …``). The system is an sshd in a
network namespace (tests/support/sshhosts.py), which is this machine: ``puppet apply`` really runs,
as root, and the class writes only under the host's per-test scratch directory (a class parameter).
Without ``puppet`` (scripts/peers/puppet.sh installs it) these tests skip locally and fail under CI=true.
"""

from __future__ import annotations

import glob
import hashlib
import io
import json
import shutil
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from armillary.failures import PermanentFailure as PermanentStepError
from armillary.provisioners.puppet import (
    PuppetProvisioner,
    check_args,
    counts_from_summary,
    fact_env,
    fetch_module,
    inspect_tarball,
    manifest,
    puppet_value,
    redact_url,
    short_name,
)
from armillary.sources import Roots
from tests.support.httpfiles import FileServer, serve_files
from tests.support.jobs import NOOP_SCRIPT, act, wait_job
from tests.support.peers import missing_peer
from tests.support.provisioning import events, setup_ssh_system
from tests.support.sshhosts import SshHost, ssh_host

MOTD_INIT = """\
class motd (
  String $path,
  String $message,
  Integer $count,
  Float $ratio,
  Boolean $append,
  Array $words,
  Hash $options,
  Optional[String] $nothing = 'the default',
) {
  file { $path:
    ensure  => file,
    content => "${message}
count=${count} ratio=${ratio} append=${append} words=${words} options=${options} nothing=${nothing}
colour=${facts['colour']} port=${facts['app_port']} host=${facts['armillary_hostname']}
",
  }
}
"""

# What puppet wants of a module's metadata.json (it ignores a module without "source", say).
METADATA = json.dumps(
    {
        "name": "armillary-motd",
        "version": "1.0.0",
        "author": "armillary",
        "summary": "writes a file",
        "license": "Apache-2.0",
        "source": "https://example.invalid/motd",
        "dependencies": [],
    }
)

# The seed's own example, as a sandbox: redis-sandbox-0.3.4/modules/redis/…; this class fails.
REDIS_INIT = """\
class redis (Boolean $append, String $dir) {
  file { "${dir}/no/such/dir/redis.conf":
    ensure  => file,
    content => "appendonly ${append}\\n",
  }
}
"""


def tarball(files: dict[str, str], *, mode: str = "w:gz") -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode=mode) as archive:  # type: ignore[call-overload]
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.uid, info.uname = len(data), 0o644, 4242, "someone"
            archive.addfile(info, io.BytesIO(data))
    return out.getvalue()


@pytest.fixture
def puppet_peer(tmp_path: Path) -> Iterator[SshHost]:
    if shutil.which("puppet") is None:
        missing_peer("puppet is not installed (scripts/peers/puppet.sh installs Debian's puppet)")
    with ssh_host(tmp_path) as host:
        yield host


@pytest.fixture
def modules(tmp_path: Path) -> Iterator[FileServer]:
    served = tmp_path / "served"
    served.mkdir()
    (served / "armillary-motd-1.0.0.tar.gz").write_bytes(
        tarball(
            {
                "armillary-motd-1.0.0/metadata.json": METADATA,
                "armillary-motd-1.0.0/manifests/init.pp": MOTD_INIT,
            }
        )
    )
    (served / "redis-sandbox-0.3.4.tar.gz").write_bytes(
        tarball({"redis-sandbox-0.3.4/modules/redis/manifests/init.pp": REDIS_INIT})
    )
    with serve_files(served) as server:
        yield server


def seed_type(server: FileServer, scratch: Path, *, args: list[str]) -> str:
    """The type in the seed's shape, as YAML."""
    return yaml.safe_dump(
        {
            "type": "motd",
            "puppet-std": {
                "module": {"name": "armillary-motd-1.0.0", "src": server.url("armillary-motd-1.0.0.tar.gz")},
                "args": args,
                "remote_tmp": str(scratch),
            },
            "classes": {
                "motd": {
                    "path": str(scratch / "motd"),
                    "message": 'it\'s "quoted", \\ ${not_interpolated} $x',
                    "count": 3,
                    "ratio": 1e20,
                    "append": True,
                    "words": ["a", "b c"],
                    "options": {"mode": "0644", "nice": 2},  # keys of one length: JSONB sorts by length
                    "nothing": None,
                }
            },
        },
        sort_keys=False,
    )


def post_yaml(api: httpx.Client, method: str, path: str, text: str) -> httpx.Response:
    return api.request(method, path, content=text, headers={"content-type": "application/yaml"})


def run(api: httpx.Client, action: str) -> dict[str, Any]:
    response = act(api, "web1", action)
    assert response.status_code == 202, response.text
    return wait_job(api, response.json()["id"], timeout_s=120)


def job_dirs(host: SshHost) -> list[str]:
    return glob.glob(str(host.scratch / "armillary-job*"))


def test_seed_type_stages_provisions_again_and_fails_loudly(
    api: httpx.Client, puppet_peer: SshHost, modules: FileServer
) -> None:
    scratch = puppet_peer.scratch
    made = post_yaml(api, "POST", "/types", seed_type(modules, scratch, args=["--verbose", "--tags=motd"]))
    assert made.status_code == 201, made.text
    spec = made.json()["provisioner"]["spec"]
    assert made.json()["provisioner"]["kind"] == "puppet" and spec["classes"]["motd"]["count"] == 3
    setup_ssh_system(api, puppet_peer, {"kind": "script", "spec": NOOP_SCRIPT})
    assert api.patch("/systems/web1", json={"type": "motd"}).status_code == 200

    # stage: the module fetched, unpacked as "motd" (metadata.json's name), the class applied.
    job = run(api, "stage")
    assert job["status"] == "succeeded", job["error"]
    assert (scratch / "motd").read_text() == (
        'it\'s "quoted", \\ ${not_interpolated} $x\n'
        "count=3 ratio=1.0e+20 append=true words=[a, b c] options={mode => 0644, nice => 2} nothing=the default\n"
        "colour=blue port=8080 host=web1\n"
    )
    assert job["context"]["provisioner"] == "puppet"
    counts = job["context"]["counts"]
    assert counts["changed"] == 1 and counts["failed"] == 0 and counts["ok"] >= 1, counts
    assert api.get("/systems/web1").json()["state"] == "ready"
    logged = [e for e in events(api, job["id"]) if e["kind"] == "log" and e["step"] == "provision"]
    messages = [e["message"] for e in logged]
    assert any("one module, unpacked as motd" in m for m in messages), messages
    assert any("/Stage[main]/Motd/File[" in m and "defined content" in m for m in messages), messages
    assert any(m.startswith("✔ puppet apply exited 2") for m in messages), messages
    assert job_dirs(puppet_peer) == [], "the per-job directory was left behind"
    assert modules.hits["/armillary-motd-1.0.0.tar.gz"] == 1

    # Again: nothing to change (exit 0).
    job = run(api, "provision")
    assert job["status"] == "succeeded", job["error"]
    assert job["context"]["counts"]["changed"] == 0 and job["context"]["counts"]["failed"] == 0
    messages = [e["message"] for e in events(api, job["id"]) if e["kind"] == "log"]
    assert any(m.startswith("✔ puppet apply exited 0") and "nothing to change" in m for m in messages)

    # The seed's own example (a sandbox with modules/redis): its class fails; the job says why.
    redis = {
        "kind": "puppet",
        "spec": {
            "module": {"name": "redis-sandbox-0.3.4", "src": modules.url("redis-sandbox-0.3.4.tar.gz")},
            "classes": {"redis": {"append": True, "dir": str(scratch)}},
            "args": [],
            "remote_tmp": str(scratch),
        },
    }
    assert api.patch("/types/motd", json={"provisioner": redis}).status_code == 200
    job = run(api, "provision")
    assert job["status"] == "failed", job
    error = job["error"]
    assert "puppet apply on web1 exited 4 (resources failed; 1 failed" in error, error
    assert "no/such/dir/redis.conf" in error and "No such file or directory" in error, error
    assert api.get("/systems/web1").json()["state"] == "error"
    levels = {(e["level"], e["message"].split(":")[0]) for e in events(api, job["id"]) if e["kind"] == "log"}
    assert ("error", "Error") in levels
    assert job_dirs(puppet_peer) == []

    # A module that is not there: the job fails before the machine is touched.
    redis["spec"]["module"]["src"] = modules.url("gone-1.0.0.tar.gz")
    assert api.patch("/types/motd", json={"provisioner": redis}).status_code == 200
    job = run(api, "provision")
    assert job["status"] == "failed" and "HTTP 404" in job["error"], job

    # A machine without puppet: the job says so.
    redis["spec"]["module"]["src"] = modules.url("redis-sandbox-0.3.4.tar.gz")
    redis["spec"]["executable"] = "/usr/bin/no-such-puppet"
    assert api.patch("/types/motd", json={"provisioner": redis}).status_code == 200
    job = run(api, "provision")
    assert job["status"] == "failed" and "puppet is not installed on web1" in job["error"], job["error"]
    assert job_dirs(puppet_peer) == []


def test_bad_args_and_classes_are_refused_when_the_type_is_saved(api: httpx.Client, tmp_path: Path) -> None:
    server = FileServer(base_url="http://127.0.0.1:9", directory=tmp_path)
    for args, words in [
        (["--modulepath=/etc/puppet/code"], "'--modulepath=/etc/puppet/code' is not allowed"),
        (["--execute", "exec { 'x': }"], "'--execute' is not allowed"),
        (["--tags", "a b"], "--tags 'a b': the value must be comma-separated tags"),
        (["--strict"], "--strict needs a value"),
    ]:
        refused = post_yaml(api, "POST", "/types", seed_type(server, tmp_path, args=args))
        assert refused.status_code == 422, refused.text
        body = refused.json()
        assert body["errors"][0]["field"] == "provisioner.spec" and words in body["detail"], body
    bad_class = seed_type(server, tmp_path, args=[]).replace("  motd:\n", "  'motd; exec':\n")
    refused = post_yaml(api, "POST", "/types", bad_class)
    assert refused.status_code == 422 and "not a puppet class name" in refused.json()["detail"]
    assert (
        post_yaml(api, "POST", "/types", seed_type(server, tmp_path, args=["--noop", "-d"])).status_code
        == 201
    )


# ---------------------------------------------------------------- the pieces, alone (no puppet needed)


def test_spec_values_args_and_facts() -> None:
    good = {"module": {"name": "m", "src": "https://x.example/m.tgz"}, "classes": {"m": None}}
    PuppetProvisioner.validate_spec(good)
    for change, words in [
        ({"module": {"name": "m", "src": "ftp://x/m.tgz"}}, "http:// or https://"),
        ({"module": {"name": "m", "src": "/etc/m.tgz"}}, "relative to the modules directory"),
        ({"module": {"name": "m", "src": "a/../../m.tgz"}}, "without '..'"),
        ({"classes": {}}, "at least one class"),
        ({"classes": {"m": {"Bad-Param": 1}}}, "not a puppet parameter name"),
        ({"classes": {"m": {"p": 10**400}}}, "too large"),
        ({"classes": {"m": {"p": float("nan")}}}, "not a number"),
        ({"remote_tmp": "/tmp/a:b"}, "absolute path of letters"),
        ({"executable": "puppet apply"}, "command name"),
        ({"shell": "bash"}, "Extra inputs"),
    ]:
        with pytest.raises(PermanentStepError, match=words):
            PuppetProvisioner.validate_spec({**good, **change})
    assert check_args(["--detailed-exitcodes", "--noop", "--tags", "a,b::c", "--log_level=debug"]) == [
        "--noop",
        "--tags",
        "a,b::c",
        "--log_level",
        "debug",
    ]
    assert puppet_value({"k": ["it's", "\\", None, True, 1, 1.5e-3, 2.0, 1e20]}) == (
        "{'k' => ['it\\'s', '\\\\', undef, true, 1, 0.0015, 2.0, 1.0e20]}"
    )
    assert redact_url("https://u:p@h.example:8443/m.tgz?token=x") == "https://***@h.example:8443/m.tgz?***"
    assert puppet_value(2**64) == "1.8446744073709552e19"  # past Puppet's Integer: a Float
    assert manifest(["a", "b::c"]).splitlines()[1:] == ["class { 'a': }", "class { 'b::c': }"]
    env, collisions = fact_env({"App-Port": 1, "app_port": 2, "flag": False, "map": {"a": 1}}, {"x": "y"})
    assert env == {"FACTER_app_port": "2", "FACTER_flag": "false", "FACTER_map": '{"a":1}', "FACTER_x": "y"}
    assert collisions == ["'App-Port' and 'app_port' both become fact app_port"]
    summary = "resources:\n  changed: 2\n  failed: 1\n  failed_to_restart: 0\n  skipped: 1\n  total: 9\n"
    assert counts_from_summary(summary) == {"ok": 7, "changed": 2, "failed": 1}
    assert counts_from_summary("not: [valid") is None and counts_from_summary("--- {}\n") is None


def test_tarball_layouts_and_module_names() -> None:
    init = {"manifests/init.pp": "class x {}\n"}
    assert short_name("redis-sandbox-0.3.4") == "sandbox" and short_name("puppetlabs/ntp") == "ntp"
    assert short_name("ntp") == "ntp" and short_name("acme-web_app-2.0.0-rc1") == "web_app"
    # A Forge release: the directory is named from metadata.json, whatever the release is called.
    forge = {f"acme-ntp-9.1.0/{k}": v for k, v in init.items()}
    forge["acme-ntp-9.1.0/metadata.json"] = json.dumps({"name": "acme/ntp"})
    layout = inspect_tarball(tarball(forge), "whatever-1.0.0")
    assert (layout.kind, layout.module_dir, layout.strip, layout.compression) == ("module", "ntp", 1, "-z")
    # No metadata: from the module's name; a module at the archive's top; other compressions.
    assert (
        inspect_tarball(tarball({f"r/{k}": v for k, v in init.items()}), "acme-web-1.2").module_dir == "web"
    )
    layout = inspect_tarball(tarball(init, mode="w:bz2"), "ntp")
    assert (layout.module_dir, layout.strip, layout.compression) == ("ntp", 0, "-j")
    assert inspect_tarball(tarball(init, mode="w:xz"), "ntp").compression == "-J"
    assert inspect_tarball(tarball(init, mode="w"), "ntp").compression == ""
    # A sandbox: modules/ at the top or in the one top directory.
    layout = inspect_tarball(tarball({"s-1/modules/redis/manifests/init.pp": "x"}), "s-1")
    assert (layout.kind, layout.modules) == ("sandbox", "s-1/modules")
    assert inspect_tarball(tarball({"modules/redis/manifests/init.pp": "x"}), "s").modules == "modules"
    with pytest.raises(PermanentStepError, match="module name 'Bad'"):
        inspect_tarball(tarball(init), "acme-Bad-1.0")
    with pytest.raises(PermanentStepError, match="neither a puppet module"):
        inspect_tarball(tarball({"README": "hi"}), "m")
    with pytest.raises(PermanentStepError, match="not a tar archive"):
        inspect_tarball(b"<html>not found</html>", "m")
    with pytest.raises(PermanentStepError, match="outside the archive"):
        inspect_tarball(tarball({"m/manifests/init.pp": "x", "m/../../evil": "x"}), "m")
    for kind in (tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.FIFOTYPE):
        out = io.BytesIO()
        with tarfile.open(fileobj=out, mode="w") as archive:
            info = tarfile.TarInfo("m/manifests/init.pp")
            info.type, info.linkname = kind, "/etc/passwd"
            archive.addfile(info)
        with pytest.raises(PermanentStepError, match="link or special file"):
            inspect_tarball(out.getvalue(), "m")


def test_module_files_stay_inside_the_modules_directory(tmp_path: Path) -> None:
    root = tmp_path / "modules"
    root.mkdir()
    data = tarball({"manifests/init.pp": "class m {}\n"})
    (root / "m.tgz").write_bytes(data)
    (tmp_path / "secret.tgz").write_bytes(data)
    (root / "link.tgz").symlink_to(tmp_path / "secret.tgz")
    spec = PuppetProvisioner.validate_spec({"module": {"name": "m", "src": "m.tgz"}, "classes": ["m"]})
    with pytest.raises(PermanentStepError, match="no modules directory"):
        fetch_module(spec.module, 5, Roots())
    roots = Roots(puppet_modules=root)  # the server's ARMILLARY_PUPPET_MODULES_DIR
    assert fetch_module(spec.module, 5, roots) == data
    for src, words in [("link.tgz", "outside the modules directory"), ("gone.tgz", "no file gone.tgz")]:
        with pytest.raises(PermanentStepError, match=words):
            fetch_module(spec.module.model_copy(update={"src": src}), 5, roots)
    wrong = spec.module.model_copy(update={"sha256": "0" * 64})
    with pytest.raises(PermanentStepError, match="SHA-256 is " + hashlib.sha256(data).hexdigest()):
        fetch_module(wrong, 5, roots)
