"""The Deliverer's retry, backoff, Retry-After, rate limit and classification, on a virtual clock."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import CollectorRegistry

from services.alerts.domain.content import Notification, render
from services.alerts.domain.targets import Target
from services.alerts.notify.delivery import Deliverer, RateLimiter, SlotStoreUnavailable
from shared.errors import ChurnsignalError, PermanentFailure, RetryableFailure
from shared.metrics import AlertsMetrics, CommonMetrics
from tests.domain.alerts.factories import make_risk

HOOK = Target(kind="slack_webhook", address="cs-alerts", receiver="team", url_ref="HOOK_URL")
HOOK_SAME_URL = Target(kind="slack_webhook", address="cs-alerts-2", receiver="other", url_ref="HOOK_URL")
MAIL = Target(kind="email", address="dana@vendor.example", receiver="csm")


class VirtualTime:
    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


class ScriptedChannel:
    """Raises the scripted errors in order, then succeeds; records when each send happened."""

    def __init__(self, kind: str, time: VirtualTime,
                 script: list[BaseException | None] | None = None) -> None:
        self.kind = kind
        self.time = time
        self.script = list(script or [])
        self.sends: list[tuple[str, float]] = []

    async def send(self, notification: Notification) -> None:
        self.sends.append((notification.dedup_key, self.time.now))
        if self.script:
            error = self.script.pop(0)
            if error is not None:
                raise error


def note(target: Target = HOOK, risk_id: str = "acme:usage_drop") -> Notification:
    return render(make_risk(risk_id=risk_id), target, "http://cs.example")


def make(channels, time: VirtualTime, attempts: list | None = None, **kwargs) -> Deliverer:
    def on_attempt(n, attempt_no, outcome, error, duration):
        if attempts is not None:
            attempts.append((attempt_no, outcome, error.details.get("code") if error is not None else None))

    return Deliverer({c.kind: c for c in channels}, on_attempt=on_attempt, clock=time.clock, sleep=time.sleep,
                     rng=lambda: 1.0, **kwargs)


async def test_retryable_then_sent() -> None:
    t = VirtualTime()
    mail = ScriptedChannel("email", t, [RetryableFailure("x", code="smtp_451", retry_after=None),
                                        RetryableFailure("x", code="http_503", retry_after=None)])
    attempts: list = []
    result = await make([mail], t, attempts).deliver_detailed(note(MAIL))
    assert result.outcome == "sent" and result.attempts == 3
    assert attempts == [(1, "retry", "smtp_451"), (2, "retry", "http_503"), (3, "sent", None)]
    assert t.sleeps == [pytest.approx(0.5), pytest.approx(1.0)]   # base * 2^n, full jitter with rng = 1


async def test_jitter_scales_the_backoff_and_is_capped() -> None:
    t = VirtualTime()
    mail = ScriptedChannel("email", t, [RetryableFailure("x", code="smtp_451", retry_after=None)] * 8)
    deliverer = Deliverer({"email": mail}, clock=t.clock, sleep=t.sleep, rng=lambda: 0.5, max_backoff_s=4.0)
    assert await deliverer.deliver(note(MAIL)) == "sent"
    assert t.sleeps == [pytest.approx(x) for x in (0.25, 0.5, 1.0, 2.0, 2.0, 2.0, 2.0, 2.0)]


async def test_retries_to_slack_also_respect_the_rate_limit() -> None:
    t = VirtualTime()
    hook = ScriptedChannel("slack_webhook", t, [RetryableFailure("x", code="http_500", retry_after=None)])
    await make([hook], t).deliver(note())
    (_, first), (_, second) = hook.sends
    assert second - first >= 1.0


async def test_permanent_is_dead_lettered_after_one_attempt() -> None:
    t = VirtualTime()
    hook = ScriptedChannel("slack_webhook", t, [PermanentFailure("gone", code="channel_not_found")])
    attempts: list = []
    result = await make([hook], t, attempts).deliver_detailed(note())
    assert (result.outcome, result.attempts, result.code) == ("dead_letter", 1, "channel_not_found")
    assert attempts == [(1, "dead_letter", "channel_not_found")]
    assert len(hook.sends) == 1


async def test_retry_after_sets_the_minimum_delay() -> None:
    t = VirtualTime()
    hook = ScriptedChannel("slack_webhook", t, [RetryableFailure("429", code="http_429", retry_after=7.0)])
    await make([hook], t).deliver(note())
    (_, first), (_, second) = hook.sends
    assert second - first >= 7.0


async def test_retry_after_holds_back_other_messages_to_the_same_webhook() -> None:
    t = VirtualTime()
    hook = ScriptedChannel("slack_webhook", t, [RetryableFailure("429", code="http_429", retry_after=5.0)])
    deliverer = make([hook], t)
    assert await deliverer.deliver(note(HOOK)) == "sent"
    start = t.now
    assert await deliverer.deliver(note(HOOK_SAME_URL, risk_id="other")) == "sent"
    # rate key is the webhook URL reference: the second target shares it
    assert hook.sends[-1][1] >= start and hook.sends[-1][1] - hook.sends[0][1] >= 5.0


async def test_at_most_one_message_per_second_per_slack_target() -> None:
    t = VirtualTime()
    hook = ScriptedChannel("slack_webhook", t)
    mail = ScriptedChannel("email", t)
    deliverer = make([hook, mail], t)
    outcomes = await asyncio.gather(*(deliverer.deliver(note(HOOK, risk_id=f"r{i}")) for i in range(3)),
                                    *(deliverer.deliver(note(MAIL, risk_id=f"m{i}")) for i in range(3)))
    assert set(outcomes) == {"sent"}
    hook_times = [at for _, at in hook.sends]
    assert all(b - a >= 1.0 for a, b in zip(hook_times, hook_times[1:], strict=False))
    assert len({at for _, at in mail.sends}) == 1        # email is not rate-limited: all at once


async def test_deadline_exhausted_is_failed() -> None:
    t = VirtualTime()
    hook = ScriptedChannel("slack_webhook", t,
                           [RetryableFailure("x", code="http_500", retry_after=None)] * 50)
    attempts: list = []
    result = await make([hook], t, attempts, deadline_s=10.0).deliver_detailed(note())
    assert result.outcome == "failed"
    assert attempts[-1][1] == "failed" and all(a[1] == "retry" for a in attempts[:-1])
    assert t.now - 1000.0 <= 10.0


async def test_retry_after_beyond_deadline_fails_at_once() -> None:
    t = VirtualTime()
    hook = ScriptedChannel("slack_webhook", t, [RetryableFailure("429", code="http_429", retry_after=600.0)])
    result = await make([hook], t, deadline_s=60.0).deliver_detailed(note())
    assert (result.outcome, result.attempts) == ("failed", 1)


async def test_unexpected_exception_is_dead_lettered(caplog: pytest.LogCaptureFixture) -> None:
    t = VirtualTime()
    hook = ScriptedChannel("slack_webhook", t, [KeyError("https://hooks.example/secret")])
    result = await make([hook], t).deliver_detailed(note())
    assert (result.outcome, result.code) == ("dead_letter", "unexpected")
    assert "secret" not in caplog.text and "secret" not in str(result.error)


async def test_missing_channel_is_dead_lettered() -> None:
    t = VirtualTime()
    result = await make([], t).deliver_detailed(note(MAIL))
    assert (result.outcome, result.attempts, result.code) == ("dead_letter", 0, "no_channel")


async def test_default_channel_serves_every_kind_without_rate_limit() -> None:
    t = VirtualTime()
    console = ScriptedChannel("console", t)
    deliverer = Deliverer({}, default_channel=console, clock=t.clock, sleep=t.sleep)
    assert [await deliverer.deliver(note(HOOK, risk_id=f"r{i}")) for i in range(3)] == ["sent"] * 3
    assert [at for _, at in console.sends] == [1000.0] * 3


async def test_attempt_timeout_is_retryable() -> None:
    class Hanging:
        kind = "email"
        calls = 0

        async def send(self, notification: Notification) -> None:
            self.calls += 1
            if self.calls == 1:
                await asyncio.Event().wait()

    channel = Hanging()
    attempts: list = []
    deliverer = Deliverer({"email": channel}, attempt_timeout_s=0.05, base_backoff_s=0.0,
                          on_attempt=lambda n, no, out, err, d: attempts.append((out, err and err.details)))
    assert await deliverer.deliver(note(MAIL)) == "sent"
    assert attempts[0] == ("retry", {"code": "timeout", "retry_after": None})


async def test_async_callback_and_metrics() -> None:
    t = VirtualTime()
    registry = CollectorRegistry()
    metrics, common = AlertsMetrics(registry), CommonMetrics(registry, "alerts")
    seen: list[tuple[int, str]] = []

    async def on_attempt(n: Notification, no: int, outcome: str, error: ChurnsignalError | None,
                         d: float) -> None:
        await asyncio.sleep(0)
        seen.append((no, outcome))

    hook = ScriptedChannel("slack_webhook", t, [RetryableFailure("x", code="http_500", retry_after=None),
                                                None, PermanentFailure("no", code="invalid_blocks")])
    deliverer = Deliverer({"slack_webhook": hook}, on_attempt=on_attempt, metrics=metrics,
                          common_metrics=common, clock=t.clock, sleep=t.sleep)
    assert await deliverer.deliver(note()) == "sent"
    assert await deliverer.deliver(note(risk_id="other")) == "dead_letter"
    assert seen == [(1, "retry"), (2, "sent"), (1, "dead_letter")]

    def value(name: str, **labels: str) -> float:
        return registry.get_sample_value(name, labels) or 0.0

    assert value("churnsignal_notifications_total", receiver="slack_webhook", outcome="sent") == 1
    assert value("churnsignal_notifications_total", receiver="slack_webhook", outcome="dead_letter") == 1
    assert value("churnsignal_notification_retries_total", receiver="slack_webhook") == 1
    assert value("churnsignal_dead_letters_total", service="alerts", reason="invalid_blocks") == 1
    assert value("churnsignal_signal_to_notification_seconds_count", receiver="slack_webhook") == 1


# --- slots shared with other instances (the SlotStore port) -----------------------------------------------


class SharedSlots:
    """A SlotStore on the virtual clock, with the PostgreSQL store's semantics; `down` makes it fail."""

    def __init__(self, time: VirtualTime) -> None:
        self.time = time
        self.next: dict[str, float] = {}
        self.reserved: list[str] = []
        self.deferred: list[tuple[str, float]] = []
        self.down = False

    async def reserve(self, key: str, interval_s: float) -> float:
        await asyncio.sleep(0)
        if self.down:
            raise SlotStoreUnavailable("rate slots: ConnectionRefusedError", code="rate_slots")
        self.reserved.append(key)
        slot = max(self.next.get(key, float("-inf")), self.time.now)
        self.next[key] = slot + interval_s
        return slot - self.time.now

    async def defer(self, key: str, seconds: float) -> None:
        if self.down:
            raise SlotStoreUnavailable("rate slots: ConnectionRefusedError", code="rate_slots")
        self.deferred.append((key, seconds))
        self.next[key] = max(self.next.get(key, float("-inf")), self.time.now + seconds)


