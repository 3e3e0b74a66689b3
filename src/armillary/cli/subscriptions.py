"""``armillary subscription``: who is told what, where — over /api/v1/subscriptions.

``create`` takes the target as one option (``--webhook URL``, ``--email ADDRESS`` (repeat), or ``--chat
CONNECTION:ROOM``) and the filters as options; it prints the webhook secret, the only time it is shown.
``deliveries`` is the delivery log (status, tries, last status code and error, latency); ``test`` sends a
test event and, with ``--wait``, waits for its outcome.
"""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer

from armillary.cli.client import CliError, ref_path
from armillary.cli.common import (
    AllOpt,
    LimitOpt,
    OutputOpt,
    client,
    command,
    delete_command,
    fmt,
    list_pages,
    show_command,
)
from armillary.cli.output import Column, OutputFormat, field, note, print_items, print_object

app = typer.Typer(help="Notification subscriptions: events to webhooks, e-mail and chat rooms.",
                  no_args_is_help=True)

COLUMNS: list[Column] = [
    ("ID", field("id")), ("NAME", field("name")), ("ENVIRONMENT", field("environment.name")),
    ("EVENTS", lambda s: ",".join(s.get("events") or []) or "all"),
    ("TARGET", lambda s: _target(s)), ("ENABLED", field("enabled")),
]
DELIVERY_COLUMNS: list[Column] = [
    ("ID", field("id")), ("EVENT", field("event")), ("STATUS", field("status")), ("TRIES", field("attempts")),
    ("CODE", field("last_status_code")), ("LATENCY MS", field("latency_ms")), ("ERROR", field("last_error")),
    ("AT", field("created_at")),
]
DONE = {"delivered", "failed"}


def _target(sub: dict[str, Any]) -> str:
    target = sub.get("target") or {}
    kind = sub.get("target_kind") or ("webhook" if "url" in target else "email" if "to" in target else "chat")
    if "url" in target:
        return f"webhook {target['url']} ({target.get('format', 'armillary')})"
    if "to" in target:
        return "email " + ",".join(target["to"])
    return f"{kind} {target.get('connection', '')}:{target.get('room', '')}"


def _target_body(webhook: str | None, fmt_: str, email: list[str] | None, chat: str | None) -> dict[str, Any]:
    given = [x for x in (webhook, email, chat) if x]
    if len(given) != 1:
        raise CliError("give exactly one target: --webhook URL, --email ADDRESS (repeat) or --chat CONNECTION:ROOM")
    if webhook:
        return {"kind": "webhook", "url": webhook, "format": fmt_}
    if email:
        return {"kind": "email", "to": list(email)}
    connection, _, room = (chat or "").partition(":")
    if not connection or not room:
        raise CliError("--chat takes CONNECTION:ROOM, e.g. --chat libera:#ops")
    return {"kind": "chat", "connection": connection, "room": room}


def _labels(pairs: list[str] | None) -> dict[str, str]:
    labels = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep:
            raise CliError(f"--label takes KEY=VALUE, got {pair!r}")
        labels[key] = value
    return labels


