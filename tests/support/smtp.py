"""A real SMTP server for tests (aiosmtpd on 127.0.0.1, free port) that keeps every message it accepts.

    with FakeSmtp() as smtp:             # or FakeSmtp(username="u", password="p") to check AUTH
        settings = Settings(smtp_host=smtp.host, smtp_port=smtp.port, ...)
        ...
        [mail] = await smtp.wait_for(1)
        mail.message["Subject"], mail.text_part(), mail.html_part()

`script(["451 4.3.0 Try again later"])` answers the next DATA commands with those lines (then accepts again);
`script([...], stage="rcpt")` does the same at RCPT TO.
"""

from __future__ import annotations

import asyncio
import email
import socket
import ssl
import threading
import time
from collections import deque
from dataclasses import dataclass
from email import policy
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword


@dataclass(frozen=True)
class ReceivedMail:
    mail_from: str
    rcpt_tos: tuple[str, ...]
    message: EmailMessage
    raw: bytes
    arrived_at: float

    def text_part(self) -> str | None:
        part = self.message.get_body(preferencelist=("plain",))
        return part.get_content() if part is not None else None

    def html_part(self) -> str | None:
        part = self.message.get_body(preferencelist=("html",))
        return part.get_content() if part is not None else None


class _Handler:
    def __init__(self, owner: FakeSmtp) -> None:
        self._owner = owner

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str,  # noqa: N802
                          rcpt_options: list[str]) -> str:
        scripted = self._owner._next_scripted("rcpt")
        if scripted is not None:
            return scripted
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        scripted = self._owner._next_scripted("data")
        if scripted is not None:
            return scripted
        raw = bytes(envelope.original_content or envelope.content)
        message = email.message_from_bytes(raw, policy=policy.default)
        self._owner._accept(ReceivedMail(mail_from=envelope.mail_from, rcpt_tos=tuple(envelope.rcpt_tos),
                                         message=message, raw=raw,  # type: ignore[arg-type]
                                         arrived_at=time.monotonic()))
        return "250 Message accepted for delivery"


class FakeSmtp:
    def __init__(self, *, username: str | None = None, password: str | None = None,
                 tls_context: ssl.SSLContext | None = None) -> None:
        """`tls_context` (a server context with a certificate): offer STARTTLS and require it."""
        self.host = "127.0.0.1"
        self.port = _free_port()
        self.username = username
        self.password = password
        self._lock = threading.Lock()
        self._mails: list[ReceivedMail] = []
        self._scripts: dict[str, deque[str]] = {"rcpt": deque(), "data": deque()}
        kwargs: dict[str, Any] = {}
        if tls_context is not None:
            kwargs.update(tls_context=tls_context, require_starttls=True)
        if username is not None:
            # Without TLS, AUTH is offered in the clear (loopback only); never *required*, so aiosmtpd
            # does not warn.
            kwargs.update(authenticator=self._authenticate, auth_require_tls=tls_context is not None)
        self._controller = Controller(_Handler(self), hostname=self.host, port=self.port, **kwargs)

    def start(self) -> FakeSmtp:
        self._controller.start()
        return self

    def stop(self) -> None:
        self._controller.stop()

    def __enter__(self) -> FakeSmtp:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def script(self, replies: list[str], *, stage: str = "data") -> None:
        with self._lock:
            self._scripts[stage].extend(replies)

    def messages(self) -> list[ReceivedMail]:
        with self._lock:
            return list(self._mails)

    async def wait_for(self, count: int, *, timeout_s: float = 10.0) -> list[ReceivedMail]:
        deadline = time.monotonic() + timeout_s
        while True:
            found = self.messages()
            if len(found) >= count:
                return found
            if time.monotonic() > deadline:
                raise TimeoutError(f"expected {count} mail(s), got {len(found)}")
            await asyncio.sleep(0.02)

    def _authenticate(self, server: Any, session: Any, envelope: Any, mechanism: str,
                      auth_data: Any) -> AuthResult:
        ok = (isinstance(auth_data, LoginPassword) and auth_data.login.decode() == self.username
              and auth_data.password.decode() == self.password)
        return AuthResult(success=ok, handled=False)  # aiosmtpd answers 235 / 535 itself

    def _next_scripted(self, stage: str) -> str | None:
        with self._lock:
            queue = self._scripts[stage]
            return queue.popleft() if queue else None

    def _accept(self, mail: ReceivedMail) -> None:
        with self._lock:
            self._mails.append(mail)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
