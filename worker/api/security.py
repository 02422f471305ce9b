"""Authentication (Binance's HMAC-SHA256 scheme), the per-key rate limit and the request
size limit of `sor api`.

One scheme for every order endpoint, /v1 and /api/v3 alike: the ``X-MBX-APIKEY`` header
names the key; ``timestamp`` and ``signature`` are parameters; the signature is the hex
HMAC-SHA256, under the key's secret, of the query string followed by the request body
(Binance's ``totalParams``), with the ``signature`` parameter itself left out.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from dataclasses import dataclass
from typing import Awaitable, Callable, Mapping
from urllib.parse import parse_qsl

import orjson

from worker.domain.numbers import ascii_digits
from worker.config import ApiKey

#: Binance's ceiling for ``recvWindow`` and its default.
MAX_RECV_WINDOW_MS = 60_000
DEFAULT_RECV_WINDOW_MS = 5_000
#: How far ahead of our clock a timestamp may be (Binance allows 1 s).
MAX_AHEAD_MS = 1_000


class AuthError(Exception):
    """Authentication failed; ``code`` and ``msg`` are Binance's."""

    def __init__(self, code: int, msg: str, status: int = 401):
        super().__init__(msg)
        self.code, self.msg, self.status = code, msg, status


@dataclass(frozen=True)
class Caller:
    """An authenticated caller: the API key and the account it trades for."""

    api_key: str
    account_id: str


def strip_signature(raw: str) -> tuple[str, str | None]:
    """``raw`` without its ``signature=`` parameter, and that parameter's value."""
    kept, signature = [], None
    for part in raw.split("&") if raw else []:
        if part.startswith("signature="):
            signature = part[len("signature="):]
        else:
            kept.append(part)
    return "&".join(kept), signature


def sign(secret: str, payload: str) -> str:
    """The hex HMAC-SHA256 of ``payload``: what a client sends as ``signature``."""
    return hmac.new(secret.encode(), payload.encode(), hashlib.sha256).hexdigest()


def authenticate(keys: Mapping[str, ApiKey], api_key: str | None, query: str, body: str,
                 params: Mapping[str, str], now_ms: int, form_body: bool = True) -> Caller:
    """Check the key, the signature and the timestamp window, or raise :class:`AuthError`.

    A form body may carry the signature; a JSON body is signed whole (signature in the query).
    """
    if not api_key:
        raise AuthError(-2014, "API-key format invalid.")
    entry = keys.get(api_key)
    if entry is None:
        raise AuthError(-2015, "Invalid API-key, IP, or permissions for action.")
    valid = signature_valid(entry, query, body, form_body)
    if valid is None:
        raise AuthError(-1102, "Mandatory parameter 'signature' was not sent, was empty/null, or malformed.")
    if not valid:
        raise AuthError(-1022, "Signature for this request is not valid.")
    check_timestamp(params, now_ms)
    return Caller(api_key, entry.account_id)


def signature_valid(entry: ApiKey, query: str, body: str, form_body: bool = True) -> bool | None:
    """Whether the request is signed with ``entry``'s secret; ``None`` without a signature."""
    query_wo, sig_q = strip_signature(query)
    body_wo, sig_b = strip_signature(body) if form_body else (body, None)
    given = sig_q if sig_q is not None else sig_b
    if not given:
        return None
    expected = sign(entry.secret.get_secret_value(), query_wo + body_wo)
    # compare_digest raises on non-ASCII text: such a signature is simply not the right one.
    return given.isascii() and hmac.compare_digest(expected, given.lower())


def check_timestamp(params: Mapping[str, str], now_ms: int) -> None:
    """Binance's rule: ``timestamp < now + 1000`` and ``now - timestamp <= recvWindow``."""
    raw_ts = params.get("timestamp")
    if not raw_ts or not ascii_digits(raw_ts):
        raise AuthError(-1102, "Mandatory parameter 'timestamp' was not sent, was empty/null, or malformed.", 400)
    window_raw = params.get("recvWindow", str(DEFAULT_RECV_WINDOW_MS))
    if not ascii_digits(window_raw):
        raise AuthError(-1100, "Illegal characters found in parameter 'recvWindow'; legal range is '^[0-9]{1,20}$'.", 400)
    window = int(window_raw)
    if window > MAX_RECV_WINDOW_MS:
        raise AuthError(-1131, f"recvWindow must be less than {MAX_RECV_WINDOW_MS}.", 400)
    ts = int(raw_ts)
    if ts >= now_ms + MAX_AHEAD_MS:
        raise AuthError(-1021, "Timestamp for this request was 1000ms ahead of the server's time.", 400)
    if now_ms - ts > window:
        raise AuthError(-1021, "Timestamp for this request is outside of the recvWindow.", 400)


