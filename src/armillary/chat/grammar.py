"""The one command grammar of every adapter: words in, a ``Parsed`` command and selectors out.

``verb arg arg key=value …``; quotes group words (``lock prod "db migration"``). A selector is what the
API's ``Selector`` is: ``k=v`` labels, ``env=``/``environment=``, ``type=``, ``state=``, and bare words as
hostnames (``stage web1 web2``). ``release=``/other known parameters go to the job's params.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from typing import Any

JOB_ACTIONS = ("create", "stage", "provision", "deploy", "destroy", "rollback")
DESTRUCTIVE = frozenset({"destroy", "rollback", "lock"})  # need "yes <code>" in a confirm environment
JOB_PARAMS = frozenset({"release", "ref", "source", "provision"})
ENV_KEYS = frozenset({"env", "environment"})

# (usage, what it does): the text of `help` and `help <command>`.
COMMANDS: dict[str, tuple[str, str]] = {
    "help": ("help [command]", "what the bot understands"),
    "link": ("link <code>", "(private message) act as the Armillary user who ran `armillary chat link`"),
    "status": ("status <host|label=value|cluster>", "state of a system, a selection or a cluster"),
    "list": ("list [selector]", "systems (selector: k=v labels, env=, type=, state=, hostnames)"),
    "jobs": ("jobs [mine|running]", "recent jobs"),
    "job": ("job <id>", "a job's steps and ✔/✗ per host"),
    **{a: (f"{a} <selector> [release=…]", f"{a} the selected systems; the result is posted when the job ends")
       for a in JOB_ACTIONS},
    "watch": ("watch <job>", "post the job's result here when it ends"),
    "scale": ("scale <cluster> <n>", "resize a cluster to n members"),
    "audit": ("audit run <name>", "run a fleet audit"),
    "attention": ("attention", "the open attention queue"),
    "lock": ("lock <env> <reason>", "freeze an environment"),
    "unlock": ("unlock <env> [reason]", "lift an environment's lock"),
    "more": ("more", "the next page of a long answer"),
    "yes": ("yes <code>", "confirm a destructive command (within 60 s)"),
}


class GrammarError(ValueError):
    """What is wrong with the command, said to the user with the command's usage."""


@dataclass
class Parsed:
    verb: str
    args: list[str] = field(default_factory=list)
    options: dict[str, str] = field(default_factory=dict)  # key=value words, in order


def parse(text: str) -> Parsed:
    try:
        words = shlex.split(text.strip())
    except ValueError as exc:
        raise GrammarError(f"cannot read that: {exc}") from None
    if not words:
        raise GrammarError("say `help` to see the commands")
    verb = words[0].lower().lstrip("!")
    if verb not in COMMANDS:
        raise GrammarError(f"unknown command {words[0]!r}: say `help`")
    parsed = Parsed(verb)
    for word in words[1:]:
        key, eq, value = word.partition("=")
        if eq and key and verb in (*JOB_ACTIONS, "list", "status"):
            parsed.options[key] = value
        else:
            parsed.args.append(word)
    return parsed


def usage(verb: str) -> str:
    spec, what = COMMANDS[verb]
    return f"{spec} — {what}"


def selector_of(parsed: Parsed) -> tuple[dict[str, Any], dict[str, Any]]:
    """The API selector and the job params of a job command (GrammarError when it selects nothing)."""
    selector: dict[str, Any] = {}
    params: dict[str, Any] = {}
    labels: dict[str, str] = {}
    for key, value in parsed.options.items():
        if key in ENV_KEYS:
            selector["environment"] = value
        elif key in {"type", "state"}:
            selector[key] = value
        elif key in JOB_PARAMS:
            params[key] = value
        else:
            labels[key] = value
    if labels:
        selector["labels"] = labels
    if parsed.args:
        selector["systems"] = list(parsed.args)
    if not selector:
        raise GrammarError(f"which systems? {usage(parsed.verb)}")
    return selector, params


def list_filters(parsed: Parsed) -> dict[str, Any]:
    """``GET /systems`` query parameters of a selector (hostnames become a prefix search when alone)."""
    query: dict[str, Any] = {}
    labels = []
    for key, value in parsed.options.items():
        if key in ENV_KEYS:
            query["environment"] = value
        elif key in {"type", "state"}:
            query[key] = value
        else:
            labels.append(f"{key}={value}")
    if labels:
        query["label"] = labels
    return query
