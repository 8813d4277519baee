"""Email over SMTP (aiosmtplib): one multipart/alternative message with a text and an HTML part.

SMTP 4xx answers and connection problems are retryable; 5xx answers (unknown mailbox, authentication
failed, message refused) are permanent.
"""

from __future__ import annotations

import hashlib
import ssl
from email.message import EmailMessage
from email.utils import formatdate

import aiosmtplib
from pydantic import SecretStr

from services.alerts.domain.content import Notification, header_safe
from shared.errors import PermanentFailure, RetryableFailure
from shared.settings import Settings


def message_id(notification: Notification) -> str:
    """Derived from the dedup key: a resend after a crash carries the same Message-ID."""
    digest = hashlib.sha256(notification.dedup_key.encode()).hexdigest()[:32]
    return f"<{digest}@churnsignal>"


def build_message(notification: Notification, sender: str) -> EmailMessage:
    msg = EmailMessage()
    msg["Subject"] = header_safe(notification.email_subject)
    msg["From"] = header_safe(sender)
    msg["To"] = notification.target.address
    msg["Date"] = formatdate(localtime=False, usegmt=True)
    msg["Message-ID"] = message_id(notification)
    msg["X-Churnsignal-Kind"] = notification.kind
    msg.set_content(notification.email_text)
    msg.add_alternative(notification.email_html, subtype="html")
    return msg


class EmailChannel:
    kind = "email"

    def __init__(self, host: str, port: int = 25, *, sender: str, username: str | None = None,
                 password: SecretStr | str | None = None, starttls: bool = False, use_tls: bool = False,
                 timeout_s: float = 15.0, tls_context: ssl.SSLContext | None = None) -> None:
        """`tls_context` (optional) decides which certificates STARTTLS / TLS trust; default: the system's."""
        self._host = host
        self._port = port
        self._sender = sender
        self._username = username
        self._password = SecretStr(password) if isinstance(password, str) else password
        self._starttls = starttls
        self._use_tls = use_tls
        self._timeout = timeout_s
        self._tls_context = tls_context

    @classmethod
    def from_settings(cls, settings: Settings) -> EmailChannel | None:
        """None when no SMTP host is configured."""
        if not settings.smtp_host:
            return None
        return cls(settings.smtp_host, settings.smtp_port, sender=settings.smtp_from,
                   username=settings.smtp_username, password=settings.smtp_password,
                   starttls=settings.smtp_starttls)

    async def send(self, notification: Notification) -> None:
        what = notification.target.key
        message = build_message(notification, self._sender)
        try:
            await aiosmtplib.send(
                message, hostname=self._host, port=self._port, username=self._username,
                password=self._password.get_secret_value() if self._password is not None else None,
                start_tls=self._starttls, use_tls=self._use_tls, timeout=self._timeout,
                tls_context=self._tls_context)
        except aiosmtplib.SMTPRecipientsRefused as exc:
            codes = [r.code for r in exc.recipients]
            if codes and all(400 <= c < 500 for c in codes):
                raise RetryableFailure(f"{what}: recipient deferred (SMTP {codes[0]})", retry_after=None,
                                       code=f"smtp_{codes[0]}") from None
            raise PermanentFailure(f"{what}: recipient refused (SMTP {codes[0] if codes else '?'})",
                                   code=f"smtp_{codes[0] if codes else 'refused'}") from None
        except aiosmtplib.SMTPResponseException as exc:
            if 400 <= exc.code < 500:
                raise RetryableFailure(f"{what}: SMTP {exc.code} ({type(exc).__name__})", retry_after=None,
                                       code=f"smtp_{exc.code}") from None
            raise PermanentFailure(f"{what}: SMTP {exc.code} ({type(exc).__name__})",
                                   code=f"smtp_{exc.code}") from None
        except ssl.SSLCertVerificationError:
            raise PermanentFailure(f"{what}: SMTP server certificate not trusted", code="smtp_tls") from None
        except aiosmtplib.SMTPNotSupported:
            raise PermanentFailure(f"{what}: SMTP server does not support a required extension",
                                   code="smtp_not_supported") from None
        except (aiosmtplib.SMTPException, OSError) as exc:
            # connection refused / dropped, timeouts
            raise RetryableFailure(f"{what}: {type(exc).__name__}", retry_after=None,
                                   code=type(exc).__name__) from None