async def test_two_instances_sharing_slots_send_one_message_per_second_per_slack_target() -> None:
    t = VirtualTime()
    slots = SharedSlots(t)
    hooks = [ScriptedChannel("slack_webhook", t), ScriptedChannel("slack_webhook", t)]
    mail = ScriptedChannel("email", t)
    instances = [make([hook, mail], t, rate_slots=slots) for hook in hooks]
    outcomes = await asyncio.gather(*(d.deliver(note(HOOK, risk_id=f"{i}:r{n}"))
                                      for i, d in enumerate(instances) for n in range(3)),
                                    *(d.deliver(note(MAIL, risk_id=f"{i}:m")) for i, d in enumerate(instances)))
    assert set(outcomes) == {"sent"}
    hook_times = sorted(at for hook in hooks for _, at in hook.sends)
    assert len(hook_times) == 6 and all(b - a >= 1.0 for a, b in zip(hook_times, hook_times[1:], strict=False))
    assert slots.reserved == [HOOK.rate_key] * 6         # email is neither limited nor asks the store
    assert [at for _, at in mail.sends] == [1000.0, 1000.0]


async def test_the_same_instances_without_shared_slots_would_send_together() -> None:
    t = VirtualTime()
    hooks = [ScriptedChannel("slack_webhook", t), ScriptedChannel("slack_webhook", t)]
    instances = [make([hook], t) for hook in hooks]
    await asyncio.gather(*(d.deliver(note(HOOK, risk_id=f"{i}")) for i, d in enumerate(instances)))
    assert [at for hook in hooks for _, at in hook.sends] == [1000.0, 1000.0]


