"""Compact per-account state and its byte encoding.

Everything an account needs for scoring lives here, bounded: daily usage counts for 8 weeks, daily
bitmaps of (hashed) users and features for 30 days, daily opened-ticket counts for 8 weeks, the open
tickets (at most 24), the key contacts' own usage (at most 4 people), at most 6 contacts (champions,
sponsors, and people whose role is not known yet; plain users and admins are not kept), the last 12
sentiment answers, the open risks, the last published health, and the account's lifecycle (`churned`,
`renewed`...) with the time it took effect. Times are epoch seconds, days are
UTC day numbers (epoch seconds // 86400); all daily arrays end at `end_day` (oldest first).

Encoding: a fixed binary header and packed arrays (leading zero days dropped, opened tickets as sparse
(age, count) pairs), then an orjson list for the strings and small records. The account facts there are a
list of 8 (name ... renewal day), or 10 once a lifecycle is known (lifecycle, its time): states written
before lifecycles existed decode unchanged. A typical account encodes
to 600-900 bytes, a busy one to about 1 KB; the unit tests hold a busy account under 1.5 KB.
"""

from __future__ import annotations

import struct
import zlib
from array import array
from itertools import compress
from typing import TYPE_CHECKING, Any

import orjson

from shared.risks import SEVERITIES as SEVERITIES  # a severity is stored as its index

if TYPE_CHECKING:
    from .signals import Memo

DAY = 86_400
USAGE_DAYS = 56
BREADTH_DAYS = 30
TICKET_DAYS = 56
SCORE_DAYS = 8
MASK_DAYS = 64
MASK64 = (1 << 64) - 1
USER_BITS = 32
FEATURE_BITS = 16
MAX_KEY_USERS = 4
MAX_CONTACTS = 6
MAX_OPEN_TICKETS = 24
MAX_SENTIMENTS = 12
NO_SCORE = 255
NONE = -1

ROLES = ("champion", "sponsor", "admin", "user")
KEY_ROLES = frozenset({0, 1})            # champion, sponsor
STATUSES = ("active", "left")
PRIORITIES = ("low", "normal", "high", "urgent")
SOURCES = ("nps", "csat", "survey", "conversation", "review")

# contact record: [name, user_hash, role, status, ts, first_ts, left_ts, since_ts]
#   role/status: index into ROLES/STATUSES or -1 when unknown; ts: occurred_at of the newest update;
#   first_ts: of the oldest update; left_ts: of the update that said "left"; since_ts: when the person
#   became an active key contact (-1: not known). A departure counts only when something was known of
#   the person before it (a contact first seen as "left" left long ago).
C_NAME, C_USER, C_ROLE, C_STATUS, C_TS, C_FIRST, C_LEFT, C_SINCE = range(8)
# rhythm record (see AccountState.rhythm)
RH_N, RH_FIRST, RH_LAST, RH_SQ, RH_UPTO, RH_PREV = range(6)
# key user record: [last_day, mask, usual_gap] (mask bit i = active on day end_day - i)
K_LAST, K_MASK, K_GAP = range(3)
# sentiment record: [ts, normalized * 1000, contact hash (0: none), source index, raw score * 10 or -1]
S_TS, S_NORM, S_CONTACT, S_SOURCE, S_RAW = range(5)
# open risk record: [opened_ts, seq, severity index, opening number, material, evidence]
R_OPENED, R_SEQ, R_SEV, R_N, R_MATERIAL, R_EVIDENCE = range(6)


def stable_hash(text: str) -> int:
    """A 32-bit hash that is the same in every process (unlike `hash()`)."""
    return zlib.crc32(text.encode("utf-8", "surrogatepass"))


# Everything the encoding keeps (all of an account's state but the memo).
STATE_FIELDS = (
    "account_id", "clock", "eval_ts", "eval_day", "next_due", "end_day", "first_day",
    "first_usage_day", "last_usage_day", "usual_gap", "first_ticket_day", "known_mask", "risk_counter",
    "usage", "users", "features", "tickets_opened", "score_max", "key_users", "open_tickets",
    "name", "csm_email", "csm_slack", "csm_name", "segment", "arr", "seats", "renewal_day", "facts_ts",
    "lifecycle", "lifecycle_ts", "rhythm", "key_counts",
    "contacts", "sentiments", "risks", "last_score", "last_tier", "last_components",
)


