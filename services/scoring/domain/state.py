"""Compact per-account state.

Everything an account needs for scoring lives here, bounded: daily usage counts for 8 weeks, daily
bitmaps of (hashed) users and features for 30 days, daily opened-ticket counts for 8 weeks, the open
tickets (at most 24), the key contacts' own usage (at most 4 people), at most 6 contacts (champions,
sponsors, and people whose role is not known yet; plain users and admins are not kept), the last 12
sentiment answers, the open risks, the last published health, and the account's lifecycle (`churned`,
`renewed`...) with the time it took effect. Times are epoch seconds, days are
UTC day numbers (epoch seconds // 86400); all daily arrays end at `end_day` (oldest first).

Its byte encoding is `codec.py` (`encode_state` / `decode_state`, re-exported here).
"""

from __future__ import annotations

import zlib
from itertools import compress
from typing import TYPE_CHECKING, Any

from shared.risks import SEVERITIES as SEVERITIES  # a severity is stored as its index

if TYPE_CHECKING:
    from .memo import Memo

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
    "lifecycle", "lifecycle_ts", "crm_url", "rhythm", "key_counts",
    "contacts", "sentiments", "risks", "last_score", "last_tier", "last_components",
)


class AccountState:
    """Mutable per-account state; only the engine changes it.

    `memo` keeps measurements derived from the state between evaluations (see `memo.Memo`); it is not
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
        self.crm_url: str | None = None    # the account's CRM page, merged like the other facts
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


# The codec reads the state's layout from this module: imported last, once everything above is defined.
from .codec import decode_state as decode_state  # noqa: E402
from .codec import encode_state as encode_state  # noqa: E402
