"""The transports against real peers: sshd in a network namespace, podman's Docker API, this machine.

Nothing is mocked on the far side: commands really run, files really land, host keys really change, and
a timed-out command is really looked for (by its pid) afterwards. The one stand-in is the step context
handed to ``transport_for`` in ``test_transport_for_records_then_verifies_the_host_key``: a small object
with the few methods the builder calls (the engine's real context is exercised by
tests/test_provision_script.py through the API).
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from armillary.remote.base import (
    CommandTimeout,
    HostKeyChanged,
    PermanentTransportError,
    TransientTransportError,
    UnknownTransport,
    get_transport,
    transports,
)
from armillary.remote.docker_exec import DockerExecTransport
from armillary.remote.local import LocalTransport
from armillary.remote.lxc_attach import LxcAttachTransport
from armillary.remote.ssh import WRAPPER, SshTransport, encode_env
from tests.support import podman as podman_support
from tests.support.peers import missing_peer
from tests.support.podman import PodmanPeer
from tests.support.sshhosts import SshHost, ssh_host

# The peer's fixtures (tests/support/podman.py), made visible to this module's tests.
podman_peer = podman_support.podman_peer
podman = podman_support.podman

ALL_BYTES = bytes(range(256)) * 3
TRICKY = 'it\'s "quoted" $HOME `id` $(id) \\ back\nslash; ; & | * ? ~ é ∑ \t tab'


@pytest.fixture
def ssh_peer(tmp_path: Path) -> Iterator[SshHost]:
    with ssh_host(tmp_path) as host:
        yield host


def ssh(host: SshHost, **kwargs: Any) -> SshTransport:
    settings: dict[str, Any] = {
        "port": host.port,
        "user": host.user,
        "private_key": host.private_key_pem,
        "host_key": host.known_fingerprint,
        "connect_timeout": 5,
    }
    settings.update(kwargs)
    return SshTransport(host.address, **settings)


class Lines:
    """An ``on_line`` callback keeping (line, stream, when)."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, float]] = []

    def __call__(self, line: str, stream: str) -> None:
        self.seen.append((line, stream, time.monotonic()))

    def of(self, stream: str) -> list[str]:
        return [line for line, name, _ in self.seen if name == stream]

    def when(self, text: str) -> float:
        return next(at for line, _, at in self.seen if line == text)


def _alive(host: SshHost, pid: str) -> bool:
    """Whether process ``pid`` runs on the host (a killed one that init has not reaped yet does not)."""
    stat = host.run(["cat", f"/proc/{pid}/stat"], check=False)
    return stat.returncode == 0 and stat.stdout.rsplit(")", 1)[1].split()[0] not in {"Z", "X"}


def _runs_here(pid: str) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] not in {"Z", "X"}
    except FileNotFoundError:
        return False


# ---------------------------------------------------------------- registry


def test_registered_transports() -> None:
    assert transports() == {"docker-exec": DockerExecTransport, "local": LocalTransport, "ssh": SshTransport,
                            "lxc-attach": LxcAttachTransport}
    assert get_transport("ssh") is SshTransport
    with pytest.raises(UnknownTransport, match="installed transports: docker-exec, local, lxc-attach, ssh"):
        get_transport("telnet")


# ---------------------------------------------------------------- ssh


def test_ssh_run_streams_lines_and_reports_exit_codes(ssh_peer: SshHost) -> None:
    with ssh(ssh_peer) as transport:
        lines = Lines()
        started = time.monotonic()
        result = transport.run(
            ["sh", "-c", "echo one; sleep 1; echo two >&2; printf 'no newline'; exit 3"], on_line=lines
        )
        ended = time.monotonic()
        assert result.exit_code == 3 and not result.ok
        assert lines.of("stdout") == ["one", "no newline"] and lines.of("stderr") == ["two"]
        # Streamed: the first line arrived while the command was still running (a second before its end).
        assert lines.when("one") - started < ended - started - 0.7
        assert result.output_tail.splitlines()[-3:] == ["one", "two", "no newline"]

        # Each word is one argument: shell syntax in the data stays data.
        injected = ssh_peer.scratch / "injected"
        words = ["a b", "$HOME", f"; touch {injected}", f"$(touch {injected})", "'q'", ""]
        lines = Lines()
        assert transport.run(["printf", "[%s]\\n", *words], on_line=lines).exit_code == 0
        assert lines.of("stdout") == [f"[{word}]" for word in words]
        assert not injected.exists()

        assert transport.run(["true"]).exit_code == 0
        assert transport.run(["false"]).exit_code == 1
        missing = transport.run(["no-such-command-here"])
        assert missing.exit_code == 127 and "not found" in missing.output_tail
        assert transport.run(["sh", "-c", "kill -TERM $$"]).exit_code == 128 + 15  # killed by a signal

        with pytest.raises(TypeError, match="not a string"):
            transport.run("echo hi")  # type: ignore[arg-type]


