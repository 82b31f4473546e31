"""The relay store on PostgreSQL: one database shared by several relay nodes.

It stores what the SQLite backend (``sqlite``) stores and answers the same way. What
differs is that many transactions write at once, from several processes, so every rule
SQLite gets from its single writer thread is taken here from row locks:

- A device's inbox offsets come from a counter on its ``devices`` row, raised under that
  row's lock in the transaction that inserts the inbox row. The lock is held to commit,
  so one device's offsets commit in offset order: a reader that has seen offset N has
  seen every row below it. A global sequence would not do: numbers taken in one order
  commit in another, and a reader that moved past the higher one never sees the lower.
  A fan-out locks its devices in (identity, device) order, so two fan-outs to
  overlapping devices cannot deadlock.
- Envelope ids are unique in the database. A retry racing its original waits on the
  original's uncommitted row, then finds it: DUPLICATE, stored once.
- A one-time key is deleted by the claim that locks it first; other claims skip locked
  keys (``FOR UPDATE SKIP LOCKED``), so no key is handed out twice.
- Key chain appends lock the identity row; an entry another node appended first at the
  same position raises :class:`~parley.errors.ChainConflict`.
- confirm, drop_rows, revoke and publish_keys lock the device row first, so they queue
  behind (and ahead of) each other and store_envelope for that device.
- A body is cleared under its message row's lock: two devices confirming the same
  message at once would otherwise each still see the other's row, and keep the body.
- One store's own store_envelope calls take offsets in the order they were made and
  return in that order, as they do from SQLite's writer thread (see there for why).
- Stores and confirms are group-committed (:mod:`.group_commit`): the calls made while
  the group before them is written go into one transaction, which does them as if one
  after the other. A round trip to the server costs the relay more CPU than the SQL it
  carries, so a group's few statements, not one transaction per call, set a node's
  messages per second.

Transactions run at READ COMMITTED: each statement sees what committed before it, which
the lock-then-read steps above rely on. Every write returns once its transaction has
committed with ``synchronous_commit`` on (set per connection, whatever the server's
default), as SQLite's return after their fsync.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Final, TypeVar, cast

import asyncpg

from parley.errors import ChainConflict, RegistrationRefused, StoreUnavailable
from parley.pg_pool import keep_session
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
from parley.relay.store.group_commit import GroupCommit
from parley.relay.store.postgres_schema import (
    CONNECTION_ERRORS,
    SCHEMA_VERSION,
    Connection,
    Record,
    check_version,
    migrate,
    read_version,
    unavailable,
)

__all__ = ["SCHEMA_VERSION", "PostgresStore", "migrate"]

T = TypeVar("T")

# Should not happen with the lock order above, but a deadlock or serialization failure
# rolls the whole transaction back, so running it again is always safe.
_RETRYABLE = (asyncpg.exceptions.DeadlockDetectedError, asyncpg.exceptions.SerializationError)
_ATTEMPTS = 3
_CLOSE_TIMEOUT = 10.0

# Sent when each connection starts: they are the session's own defaults, so no
# statement of this store ever changes session state (see keep_session).
_SERVER_SETTINGS = {
    # The relay acknowledges a Send once it is stored: a commit must be on disk when it
    # returns (and on any synchronous standby), even where the database default is off.
    "synchronous_commit": "on",
    "application_name": "parley-relay",
}


# A group commit (of stores, of confirms) holds at most this many calls.
_GROUP_SIZE = 256


class PostgresStore:
    """:class:`~parley.relay.store.RelayStore` on a PostgreSQL database (asyncpg pool).

    ``dsn`` is a ``postgresql://`` (or ``postgres://``) URL. The schema must be at
    :data:`SCHEMA_VERSION` (:func:`migrate` puts it there); :meth:`open` refuses anything
    else with :class:`~parley.errors.SchemaMismatch`, and an unreachable server with
    :class:`~parley.errors.StoreUnavailable`, as is any connection lost later.
    """

    backend: Final = "postgresql"

    def __init__(self, dsn: str, *, min_size: int = 1, max_size: int = 10) -> None:
        self.dsn = dsn
        self._min_size = min_size
        self._max_size = max_size
        self._pool: Any = None
        self._stores = GroupCommit(self._store_group, size=_GROUP_SIZE)
        self._confirms = GroupCommit(self._confirm_group, size=_GROUP_SIZE)

    async def open(self) -> None:
        if self._pool is not None:
            return
        try:
            pool = await asyncpg.create_pool(
                self.dsn,
                min_size=self._min_size,
                max_size=self._max_size,
                server_settings=_SERVER_SETTINGS,
                reset=keep_session,
            )
        except CONNECTION_ERRORS as exc:
            raise unavailable(self.dsn, exc) from exc
        try:
            check_version(await read_version(cast(Connection, pool)), self.dsn)
        except BaseException as exc:
            await pool.close()
            if isinstance(exc, CONNECTION_ERRORS):
                raise unavailable(self.dsn, exc) from exc
            raise
        self._pool = pool

    async def close(self) -> None:
        if self._pool is None:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(_CLOSE_TIMEOUT):
                # What was asked for already is written first.
                await self._stores.drain()
                await self._confirms.drain()
        pool, self._pool = self._pool, None
        try:
            async with asyncio.timeout(_CLOSE_TIMEOUT):
                await pool.close()
        except TimeoutError:
            # A query that never finishes must not keep the relay from exiting.
            pool.terminate()

    async def ping(self) -> None:
        async def job(conn: Connection) -> None:
            await conn.fetchval("SELECT 1")

        await self._run(job)

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
        async def job(conn: Connection) -> bool:
            created = await conn.fetchval(
                "INSERT INTO identities (id, name, created_at) VALUES ($1, $2, $3)"
                " ON CONFLICT (id) DO NOTHING RETURNING true",
                identity,
                None if name is None else name.encode(),
                now,
            )
            if not created:
                return False
            if invite is not None:
                # The row lock makes two registrations with one token take turns: the
                # second finds it used.
                used = await conn.fetchval(
                    "UPDATE invites SET used_by = $1 WHERE token_hash = $2"
                    " AND used_by IS NULL AND expires_at > $3 RETURNING true",
                    identity,
                    invite,
                    now,
                )
                if not used:
                    # Raising rolls the transaction back: the identity row goes too.
                    raise RegistrationRefused(INVITE_REFUSED, code="invalid_invite")
            await _insert_entry(conn, identity, genesis, body)
            return True

        return await self._run(job)

    async def create_invites(self, invites: list[bytes], now: float, expires_at: float) -> None:
        async def job(conn: Connection) -> None:
            for invite in invites:
                await conn.execute(
                    "INSERT INTO invites (token_hash, created_at, expires_at) VALUES ($1, $2, $3)",
                    invite,
                    now,
                    expires_at,
                )

        await self._run(job)

    async def load_chain(self, identity: str) -> list[ChainEntry] | None:
        rows = await self._fetch(
            "SELECT body, signature FROM chain WHERE identity = $1 ORDER BY seq", identity
        )
        return [ChainEntry(body=bytes(b), signature=bytes(s)) for b, s in rows] or None

    async def append_entry(self, identity: str, entry: ChainEntry, body: EntryBody) -> None:
        async def job(conn: Connection) -> None:
            # One append per identity at a time, whichever node makes it: the next one
            # sees this one's entry and device rows.
            await conn.execute("SELECT 1 FROM identities WHERE id = $1 FOR UPDATE", identity)
            await _insert_entry(conn, identity, entry, body)

        await self._run(job)

    async def load_permits(self, owner: str) -> set[str]:
        rows = await self._fetch("SELECT peer FROM permits WHERE owner = $1", owner)
        return {str(peer) for (peer,) in rows}

    async def permit(self, owner: str, peer: str) -> None:
        await self._execute(
            "INSERT INTO permits (owner, peer) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            owner,
            peer,
        )

    async def unpermit(self, owner: str, peer: str) -> None:
        await self._execute("DELETE FROM permits WHERE owner = $1 AND peer = $2", owner, peer)

    # -- envelopes and inboxes --------------------------------------------------------

    def store_envelope(self, envelope: Envelope) -> asyncio.Future[StoreResult]:
        # The group commit's own future, not a coroutine: the relay waits on it with a
        # callback, without a task (see RelayStore.store_envelope).
        return self._stores(envelope)

    async def _store_group(self, envelopes: list[Envelope]) -> list[StoreResult | BaseException]:
        """Store ``envelopes`` (a group commit) as if one call after the other.

        This store's calls take their offsets in the order they were made, and return
        in that order, as they do from SQLite's single writer: one group is written at
        a time, its envelopes in order. Taken in call order, one connection's Sends
        reach each device in the order they were sent. Returned in that order, which is
        commit order: the relay pushes each stored envelope to the devices connected
        here as the call returns, and a connection skips any offset at or below the
        last one it sent. Other nodes' calls need none of this: their rows reach this
        node's devices through reads, and reads see offsets in commit order."""
        try:
            return list(await self._run(lambda conn: self._store_envelopes(conn, envelopes)))
        except StoreUnavailable as exc:
            return [exc] * len(envelopes)
        except Exception as exc:
            if len(envelopes) == 1:
                return [exc]
        # What the database refused of one envelope fails only its own call: each is
        # stored again, alone, in order.
        outcomes: list[StoreResult | BaseException] = []
        for envelope in envelopes:
            alone = functools.partial(self._store_envelopes, envelopes=[envelope])
            try:
                (result,) = await self._run(alone)
            except Exception as exc:
                outcomes.append(exc)
            else:
                outcomes.append(result)
        return outcomes

    async def _store_envelopes(
        self, conn: Connection, envelopes: list[Envelope]
    ) -> list[StoreResult]:
        """Store ``envelopes`` in this transaction, as if one after the other."""
        # id -> (sender, recipient): of the envelopes stored before, then of these.
        ids = [envelope.id.encode() for envelope in envelopes]
        owners: dict[bytes, tuple[str, str]] = {}
        new: dict[bytes, Envelope] = {}
        for id_, envelope in zip(ids, envelopes, strict=True):
            if id_ not in owners:
                owners[id_] = (envelope.sender, envelope.recipient)
                new[id_] = envelope
        seqs = await self._insert_messages(conn, new, owners)
        stored = [(seqs[id_], e) for id_, e in new.items() if id_ in seqs]
        rows = await self._add_inbox_rows(conn, stored) if stored else []
        rows_of = {seq: r for (seq, _), r in zip(stored, rows, strict=True)}
        results: list[StoreResult] = []
        first: set[bytes] = set()
        for id_, envelope in zip(ids, envelopes, strict=True):
            if id_ in seqs and id_ not in first:
                first.add(id_)
                results.append(StoreResult(StoreStatus.STORED, rows_of[seqs[id_]]))
            elif owners[id_] == (envelope.sender, envelope.recipient):
                results.append(StoreResult(StoreStatus.DUPLICATE))
            else:
                results.append(StoreResult(StoreStatus.CONFLICT))
        return results

    async def _insert_messages(
        self, conn: Connection, new: dict[bytes, Envelope], owners: dict[bytes, tuple[str, str]]
    ) -> dict[bytes, int]:
        """Insert the envelopes of ``new`` whose id is free: their seqs. ``owners`` gets
        the sender and recipient of each id that was taken already."""
        seqs: dict[bytes, int] = {}
        left = dict(sorted(new.items()))  # in id order: two nodes cannot deadlock on ids
        while left:
            # A concurrent transaction inserting the same id makes this wait for its
            # outcome: then the id is either taken (nothing inserted) or free.
            inserted = await conn.fetch(
                "INSERT INTO messages"
                " (id, sender, sender_device, recipient, body, sent_at, expires_at)"
                " SELECT * FROM unnest($1::bytea[], $2::text[], $3::text[], $4::text[],"
                " $5::bytea[], $6::float8[], $7::float8[]) ORDER BY 1"
                " ON CONFLICT (id) DO NOTHING RETURNING id, seq",
                list(left),
                [e.sender for e in left.values()],
                [e.sender_device for e in left.values()],
                [e.recipient for e in left.values()],
                [e.body for e in left.values()],
                [e.sent_at for e in left.values()],
                [e.expires_at for e in left.values()],
            )
            for id_, seq in inserted:
                seqs[bytes(id_)] = int(seq)
                del left[bytes(id_)]
            if not left:
                break
            existing = await conn.fetch(
                "SELECT id, sender, recipient FROM messages WHERE id = ANY($1::bytea[])",
                list(left),
            )
            for id_, sender, recipient in existing:
                owners[bytes(id_)] = (sender, recipient)
                del left[bytes(id_)]
            # What is left collided with envelopes expired and swept just now: again.
        return seqs

    async def _add_inbox_rows(
        self, conn: Connection, stored: list[tuple[int, Envelope]]
    ) -> list[tuple[InboxRow, ...]]:
        """Insert the inbox rows of each stored envelope (its message's seq, and the
        envelope), each at its device's next offset, in order."""
        # Lock every device of the identities involved, in key order, so two groups
        # cannot deadlock. The target set is read under the locks that the rows are
        # written under, so a device revoked concurrently is wholly in (its revoke then
        # drops the row) or wholly out, as on SQLite. A row locked after waiting is read
        # as the last holder of its lock committed it: its counter is current.
        identities = sorted({i for _, e in stored for i in (e.sender, e.recipient)})
        devices = await conn.fetch(
            "SELECT identity, device, last_offset FROM devices"
            " WHERE NOT revoked AND identity = ANY($1::text[])"
            " ORDER BY identity, device FOR NO KEY UPDATE",
            identities,
        )
        last: dict[tuple[str, str], int] = {(i, d): int(top) for i, d, top in devices}
        by_identity: dict[str, list[str]] = {}
        for identity, device in last:
            by_identity.setdefault(identity, []).append(device)
        rows: list[tuple[InboxRow, ...]] = []
        written: list[tuple[str, str, int, int, float]] = []
        for seq, e in stored:
            targets = [(e.recipient, d) for d in by_identity.get(e.recipient, ())]
            if e.sender != e.recipient:
                mine = by_identity.get(e.sender, ())
                targets += [(e.sender, d) for d in mine if d != e.sender_device]
            made = []
            for identity, device in sorted(targets):
                offset = last[identity, device] = last[identity, device] + 1
                made.append(InboxRow(identity=identity, device=device, offset=offset))
                written.append((identity, device, offset, seq, e.expires_at))
            rows.append(tuple(made))
        if written:
            raised = {(i, d): top for i, d, top, _, _ in written}  # each device's last
            await conn.execute(
                "WITH made AS (INSERT INTO inbox (identity, device, pos, message, expires_at)"
                " SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[],"
                " $5::float8[]))"
                " UPDATE devices d SET last_offset = t.top"
                " FROM unnest($6::text[], $7::text[], $8::bigint[]) AS t (identity, device, top)"
                " WHERE d.identity = t.identity AND d.device = t.device",
                [w[0] for w in written],
                [w[1] for w in written],
                [w[2] for w in written],
                [w[3] for w in written],
                [w[4] for w in written],
                [i for i, _ in raised],
                [d for _, d in raised],
                list(raised.values()),
            )
        return rows

    async def stored_from(self, sender: str, recipient: str, envelope_id: str) -> bool:
        return bool(
            await self._fetchval(
                "SELECT EXISTS (SELECT 1 FROM messages"
                " WHERE id = $1 AND sender = $2 AND recipient = $3)",
                envelope_id.encode(),
                sender,
                recipient,
            )
        )

    async def read_inbox(
        self, identity: str, device: str, after: int, limit: int, max_bytes: int | None = None
    ) -> list[InboxItem]:
        # The bodies' sizes are summed in the database (a window over the page, from the
        # lengths alone), so the bodies past max_bytes are never sent here.
        rows = await self._fetch(
            "SELECT p.pos, m.id, m.sender, m.sender_device, m.recipient, m.body,"
            " m.sent_at, m.expires_at"
            " FROM (SELECT i.pos, i.message, SUM(octet_length(b.body))"
            "   OVER (ORDER BY i.pos ROWS UNBOUNDED PRECEDING) - octet_length(b.body) AS before"
            "   FROM inbox i JOIN messages b ON b.seq = i.message"
            "   WHERE i.identity = $1 AND i.device = $2 AND i.pos > $3"
            "   ORDER BY i.pos LIMIT $4) p"
            " JOIN messages m ON m.seq = p.message"
            " WHERE $5::bigint IS NULL OR p.before < $5::bigint"
            " ORDER BY p.pos",
            identity,
            device,
            after,
            # SQLite reads a negative LIMIT as none.
            limit if limit >= 0 else None,
            max_bytes,
        )
        return [
            InboxItem(
                offset=int(pos),
                envelope=Envelope(
                    id=bytes(id_).decode(),
                    sender=sender,
                    sender_device=sender_device,
                    recipient=recipient,
                    body=bytes(body),
                    sent_at=sent_at,
                    expires_at=expires_at,
                ),
            )
            for pos, id_, sender, sender_device, recipient, body, sent_at, expires_at in rows
        ]

    async def confirmed_offset(self, identity: str, device: str) -> int:
        confirmed = await self._fetchval(
            "SELECT confirmed FROM devices WHERE identity = $1 AND device = $2", identity, device
        )
        return 0 if confirmed is None else int(confirmed)

    def confirm(self, identity: str, device: str, offset: int) -> asyncio.Future[None]:
        return self._confirms((identity, device, offset))

    async def _confirm_group(
        self, confirms: list[tuple[str, str, int]]
    ) -> list[BaseException | None]:
        """Confirms made together (a group commit), in one transaction: a device's
        confirmed offset only grows; its rows up to it go, and with the last row of a
        message its body."""
        upto: dict[tuple[str, str], int] = {}
        for identity, device, offset in confirms:
            upto[identity, device] = max(offset, upto.get((identity, device), offset))
        devices = sorted(upto)
        identities = [i for i, _ in devices]
        names = [d for _, d in devices]
        offsets = [upto[key] for key in devices]

        async def job(conn: Connection) -> None:
            # The device rows are locked first, in key order (so two groups cannot
            # deadlock), before their inbox rows are deleted.
            await conn.execute(
                "SELECT 1 FROM devices d"
                " JOIN unnest($1::text[], $2::text[]) AS t (identity, device)"
                " ON d.identity = t.identity AND d.device = t.device"
                " ORDER BY d.identity, d.device FOR NO KEY UPDATE OF d",
                identities,
                names,
            )
            released = await conn.fetch(
                "WITH t AS (SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[])"
                " AS t (identity, device, upto)),"
                " raised AS (UPDATE devices d SET confirmed = GREATEST(d.confirmed, t.upto)"
                " FROM t WHERE d.identity = t.identity AND d.device = t.device)"
                " DELETE FROM inbox i USING t"
                " WHERE i.identity = t.identity AND i.device = t.device AND i.pos <= t.upto"
                " RETURNING i.message",
                identities,
                names,
                offsets,
            )
            await _release_bodies(conn, (m for (m,) in released))

        try:
            await self._run(job)
        except Exception as exc:
            return [exc] * len(confirms)
        return [None] * len(confirms)

    async def drop_rows(self, identity: str, device: str, offsets: list[int]) -> int:
        async def job(conn: Connection) -> int:
            await _lock_device(conn, identity, device)
            released = await conn.fetch(
                "DELETE FROM inbox WHERE identity = $1 AND device = $2"
                " AND pos = ANY($3::bigint[]) RETURNING message",
                identity,
                device,
                offsets,
            )
            await _release_bodies(conn, (m for (m,) in released))
            return len(released)

        return await self._run(job)

    # -- end-to-end encryption keys ---------------------------------------------------

    async def load_identity_keys(self, identity: str) -> dict[str, IdentityKey]:
        rows = await self._fetch(
            "SELECT device, key, signature FROM identity_keys WHERE identity = $1", identity
        )
        return {str(d): IdentityKey(bytes(k), bytes(s)) for d, k, s in rows}

    async def publish_keys(
        self,
        identity: str,
        device: str,
        identity_key: IdentityKey,
        one_time_keys: list[bytes],
        fallback_key: bytes | None,
    ) -> KeyStatus:
        async def job(conn: Connection) -> KeyStatus:
            # Under the device row's lock: a revoke (which drops the keys) is wholly
            # before this publish or wholly after it, and so is another publish.
            active = await conn.fetchval(
                "SELECT NOT revoked FROM devices WHERE identity = $1 AND device = $2"
                " FOR NO KEY UPDATE",
                identity,
                device,
            )
            if not active:
                # Revoked since the relay accepted the request: its keys stay dropped.
                return KeyStatus(one_time_keys=0, fallback_key=False)
            current = await conn.fetchval(
                "SELECT key FROM identity_keys WHERE identity = $1 AND device = $2",
                identity,
                device,
            )
            if current is None or bytes(current) != identity_key.key:
                # One-time and fallback keys belong to an Olm account; a new account makes
                # them useless.
                await _drop_device_keys(conn, identity, device)
                await conn.execute(
                    "INSERT INTO identity_keys (identity, device, key, signature)"
                    " VALUES ($1, $2, $3, $4)",
                    identity,
                    device,
                    identity_key.key,
                    identity_key.signature,
                )
            if one_time_keys:
                # In the order given, so "oldest first" means what it means on SQLite.
                await conn.execute(
                    "INSERT INTO one_time_keys (identity, device, key)"
                    " SELECT $1, $2, k FROM unnest($3::bytea[]) WITH ORDINALITY AS u (k, n)"
                    " ORDER BY n ON CONFLICT (identity, device, key) DO NOTHING",
                    identity,
                    device,
                    one_time_keys,
                )
            if fallback_key is not None:
                # A retry of the same publish must not hide that the key was handed out.
                await conn.execute(
                    "INSERT INTO fallback_keys (identity, device, key) VALUES ($1, $2, $3)"
                    " ON CONFLICT (identity, device) DO UPDATE SET key = excluded.key,"
                    " claimed = fallback_keys.claimed AND fallback_keys.key = excluded.key",
                    identity,
                    device,
                    fallback_key,
                )
            return await _key_status(conn, identity, device)

        return await self._run(job)

    async def key_status(self, identity: str, device: str) -> KeyStatus:
        return await _key_status(self._queryable(), identity, device)

    async def claim_keys(self, identity: str, devices: list[str]) -> list[Claim]:
        async def job(conn: Connection) -> list[Claim]:
            claims: dict[int, Claim] = {}
            # Devices in one fixed order, so two claims waiting on each other's fallback
            # rows cannot deadlock; the answer keeps the order asked for.
            for index in sorted(range(len(devices)), key=devices.__getitem__):
                device = devices[index]
                # A key another claim has locked (is deleting) is skipped, not waited for
                # and then handed out again.
                key = await conn.fetchval(
                    "DELETE FROM one_time_keys WHERE seq = ("
                    " SELECT seq FROM one_time_keys WHERE identity = $1 AND device = $2"
                    " ORDER BY seq LIMIT 1 FOR UPDATE SKIP LOCKED) RETURNING key",
                    identity,
                    device,
                )
                fallback = key is None
                if fallback:
                    key = await conn.fetchval(
                        "UPDATE fallback_keys SET claimed = true"
                        " WHERE identity = $1 AND device = $2 RETURNING key",
                        identity,
                        device,
                    )
                status = await _key_status(conn, identity, device)
                one_time_key = None if key is None else bytes(key)
                claims[index] = Claim(device, one_time_key, fallback and key is not None, status)
            return [claims[index] for index in range(len(devices))]

        return await self._run(job)

    async def expire(self, now: float) -> int:
        async def job(conn: Connection) -> int:
            # Rows another transaction holds are skipped, not waited for: a confirm is
            # deleting them anyway, or another node's sweep is doing this same work; a
            # row that stays is swept next time.
            deleted = await conn.fetchval(
                "WITH gone AS (DELETE FROM inbox WHERE (identity, device, pos) IN ("
                " SELECT identity, device, pos FROM inbox WHERE expires_at <= $1"
                " FOR UPDATE SKIP LOCKED) RETURNING 1)"
                " SELECT count(*) FROM gone",
                now,
            )
            # Inbox rows share their envelope's expiry, so none refers to these any more.
            await conn.execute(
                "DELETE FROM messages WHERE seq IN ("
                " SELECT seq FROM messages WHERE expires_at <= $1 FOR UPDATE SKIP LOCKED)",
                now,
            )
            return int(deleted)

        return await self._run(job)

    # -- running statements -------------------------------------------------------------

    def _queryable(self) -> Connection:
        if self._pool is None:
            raise RuntimeError("the PostgreSQL store is not open")
        return cast(Connection, self._pool)

    async def _run(self, job: Callable[[Connection], Awaitable[T]]) -> T:
        """Run ``job`` in one transaction on a pooled connection; returns after commit."""
        pool = self._queryable()
        attempt = 0
        while True:
            attempt += 1
            try:
                async with cast(Any, pool).acquire() as conn, conn.transaction():
                    return await job(cast(Connection, conn))
            except _RETRYABLE:
                if attempt >= _ATTEMPTS:
                    raise
            except CONNECTION_ERRORS as exc:
                # Lost during COMMIT, the outcome is unknown: the relay answers with an
                # error, and the client's retry (same envelope id) settles it.
                raise unavailable(self.dsn, exc) from exc

    # One statement outside a transaction block commits on its own before it returns.

    async def _execute(self, query: str, *args: object) -> None:
        try:
            await self._queryable().execute(query, *args)
        except CONNECTION_ERRORS as exc:
            raise unavailable(self.dsn, exc) from exc

    async def _fetch(self, query: str, *args: object) -> list[Record]:
        try:
            return await self._queryable().fetch(query, *args)
        except CONNECTION_ERRORS as exc:
            raise unavailable(self.dsn, exc) from exc

    async def _fetchval(self, query: str, *args: object) -> Any:
        try:
            return await self._queryable().fetchval(query, *args)
        except CONNECTION_ERRORS as exc:
            raise unavailable(self.dsn, exc) from exc