class AccountState:
    """Mutable per-account state; only the engine changes it.

    `memo` keeps measurements derived from the state between evaluations (see `signals`); it is not
    encoded: a decoded state starts without it, and it is rebuilt when needed.
    """

    __slots__ = (*STATE_FIELDS, "memo")

    def __init__(self, account_id: str) -> None:
        self.account_id = account_id
        self.clock = NONE                 # max occurred_at seen (s)
        self.eval_ts = NONE               # `at` of the last evaluation (s)
        self.eval_day = NONE              # day of the last clock evaluation: windows use days before it
        self.next_due: int | None = None  # (s)
        self.end_day = NONE               # newest day of the daily arrays
        self.first_day = NONE             # first day with any event
        self.first_usage_day = NONE
        self.last_usage_day = NONE
        self.usual_gap = 0                # the account's usual gap between active days, last known
        self.first_ticket_day = NONE
        self.known_mask = 0               # which components were known at the last evaluation
        self.risk_counter = 0
        self.usage = [0] * USAGE_DAYS
        self.users = [0] * BREADTH_DAYS
        self.features = [0] * BREADTH_DAYS
        self.tickets_opened = [0] * TICKET_DAYS
        self.score_max = [NO_SCORE] * SCORE_DAYS
        self.key_users: dict[int, list[int]] = {}
        self.open_tickets: dict[int, list[int]] = {}   # ticket hash -> [priority, last touched day]
        self.name: str | None = None
        self.csm_email: str | None = None
        self.csm_slack: str | None = None
        self.csm_name: str | None = None
        self.segment: str | None = None
        self.arr: float | None = None
        self.seats: int | None = None
        self.renewal_day: int | None = None
        self.facts_ts = NONE
        self.lifecycle: str | None = None  # the newest lifecycle told by an account event
        self.lifecycle_ts = NONE           # its lifecycle_at (else its event's occurred_at) (s)
        # the account's active days over its whole life, folded in at the daily tick (see `fold_rhythm`):
        # [visits (active days, a visit carried over to the next day counted once), first active day, last
        #  active day, sum of squared gaps between visits, days folded up to (excl.), the last gap]
        self.rhythm = [0, NONE, NONE, 0, NONE, 0]
        self.key_counts: dict[str, dict[int, int]] = {}   # key feature -> {day: uses} (configured ones)
        self.contacts: dict[str, list[Any]] = {}
        self.sentiments: list[list[int]] = []
        self.risks: dict[str, list[Any]] = {}
        self.last_score: int | None = None       # last published score * 10
        self.last_tier = "unknown"
        self.last_components: list[list[int | None]] = []  # [[score*10|None, contribution*10], ...]
        self.memo: Memo | None = None

    # -- windows -------------------------------------------------------------------------------------

    def advance_to(self, day: int) -> None:
        """Move the end of the daily windows forward to `day` (older days fall out)."""
        if self.end_day == NONE:
            self.end_day = day
            return
        k = day - self.end_day
        if k <= 0:
            return
        self.usage = _shift(self.usage, k, 0)
        self.users = _shift(self.users, k, 0)
        self.features = _shift(self.features, k, 0)
        self.tickets_opened = _shift(self.tickets_opened, k, 0)
        self.score_max = _shift(self.score_max, k, NO_SCORE)
        if k >= MASK_DAYS:
            for rec in self.key_users.values():
                rec[K_MASK] = 0
        else:
            for rec in self.key_users.values():
                rec[K_MASK] = (rec[K_MASK] << k) & MASK64
        self.end_day = day

    def index(self, day: int, length: int) -> int:
        """Position of `day` in a daily array of `length` ending at end_day; -1 when outside."""
        i = length - 1 - (self.end_day - day)
        return i if 0 <= i < length else -1

    def day_value(self, values: list[int], day: int, default: int = 0) -> int:
        i = self.index(day, len(values))
        return values[i] if i >= 0 else default

    def window_sum(self, values: list[int], first: int, last: int) -> int:
        """Sum of a daily array over days first..last inclusive (days outside the array count 0)."""
        n = len(values)
        lo = max(0, n - 1 - (self.end_day - first))
        hi = min(n - 1, n - 1 - (self.end_day - last))
        return sum(values[lo:hi + 1]) if hi >= lo else 0

    def window_or(self, values: list[int], first: int, last: int) -> int:
        n = len(values)
        lo = max(0, n - 1 - (self.end_day - first))
        hi = min(n - 1, n - 1 - (self.end_day - last))
        out = 0
        for v in values[lo:hi + 1]:
            out |= v
        return out

    def active_days(self, values: list[int], before: int) -> list[int]:
        """Days before `before` with a non-zero value in a daily array, oldest first."""
        start = self.end_day - len(values) + 1
        kept = max(0, before - start)
        return list(compress(range(start, start + kept), values[:kept]))

    def last_active_day(self, before: int) -> int:
        """The last day before `before` with usage (the array's start - 1 when none is kept)."""
        values = self.usage
        n = len(values)
        i = min(n - 1, n - 1 - (self.end_day - before) - 1)
        while i >= 0:
            if values[i]:
                return self.end_day - (n - 1 - i)
            i -= 1
        if self.last_usage_day != NONE and self.last_usage_day < before:
            return min(self.last_usage_day, self.end_day - n)
        return self.end_day - n

    def user_last_active_day(self, rec: list[int], before: int) -> int | None:
        """The last day before `before` a key user was active, None when never."""
        shift = self.end_day - before + 1              # bit index of day before-1
        if shift < 0:
            shift = 0
        m = rec[K_MASK] >> shift
        if m:
            return self.end_day - shift - ((m & -m).bit_length() - 1)
        last = rec[K_LAST]   # older than the mask reaches back
        return last if last != NONE and last < before else None

    def mask_days(self, mask: int, before: int) -> list[int]:
        """Days before `before` set in a key user's day mask, oldest first."""
        if not mask:
            return []
        bits = bin(mask)[2:]                   # highest bit (oldest day) first
        oldest = self.end_day - len(bits) + 1
        limit = max(0, before - oldest)
        return list(compress(range(oldest, oldest + limit), bits[:limit].encode().translate(_BIT_VALUES)))

    # -- facts -----------------------------------------------------------------------------------------

    def display_name(self) -> str:
        return self.name or self.account_id

    @property
    def churned(self) -> bool:
        """Whether the newest lifecycle says the account churned (scoring then raises no risk for it)."""
        return self.lifecycle == "churned"

    def key_contacts(self) -> list[tuple[str, list[Any]]]:
        return sorted((cid, c) for cid, c in self.contacts.items() if c[C_ROLE] in KEY_ROLES)

    def sync_key_users(self) -> None:
        """Track own usage for exactly the key contacts that have a user id (bounded)."""
        wanted: list[int] = []
        for _, c in sorted(self.contacts.items(), key=lambda kv: (-kv[1][C_TS], kv[0])):
            if c[C_ROLE] in KEY_ROLES and c[C_USER] and c[C_STATUS] != 1 and c[C_USER] not in wanted:
                wanted.append(c[C_USER])
        wanted = wanted[:MAX_KEY_USERS]
        for h in [h for h in self.key_users if h not in wanted]:
            del self.key_users[h]
        for h in wanted:
            if h not in self.key_users:
                self.key_users[h] = [NONE, 0, 0]