def test_ssh_env_and_cwd(ssh_peer: SshHost) -> None:
    env = {"TRICKY": TRICKY, "EMPTY": "", "SECRETISH": "s3cret-value-9f1c", "path_like": "/a:/b"}
    with ssh(ssh_peer) as transport:
        out = ssh_peer.scratch / "env.txt"
        script = 'printf "%s|" "$TRICKY" "$EMPTY" "$SECRETISH" "$path_like" > "$1"; pwd'
        lines = Lines()
        result = transport.run(
            ["sh", "-c", script, "sh", str(out)], env=env, cwd=str(ssh_peer.scratch), on_line=lines
        )
        assert result.exit_code == 0, result.output_tail
        assert out.read_text() == f"{TRICKY}||s3cret-value-9f1c|/a:/b|"
        assert lines.of("stdout") == [str(ssh_peer.scratch)]
        # The values never appear on a command line: not in the wrapper's (the command's parent's) argv.
        lines = Lines()
        transport.run(["sh", "-c", 'tr "\\0" " " < /proc/$PPID/cmdline'], env=env, on_line=lines)
        cmdline = " ".join(lines.of("stdout"))
        assert "armillary-run" in cmdline and "s3cret-value-9f1c" not in cmdline
        # A working directory that does not exist: exit 125, and a line saying why.
        failed = transport.run(["pwd"], cwd=str(ssh_peer.scratch / "nowhere"))
        assert failed.exit_code == 125 and "nowhere" in failed.output_tail
        with pytest.raises(ValueError, match="not valid"):
            transport.run(["true"], env={"NOT-VALID": "x"})


@pytest.mark.parametrize("use_sftp", [True, False], ids=["sftp", "cat"])
def test_ssh_put_and_get(ssh_peer: SshHost, tmp_path: Path, use_sftp: bool) -> None:
    with ssh(ssh_peer, use_sftp=use_sftp) as transport:
        target = ssh_peer.scratch / "blob.bin"
        transport.put(ALL_BYTES, str(target), mode=0o600)
        assert target.read_bytes() == ALL_BYTES
        assert ssh_peer.run(["stat", "-c", "%a", str(target)]).stdout.strip() == "600"
        assert transport.get(str(target)) == ALL_BYTES

        local = tmp_path / "script.sh"
        local.write_text("#!/bin/sh\necho from a file\n")
        transport.put(local, str(ssh_peer.scratch / "script.sh"), mode=0o755)
        lines = Lines()
        assert transport.run([str(ssh_peer.scratch / "script.sh")], on_line=lines).exit_code == 0
        assert lines.of("stdout") == ["from a file"]
        transport.put(b"replaced", str(target), mode=0o640)  # overwrite, and the new mode applies
        assert transport.get(str(target)) == b"replaced"
        assert ssh_peer.run(["stat", "-c", "%a", str(target)]).stdout.strip() == "640"

        with pytest.raises(PermanentTransportError, match="cannot read .*missing"):
            transport.get(str(ssh_peer.scratch / "missing"))
        with pytest.raises(PermanentTransportError, match="cannot write"):
            transport.put(b"x", str(ssh_peer.scratch / "no-dir" / "file"))

        made = transport.make_temp_dir("armillary-test-", parent=str(ssh_peer.scratch))
        assert Path(made).is_dir() and Path(made).parent == ssh_peer.scratch
        assert oct(Path(made).stat().st_mode & 0o777) == oct(0o700)
        transport.put(b"x", f"{made}/f")
        transport.remove_tree(made)
        assert not Path(made).exists()


