"""The operational surface where a review found it failing open or lying: a malformed secret
setting never echoed, nested env keys of any case reach their account or venue, a config-file
typo or a bad file is refused (exit 2), sor api's quote cache is the worker's, the feed resends
what the broker lost, rare blips never stop a process, compose and kustomize reach what they
name. Each test failed on the code before its fix (its docstring names the mechanism)."""

from __future__ import annotations

import asyncio
import types
from decimal import Decimal
from pathlib import Path
from urllib.parse import urlparse

import pytest
import yaml

from worker.config import Settings
from worker.domain.models import VenueConfig, VenueQuote

ROOT = Path(__file__).resolve().parents[2]
D = Decimal
SECRET = "TOPSECRET-9f8e7d6c5b4a"


@pytest.fixture(autouse=True)
def _logging_restored():
    """run_until_signalled configures logging on this test's captured stream: put it back."""
    import structlog

    saved = structlog.get_config()
    yield
    structlog.configure(**saved)


def _clear_sor_env(monkeypatch):
    import os

    for name in list(os.environ):
        if name.startswith("SOR_"):
            monkeypatch.delenv(name, raising=False)


# --- secrets ----------------------------------------------------------------------------------


@pytest.mark.parametrize("variable, value", [
    # An operator who writes the key -> secret mapping flat (a very natural slip).
    ("SOR_API_KEYS", '{"client-key-1": "%s"}' % SECRET),
    # A venue's key pair written as "key:secret".
    ("SOR_VENUE_CREDENTIALS", '{"binance": "KEY:%s"}' % SECRET),
])
def test_a_malformed_credentials_setting_never_prints_its_secret(monkeypatch, capsys, tmp_path, variable, value):
    """worker/cli/service.py:load_settings -> worker/domain/errors.py:describe.

    Mechanism: a settings ValidationError is turned into one line that echoes the offending
    input (``(got '...')``). For a secret-bearing setting (SOR_API_KEYS, SOR_VENUE_CREDENTIALS)
    written in the wrong shape, the input *is* the secret: the SecretStr type never ran, so
    nothing masks it. run_until_signalled prints the line to stderr and exits 2.

    Consequence: the HMAC secret of an API client or an exchange API secret lands in the pod's
    logs (shipped to the log store, readable by everyone with log access), on every restart of
    a CrashLoopBackOff."""
    from worker.cli.service import run_until_signalled

    _clear_sor_env(monkeypatch)
    venues = tmp_path / "v.toml"
    venues.write_text('[[venues]]\nname = "binance"\n')
    monkeypatch.setenv("SOR_VENUES_FILE", str(venues))
    monkeypatch.setenv(variable, value)

    async def never(settings, venues, stop):  # pragma: no cover - settings are refused first
        raise AssertionError("should not run")

    code = run_until_signalled("worker", {}, never)
    err = capsys.readouterr().err
    assert code == 2 and variable[4:].lower() in err  # refused, naming the setting...
    assert SECRET not in err, f"the secret reached stderr: {err!r}"  # ...without the secret


# --- settings precedence and keys ----------------------------------------------------------------


def test_a_nested_env_cap_for_an_account_id_with_capitals_is_applied(monkeypatch):
    """worker/config.py:Settings (env_nested_delimiter="__", case-insensitive env) ->
    worker/execution/risk.py:RiskLimits.max_notional.

    Mechanism: the README says every setting can be set as SOR_<NAME> nested with ``__``.
    pydantic-settings lowercases the nested key of SOR_ACCOUNT_MAX_NOTIONAL__ACCT7, so the cap
    is stored for "acct7", while account ids are compared case-sensitively everywhere else.

    Consequence: fail-open risk limit. The intents of account "ACCT7" are checked against
    the default cap (none by default). The start-up gives no warning."""
    from worker.execution.risk import RiskLimits

    _clear_sor_env(monkeypatch)
    monkeypatch.setenv("SOR_ACCOUNT_MAX_NOTIONAL__ACCT7", "50")
    s = Settings()
    limits = RiskLimits(s.account_max_notional, s.default_max_notional)
    assert limits.max_notional("ACCT7") == D(50), f"caps held: {s.account_max_notional}"