_BIT_VALUES = bytes.maketrans(b"01", b"\x00\x01")   # a bit string as bytes of 0 and 1


def _shift(values: list[int], k: int, fill: int) -> list[int]:
    n = len(values)
    if k >= n:
        return [fill] * n
    return values[k:] + [fill] * k


# -- encoding --------------------------------------------------------------------------------------------

_FORMAT = 1
_HEADER = struct.Struct("<B" "qqqq" "iiiiii" "HBI" "HB" "BBBBBBBBBB")
# last published component: score*10 (0xFFFF: unknown), contribution*10
_COMPONENT = struct.Struct("<Hh")
# key user: user hash, last day, day mask, usual gap
_KEY_USER = struct.Struct("<IiQH")
# sentiment: ts relative to the end day, value*1000, contact hash, source, raw score*10
_SENTIMENT = struct.Struct("<ihIBh")
# contact (its id and name go in the JSON tail): user hash, role, status, then ts, first_ts, left_ts and
# since_ts relative to the end day (_NO_TS: not known)
_CONTACT = struct.Struct("<Ibbiiii")
_NO_TS = -(1 << 31)
_TIERS = ("unknown", "green", "yellow", "red")
_NO_VALUE = 0xFFFF


def _rel(ts: int, base: int) -> int:
    """A time relative to the end day, in 32 bits (saturating: events 68 years apart stay apart)."""
    return max(_NO_TS + 1, min((1 << 31) - 1, ts - base))