def test_ssh_host_key_recorded_then_verified_and_change_detected(ssh_peer: SshHost) -> None:
    recorded: list[tuple[str, str]] = []
    with ssh(ssh_peer, host_key=None, on_first_contact=lambda fp, kind: recorded.append((fp, kind))) as first:
        assert first.run(["true"]).exit_code == 0
    assert recorded == [(ssh_peer.known_fingerprint, "ed25519")]
    with ssh(ssh_peer, host_key=recorded[0][0]) as again:
        assert again.run(["true"]).exit_code == 0
    # Neither a known key nor a way to record one: nothing is trusted.
    with pytest.raises(PermanentTransportError, match="no host key is known"):
        ssh(ssh_peer, host_key=None).run(["true"])

    old = ssh_peer.known_fingerprint
    new = ssh_peer.rotate_host_key()
    with pytest.raises(HostKeyChanged) as failed:
        ssh(ssh_peer, host_key=old).run(["true"])
    message = str(failed.value)
    assert "HOST KEY CHANGED" in message and "possible MITM" in message and old in message and new in message
    assert failed.value.transient is False
    for call in (lambda t: t.put(b"x", str(ssh_peer.scratch / "x")), lambda t: t.get("/etc/hostname")):
        with pytest.raises(HostKeyChanged):
            call(ssh(ssh_peer, host_key=old))
    assert not (ssh_peer.scratch / "x").exists()


def test_ssh_timeout_kills_the_remote_command(ssh_peer: SshHost) -> None:
    pidfile = ssh_peer.scratch / "sleep.pid"
    with ssh(ssh_peer) as transport:
        lines = Lines()
        started = time.monotonic()
        with pytest.raises(CommandTimeout) as timed_out:
            transport.run(
                ["sh", "-c", 'echo $$ > "$1"; echo started; exec sleep 30', "sh", str(pidfile)],
                timeout=2,
                on_line=lines,
            )
        took = time.monotonic() - started
        assert 2 <= took < 12, took
        assert timed_out.value.killed is True and timed_out.value.transient is False
        assert "ran past its timeout of 2s and was killed" in str(timed_out.value)
        assert "started" in timed_out.value.output_tail and lines.of("stdout") == ["started"]
        pid = pidfile.read_text().strip()
        assert not _alive(ssh_peer, pid), f"sleep {pid} still runs after the timeout"

        # What the command started goes too (its process group), and the transport is still usable.
        children = ssh_peer.scratch / "children.pid"
        with pytest.raises(CommandTimeout):
            transport.run(
                [
                    "sh",
                    "-c",
                    'sleep 30 & echo $! > "$1"; sleep 31 & echo $! >> "$1"; wait',
                    "sh",
                    str(children),
                ],
                timeout=1.5,
            )
        for pid in children.read_text().split():
            assert not _alive(ssh_peer, pid), f"child {pid} still runs after the timeout"
        assert transport.run(["echo", "after"]).output_tail == "after"

        # Whoever takes the lines fails (the job log's database, say): the command does not run on.
        def refuse(line: str, stream: str) -> None:
            raise RuntimeError(f"cannot log {line!r}")

        with pytest.raises(RuntimeError, match="cannot log 'started'"):
            transport.run(
                ["sh", "-c", 'echo $$ > "$1"; echo started; exec sleep 30', "sh", str(pidfile)],
                on_line=refuse,
            )
        pid = pidfile.read_text().strip()
        deadline = time.monotonic() + 10
        while _alive(ssh_peer, pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not _alive(ssh_peer, pid), f"sleep {pid} still runs after its caller failed"
        assert transport.run(["echo", "still usable"]).output_tail == "still usable"


def test_ssh_connection_failures_are_classified(ssh_peer: SshHost, tmp_path: Path) -> None:
    with pytest.raises(TransientTransportError, match="connection refused"):
        ssh(ssh_peer, port=ssh_peer.closed_port).run(["true"])
    key = tmp_path / "stranger"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True, timeout=30)
    with pytest.raises(PermanentTransportError, match="authentication failed") as failed:
        ssh(ssh_peer, private_key=key.read_text()).run(["true"])
    assert failed.value.transient is False and key.read_text() not in str(failed.value)
    with pytest.raises(PermanentTransportError, match="no credentials"):
        SshTransport(ssh_peer.address)