async def test_a_shared_slot_past_the_deadline_is_given_up() -> None:
    t = VirtualTime()
    slots = SharedSlots(t)
    slots.next[HOOK.rate_key] = t.now + 30.0             # another instance holds the next 30 s
    hook = ScriptedChannel("slack_webhook", t)
    result = await make([hook], t, rate_slots=slots, deadline_s=10.0).deliver_detailed(note())
    assert (result.outcome, result.attempts, result.code) == ("failed", 0, "deadline")
    assert hook.sends == [] and t.now == 1000.0          # gave up at once instead of sleeping


async def test_retry_after_from_slack_is_recorded_in_the_shared_slots() -> None:
    t = VirtualTime()
    slots = SharedSlots(t)
    hook = ScriptedChannel("slack_webhook", t, [RetryableFailure("429", code="http_429", retry_after=5.0)])
    hook_of_other = ScriptedChannel("slack_webhook", t)
    webhook = ScriptedChannel("webhook", t, [RetryableFailure("429", code="http_429", retry_after=3.0)])
    this, other = make([hook, webhook], t, rate_slots=slots), make([hook_of_other], t, rate_slots=slots)
    assert await this.deliver(note(HOOK)) == "sent"
    assert slots.deferred == [(HOOK.rate_key, 5.0)]
    assert await other.deliver(note(HOOK_SAME_URL, risk_id="other")) == "sent"
    assert hook_of_other.sends[0][1] - hook.sends[-1][1] >= 1.0
    generic = Target(kind="webhook", address="crm", receiver="ops", url_ref="CRM_URL")
    assert await this.deliver(note(generic)) == "sent"
    assert slots.deferred == [(HOOK.rate_key, 5.0)]      # only rate-limited kinds share their Retry-After


