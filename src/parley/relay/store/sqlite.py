"""The default relay store: one SQLite file in WAL mode.

Envelope bodies are stored once (``messages``); each target device gets a row in
``inbox`` whose ``pos`` (AUTOINCREMENT, never reused even after deletes) is the offset
the device sees, so offsets only grow per device. A body is cleared as soon as no inbox
row refers to it any more; the rest of the message row stays until the envelope
expires, so a Send retried after its copies were delivered is still recognised by id
and acknowledged without being delivered twice.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Iterable
from pathlib import Path
from typing import Final

from parley.errors import RegistrationRefused
from parley.protocol.frames import Envelope
from parley.protocol.keychain import ChainEntry, EntryBody, KeyOp
from parley.relay.store.base import (
    INVITE_REFUSED,
    Claim,
    IdentityKey,
    InboxItem,
    InboxRow,
    KeyStatus,
    StoreResult,
    StoreStatus,
)
from parley.relay.store.dbthread import SqliteThread

_SCHEMA = """
CREATE TABLE IF NOT EXISTS identities (
    id TEXT PRIMARY KEY,
    name TEXT,
    created_at REAL NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS chain (
    identity TEXT NOT NULL,
    seq INTEGER NOT NULL,
    body BLOB NOT NULL,
    signature BLOB NOT NULL,
    PRIMARY KEY (identity, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS devices (
    identity TEXT NOT NULL,
    device TEXT NOT NULL,
    revoked INTEGER NOT NULL DEFAULT 0,
    confirmed INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (identity, device)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS permits (
    owner TEXT NOT NULL,
    peer TEXT NOT NULL,
    PRIMARY KEY (owner, peer)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS messages (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    sender TEXT NOT NULL,
    sender_device TEXT NOT NULL,
    recipient TEXT NOT NULL,
    body BLOB,
    sent_at REAL NOT NULL,
    expires_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_expiry ON messages (expires_at);
CREATE TABLE IF NOT EXISTS inbox (
    pos INTEGER PRIMARY KEY AUTOINCREMENT,
    identity TEXT NOT NULL,
    device TEXT NOT NULL,
    message INTEGER NOT NULL,
    expires_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS inbox_device ON inbox (identity, device, pos);
CREATE INDEX IF NOT EXISTS inbox_expiry ON inbox (expires_at);
CREATE INDEX IF NOT EXISTS inbox_message ON inbox (message);
CREATE TABLE IF NOT EXISTS identity_keys (
    identity TEXT NOT NULL,
    device TEXT NOT NULL,
    key BLOB NOT NULL,
    signature BLOB NOT NULL,
    PRIMARY KEY (identity, device)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS one_time_keys (
    seq INTEGER PRIMARY KEY,
    identity TEXT NOT NULL,
    device TEXT NOT NULL,
    key BLOB NOT NULL,
    UNIQUE (identity, device, key)
);
CREATE TABLE IF NOT EXISTS invites (
    token_hash BLOB PRIMARY KEY,
    created_at REAL NOT NULL,
    expires_at REAL NOT NULL,
    used_by TEXT
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS fallback_keys (
    identity TEXT NOT NULL,
    device TEXT NOT NULL,
    key BLOB NOT NULL,
    claimed INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (identity, device)
) WITHOUT ROWID;
"""


def _setup(conn: sqlite3.Connection) -> None:
    conn.execute("PRAGMA journal_mode=WAL")
    # FULL, not NORMAL: in WAL mode NORMAL may lose the last commits on power loss, and
    # the relay tells senders "stored" on commit. Group commit (see dbthread) spreads
    # the extra fsync over every Send committed together.
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA busy_timeout=5000")
    conn.executescript(_SCHEMA)


class SqliteStore:
    """:class:`~parley.relay.store.RelayStore` on one SQLite database file."""

    backend: Final = "sqlite"

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._db = SqliteThread(self.path, _setup)

    async def open(self) -> None:
        await self._db.start()

    async def close(self) -> None:
        await self._db.stop()

    async def ping(self) -> None:
        def job(conn: sqlite3.Connection) -> None:
            conn.execute("SELECT 1").fetchone()

        await self._db.run(job)

    # -- directory --------------------------------------------------------------------

    async def create_identity(
        self,
        identity: str,
        name: str | None,
        genesis: ChainEntry,
        body: EntryBody,
        now: float,
        invite: bytes | None = None,
    ) -> bool:
        def job(conn: sqlite3.Connection) -> bool:
            cursor = conn.execute(
                "INSERT OR IGNORE INTO identities (id, name, created_at) VALUES (?, ?, ?)",
                (identity, name, now),
            )
            if cursor.rowcount == 0:
                return False
            if invite is not None:
                used = conn.execute(
                    "UPDATE invites SET used_by = ? WHERE token_hash = ?"
                    " AND used_by IS NULL AND expires_at > ?",
                    (identity, invite, now),
                )
                if used.rowcount == 0:
                    # The job's savepoint is rolled back: the identity row goes too.
                    raise RegistrationRefused(INVITE_REFUSED, code="invalid_invite")
            _insert_entry(conn, identity, genesis, body)
            return True

        return await self._db.run(job)

    async def create_invites(self, invites: list[bytes], now: float, expires_at: float) -> None:
        def job(conn: sqlite3.Connection) -> None:
            conn.executemany(
                "INSERT INTO invites (token_hash, created_at, expires_at) VALUES (?, ?, ?)",
                [(invite, now, expires_at) for invite in invites],
            )

        await self._db.run(job)

    async def load_chain(self, identity: str) -> list[ChainEntry] | None:
        def job(conn: sqlite3.Connection) -> list[ChainEntry] | None:
            rows = conn.execute(
                "SELECT body, signature FROM chain WHERE identity = ? ORDER BY seq", (identity,)
            ).fetchall()
            return [ChainEntry(body=b, signature=s) for b, s in rows] or None

        return await self._db.run(job)

    async def append_entry(self, identity: str, entry: ChainEntry, body: EntryBody) -> None:
        await self._db.run(lambda conn: _insert_entry(conn, identity, entry, body))

    async def load_permits(self, owner: str) -> set[str]:
        def job(conn: sqlite3.Connection) -> set[str]:
            rows = conn.execute("SELECT peer FROM permits WHERE owner = ?", (owner,))
            return {peer for (peer,) in rows}

        return await self._db.run(job)

    async def permit(self, owner: str, peer: str) -> None:
        def job(conn: sqlite3.Connection) -> None:
            conn.execute("INSERT OR IGNORE INTO permits (owner, peer) VALUES (?, ?)", (owner, peer))

        await self._db.run(job)

    async def unpermit(self, owner: str, peer: str) -> None:
        def job(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM permits WHERE owner = ? AND peer = ?", (owner, peer))

        await self._db.run(job)

    # -- envelopes and inboxes --------------------------------------------------------

    def store_envelope(self, envelope: Envelope) -> asyncio.Future[StoreResult]:
        return self._db.submit_batched(_store_envelopes, envelope)

    async def stored_from(self, sender: str, recipient: str, envelope_id: str) -> bool:
        def job(conn: sqlite3.Connection) -> bool:
            row = conn.execute(
                "SELECT 1 FROM messages WHERE id = ? AND sender = ? AND recipient = ?",
                (envelope_id, sender, recipient),
            ).fetchone()
            return row is not None

        return await self._db.run(job)

    async def read_inbox(
        self, identity: str, device: str, after: int, limit: int, max_bytes: int | None = None
    ) -> list[InboxItem]:
        def job(conn: sqlite3.Connection) -> list[InboxItem]:
            cursor = conn.execute(
                "SELECT i.pos, m.id, m.sender, m.sender_device, m.recipient, m.body,"
                " m.sent_at, m.expires_at"
                " FROM inbox i JOIN messages m ON m.seq = i.message"
                " WHERE i.identity = ? AND i.device = ? AND i.pos > ?"
                " ORDER BY i.pos LIMIT ?",
                (identity, device, after, limit),
            )
            items: list[InboxItem] = []
            total = 0
            # The cursor steps through rows one at a time: stopping at max_bytes means the
            # rest are never read into memory.
            for pos, id_, sender, sender_device, recipient, body, sent_at, expires_at in cursor:
                items.append(
                    InboxItem(
                        offset=pos,
                        envelope=Envelope(
                            id=id_,
                            sender=sender,
                            sender_device=sender_device,
                            recipient=recipient,
                            body=body,
                            sent_at=sent_at,
                            expires_at=expires_at,
                        ),
                    )
                )
                total += len(body)
                if max_bytes is not None and total >= max_bytes:
                    break
            cursor.close()
            return items

        return await self._db.run(job)

    async def confirmed_offset(self, identity: str, device: str) -> int:
        def job(conn: sqlite3.Connection) -> int:
            row = conn.execute(
                "SELECT confirmed FROM devices WHERE identity = ? AND device = ?",
                (identity, device),
            ).fetchone()
            return int(row[0]) if row else 0

        return await self._db.run(job)

    def confirm(self, identity: str, device: str, offset: int) -> asyncio.Future[None]:
        return self._db.submit_batched(_confirm_all, (identity, device, offset))

    async def drop_rows(self, identity: str, device: str, offsets: list[int]) -> int:
        def job(conn: sqlite3.Connection) -> int:
            released = conn.execute(
                "DELETE FROM inbox WHERE identity = ? AND device = ?"
                " AND pos IN (SELECT value FROM json_each(?)) RETURNING message",
                (identity, device, json.dumps(offsets)),
            ).fetchall()
            _release_bodies(conn, (m for (m,) in released))
            return len(released)

        return await self._db.run(job)

    # -- end-to-end encryption keys ---------------------------------------------------

    async def load_identity_keys(self, identity: str) -> dict[str, IdentityKey]:
        def job(conn: sqlite3.Connection) -> dict[str, IdentityKey]:
            rows = conn.execute(
                "SELECT device, key, signature FROM identity_keys WHERE identity = ?",
                (identity,),
            )
            return {device: IdentityKey(key, signature) for device, key, signature in rows}

        return await self._db.run(job)

    async def publish_keys(
        self,
        identity: str,
        device: str,
        identity_key: IdentityKey,
        one_time_keys: list[bytes],
        fallback_key: bytes | None,
    ) -> KeyStatus:
        def job(conn: sqlite3.Connection) -> KeyStatus:
            active = conn.execute(
                "SELECT 1 FROM devices WHERE identity = ? AND device = ? AND revoked = 0",
                (identity, device),
            ).fetchone()
            if active is None:
                # Revoked since the relay accepted the request: its keys stay dropped.
                return KeyStatus(one_time_keys=0, fallback_key=False)
            row = conn.execute(
                "SELECT key FROM identity_keys WHERE identity = ? AND device = ?",
                (identity, device),
            ).fetchone()
            if row is None or row[0] != identity_key.key:
                # One-time and fallback keys belong to an Olm account; a new account makes
                # them useless.
                _drop_device_keys(conn, identity, device)
                conn.execute(
                    "INSERT INTO identity_keys (identity, device, key, signature)"
                    " VALUES (?, ?, ?, ?)",
                    (identity, device, identity_key.key, identity_key.signature),
                )
            conn.executemany(
                "INSERT OR IGNORE INTO one_time_keys (identity, device, key) VALUES (?, ?, ?)",
                [(identity, device, key) for key in one_time_keys],
            )
            if fallback_key is not None:
                # A retry of the same publish must not hide that the key was handed out.
                conn.execute(
                    "INSERT INTO fallback_keys (identity, device, key) VALUES (?, ?, ?)"
                    " ON CONFLICT (identity, device) DO UPDATE SET key = excluded.key,"
                    " claimed = claimed AND key = excluded.key",
                    (identity, device, fallback_key),
                )
            return _key_status(conn, identity, device)

        return await self._db.run(job)

    async def key_status(self, identity: str, device: str) -> KeyStatus:
        return await self._db.run(lambda conn: _key_status(conn, identity, device))

    async def claim_keys(self, identity: str, devices: list[str]) -> list[Claim]:
        def job(conn: sqlite3.Connection) -> list[Claim]:
            claims = []
            for device in devices:
                row = conn.execute(
                    "DELETE FROM one_time_keys WHERE seq = (SELECT MIN(seq) FROM one_time_keys"
                    " WHERE identity = ? AND device = ?) RETURNING key",
                    (identity, device),
                ).fetchone()
                fallback = row is None
                if fallback:
                    row = conn.execute(
                        "UPDATE fallback_keys SET claimed = 1"
                        " WHERE identity = ? AND device = ? RETURNING key",
                        (identity, device),
                    ).fetchone()
                key = None if row is None else row[0]
                status = _key_status(conn, identity, device)
                claims.append(Claim(device, key, fallback and key is not None, status))
            return claims

        return await self._db.run(job)

    async def expire(self, now: float) -> int:
        def job(conn: sqlite3.Connection) -> int:
            deleted = conn.execute("DELETE FROM inbox WHERE expires_at <= ?", (now,)).rowcount
            # Inbox rows share their envelope's expiry, so none refers to these any more.
            conn.execute("DELETE FROM messages WHERE expires_at <= ?", (now,))
            return deleted

        return await self._db.run(job)


def _insert_entry(
    conn: sqlite3.Connection, identity: str, entry: ChainEntry, body: EntryBody
) -> None:
    conn.execute(
        "INSERT INTO chain (identity, seq, body, signature) VALUES (?, ?, ?, ?)",
        (identity, body.seq, entry.body, entry.signature),
    )
    if body.op is KeyOp.ADD:
        conn.execute(
            "INSERT INTO devices (identity, device) VALUES (?, ?)", (identity, body.device)
        )
        return
    conn.execute(
        "UPDATE devices SET revoked = 1 WHERE identity = ? AND device = ?",
        (identity, body.device),
    )
    _drop_device_keys(conn, identity, body.device)
    released = conn.execute(
        "DELETE FROM inbox WHERE identity = ? AND device = ? RETURNING message",
        (identity, body.device),
    ).fetchall()
    _release_bodies(conn, (m for (m,) in released))


# Multi-row INSERTs of these many rows, largest first: a few statement texts cover any
# number of envelopes, and each stays in the connection's statement cache.
_INSERT_SIZES = (64, 16, 4, 1)
_INSERT_MESSAGES = {
    size: "INSERT INTO messages"
    " (seq, id, sender, sender_device, recipient, body, sent_at, expires_at) VALUES "
    + ", ".join(["(?, ?, ?, ?, ?, ?, ?, ?)"] * size)
    for size in _INSERT_SIZES
}


def _store_envelopes(conn: sqlite3.Connection, envelopes: list[Envelope]) -> list[StoreResult]:
    """Store envelopes queued together, as if one after the other, in a few statements
    whatever their number (see dbthread): one read of what exists, the messages, their
    inbox rows, one read of the rows made."""
    top, inbox_top = conn.execute(
        "SELECT (SELECT COALESCE(MAX(seq), 0) FROM messages),"
        " (SELECT COALESCE(MAX(seq), 0) FROM sqlite_sequence WHERE name = 'inbox')"
    ).fetchone()
    # id -> (sender, recipient): of the envelopes stored before, then of these as stored.
    owners = _owners(conn, [envelope.id for envelope in envelopes])
    statuses: list[StoreStatus] = []
    new: list[tuple[int, Envelope]] = []  # (the seq it gets, the envelope)
    for envelope in envelopes:
        owner = owners.get(envelope.id)
        if owner is None:
            owners[envelope.id] = (envelope.sender, envelope.recipient)
            new.append((top + len(new) + 1, envelope))
            statuses.append(StoreStatus.STORED)
        elif owner == (envelope.sender, envelope.recipient):
            statuses.append(StoreStatus.DUPLICATE)
        else:
            statuses.append(StoreStatus.CONFLICT)
    if not new:
        return [StoreResult(status) for status in statuses]
    _insert_messages(conn, new)
    # The target devices are read in the transaction that writes the rows, so a device
    # revoked or added concurrently is either wholly in or wholly out. AUTOINCREMENT
    # numbers the rows in this order: offsets follow the order the envelopes came in.
    conn.execute(
        "INSERT INTO inbox (identity, device, message, expires_at)"
        " SELECT d.identity, d.device, m.seq, m.expires_at FROM messages m JOIN devices d"
        " ON d.revoked = 0 AND (d.identity = m.recipient"
        " OR (d.identity = m.sender AND d.device <> m.sender_device))"
        " WHERE m.seq > ? ORDER BY m.seq, d.identity, d.device",
        (top,),
    )
    # One row of JSON, not one row per inbox row: each row read is a GIL hand-off.
    (made,) = conn.execute(
        "SELECT json_group_array(json_array(pos, identity, device, message))"
        " FROM inbox WHERE pos > ?",
        (inbox_top,),
    ).fetchone()
    rows: dict[int, list[InboxRow]] = {}
    for pos, identity, device, message in sorted(json.loads(made)):
        rows.setdefault(message, []).append(InboxRow(identity, device, pos))
    seqs = iter(seq for seq, _ in new)
    return [
        StoreResult(status, tuple(rows.get(next(seqs), ())))
        if status is StoreStatus.STORED
        else StoreResult(status)
        for status in statuses
    ]


# Lookups of this many ids, smallest first: a chunk is padded to the next size up, so a
# few statement texts serve any batch, and a batch of one binds one id, not 64.
_LOOKUP_SIZES = (1, 4, 16, 64)
_LOOKUP_OWNERS = {
    size: "SELECT id, sender, recipient FROM messages WHERE id IN (" + ", ".join(["?"] * size) + ")"
    for size in _LOOKUP_SIZES
}


def _owners(conn: sqlite3.Connection, ids: list[str]) -> dict[str, tuple[str, str]]:
    """Sender and recipient of the stored envelopes among ``ids``. (Bound parameters,
    not JSON: an envelope id may hold any character, NUL too.)"""
    found: dict[str, tuple[str, str]] = {}
    largest = _LOOKUP_SIZES[-1]
    for start in range(0, len(ids), largest):
        chunk = ids[start : start + largest]
        size = next(size for size in _LOOKUP_SIZES if size >= len(chunk))
        chunk += [chunk[-1]] * (size - len(chunk))  # repeats change nothing
        for id_, sender, recipient in conn.execute(_LOOKUP_OWNERS[size], chunk):
            found[id_] = (sender, recipient)
    return found


def _insert_messages(conn: sqlite3.Connection, new: list[tuple[int, Envelope]]) -> None:
    start = 0
    while start < len(new):
        size = next(size for size in _INSERT_SIZES if size <= len(new) - start)
        values: list[object] = []
        for seq, e in new[start : start + size]:
            values += (seq, e.id, e.sender, e.sender_device, e.recipient, e.body)
            values += (e.sent_at, e.expires_at)
        conn.execute(_INSERT_MESSAGES[size], values)
        start += size


# The confirms of one group, as (identity, device, offset), one row per device.
_CONFIRMED = (
    "WITH c AS (SELECT value->>0 AS identity, value->>1 AS device, MAX(value->>2) AS upto"
    " FROM json_each(?) GROUP BY 1, 2) "
)


def _confirm_all(conn: sqlite3.Connection, confirms: list[tuple[str, str, int]]) -> list[None]:
    """Confirms queued together, in three statements whatever their number: a device's
    confirmed offset only grows; its rows up to it go, and with the last row of a
    message its body."""
    confirmed = json.dumps(confirms)
    conn.execute(
        _CONFIRMED + "UPDATE devices SET confirmed = MAX(devices.confirmed, c.upto) FROM c"
        " WHERE devices.identity = c.identity AND devices.device = c.device",
        (confirmed,),
    )
    # Before the rows go: a body goes once no row outside the confirmed ones is left.
    conn.execute(
        _CONFIRMED + "UPDATE messages SET body = NULL WHERE seq IN (SELECT i.message FROM c"
        " JOIN inbox i ON i.identity = c.identity AND i.device = c.device AND i.pos <= c.upto)"
        " AND NOT EXISTS (SELECT 1 FROM inbox o WHERE o.message = messages.seq"
        " AND NOT EXISTS (SELECT 1 FROM c WHERE c.identity = o.identity"
        " AND c.device = o.device AND o.pos <= c.upto))",
        (confirmed,),
    )
    conn.execute(
        _CONFIRMED + "DELETE FROM inbox WHERE pos IN (SELECT i.pos FROM c JOIN inbox i"
        " ON i.identity = c.identity AND i.device = c.device AND i.pos <= c.upto)",
        (confirmed,),
    )
    return [None] * len(confirms)


def _drop_device_keys(conn: sqlite3.Connection, identity: str, device: str) -> None:
    conn.execute("DELETE FROM identity_keys WHERE identity = ? AND device = ?", (identity, device))
    conn.execute("DELETE FROM one_time_keys WHERE identity = ? AND device = ?", (identity, device))
    conn.execute("DELETE FROM fallback_keys WHERE identity = ? AND device = ?", (identity, device))


def _key_status(conn: sqlite3.Connection, identity: str, device: str) -> KeyStatus:
    row = conn.execute(
        "SELECT (SELECT COUNT(*) FROM one_time_keys WHERE identity = ? AND device = ?),"
        " EXISTS (SELECT 1 FROM fallback_keys"
        " WHERE identity = ? AND device = ? AND claimed = 0)",
        (identity, device, identity, device),
    ).fetchone()
    return KeyStatus(one_time_keys=int(row[0]), fallback_key=bool(row[1]))


def _release_bodies(conn: sqlite3.Connection, messages: Iterable[int]) -> None:
    """Clear the bodies of these messages that no inbox row refers to any more."""
    ids = sorted(set(messages))
    if not ids:
        return
    conn.execute(
        "UPDATE messages SET body = NULL"
        " WHERE seq IN (SELECT value FROM json_each(?))"
        " AND NOT EXISTS (SELECT 1 FROM inbox WHERE inbox.message = messages.seq)",
        (json.dumps(ids),),
    )
