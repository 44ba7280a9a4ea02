"""Email delivery: SMTP (STARTTLS, TLS or plain) or, with no SMTP configured, an outbox dir."""

from __future__ import annotations

import logging
import smtplib
import ssl
import uuid
from email.message import EmailMessage
from pathlib import Path
from typing import Protocol

from alchemist.config import Settings

logger = logging.getLogger(__name__)


class MailSender(Protocol):
    """Sends one email."""

    def send(self, message: EmailMessage) -> None:
        """Deliver it or raise."""
        ...


class SmtpSender:
    """Any SMTP server: Gmail with an app password (smtp.gmail.com:587, STARTTLS) works."""

    def __init__(self, settings: Settings) -> None:
        assert settings.SMTP_HOST is not None
        self.host, self.port = settings.SMTP_HOST, settings.SMTP_PORT
        self.security = settings.SMTP_SECURITY.lower()
        self.user = settings.SMTP_USER
        self.password = settings.SMTP_PASSWORD.get_secret_value() if settings.SMTP_PASSWORD else None

    def send(self, message: EmailMessage) -> None:
        """One connection per email: notifications are rare and servers drop idle ones."""
        context = ssl.create_default_context()
        smtp: smtplib.SMTP
        if self.security == "tls":
            smtp = smtplib.SMTP_SSL(self.host, self.port, timeout=30, context=context)
        else:
            smtp = smtplib.SMTP(self.host, self.port, timeout=30)
        with smtp:
            if self.security == "starttls":
                smtp.starttls(context=context)
            if self.user and self.password:
                smtp.login(self.user, self.password)
            smtp.send_message(message)


class OutboxSender:
    """Writes each email as an .eml file (the embedded default) and logs where."""

    def __init__(self, outbox: Path) -> None:
        self.outbox = outbox

    def send(self, message: EmailMessage) -> None:
        """Write the message atomically into the outbox."""
        self.outbox.mkdir(parents=True, exist_ok=True)
        name = f"{uuid.uuid4().hex}.eml"
        partial = self.outbox / f".{name}.part"
        partial.write_bytes(bytes(message))
        partial.rename(self.outbox / name)
        logger.info("email to %s written to %s", message["To"], self.outbox / name)


def build_sender(settings: Settings) -> MailSender:
    """SMTP when SMTP_HOST is set, else the outbox in the data dir."""
    if settings.SMTP_HOST:
        return SmtpSender(settings)
    return OutboxSender(settings.ALCHEMIST_DATA_DIR / "outbox")