@command(app, "create")
def create(
    name: Annotated[str, typer.Argument(help="Name", metavar="NAME")],
    webhook: Annotated[str | None, typer.Option("--webhook", help="POST signed JSON to this URL")] = None,
    webhook_format: Annotated[str, typer.Option("--format", help="armillary, slack or mattermost")] = "armillary",
    email: Annotated[list[str] | None, typer.Option("--email", help="Mail this address; repeat")] = None,
    chat: Annotated[str | None, typer.Option("--chat", help="CONNECTION:ROOM the chat bot posts to")] = None,
    environment: Annotated[str | None, typer.Option("--environment", "-e", help="Only this environment")] = None,
    event: Annotated[list[str] | None, typer.Option("--event", help="job.finished, job.failed, cluster.scaled, "
                                                    "audit.kicked_out, environment.locked, environment.unlocked, "
                                                    "quota.nearly_spent; repeat (none: all)")] = None,
    label: Annotated[list[str] | None, typer.Option("--label", "-l", help="KEY=VALUE the system carries; repeat")]
    = None,
    action: Annotated[list[str] | None, typer.Option("--action", help="Job action (stage, deploy...); repeat")]
    = None,
    status: Annotated[list[str] | None, typer.Option("--status", help="succeeded, failed, cancelled; repeat")]
    = None,
    secret: Annotated[str | None, typer.Option("--secret", help="Webhook secret (default: made for you)")] = None,
    description: Annotated[str, typer.Option("--description", "-d")] = "",
    disabled: Annotated[bool, typer.Option("--disabled", help="Create it disabled")] = False,
    output: OutputOpt = None,
) -> None:
    """Create a subscription: `armillary subscription create ops --webhook https://hooks.example/x -e prod
    --event job.failed`. A webhook's secret is printed now and never again."""
    body: dict[str, Any] = {"name": name, "description": description, "target": _target_body(webhook, webhook_format,
                                                                                             email, chat),
                            "events": event or [], "labels": _labels(label), "actions": action or [],
                            "statuses": status or [], "enabled": not disabled}
    if environment:
        body["environment"] = environment
    if secret:
        body["secret"] = secret
    made = client().post_json("/subscriptions", body)
    shape = fmt(output)
    print_object(made, shape)
    if made.get("secret") and shape is OutputFormat.table:
        note("Keep the secret now: it is not shown again (`armillary subscription rotate` makes a new one).", shape)


@command(app, "list")
def list_(
    environment: Annotated[str | None, typer.Option("--environment", "-e", help="Only this environment")] = None,
    limit: LimitOpt = None, every: AllOpt = False, output: OutputOpt = None,
) -> None:
    """List subscriptions."""
    params = [("environment", environment)] if environment else []
    list_pages("/subscriptions", params, limit, every, COLUMNS, output, "subscriptions")


show_command(app, "/subscriptions", "Show a subscription (never its secret).", ref_metavar="SUBSCRIPTION")
delete_command(app, "/subscriptions", "subscription", "Delete a subscription (pending deliveries are dropped).",
               ref_metavar="SUBSCRIPTION")


@command(app, "rotate")
def rotate(ref: Annotated[str, typer.Argument(metavar="SUBSCRIPTION")], output: OutputOpt = None) -> None:
    """Make a new webhook secret (printed once); later deliveries are signed with it."""
    print_object(client().post_json(f"/subscriptions/{ref_path(ref)}/rotate", {}), fmt(output))


@command(app, "deliveries")
def deliveries(
    ref: Annotated[str, typer.Argument(metavar="SUBSCRIPTION")],
    status: Annotated[str | None, typer.Option("--status", help="pending, sending, delivered, failed")] = None,
    limit: LimitOpt = None, output: OutputOpt = None,
) -> None:
    """The delivery log, newest first: status, tries, last status code and error, latency."""
    params: dict[str, Any] = {"limit": limit or 50}
    if status:
        params["status"] = status
    page = client().get_json(f"/subscriptions/{ref_path(ref)}/deliveries", params)
    print_items(page["items"], DELIVERY_COLUMNS, fmt(output), page=page, empty="No deliveries.")


@command(app, "test")
def test(
    ref: Annotated[str, typer.Argument(metavar="SUBSCRIPTION")],
    wait: Annotated[bool, typer.Option("--wait", "-w", help="Wait until it is delivered or fails")] = False,
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds --wait waits")] = 60.0,
    output: OutputOpt = None,
) -> None:
    """Send a test event to the subscription's target."""
    api = client()
    delivery = api.post_json(f"/subscriptions/{ref_path(ref)}/test", {})
    deadline = time.monotonic() + timeout
    while wait and delivery["status"] not in DONE and time.monotonic() < deadline:
        time.sleep(0.25)
        delivery = api.get_json(f"/subscriptions/{ref_path(ref)}/deliveries/{delivery['id']}")
    print_object(delivery, fmt(output))
    if wait and delivery["status"] != "delivered":
        raise CliError(f"test delivery {delivery['status']}: {delivery.get('last_error') or 'not delivered yet'}")


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="subscription")
