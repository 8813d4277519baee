"""The byte encoding of an account's state (`state.AccountState`): `encode_state` / `decode_state`.

Encoding: a fixed binary header and packed arrays (leading zero days dropped, opened tickets as sparse
(age, count) pairs), then an orjson list for the strings and small records. The account facts there are a
list of 8 (name ... renewal day), 10 once a lifecycle is known (lifecycle, its time), 11 once a CRM URL is
known (the lifecycle pair then `null`, -1 when unknown): states written before either existed decode
unchanged, without them. A typical account encodes
to 600-900 bytes, a busy one to about 1 KB; the unit tests hold a busy account under 1.5 KB.
The memo is not encoded: a decoded state starts without it.
"""

from __future__ import annotations

import struct
from array import array

import orjson

from .state import (
    BREADTH_DAYS,
    C_NAME,
    C_ROLE,
    C_SINCE,
    C_STATUS,
    C_TS,
    C_USER,
    DAY,
    K_GAP,
    K_LAST,
    K_MASK,
    NONE,
    RH_UPTO,
    S_CONTACT,
    S_NORM,
    S_RAW,
    S_SOURCE,
    S_TS,
    SCORE_DAYS,
    TICKET_DAYS,
    USAGE_DAYS,
    AccountState,
)

# Format 2 holds the mask of known components (10 of them) in 16 bits; format 1 (8 bits, from before the
# newer components could be weighed) is still read.
_FORMAT = 2
_HEADER = struct.Struct("<B" "qqqq" "iiiiii" "HHI" "HB" "BBBBBBBBBB")
_HEADER_V1 = struct.Struct("<B" "qqqq" "iiiiii" "HBI" "HB" "BBBBBBBBBB")
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
        if state.lifecycle is not None or state.crm_url is not None:
            facts += [state.lifecycle, state.lifecycle_ts]
        if state.crm_url is not None:
            facts.append(state.crm_url)
    tail = [state.account_id, facts,
            [[cid, c[C_NAME]] for cid, c in state.contacts.items()] or None,
            [[t, *r] for t, r in state.risks.items()] or None]
    if state.rhythm[RH_UPTO] != NONE or state.key_counts:
        tail.append(state.rhythm)  # type: ignore[arg-type]
        if state.key_counts:
            tail.append({f: sorted(days.items()) for f, days in state.key_counts.items()})  # type: ignore[arg-type]
    parts.append(orjson.dumps(tail))
    return b"".join(parts)


def decode_state(raw: bytes) -> AccountState:
    if not raw or raw[0] not in (1, _FORMAT):
        raise ValueError(f"unknown account state format {raw[:1]!r}")
    header = _HEADER if raw[0] == _FORMAT else _HEADER_V1
    st = AccountState("")   # (every field is set below; the id comes with the tail)
    (_, st.clock, st.eval_ts, next_due, st.facts_ts, st.end_day, st.eval_day, st.first_day,
     st.first_usage_day, st.last_usage_day, st.first_ticket_day, st.usual_gap, st.known_mask, st.risk_counter,
     last_score, tier, n_usage, wide, n_users, n_features, n_tickets, n_key, n_open, n_sent,
     n_comp, n_contacts) = header.unpack_from(raw, 0)
    st.next_due = None if next_due == NONE else next_due
    st.last_score = None if last_score == _NO_VALUE else last_score
    st.last_tier = _TIERS[tier]
    pos = header.size
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
    # (and before CRM URLs, 10 or fewer)
    st.crm_url = facts[10] if facts is not None and len(facts) >= 11 else None
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
