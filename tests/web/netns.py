"""A network of the loopback interface only, for the browser tests.

Chromium gathers ICE candidates on every interface and offers no setting to stop it.
The server cuts the page's SDP to the allowed hosts (``ice.restrict_candidates``), so
the peer is only ever told of 127.0.0.1; but Chromium still sends its connectivity
checks to that address from each of its sockets, the one on the machine's network
address too, and the peer then learns that address as a peer-reflexive candidate and
answers it. Under test, nothing may be sent to any address but loopback.

So where the tests may (Linux, with CAP_SYS_ADMIN: root in a container), a test module
runs in a network namespace of its own that holds nothing but a loopback interface:
the thread that runs the tests moves into it, so every socket it opens and every
process it starts (the relay, Playwright's driver, Chromium) lives there, and it moves
back to the original namespace afterwards. Elsewhere the tests run in the machine's
namespace, with the SDP restriction as the only guard.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import logging
import os
import socket
import struct
import sys
from collections.abc import Iterator

log = logging.getLogger(__name__)

CLONE_NEWNET = 0x40000000
SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1


@contextlib.contextmanager
def loopback_only() -> Iterator[bool]:
    """Move this thread into a new network namespace with loopback up, and back after;
    yields whether it did (False: it could not, and nothing changed)."""
    if sys.platform != "linux":
        yield False
        return
    libc = ctypes.CDLL(None, use_errno=True)
    try:
        original = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    except OSError as exc:
        log.warning("no network namespace isolation: %s", exc)
        yield False
        return
    try:
        if libc.unshare(CLONE_NEWNET) != 0:
            log.warning(
                "no network namespace isolation (unshare: %s)", os.strerror(ctypes.get_errno())
            )
            yield False
            return
        try:
            _loopback_up()
            yield True
        finally:
            if libc.setns(original, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "cannot return to the original network")
    finally:
        os.close(original)


def _loopback_up() -> None:
    # A new namespace's loopback interface starts down: SIOCSIFFLAGS with IFF_UP.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = struct.pack("16sh", b"lo", 0)
        flags = struct.unpack("16sh", fcntl.ioctl(sock, SIOCGIFFLAGS, request))[1]
        fcntl.ioctl(sock, SIOCSIFFLAGS, struct.pack("16sh", b"lo", flags | IFF_UP))
