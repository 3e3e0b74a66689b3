"""Chat account linking on the web console's tokens page (issue 18), in Debian's Chromium.

A user makes a one-time code on the page, the bot redeems it (here ``armillary.chat.identity.redeem``, what
the bot does on `link <code>`; the bot itself is tests/test_chat.py), the linked account appears on the page,
and the user unlinks it there. The page passes the axe-core scan.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from armillary.chat import identity
from armillary.domain.db import Database
from tests.support import browser
from tests.support.accounts import ADMIN_PASSWORD
from tests.support.peers import missing_peer
from tests.support.subprocess_server import ServerProcess

pytestmark = pytest.mark.timeout(150)


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[ServerProcess]:
    why = browser.missing()
    if why:
        missing_peer(why)
    srv = ServerProcess(tmp_path_factory.mktemp("chat-web-ui"), env={"ARMILLARY_LOG_LEVEL": "warning"}).start()
    srv.admin_token()  # the admin account (password ADMIN_PASSWORD)
    try:
        yield srv
    finally:
        srv.stop()


def test_link_a_chat_account_from_the_tokens_page_and_unlink_it(server):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = browser.launch(p)
        try:
            page = browser.watch(chromium.new_context(viewport={"width": 1280, "height": 800}).new_page())
            page.set_default_timeout(15_000)
            page.goto(server.url + "/admin/tokens")
            page.get_by_label("Username").fill("admin")
            page.get_by_role("textbox", name="Password").fill(ADMIN_PASSWORD)
            page.get_by_role("button", name="Log in").click()
            page.get_by_role("button", name="Link a chat account").click()
            shown = page.get_by_text(re.compile(r"^link [A-Z0-9]{10}$")).inner_text()
            code = shown.split()[1]
            db = Database(server.database_url())
            try:
                with db.session() as session:  # the bot receives `link <code>` from alice on IRC
                    assert identity.redeem(session, code, "irc", "alice-nick") is not None
                    session.commit()
            finally:
                db.dispose()
            page.reload()
            row = page.get_by_role("row").filter(has_text="alice-nick")
            row.wait_for()
            assert "irc" in row.inner_text()
            page.wait_for_load_state("networkidle")
            assert browser.axe_violations(page) == []
            page.get_by_role("button", name="Unlink alice-nick").click()
            row.wait_for(state="detached")
        finally:
            chromium.close()