def _trimmed(values: list[int]) -> list[int]:
    for i, v in enumerate(values):
        if v:
            return values[i:]
    return []


def encode_state(state: AccountState) -> bytes:
    usage = _trimmed(state.usage)
    wide = 1 if usage and max(usage) > 0xFFFF else 0
    users = _trimmed(state.users)
    features = _trimmed(state.features)
    last = TICKET_DAYS - 1
    tickets = bytearray()
    for i, v in enumerate(state.tickets_opened):
        if v:
            tickets += bytes((last - i, v))
    base_ts = state.end_day * DAY
    header = _HEADER.pack(
        _FORMAT, state.clock, state.eval_ts, NONE if state.next_due is None else state.next_due,
        state.facts_ts, state.end_day, state.eval_day, state.first_day, state.first_usage_day,
        state.last_usage_day, state.first_ticket_day, min(state.usual_gap, 0xFFFF), state.known_mask,
        state.risk_counter,
        _NO_VALUE if state.last_score is None else state.last_score, _TIERS.index(state.last_tier),
        len(usage), wide, len(users), len(features), len(tickets) // 2, len(state.key_users),
        len(state.open_tickets), len(state.sentiments), len(state.last_components), len(state.contacts))
    parts = [header,
             array("I" if wide else "H", usage).tobytes(),
             array("I", users).tobytes(),
             array("H", features).tobytes(),
             bytes(tickets),
             bytes(state.score_max)]
    for score, contribution in state.last_components:
        parts.append(_COMPONENT.pack(_NO_VALUE if score is None else score, contribution))
    for h, rec in state.key_users.items():
        parts.append(_KEY_USER.pack(h, rec[K_LAST], rec[K_MASK], min(rec[K_GAP], 0xFFFF)))
    for s in state.sentiments:
        parts.append(_SENTIMENT.pack(_rel(s[S_TS], base_ts), s[S_NORM], s[S_CONTACT], s[S_SOURCE], s[S_RAW]))
    for c in state.contacts.values():
        parts.append(_CONTACT.pack(c[C_USER], c[C_ROLE], c[C_STATUS],
                                   *(_NO_TS if t == NONE else _rel(t, base_ts) for t in c[C_TS:C_SINCE + 1])))
    if state.open_tickets:
        parts.append(array("I", state.open_tickets.keys()).tobytes())
        packed = [(p << 24) | (d & 0xFFFFFF) for p, d in state.open_tickets.values()]
        parts.append(array("I", packed).tobytes())
    facts = None
    if state.facts_ts != NONE:
        facts = [state.name, state.csm_email, state.csm_slack, state.csm_name, state.segment, state.arr,
                 state.seats, state.renewal_day]
        if state.lifecycle is not None:
            facts += [state.lifecycle, state.lifecycle_ts]
    tail = [state.account_id, facts,
            [[cid, c[C_NAME]] for cid, c in state.contacts.items()] or None,
            [[t, *r] for t, r in state.risks.items()] or None]
    if state.rhythm[RH_UPTO] != NONE or state.key_counts:
        tail.append(state.rhythm)
        if state.key_counts:
            tail.append({f: sorted(days.items()) for f, days in state.key_counts.items()})
    parts.append(orjson.dumps(tail))
    return b"".join(parts)


