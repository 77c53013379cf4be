"""SQL for revoked user tokens: a denylist of token IDs."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from .schema import revoked_tokens


def revoke(
    connection: Connection,
    token_id: str,
    subject: str,
    now: datetime,
    expires: datetime | None,
) -> bool:
    """Add a token ID to the denylist; ``False`` when it was there already."""
    exists = connection.execute(
        sa.select(sa.literal(1)).where(revoked_tokens.c.token_id == token_id)
    ).first()
    if exists is not None:
        return False
    connection.execute(
        revoked_tokens.insert().values(
            token_id=token_id, subject=subject, revoked=now, expires=expires
        )
    )
    return True


def revoked_ids(connection: Connection) -> set[str]:
    """Every revoked token ID."""
    return {row.token_id for row in connection.execute(sa.select(revoked_tokens.c.token_id))}


def forget_expired(connection: Connection, now: datetime) -> int:
    """Drop entries of tokens that have expired anyway; how many went."""
    result = connection.execute(
        revoked_tokens.delete().where(
            revoked_tokens.c.expires.is_not(None), revoked_tokens.c.expires < now
        )
    )
    return result.rowcount
