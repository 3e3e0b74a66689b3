"""Web console benchmark: the UI in Debian's Chromium (Playwright) against a real server with 100k systems.

What it measures, each next to a baseline taken in the same run (machines here are noisy):

1. **first page**: from ``page.goto('/systems?environment=bench')`` in a fresh browser context (nothing
   cached) until the table shows its first 50 rows. Baseline: the same page fetched by the bare API
   (httpx, same filter and limit). Target <= 1.5 s.
2. **filter → rows**: on the loaded table, typing a hostname prefix and pressing Enter until the rows
   of the new filter are shown. Baseline: the same filtered API request. Target <= 300 ms.
3. **initial JS**: the JavaScript the first navigation transfers (as sent, gzip: the server compresses
   /assets), plus its size uncompressed. Target <= 300 KB gzip.
4. **live log**: a job whose log gets 10,000 lines at 1,000 lines/s (written straight into its event
   rows, as a step's output would be), followed on the job page over SSE; the page's frame times are
   recorded with requestAnimationFrame. Target: every frame < 50 ms (p99 and max printed).

    .venv/bin/python bench/ui.py                      # 100k systems
    .venv/bin/python bench/ui.py --systems 20000 --json

Needs /usr/bin/chromium (scripts/peers/chromium.sh), the playwright package (test extra) and the
built console (scripts/bootstrap). This is not part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench._server import armillary_server, auth_headers

CHROMIUM = "/usr/bin/chromium"


def load(api: httpx.Client, systems: int) -> float:
    api.post("/environments", json={"name": "bench"}).raise_for_status()
    api.post("/hypervisors", json={"name": "slow", "environment": "bench", "driver": "simulated",
                                   "config": {"latency_ms": 120000}}).raise_for_status()
    started = time.perf_counter()
    for start in range(0, systems, 1000):
        items = [{"hostname": f"n{i:06d}", "environment": "bench", "labels": {"cell": f"c{i % 12:02d}"}}
                 for i in range(start, min(start + 1000, systems))]
        api.post("/systems/import", json={"items": items}, timeout=300).raise_for_status()
    return time.perf_counter() - started


def session_cookies(data_dir: Path, base_url: str) -> list[dict]:
    """A browser session of the bench admin, made as POST /auth/session makes one (the account has no password)."""
    from sqlalchemy import select

    from armillary.api.security import CSRF_COOKIE, SESSION_COOKIE, csrf_token_for
    from armillary.auth import tokens
    from armillary.domain.accounts import TokenKind, User
    from armillary.domain.db import Database

    db = Database(f"sqlite:///{data_dir / 'armillary.db'}")
    try:
        with db.session() as session:
            user = session.scalars(select(User).where(User.name == "bench")).one()
            _, plain = tokens.issue(session, user, TokenKind.SESSION, "bench browser", timedelta(hours=1))
    finally:
        db.dispose()
    return [{"name": SESSION_COOKIE, "value": plain, "url": base_url, "httpOnly": True, "sameSite": "Strict"},
            {"name": CSRF_COOKIE, "value": csrf_token_for(plain), "url": base_url, "sameSite": "Strict"}]


def timed(fn, runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


ROWS = "n => document.querySelector('[data-testid=systems-table]')?.getAttribute('aria-busy') === 'false'" \
       " && document.querySelectorAll('[data-testid=system-row]').length === n"
FIRST = "h => document.querySelector('[data-testid=system-row] td:nth-child(2)')?.innerText?.startsWith(h)"


def bench_pages(browser, base_url: str, cookies, api: httpx.Client, runs: int) -> dict:
    js: dict[str, int] = {}
    first_page = []
    for i in range(runs):
        context = browser.new_context()
        context.add_cookies(cookies)
        page = context.new_page()
        if i == 0:
            page.on("response", lambda r: r.url.endswith(".js") and js.setdefault(r.url, 0))
        started = time.perf_counter()
        page.goto(base_url + "/systems?environment=bench")
        page.wait_for_function(ROWS, arg=50, timeout=30_000)
        first_page.append(time.perf_counter() - started)
        if i == 0:
            js_sizes = page.evaluate("""() => performance.getEntriesByType('resource').filter(e => e.name.endsWith('.js'))
                                          .map(e => ({name: e.name, transfer: e.encodedBodySize, decoded: e.decodedBodySize}))""")
        filter_times = []
        for n in range(5):
            prefix = f"n0{(i * 5 + n) * 137 % 99999:05d}"[:5]
            box = page.get_by_label("Hostname starts with")
            box.fill(prefix)
            t = time.perf_counter()
            box.press("Enter")
            page.wait_for_function(FIRST, arg=prefix, timeout=30_000)
            page.wait_for_function("() => document.querySelector('[data-testid=systems-table]').getAttribute('aria-busy') === 'false'")
            filter_times.append(time.perf_counter() - t)
        context.close()
    api_page = timed(lambda: api.get("/systems", params={"environment": "bench", "limit": 50}).raise_for_status(), 10)
    api_filter = timed(lambda: api.get("/systems", params={"environment": "bench", "limit": 50, "q": "n0123"}).raise_for_status(), 10)
    return {
        "first_page_s": statistics.median(first_page), "first_page_max_s": max(first_page),
        "api_page_s": statistics.median(api_page),
        "filter_s": statistics.median(filter_times), "filter_max_s": max(filter_times),
        "api_filter_s": statistics.median(api_filter),
        "initial_js_transfer_kb": sum(e["transfer"] for e in js_sizes) / 1024,
        "initial_js_decoded_kb": sum(e["decoded"] for e in js_sizes) / 1024,
        "initial_js_files": len(js_sizes),
    }


def bench_log(browser, base_url: str, cookies, api: httpx.Client, data_dir: Path, lines: int, rate: int) -> dict:
    """A create on the slow simulated hypervisor keeps a job running; its log is fed at ``rate`` lines/s."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    from armillary.domain.db import Database
    from armillary.engine.events import insert_event

    system = api.post("/systems", json={"hostname": "logger", "environment": "bench", "hypervisor": "slow"}).json()
    job = api.post(f"/systems/{system['id']}/actions", json={"action": "create"}).json()
    context = browser.new_context()
    context.add_cookies(cookies)
    page = context.new_page()
    page.on("requestfailed", lambda r: print("request failed:", r.url, r.failure, file=sys.stderr))
    page.on("response", lambda r: r.status >= 400 and print("HTTP", r.status, r.url, file=sys.stderr))
    page.goto(f"{base_url}/jobs/{job['id']}")
    page.get_by_test_id("job-log").wait_for()
    page.evaluate("""() => { window.__frames = []; let last = performance.now();
        const tick = (now) => { window.__frames.push(now - last); last = now; if (!window.__stop) requestAnimationFrame(tick); };
        requestAnimationFrame(tick); }""")
    db = Database(f"sqlite:///{data_dir / 'armillary.db'}")
    started = time.perf_counter()
    try:
        batch = max(1, rate // 20)  # 20 commits a second
        for n in range(0, lines, batch):
            with db.engine.begin() as conn:
                for k in range(n, min(n + batch, lines)):
                    insert_event(conn, job["id"], "log", f"line {k:05d} " + "x" * 60, step="create")
            target = started + (n + batch) / rate
            time.sleep(max(0.0, target - time.perf_counter()))
        feed_s = time.perf_counter() - started
        try:
            page.wait_for_function("n => document.querySelector('[data-testid=job-log]').innerText.includes('line ' + n)",
                                   arg=f"{lines - 1:05d}", timeout=60_000)
        except PlaywrightTimeout:
            shown = page.get_by_test_id("job-log").inner_text()[-300:]
            status = api.get(f"/jobs/{job['id']}").json()["status"]
            raise SystemExit(f"the last log line never showed; job {status}, log ends with: {shown!r}") from None
        shown_s = time.perf_counter() - started
    finally:
        db.dispose()
    frames = page.evaluate("() => { window.__stop = true; return window.__frames; }")
    api.post(f"/jobs/{job['id']}/cancel")
    context.close()
    frames = sorted(frames[1:])
    return {"log_lines": lines, "log_rate": rate, "feed_s": feed_s, "last_line_shown_s": shown_s,
            "frames": len(frames), "frame_p50_ms": frames[len(frames) // 2], "frame_p99_ms": frames[int(len(frames) * 0.99)],
            "frame_max_ms": frames[-1]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--systems", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--log-lines", type=int, default=10_000)
    parser.add_argument("--log-rate", type=int, default=1_000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp, armillary_server(Path(tmp)) as (base_url, _pid):
        data_dir = Path(tmp)
        with httpx.Client(base_url=base_url + "/api/v1", headers=auth_headers(data_dir), timeout=60) as api:
            load_s = load(api, args.systems)
            cookies = session_cookies(data_dir, base_url)
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-dev-shm-usage"])
                result = {"systems": args.systems, "load_s": load_s, "loadavg": os.getloadavg()[0]}
                result.update(bench_pages(browser, base_url, cookies, api, args.runs))
                result.update(bench_log(browser, base_url, cookies, api, data_dir, args.log_lines, args.log_rate))
                browser.close()
    if args.json:
        print(json.dumps(result, indent=1))
        return 0
    r = result
    print(f"{r['systems']:,} systems (loaded in {r['load_s']:.1f} s), load average {r['loadavg']:.1f}")
    print(f"first systems page   {r['first_page_s'] * 1000:7.0f} ms median (max {r['first_page_max_s'] * 1000:.0f}) "
          f"= {r['first_page_s'] / r['api_page_s']:.1f}x the bare API page ({r['api_page_s'] * 1000:.0f} ms)   target <= 1500 ms")
    print(f"filter -> new rows   {r['filter_s'] * 1000:7.0f} ms median (max {r['filter_max_s'] * 1000:.0f}) "
          f"= {r['filter_s'] / r['api_filter_s']:.1f}x the bare API request ({r['api_filter_s'] * 1000:.0f} ms)   target <= 300 ms")
    print(f"initial JS           {r['initial_js_transfer_kb']:7.0f} KB transferred (gzip), {r['initial_js_decoded_kb']:.0f} KB "
          f"uncompressed, {r['initial_js_files']} files   target <= 300 KB gzip")
    print(f"live log             {r['log_lines']:,} lines at {r['log_rate']:,}/s fed in {r['feed_s']:.1f} s, last line shown "
          f"at {r['last_line_shown_s']:.1f} s; frames p50 {r['frame_p50_ms']:.0f} ms, p99 {r['frame_p99_ms']:.0f} ms, "
          f"max {r['frame_max_ms']:.0f} ms ({r['frames']} frames)   target < 50 ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