async def test_unreachable_slots_fall_back_to_the_local_limiter(caplog: pytest.LogCaptureFixture) -> None:
    t = VirtualTime()
    slots = SharedSlots(t)
    slots.down = True
    registry = CollectorRegistry()
    hook = ScriptedChannel("slack_webhook", t)
    deliverer = make([hook], t, rate_slots=slots, metrics=AlertsMetrics(registry))
    outcomes = await asyncio.gather(*(deliverer.deliver(note(HOOK, risk_id=f"r{i}")) for i in range(3)))
    assert outcomes == ["sent"] * 3
    times = [at for _, at in hook.sends]
    assert all(b - a >= 1.0 for a, b in zip(times, times[1:], strict=False))
    assert registry.get_sample_value("churnsignal_alerts_rate_slot_fallbacks_total") == 3
    assert caplog.text.count("shared rate slots unavailable") == 1
    # Left alone for a while after a failure, then asked again.
    slots.down = False
    t.now += 10.0
    assert await deliverer.deliver(note(HOOK, risk_id="later")) == "sent"
    assert slots.reserved == [HOOK.rate_key]
    assert registry.get_sample_value("churnsignal_alerts_rate_slot_fallbacks_total") == 3


async def test_a_slot_store_that_does_not_answer_is_not_waited_for() -> None:
    class Silent:
        async def reserve(self, key: str, interval_s: float) -> float:
            await asyncio.Event().wait()
            return 0.0

        async def defer(self, key: str, seconds: float) -> None:
            await asyncio.Event().wait()

    t = VirtualTime()
    limiter = RateLimiter(clock=t.clock, sleep=t.sleep, slots=Silent(), slot_timeout_s=0.05)
    assert await limiter.acquire(HOOK.rate_key, 1.0, t.now + 60.0)
    await limiter.defer_shared(HOOK.rate_key, 4.0)
    assert limiter.next_slot(HOOK.rate_key) == pytest.approx(1004.0)
