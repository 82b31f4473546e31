"""The call records as a table, for ``parley calls`` and the demo."""

from __future__ import annotations

import time
from collections.abc import Iterable

from rich.table import Table

from parley.proxy.records import LegRecord


def records_table(records: Iterable[LegRecord], *, title: str = "call records") -> Table:
    """One row per leg: both legs of a call next to each other, in the order they ended."""
    table = Table(title=title, title_justify="left")
    for column in ("cid", "call_id", "leg", "caller", "callee", "started", "answered"):
        table.add_column(column)
    table.add_column("duration", justify="right")
    table.add_column("reason")
    for r in records:
        table.add_row(
            r.cid,
            r.call_id,
            r.leg.value,
            r.caller,
            r.callee,
            _clock(r.started),
            "-" if r.answered is None else _clock(r.answered),
            f"{r.duration:.1f} s",
            r.reason.value,
        )
    return table


def _clock(at: float) -> str:
    """Local time of day to the millisecond: records are read beside the transcript."""
    return time.strftime("%H:%M:%S", time.localtime(at)) + f".{int(at % 1 * 1000):03d}"
