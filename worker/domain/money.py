"""Money helpers shared by every layer: exact ``Decimal`` constants, lot-step rounding and
the one rounding rule for averages (VWAPs, net prices)."""

from __future__ import annotations

import decimal
from decimal import Decimal

#: The one decimal context of every money computation (routing, execution, TCA), whatever the
#: caller's ambient context: 60 digits hold every exact product and sum of bounded inputs
#: (|x| < 1e18, at most 18 places), so a plan or a VWAP in the worker equals ``sor plan``'s.
MONEY_CONTEXT = decimal.Context(prec=60, rounding=decimal.ROUND_HALF_EVEN)



def _money_context() -> decimal.Context:
    # Never narrower than MONEY_CONTEXT; a caller that widened it on purpose (the router, for
    # a plan whose exact sums need more than 60 digits) keeps its width.
    ambient = decimal.getcontext()
    return ambient if ambient.prec > MONEY_CONTEXT.prec and ambient.rounding == MONEY_CONTEXT.rounding else MONEY_CONTEXT


ZERO = Decimal(0)
#: Basis points per unit: a fee of ``f`` bps is the rate ``f / BPS``.
BPS = Decimal(10_000)
#: Averages (VWAPs, net prices) are divisions; they are rounded to this many places.
PRICE_QUANTUM = Decimal("1e-10")
#: Every figure in basis points (savings, shortfall, slippage) is rounded to 4 places.
BPS_QUANTUM = Decimal("0.0001")


def floor_to_step(qty: Decimal, step: Decimal) -> Decimal:
    """The largest multiple of ``step`` not above ``qty``."""
    with decimal.localcontext(_money_context()):
        return (qty // step) * step


def ceil_to_step(qty: Decimal, step: Decimal) -> Decimal:
    """The smallest multiple of ``step`` not below ``qty``."""
    with decimal.localcontext(_money_context()):
        units = qty // step
        return units * step if units * step == qty else (units + 1) * step


def average_price(total: Decimal, qty: Decimal) -> Decimal:
    """``total / qty`` rounded to ``PRICE_QUANTUM``: every VWAP and net price in the events."""
    with decimal.localcontext(_money_context()):
        return rounded_average(total, qty)


def rounded_average(total: Decimal, qty: Decimal) -> Decimal:
    """:func:`average_price` for a caller already running in the context it would pick (the
    money context, or a wider one with its rounding): the router, a dozen times per plan,
    where entering a context per average cost more than the division itself."""
    return (total / qty).quantize(PRICE_QUANTUM).normalize()
