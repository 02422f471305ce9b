"""The Binance-style adapter: request signing and response mapping."""

from decimal import Decimal

import pytest

from worker.config import Settings
from worker.domain.models import LegStatus, VenueConfig
from worker.venues.base import VenueError
from worker.venues.http import HttpVenue, binance_signature, report_from

FILL = {"price": "100.5", "qty": "0.5", "commission": "0.05", "commissionAsset": "USD", "tradeId": 7}
FILLED_BODY = {"clientOrderId": "c", "orderId": 1, "status": "FILLED", "executedQty": "0.5", "fills": [FILL]}


def test_signature_matches_binance_documented_example():
    secret = "NhqPtmdSJYdKjVHjA7PZj4Mge3R5YNiP1e3UZjInClVN65XAbvqqM6A7H5fATj0j"
    query = "symbol=LTCBTC&side=BUY&type=LIMIT&timeInForce=GTC&quantity=1&price=0.1&recvWindow=5000&timestamp=1499827319559"
    assert binance_signature(secret, query) == "c8db56825ae71d6d79447849e617115f4a920fa2acdcab2b053c4b2838bd6b71"


def test_requests_are_signed_with_credentials_from_settings(monkeypatch):
    monkeypatch.setenv("SOR_VENUE_CREDENTIALS__BINANCE__API_KEY", "my-key")
    monkeypatch.setenv("SOR_VENUE_CREDENTIALS__BINANCE__API_SECRET", "NhqPtmdSJYdKjVHjA7PZj4Mge3R5YNiP1e3UZjInClVN65XAbvqqM6A7H5fATj0j")
    creds = Settings().venue_credentials["binance"]
    assert "NhqPt" not in repr(creds)
    venue = HttpVenue(VenueConfig(name="binance", adapter="http", url="http://x/binance"), credentials=creds)
    query, headers = venue.signed({"symbol": "LTCBTC", "side": "BUY", "type": "LIMIT", "timeInForce": "GTC", "quantity": "1",
                                   "price": "0.1"}, now_ms=1499827319559)
    assert query.endswith("&signature=c8db56825ae71d6d79447849e617115f4a920fa2acdcab2b053c4b2838bd6b71")
    assert headers == {"X-MBX-APIKEY": "my-key"}
    unsigned = HttpVenue(VenueConfig(name="p", adapter="http", url="http://x/p"))
    assert unsigned.signed({"a": "1"}) == ("a=1", {})


def test_an_ioc_order_that_filled_in_part_maps_to_partial():
    body = {"clientOrderId": "c", "orderId": 7, "status": "EXPIRED", "executedQty": "0.4",
            "fills": [{"price": "100", "qty": "0.4", "commission": "0.04", "commissionAsset": "USD", "tradeId": 3}]}
    report = report_from(body)
    assert report.status is LegStatus.PARTIAL and report.filled_qty == Decimal("0.4") and report.trades[0].trade_id == "3"


@pytest.mark.parametrize("body, field", [
    ({"clientOrderId": "c", "orderId": 1, "status": "FILLED"}, "executedQty"),
    ({"clientOrderId": "c", "orderId": 1, "status": "FILLED", "executedQty": "lots"}, "InvalidOperation"),
    (dict(FILLED_BODY, fills=[dict(FILL, commissionAsset=None)]), "commission_asset"),
    (dict(FILLED_BODY, fills=[dict(FILL, price="NaN")]), "price"),
    (dict(FILLED_BODY, fills=[dict(FILL, qty="0")]), "qty"),
    (dict(FILLED_BODY, executedQty="-1"), "filled_qty"),
])
def test_an_answer_that_is_not_an_order_report_is_an_unknown_state_naming_what_is_wrong(body, field):
    """The result and fills are built from the adapters' reports without validation: what a
    venue answered is checked where it enters. The order may exist, so the leg is unknown
    (reconciled, then swept), never published with a null asset or a NaN price."""
    with pytest.raises(VenueError) as caught:
        report_from(body)
    assert caught.value.unknown and field in str(caught.value)
