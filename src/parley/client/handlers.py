"""Handler registry: one handler per message type, a later subscription replaces it.

Beside the handlers, *observers* see every verified message, including the copies of
what this identity's other devices sent (``own_copy``), with the signing device: the
call layer and the proxy build on them, without taking the app's ``on_*`` handlers.

Handlers and observers run after the client records a message as processed: a crash
can lose a call to them but never repeats one (at most once). An observer added with
``before_record=True`` runs *before* that record instead (at least once): if the client
stops or dies while it runs, or before the record is written, it sees the message again
after the restart. It is for observers that keep their own record of what they handled
in their own store (the calling proxy), and so can skip a repeat by message id.
Such an observer may also give ``until_saved``: it then returns as soon as it has taken
a message in, and the client records no message before ``until_saved()`` has returned,
called once for all the messages taken in since its last call. So a burst of deliveries
costs the observer's store one write, not one each.

Handlers receive ``(issuer, payload)`` and may be plain functions or coroutine
functions (DESIGN.md §2). An exception in a handler is logged and never reaches the
client's tasks: one bad message must not stop the inbox.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import NamedTuple, TypeAlias, TypeVar, cast

from parley.errors import ConfigurationError
from parley.protocol.messages import Message, Payload

log = logging.getLogger(__name__)

P = TypeVar("P", bound=Message)
Handler: TypeAlias = Callable[[str, P], Awaitable[None] | None]


class Observed(NamedTuple):
    message: Message
    issuer: str
    device: str  # the issuer's device that signed the message
    own_copy: bool  # sent by another device of this identity, not to it


Observer: TypeAlias = Callable[[Observed], Awaitable[None] | None]
Saver: TypeAlias = Callable[[], Awaitable[None]]


class Handlers:
    def __init__(self) -> None:
        self._by_type: dict[type[Payload], Handler[Message]] = {}
        self._observers: list[Observer] = []
        self._before_record: list[Observer] = []
        self._savers: list[Saver] = []

    def subscribe(self, cls: type[P], handler: Handler[P]) -> None:
        def call(issuer: str, message: Message) -> Awaitable[None] | None:
            # dispatch() looks handlers up by type(message), so this is always a P.
            return handler(issuer, cast(P, message))

        if cls in self._by_type:
            log.debug("replacing the handler for %s", cls.__name__)
        self._by_type[cls] = call

    def observe(
        self, observer: Observer, *, before_record: bool = False, until_saved: Saver | None = None
    ) -> Callable[[], None]:
        """Add an observer (``before_record``, ``until_saved``: see the module); returns a
        function that removes it."""
        if until_saved is not None and not before_record:
            raise ConfigurationError("until_saved is for an observer that runs before the record")
        observers = self._before_record if before_record else self._observers
        observers.append(observer)
        if until_saved is not None:
            self._savers.append(until_saved)

        def remove() -> None:
            observers.remove(observer)
            if until_saved is not None:
                self._savers.remove(until_saved)

        return remove

    @property
    def saving(self) -> bool:
        """Whether some observer saves what it took in before messages are recorded."""
        return bool(self._savers)

    async def saved(self) -> None:
        """Return once every observer with ``until_saved`` has saved what it took in."""
        for saver in list(self._savers):
            try:
                await saver()
            except Exception:  # like an observer's: logged, and the record goes on
                log.exception("saving the messages observed before the record raised")

    async def notify(self, observed: Observed, *, before_record: bool = False) -> None:
        """Run the observers (``before_record``: those that run before the record). An
        exception is logged and the next one runs; a cancellation goes through, so the
        record after it is not written."""
        for observer in list(self._before_record if before_record else self._observers):
            try:
                result = observer(observed)
                if inspect.isawaitable(result):
                    await result
            except Exception:
                log.exception(
                    "observer of %s from %s raised", observed.message.typ, observed.issuer
                )

    async def dispatch(self, issuer: str, message: Message) -> bool:
        """Run the handler for ``message``; False if none is subscribed."""
        handler = self._by_type.get(type(message))
        if handler is None:
            return False
        try:
            result = handler(issuer, message)
            if inspect.isawaitable(result):
                await result
        except Exception:
            log.exception("handler for %s from %s raised", message.typ, issuer)
        return True
