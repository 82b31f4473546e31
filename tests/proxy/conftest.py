"""The component's unit tests run real clients against the relay core in-process."""

from tests.client.conftest import relay, world

__all__ = ["relay", "world"]
