"""Structured logging: one JSON object per line, each carrying the request id of its request.

The request id lives in a context variable, set by the API middleware (and, later, by the job
engine from the job's stored request id), so every log line written while serving a request
carries it without being passed around.

Secrets never reach the output: ``configure`` puts ``armillary.redaction.RedactingFilter`` on the
handler it installs, so every record (from any logger: ours, uvicorn, httpx, botocore, asyncssh,
ansible-runner) is redacted at every level. ``install_redaction`` does the same for another handler
(an in-process test server's, a file handler).
"""

from __future__ import annotations

import json
import logging
import sys
from contextvars import ContextVar
from datetime import UTC, datetime

from armillary.redaction import RedactingFilter

request_id_var: ContextVar[str | None] = ContextVar("armillary_request_id", default=None)

_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": request_id_var.get(),
        }
        entry.update({k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")})
        exception = _exception_text(self, record)
        if exception:
            entry["exception"] = exception
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        rid = request_id_var.get()
        line = f"{record.levelname:<7} {record.name}: {record.getMessage()}" + (f" [{rid}]" if rid else "")
        exception = _exception_text(self, record)
        if exception:
            line += "\n" + exception
        return line


def _exception_text(formatter: logging.Formatter, record: logging.LogRecord) -> str | None:
    """The record's traceback: ``exc_text`` when set (``RedactingFilter`` leaves only that), else formatted."""
    if record.exc_text:
        return record.exc_text
    return formatter.formatException(record.exc_info) if record.exc_info else None


def install_redaction(handler: logging.Handler) -> logging.Handler:
    """Put a ``RedactingFilter`` on ``handler`` (once) and return it."""
    if not any(isinstance(f, RedactingFilter) for f in handler.filters):
        handler.addFilter(RedactingFilter())
    return handler


FORMATS = ("text", "json")
LEVELS = ("debug", "info", "warning", "error", "critical")


def level_named(name: str) -> int:
    """The logging level called ``name`` (any case); ValueError naming the choices, for a setting's message."""
    if name.strip().lower() not in LEVELS:
        raise ValueError(f"log level {name!r} is not one of {', '.join(LEVELS)}")
    return logging.getLevelName(name.strip().upper())


def configure(json_lines: bool = True, level: int = logging.INFO) -> None:
    """Send Armillary's and uvicorn's logs to stderr in one format, secrets redacted.

    Called again (``armillary serve`` on SIGHUP), it replaces the handler: the new format and level
    apply from the next line on.
    """
    handler = install_redaction(logging.StreamHandler(sys.stderr))
    handler.setFormatter(JsonFormatter() if json_lines else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    # Our middleware writes one access line per request with the request id; uvicorn's is redundant.
    logging.getLogger("uvicorn.access").disabled = True
