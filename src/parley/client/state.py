"""The client's local state in SQLite: last processed offset, seen ``jti``, key chains,
and the device's Olm account and sessions.

Writes are group-committed. :meth:`State.record`, :meth:`State.save_olm`,
:meth:`State.save_chain` and :meth:`State.prune_seen` only queue; :meth:`State.commit`
returns once everything queued before it is written (WAL, ``synchronous=NORMAL``: it
survives a crash of the process). One transaction is written at a time, formed at the
end of a turn of the event loop; what is queued meanwhile goes into the next one, so a
burst of deliveries and sends costs a few commits, not one each. The Olm changes are
taken (pickled) when a transaction is formed, not per message: a session a whole batch
used is pickled once. Transactions are written in the order they are formed, each all
or nothing, so after a crash the file holds a prefix of what was queued.

Nothing on the event loop waits for the disk. In WAL mode with ``synchronous=NORMAL``
a commit only appends to the WAL in the OS's page cache; what syncs is the checkpoint
(copying the WAL into the database) and the first commit after it (starting the WAL
over). Automatic checkpoints are off: every :data:`CHECKPOINT_EVERY` transactions, one
goes to this state's thread, which checkpoints and then writes it, while the loop goes
on and later commits wait for it. The other transactions are written on the loop: a
round trip to a thread for each cost more CPU (measured: 10-15 % of a client's time in
``benchmarks/relay_throughput.py``) than writing them.

The inbox awaits :meth:`State.commit` after recording a delivery's offset and ``jti``
and *before* its handler runs or its confirm goes to the relay: a crash can lose a
handler call, never repeat one, and the relay keeps every delivery the file has not
recorded (exactly-once to handlers, DESIGN.md §2 "nothing is handled twice"). A seal
awaits it before its message leaves, so a session never encrypts twice from the same
state after a restart.

Seen ``jti`` are kept with their ``exp``: once a message has expired the expiry check
already refuses it, so its ``jti`` can be pruned.

Olm state is stored as vodozemac pickles, which are encrypted and authenticated with a
key derived from the device's secret key (:mod:`parley.client.olm`): this module only
ever sees ciphertext. Decrypting a delivery spends Olm keys: normally that Olm state is
written in the transaction that records the delivery's offset. If a transaction carries
Olm state before that (a send while a delivery waits on a key fetch), the decrypted
payloads, encrypted by the caller, are written in it (:meth:`State.keep_opened`), so a
restart finds the payloads instead of sessions that can no longer decrypt them.

Reads (:meth:`State.is_seen`, the rare loads) run on the caller's thread through a
connection of their own, which WAL never makes wait for the writer; what is queued or
being written is answered from memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import sqlite3
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple, TypeVar

import msgspec

from parley.errors import StateError, StateFileError
from parley.protocol.decoding import MIB, Decoder
from parley.protocol.keychain import ChainEntry

log = logging.getLogger(__name__)

MEMORY = ":memory:"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS seen (
    issuer TEXT NOT NULL,
    jti TEXT NOT NULL,
    exp INTEGER NOT NULL,
    PRIMARY KEY (issuer, jti)
);
CREATE INDEX IF NOT EXISTS seen_exp ON seen (exp);
CREATE TABLE IF NOT EXISTS chains (identity TEXT PRIMARY KEY, entries BLOB NOT NULL);
-- Deliveries decrypted but not yet recorded: the payload (encrypted at rest) is kept
-- with the Olm state that decrypting spent, so a restart can finish them.
CREATE TABLE IF NOT EXISTS opened (offset INTEGER PRIMARY KEY, payload BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS olm_account (
    id INTEGER PRIMARY KEY CHECK (id = 0),
    pickle TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS olm_sessions (
    identity TEXT NOT NULL,
    device TEXT NOT NULL,
    session_id TEXT NOT NULL,
    peer_key BLOB NOT NULL,
    rank INTEGER NOT NULL,
    pickle TEXT NOT NULL,
    PRIMARY KEY (identity, device, session_id)
);
"""

_entries_encoder = msgspec.msgpack.Encoder()
# A chain grows by one entry per device added or revoked: thousands fit in this.
_entries_decoder: Decoder[list[ChainEntry]] = Decoder(
    list[ChainEntry],
    format="msgpack",
    error=StateFileError,
    what="a cached key chain does not decode",
    max_bytes=16 * MIB,
)


