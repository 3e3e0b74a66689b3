"""Chat bot benchmark: the round trip of an IRC `status` of one host, p99 (issue 18; target ≤ 300 ms).

A real ngircd on loopback (tests/support/chatpeers.py; scripts/peers/chat.sh installs it) and a real
``armillary serve`` subprocess (bench/_server.py) whose bot joins ``#bench`` (ARMILLARY_CHAT_IRC). A raw
IRC client links itself (a one-time code from the API, sent privately), then says ``armillary: status web1``
N times in the channel and times each until the bot's answer arrives: parse → linked-user lookup →
in-process API call (token, authorization, system query, audit rows of the call and of the command) → the
answer through the bot's flood control → ngircd → the client.

The commands are paced at the bot's outgoing rate (ARMILLARY_CHAT_LINES_PER_SECOND, default 2/s after a
burst of 6): faster than that, the answers wait in the bucket by design (a server would disconnect a flood).
The per-account command limit is raised for the run.

    .venv/bin/python bench/chat.py [-n 200] [--pace 0.5] [--json]

This is not part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # for tests.support.chatpeers and bench._server

import httpx

from bench._server import armillary_server, auth_headers
from tests.support.chatpeers import IrcClient, ngircd

ROOM = "#bench"
BOT = "armillary"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-n", type=int, default=200, help="status commands to time")
    parser.add_argument("--pace", type=float, default=0.5, help="seconds between commands (flood control: 2/s)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        data_dir = tmp / "data"
        data_dir.mkdir()
        with ngircd(tmp / "irc") as irc, armillary_server(data_dir, {
            "ARMILLARY_CHAT_IRC": f"irc://{BOT}@127.0.0.1:{irc.port}/{ROOM}",
            "ARMILLARY_CHAT_COMMANDS_PER_MINUTE": "1000000",
            "ARMILLARY_PUBLIC_URL": "http://armillary.example",
        }) as (base_url, _pid):
            headers = auth_headers(data_dir)
            with httpx.Client(base_url=base_url + "/api/v1", headers=headers, timeout=30) as api:
                for path, body in (("/environments", {"name": "dev"}),
                                   ("/hypervisors", {"name": "sim", "environment": "dev", "driver": "simulated"}),
                                   ("/systems", {"hostname": "web1", "environment": "dev", "hypervisor": "sim"})):
                    made = api.post(path, json=body)
                    assert made.status_code == 201, made.text
                code = api.post("/chat/link-codes").json()["code"]
            client = IrcClient(irc.port, "bencher")
            client.join(ROOM)
            client.say(BOT, f"link {code}")
            client.message_from(BOT, "bencher", "acts as", timeout_s=30)
            for _ in range(5):  # warm-up: first token, first queries
                client.say(ROOM, f"{BOT}: status web1")
                client.message_from(BOT, ROOM, "web1:", timeout_s=30)
                time.sleep(args.pace)
            times: list[float] = []
            for _ in range(args.n):
                start = time.perf_counter()
                client.say(ROOM, f"{BOT}: status web1")
                client.message_from(BOT, ROOM, "web1:", timeout_s=30)
                times.append((time.perf_counter() - start) * 1000)
                time.sleep(args.pace)
            client.close()
    result = {"n": args.n, "p50_ms": round(statistics.median(times), 1), "p95_ms": round(percentile(times, 95), 1),
              "p99_ms": round(percentile(times, 99), 1), "max_ms": round(max(times), 1), "target_p99_ms": 300}
    if args.json:
        print(json.dumps(result))
    else:
        print(f"IRC `status web1` round trip over {args.n} commands: p50 {result['p50_ms']} ms, "
              f"p95 {result['p95_ms']} ms, p99 {result['p99_ms']} ms, max {result['max_ms']} ms "
              f"(target p99 ≤ 300 ms: {'met' if result['p99_ms'] <= 300 else 'NOT met'})")


if __name__ == "__main__":
    main()