def test_documented_credential_env_vars_reach_a_venue_whose_name_has_capitals(monkeypatch):
    """worker/config.py:Settings + worker/bootstrap.py:build
    (``s.venue_credentials.get(v.name)``).

    Mechanism: VenueName allows capitals ("OKX"). The documented variables
    SOR_VENUE_CREDENTIALS__OKX__API_KEY / __API_SECRET are stored under "okx" (pydantic-settings
    lowercases nested env keys). build() looks them up under the exact name, "OKX", and finds
    nothing.

    Consequence: the worker refuses to start (exit 2) and asks for exactly the two variables
    that are already set. Those variables can never fix it. With adapter = "http" the keys
    are dropped silently and every order goes out unsigned."""
    from tests.support.fakes import MemoryJournal
    from worker.bootstrap import build
    from worker.domain.errors import InputError

    _clear_sor_env(monkeypatch)
    monkeypatch.setenv("SOR_VENUE_CREDENTIALS__OKX__API_KEY", "k")
    monkeypatch.setenv("SOR_VENUE_CREDENTIALS__OKX__API_SECRET", SECRET)
    settings = Settings()
    venue = VenueConfig(name="OKX", adapter="ccxt", exchange="okx", symbols={"BTC/USD": "BTC/USDT"})
    try:
        app = build(settings, [venue], journal=MemoryJournal())
    except InputError as exc:
        pytest.fail(f"refused although SOR_VENUE_CREDENTIALS__OKX__* are set: {exc}")
    assert app.adapters["OKX"].credentials is not None


def test_a_misspelt_key_in_the_config_file_is_refused_not_ignored(monkeypatch, tmp_path):
    """worker/config.py:Settings (``extra="ignore"``) with _ExactTomlSource (SOR_CONFIG_FILE).

    Mechanism: every key of SOR_CONFIG_FILE is meant for Settings. extra="ignore" drops a key
    Settings does not know without a word. The same happens to a key in the wrong table.

    Consequence: a typo in a risk setting (``default_max_notonal = "50"``) starts the worker
    with no notional cap at all. This is the file operators use for caps. Everything else
    in the configuration is refused loudly, so this silence is unexpected."""
    from worker.cli.service import load_settings
    from worker.domain.errors import InputError

    _clear_sor_env(monkeypatch)
    cfg = tmp_path / "sor.toml"
    cfg.write_text('default_max_notonal = "50"\n')
    monkeypatch.setenv("SOR_CONFIG_FILE", str(cfg))
    try:
        settings = load_settings({})
    except InputError:
        return  # refused, naming the key: what should happen
    pytest.fail(f"started without a cap (default_max_notional={settings.default_max_notional}); the typo was ignored")


# --- CLI exit codes ------------------------------------------------------------------------------


def test_an_http_venue_without_url_is_bad_input_exit_2(monkeypatch, tmp_path, capsys):
    """worker/cli/service.py:run_until_signalled + worker/bootstrap.py:build_adapter.

    Mechanism: a venues-file error found while wiring (adapter = "http" with no url) is
    raised as a plain ValueError. InputError is the only type mapped to exit 2, so the
    catch-all maps this one to 1 ("the process could not run") and prefixes it with
    "ValueError:".

    Consequence: a broken venues file is reported as a runtime failure. The service's
    documented contract is "2 bad input (settings, venues file)". Orchestrators and runbooks
    that treat 1 as transient keep restarting a pod that can never start."""
    from worker.cli.run import _serve_worker
    from worker.cli.service import run_until_signalled

    _clear_sor_env(monkeypatch)
    venues = tmp_path / "v.toml"
    venues.write_text('[[venues]]\nname = "binance"\nadapter = "http"\n')
    code = run_until_signalled("worker", {"venues_file": str(venues), "bootstrap_servers": "127.0.0.1:1"}, _serve_worker)
    err = capsys.readouterr().err
    assert "needs a url" in err, err
    assert code == 2, f"exit {code}: {err.strip()}"