class Seen(NamedTuple):
    """A verified message's replay key and the time after which it can be forgotten."""

    issuer: str
    jti: str
    exp: int


class SessionRow(NamedTuple):
    """One Olm session with a peer device; ``rank`` orders them by last use."""

    identity: str
    device: str
    session_id: str
    peer_key: bytes
    rank: int
    pickle: str


@dataclass
class OlmChanges:
    """Olm state to write: the account if it changed, changed and dropped sessions."""

    account: str | None = None
    sessions: list[SessionRow] = field(default_factory=list)
    dropped: list[tuple[str, str, str]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return self.account is not None or bool(self.sessions) or bool(self.dropped)


# Transactions written on the loop between two written on the thread, which checkpoints
# first: up to a few MB of WAL.
CHECKPOINT_EVERY = 64


@dataclass
class _Batch:
    """What one transaction writes."""

    offset: int | None = None
    seen: list[Seen] = field(default_factory=list)
    olm: list[OlmChanges] = field(default_factory=list)
    chains: dict[str, list[ChainEntry]] = field(default_factory=dict)
    prune_before: float | None = None
    opened: dict[int, bytes] = field(default_factory=dict)
    # Kept payloads at or below this offset are dropped (their deliveries are recorded).
    forget_opened: int | None = None

    def __bool__(self) -> bool:
        return (
            self.offset is not None
            or bool(self.seen or self.olm or self.chains or self.opened)
            or self.prune_before is not None
        )


class State:
    """One device's state file, used from one event loop; or from plain code with no
    loop running (a script, a test), where each write is written at once."""

    def __init__(self, path: str | Path, *, identity: str, device: str) -> None:
        self._path = path
        with self._usable():
            self._open(path, identity=identity, device=device)

    @contextlib.contextmanager
    def _usable(self) -> Iterator[None]:
        """What SQLite or the rows it returns make of a damaged file: one typed error.

        Any statement can meet a corrupt page long after the file opened, and SQLite is
        typeless: a value written by anything else may be of any type."""
        try:
            yield
        # UnicodeDecodeError: SQLite does not check that TEXT is UTF-8; Python does.
        except (sqlite3.DatabaseError, UnicodeDecodeError, StateFileError) as exc:
            raise StateFileError(
                f"client state file {self._path} cannot be used ({exc}); restore it from a "
                "backup or move it away to start this device afresh"
            ) from None

    def _open(self, path: str | Path, *, identity: str, device: str) -> None:
        memory = str(path) == MEMORY
        # Reads; for a file, a second connection writes, from this state's thread.
        self._db = sqlite3.connect(str(path), isolation_level=None)
        self._writer = self._db
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.executescript(_SCHEMA)
            self._claim(identity, device)
            self._offset = _offset(self._meta("offset") or "0")
            # Payloads of deliveries opened and not yet recorded, as written to disk:
            # almost always none.
            opened = self._db.execute("SELECT offset, payload FROM opened").fetchall()
            self._opened = {_typed(o, int): _typed(p, bytes) for o, p in opened}
            if not memory:
                self._writer = sqlite3.connect(
                    str(path), isolation_level=None, check_same_thread=False
                )
            # WAL + NORMAL survives a process crash, which is what exactly-once needs,
            # and syncs only at checkpoints, which this state runs itself (on its thread).
            self._writer.execute("PRAGMA synchronous=NORMAL")
            self._writer.execute("PRAGMA wal_autocheckpoint=0")
        except BaseException:
            self._close_connections()
            raise
        # A memory database does no I/O: its transactions are written on the loop.
        self._thread = None if memory else _Writer(self._checkpoint_and_write)
        self._until_checkpoint = CHECKPOINT_EVERY
        self._queued = _Batch()
        # Queued or being written; answered from here until the reader can see them.
        self._unwritten_seen: set[tuple[str, str]] = set()
        self._unwritten_chains: dict[str, list[ChainEntry]] = {}
        # Opened deliveries not recorded: their payload, encrypted at rest when written.
        self._kept: dict[int, Callable[[], bytes]] = {}
        self._olm_source: Callable[[], OlmChanges] | None = None
        # Awaiting commit(), a future each (a caller's cancellation cancels only its
        # own): the transaction that will carry what is queued now.
        self._waiters: list[asyncio.Future[None]] = []
        self._writing = False
        self._failure: StateFileError | None = None
        self._closed = False

    def _close_connections(self) -> None:
        if self._writer is not self._db:
            self._writer.close()
        self._db.close()

    def _meta(self, key: str) -> str | None:
        rows = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchall()
        return str(rows[0][0]) if rows else None

    def _claim(self, identity: str, device: str) -> None:
        # A state file belongs to one device: another device's offset would skip messages.
        owner = f"{identity}:{device}"
        current = self._meta("owner")
        if current is None:
            self._db.execute("INSERT INTO meta VALUES ('owner', ?)", (owner,))
        elif current != owner:
            raise StateError(f"state file belongs to {current}, not {owner}")

    @property
    def offset(self) -> int:
        """The last inbox offset recorded as processed (written, or queued to be)."""
        return self._offset

    # -- reads ------------------------------------------------------------------------
    # Each one reads to the end (fetchall): a statement left open would hold the reader
    # on an old snapshot, blind to what the writer committed since.

    def is_seen(self, issuer: str, jti: str) -> bool:
        if (issuer, jti) in self._unwritten_seen:
            return True
        with self._usable():
            rows = self._db.execute(
                "SELECT 1 FROM seen WHERE issuer = ? AND jti = ?", (issuer, jti)
            ).fetchall()
        return bool(rows)

    def load_opened(self, offset: int) -> bytes | None:
        """The payload :meth:`keep_opened` kept for ``offset``, as encrypted at rest."""
        wrapped = self._kept.get(offset)
        return wrapped() if wrapped is not None else self._opened.get(offset)

    def load_olm_account(self) -> str | None:
        with self._usable():
            rows = self._db.execute("SELECT pickle FROM olm_account WHERE id = 0").fetchall()
            return _typed(rows[0][0], str) if rows else None

    def load_olm_sessions(self) -> list[SessionRow]:
        with self._usable():
            rows = self._db.execute(
                "SELECT identity, device, session_id, peer_key, rank, pickle FROM olm_sessions"
            ).fetchall()
            return [
                SessionRow(*(_typed(v, t) for v, t in zip(row, _SESSION_TYPES, strict=True)))
                for row in rows
            ]

    def load_chain(self, identity: str) -> list[ChainEntry] | None:
        unwritten = self._unwritten_chains.get(identity)
        if unwritten is not None:
            return unwritten
        with self._usable():
            rows = self._db.execute(
                "SELECT entries FROM chains WHERE identity = ?", (identity,)
            ).fetchall()
            return _entries_decoder.decode(rows[0][0]) if rows else None

    # -- writes: queued, then committed -----------------------------------------------

    def record(self, offset: int, seen: Seen | None = None) -> None:
        """Queue ``offset`` as processed and, for a verified message, its ``jti``."""
        queued = self._queued
        queued.offset = offset
        if seen is not None:
            queued.seen.append(seen)
            self._unwritten_seen.add((seen.issuer, seen.jti))
        if self._kept:
            self._kept = {o: p for o, p in self._kept.items() if o > offset}
        if self._opened and min(self._opened) <= offset:
            queued.forget_opened = offset
            self._opened = {o: p for o, p in self._opened.items() if o > offset}
        self._offset = offset
        self._unless_looping()

    def keep_opened(self, offset: int, wrapped: Callable[[], bytes]) -> None:
        """A delivery just decrypted and not yet recorded: ``wrapped()`` gives its payload
        encrypted at rest, which a transaction carrying Olm state writes before
        :meth:`record` has."""
        self._kept[offset] = wrapped

    def track_olm(self, changes: Callable[[], OlmChanges]) -> None:
        """Every transaction writes ``changes()``, called when it is formed."""
        self._olm_source = changes

    def save_olm(self, olm: OlmChanges) -> None:
        if olm:
            self._queued.olm.append(olm)
            self._unless_looping()

    def save_chain(self, identity: str, entries: list[ChainEntry]) -> None:
        self._queued.chains[identity] = entries
        self._unwritten_chains[identity] = entries
        self._unless_looping()

    def prune_seen(self, now: float) -> None:
        """Queue forgetting the ``jti`` of messages expired by ``now``."""
        self._queued.prune_before = now
        self._unless_looping()

    def _unless_looping(self) -> None:
        """With no event loop to commit it, write what is queued now."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            self._write_queued()

    def _write_queued(self) -> None:
        batch = self._form()
        if batch:
            self._write(batch)
            self._written(batch)

    async def commit(self) -> None:
        """Return once everything queued before, and the Olm state as it is now, is
        written; :class:`StateFileError` if the file failed."""
        if self._failure is not None:
            raise self._failure
        if self._closed:
            return  # close() wrote what was queued
        loop = asyncio.get_running_loop()
        if not self._waiters and not self._writing:
            # Formed at the end of this turn of the loop: callers in it share it.
            loop.call_soon(self._write_next)
        waiter = loop.create_future()
        self._waiters.append(waiter)
        await waiter

    def _write_next(self) -> None:
        waiters, self._waiters = self._waiters, []
        if self._closed:
            _resolve(waiters)  # close() wrote what was queued
            return
        batch = self._form()
        if not batch:
            _resolve(waiters)
        elif self._thread is None or self._until_checkpoint > 0:
            self._until_checkpoint -= 1
            try:
                self._write(batch)
            except Exception as exc:  # a value SQLite cannot store, too: typed by _fail
                self._fail(exc, waiters)
            else:
                self._written(batch)
                _resolve(waiters)
        else:
            self._writing = True
            self._until_checkpoint = CHECKPOINT_EVERY
            loop = asyncio.get_running_loop()
            self._thread.submit(
                batch, lambda exc: loop.call_soon_threadsafe(self._done, exc, batch, waiters)
            )

    def _done(
        self, exc: BaseException | None, batch: _Batch, waiters: list[asyncio.Future[None]]
    ) -> None:
        self._writing = False
        if exc is not None:
            self._fail(exc, waiters)
            return
        self._written(batch)
        _resolve(waiters)
        if self._waiters:
            self._write_next()  # what was queued while this one was written

    def _form(self) -> _Batch:
        batch, self._queued = self._queued, _Batch()
        if self._olm_source is not None:
            changes = self._olm_source()
            if changes:
                batch.olm.append(changes)
        if batch.olm and self._kept:
            # This Olm state may lack keys that the kept deliveries spent.
            for offset, wrapped in self._kept.items():
                batch.opened[offset] = self._opened[offset] = wrapped()
            self._kept = {}
        return batch

    def _written(self, batch: _Batch) -> None:
        for seen in batch.seen:
            self._unwritten_seen.discard((seen.issuer, seen.jti))
        for identity, entries in batch.chains.items():
            if self._unwritten_chains.get(identity) is entries:
                del self._unwritten_chains[identity]

    def _fail(self, exc: BaseException, waiters: list[asyncio.Future[None]]) -> None:
        log.error("client state file %s: %s", self._path, exc)
        failure = exc if isinstance(exc, StateFileError) else StateFileError(str(exc))
        self._failure = failure
        waiters, self._waiters = waiters + self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_exception(failure)

    def _write(self, batch: _Batch) -> None:
        """One transaction: on this state's thread (a memory database: the loop's).

        As few statements as it takes, empty ones left out: SQLite lets go of the GIL
        around each step, and taking it back from a busy loop is what a write costs."""
        db = self._writer
        with self._usable():
            db.execute("BEGIN")
            try:
                if batch.offset is not None:
                    db.execute(
                        "INSERT INTO meta VALUES ('offset', ?) "
                        "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                        (str(batch.offset),),
                    )
                for rows in _chunks(batch.seen):
                    values = ", ".join(("(?, ?, ?)",) * len(rows))
                    db.execute(f"INSERT INTO seen VALUES {values}", [v for r in rows for v in r])
                for olm in batch.olm:
                    _write_olm(db, olm)
                if batch.forget_opened is not None:
                    db.execute("DELETE FROM opened WHERE offset <= ?", (batch.forget_opened,))
                if batch.opened:
                    db.executemany(
                        "INSERT OR REPLACE INTO opened VALUES (?, ?)", batch.opened.items()
                    )
                if batch.chains:
                    db.executemany(
                        "INSERT INTO chains VALUES (?, ?) "
                        "ON CONFLICT (identity) DO UPDATE SET entries = excluded.entries",
                        [(i, _entries_encoder.encode(e)) for i, e in batch.chains.items()],
                    )
                if batch.prune_before is not None:
                    cursor = db.execute("DELETE FROM seen WHERE exp < ?", (batch.prune_before,))
                    if cursor.rowcount:
                        log.debug("pruned %d expired message ids", cursor.rowcount)
            except BaseException:
                if db.in_transaction:  # SQLite has rolled back already on some errors
                    db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    def _checkpoint_and_write(self, batch: _Batch) -> None:
        """On the thread: copy the WAL into the database (syncing both), then write
        ``batch``, which starts the WAL over (syncing its header) if the copy was whole."""
        with self._usable():
            self._writer.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        self._write(batch)

    def close(self) -> None:
        """Wait for the transaction being written, write what is queued, close."""
        if self._closed:
            return
        self._closed = True
        if self._thread is not None:
            self._thread.join()
        try:
            if self._failure is None:
                self._write_queued()
        except Exception as exc:  # closing: whatever failed is logged, not raised
            log.error("client state file %s: not all was written: %s", self._path, exc)
        finally:
            waiters, self._waiters = self._waiters, []
            _resolve(waiters)
            self._close_connections()


class _Writer:
    """The thread that writes one state's transactions, in order, and reports each.

    Started with the first transaction, ended by :meth:`join`. A daemon: a state never
    closed does not keep the interpreter alive, and a transaction cut short as it exits
    is rolled back, as after a crash."""

    def __init__(self, write: Callable[[_Batch], None]) -> None:
        self._write = write
        self._jobs: queue.SimpleQueue[tuple[_Batch, Callable[[BaseException | None], object]]] = (
            queue.SimpleQueue()
        )
        self._thread: threading.Thread | None = None

    def submit(self, batch: _Batch, done: Callable[[BaseException | None], object]) -> None:
        """Write ``batch``; then ``done`` (on this thread) with the error, if any."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="parley-state", daemon=True)
            self._thread.start()
        self._jobs.put((batch, done))

    def _run(self) -> None:
        while True:
            batch, done = self._jobs.get()
            if not batch:
                return  # join()
            error: BaseException | None = None
            try:
                self._write(batch)
            except BaseException as exc:  # handed to the loop, which fails the waiters
                error = exc
            try:
                done(error)
            except RuntimeError:
                return  # the loop is closed: no one is waiting any more

    def join(self) -> None:
        """Wait for the transactions submitted, and end the thread."""
        if self._thread is not None:
            self._jobs.put((_Batch(), lambda error: None))
            self._thread.join()
            self._thread = None


