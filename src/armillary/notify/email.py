"""E-mail deliveries over SMTP (Python's ``smtplib``), configured from the environment.

``ARMILLARY_SMTP_HOST`` (unset: e-mail deliveries fail with that said), ``ARMILLARY_SMTP_PORT`` (25),
``ARMILLARY_SMTP_FROM`` (``armillary@<hostname>``), ``ARMILLARY_SMTP_USER`` / ``ARMILLARY_SMTP_PASSWORD``
(login when set), ``ARMILLARY_SMTP_STARTTLS`` (``1``: upgrade the connection), ``ARMILLARY_SMTP_TLS`` (``1``:
SMTPS from the start). The Message-ID is made from the idempotency id, so a mail server or a reader can tell
a resent copy.
"""

from __future__ import annotations

import json
import os
import smtplib
import socket
import ssl
import time
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any

from armillary import redaction
from armillary.notify.webhook import Outcome

TIMEOUT_S = 15.0


@dataclass(frozen=True)
class SmtpSettings:
    host: str | None
    port: int = 25
    sender: str = "armillary@localhost"
    user: str | None = None
    password: str | None = None
    starttls: bool = False
    tls: bool = False

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> SmtpSettings:
        env = dict(os.environ if env is None else env)
        password = env.get("ARMILLARY_SMTP_PASSWORD") or None
        if password:
            redaction.register(password)
        return cls(
            host=env.get("ARMILLARY_SMTP_HOST") or None,
            port=int(env.get("ARMILLARY_SMTP_PORT") or 25),
            sender=env.get("ARMILLARY_SMTP_FROM") or f"armillary@{socket.getfqdn()}",
            user=env.get("ARMILLARY_SMTP_USER") or None,
            password=password,
            starttls=env.get("ARMILLARY_SMTP_STARTTLS", "") in ("1", "true", "yes"),
            tls=env.get("ARMILLARY_SMTP_TLS", "") in ("1", "true", "yes"),
        )


def message(settings: SmtpSettings, to: list[str], payload: dict[str, Any], text: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = settings.sender
    msg["To"] = ", ".join(to)
    msg["Subject"] = f"[armillary] {text}"[:250]
    domain = settings.sender.rsplit("@", 1)[-1] or "localhost"
    msg["Message-ID"] = f"<{payload.get('id')}.notify@{domain}>"
    msg["X-Armillary-Delivery"] = str(payload.get("id"))
    msg["X-Armillary-Event"] = str(payload.get("event"))
    data = json.dumps(payload.get("data") or {}, indent=2, sort_keys=True, default=str)
    msg.set_content(f"{text}\n\nevent: {payload.get('event')}\nsubscription: {payload.get('subscription')}\n"
                    f"delivery: {payload.get('id')}\n\n{data}\n")
    return msg


def send(settings: SmtpSettings, target: dict[str, Any], payload: dict[str, Any], text: str) -> Outcome:
    started = time.monotonic()
    if not settings.host:
        return Outcome(False, False, None, "no SMTP server: set ARMILLARY_SMTP_HOST", 0)
    to = [str(a) for a in target.get("to") or []]
    try:
        cls = smtplib.SMTP_SSL if settings.tls else smtplib.SMTP
        with cls(settings.host, settings.port, timeout=TIMEOUT_S) as smtp:
            if settings.starttls and not settings.tls:
                smtp.starttls(context=ssl.create_default_context())
            if settings.user and settings.password:
                smtp.login(settings.user, settings.password)
            smtp.send_message(message(settings, to, payload, text))
    except smtplib.SMTPRecipientsRefused as exc:
        codes = [code for code, _ in exc.recipients.values()]
        retry = all(400 <= code < 500 for code in codes)
        return Outcome(False, retry, codes[0] if codes else None, f"recipients refused: {exc.recipients}",
                       _ms(started))
    except smtplib.SMTPResponseException as exc:
        retry = 400 <= exc.smtp_code < 500
        return Outcome(False, retry, exc.smtp_code, f"SMTP {exc.smtp_code}: {exc.smtp_error!r}", _ms(started))
    except (OSError, smtplib.SMTPException) as exc:  # connection refused, timeouts, dropped connections
        return Outcome(False, True, None, f"{type(exc).__name__}: {exc}", _ms(started))
    return Outcome(True, False, 250, "", _ms(started))


def _ms(started: float) -> int:
    return int((time.monotonic() - started) * 1000)