def test_transport_for_records_then_verifies_the_host_key(ssh_peer: SshHost) -> None:
    """A non-ssh driver reaching its machines over SSH: the key is recorded at first contact, then checked."""
    from armillary.drivers.libvirt import LibvirtConfig, LibvirtDriver
    from armillary.engine.transports import transport_for
    from armillary.failures import PermanentFailure as PermanentStepError

    driver = LibvirtDriver(
        LibvirtConfig(
            uri="qemu+ssh://root@hypervisor.invalid/system", ssh_private_key=ssh_peer.private_key_pem
        ),
        hypervisor_id=1,
    )
    system = SimpleNamespace(
        id=7,
        hostname="vm7",
        user=None,
        addresses=[ssh_peer.address],
        provider_id="vm-7",
        provider_info={"state": "running"},
    )
    logged: list[str] = []

    class Ctx:
        def driver(self, _system: Any) -> Any:
            return driver

        def system(self) -> Any:
            return system

        def update_system(self, **fields: Any) -> None:
            for name, value in fields.items():
                setattr(system, name, value)

        def log(self, message: str, level: str = "info", **data: Any) -> None:
            logged.append(message)

    with transport_for(Ctx(), system) as transport:
        assert isinstance(transport, SshTransport) and transport.user == "root"
        assert transport.run(["true"]).exit_code == 0
    assert system.provider_info == {
        "state": "running",
        "ssh_host_key": ssh_peer.known_fingerprint,
        "ssh_host_key_type": "ed25519",
    }
    assert any("recorded its ed25519 host key" in line for line in logged)
    with transport_for(Ctx(), system) as transport:
        assert transport.host_key == ssh_peer.known_fingerprint
        assert transport.run(["true"]).exit_code == 0
    ssh_peer.rotate_host_key()
    with pytest.raises(HostKeyChanged, match="possible MITM"), transport_for(Ctx(), system) as transport:
        transport.run(["true"])
    system.addresses = []
    with pytest.raises(PermanentStepError, match="no address"):
        transport_for(Ctx(), system)


# ---------------------------------------------------------------- the wrapper in other shells


