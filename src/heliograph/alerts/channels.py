"""Notifications: what each kind of channel receives, and sending it.

    webhook   the notification as JSON, signed: `Helicone-Signature` is the hex HMAC-SHA256 of the
              raw body with the channel's secret (as Helicone signs its webhooks)
    slack     a Slack incoming-webhook message ({"text": …}; Mattermost, Rocket.Chat and Teams'
              Slack-compatible hooks take it too)
    email     a plain-text mail through the SMTP server of the settings (STARTTLS, login)

The body is rendered once, when the notification is queued (storage/outbox.py keeps it); sending
only signs and transmits it, so a retry sends the very same bytes.
"""

from __future__ import annotations

import hashlib
import hmac
import smtplib
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any

import aiohttp
import orjson

from ..settings import Settings

SIGNATURE_HEADER = "Helicone-Signature"
_STATE_WORDS = {"firing": "FIRING", "resolved": "resolved", "test": "test"}


def sign(body: bytes, secret: str) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def _shown(value: Any) -> str:
    if value is None:
        return "no data"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def summary(notification: Mapping[str, Any]) -> str:
    """One line a person reads first (Slack text, email subject)."""
    rule = notification["rule"]
    state = _STATE_WORDS.get(notification["state"], notification["state"])
    group = f" [{notification.get('group_by')}={notification['group']}]" if notification.get("group") is not None else ""
    if notification["state"] == "test":
        return f"Heliograph test notification for \"{rule['name']}\""
    comparison = ">" if notification.get("comparison", "gt") == "gt" else "<"
    if notification.get("mode") == "anomaly":
        limit = f"{_shown(notification['threshold'])}× baseline {_shown(notification.get('baseline'))}"
    else:
        limit = _shown(notification["threshold"])
    return (f"[{state}] {rule['name']}{group}: {notification['metric']} = {_shown(notification.get('value'))} "
            f"({comparison} {limit} over {notification.get('window')} s)")


def render(channel: Mapping[str, Any], notification: Mapping[str, Any]) -> bytes:
    """The body this channel is sent for this notification."""
    if channel["type"] == "slack":
        link = notification.get("url")
        text = summary(notification) + (f"\n<{link}|Open in Heliograph>" if link else "")
        return orjson.dumps({"text": text})
    if channel["type"] == "email":
        lines = [summary(notification), ""]
        lines += [f"{key}: {value}" for key, value in notification.items() if key not in ("rule",)]
        return orjson.dumps({"to": channel["to"], "subject": summary(notification), "text": "\n".join(lines)})
    return orjson.dumps(dict(notification))


@dataclass(frozen=True, slots=True)
class Outcome:
    ok: bool
    status: int | None = None
    error: str | None = None


async def send_http(session: aiohttp.ClientSession, channel: Mapping[str, Any], body: bytes,
                    timeout: float) -> Outcome:
    headers = {"Content-Type": "application/json", "User-Agent": "heliograph-notifier"}
    if channel.get("secret"):
        headers[SIGNATURE_HEADER] = sign(body, channel["secret"])
    try:
        async with session.post(channel["url"], data=body, headers=headers,
                                timeout=aiohttp.ClientTimeout(total=timeout), allow_redirects=False) as response:
            await response.read()
            ok = 200 <= response.status < 300
            return Outcome(ok, response.status, None if ok else f"HTTP {response.status}")
    except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
        return Outcome(False, None, f"{type(exc).__name__}: {exc}".strip().rstrip(":"))


def send_email(settings: Settings, body: bytes, timeout: float) -> Outcome:
    """Blocking (smtplib): run it in a thread."""
    if not settings.smtp_host:
        return Outcome(False, None, "no SMTP server: set smtp_host (HELIOGRAPH_SMTP_HOST)")
    mail = orjson.loads(body)
    message = EmailMessage()
    message["From"] = settings.smtp_from
    message["To"] = ", ".join(mail["to"])
    message["Subject"] = mail["subject"]
    message.set_content(mail["text"])
    try:
        with smtplib.SMTP(settings.smtp_host, settings.smtp_port, timeout=timeout) as smtp:
            if settings.smtp_starttls:
                smtp.starttls(context=ssl.create_default_context())
            if settings.smtp_username:
                smtp.login(settings.smtp_username, settings.smtp_password)
            smtp.send_message(message)
    except smtplib.SMTPResponseException as exc:
        return Outcome(False, exc.smtp_code, f"SMTP {exc.smtp_code}: {exc.smtp_error!r}")
    except (smtplib.SMTPException, OSError) as exc:
        return Outcome(False, None, f"{type(exc).__name__}: {exc}")
    return Outcome(True, 250)