async def _insert_entry(
    conn: Connection, identity: str, entry: ChainEntry, body: EntryBody
) -> None:
    try:
        await conn.execute(
            "INSERT INTO chain (identity, seq, body, signature) VALUES ($1, $2, $3, $4)",
            identity,
            body.seq,
            entry.body,
            entry.signature,
        )
        if body.op is KeyOp.ADD:
            await conn.execute(
                "INSERT INTO devices (identity, device) VALUES ($1, $2)", identity, body.device
            )
            return
    except asyncpg.exceptions.UniqueViolationError as exc:
        # The relay checked the entry against the chain it read; another node appended
        # in between. Nothing of this entry is kept (the transaction rolls back).
        raise ChainConflict(
            f"the key chain of {identity!r} changed: it has an entry {body.seq}"
            f" or a device {body.device!r} already"
        ) from exc
    await conn.execute(
        "UPDATE devices SET revoked = true WHERE identity = $1 AND device = $2",
        identity,
        body.device,
    )
    await _drop_device_keys(conn, identity, body.device)
    released = await conn.fetch(
        "DELETE FROM inbox WHERE identity = $1 AND device = $2 RETURNING message",
        identity,
        body.device,
    )
    await _release_bodies(conn, (m for (m,) in released))


async def _lock_device(conn: Connection, identity: str, device: str) -> None:
    await conn.execute(
        "SELECT 1 FROM devices WHERE identity = $1 AND device = $2 FOR NO KEY UPDATE",
        identity,
        device,
    )


