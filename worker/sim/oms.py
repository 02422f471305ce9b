"""OMS simulator: order intents on ``sor.intents.v1``, with some garbage and duplicates."""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass

import orjson

ALGORITHMS = ["sor"] * 8 + ["split", "best"]


@dataclass
class OmsMessage:
    key: bytes
    value: bytes
    kind: str  # "intent", "duplicate", "garbage"
    intent_id: str | None = None


class OmsSimulator:
    def __init__(self, symbol: str = "BTC/USD", seed: int = 7, garbage_every: int = 50, duplicate_every: int = 40, expired_every: int = 60,
                 prefix: str = "oms"):
        self.symbol = symbol
        self.prefix = prefix  # intent ids are <prefix>-<n>: a per-run prefix keeps runs on one broker apart
        self.rng = random.Random(seed)
        self.garbage_every = garbage_every
        self.duplicate_every = duplicate_every
        self.expired_every = expired_every
        self.sent: list[OmsMessage] = []

    def next_messages(self, n: int, mid: float) -> list[OmsMessage]:
        """The n-th intent, plus a duplicate or a piece of garbage now and then."""
        rng = self.rng
        now = time.time_ns() // 1_000_000
        side = rng.choice(["buy", "sell"])
        qty = round(math.exp(rng.uniform(math.log(0.005), math.log(3))), 4)
        intent = {
            "intent_id": f"{self.prefix}-{n:06d}", "account_id": f"acct-{rng.randint(1, 9)}", "symbol": self.symbol,
            "side": side.upper() if n % 7 == 0 else side, "qty": str(qty), "algorithm": rng.choice(ALGORITHMS),
            "time_in_force": "FOK" if n % 11 == 0 else "IOC", "created_at": now,
        }
        if rng.random() < 0.15:
            intent["type"] = "market"
        else:
            bps = rng.uniform(2, 15)
            limit = mid * (1 + bps / 1e4) if side == "buy" else mid * (1 - bps / 1e4)
            intent.update(type="limit", limit_price=f"{limit:.2f}")
        if self.expired_every and n % self.expired_every == self.expired_every - 1:
            intent["expires_at"] = now - 1_000
        msg = OmsMessage(intent["intent_id"].encode(), orjson.dumps(intent), "intent", intent["intent_id"])
        out = [msg]
        if self.duplicate_every and n % self.duplicate_every == self.duplicate_every - 1:
            out.append(OmsMessage(msg.key, msg.value, "duplicate", msg.intent_id))
        if self.garbage_every and n % self.garbage_every == self.garbage_every - 1:
            junk = rng.choice([b"not json", b'{"intent_id": "x"}', b'{"intent_id": "y", "qty": "-1", "side": "buy"}', b"[1,2,3]"])
            out.append(OmsMessage(b"garbage", junk, "garbage"))
        self.sent.extend(out)
        return out
