"""The report's figures, computed from decoded records: pure, no plotting, no I/O.

Every figure stays a ``Decimal`` here (the CSV carries them exactly); the charts turn them
into floats only to draw them.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Iterable, Mapping, TypeVar

import orjson

from worker.domain.errors import InputError, parse_model
from worker.domain.models import ExecutionResult, RoutePlan
from worker.domain.money import BPS_QUANTUM, ZERO

T = TypeVar("T", Decimal, int)

#: How many intents the "worst" table lists.
WORST_N = 20
#: Most time bins of the per-venue charts.
MAX_TIME_BINS = 20


@dataclass(frozen=True)
class Record:
    """One decoded execution result and the time it is drawn at (epoch ms, or ``None``)."""

    result: ExecutionResult
    ts: int | None


@dataclass(frozen=True)
class VenueBin:
    """One venue's legs in one time bin."""

    start_ms: int
    legs: int
    qty: Decimal
    filled_qty: Decimal
    latencies_ms: tuple[int, ...]

    @property
    def fill_rate(self) -> Decimal:
        return (self.filled_qty / self.qty).quantize(Decimal("0.0001")) if self.qty else ZERO

    @property
    def latency_p50_ms(self) -> int | None:
        return quantile(self.latencies_ms, 50)


@dataclass
class ReportData:
    """Everything the HTML page and the CSV show, grouped by figure."""

    records: list[Record]
    plans: dict[str, list[dict]]  # intent_id -> plan JSON of each round, first round first
    skipped: list[str] = field(default_factory=list)  # one line per undecodable input record

    @property
    def executed(self) -> list[ExecutionResult]:
        return [r.result for r in self.records if r.result.tca is not None]

    def statuses(self) -> dict[str, int]:
        counts: dict[str, int] = defaultdict(int)
        for r in self.records:
            counts[r.result.status.value] += 1
        return dict(counts)

    def algorithms(self) -> list[str]:
        order = ["sor", "split", "best"]
        seen = {r.result.algorithm.value for r in self.records}
        return [a for a in order if a in seen] + sorted(seen - set(order))

    def shortfall_by_algorithm(self) -> dict[str, list[tuple[str, Decimal]]]:
        """algorithm -> [(intent_id, shortfall bps)] of the executed intents that have one."""
        out: dict[str, list[tuple[str, Decimal]]] = {a: [] for a in self.algorithms()}
        for res in self.executed:
            if res.tca.shortfall_bps is not None:
                out[res.algorithm.value].append((res.intent_id, res.tca.shortfall_bps))
        return out

    def savings(self) -> dict[str, list[tuple[str, Decimal, Decimal]]]:
        """algorithm -> [(intent_id, estimated, realized)] savings vs the worst single venue, bps."""
        out: dict[str, list[tuple[str, Decimal, Decimal]]] = {a: [] for a in self.algorithms()}
        for res in self.executed:
            est, real = res.tca.estimated_savings_vs_worst_venue_bps, res.tca.realized_savings_vs_worst_venue_bps
            if est is not None and real is not None:
                out[res.algorithm.value].append((res.intent_id, est, real))
        return out

    def summary(self) -> dict[str, dict[str, Decimal | int | None]]:
        """Per algorithm: counts, fill rate and the mean / median / p90 of the TCA figures."""
        out = {}
        for alg in self.algorithms():
            results = [r.result for r in self.records if r.result.algorithm.value == alg]
            executed = [r for r in results if r.tca is not None]
            # Quantities of different symbols are different assets: a filled quantity only for
            # one symbol, and the fill rate as the mean of the intents' own rates.
            one_symbol = len({r.symbol for r in executed}) == 1
            filled = sum((r.filled_qty for r in executed), ZERO) if one_symbol else None

            def values(name: str) -> list[Decimal]:
                return [getattr(r.tca, name) for r in executed if getattr(r.tca, name) is not None]

            shortfall = values("shortfall_bps")
            out[alg] = {
                "intents": len(results),
                "executed": len(executed),
                "filled_qty": filled,
                "fill_rate": mean_of([r.tca.fill_rate for r in executed], Decimal("0.000001")),
                "shortfall_mean_bps": mean(shortfall),
                "shortfall_p50_bps": median(shortfall),
                "shortfall_p90_bps": quantile(shortfall, 90),
                "slippage_mean_bps": mean(values("slippage_bps")),
                "estimated_savings_worst_mean_bps": mean(values("estimated_savings_vs_worst_venue_bps")),
                "realized_savings_worst_mean_bps": mean(values("realized_savings_vs_worst_venue_bps")),
                "realized_savings_best_mean_bps": mean(values("realized_savings_vs_best_venue_bps")),
                "time_to_fill_p50_ms": quantile([r.tca.time_to_fill_ms for r in executed if r.tca.time_to_fill_ms is not None], 50),
            }
        return out

    def venue_share(self) -> dict[str, tuple[Decimal, Decimal]]:
        """venue -> (filled notional, share of all filled notional), largest first.

        Notional in each symbol's quote asset (1 BTC and 1000 DOGE are not 1001 of anything;
        USD 50,000 and USD 100 add up), from the legs, which are complete even when a result
        too big for one record lists only a prefix of its fills."""
        qty: dict[str, Decimal] = defaultdict(lambda: ZERO)
        for res in self.executed:
            for leg in res.legs:
                if leg.filled_qty and leg.price is not None:
                    qty[leg.provider] += leg.filled_qty * leg.price
        total = sum(qty.values(), ZERO)
        ranked = sorted(qty.items(), key=lambda kv: (-kv[1], kv[0]))
        return {v: (q, (q / total).quantize(Decimal("0.0001")) if total else ZERO) for v, q in ranked}

    def venue_bins(self) -> dict[str, list[VenueBin]]:
        """venue -> its legs in up to ``MAX_TIME_BINS`` equal time bins (empty bins left out)."""
        timed = [r for r in self.records if r.ts is not None and r.result.legs]
        if not timed:
            return {}
        first, last = min(r.ts for r in timed), max(r.ts for r in timed)
        width = max(1, -(-(last - first + 1) // MAX_TIME_BINS))
        acc: dict[tuple[str, int], list] = {}
        for r in timed:
            b = (r.ts - first) // width
            for leg in r.result.legs:
                slot = acc.setdefault((leg.provider, b), [0, ZERO, ZERO, []])
                slot[0] += 1
                slot[1] += leg.qty
                slot[2] += leg.filled_qty
                slot[3].append(leg.latency_ms)
        out: dict[str, list[VenueBin]] = defaultdict(list)
        for (venue, b), (n, q, f, lat) in sorted(acc.items()):
            out[venue].append(VenueBin(first + b * width, n, q, f, tuple(sorted(lat))))
        return dict(sorted(out.items()))

    def worst(self, n: int = WORST_N) -> list[ExecutionResult]:
        """The ``n`` executed intents with the largest shortfall (ties by intent id)."""
        ranked = [r for r in self.executed if r.tca.shortfall_bps is not None]
        return sorted(ranked, key=lambda r: (-r.tca.shortfall_bps, r.intent_id))[:n]


def plan_anchor(intent_id: str) -> str:
    """A safe, stable HTML id for an intent's plans (intent ids may hold any character)."""
    return "plan-" + hashlib.sha256(intent_id.encode()).hexdigest()[:16]


def mean(values: list[Decimal]) -> Decimal | None:
    return mean_of(values, BPS_QUANTUM)


def mean_of(values: list[Decimal], quantum: Decimal) -> Decimal | None:
    return (sum(values, ZERO) / len(values)).quantize(quantum) if values else None


def quantile(values: Iterable[T], q: int) -> T | None:
    """Nearest-rank quantile (a value of the data, never interpolated), ``q`` in percent."""
    ordered = sorted(values)
    if not ordered:
        return None
    return ordered[min(len(ordered) - 1, max(0, -(-q * len(ordered) // 100) - 1))]


def median(values: Iterable[T]) -> T | None:
    return quantile(values, 50)


def _as_dict(item: Any, what: str) -> dict:
    if isinstance(item, (RoutePlan, ExecutionResult)):
        return item.model_dump(mode="json")
    if isinstance(item, (bytes, bytearray, str)):
        try:
            item = orjson.loads(item)
        except orjson.JSONDecodeError as exc:
            raise InputError(f"{what}: not valid JSON: {exc}") from None
    if not isinstance(item, dict):
        raise InputError(f"{what}: expected a JSON object, got {type(item).__name__}")
    return item


def build(results: Iterable[Any] | Mapping[str, Any], plans: Iterable[Any] | Mapping[str, Any] = (),
          timestamps: Mapping[str, int] | None = None) -> ReportData:
    """Decode results and plans (dicts, JSON bytes or models) into the report's data.

    A result is drawn at its record timestamp from ``timestamps`` (intent id -> epoch ms) if
    given, else at its TCA's ``arrival_ts``. ``plans`` may also map an intent id to a list of
    its round plans. A republished result replaces the earlier copy.
    Undecodable records are skipped and listed in ``skipped``; they never stop a report.
    """
    if isinstance(results, Mapping):
        results = results.values()
    if isinstance(plans, Mapping):
        plans = plans.values()
    skipped: list[str] = []
    by_intent: dict[str, ExecutionResult] = {}
    for i, item in enumerate(results):
        try:
            res = item if isinstance(item, ExecutionResult) else parse_model(ExecutionResult, _as_dict(item, f"result {i}"))
        except InputError as exc:
            skipped.append(f"result {i}: {exc}")
            continue
        held = by_intent.get(res.intent_id)
        if held is None or res.version >= held.version:  # a correction wins, in whatever order read
            by_intent[res.intent_id] = res
    plan_rounds: dict[str, dict[tuple[int, str], dict]] = defaultdict(dict)
    flat = [p for item in plans for p in (item if isinstance(item, list) else [item])]  # {intent_id: [round plans]} too
    for i, item in enumerate(flat):
        try:
            plan = _as_dict(item, f"plan {i}")
            intent_id, round_no = plan["intent_id"], int(plan.get("round", 0))
        except (InputError, KeyError, TypeError, ValueError) as exc:
            skipped.append(f"plan {i}: {exc if isinstance(exc, InputError) else 'no intent_id/round'}")
            continue
        plan_rounds[str(intent_id)][(round_no, str(plan.get("algorithm")))] = plan
    timestamps = timestamps or {}
    records = []
    for res in by_intent.values():
        ts = timestamps.get(res.intent_id)
        if ts is None and res.tca is not None:
            ts = res.tca.arrival_ts
        records.append(Record(res, ts))
    records.sort(key=lambda r: (r.ts is None, r.ts or 0, r.result.intent_id))
    plans_out = {k: _rounds_of(v, by_intent.get(k)) for k, v in plan_rounds.items()}
    return ReportData(records, plans_out, skipped)


def _rounds_of(plans: dict[tuple[int, str], dict], result: ExecutionResult | None) -> list[dict]:
    """An intent's plans, round by round, of the algorithm it executed with (what-if output
    holds a round-0 plan per algorithm); of the first algorithm seen without a result, or
    when none is of its algorithm."""
    algorithm = result.algorithm.value if result is not None else next(iter(plans))[1]
    mine = {n: p for (n, alg), p in plans.items() if alg == algorithm} or {n: p for (n, _), p in plans.items()}
    return [mine[n] for n in sorted(mine)]

