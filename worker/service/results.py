"""Final results by intent id, and the callers waiting for them: the reply side of the
request/reply that `sor api` runs over the intents and executions topics.

No Kafka here: the gateway (``worker.pipeline.gateway``) feeds the book from the executions
topic, and tests feed it by hand.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, Hashable, Iterator, Protocol

from worker.domain.models import ExecutionResult, OrderIntent


@dataclass(frozen=True, slots=True)
class Settled:
    """A final result as this process saw it.

    ``received_ms`` is when it was first read (Binance's ``transactTime``); ``position`` is a
    stable number from the result's place in the log, the same in every replica and after a
    restart (allocation ids are derived from it).
    """

    result: ExecutionResult
    received_ms: int
    position: int


#: The prefixes of the intent ids ``sor api`` mints (``<namespace>-<hex>``): its seed endpoints
#: and its Binance endpoint. Every replica tracks these intents from the intents topic, so a
#: poll that reaches another replica than the one that took the order still finds it pending.
API_NAMESPACE = "api"
BINANCE_NAMESPACE = "bn"
API_NAMESPACES = (API_NAMESPACE, BINANCE_NAMESPACE)


class NotPlaced(Exception):
    """The intent a caller waits on never reached the broker: nothing was placed."""


class ResultBook:
    """Bounded (LRU) map of final results, plus the intents this process is waiting on.

    One shared future per awaited intent: concurrent requests for the same intent id wait on
    the same reply, and a timed-out waiter leaves the future for the next poll.
    """

    def __init__(self, capacity: int):
        self.capacity = capacity
        self._results: OrderedDict[str, Settled] = OrderedDict()
        self._pending: OrderedDict[str, tuple[OrderIntent, asyncio.Future[Settled]]] = OrderedDict()
        #: The intents seen (awaited here or read from the intents topic), kept after they
        #: settle: a retry with the same key is compared with the whole order, which the
        #: result alone does not carry (its limit price, time in force, venues).
        self._orders: OrderedDict[str, OrderIntent] = OrderedDict()
        self._alias: Callable[[str], Hashable | None] | None = None
        self._by_alias: dict[Hashable, str] = {}

    def index_by(self, alias: Callable[[str], Hashable | None]) -> None:
        """Keep the known intent ids (an order or a result) findable by ``alias(intent_id)``
        (``None``: not indexed) with :meth:`find`: Binance's numeric ``orderId``."""
        self._alias, self._by_alias = alias, {}
        for intent_id in self.intent_ids():
            self._index(intent_id)

    def find(self, alias: Hashable) -> str | None:
        """The intent id whose alias is ``alias`` (see :meth:`index_by`)."""
        return self._by_alias.get(alias)

    def _index(self, intent_id: str) -> None:
        if self._alias is not None:
            key = self._alias(intent_id)
            if key is not None:
                self._by_alias[key] = intent_id

    def _unindex(self, intent_id: str) -> None:
        """After ``intent_id`` may have left the book: out of the index once nothing of it is held."""
        if self._alias is not None and intent_id not in self._results and intent_id not in self._orders:
            key = self._alias(intent_id)
            if key is not None and self._by_alias.get(key) == intent_id:
                del self._by_alias[key]

    def add(self, settled: Settled) -> None:
        """Record a result. A correction (a higher ``version``: a leg of unknown state turned
        out filled) replaces the result held, keeping the order's first time and position, so
        allocation ids already handed out stay the same; a republication of an older version
        (after a worker's crash) changes nothing."""
        intent_id = settled.result.intent_id
        held = self._results.get(intent_id)
        if held is not None:
            if settled.result.version > held.result.version:
                self._results[intent_id] = Settled(settled.result, held.received_ms, held.position)
            return
        self._results[intent_id] = settled
        self._index(intent_id)
        if len(self._results) > self.capacity:
            old, _ = self._results.popitem(last=False)
            if old not in self._pending:
                self._orders.pop(old, None)
            self._unindex(old)
        waiting = self._pending.pop(intent_id, None)
        if waiting is not None and not waiting[1].done():
            waiting[1].set_result(settled)

    def get(self, intent_id: str) -> Settled | None:
        return self._results.get(intent_id)

    def pending(self, intent_id: str) -> OrderIntent | None:
        """The intent published (by any replica) and still awaited, if any."""
        waiting = self._pending.get(intent_id)
        return waiting[0] if waiting is not None else None

    def order(self, intent_id: str) -> OrderIntent | None:
        """The intent of ``intent_id`` as it was published, if this process saw it."""
        return self._orders.get(intent_id)

    def expect(self, intent: OrderIntent) -> None:
        """Register interest before publishing, so a fast reply cannot be missed; also for an
        intent another replica published (read from the intents topic). A no-op when the
        intent is already awaited or settled."""
        if intent.intent_id in self._pending or intent.intent_id in self._results:
            self._orders.setdefault(intent.intent_id, intent)
            return
        self._orders[intent.intent_id] = intent  # as long as it is awaited or its result is held
        self._pending[intent.intent_id] = (intent, asyncio.get_running_loop().create_future())
        self._index(intent.intent_id)
        if len(self._pending) > self.capacity:
            old, (_, future) = self._pending.popitem(last=False)
            future.cancel()
            if old not in self._results:
                self._orders.pop(old, None)
            self._unindex(old)

    def forget(self, intent_id: str) -> None:
        """Drop an expectation whose intent never reached the broker. A concurrent retry
        waiting on it gets :class:`NotPlaced`, not "no result yet": nothing was placed."""
        self._orders.pop(intent_id, None)
        self._unindex(intent_id)
        waiting = self._pending.pop(intent_id, None)
        if waiting is not None and not waiting[1].done():
            waiting[1].set_exception(NotPlaced(intent_id))
            waiting[1].exception()  # retrieved: a failure nobody waits on is not an error to log

    async def wait(self, intent_id: str, timeout_s: float) -> Settled | None:
        """The result, or ``None`` if it did not arrive within ``timeout_s``."""
        settled = self._results.get(intent_id)
        if settled is not None:
            return settled
        waiting = self._pending.get(intent_id)
        if waiting is None:
            return None
        future = waiting[1]
        try:
            return await asyncio.wait_for(asyncio.shield(future), timeout_s)
        except TimeoutError:
            return None
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if future.cancelled() and not (task is not None and task.cancelling()):
                return None  # forgotten or evicted, not our own cancellation
            raise

    def intent_ids(self) -> Iterator[str]:
        """Every intent id this process knows an order or a result of."""
        yield from list(self._orders)
        yield from (i for i in list(self._results) if i not in self._orders)

    def __iter__(self) -> Iterator[Settled]:
        return iter(list(self._results.values()))

    def __len__(self) -> int:
        return len(self._results)


class IntentGateway(Protocol):
    """Where `sor api` sends intents and reads replies: Kafka in production, a fake in tests."""

    book: ResultBook

    async def publish(self, intent: OrderIntent) -> None:
        """Hand the intent to the worker; returns once the broker acknowledged it."""
        ...

    def healthy(self) -> bool:
        """True while replies are being read."""
        ...
