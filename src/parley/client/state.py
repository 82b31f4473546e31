"""The client's local state in SQLite: last processed offset, seen ``jti``, key chains,
and the device's Olm account and sessions.

The offset and the ``jti`` of a message are written in one transaction *before* its
handler runs, so a crash between the two can only lose a handler call, never repeat one
(exactly-once to handlers, DESIGN.md §2 "nothing is handled twice").

Seen ``jti`` are kept with their ``exp``: once a message has expired the expiry check
already refuses it, so its ``jti`` can be pruned.

Olm state is stored as vodozemac pickles, which are encrypted and authenticated with a
key derived from the device's secret key (:mod:`parley.client.olm`): this module only
ever sees ciphertext. Decrypting a delivery spends Olm keys: normally that Olm state is
written with the delivery's offset (:meth:`State.record`). If anything writes Olm state
before that (a send while the delivery waits on a key fetch), the decrypted payload,
encrypted by the caller, is written in the same transaction (:meth:`State.keep_opened`),
so a restart finds the payload instead of a session that can no longer decrypt it.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
from collections.abc import Iterator
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


class State:
    """One device's state file. Not thread-safe: used from the client's event loop only."""

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
        self._db = sqlite3.connect(str(path), isolation_level=None)
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            # WAL + NORMAL survives a process crash, which is what exactly-once needs.
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
            self._claim(identity, device)
            self._offset = _offset(self._meta("offset") or "0")
            self._kept: tuple[int, bytes] | None = None
            # Offsets with a payload on disk: almost always none, so most lookups are free.
            opened = self._db.execute("SELECT offset FROM opened")
            self._opened = {_typed(offset, int) for (offset,) in opened}
        except BaseException:
            self._db.close()
            raise

    def _meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

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
        """The last inbox offset processed by this device."""
        return self._offset

    def is_seen(self, issuer: str, jti: str) -> bool:
        with self._usable():
            row = self._db.execute(
                "SELECT 1 FROM seen WHERE issuer = ? AND jti = ?", (issuer, jti)
            ).fetchone()
        return row is not None

    def record(self, offset: int, seen: Seen | None = None, olm: OlmChanges | None = None) -> None:
        """Mark ``offset`` processed and, for a verified message, remember its ``jti``;
        with the Olm state that opening it changed."""
        with self._usable(), self._db:
            self._db.execute("BEGIN")
            self._db.execute(
                "INSERT INTO meta VALUES ('offset', ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (str(offset),),
            )
            if seen is not None:
                self._db.execute("INSERT INTO seen VALUES (?, ?, ?)", seen)
            if olm:
                self._write_olm(olm)
            if self._opened:
                self._db.execute("DELETE FROM opened WHERE offset <= ?", (offset,))
        self._opened = {o for o in self._opened if o > offset}
        self._offset = offset
        self._kept = None

    def keep_opened(self, offset: int, payload: bytes) -> None:
        """The (encrypted) payload of a delivery just decrypted and not yet recorded: it
        goes to disk with the next Olm write, if one comes before :meth:`record`."""
        self._kept = (offset, payload)

    def load_opened(self, offset: int) -> bytes | None:
        if self._kept is not None and self._kept[0] == offset:
            return self._kept[1]
        if offset not in self._opened:
            return None
        with self._usable():
            row = self._db.execute("SELECT payload FROM opened WHERE offset = ?", (offset,))
            found = row.fetchone()
            return None if found is None else _typed(found[0], bytes)

    def load_olm_account(self) -> str | None:
        with self._usable():
            row = self._db.execute("SELECT pickle FROM olm_account WHERE id = 0").fetchone()
            return None if row is None else _typed(row[0], str)

    def load_olm_sessions(self) -> list[SessionRow]:
        with self._usable():
            rows = self._db.execute(
                "SELECT identity, device, session_id, peer_key, rank, pickle FROM olm_sessions"
            )
            return [
                SessionRow(*(_typed(v, t) for v, t in zip(row, _SESSION_TYPES, strict=True)))
                for row in rows
            ]

    def save_olm(self, olm: OlmChanges) -> None:
        if not olm:
            return
        with self._usable(), self._db:
            self._db.execute("BEGIN")
            self._write_olm(olm)
            if self._kept is not None:
                # This may carry keys that decrypting the kept delivery spent.
                self._db.execute("INSERT OR REPLACE INTO opened VALUES (?, ?)", self._kept)
                self._opened.add(self._kept[0])

    def _write_olm(self, olm: OlmChanges) -> None:
        if olm.account is not None:
            self._db.execute(
                "INSERT INTO olm_account VALUES (0, ?) "
                "ON CONFLICT (id) DO UPDATE SET pickle = excluded.pickle",
                (olm.account,),
            )
        self._db.executemany(
            "INSERT INTO olm_sessions VALUES (?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (identity, device, session_id) DO UPDATE SET "
            "rank = excluded.rank, pickle = excluded.pickle",
            olm.sessions,
        )
        self._db.executemany(
            "DELETE FROM olm_sessions WHERE identity = ? AND device = ? AND session_id = ?",
            olm.dropped,
        )

    def prune_seen(self, now: float) -> int:
        """Forget ``jti`` whose message has expired; returns how many."""
        with self._usable(), self._db:
            self._db.execute("BEGIN")
            cursor = self._db.execute("DELETE FROM seen WHERE exp < ?", (now,))
        if cursor.rowcount:
            log.debug("pruned %d expired message ids", cursor.rowcount)
        return cursor.rowcount

    def load_chain(self, identity: str) -> list[ChainEntry] | None:
        with self._usable():
            row = self._db.execute(
                "SELECT entries FROM chains WHERE identity = ?", (identity,)
            ).fetchone()
            return None if row is None else _entries_decoder.decode(row[0])

    def save_chain(self, identity: str, entries: list[ChainEntry]) -> None:
        with self._usable(), self._db:
            self._db.execute("BEGIN")
            self._db.execute(
                "INSERT INTO chains VALUES (?, ?) "
                "ON CONFLICT (identity) DO UPDATE SET entries = excluded.entries",
                (identity, _entries_encoder.encode(entries)),
            )

    def close(self) -> None:
        self._db.close()


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
