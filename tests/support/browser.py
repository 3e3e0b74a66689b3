"""Debian's Chromium driven by Playwright for Python, for the web console's tests and bench/ui.py.

Playwright's own browser download is not reachable here: ``executable_path`` points at Debian's
binary (scripts/peers/chromium.sh installs it). ``axe_violations`` injects axe-core from the console's
npm packages (ui/node_modules/axe-core) and returns what it finds.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
AXE = ROOT / "ui" / "node_modules" / "axe-core" / "axe.min.js"
STATIC = ROOT / "src" / "armillary" / "web" / "static"


def missing() -> str | None:
    """Why the browser tests cannot run here, or None."""
    if not Path(CHROMIUM).exists():
        return "Debian's chromium (/usr/bin/chromium; scripts/test-peers installs it)"
    try:
        import playwright  # noqa: F401
    except ImportError:
        return "the playwright Python package (the test extra)"
    if not (STATIC / "index.html").exists():
        return "the built web console (scripts/bootstrap builds it into src/armillary/web/static)"
    if not AXE.exists():
        return "axe-core (ui/node_modules, installed by scripts/bootstrap's npm ci)"
    return None


def launch(playwright: Any):
    return playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-dev-shm-usage"])


def axe_violations(page: Any, impacts: tuple[str, ...] = ("serious", "critical")) -> list[dict]:
    """axe-core's WCAG 2 A/AA violations of the page as it is now, of the given impacts."""
    if not page.evaluate("() => typeof window.axe !== 'undefined'"):
        page.add_script_tag(content=AXE.read_text())
    result = page.evaluate(
        """async () => (await axe.run(document, {runOnly: {type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21aa']}}))
             .violations.map(v => ({id: v.id, impact: v.impact, help: v.help,
                                    nodes: v.nodes.slice(0, 3).map(n => n.target.join(' ') + ' ' + n.html.slice(0, 160))}))"""
    )
    return [v for v in result if v["impact"] in impacts]


_LOGS: dict[int, list[str]] = {}
_IN_FLIGHT: dict[int, dict[Any, str]] = {}


def watch(page: Any) -> Any:
    """Keep what the page saw go wrong (console errors, failed requests, answers ≥ 400), for ``describe``."""
    log = _LOGS.setdefault(id(page), [])
    start = time.monotonic()

    def note(text: str) -> None:
        log.append(f"+{time.monotonic() - start:6.2f}s {text}")
        del log[:-40]

    def failed(request: Any) -> None:
        flying.pop(request, None)
        note(f"request failed: {request.method} {request.url} ({request.failure})")

    flying = _IN_FLIGHT.setdefault(id(page), {})
    page.on("request", lambda r: flying.__setitem__(r, f"+{time.monotonic() - start:6.2f}s {r.method} {r.url}"))
    page.on("requestfinished", lambda r: flying.pop(r, None))
    page.on("requestfailed", failed)
    page.on("console", lambda m: m.type in ("error", "warning") and note(f"console {m.type}: {m.text[:300]}"))
    page.on("response", lambda r: r.status >= 400 and note(f"answer {r.status}: {r.request.method} {r.url}"))
    page.on("close", lambda _: (_LOGS.pop(id(page), None), _IN_FLIGHT.pop(id(page), None)))
    return page


def describe(browser: Any, chars: int = 3000) -> str:
    """What every open page of the browser shows and saw go wrong: printed with a failed console test, whose
    screenshot would not survive a CI run."""
    parts = []
    for context in browser.contexts:
        for page in context.pages:
            try:
                text = page.inner_text("body", timeout=2000)
            except Exception as exc:  # noqa: BLE001 - a description must not hide the test's own failure
                text = f"(no text: {exc})"
            log = "\n".join(_LOGS.get(id(page), [])) or "(nothing went wrong that the page saw)"
            flying = "\n".join(_IN_FLIGHT.get(id(page), {}).values()) or "(none)"
            parts.append(f"--- {page.url}\n{text[:chars]}\n--- what the page saw go wrong\n{log}"
                         f"\n--- requests still waiting for their answer (sent at)\n{flying}")
    return "\n".join(parts) or "(no open page)"
