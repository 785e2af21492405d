"""The worked example of docs/testing.md: an inventory service tested under crashes and partitions.

One partition per product ("product:<sku>"); the handler reserves stock only if enough is left. Hypothesis
draws the customers' orders and a fault schedule; after healing, every product must add up: stock left plus
stock reserved is what was put in, and every customer who got an answer was told what really happened.
"""

from __future__ import annotations

import os
import weakref
from typing import Any

import trio
from hypothesis import given, settings
from hypothesis import strategies as st

import borough
from borough.testing import Fault, SimCluster, check_replicas, heal_all, run_faults, run_simulation
from borough.testing.strategies import fault_schedules

# --- the application -------------------------------------------------------------------------------------

_locks: weakref.WeakKeyDictionary[Any, dict[str, trio.Lock]] = weakref.WeakKeyDictionary()


async def inventory(request: borough.Request) -> Any:
    """{"op": "restock", "id": id, "qty": n} adds stock; {"op": "reserve", "order": id, "qty": n} reserves n units if
    that many are left and answers True, else False; {"op": "audit"} answers the stock and every order's
    answer, read together. Every write to a product goes through this handler."""
    product = request.partition
    body = request.body
    # Read-then-write must not interleave with another request's: one lock per product on this node (the
    # handler runs on the product's leader; if leadership moves, the write fails and the caller is told the
    # outcome is unknown).
    lock = _locks.setdefault(request.node, {}).setdefault(product.name, trio.Lock())
    async with lock:
        if body["op"] == "restock":  # applied once per restock id, however often it is sent
            key = f"restock:{body['id']}"
            if await product.get(key, default=None) is None:
                stock = await product.get("stock", default=0)
                await product.batch([("put", key, body["qty"]), ("put", "stock", stock + body["qty"])])
            return True
        if body["op"] == "audit":
            orders = {key: value async for key, value in product.iterator(gte="order:", lt="order;")}
            return {"stock": await product.get("stock", default=0), "orders": orders}
        # A customer told "outcome unknown" (its reply was lost) may send the same order again: the order
        # record makes the second run answer what the first one did instead of reserving again.
        order = f"order:{body['order']}"
        done = await product.get(order, default=None)
        if done is not None:
            return done
        stock = await product.get("stock", default=0)
        ok = stock >= body["qty"]
        ops: list[tuple[Any, ...]] = [("put", order, ok)]
        if ok:
            ops.append(("put", "stock", stock - body["qty"]))
        await product.batch(ops)  # the record and the new stock in one atomic write
        return ok


async def ask(client: borough.Client, sku: str, body: dict[str, Any]) -> Any:
    """Restocks and orders carry ids and audits only read, so every request of this service may be sent again:
    when Borough says an outcome is unknown (the connection or the leader was lost after the request left),
    ask again."""
    while True:
        try:
            return await client.request(f"product:{sku}", body)
        except borough.Unavailable:
            await trio.sleep(0.1)


# --- the test ----------------------------------------------------------------------------------------------

PRODUCTS = ("apple", "pear")
INITIAL = 10


async def shop_under_faults(seed: int, schedule: tuple[Fault, ...], orders: list[list[tuple[int, int]]]) -> None:
    async with SimCluster(3, seed=seed, handler=inventory) as sim:
        async with sim.client() as admin:
            for sku in PRODUCTS:
                await ask(admin, sku, {"op": "restock", "id": "opening", "qty": INITIAL})

        answers: dict[str, tuple[str, int, bool | None]] = {}  # order id -> (sku, qty, answer; None: unknown)

        async def customer(who: int, wanted: list[tuple[int, int]]) -> None:
            async with sim.client() as shop:
                for n, (product, qty) in enumerate(wanted):
                    sku, order = PRODUCTS[product], f"{who}-{n}"
                    body = {"op": "reserve", "order": order, "qty": qty}
                    try:
                        with trio.fail_after(5):
                            answers[order] = (sku, qty, await shop.request(f"product:{sku}", body))
                    except (borough.BoroughError, trio.TooSlowError):
                        answers[order] = (sku, qty, None)  # no answer: it may or may not have happened

        async with trio.open_nursery() as nursery:
            nursery.start_soon(run_faults, sim, schedule)
            for who, wanted in enumerate(orders):
                nursery.start_soon(customer, who, wanted)

        await heal_all(sim)  # every fault undone, every node back up
        async with sim.client() as auditor:
            for sku in PRODUCTS:
                with trio.fail_after(30):
                    audit = await ask(auditor, sku, {"op": "audit"})
                stock, records = audit["stock"], audit["orders"]
                reserved = sum(
                    qty for order, (s, qty, _) in answers.items() if s == sku and records.get(f"order:{order}")
                )
                assert stock >= 0, f"{sku}: oversold, {stock} left"
                assert stock + reserved == INITIAL, f"{sku}: {stock} left + {reserved} reserved != {INITIAL}"
                for order, (s, _, answer) in answers.items():
                    if s == sku and answer is not None:
                        assert records.get(f"order:{order}") == answer, f"order {order} was told {answer}"
        assert await check_replicas(sim) == []


orders_strategy = st.lists(
    st.lists(st.tuples(st.integers(0, len(PRODUCTS) - 1), st.integers(1, 4)), max_size=8), min_size=1, max_size=4
)


@settings(max_examples=max(3, settings().max_examples // 10), derandomize=os.environ.get("BOROUGH_SOAK") != "1")
@given(seed=st.integers(0, 2**32 - 1), schedule=fault_schedules(3, max_faults=6), orders=orders_strategy)
def test_the_shop_never_oversells_and_tells_customers_the_truth(
    seed: int, schedule: tuple[Fault, ...], orders: list[list[tuple[int, int]]]
) -> None:
    # A failure shows Hypothesis's "Falsifying example: ...(seed=..., schedule=(...), orders=[...])"; the run
    # is a function of those arguments, so `run_simulation(shop_under_faults, seed, schedule, orders)`
    # replays it exactly (or paste them into @example(...) above this test).
    run_simulation(shop_under_faults, seed, schedule, orders)
