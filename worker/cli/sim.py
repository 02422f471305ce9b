"""``sor sim market`` and ``sor sim oms``: the demo's simulators as standalone processes
(used by docker-compose and for load against a real cluster)."""

from __future__ import annotations

import asyncio
import sys

from worker.pipeline.kafka import KafkaClients


async def _market(settings, interval_s: float) -> None:
    from worker.pipeline.kafka import ensure_topics
    from worker.sim.market import MarketSimulator
    from worker.sim.venues import DEMO_VENUES

    await ensure_topics(settings, [settings.topics.quotes])
    producer = await KafkaClients(settings).producer(role="market-sim")
    try:
        await MarketSimulator(DEMO_VENUES).run(producer, settings.topics.quotes, interval_s)
    finally:
        await producer.stop()


async def _oms(settings, intents: int, rate: float, mid: float) -> None:
    from worker.pipeline.kafka import ensure_topics
    from worker.sim.oms import OmsSimulator

    await ensure_topics(settings, [settings.topics.intents])
    producer = await KafkaClients(settings).producer(role="oms-sim")
    try:
        oms = OmsSimulator()
        n = 0
        while intents <= 0 or n < intents:
            for msg in oms.next_messages(n, mid):
                await producer.send(settings.topics.intents, msg.value, key=msg.key)
            n += 1
            await asyncio.sleep(1 / rate)
        await producer.flush()
    finally:
        await producer.stop()


def main(args) -> int:
    from worker.cli.service import load_settings
    from worker.domain.errors import InputError

    try:
        settings = load_settings({"bootstrap_servers": args.bootstrap_servers})
        if args.what == "oms" and not args.rate > 0:
            raise InputError(f"--rate: must be > 0 intents per second (got {args.rate})")
    except InputError as exc:
        print(f"sor sim: error: {exc}", file=sys.stderr)
        return 2
    try:
        if args.what == "market":
            asyncio.run(_market(settings, args.interval))
        else:
            asyncio.run(_oms(settings, args.intents, args.rate, args.mid))
    except KeyboardInterrupt:
        pass
    return 0