@pytest.mark.parametrize("content", [b"group_id = \n", b"\xff\xfe"], ids=["invalid-toml", "not-utf8"])
def test_a_malformed_config_file_is_one_line_and_exit_2(monkeypatch, tmp_path, capsys, content):
    """worker/config.py:Settings.settings_customise_sources / _ExactTomlSource._read_file,
    reached from worker/cli/service.py:load_settings.

    Mechanism: load_settings maps only ValidationError and SettingsError to InputError.
    tomllib.TOMLDecodeError (invalid TOML) and UnicodeDecodeError (a file that is not UTF-8)
    from SOR_CONFIG_FILE escape load_settings, and run_until_signalled catches only InputError
    around it. The venues file handles exactly these cases one line at a time (load_venues).

    Consequence: every long-running command (`sor worker`, `sor api`, `sor feed`,
    `sor paper-venue`, and `sor sim` too) dies with a Python traceback and exit 1 ("could not
    run", treated as transient) instead of one line and exit 2 ("bad input")."""
    from worker.cli.service import run_until_signalled

    _clear_sor_env(monkeypatch)
    cfg = tmp_path / "sor.toml"
    cfg.write_bytes(content)
    monkeypatch.setenv("SOR_CONFIG_FILE", str(cfg))
    monkeypatch.setenv("SOR_VENUES_FILE", str(ROOT / "examples" / "venues.toml"))

    async def never(settings, venues, stop):  # pragma: no cover - settings are refused first
        raise AssertionError("should not run")

    try:
        code = run_until_signalled("worker", {}, never)
    except Exception as exc:
        pytest.fail(f"escaped as a traceback: {type(exc).__name__}: {exc}")
    assert code == 2 and "SOR_CONFIG_FILE" in capsys.readouterr().err


# --- sor api's quote cache -----------------------------------------------------------------------


def _api_quote_cache(monkeypatch, venues):
    """The QuoteCache serve_api builds (captured before anything connects)."""
    import worker.bootstrap as bootstrap

    captured = {}

    class Captured(Exception):
        pass

    def fake_build_api(settings, venues, quotes, gateway, ready):
        captured["quotes"] = quotes
        raise Captured

    monkeypatch.setattr(bootstrap, "build_api", fake_build_api)

    async def main():
        with pytest.raises(Captured):
            async with bootstrap.serve_api(Settings(bootstrap_servers="127.0.0.1:1"), venues):
                pass

    asyncio.run(main())
    return captured["quotes"]


def test_sor_api_refuses_a_future_dated_quote_as_the_worker_does(monkeypatch):
    """worker/bootstrap.py:serve_api (``quotes = QuoteCache()``) and
    worker/api/metrics.py:_QuoteAges.

    Mechanism: the worker and sor paper-venue build their QuoteCache with max_skew_ms (and
    max_levels and the configured venues). sor api builds ``QuoteCache()`` with none of them.
    One snapshot dated in the future (a venue clock or a unit slip) then replaces the real
    book in the API and shadows every newer real snapshot until that time passes.

    Consequence: the API's route and split previews (GET /v1/route/...) leave that venue out
    as stale for as long as the bad ts says, even while real snapshots keep arriving. Meanwhile
    sor_quote_age_seconds of sor api reports the book as perfectly fresh: the age is clamped
    to 0."""
    from worker.domain.clock import now_ms
    from worker.domain.errors import InputError

    venue = VenueConfig(name="binance")
    quotes = _api_quote_cache(monkeypatch, [venue])
    now = now_ms()
    real = VenueQuote(venue="binance", symbol="BTC/USD", ts=now, bids=[(D(100), D(1))], asks=[(D(101), D(1))])
    quotes.update(real)
    future = real.model_copy(update={"ts": now + 3_600_000, "asks": [(D(999), D(1))]})
    with pytest.raises(InputError):
        quotes.update(future)  # the worker's cache refuses it (field ts)
    assert quotes.get("binance", "BTC/USD").ts == now


def test_sor_api_metrics_have_no_series_per_unconfigured_venue(monkeypatch):
    """worker/bootstrap.py:serve_api (``QuoteCache()`` accepts any venue) ->
    worker/api/metrics.py:_QuoteAges (one sor_quote_age_seconds series per cached book).

    Mechanism: the worker's cache keeps only configured venues and counts the rest in
    sor_quotes_dropped_total{reason="unknown_venue"} ("never per venue or symbol"). The API's
    cache keeps every venue name that appears on the quotes topic, with no bound, and exports
    each one.

    Consequence: unbounded memory and label cardinality in sor api from the topic's
    content. Examples are a second feed, a paper-books topic aimed at the wrong place, or
    a hostile producer."""
    from prometheus_client import CollectorRegistry

    from worker.api.metrics import ApiMetrics
    from worker.domain.clock import now_ms

    quotes = _api_quote_cache(monkeypatch, [VenueConfig(name="binance")])
    now = now_ms()
    for i in range(50):
        quotes.update(VenueQuote(venue=f"junk{i}", symbol="BTC/USD", ts=now, bids=[(D(100), D(1))], asks=[(D(101), D(1))]))
    metrics = ApiMetrics(CollectorRegistry())
    metrics.watch(quotes, lambda: True)
    text = metrics.render().decode()
    junk_series = [line for line in text.splitlines() if line.startswith("sor_quote_age_seconds{") and "junk" in line]
    assert junk_series == [], f"{len(junk_series)} series for venues nobody configured"


