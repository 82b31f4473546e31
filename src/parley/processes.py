"""Child processes that Parley starts: a relay for the demo, the benchmarks and the tests.

A :class:`ChildProcess` starts a command, waits for the line that says it is ready, keeps
reading its output (so a full pipe never stalls it) and stops it with SIGTERM, then
SIGKILL if it does not exit in time.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType

from parley.errors import ChildProcessFailed


class ChildProcess:
    def __init__(
        self,
        argv: Sequence[str],
        ready: re.Pattern[str],
        *,
        name: str,
        on_line: Callable[[str], None] | None = None,
        ready_timeout: float = 20.0,
        cwd: Path | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.argv = list(argv)
        self._env = None if env is None else dict(env)
        self.name = name
        self._ready_pattern = ready
        self._on_line = on_line
        self._ready_timeout = ready_timeout
        self._cwd = cwd
        self._proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._ready: asyncio.Future[re.Match[str]] | None = None
        self.lines: list[str] = []

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise ChildProcessFailed(f"{self.name} is not running")
        return self._proc.pid

    async def start(self) -> re.Match[str]:
        """Start and wait for the ready line; returns its match."""
        self._ready = asyncio.get_running_loop().create_future()
        self._proc = await asyncio.create_subprocess_exec(
            *self.argv,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            stdin=asyncio.subprocess.DEVNULL,
            cwd=self._cwd,
            env=self._env,
        )
        self._reader = asyncio.create_task(self._read(self._proc, self._ready))
        try:
            return await asyncio.wait_for(asyncio.shield(self._ready), self._ready_timeout)
        except TimeoutError:
            await self.stop()
            tail = "\n".join(self.lines[-20:])
            raise ChildProcessFailed(f"{self.name} was not ready in time:\n{tail}") from None
        except ChildProcessFailed:
            await self.stop()
            raise

    async def _read(
        self, proc: asyncio.subprocess.Process, ready: asyncio.Future[re.Match[str]]
    ) -> None:
        assert proc.stdout is not None
        async for raw in proc.stdout:
            line = raw.decode(errors="replace").rstrip("\n")
            self.lines.append(line)
            if self._on_line is not None:
                self._on_line(line)
            if not ready.done() and (match := self._ready_pattern.search(line)):
                ready.set_result(match)
        if not ready.done():
            tail = "\n".join(self.lines[-20:])
            ready.set_exception(ChildProcessFailed(f"{self.name} exited early:\n{tail}"))

    async def wait(self) -> int | None:
        """Until the process exits by itself; its exit code (its output read to the end)."""
        if self._proc is None:
            return None
        code = await self._proc.wait()
        if self._reader is not None:
            await self._reader
        return code

    async def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout``; returns the exit code."""
        proc = self._proc
        if proc is None:
            return None
        if self._ready is not None and not self._ready.done():
            # Nobody waits for the ready line any more (start() was cancelled, or it
            # timed out): the reader must not leave an error that nobody retrieves.
            self._ready.cancel()
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), timeout)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        if self._reader is not None:
            await self._reader
        return proc.returncode

    async def kill(self) -> None:
        """SIGKILL at once: a crash, as far as the child can tell."""
        if self._proc is not None and self._proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self._proc.kill()
        await self.stop()

    async def __aenter__(self) -> ChildProcess:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()


_RELAY_READY = re.compile(r"listening on (wss?://\S+)")


class RelayProcess(ChildProcess):
    """``parley relay`` in its own process, on a free port unless one is given."""

    def __init__(
        self,
        data_dir: Path,
        *,
        port: int = 0,
        extra_args: Sequence[str] = (),
        on_line: Callable[[str], None] | None = None,
    ) -> None:
        super().__init__(
            [
                sys.executable,
                "-m",
                "parley",
                "relay",
                "--data-dir",
                str(data_dir),
                "--port",
                str(port),
                *extra_args,
            ],
            _RELAY_READY,
            name="relay",
            on_line=on_line,
        )
        self.data_dir = data_dir
        self.url = ""

    async def start(self) -> re.Match[str]:
        match = await super().start()
        self.url = match.group(1)
        return match

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    @property
    def http_url(self) -> str:
        return "http" + self.url.removeprefix("ws")

    async def __aenter__(self) -> RelayProcess:
        await self.start()
        return self
