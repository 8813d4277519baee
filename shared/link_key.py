"""Where the key that signs links comes from, in one place: `CHURNSIGNAL_LINK_SECRET` when it is set, else a
random key kept in the database (migration 0007), made by whichever process asks first. Every replica of
every service on the same database therefore signs and checks with the same key, with nothing to
configure, and a restart keeps the links already sent working. The key is never logged."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.links import SECRET_BYTES, LinkSecretMissing
from shared.settings import Settings

KEY_NAME = "links"
TABLE = sa.Table(
    "churnsignal_link_key", sa.MetaData(),
    sa.Column("name", sa.String(32), primary_key=True),
    sa.Column("secret", sa.LargeBinary, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)


def configured_link_key(settings: Settings) -> bytes | None:
    """`CHURNSIGNAL_LINK_SECRET` as bytes, None when it is not set; too short a value is refused."""
    if settings.link_secret is None:
        return None
    value = settings.link_secret.get_secret_value().encode("utf-8")
    if len(value) < 16:
        raise LinkSecretMissing("CHURNSIGNAL_LINK_SECRET is too short: use at least 16 characters "
                                "(e.g. the output of `openssl rand -hex 32`)")
    return value


async def link_key(settings: Settings, engine: AsyncEngine) -> bytes:
    """The configured key, or the one kept in the database (made now if none is kept yet)."""
    configured = configured_link_key(settings)
    if configured is not None:
        return configured
    query = sa.select(TABLE.c.secret).where(TABLE.c.name == KEY_NAME)
    async with engine.connect() as conn:
        kept = (await conn.execute(query)).scalar_one_or_none()
    if kept is not None:
        return bytes(kept)
    try:
        async with engine.begin() as conn:
            await conn.execute(sa.insert(TABLE).values(name=KEY_NAME, secret=secrets.token_bytes(SECRET_BYTES),
                                                        created_at=datetime.now(UTC)))
    except IntegrityError:
        pass   # another process made it first: theirs is the key
    async with engine.connect() as conn:
        return bytes((await conn.execute(query)).scalar_one())


class LinkKey:
    """The key, resolved once the database is ready (in the app's lifespan), for whoever signs or checks."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._key: bytes | None = configured_link_key(settings)

    async def load(self, engine: AsyncEngine) -> bytes:
        if self._key is None:
            self._key = await link_key(self._settings, engine)
        return self._key

    def __call__(self) -> bytes:
        if self._key is None:
            raise RuntimeError("the link key is read before the database was ready (LinkKey.load)")
        return self._key