@pytest.mark.parametrize("shell", ["dash", "busybox sh", "bash"])
def test_wrapper_decodes_env_in_posix_shells(shell: str, tmp_path: Path) -> None:
    """The environment block and the wrapper work in the shells machines have as /bin/sh."""
    argv = shell.split()
    if shutil.which(argv[0]) is None:
        missing_peer(f"{argv[0]} is not installed here (scripts/peers/docker.sh installs busybox)")
    env = {"TRICKY": TRICKY, "EMPTY": "", "UNICODE": "ünïcödé ✓"}
    process = subprocess.Popen(
        [
            *argv,
            "-c",
            WRAPPER,
            "armillary-run",
            str(tmp_path),
            "sh",
            "-c",
            'printf "%s|" "$TRICKY" "$EMPTY" "$UNICODE"; pwd',
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    assert process.stdin and process.stdout and process.stderr
    process.stdin.write(encode_env(env))
    process.stdin.flush()  # and kept open: its end is what kills the command (as a timeout does)
    stdout = process.stdout.read()
    stderr = process.stderr.read()
    process.stdin.close()
    assert process.wait(timeout=30) == 0, stderr
    assert stdout.decode() == f"{TRICKY}||ünïcödé ✓|{tmp_path}\n"
    assert stderr.decode().startswith("@@armillary-run -")  # a session of its own: it reports its group

    # Its input ends (the transport's timeout, or a lost connection): the whole group is killed.
    pids = tmp_path / "pids"
    process = subprocess.Popen(
        [*argv, "-c", WRAPPER, "armillary-run", "", "sh", "-c", f"sleep 30 & echo $! > {pids}; wait"],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    assert process.stdin
    process.stdin.write(encode_env({}))
    process.stdin.flush()
    deadline = time.monotonic() + 10
    while not (pids.exists() and pids.read_text().strip()) and time.monotonic() < deadline:
        time.sleep(0.02)
    process.stdin.close()
    assert process.wait(timeout=10) == -9  # the wrapper goes with its group
    time.sleep(0.1)
    assert not _runs_here(pids.read_text().strip())


# ---------------------------------------------------------------- docker-exec


# The pids of live (not zombie) `sleep 37` processes; the shell drops the NULs between cmdline's words.
LIVE_SLEEP_37 = ('for d in /proc/[0-9]*; do [ "$(cat "$d/cmdline" 2>/dev/null)" = sleep37 ] || continue; '
                 'read -r line < "$d/stat" || continue; case "${line##*) }" in [ZX]*) ;; *) echo "${d#/proc/}";; esac; '
                 'done')


@pytest.fixture
def container(podman: PodmanPeer) -> Iterator[tuple[Any, str]]:
    client = podman.client()
    made = client.containers.run(podman.image, name="armillary-transport-test", detach=True)
    try:
        yield client, made.id
    finally:
        client.close()


def test_docker_exec_run_put_get(container: tuple[Any, str]) -> None:
    client, container_id = container
    with DockerExecTransport(client, container_id) as transport:
        lines = Lines()
        started = time.monotonic()
        result = transport.run(
            ["sh", "-c", 'echo "one $GREETING"; sleep 1; echo two >&2; pwd; exit 4'],
            env={"GREETING": TRICKY},
            cwd="/tmp",
            on_line=lines,
        )
        ended = time.monotonic()
        assert result.exit_code == 4
        assert lines.of("stdout") == [*f"one {TRICKY}".split("\n"), "/tmp"] and lines.of("stderr") == ["two"]
        assert lines.when("/tmp") - started > 0.7 > lines.when(f"one {TRICKY}".split("\n")[0]) - started
        assert ended - started < 10
        missing = transport.run(["no-such-command"])
        assert missing.exit_code == 127 and "not found" in missing.output_tail

        transport.put(ALL_BYTES, "/tmp/blob.bin", mode=0o640)
        assert transport.get("/tmp/blob.bin") == ALL_BYTES
        lines = Lines()
        transport.run(["ls", "-ln", "/tmp/blob.bin"], on_line=lines)
        assert lines.of("stdout")[0].startswith("-rw-r-----")
        with pytest.raises(PermanentTransportError, match="blob.missing"):
            transport.get("/tmp/blob.missing")
        with pytest.raises(PermanentTransportError):
            transport.put(b"x", "/no/such/dir/file")

        made = transport.make_temp_dir("armillary-job1-")
        assert made.startswith("/tmp/armillary-job1-")
        transport.put(b"#!/bin/sh\necho hello from $0\n", f"{made}/script", mode=0o700)
        lines = Lines()
        assert transport.run([f"{made}/script"], on_line=lines).exit_code == 0
        assert lines.of("stdout") == [f"hello from {made}/script"]


def test_docker_exec_timeout_kills_the_command(container: tuple[Any, str]) -> None:
    client, container_id = container
    with DockerExecTransport(client, container_id) as transport:
        started = time.monotonic()
        with pytest.raises(CommandTimeout) as timed_out:
            transport.run(
                ["sh", "-c", "sleep 30 & echo $! > /tmp/child.pid; echo $$ > /tmp/main.pid; wait"],
                timeout=1.5,
            )
        assert time.monotonic() - started < 12
        assert timed_out.value.killed is True
        for name in ("child", "main"):
            pid = transport.get(f"/tmp/{name}.pid").decode().strip()
            state = transport.run(["sh", "-c", f'read -r line < /proc/{pid}/stat && echo "${{line##*) }}"'])
            assert state.exit_code != 0 or state.output_tail[:1] in {"Z", "X"}, f"{name} {pid} still runs"


def test_docker_exec_timeout_before_the_command_started_still_kills_it(container: tuple[Any, str]) -> None:
    """A timeout shorter than the daemon takes to start the exec (a loaded podman): the transport waits for
    the command's process group before it kills, instead of leaving it running unkilled."""
    client, container_id = container
    with DockerExecTransport(client, container_id) as transport:
        with pytest.raises(CommandTimeout) as timed_out:
            transport.run(["sleep", "37"], timeout=0.001)
        assert timed_out.value.killed is True
        still_running = transport.run(["sh", "-c", LIVE_SLEEP_37])
        assert still_running.output_tail.strip() == "", "the timed-out sleep still runs"


def test_docker_exec_missing_container(podman: PodmanPeer) -> None:
    client = podman.client()
    try:
        with pytest.raises(PermanentTransportError, match="no-such-container|no such container"):
            DockerExecTransport(client, "no-such-container").run(["true"])
    finally:
        client.close()


def test_transport_for_a_docker_system_reaches_its_running_container(podman: PodmanPeer) -> None:
    """The docker driver hands the builder its container (``container_target``): the one tagged with the
    system's id, and only while it runs."""
    from armillary.drivers.base import MachineRef, MachineSpec
    from armillary.drivers.docker import DockerConfig, DockerDriver
    from armillary.engine.transports import transport_for
    from armillary.failures import PermanentFailure

    driver = DockerDriver(DockerConfig(base_url=podman.base_url), hypervisor_id=1)
    system = SimpleNamespace(id=434343, hostname="box9", provider_id=None, provider_info={}, driver_props={})
    ctx = SimpleNamespace(driver=lambda _system: driver)
    with pytest.raises(PermanentFailure, match=r"no container of box9 \(system 434343\)"):
        transport_for(ctx, system)
    made = driver.create(MachineSpec(system_id=system.id, hostname="box9", environment="dev",
                                     props={"image": podman.image}))
    ref = MachineRef(system.id, made.provider_id)
    try:
        system.provider_id = made.provider_id
        with transport_for(ctx, system) as transport:
            assert isinstance(transport, DockerExecTransport)
            assert transport.run(["hostname"]).exit_code == 0
        driver.stop(ref)
        with pytest.raises(PermanentFailure, match="the container of box9 is (exited|stopped), not running"):
            transport_for(ctx, system)
    finally:
        driver.destroy(ref)


# ---------------------------------------------------------------- local


def test_local_run_env_timeout_and_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ARMILLARY_SECRET_KEY", "never-passed-on")
    with LocalTransport() as transport:
        lines = Lines()
        result = transport.run(
            [
                "sh",
                "-c",
                'echo "one $TRICKY"; echo two >&2; echo "key=${ARMILLARY_SECRET_KEY:-unset}"; pwd; exit 5',
            ],
            env={"TRICKY": "a b $c"},
            cwd=str(tmp_path),
            on_line=lines,
        )
        assert result.exit_code == 5
        assert lines.of("stdout") == ["one a b $c", "key=unset", str(tmp_path)] and lines.of("stderr") == [
            "two"
        ]
        assert transport.run(["no-such-command-here"]).exit_code == 127
        assert transport.run(["true"], cwd=str(tmp_path / "nowhere")).exit_code == 125
        assert transport.run(["sh", "-c", "kill -KILL $$"]).exit_code == 128 + 9
        not_executable = tmp_path / "plain.txt"
        not_executable.write_text("echo hi\n")
        assert transport.run([str(not_executable)]).exit_code == 126

        pids = tmp_path / "pids"
        started = time.monotonic()
        with pytest.raises(CommandTimeout) as timed_out:
            transport.run(["sh", "-c", f"sleep 30 & echo $! > {pids}; echo $$ >> {pids}; wait"], timeout=1)
        assert time.monotonic() - started < 8 and timed_out.value.killed is True
        for pid in pids.read_text().split():
            assert not _runs_here(pid), f"{pid} still runs after the timeout"

        transport.put(ALL_BYTES, str(tmp_path / "blob"), mode=0o600)
        assert transport.get(str(tmp_path / "blob")) == ALL_BYTES
        assert (tmp_path / "blob").stat().st_mode & 0o777 == 0o600
        with pytest.raises(PermanentTransportError):
            transport.get(str(tmp_path / "missing"))
        made = transport.make_temp_dir("armillary-test-", parent=str(tmp_path))
        assert Path(made).is_dir()
        transport.remove_tree(made)
        assert not Path(made).exists()
