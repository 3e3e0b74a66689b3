"""Debian's Chromium driven by Playwright for Python, for the web console's tests and bench/ui.py.

Playwright's own browser download is not reachable here: ``executable_path`` points at Debian's
binary (scripts/peers/chromium.sh installs it). ``axe_violations`` injects axe-core from the console's
npm packages (ui/node_modules/axe-core) and returns what it finds.
"""

from __future__ import annotations

import shutil
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