def _resolve(waiters: list[asyncio.Future[None]]) -> None:
    for waiter in waiters:
        if not waiter.done():  # cancelled: its caller stopped waiting
            waiter.set_result(None)


def _write_olm(db: sqlite3.Connection, olm: OlmChanges) -> None:
    if olm.account is not None:
        db.execute(
            "INSERT INTO olm_account VALUES (0, ?) "
            "ON CONFLICT (id) DO UPDATE SET pickle = excluded.pickle",
            (olm.account,),
        )
    if olm.sessions:
        db.executemany(
            "INSERT INTO olm_sessions VALUES (?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (identity, device, session_id) DO UPDATE SET "
            "rank = excluded.rank, pickle = excluded.pickle",
            olm.sessions,
        )
    if olm.dropped:
        db.executemany(
            "DELETE FROM olm_sessions WHERE identity = ? AND device = ? AND session_id = ?",
            olm.dropped,
        )


# Rows per multi-row INSERT: far below SQLite's limit of host parameters.
_CHUNK = 256


def _chunks(rows: list[Seen]) -> Iterator[list[Seen]]:
    for start in range(0, len(rows), _CHUNK):
        yield rows[start : start + _CHUNK]


_SESSION_TYPES = (str, str, str, bytes, int, str)
T = TypeVar("T")


def _typed(value: object, kind: type[T]) -> T:
    """``value`` if SQLite handed back a ``kind``; :class:`StateFileError` if not."""
    if not isinstance(value, kind):
        raise StateFileError(f"a {type(value).__name__} where a {kind.__name__} belongs")
    return value


def _offset(text: str) -> int:
    # Written by record() as str(int); int() would take " 7" or other scripts' digits,
    # and raise ValueError, not our error, for other text or 5,000 digits.
    if not (text.isascii() and text.isdigit() and len(text) <= 19):
        raise StateFileError(f"the offset {text[:40]!r} is not an inbox offset")
    return int(text)
