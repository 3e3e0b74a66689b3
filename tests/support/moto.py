"""The aws driver's test peer: moto's EC2 simulator as a real server process on loopback.

``moto_peer`` (session-scoped) runs ``python -m moto.server -H 127.0.0.1 -p 0`` — a separate
process, reached by boto3 over HTTP through ``endpoint_url`` exactly as the driver reaches EC2 —
with the validations moto leaves off by default switched on, so bad input fails as EC2 fails:
unknown AMIs (``MOTO_ENABLE_AMI_VALIDATION``), instance types and key pairs. It picks a valid AMI
from moto's default images (``describe_images``). The ``moto`` fixture gives a test the peer and
afterwards switches authentication back off and resets every simulated service
(``POST /moto-api/reset``), so each test starts from an empty account.

What moto cannot do, and how the tests cope (each test says so where it matters):

* it accepts any credentials unless told otherwise: ``authenticating()`` turns on its IAM
  authentication (``POST /moto-api/reset-auth``, moto's ``INITIAL_NO_AUTH_ACTION_COUNT``) after
  making a user allowed ``ec2:*`` and one allowed nothing, so refused credentials are real refusals;
* it does not implement RunInstances' ``ClientToken`` idempotency (a repeated token launches again):
  the token walk is tested against its records (``ClientToken`` of each instance) and, for EC2's
  replies moto never gives, with botocore's ``Stubber``;
* it answers at once, so there is no window to kill a server mid-create: ``HoldingProxy`` is a
  loopback HTTP relay in front of moto that holds chosen EC2 actions until released (then answers
  them 503 without forwarding them: the caller is dead by then).

Nothing to install beyond the Python packages (``moto[server]`` is in the test extras). Missing:
skipped locally, a failure under CI=true.
"""

from __future__ import annotations

import http.client
import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Self
from urllib.parse import parse_qs

import pytest

from tests.support.peers import missing_peer

REGION = "us-east-1"
RUNNING_ON = re.compile(r"Running on (http://127\.0\.0\.1:\d+)")
MOTO_ENV = {
    "MOTO_ENABLE_AMI_VALIDATION": "true",
    "MOTO_EC2_ENABLE_INSTANCE_TYPE_VALIDATION": "true",
    "MOTO_ENABLE_KEYPAIR_VALIDATION": "true",
}
EC2_ALL = json.dumps(
    {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "ec2:*", "Resource": "*"}]}
)


@dataclass
class Credentials:
    access_key_id: str
    secret_access_key: str


@dataclass
class MotoPeer:
    endpoint_url: str
    image_id: str  # a valid AMI of moto's default images (an Ubuntu one)
    root_device: str  # that image's root device name
    log: Path
    region: str = REGION
    _auth_on: bool = field(default=False, repr=False)

    def client(
        self, service: str = "ec2", region: str | None = None, creds: Credentials | None = None
    ) -> Any:
        import boto3

        creds = creds or Credentials("testing", "testing")
        return boto3.client(
            service,
            region_name=region or self.region,
            endpoint_url=self.endpoint_url,
            aws_access_key_id=creds.access_key_id,
            aws_secret_access_key=creds.secret_access_key,
        )

    def _post(self, path: str, body: bytes = b"") -> dict:
        request = urllib.request.Request(
            self.endpoint_url + path, data=body, method="POST", headers={"Content-Type": "text/plain"}
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read() or b"{}")

    def reset(self) -> None:
        """Forget every simulated resource (moto's default VPC, subnets and images come back)."""
        self._post("/moto-api/reset")

    def set_auth(self, on: bool) -> None:
        """moto's IAM authentication: on from the next request (count 0), or off (count inf)."""
        self._post("/moto-api/reset-auth", b"0" if on else b"inf")
        self._auth_on = on

    @contextmanager
    def authenticating(self) -> Iterator[tuple[Credentials, Credentials]]:
        """(a user allowed ec2:*, a user allowed nothing); requests are authenticated meanwhile."""
        iam = self.client("iam")
        made = []
        for user, policy in (("armillary-allowed", EC2_ALL), ("armillary-denied", None)):
            iam.create_user(UserName=user)
            if policy:
                iam.put_user_policy(UserName=user, PolicyName="ec2", PolicyDocument=policy)
            key = iam.create_access_key(UserName=user)["AccessKey"]
            made.append(Credentials(key["AccessKeyId"], key["SecretAccessKey"]))
        self.set_auth(True)
        try:
            yield made[0], made[1]
        finally:
            self.set_auth(False)

    # ------------------------------------------------------------ looking behind the driver

    def instances(
        self, system_id: int | None = None, states: tuple[str, ...] | None = None, region: str | None = None
    ) -> list[dict]:
        filters = []
        if system_id is not None:
            filters.append({"Name": "tag:armillary:system-id", "Values": [str(system_id)]})
        if states:
            filters.append({"Name": "instance-state-name", "Values": list(states)})
        pages = self.client(region=region).describe_instances(Filters=filters)["Reservations"]
        return [i for r in pages for i in r["Instances"]]

    def live(self, system_id: int | None = None, region: str | None = None) -> list[dict]:
        return self.instances(system_id, ("pending", "running", "stopping", "stopped"), region)

    def addresses(self, system_id: int | None = None) -> list[dict]:
        filters = (
            [{"Name": "tag:armillary:system-id", "Values": [str(system_id)]}] if system_id is not None else []
        )
        return self.client().describe_addresses(Filters=filters)["Addresses"]

    def volumes(self, system_id: int | None = None) -> list[dict]:
        filters = (
            [{"Name": "tag:armillary:system-id", "Values": [str(system_id)]}] if system_id is not None else []
        )
        return self.client().describe_volumes(Filters=filters)["Volumes"]


