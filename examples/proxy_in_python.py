"""The calling proxy in Python: bind a call and a hunt group, run, print the records.

    python examples/proxy_in_python.py CID OPERATOR_ID CUSTOMER_ID OP1 OP2

Run in the folder holding the app's credentials, app.json; the store is app.proxy.db.
"""

import asyncio
import sys

from parley.client import Client
from parley.proxy import CallProxy, SqliteProxyStore


async def main(cid: str, operator_id: str, customer_id: str, op1: str, op2: str) -> None:
    store = SqliteProxyStore("app.proxy.db")
    async with CallProxy(Client.from_credentials("app.json"), store) as proxy:  # connects
        await proxy.bind(cid, operator=operator_id, customer=customer_id, operator_name="Bob")
        await proxy.bind_pool("sales", customer=customer_id, operators=[op1, op2])
        # Calls for both are forwarded while this block runs: an app stays here until
        # it shuts down, as `parley proxy` does.
    print(await store.records())
    await store.close()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:6]))