# --- sor feed ------------------------------------------------------------------------------------


def test_feed_sends_again_a_snapshot_whose_delivery_failed():
    """worker/pipeline/market_feed.py:QuotePublisher.publish/_delivered (sor feed, wired by
    worker/bootstrap.py:run_feed).

    Mechanism: the snapshot is stored in ``self.last`` (and ``_published_at`` is stamped) as
    soon as producer.send has *queued* it. When the broker later fails the delivery,
    _delivered only counts an error. The next poll returns the same book, which equals
    ``last``, so it is treated as "already published", is not sent, and stamps
    ``_published_at`` again. The comment says "the next poll tries again", but it does not.

    Consequence: after a transient broker fault, a quiet book never reaches the quotes topic
    until it changes. The workers route on the older snapshot or exclude the venue as
    stale. Meanwhile sor feed's /readyz stays 200 (ready) and the publish error counter
    moves once."""
    from aiokafka.errors import KafkaTimeoutError

    from worker.pipeline.market_feed import QuotePublisher

    async def scenario():
        loop = asyncio.get_running_loop()
        deliveries = []

        class Producer:
            async def send(self, topic, value, key=None):
                future = loop.create_future()
                deliveries.append(future)
                return future

        publisher = QuotePublisher(Producer(), "sor.quotes.v1", fresh_ms=1_000, clock=lambda: 1_000)
        book = VenueQuote(venue="kraken", symbol="BTC/USD", ts=900, bids=[(D(100), D(1))], asks=[(D(101), D(1))])
        await publisher.publish(book, 0.01)
        deliveries[0].set_exception(KafkaTimeoutError())  # the broker never acknowledged it
        await asyncio.sleep(0)  # done callbacks run
        await publisher.publish(book, 0.01)  # the next poll: the venue still shows this book
        return len(deliveries)

    assert asyncio.run(scenario()) == 2, "the snapshot whose delivery failed was never sent again"


# --- Supervisor ----------------------------------------------------------------------------------


def test_supervisor_does_not_give_up_on_a_task_that_recovers_between_rare_blips(monkeypatch):
    """worker/bootstrap.py:Supervisor._keep_running.

    Mechanism: ``failing_since`` is set at the first failure. It is cleared only when a
    single run outlasts give_up_s. A task that fails once, then works for 50 s, fails again,
    then works for another 50 s has its third failure measured from the first one
    (101 s > 60 s), and the supervisor gives up.

    Consequence: the documented rule is that a task "that keeps failing for give_up_s stops
    the process". Here a quote feed that hits a broker leader change every minute or so
    stops `sor worker` / `sor api` with exit 1, although it was healthy almost all the
    time. Each stop drains in-flight intents and triggers a consumer-group rebalance."""
    import worker.bootstrap as bootstrap
    from worker.observability import Health

    clock = types.SimpleNamespace(now=0.0)
    real_asyncio = asyncio

    async def fake_sleep(delay):
        clock.now += delay
        await real_asyncio.sleep(0)

    fake_asyncio = types.SimpleNamespace(**{name: getattr(real_asyncio, name) for name in dir(real_asyncio) if not name.startswith("__")})
    fake_asyncio.sleep = fake_sleep
    monkeypatch.setattr(bootstrap, "time", types.SimpleNamespace(monotonic=lambda: clock.now))
    monkeypatch.setattr(bootstrap, "asyncio", fake_asyncio)

    async def scenario():
        stop = real_asyncio.Event()
        supervisor = bootstrap.Supervisor(stop, Health(), give_up_s=60.0)
        calls = 0
        healthy = real_asyncio.Event()

        async def feed():
            nonlocal calls
            calls += 1
            if calls == 1:
                raise ConnectionError("blip 1")
            if calls in (2, 3):
                clock.now += 50.0  # ran well for 50 s
                raise ConnectionError(f"blip {calls}")
            healthy.set()
            await real_asyncio.Event().wait()

        supervisor.spawn("quote-feed", feed)
        task = supervisor.tasks[0]
        for _ in range(200):
            if healthy.is_set() or task.done():
                break
            await real_asyncio.sleep(0)
        for _ in range(5):
            await real_asyncio.sleep(0)  # the done callback (stop.set) runs
        gave_up = task.exception() if task.done() and not task.cancelled() else None
        stopped = stop.is_set()
        await supervisor.close()
        return gave_up, stopped, calls

    gave_up, stopped, calls = asyncio.run(scenario())
    assert calls == 4 and gave_up is None and not stopped, f"the process was stopped over {gave_up!r} (run {calls})"


