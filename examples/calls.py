"""Calls with the rules of the call state machine: place one, or answer one.

    python examples/calls.py answer bob.json ALICE_ID
    python examples/calls.py place alice.json BOB_ID

Both sides of a direct call permit each other, so each permits the other first.
"""

import asyncio
import sys

from parley import Client, Connected, PhoneConfig


async def place(credentials: str, peer: str) -> None:
    client = Client.from_credentials(credentials)
    calls = client.calls(PhoneConfig(ring_lifetime=60, grace=30, auto_busy=True))  # before connect
    async with client:
        await client.connections.permit(peer)
        call = await calls.place(peer, "offer-sdp")  # lifetime=, cid= optional
        async for event in call.events():  # Dialing, Connected, Ended
            print(type(event).__name__)
            if isinstance(event, Connected):
                print("answer:", event.peer_info)
                await call.hangup()
        record = await call.wait_ended()  # also call.record once it ended
        print(record.reason, record.duration)  # EndReason, seconds connected


async def answer(credentials: str, peer: str) -> None:
    client = Client.from_credentials(credentials)
    calls = client.calls()
    async with client:
        await client.connections.permit(peer)
        print("ready as", client.id, flush=True)
        async for incoming in calls.incoming():  # each IncomingCall rings here
            call = await incoming.accept("answer-sdp")  # or .busy() / .decline()
            print("ended:", (await call.wait_ended()).reason, flush=True)
            return


if __name__ == "__main__":
    role, credentials, peer = sys.argv[1:4]
    asyncio.run(place(credentials, peer) if role == "place" else answer(credentials, peer))
