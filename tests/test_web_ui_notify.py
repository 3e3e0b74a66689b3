"""The web console's Subscriptions page, end to end in Debian's Chromium against a real ``armillary serve``.

What an operator relies on: a webhook subscription made from the page shows its signing secret once (the API
never returns it again), its test event reaches the receiver signed with that secret, and the delivery log on
the page shows it delivered with the receiver's status codes (a 500 then a 200: retried). Scanned by axe-core.

The fixtures (one server, one browser for the module) are those of tests/test_web_ui.py.
"""

from __future__ import annotations

import time

import httpx
import pytest

from armillary.notify.webhook import verify
from tests.support.accounts import ADMIN_PASSWORD
from tests.support.webhook_receiver import running_receiver
from tests.test_web_ui import admin, check_page, chromium, login, server, shots  # noqa: F401 (fixtures)

pytestmark = pytest.mark.timeout(150)


def test_a_subscription_made_on_the_page_delivers_signed_and_logs_retries(server, admin: httpx.Client,  # noqa: F811
                                                                           chromium, shots) -> None:  # noqa: F811
    assert admin.post("/environments", json={"name": "dev"}).status_code in (201, 409)
    with running_receiver() as receiver:
        page = login(chromium, server, "admin", ADMIN_PASSWORD, "/subscriptions")
        page.get_by_role("heading", name="Subscriptions").wait_for()
        form = page.get_by_role("region", name="New subscription")
        form.get_by_label("Name").fill("ops-hook")
        form.get_by_label("Environment").fill("dev")
        form.get_by_label("URL").fill(receiver.url + "/hook")
        form.get_by_role("button", name="Create").click()
        shown = page.get_by_test_id("secret")
        shown.wait_for()
        secret = shown.locator("pre").inner_text().strip()
        assert len(secret) >= 16
        made = admin.get("/subscriptions/ops-hook").json()
        assert made["has_secret"] and made["secret"] is None and made["environment"]["name"] == "dev"
        page.get_by_test_id("subscription-ops-hook").wait_for()
        check_page(page, "subscriptions", shots)

        receiver.answers = [500]  # the first try fails: retried after the backoff
        page.get_by_role("button", name="Test ops-hook").click()
        seen = receiver.wait_for(1, timeout_s=30)[0]
        assert verify(secret, seen.body, seen.headers["x-armillary-signature"])
        assert seen.json["event"] == "test"
        log = page.get_by_role("region", name="Deliveries of ops-hook")
        deadline = time.monotonic() + 20
        while "delivered" not in log.get_by_test_id("deliveries").inner_text().lower():
            assert time.monotonic() < deadline, log.inner_text()
            log.get_by_role("button", name="Refresh").click()
            time.sleep(0.3)
        assert "500 → 200" in log.get_by_test_id("deliveries").inner_text()
        check_page(page, "subscription-deliveries", shots)
