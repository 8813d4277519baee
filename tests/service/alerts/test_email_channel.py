"""Email against a real SMTP server (aiosmtpd): multipart text + HTML, safe headers, 4xx/5xx handling."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.alerts.domain.content import render
from services.alerts.domain.targets import Target
from services.alerts.notify.delivery import Deliverer
from services.alerts.notify.email import EmailChannel
from shared.errors import PermanentFailure, RetryableFailure
from shared.settings import Settings
from tests.domain.alerts.factories import make_risk
from tests.support.smtp import FakeSmtp
from tests.support.tls import openssl_available, self_signed_contexts

DANA = Target(kind="email", address="dana@vendor.example", receiver="csm")


def channel_for(smtp: FakeSmtp, **kwargs) -> EmailChannel:
    return EmailChannel(smtp.host, smtp.port, sender="churnsignal@vendor.example", timeout_s=5, **kwargs)


async def test_mail_arrives_with_text_and_html_parts() -> None:
    risk = make_risk(name="Acme\r\nBcc: everyone@vendor.example", summary="Usage <b>fell</b> & stayed low")
    with FakeSmtp() as smtp:
        await channel_for(smtp).send(render(risk, DANA, "http://cs.example"))
        [mail] = await smtp.wait_for(1)
    msg = mail.message
    assert mail.rcpt_tos == ("dana@vendor.example",)
    assert msg["To"] == "dana@vendor.example" and msg["From"] == "churnsignal@vendor.example"
    assert msg["Subject"] == "[churnsignal] HIGH Usage drop: Acme Bcc: everyone@vendor.example"
    assert msg["Bcc"] is None
    assert msg.get_content_type() == "multipart/alternative"
    assert "Usage <b>fell</b> & stayed low" in mail.text_part()
    assert "Usage &lt;b&gt;fell&lt;/b&gt; &amp; stayed low" in mail.html_part()
    assert "http://cs.example/ui/accounts/acme" in mail.text_part()
    assert msg["Message-ID"].endswith("@churnsignal>")


async def test_message_id_is_stable_per_notification() -> None:
    n = render(make_risk(), DANA, "http://cs.example")
    with FakeSmtp() as smtp:
        await channel_for(smtp).send(n)
        await channel_for(smtp).send(n)
        first, second = await smtp.wait_for(2)
    assert first.message["Message-ID"] == second.message["Message-ID"]


async def test_4xx_is_retried_then_delivered() -> None:
    with FakeSmtp() as smtp:
        smtp.script(["451 4.3.0 Try again later"])
        attempts: list = []
        deliverer = Deliverer({"email": channel_for(smtp)}, base_backoff_s=0.05,
                              on_attempt=lambda n, no, outcome, err, d: attempts.append((outcome, err)))
        assert await deliverer.deliver(render(make_risk(), DANA, "http://cs.example")) == "sent"
        assert len(smtp.messages()) == 1
    assert [a[0] for a in attempts] == ["retry", "sent"]
    assert attempts[0][1].details["code"] == "smtp_451"


async def test_5xx_is_permanent() -> None:
    with FakeSmtp() as smtp:
        smtp.script(["550 5.1.1 No such user"], stage="rcpt")
        with pytest.raises(PermanentFailure) as info:
            await channel_for(smtp).send(render(make_risk(), DANA, "http://cs.example"))
        assert smtp.messages() == []
    assert info.value.details["code"] == "smtp_550"


async def test_auth_with_username_and_password() -> None:
    with FakeSmtp(username="mailer", password="s3cret-pw") as smtp:
        await channel_for(smtp, username="mailer", password="s3cret-pw").send(
            render(make_risk(), DANA, "http://cs.example"))
        assert len(await smtp.wait_for(1)) == 1
        with pytest.raises(PermanentFailure) as info:
            await channel_for(smtp, username="mailer", password="wrong-pw").send(
                render(make_risk(), DANA, "http://cs.example"))
    assert info.value.details["code"] == "smtp_535"
    assert "wrong-pw" not in str(info.value)


async def test_unreachable_server_is_retryable() -> None:
    with FakeSmtp() as smtp:
        host, port = smtp.host, smtp.port
    channel = EmailChannel(host, port, sender="churnsignal@vendor.example", timeout_s=2)
    with pytest.raises(RetryableFailure):
        await channel.send(render(make_risk(), DANA, "http://cs.example"))


def test_from_settings() -> None:
    assert EmailChannel.from_settings(Settings()) is None
    configured = Settings(smtp_host="127.0.0.1", smtp_port=2525)
    assert isinstance(EmailChannel.from_settings(configured), EmailChannel)


@pytest.mark.skipif(not openssl_available(), reason="needs the openssl CLI to make a certificate")
async def test_starttls_with_auth(tmp_path: Path) -> None:
    server_ctx, client_ctx = self_signed_contexts(tmp_path)
    with FakeSmtp(username="mailer", password="s3cret-pw", tls_context=server_ctx) as smtp:
        # the server requires STARTTLS: a plain session is refused, permanently
        with pytest.raises(PermanentFailure):
            await channel_for(smtp).send(render(make_risk(), DANA, "http://cs.example"))
        # an untrusted certificate is a configuration problem, not something to retry
        with pytest.raises(PermanentFailure) as untrusted:
            await channel_for(smtp, starttls=True, username="mailer", password="s3cret-pw").send(
                render(make_risk(), DANA, "http://cs.example"))
        assert untrusted.value.details["code"] == "smtp_tls"
        await channel_for(smtp, starttls=True, tls_context=client_ctx, username="mailer",
                          password="s3cret-pw").send(render(make_risk(), DANA, "http://cs.example"))
        [mail] = await smtp.wait_for(1)
    assert mail.html_part() is not None
