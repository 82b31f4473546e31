"""A simulated relay for the sans-I/O call machines.

Nodes (phones and proxies) are wired through a list of in-flight envelopes: a ``Send`` to
an identity becomes one envelope per device of that identity, plus a copy for each other
device of the sender (the relay's fan-out). Tests deliver envelopes in any order, hold,
duplicate or drop them, and move time: :meth:`Net.advance` ticks every node at each
deadline on the way, as an I/O layer that honours ``next_deadline()`` would.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from parley.ids import Address, DeviceId, IdentityId
from parley.protocol.call import CallState
from parley.protocol.call_io import (
    Ended,
    Fail,
    Output,
    PeerBack,
    PeerGone,
    PhoneInput,
    Received,
    Send,
    Tick,
)
from parley.protocol.call_phone import Phone, PhoneConfig
from parley.protocol.messages import MessageType
from parley.protocol.proxy import Proxy

Node = Phone | Proxy


def addr(identity: str, device: str) -> Address:
    return Address(IdentityId(identity), DeviceId(device))


@dataclass(frozen=True)
class Envelope:
    sender: Address
    to: Address
    send: Send
    iat: int

    @property
    def kind(self) -> MessageType:
        return self.send.kind


@dataclass
class Net:
    now: float = 1000.0
    nodes: dict[Address, Node] = field(default_factory=dict)
    pending: list[Envelope] = field(default_factory=list)
    outputs: dict[Address, list[Output]] = field(default_factory=lambda: defaultdict(list))
    offline: set[Address] = field(default_factory=set)
    delivered: list[Envelope] = field(default_factory=list)

    def phone(self, identity: str, device: str, config: PhoneConfig | None = None) -> Phone:
        phone = Phone(IdentityId(identity), DeviceId(device), config)
        self.nodes[addr(identity, device)] = phone
        return phone

    def proxy(self, identity: str, device: str, operators: tuple[str, ...] = ()) -> Proxy:
        proxy = Proxy(IdentityId(identity), DeviceId(device), operators=map(IdentityId, operators))
        self.nodes[addr(identity, device)] = proxy
        return proxy

    def at(self, address: Address) -> Phone:
        node = self.nodes[address]
        assert isinstance(node, Phone)
        return node

    def devices(self, identity: IdentityId) -> list[Address]:
        return [a for a in self.nodes if a.identity == identity]

    def do(self, at: Address, event: PhoneInput) -> list[Output]:
        """Feed ``event`` to the node at ``at`` and put what it sends in flight."""
        node = self.nodes[at]
        if isinstance(node, Proxy):
            assert isinstance(event, Fail | Received | Tick | PeerGone | PeerBack)
            outputs = node.handle(event)
        else:
            outputs = node.handle(event)
        self.outputs[at].extend(outputs)
        for output in outputs:
            if isinstance(output, Send):
                self._route(at, output)
        return outputs

    def _route(self, sender: Address, send: Send) -> None:
        copies = [a for a in self.devices(sender.identity) if a != sender]
        for to in self.devices(send.recipient) + copies:
            self.pending.append(Envelope(sender, to, send, int(self.now)))

    def deliverable(self) -> list[Envelope]:
        return [
            e for e in self.pending if e.to not in self.offline and e.sender not in self.offline
        ]

    def deliver(self, envelope: Envelope) -> list[Output]:
        self.pending.remove(envelope)
        self.delivered.append(envelope)
        send = envelope.send
        received = Received(
            now=self.now,
            kind=send.kind,
            issuer=envelope.sender.identity,
            device=envelope.sender.device,
            iat=envelope.iat,
            cid=send.cid,
            call_id=send.call_id,
            peer_info=send.peer_info,
            data=send.data,
        )
        return self.do(envelope.to, received)

    def take(self, to: Address, kind: MessageType, sender: Address | None = None) -> Envelope:
        """The first in-flight envelope for ``to`` of ``kind`` (and from ``sender``)."""
        for e in self.pending:
            if e.to == to and e.kind is kind and sender in (None, e.sender):
                return e
        raise AssertionError(f"no {kind} in flight to {to}: {self.pending}")

    def deliver_one(
        self, to: Address, kind: MessageType, sender: Address | None = None
    ) -> list[Output]:
        return self.deliver(self.take(to, kind, sender))

    def flush(self) -> None:
        """Deliver everything deliverable, oldest first, including what that sends."""
        while ready := self.deliverable():
            self.deliver(ready[0])

    def tick_all(self) -> None:
        for at in list(self.nodes):
            self.do(at, Tick(now=self.now))

    def next_deadline(self) -> float | None:
        deadlines = [d for n in self.nodes.values() if (d := n.next_deadline()) is not None]
        return min(deadlines, default=None)

    def advance(self, seconds: float) -> None:
        target = self.now + seconds
        while (deadline := self.next_deadline()) is not None and deadline <= target:
            self.now = max(self.now, deadline)
            self.tick_all()
        self.now = target

    def ended(self, at: Address) -> list[Ended]:
        return [o for o in self.outputs[at] if isinstance(o, Ended)]

    def state(self, at: Address, call_id: str) -> CallState:
        node = self.at(at)
        call = node.calls.get(call_id)
        if call is not None:
            return call.state
        return CallState.ENDED if node.record(call_id) is not None else CallState.NEW
