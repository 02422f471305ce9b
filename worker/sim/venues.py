"""The demo's paper venues: real-world-like fees and lot rules, a little latency and faults."""

from decimal import Decimal as D

from worker.domain.models import VenueConfig

DEMO_VENUES = [
    VenueConfig(name="binance", taker_fee_bps=D(10), maker_fee_bps=D(10), step_size=D("0.00001"), min_qty=D("0.00001"), min_notional=D(5), latency_ms=15),
    VenueConfig(name="kraken", taker_fee_bps=D(26), maker_fee_bps=D(16), step_size=D("0.00000001"), min_qty=D("0.0001"), min_notional=D("0.5"), latency_ms=35, partial_fill_rate=0.03),
    VenueConfig(name="coinbase", taker_fee_bps=D(40), maker_fee_bps=D(25), step_size=D("0.00000001"), min_qty=D("0.00000001"), min_notional=D(1), latency_ms=25),
    VenueConfig(name="bitstamp", taker_fee_bps=D(30), maker_fee_bps=D(20), step_size=D("0.00000001"), min_qty=D("0.00000001"), min_notional=D(10), latency_ms=40, reject_rate=0.02),
    VenueConfig(name="okx", taker_fee_bps=D(8), maker_fee_bps=D(6), step_size=D("0.00001"), min_qty=D("0.00001"), min_notional=D(5), latency_ms=20),
]