def _stop(process: subprocess.Popen | None) -> None:
    if process is None or process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


def _up(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/moto-api/", timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


@pytest.fixture(scope="session")
def moto_peer(tmp_path_factory) -> Iterator[MotoPeer]:
    """moto's server on a free loopback port for this test run, stopped at the end."""
    for module in ("boto3", "moto.server", "flask", "werkzeug"):
        if importlib.util.find_spec(module.split(".")[0]) is None or (
            "." in module and importlib.util.find_spec(module) is None
        ):
            missing_peer(
                f"{module} cannot be imported (pip install -e '.[test]' installs moto[server] and boto3)"
            )
    root = tmp_path_factory.mktemp("moto")
    log = root / "moto.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MOTO_"))}
    env.update(MOTO_ENV)
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", "0"],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=root,
        )
    try:
        url = None
        deadline = time.monotonic() + 60
        while url is None or not _up(url):
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(
                    f"moto's server did not come up\n{log.read_text(errors='replace')[-3000:]}", pytrace=False
                )
            if url is None:
                found = RUNNING_ON.search(log.read_text(errors="replace"))
                url = found.group(1) if found else None
            time.sleep(0.05)
        probe = MotoPeer(endpoint_url=url, image_id="", root_device="", log=log)
        images = probe.client().describe_images(
            Owners=["amazon"], Filters=[{"Name": "name", "Values": ["ubuntu/images/hvm-ssd/ubuntu-xenial-*"]}]
        )["Images"]
        if not images:
            pytest.fail("moto offers no Ubuntu image among its default AMIs", pytrace=False)
        image = min(images, key=lambda i: i["ImageId"])
        yield MotoPeer(
            endpoint_url=url, image_id=image["ImageId"], root_device=image["RootDeviceName"], log=log
        )
    finally:
        _stop(process)


@pytest.fixture
def moto(moto_peer: MotoPeer) -> Iterator[MotoPeer]:
    """The peer for one test: an empty account afterwards, authentication off."""
    try:
        yield moto_peer
    finally:
        if moto_peer._auth_on:
            moto_peer.set_auth(False)
        moto_peer.reset()


# ---------------------------------------------------------------- a relay that can hold requests


class HoldingProxy:
    """A loopback HTTP relay to ``target`` that holds requests of the EC2 actions in ``hold``.

    A held request waits until ``release()``; then it is answered 503 *without* being forwarded (its
    caller is gone by then in the tests that use this). Every other request is relayed as it is.
    ``seen`` records the actions relayed or held, in order.
    """

    def __init__(self, target: str, hold: set[str]) -> None:
        self.target = target.removeprefix("http://")
        self.hold = set(hold)
        self.held = threading.Event()  # set once a request is being held
        self.released = threading.Event()
        self.seen: list[str] = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _relay(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                action = (parse_qs(body.decode("utf-8", "replace")).get("Action") or [""])[0]
                proxy.seen.append(action)
                if action in proxy.hold and not proxy.released.is_set():
                    proxy.held.set()
                    proxy.released.wait(120)
                    self.send_response(503)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                connection = http.client.HTTPConnection(proxy.target, timeout=60)
                try:
                    headers = {k: v for k, v in self.headers.items() if k.lower() != "connection"}
                    connection.request(self.command, self.path, body=body, headers=headers)
                    answer = connection.getresponse()
                    data = answer.read()
                finally:
                    connection.close()
                self.send_response(answer.status)
                for key, value in answer.getheaders():
                    if key.lower() not in ("content-length", "connection", "transfer-encoding"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = _relay  # http.server's names

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Self:
        self.thread.start()
        return self

    def release(self) -> None:
        self.released.set()

    def __exit__(self, *exc: object) -> None:
        self.release()
        self.server.shutdown()
        self.server.server_close()