# --- compose and kustomize -----------------------------------------------------------------------


def test_compose_ccxt_feed_metrics_are_reachable_on_the_published_port():
    """docker-compose.ccxt.yml, service ``feed``.

    Mechanism: the feed serves /metrics, /healthz and /readyz on SOR_HTTP_PORT (--http-port
    8082) and publishes "8082:8082". It does not set SOR_HTTP_HOST, and the default is
    127.0.0.1 (worker/config.py:Settings.http_host). The worker service of docker-compose.yml
    sets 0.0.0.0, and the README says compose does.

    Consequence: the published port is unreachable from the host. README step 1 of "What to
    check first" ("/readyz answers 200", sor_feed_quote_age_seconds) cannot be done against
    the compose feed, and nothing outside the container can scrape it."""
    feed = yaml.safe_load((ROOT / "docker-compose.ccxt.yml").read_text())["services"]["feed"]
    assert any(p.split(":")[-1] == "8082" for p in feed["ports"])
    assert feed["environment"].get("SOR_HTTP_HOST") == "0.0.0.0"


def test_kustomize_venues_point_at_a_service_the_manifests_define():
    """deploy/base/venues.toml (the sor-venues ConfigMap of the production overlay).

    Mechanism: every venue is ``adapter = "http"`` at http://sor-paper-venue:8080/...
    (the file's own comment says "docker-compose", where the service is called paper-venue).
    No manifest in deploy/base or deploy/overlays/production defines a sor-paper-venue
    Service or a Deployment that runs ``paper-venue``.

    Consequence: ``kubectl apply -k deploy/overlays/production`` starts workers that become
    ready and route every order to a host that does not resolve. Every leg is a VenueError,
    reconciled for SOR_RECONCILE_TIMEOUT_MS and reported unknown, and the breakers open."""
    from worker.config import load_venues

    services = set()
    for folder in ("deploy/base", "deploy/overlays/production"):
        for path in sorted((ROOT / folder).glob("*.yaml")):
            for doc in yaml.safe_load_all(path.read_text()):
                if doc and doc.get("kind") == "Service":
                    services.add(doc["metadata"]["name"])
    hosts = {urlparse(v.url).hostname for v in load_venues(ROOT / "deploy/base/venues.toml") if v.adapter == "http"}
    missing = {h for h in hosts if h.split(".")[0] not in services}
    assert not missing, f"venues reach {sorted(missing)}; services defined: {sorted(services)}"


def test_the_paper_venue_checks_signatures_for_a_venue_whose_name_has_capitals():
    """paper_server.py `PaperVenueServer.__init__` kept credentials by exact name: nested env keys
    arrive lowercased (SOR_VENUE_CREDENTIALS__OKX__* -> "okx"), so a venue named OKX took
    unsigned orders while the worker signed them (the same case by_name fixed for the worker)."""
    from worker.venues.paper_server import PaperVenueServer

    creds = types.SimpleNamespace(api_key="k", api_secret=types.SimpleNamespace(get_secret_value=lambda: SECRET))
    server = PaperVenueServer([VenueConfig(name="OKX")], lambda venue, symbol: None, credentials={"okx": creds})
    assert server.credentials.get("OKX") is creds


def test_a_misspelt_key_in_a_table_of_the_config_file_is_refused(monkeypatch, tmp_path):
    """config.py `_ExactTomlSource`: unknown keys were refused at the top level only. A typo in
    a table (``[topics]`` ``jornal = "..."``) was dropped, and the worker wrote its journal to
    the default topic while its operator believed it renamed."""
    from worker.cli.service import load_settings
    from worker.domain.errors import InputError

    _clear_sor_env(monkeypatch)
    cfg = tmp_path / "sor.toml"
    cfg.write_text('[topics]\njornal = "desk7.journal.v1"\n')
    monkeypatch.setenv("SOR_CONFIG_FILE", str(cfg))
    with pytest.raises(InputError) as info:
        load_settings({})
    assert "topics.jornal" in str(info.value)