class TokenBuckets:
    """A token bucket per caller: ``rate`` requests per second, bursts of ``burst``."""

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic, capacity: int = 100_000):
        self.rate, self.burst, self.clock, self.capacity = rate, float(burst), clock, capacity
        self._buckets: dict[str, tuple[float, float]] = {}

    def allow(self, who: str) -> bool:
        now = self.clock()
        tokens, last = self._buckets.get(who, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        allowed = tokens >= 1
        self._buckets[who] = (tokens - 1 if allowed else tokens, now)
        if len(self._buckets) > self.capacity:  # bound memory under a flood of new addresses
            self._buckets.pop(next(iter(self._buckets)))
        return allowed


#: Paths neither limited nor counted: probes and scrapes must always answer.
UNLIMITED = frozenset({"/healthz", "/readyz", "/metrics"})


def is_binance_path(path: str) -> bool:
    return path.startswith("/api/")


def error_body(path: str, status: int, detail: str, code: int) -> bytes:
    """The error shape of the path's family: Binance's ``{code, msg}`` or ``{detail}``."""
    return orjson.dumps({"code": code, "msg": detail} if is_binance_path(path) else {"detail": detail})


class GuardMiddleware:
    """Pure ASGI: a hard cap on the request body (buffered, so the app sees a body that is
    known to fit), then the rate limit: per API key once the request is signed with that
    key's secret, per client address otherwise. Naming a key is not enough to be charged to
    it: whoever has seen a key (it travels in a header) could otherwise exhaust its owner's
    limit with requests signed with nothing."""

    def __init__(self, app, max_body_bytes: int, buckets: TokenBuckets, keys: Mapping[str, ApiKey] | None = None,
                 clock: Callable[[], int] = lambda: time.time_ns() // 1_000_000):
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.buckets = buckets
        self.keys = dict(keys or {})
        self.clock = clock

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["path"] in UNLIMITED:
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        headers = dict(scope["headers"])
        declared = headers.get(b"content-length")
        if declared is not None and (not declared.isascii() or not declared.isdigit() or int(declared) > self.max_body_bytes):
            await _reply(send, 413, error_body(path, 413, f"request body: larger than {self.max_body_bytes} bytes", -1000))
            return
        body = b""
        if scope["method"] not in ("GET", "HEAD", "DELETE", "OPTIONS") or declared is not None:
            chunks, size = [], 0
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > self.max_body_bytes:
                    await _reply(send, 413, error_body(path, 413, f"request body: larger than {self.max_body_bytes} bytes", -1000))
                    return
                chunks.append(chunk)
                if not message.get("more_body", False):
                    break
            body = b"".join(chunks)
        if not self.buckets.allow(self._charged(scope, headers, body)):
            limit = f"{self.buckets.rate:g}/s"
            await _reply(send, 429, error_body(path, 429, f"Too many requests; current limit is {limit} per API key.", -1003),
                         [(b"retry-after", b"1")])
            return
        sent = False

        async def replay() -> dict:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    def _charged(self, scope, headers: dict, body: bytes) -> str:
        """The bucket of the request: its key's when signed with that key and within its
        recvWindow (a signed URL copied from a log, replayed later, is not the key's owner),
        else its address's."""
        name = headers.get(b"x-mbx-apikey", b"").decode(errors="replace")
        entry = self.keys.get(name)
        query, text, form = scope["query_string"].decode("latin-1"), body.decode("utf-8", errors="replace"), is_binance_path(scope["path"])
        if entry is not None and signature_valid(entry, query, text, form):
            params = dict(parse_qsl(text, keep_blank_values=True)) if form else {}
            params.update(parse_qsl(query, keep_blank_values=True))
            try:
                check_timestamp(params, self.clock())
                return f"key:{name}"
            except AuthError:
                pass
        return f"addr:{(scope.get('client') or ('?', 0))[0]}"


async def _reply(send: Callable[[dict], Awaitable[None]], status: int, body: bytes, extra: list | None = None) -> None:
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *(extra or [])]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