def decode_state(raw: bytes) -> AccountState:
    if not raw or raw[0] != _FORMAT:
        raise ValueError(f"unknown account state format {raw[:1]!r}")
    st = AccountState.__new__(AccountState)
    st.memo = None
    (_, st.clock, st.eval_ts, next_due, st.facts_ts, st.end_day, st.eval_day, st.first_day,
     st.first_usage_day, st.last_usage_day, st.first_ticket_day, st.usual_gap, st.known_mask, st.risk_counter,
     last_score, tier, n_usage, wide, n_users, n_features, n_tickets, n_key, n_open, n_sent,
     n_comp, n_contacts) = _HEADER.unpack_from(raw, 0)
    st.next_due = None if next_due == NONE else next_due
    st.last_score = None if last_score == _NO_VALUE else last_score
    st.last_tier = _TIERS[tier]
    pos = _HEADER.size
    usage, pos = _read(raw, pos, "I" if wide else "H", n_usage)
    st.usage = [0] * (USAGE_DAYS - n_usage) + usage
    users, pos = _read(raw, pos, "I", n_users)
    st.users = [0] * (BREADTH_DAYS - n_users) + users
    features, pos = _read(raw, pos, "H", n_features)
    st.features = [0] * (BREADTH_DAYS - n_features) + features
    tickets = [0] * TICKET_DAYS
    for i in range(n_tickets):
        tickets[TICKET_DAYS - 1 - raw[pos + 2 * i]] = raw[pos + 2 * i + 1]
    st.tickets_opened = tickets
    pos += 2 * n_tickets
    st.score_max = list(raw[pos:pos + SCORE_DAYS])
    pos += SCORE_DAYS
    st.last_components = []
    for _ in range(n_comp):
        score, contribution = _COMPONENT.unpack_from(raw, pos)
        pos += _COMPONENT.size
        st.last_components.append([None if score == _NO_VALUE else score, contribution])
    st.key_users = {}
    for _ in range(n_key):
        h, last, mask, gap = _KEY_USER.unpack_from(raw, pos)
        pos += _KEY_USER.size
        st.key_users[h] = [last, mask, gap]
    base_ts = st.end_day * DAY
    st.sentiments = []
    for _ in range(n_sent):
        rel, norm, contact, source, raw_score = _SENTIMENT.unpack_from(raw, pos)
        pos += _SENTIMENT.size
        st.sentiments.append([base_ts + rel, norm, contact, source, raw_score])
    numbers = []
    for _ in range(n_contacts):
        user, role, status, *times = _CONTACT.unpack_from(raw, pos)
        pos += _CONTACT.size
        numbers.append([user, role, status, *(NONE if t == _NO_TS else base_ts + t for t in times)])
    st.open_tickets = {}
    if n_open:
        hashes, pos = _read(raw, pos, "I", n_open)
        packed, pos = _read(raw, pos, "I", n_open)
        for h, p in zip(hashes, packed, strict=True):
            day = p & 0xFFFFFF
            st.open_tickets[h] = [p >> 24, day - 0x1000000 if day & 0x800000 else day]
    st.account_id, facts, contacts, risks, *more = orjson.loads(raw[pos:])
    # (states written before the rhythm was kept have none)
    st.rhythm = more[0] if more else [0, NONE, NONE, 0, NONE, 0]
    st.key_counts = {f: dict(map(tuple, days)) for f, days in more[1].items()} if len(more) > 1 else {}
    if facts is None:
        st.name = st.csm_email = st.csm_slack = st.csm_name = st.segment = None
        st.arr = st.seats = st.renewal_day = None
    else:
        st.name, st.csm_email, st.csm_slack, st.csm_name, st.segment, st.arr, st.seats, st.renewal_day = facts[:8]
    # (a state written before lifecycles has 8 facts, or none)
    st.lifecycle, st.lifecycle_ts = (facts[8], facts[9]) if facts is not None and len(facts) >= 10 else (None, NONE)
    st.contacts = {cid: [name, *rest] for (cid, name), rest in zip(contacts or [], numbers, strict=True)}
    st.risks = {r[0]: r[1:] for r in risks} if risks else {}
    return st


def _read(raw: bytes, pos: int, code: str, n: int) -> tuple[list[int], int]:
    arr = array(code)
    end = pos + n * arr.itemsize
    arr.frombytes(raw[pos:end])
    return arr.tolist(), end


if array("H").itemsize != 2 or array("I").itemsize != 4:  # pragma: no cover - exotic platforms
    raise ImportError("account state encoding needs 2-byte 'H' and 4-byte 'I' arrays")
