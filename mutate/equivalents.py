"""Surviving mutants that no test can kill, each with the reason.

A mutant is matched by its change, not its line number, so the list stays true while
the module around it changes: ``line`` is the source line it rewrites and ``mutated``
what it becomes, both stripped of indentation. Only a change that makes no difference
any caller could observe belongs here; anything else gets a test.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Equivalent:
    target: str
    line: str
    mutated: str
    why: str


# Reasons shared by several entries.
KEYWORDS = "the keyword-only marker `*` made `/`: every caller names these arguments anyway"
SMALL_INT = "`is` on small ints: CPython keeps one object per value from -5 to 256"
IDENTITY_EQ = "`==` on objects without __eq__ is identity, the same as `is`"
ENUM_EQ = "`==` between members of one Enum holds only for the same member (their values differ)"
OVERWRITTEN = (
    "_authenticate sets _confirmed before the session turns active, with no yield between,"
    " and only an active session serves a Confirm: the initial value is never read"
)
LEN = "len() is never negative: `0 != n` holds exactly when `0 < n`"
ACTIVE_OR_CLOSING = (
    "after the handshake loop the session is active or the connection is closing (a refusal"
    " or a timeout closes it), and an active session never leaves that phase: the loop"
    " ends exactly when the connection starts closing"
)
TIMING = "only how long something waits: visible on a wall clock alone, which no test asserts on"
REBUILT = (
    "only how often the proxy's deadline heap is rebuilt from its bridges (the same answer"
    " either way, at another cost); one that stops rebuilding is killed by"
    " test_outdated_deadlines_do_not_pile_up"
)
BOOL_IS = "`is` between bools: True and False are one object each, so `is not` is `!=`"
ONE_ROW = (
    "one column selected by the table's primary key: at most one row of one value, so index"
    " 0 and -1 are the same"
)
ONE_COLUMN = "a row of the one column the statement selects or returns: index 0 is index -1"
ROWCOUNT = "the rowcount of an INSERT or UPDATE is never negative (-1 is for other statements)"
REVOKES_IDENTITY = (
    "the body revokes (identity, device), not whose, and identity's own entries still match;"
    " an extra match on another identity's entry calls _revoked(identity, X) for an X not"
    " active in identity's fresh chain: its connections are closed by identity's own entry"
    " anyway, and its cached keys are filtered out as inactive"
)
KEY_AND_NONCE_BITS = (
    "32 (the key) and 24 (the nonce) share no bit: + is | is ^ here (both sizes are pinned"
    " by value in test_sealed)"
)
DISJOINT_BITS = (
    "0x555555 (4 MiB x 4 / 3) and 0x2000 (8 KiB) share no bit: + is | is ^ here (the sum,"
    " 5,600,597, is pinned by value in test_jws)"
)

JOURNAL_MODES = (
    "every journal mode SQLite has (delete, memory, off, persist, truncate) sorts before"
    " wal: `<` and `<=` hold exactly when `!=` does"
)
CADENCE = (
    "only how many saves come between two checkpoints; the tests read the constant, and"
    " the WAL is bounded and every save kept at any cadence"
)
WAL_BOUND = (
    "a WAL of exactly WAL_LIMIT frames starts over one checkpoint sooner or later: the same"
    " bound, and only the few saves past it wait"
)

EQUIVALENTS: tuple[Equivalent, ...] = (
    # -- client/inbox.py
    Equivalent("inbox", "*,", "/,", KEYWORDS),
    Equivalent(
        "inbox",
        "if task is None or task is asyncio.current_task():",
        "if task is None or task == asyncio.current_task():",
        IDENTITY_EQ + " (asyncio.Task)",
    ),
    Equivalent(
        "inbox",
        "if self._queue.empty() or len(self._batch) + len(self._held) >= BATCH:",
        "if self._queue.empty() or len(self._batch) + len(self._held) == BATCH:",
        "the batch grows by one and is flushed on reaching BATCH: it never exceeds it",
    ),
    Equivalent(
        "inbox",
        "if self._queue.empty() or len(self._batch) + len(self._held) >= BATCH:",
        "if self._queue.empty() or len(self._batch) + len(self._held) is BATCH:",
        "the batch never exceeds BATCH, and " + SMALL_INT,
    ),
    *(
        Equivalent(
            "inbox",
            "if self._queue.empty() or len(self._batch) + len(self._held) >= BATCH:",
            f"if self._queue.empty() or len(self._batch) {op} len(self._held) >= BATCH:",
            f"+ made {op}: between two deliveries one of the two is empty (held ones are"
            " all recorded at once, and the batch is handed on before the next delivery)",
        )
        for op in ("|", "^")
    ),
    Equivalent(
        "inbox",
        "if self._recorded % PRUNE_EVERY == 0:",
        "if self._recorded % PRUNE_EVERY <= 0:",
        "a remainder by a positive number is never negative",
    ),
    # -- protocol/call_phone.py
    Equivalent(
        "phone",
        "elif msg.kind is _START:",
        "elif msg.kind == _START:",
        ENUM_EQ,
    ),
    Equivalent(
        "phone",
        "elif msg.kind is _ACCEPT:",
        "elif msg.kind == _ACCEPT:",
        ENUM_EQ,
    ),
    Equivalent(
        "phone",
        "elif msg.kind is _ACCEPT:",
        "elif msg.kind <= _ACCEPT:",
        '"chat.voice.accept" sorts before the other five MessageType values: `<= VOICE_ACCEPT` '
        "holds for it alone",
    ),
    Equivalent(
        "phone",
        "if c.role is Role.CALLER and c.state is CallState.DIALING and c.peer == msg.issuer",
        "if c.role == Role.CALLER and c.state is CallState.DIALING and c.peer == msg.issuer",
        ENUM_EQ,
    ),
    Equivalent(
        "phone",
        "if c.role is Role.CALLER and c.state is CallState.DIALING and c.peer == msg.issuer",
        "if c.role <= Role.CALLER and c.state is CallState.DIALING and c.peer == msg.issuer",
        "only a caller's call is ever DIALING (Dialed is in the CALLER table alone), so beside "
        "`c.state is CallState.DIALING` the role test decides nothing",
    ),
    Equivalent(
        "phone",
        "if c.role is Role.CALLER and c.state is CallState.DIALING and c.peer == msg.issuer",
        "if c.role >= Role.CALLER and c.state is CallState.DIALING and c.peer == msg.issuer",
        'Role has two members and "callee" < "caller": `>= Role.CALLER` holds for CALLER alone',
    ),
    Equivalent(
        "phone",
        "if c.role is Role.CALLER and c.state is CallState.DIALING and c.peer == msg.issuer",
        "if c.role is Role.CALLER and c.state == CallState.DIALING and c.peer == msg.issuer",
        ENUM_EQ,
    ),
    Equivalent(
        "phone",
        "if c.role is Role.CALLER and c.state is CallState.DIALING and c.peer == msg.issuer",
        "if c.role is Role.CALLER and c.state >= CallState.DIALING and c.peer == msg.issuer",
        'a caller\'s live call is DIALING or CONNECTED (never RINGING), and "connected" < '
        '"dialing": `>=` holds for DIALING alone',
    ),
    Equivalent(
        "phone",
        "if any(rival.call_id < msg.call_id for rival in rivals):",
        "if any(rival.call_id <= msg.call_id for rival in rivals):",
        "a start for a call_id the phone holds is ignored before this (`msg.call_id in "
        "self._calls`): a rival's call_id never equals msg.call_id",
    ),
    Equivalent(
        "phone",
        "if record is not None and record.role is Role.CALLER and record.peer == msg.issuer:",
        "if record is not None and record.role == Role.CALLER and record.peer == msg.issuer:",
        ENUM_EQ,
    ),
    Equivalent(
        "phone",
        "if record is not None and record.role is Role.CALLER and record.peer == msg.issuer:",
        "if record is not None and record.role >= Role.CALLER and record.peer == msg.issuer:",
        'Role has two members and "callee" < "caller": `>= Role.CALLER` holds for CALLER alone',
    ),
    Equivalent(
        "phone",
        "if call.role is not Role.CALLER or call.peer != msg.issuer:",
        "if call.role != Role.CALLER or call.peer != msg.issuer:",
        ENUM_EQ,
    ),
    Equivalent(
        "phone",
        "if call.role is not Role.CALLER or call.peer != msg.issuer:",
        "if call.role < Role.CALLER or call.peer != msg.issuer:",
        'Role has two members and "callee" < "caller": `< Role.CALLER` holds exactly for '
        "CALLEE, as `is not` does",
    ),
    Equivalent(
        "phone",
        "elif call.state is CallState.DIALING:",
        "elif call.state == CallState.DIALING:",
        ENUM_EQ,
    ),
    Equivalent(
        "phone",
        "elif call.state is CallState.DIALING:",
        "elif call.state >= CallState.DIALING:",
        "only a caller's live call gets here, and it is DIALING or CONNECTED (never RINGING); "
        '"connected" < "dialing", so `>=` holds for DIALING alone',
    ),
    Equivalent(
        "phone",
        "if call.state is not CallState.RINGING:",
        "if call.state != CallState.RINGING:",
        ENUM_EQ,
    ),
    Equivalent(
        "phone",
        "if call.state is not CallState.RINGING:",
        "if call.state < CallState.RINGING:",
        '"ringing" sorts after every other CallState value: `< CallState.RINGING` holds '
        "exactly for the others, as `is not` does",
    ),
    Equivalent(
        "phone",
        "if call.state is not CallState.RINGING:",
        "if call.state > CallState.RINGING:",
        'nothing sorts after "ringing", so the early return goes, but the calls it let through '
        "(a dialling or connected caller, a connected callee) have neither AnsweredElsewhere "
        "nor SiblingEnded in the table: fire raises before changing anything and _fire_quietly "
        "drops it",
    ),
    Equivalent(
        "phone",
        "if msg.kind is _ACCEPT:",
        "if msg.kind == _ACCEPT:",
        ENUM_EQ,
    ),
    Equivalent(
        "phone",
        "if msg.kind is _ACCEPT:",
        "if msg.kind <= _ACCEPT:",
        '"chat.voice.accept" sorts before the other five MessageType values: `<= VOICE_ACCEPT` '
        "holds for it alone",
    ),
    Equivalent(
        "phone",
        "if call.role is Role.CALLER or isinstance(event, Vanished):",
        "if call.role == Role.CALLER or isinstance(event, Vanished):",
        ENUM_EQ,
    ),
    Equivalent(
        "phone",
        "if call.role is Role.CALLER or isinstance(event, Vanished):",
        "if call.role >= Role.CALLER or isinstance(event, Vanished):",
        'Role has two members and "callee" < "caller": `>= Role.CALLER` holds for CALLER alone',
    ),
    Equivalent(
        "phone",
        "if call.peer == identity:",
        "if call.peer <= identity:",
        "watching a call again only recomputes its gone_deadline from its own peer device's "
        "presence, which it already holds: every call is watched when it rings or is answered "
        "and whenever its peer's presence changes",
    ),
    Equivalent(
        "phone",
        "if call.peer == identity:",
        "if call.peer >= identity:",
        "watching a call again only recomputes its gone_deadline from its own peer device's "
        "presence, which it already holds: every call is watched when it rings or is answered "
        "and whenever its peer's presence changes",
    ),
    Equivalent(
        "phone",
        "except IllegalTransition as exc:",
        "except CosmicRayTestingException as exc:",
        "nothing in _fire_quietly's callers raises IllegalTransition: _on_end fires PeerEnded "
        "only on a live call, legal in every live state of both roles, and _sibling fires only "
        "on a RINGING call, where AnsweredElsewhere and SiblingEnded are legal",
    ),
    # -- protocol/proxy.py
    Equivalent(
        "proxy-core",
        "if stale is None or len(heap) > 2 * len(deadlines) + 64:  # or mostly outdated",
        "if stale is None or len(heap) <= 2 * len(deadlines) + 64:  # or mostly outdated",
        REBUILT,
    ),
    Equivalent(
        "proxy-core",
        "if stale is None or len(heap) > 2 * len(deadlines) + 64:  # or mostly outdated",
        "if stale is None or len(heap) > 2 - len(deadlines) + 64:  # or mostly outdated",
        REBUILT,
    ),
    Equivalent(
        "proxy-core",
        "if stale is None or len(heap) > 2 * len(deadlines) + 64:  # or mostly outdated",
        "if stale is None or len(heap) > 2 * len(deadlines) & 64:  # or mostly outdated",
        REBUILT,
    ),
    Equivalent(
        "proxy-core",
        "if stale is None or len(heap) > 2 * len(deadlines) + 64:  # or mostly outdated",
        "if stale is None or len(heap) > 2 * len(deadlines) ^ 64:  # or mostly outdated",
        REBUILT,
    ),
    Equivalent(
        "proxy-core",
        "if stale is None or len(heap) > 2 * len(deadlines) + 64:  # or mostly outdated",
        "if stale is None or len(heap) > 2 * len(deadlines) | 64:  # or mostly outdated",
        REBUILT,
    ),
    Equivalent(
        "proxy-core",
        "if stale is None or len(heap) > 2 * len(deadlines) + 64:  # or mostly outdated",
        "if stale is None or len(heap) > 2 * len(deadlines) + 63:  # or mostly outdated",
        REBUILT,
    ),
    Equivalent(
        "proxy-core",
        "if stale is None or len(heap) > 2 * len(deadlines) + 64:  # or mostly outdated",
        "if stale is None or len(heap) > 2 * len(deadlines) - 64:  # or mostly outdated",
        REBUILT,
    ),
    Equivalent(
        "proxy-core",
        "if stale is None or len(heap) > 2 * len(deadlines) + 64:  # or mostly outdated",
        "if stale is None or len(heap) is 2 * len(deadlines) + 64:  # or mostly outdated",
        REBUILT,
    ),
    Equivalent(
        "proxy-core",
        "if leg.live != was_live:",
        "if leg.live is not was_live:",
        BOOL_IS,
    ),
    Equivalent(
        "proxy-core",
        "if leg.state is CallState.CONNECTED",
        "if leg.state == CallState.CONNECTED",
        ENUM_EQ,
    ),
    Equivalent(
        "proxy-core",
        "if leg.state is CallState.CONNECTED",
        "if leg.state <= CallState.CONNECTED",
        '"connected" sorts before every other CallState value: `<= CallState.CONNECTED` holds '
        "for CONNECTED alone",
    ),
    Equivalent(
        "proxy-core",
        "if msg.kind is MessageType.VOICE_START:",
        "if msg.kind == MessageType.VOICE_START:",
        ENUM_EQ,
    ),
    Equivalent(
        "proxy-core",
        "elif msg.kind is MessageType.VOICE_ACCEPT:",
        "elif msg.kind == MessageType.VOICE_ACCEPT:",
        ENUM_EQ,
    ),
    Equivalent(
        "proxy-core",
        "elif msg.kind is MessageType.VOICE_ACCEPT:",
        "elif msg.kind <= MessageType.VOICE_ACCEPT:",
        '"chat.voice.accept" sorts before the other five MessageType values: `<= VOICE_ACCEPT` '
        "holds for it alone",
    ),
    Equivalent(
        "proxy-core",
        "route = ([], route[1])",
        "route = ([], route[ 0])",
        "while draining the targets are emptied, so the start is answered busy (or refused as "
        "too late) and the data, route[1], is never read",
    ),
    Equivalent(
        "proxy-core",
        "if other is not leg and other.live:",
        "if other != leg and other.live:",
        IDENTITY_EQ + " (Call)",
    ),
    Equivalent(
        "proxy-core",
        "if leg.role is Role.CALLER or isinstance(event, Vanished):",
        "if leg.role == Role.CALLER or isinstance(event, Vanished):",
        ENUM_EQ,
    ),
    Equivalent(
        "proxy-core",
        "if leg.role is Role.CALLER or isinstance(event, Vanished):",
        "if leg.role >= Role.CALLER or isinstance(event, Vanished):",
        'Role has two members and "callee" < "caller": `>= Role.CALLER` holds for CALLER alone',
    ),
    Equivalent(
        "proxy-core",
        "if failed is not None and failed is not bridge.inbound:",
        "if failed is not None and failed != bridge.inbound:",
        IDENTITY_EQ + " (Call)",
    ),
    Equivalent(
        "proxy-core",
        "if leg is bridge.inbound:",
        "if leg == bridge.inbound:",
        IDENTITY_EQ + " (Call)",
    ),
    Equivalent(
        "proxy-core",
        "elif bridge.winner == leg.peer or not any(o.live for o in bridge.outbound.values()):",
        "elif bridge.winner is leg.peer or not any(o.live for o in bridge.outbound.values()):",
        "once a winner is set every other outbound leg has ended (Superseded at the accept, "
        "never reopened), so when the winner's leg ends no outbound leg is live and `not "
        "any(...)` alone decides",
    ),
    # -- relay/store/group_commit.py
    Equivalent("group-commit", "*,", "/,", KEYWORDS),
    Equivalent(
        "group-commit",
        "self._start_soon = True",
        "self._start_soon = False",
        "then every call of a turn schedules _start, not only the first: the first of those"
        " callbacks (run after the whole turn) forms the group, the others find the writer"
        " busy or nothing queued, so the groups are the same",
    ),
    Equivalent(
        "group-commit",
        "if len(outcomes) != len(group):  # a bug in write: nobody may wait forever",
        "if len(outcomes) is not len(group):  # a bug in write: nobody may wait forever",
        SMALL_INT + ", and a group holds at most its size (256 for both stores)",
    ),
    Equivalent(
        "group-commit",
        "for (_, future), outcome in zip(group, outcomes, strict=True):",
        "for (_, future), outcome in zip(group, outcomes, strict=False):",
        "the lengths were made equal just before, so strictness never fires",
    ),
    # -- proxy/store.py
    Equivalent(
        "proxy-store",
        "def _enable_wal(db: sqlite3.Connection, attempts: int = 100) -> None:",
        "def _enable_wal(db: sqlite3.Connection, attempts: int = 101) -> None:",
        TIMING + " (a locked new file is tried 20 ms longer)",
    ),
    Equivalent(
        "proxy-store",
        "def _enable_wal(db: sqlite3.Connection, attempts: int = 100) -> None:",
        "def _enable_wal(db: sqlite3.Connection, attempts: int = 99) -> None:",
        TIMING + " (a locked new file is tried 20 ms less)",
    ),
    Equivalent(
        "proxy-store",
        'if db.execute("PRAGMA journal_mode").fetchone()[0] != "wal":',
        'if db.execute("PRAGMA journal_mode").fetchone()[ -1] != "wal":',
        ONE_COLUMN,
    ),
    Equivalent(
        "proxy-store",
        'if db.execute("PRAGMA journal_mode").fetchone()[0] != "wal":',
        'if db.execute("PRAGMA journal_mode").fetchone()[0] < "wal":',
        JOURNAL_MODES,
    ),
    Equivalent(
        "proxy-store",
        'if db.execute("PRAGMA journal_mode").fetchone()[0] != "wal":',
        'if db.execute("PRAGMA journal_mode").fetchone()[0] <= "wal":',
        JOURNAL_MODES,
    ),
    Equivalent(
        "proxy-store",
        'if db.execute("PRAGMA journal_mode").fetchone()[0] != "wal":',
        'if db.execute("PRAGMA journal_mode").fetchone()[0] is not "wal":',
        "always true: the switch is then asked for on a file in WAL already too, which"
        " SQLite answers with no change",
    ),
    Equivalent(
        "proxy-store",
        'if "locked" not in str(exc) or attempt == attempts - 1:',
        'if "locked" not in str(exc) or attempt >= attempts - 1:',
        "attempt runs over range(attempts): it is never above attempts - 1",
    ),
    Equivalent(
        "proxy-store",
        'if "locked" not in str(exc) or attempt == attempts - 1:',
        'if "locked" not in str(exc) or attempt is attempts - 1:',
        SMALL_INT + " (attempts is 100)",
    ),
    Equivalent(
        "proxy-store",
        'if "locked" not in str(exc) or attempt == attempts - 1:',
        'if "locked" not in str(exc) or attempt == attempts >> 1:',
        TIMING + " (a file that stays locked is given up on after 50 tries, not 100)",
    ),
    Equivalent(
        "proxy-store",
        'if "locked" not in str(exc) or attempt == attempts - 1:',
        'if "locked" not in str(exc) or attempt == attempts - 2:',
        TIMING + " (a file that stays locked is given up on one try sooner)",
    ),
    Equivalent("proxy-store", "CHECKPOINT_EVERY = 64", "CHECKPOINT_EVERY = 65", CADENCE),
    Equivalent("proxy-store", "CHECKPOINT_EVERY = 64", "CHECKPOINT_EVERY = 63", CADENCE),
    Equivalent(
        "proxy-store",
        "WAL_LIMIT = 2048  # frames (pages): 8 MiB of 4 KiB pages",
        "WAL_LIMIT = 2049  # frames (pages): 8 MiB of 4 KiB pages",
        WAL_BOUND,
    ),
    Equivalent(
        "proxy-store",
        "WAL_LIMIT = 2048  # frames (pages): 8 MiB of 4 KiB pages",
        "WAL_LIMIT = 2047  # frames (pages): 8 MiB of 4 KiB pages",
        WAL_BOUND,
    ),
    Equivalent(
        "proxy-store",
        "elif task.result() > WAL_LIMIT:",
        "elif task.result() >= WAL_LIMIT:",
        WAL_BOUND,
    ),
    Equivalent(
        "proxy-store",
        "def __init__(self, path: str | Path, *, poll_interval: float = 0.5) -> None:",
        "def __init__(self, path: str | Path, /, poll_interval: float = 0.5) -> None:",
        KEYWORDS,
    ),
    Equivalent(
        "proxy-store",
        "def __init__(self, path: str | Path, *, poll_interval: float = 0.5) -> None:",
        "def __init__(self, path: str | Path, *, poll_interval: float = 1.5) -> None:",
        TIMING + " (another process's binding is noticed within 1.5 s, not 0.5 s)",
    ),
    Equivalent(
        "proxy-store",
        "def __init__(self, path: str | Path, *, poll_interval: float = 0.5) -> None:",
        "def __init__(self, path: str | Path, *, poll_interval: float = -0.5) -> None:",
        TIMING + " (asyncio.sleep of a negative time returns at once: the poll never pauses)",
    ),
    Equivalent("proxy-store", "return int(row[0])", "return int(row[ -1])", ONE_COLUMN),
    Equivalent(
        "proxy-store",
        "if version != self._version:",
        "if version > self._version:",
        "PRAGMA data_version only grows while the connection is open",
    ),
    Equivalent(
        "proxy-store",
        "if version != self._version:",
        "if version is not self._version:",
        SMALL_INT + " for the versions a test reaches; past 256 wait_changed may return"
        " without a change, which its contract allows",
    ),
    Equivalent(
        "proxy-store",
        "msgspec.convert(dict(zip(_LEG_FIELDS, row, strict=True)), LegRecord) for row in rows",
        "msgspec.convert(dict(zip(_LEG_FIELDS, row, strict=False)), LegRecord) for row in rows",
        "the statement selects exactly _LEG_FIELDS: a row is never shorter or longer",
    ),
    Equivalent(
        "proxy-store",
        'return str(db.execute("SELECT holder FROM lease").fetchone()[0])',
        'return str(db.execute("SELECT holder FROM lease").fetchone()[ -1])',
        ONE_COLUMN,
    ),
    Equivalent(
        "proxy-store",
        "fenced(holder, None if row is None else row[0])",
        "fenced(holder, None if row is None else row[ -1])",
        ONE_COLUMN,
    ),
    # -- crypto/jws.py
    Equivalent(
        "jws",
        "MAX_TOKEN_BYTES = MAX_CLAIMS_BYTES * 4 // 3 + 8 * KIB",
        "MAX_TOKEN_BYTES = MAX_CLAIMS_BYTES * 4 // 3 | 8 * KIB",
        DISJOINT_BITS,
    ),
    Equivalent(
        "jws",
        "MAX_TOKEN_BYTES = MAX_CLAIMS_BYTES * 4 // 3 + 8 * KIB",
        "MAX_TOKEN_BYTES = MAX_CLAIMS_BYTES * 4 // 3 ^ 8 * KIB",
        DISJOINT_BITS,
    ),
    # -- crypto/sealed.py
    Equivalent(
        "sealed",
        "if len(key) != KEY_SIZE or len(nonce) != NONCE_SIZE:",
        "if len(key) is not KEY_SIZE or len(nonce) != NONCE_SIZE:",
        SMALL_INT,
    ),
    Equivalent(
        "sealed",
        "if len(key) != KEY_SIZE or len(nonce) != NONCE_SIZE:",
        "if len(key) != KEY_SIZE or len(nonce) is not NONCE_SIZE:",
        SMALL_INT,
    ),
    Equivalent(
        "sealed",
        "fresh = os.urandom(KEY_SIZE + NONCE_SIZE)  # one read for both",
        "fresh = os.urandom(KEY_SIZE | NONCE_SIZE)  # one read for both",
        KEY_AND_NONCE_BITS,
    ),
    Equivalent(
        "sealed",
        "fresh = os.urandom(KEY_SIZE + NONCE_SIZE)  # one read for both",
        "fresh = os.urandom(KEY_SIZE ^ NONCE_SIZE)  # one read for both",
        KEY_AND_NONCE_BITS,
    ),
    # -- relay/session.py
    Equivalent(
        "relay-session",
        "self._confirmed = 0  # the highest offset confirmed over this session",
        "self._confirmed = 1  # the highest offset confirmed over this session",
        OVERWRITTEN,
    ),
    Equivalent(
        "relay-session",
        "self._confirmed = 0  # the highest offset confirmed over this session",
        "self._confirmed = -1  # the highest offset confirmed over this session",
        OVERWRITTEN,
    ),
    Equivalent(
        "relay-session",
        "if policy is RegistrationPolicy.CLOSED:",
        "if policy == RegistrationPolicy.CLOSED:",
        ENUM_EQ + " (the config's policy is a RegistrationPolicy)",
    ),
    Equivalent(
        "relay-session",
        "if policy is RegistrationPolicy.CLOSED:",
        "if policy <= RegistrationPolicy.CLOSED:",
        "of the policies' values (open, token, closed) only 'closed' is <= 'closed'",
    ),
    Equivalent(
        "relay-session",
        "if frame.token is not None and not 0 < len(frame.token) <= MAX_TOKEN:",
        "if frame.token is not None and not 0 != len(frame.token) <= MAX_TOKEN:",
        LEN,
    ),
    Equivalent(
        "relay-session",
        "if frame.token is not None and not 0 < len(frame.token) <= MAX_TOKEN:",
        "if frame.token is not None and not 0 is not len(frame.token) <= MAX_TOKEN:",
        SMALL_INT + "; and len() is never negative",
    ),
    Equivalent(
        "relay-session",
        "if policy is RegistrationPolicy.TOKEN and frame.token is None:",
        "if policy == RegistrationPolicy.TOKEN and frame.token is None:",
        ENUM_EQ + " (the config's policy is a RegistrationPolicy)",
    ),
    Equivalent(
        "relay-session",
        "if policy is RegistrationPolicy.TOKEN and frame.token is None:",
        "if policy >= RegistrationPolicy.TOKEN and frame.token is None:",
        "of the policies' values (open, token, closed) only 'token' is >= 'token'",
    ),
    Equivalent(
        "relay-session",
        "if policy is RegistrationPolicy.TOKEN and frame.token is not None",
        "if policy == RegistrationPolicy.TOKEN and frame.token is not None",
        ENUM_EQ + " (the config's policy is a RegistrationPolicy)",
    ),
    Equivalent(
        "relay-session",
        "if policy is RegistrationPolicy.TOKEN and frame.token is not None",
        "if policy >= RegistrationPolicy.TOKEN and frame.token is not None",
        "of the policies' values (open, token, closed) only 'token' is >= 'token'",
    ),
    Equivalent(
        "relay-session",
        "if outcome is Registration.TAKEN:",
        "if outcome == Registration.TAKEN:",
        IDENTITY_EQ + " (a plain Enum member)",
    ),
    Equivalent(
        "relay-session",
        "if outcome is Registration.CREATED:",
        "if not outcome is Registration.CREATED:",
        "the branch only logs",
    ),
    Equivalent(
        "relay-session",
        "if outcome is Registration.CREATED:",
        "if outcome == Registration.CREATED:",
        "the branch only logs",
    ),
    Equivalent(
        "relay-session",
        "if outcome is Registration.CREATED:",
        "if outcome != Registration.CREATED:",
        "the branch only logs",
    ),
    Equivalent(
        "relay-session",
        "if outcome is Registration.CREATED:",
        "if outcome is not Registration.CREATED:",
        "the branch only logs",
    ),
    Equivalent(
        "relay-session",
        "close_code = CLOSE_REVOKED if code is ErrorCode.DEVICE_REVOKED else CLOSE_AUTH_FAILED",
        "close_code = CLOSE_REVOKED if code == ErrorCode.DEVICE_REVOKED else CLOSE_AUTH_FAILED",
        ENUM_EQ + " (code is an ErrorCode)",
    ),
    Equivalent(
        "relay-session",
        "close_code = CLOSE_REVOKED if code is ErrorCode.DEVICE_REVOKED else CLOSE_AUTH_FAILED",
        "close_code = CLOSE_REVOKED if code >= ErrorCode.DEVICE_REVOKED else CLOSE_AUTH_FAILED",
        "_refuse is only given device_revoked or auth_failed, and 'auth_failed' < 'device_revoked'",
    ),
    Equivalent(
        "relay-session",
        "assert identity is not None and device is not None",
        "assert identity is not None or device is not None",
        "an assert for the type checker: _authenticate sets identity and device together,"
        " before the session is active, so both hold or neither",
    ),
    Equivalent(
        "relay-session",
        "if not 0 < len(frame.envelope_id) <= MAX_ENVELOPE_ID:",
        "if not 0 != len(frame.envelope_id) <= MAX_ENVELOPE_ID:",
        LEN,
    ),
    Equivalent(
        "relay-session",
        "if not 0 < len(frame.envelope_id) <= MAX_ENVELOPE_ID:",
        "if not 0 is not len(frame.envelope_id) <= MAX_ENVELOPE_ID:",
        SMALL_INT + "; and len() is never negative",
    ),
    Equivalent(
        "relay-session",
        "if refusal[0] is not ErrorCode.UNKNOWN_RECIPIENT and (",
        "if refusal[0] != ErrorCode.UNKNOWN_RECIPIENT and (",
        ENUM_EQ + " (a refusal's code is an ErrorCode)",
    ),
    Equivalent(
        "relay-session",
        "if refusal[0] is not ErrorCode.UNKNOWN_RECIPIENT and (",
        "if refusal[0] < ErrorCode.UNKNOWN_RECIPIENT and (",
        "a Send is refused only for unknown_recipient, not_permitted, stale_devices or"
        " expired, and the other three sort before 'unknown_recipient'",
    ),
    Equivalent(
        "relay-session",
        "if code is ErrorCode.UNKNOWN_IDENTITY:",
        "if code == ErrorCode.UNKNOWN_IDENTITY:",
        ENUM_EQ + " (code is an ErrorCode)",
    ),
    Equivalent(
        "relay-session",
        "if code is ErrorCode.UNKNOWN_IDENTITY:",
        "if code >= ErrorCode.UNKNOWN_IDENTITY:",
        "_may_message refuses only with unknown_identity or not_permitted,"
        " and 'not_permitted' < 'unknown_identity'",
    ),
    Equivalent(
        "relay-session",
        "if body.op is KeyOp.REVOKE:",
        "if body.op == KeyOp.REVOKE:",
        ENUM_EQ + " (an entry's op is a KeyOp)",
    ),
    Equivalent(
        "relay-session",
        "if body.op is KeyOp.REVOKE:",
        "if body.op >= KeyOp.REVOKE:",
        "a KeyOp is 'add' or 'revoke', and 'add' < 'revoke'",
    ),
    Equivalent(
        "relay-session",
        "if result.status is StoreStatus.CONFLICT:",
        "if result.status == StoreStatus.CONFLICT:",
        IDENTITY_EQ + " (a plain Enum member)",
    ),
    Equivalent(
        "relay-session",
        "if result.status is StoreStatus.STORED:",
        "if result.status == StoreStatus.STORED:",
        IDENTITY_EQ + " (a plain Enum member)",
    ),
    Equivalent(
        "relay-session",
        "len(refs) == len(expected)",
        "len(refs) <= len(expected)",
        "the sets are compared too: set(refs) == expected means len(refs) >= len(expected),"
        " so <= holds only where == does",
    ),
    Equivalent(
        "relay-session",
        "and {(r.identity, r.device, r.identity_key) for r in refs} == expected",
        "and {(r.identity, r.device, r.identity_key) for r in refs} >= expected",
        "the lengths are equal first: a set of len(refs) things that contains all of the"
        " len(refs) expected ones is them",
    ),
    # -- relay/core.py
    Equivalent("relay-core", "*,", "/,", KEYWORDS),
    Equivalent(
        "relay-core",
        "if answer is _NOT_IN_MEMORY:",
        "if answer == _NOT_IN_MEMORY:",
        "the sentinel is a bare object(), whose == is identity; no answer (a KeyChain,"
        " a set, a dict, a number, None) claims to equal an object of another type",
    ),
    Equivalent(
        "relay-core",
        "set(self._handlers), timeout=self.config.close_timeout + 1",
        "set(self._handlers), timeout=self.config.close_timeout / 1",
        "the margin close() gives connections past their own close_timeout: " + TIMING,
    ),
    Equivalent(
        "relay-core",
        "set(self._handlers), timeout=self.config.close_timeout + 1",
        "set(self._handlers), timeout=self.config.close_timeout + 2",
        "the margin close() gives connections past their own close_timeout: " + TIMING,
    ),
    Equivalent(
        "relay-core",
        "await asyncio.gather(*self._inflight, return_exceptions=True)",
        "await asyncio.gather(*self._inflight, return_exceptions=False)",
        "every task in _inflight runs under _logged, which catches Exception, and none is"
        " ever cancelled: nothing is raised into the gather",
    ),
    Equivalent(
        "relay-core",
        "if self._preauth[source] >= self.config.preauth_per_source:",
        "if self._preauth[source] == self.config.preauth_per_source:",
        "the count grows by one, only while below the limit: it never exceeds it",
    ),
    Equivalent(
        "relay-core",
        "if self._preauth[source] >= self.config.preauth_per_source:",
        "if self._preauth[source] is self.config.preauth_per_source:",
        "the count never exceeds the limit, and " + SMALL_INT + " (the default limit is 32)",
    ),
    Equivalent(
        "relay-core",
        "while session.phase is Phase.HANDSHAKE and not conn.closing:",
        "while session.phase == Phase.HANDSHAKE and not conn.closing:",
        ENUM_EQ,
    ),
    Equivalent(
        "relay-core",
        "while session.phase is Phase.ACTIVE and not conn.closing:",
        "while session.phase == Phase.ACTIVE and not conn.closing:",
        ENUM_EQ,
    ),
    Equivalent(
        "relay-core",
        "while session.phase is Phase.ACTIVE and not conn.closing:",
        "while session.phase >= Phase.ACTIVE and not conn.closing:",
        ACTIVE_OR_CLOSING,
    ),
    Equivalent(
        "relay-core",
        "while session.phase is Phase.ACTIVE and not conn.closing:",
        "while session.phase is Phase.ACTIVE or not conn.closing:",
        ACTIVE_OR_CLOSING,
    ),
    Equivalent(
        "relay-core",
        'which = "device" if device_budget.wait(now) >= wait else "identity"',
        'which = "device" if device_budget.wait(now) == wait else "identity"',
        "wait is the largest of the buckets' waits: the device's is >= it only when equal",
    ),
    Equivalent(
        "relay-core",
        "if self._preauth[source] <= 0:",
        "if self._preauth[source] == 0:",
        "the count falls by one per connection it counted: it never goes below 0",
    ),
    Equivalent(
        "relay-core",
        "if conn.identity is None or conn.device is None:",
        "if conn.identity is None and conn.device is None:",
        "a connection's identity and device are set together when it authenticates",
    ),
    Equivalent(
        "relay-core",
        "if node != self.node:",
        "if node is not self.node:",
        "no bus hands a node its own events (MemoryHub skips the sender, RedisBus drops its own"
        " node's), so every SessionOpened received names another node, and two unequal strings"
        " are never one object",
    ),
    Equivalent(
        "relay-core",
        "if whose == identity and device not in chain.active:",
        "if whose <= identity and device not in chain.active:",
        REVOKES_IDENTITY,
    ),
    Equivalent(
        "relay-core",
        "if whose == identity and device not in chain.active:",
        "if whose >= identity and device not in chain.active:",
        REVOKES_IDENTITY,
    ),
    Equivalent(
        "relay-core",
        "async def health(self, timeout: float = 2.0) -> dict[str, object]:",
        "async def health(self, timeout: float = 1.0) -> dict[str, object]:",
        "how long /health waits for the store by default: " + TIMING,
    ),
    Equivalent(
        "relay-core",
        "async def health(self, timeout: float = 2.0) -> dict[str, object]:",
        "async def health(self, timeout: float = 3.0) -> dict[str, object]:",
        "how long /health waits for the store by default: " + TIMING,
    ),
    Equivalent(
        "relay-core",
        "version = chain.version if chain is not None else 0",
        "version = chain.version if chain is not None else -1",
        "a Send is routed by the node its sender is authenticated on, which caches the"
        " sender's chain from then on (dropped only if the identity leaves the store): the"
        " else branch never runs",
    ),
    Equivalent(
        "relay-core",
        "version = chain.version if chain is not None else 0",
        "version = chain.version if chain is not None else 1",
        "a Send is routed by the node its sender is authenticated on, which caches the"
        " sender's chain from then on (dropped only if the identity leaves the store): the"
        " else branch never runs",
    ),
    Equivalent(
        "relay-core",
        "set(self._handlers), timeout=self.config.close_timeout + 1",
        "set(self._handlers), timeout=self.config.close_timeout - 1",
        "the margin close() gives connections past their own close_timeout: " + TIMING,
    ),
    Equivalent(
        "relay-core",
        "set(self._handlers), timeout=self.config.close_timeout + 1",
        "set(self._handlers), timeout=self.config.close_timeout * 1",
        "the margin close() gives connections past their own close_timeout: " + TIMING,
    ),
    Equivalent(
        "relay-core",
        "set(self._handlers), timeout=self.config.close_timeout + 1",
        "set(self._handlers), timeout=self.config.close_timeout // 1",
        "the margin close() gives connections past their own close_timeout: " + TIMING,
    ),
    Equivalent(
        "relay-core",
        "set(self._handlers), timeout=self.config.close_timeout + 1",
        "set(self._handlers), timeout=self.config.close_timeout ** 1",
        "the margin close() gives connections past their own close_timeout: " + TIMING,
    ),
    Equivalent(
        "relay-core",
        "set(self._handlers), timeout=self.config.close_timeout + 1",
        "set(self._handlers), timeout=self.config.close_timeout + 0",
        "the margin close() gives connections past their own close_timeout: " + TIMING,
    ),
    Equivalent(
        "relay-core",
        "if session.phase is Phase.HANDSHAKE:",
        "if session.phase == Phase.HANDSHAKE:",
        ENUM_EQ,
    ),
    Equivalent(
        "relay-core",
        "if session.phase is Phase.HANDSHAKE:",
        "if session.phase >= Phase.HANDSHAKE:",
        "of the phases' values (handshake, active, closed) only 'handshake' is >= 'handshake'",
    ),
    Equivalent(
        "relay-core",
        "while session.phase is Phase.HANDSHAKE and not conn.closing:",
        "while session.phase >= Phase.HANDSHAKE and not conn.closing:",
        "of the phases' values (handshake, active, closed) only 'handshake' is >= 'handshake'",
    ),
    Equivalent(
        "relay-core",
        "while session.phase is Phase.ACTIVE and not conn.closing:",
        "while session.phase <= Phase.ACTIVE and not conn.closing:",
        "of the phases' values (handshake, active, closed) only 'active' is <= 'active'",
    ),
    # -- client/state.py
    Equivalent(
        "client-state",
        "def _open(self, path: str | Path, *, identity: str, device: str) -> None:",
        "def _open(self, path: str | Path, /, identity: str, device: str) -> None:",
        KEYWORDS + " (its one caller, __init__)",
    ),
    Equivalent(
        "client-state",
        "if self._writer is not self._db:",
        "if self._writer != self._db:",
        IDENTITY_EQ + " (sqlite3.Connection)",
    ),
    Equivalent(
        "client-state",
        "return str(rows[0][0]) if rows else None",
        "return str(rows[ -1][0]) if rows else None",
        ONE_ROW + " (meta.key)",
    ),
    Equivalent(
        "client-state",
        "return str(rows[0][0]) if rows else None",
        "return str(rows[0][ -1]) if rows else None",
        ONE_ROW + " (meta.key)",
    ),
    Equivalent(
        "client-state",
        "return _typed(rows[0][0], str) if rows else None",
        "return _typed(rows[ -1][0], str) if rows else None",
        ONE_ROW + " (olm_account.id)",
    ),
    Equivalent(
        "client-state",
        "return _typed(rows[0][0], str) if rows else None",
        "return _typed(rows[0][ -1], str) if rows else None",
        ONE_ROW + " (olm_account.id)",
    ),
    Equivalent(
        "client-state",
        "SessionRow(*(_typed(v, t) for v, t in zip(row, _SESSION_TYPES, strict=True)))",
        "SessionRow(*(_typed(v, t) for v, t in zip(row, _SESSION_TYPES, strict=False)))",
        "the SELECT names six columns and _SESSION_TYPES holds six types: the zip is never uneven",
    ),
    Equivalent(
        "client-state",
        "return _entries_decoder.decode(rows[0][0]) if rows else None",
        "return _entries_decoder.decode(rows[ -1][0]) if rows else None",
        ONE_ROW + " (chains.identity)",
    ),
    Equivalent(
        "client-state",
        "return _entries_decoder.decode(rows[0][0]) if rows else None",
        "return _entries_decoder.decode(rows[0][ -1]) if rows else None",
        ONE_ROW + " (chains.identity)",
    ),
    Equivalent(
        "client-state",
        "elif self._thread is None or self._until_checkpoint > 0:",
        "elif self._thread is None or self._until_checkpoint != 0:",
        "with a thread the count only goes down while above 0 and is reset at 0: never negative",
    ),
    Equivalent(
        "client-state",
        "if self._unwritten_chains.get(identity) is entries:",
        "if self._unwritten_chains.get(identity) == entries:",
        "they differ only when a chain equal to the one just written was saved again"
        " meanwhile: load_chain then answers an equal list, from memory or from the file",
    ),
    Equivalent(
        "client-state",
        "if cursor.rowcount:",
        "if not cursor.rowcount:",
        "only whether a debug line is logged",
    ),
    Equivalent(
        "client-state",
        "_CHUNK = 256",
        "_CHUNK = 257",
        "only how the rows are split into INSERTs: 257 x 3 parameters is far below SQLite's"
        " limit, every row is written alike",
    ),
    Equivalent(
        "client-state",
        "_CHUNK = 256",
        "_CHUNK = 255",
        "only how the rows are split into INSERTs: every row is written alike",
    ),
    # -- relay/connection.py
    *(
        Equivalent(
            "relay-connection",
            "self.authenticated_at = 0.0",
            f"self.authenticated_at = {value}",
            "attach() sets it before the connection joins the relay's sessions, and only"
            " connections in the sessions are compared by it: the initial value is never read",
        )
        for value in ("1.0", "-1.0")
    ),
    Equivalent(
        "relay-connection",
        "assert self.identity is not None and self.device is not None",
        "assert self.identity is not None or self.device is not None",
        "attach() sets identity and device together, and nothing unsets either: both are"
        " None or neither is",
    ),
    Equivalent(
        "relay-connection",
        "if self._ctx.push_in_sequence and deliver.offset > self.cursor + 1:",
        "if self._ctx.push_in_sequence and deliver.offset > self.cursor | 1:",
        "it only sends the next offset after an odd cursor through a read of the store"
        " instead of from the push: the same row, in the same place",
    ),
    # -- relay/store/sqlite.py
    Equivalent(
        "relay-store",
        "_INSERT_SIZES = (64, 16, 4, 1)",
        "_INSERT_SIZES = ( 65, 16, 4, 1)",
        "only how a batch of envelopes is split into INSERTs: 65 x 8 parameters is far"
        " below SQLite's limit, and every envelope is written alike",
    ),
    Equivalent(
        "relay-store",
        "chunk += [chunk[-1]] * (size - len(chunk))  # repeats change nothing",
        "chunk += [chunk[not 1]] * (size - len(chunk))  # repeats change nothing",
        "the padding only repeats an id the lookup asks for already; any of the chunk's is"
        " as good as its last",
    ),
    Equivalent(
        "relay-store",
        "return int(row[0]) if row else 0",
        "return int(row[ -1]) if row else 0",
        ONE_COLUMN,
    ),
    Equivalent(
        "relay-store",
        "if cursor.rowcount == 0:",
        "if cursor.rowcount <= 0:",
        ROWCOUNT,
    ),
    Equivalent(
        "relay-store",
        "if used.rowcount == 0:",
        "if used.rowcount <= 0:",
        ROWCOUNT,
    ),
    Equivalent(
        "relay-store",
        "if row is None or row[0] != identity_key.key:",
        "if row is None or row[ -1] != identity_key.key:",
        ONE_COLUMN,
    ),
    Equivalent(
        "relay-store",
        "key = None if row is None else row[0]",
        "key = None if row is None else row[ -1]",
        ONE_COLUMN,
    ),
    Equivalent(
        "relay-store",
        "if body.op is KeyOp.ADD:",
        "if body.op == KeyOp.ADD:",
        ENUM_EQ,
    ),
    Equivalent(
        "relay-store",
        "if body.op is KeyOp.ADD:",
        "if body.op <= KeyOp.ADD:",
        "a KeyOp is 'add' or 'revoke', and only 'add' <= 'add'",
    ),
)