async def _drop_device_keys(conn: Connection, identity: str, device: str) -> None:
    await conn.execute(
        "DELETE FROM identity_keys WHERE identity = $1 AND device = $2", identity, device
    )
    await conn.execute(
        "DELETE FROM one_time_keys WHERE identity = $1 AND device = $2", identity, device
    )
    await conn.execute(
        "DELETE FROM fallback_keys WHERE identity = $1 AND device = $2", identity, device
    )


async def _key_status(conn: Connection, identity: str, device: str) -> KeyStatus:
    row = await conn.fetchrow(
        "SELECT (SELECT count(*) FROM one_time_keys WHERE identity = $1 AND device = $2),"
        " EXISTS (SELECT 1 FROM fallback_keys"
        " WHERE identity = $1 AND device = $2 AND NOT claimed)",
        identity,
        device,
    )
    assert row is not None  # a SELECT without FROM returns one row
    return KeyStatus(one_time_keys=int(row[0]), fallback_key=bool(row[1]))


async def _release_bodies(conn: Connection, messages: Iterable[int]) -> None:
    """Clear the bodies of these messages that no inbox row refers to any more."""
    ids = sorted(set(messages))
    if not ids:
        return
    # Lock the messages first (in seq order, so two releases cannot deadlock): another
    # device's confirm of the same message then checks after this one commits, and sees
    # this device's row gone.
    await conn.execute(
        "SELECT 1 FROM messages WHERE seq = ANY($1::bigint[]) ORDER BY seq FOR NO KEY UPDATE",
        ids,
    )
    await conn.execute(
        "UPDATE messages SET body = NULL"
        " WHERE seq = ANY($1::bigint[]) AND body IS NOT NULL"
        " AND NOT EXISTS (SELECT 1 FROM inbox WHERE inbox.message = messages.seq)",
        ids,
    )
