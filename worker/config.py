"""Frozen, validated configuration: ``SOR_*`` environment variables, flags, a venues file.

One :class:`Settings` object is built at start (``worker.bootstrap``) and passed down; nothing
reads the environment anywhere else.
"""

from __future__ import annotations

import os
import tomllib
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, TomlConfigSettingsSource

from worker.domain.errors import InputError, describe
from worker.domain.models import VenueConfig
from worker.domain.numbers import is_json_number


def _notional_cap(value):
    """An exact decimal >= 0. A JSON number with a fraction in an env var
    (SOR_ACCOUNT_MAX_NOTIONAL='{"a": 1.5}') is a binary float by then (12345678901234567.89 would
    be 12345678901234568): refused, by name. No upper bound: a cap is compared with qty x
    limit price, and a huge cap is how one account is exempted from the default one."""
    if isinstance(value, float):
        raise ValueError("a number with a fraction is read as a binary float here: write it as a string, e.g. \"1500000.50\"")
    if isinstance(value, str) and is_json_number(value.strip()):
        number = Decimal(value.strip())
    elif type(value) is int or type(value) is Decimal:
        number = Decimal(value)
    else:  # a boolean, a list (Decimal would read it as a tuple), "+5", "1_000", other scripts' digits
        raise ValueError("must be a decimal number as in JSON, e.g. \"1500000.50\"")
    if not number.is_finite() or number < 0:
        raise ValueError("must be a finite number >= 0")
    return number + 0  # -0 is 0


#: A notional cap: an exact decimal >= 0, never through a float.
NotionalCap = Annotated[Decimal, BeforeValidator(_notional_cap)]


#: Settings whose TOML numbers are money: read exactly. Every other number stays a float as
#: TOML reads it (an int setting written 1e99999999 is then refused at once as infinite).
_EXACT_SETTINGS = ("default_max_notional", "account_max_notional")


class _ExactTomlSource(TomlConfigSettingsSource):
    """``SOR_CONFIG_FILE`` with the notional caps read as the venues file is read: TOML numbers
    with a fraction as exact decimals, never binary floats."""

    def _read_file(self, file_path):
        where = f"SOR_CONFIG_FILE {file_path}"
        doc = read_exact_toml(Path(file_path), where)
        # Settings ignore unknown keys (the environment holds other SOR_* names), but a key in
        # this file is meant for them: a typo (default_max_notonal) would start without a cap.
        unknown = _unknown_keys(doc, Settings)
        if unknown:
            raise InputError(f"{where}: unknown setting(s) {', '.join(map(repr, unknown))}")
        return {key: value if key in _EXACT_SETTINGS else _floats(value) for key, value in doc.items()}


def read_exact_toml(path: Path, where: str) -> dict:
    """A TOML file with its fractions as exact decimals; an unreadable one is an
    :class:`InputError` naming ``where`` (not found, not UTF-8, not TOML, a directory)."""
    try:
        return tomllib.loads(path.read_text(), parse_float=Decimal)
    except FileNotFoundError:
        raise InputError(f"{where}: not found") from None
    except UnicodeDecodeError:
        raise InputError(f"{where}: not UTF-8 text") from None
    except OSError as exc:  # a directory, no permission
        raise InputError(f"{where}: cannot be read: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"{where}: invalid TOML: {exc}") from None


def _unknown_keys(doc: dict, model: type[BaseModel], prefix: str = "") -> list[str]:
    """Keys of ``doc`` that are not fields of ``model``, tables of a model-typed field
    included (``topics.jornal``): the file's keys are all meant for the settings."""
    out = []
    for key, value in doc.items():
        field = model.model_fields.get(key)
        if field is None:
            out.append(prefix + key)
        elif isinstance(value, dict) and isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            out += _unknown_keys(value, field.annotation, f"{prefix}{key}.")
    return sorted(out)


def _floats(value):
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, dict):
        return {k: _floats(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_floats(v) for v in value]
    return value


class Topics(BaseModel):
    """Topic names; every one can be renamed (``SOR_TOPICS__INTENTS=...``)."""

    model_config = ConfigDict(frozen=True)

    intents: str = "sor.intents.v1"
    quotes: str = "sor.quotes.v1"
    plans: str = "sor.plans.v1"
    executions: str = "sor.executions.v1"
    fills: str = "sor.fills.v1"
    dlq: str = "sor.dlq.v1"
    journal: str = "sor.journal.v1"


class VenueCredentials(BaseModel):
    """API credentials of one real venue (from a Kubernetes Secret via env or SOR_SECRETS_DIR)."""

    model_config = ConfigDict(frozen=True)

    api_key: str
    api_secret: SecretStr


class ApiKey(BaseModel):
    """One key of `sor api`: the HMAC secret clients sign with, and the account it trades for."""

    model_config = ConfigDict(frozen=True)

    secret: SecretStr
    account_id: str = Field(min_length=1, max_length=128)


#: Settings that hold secrets: an error about one never echoes its value.
SECRET_SETTINGS = frozenset({"api_keys", "venue_credentials", "sasl_password"})


class Settings(BaseSettings):
    """Everything the worker needs to run; see the README's configuration table."""

    model_config = SettingsConfigDict(env_prefix="SOR_", env_nested_delimiter="__", frozen=True, extra="ignore")

    bootstrap_servers: str = "127.0.0.1:9092"
    venues_file: Path | None = None
    group_id: str = "sor-worker"
    client_id: str = "sor-worker"
    topics: Topics = Topics()
    topic_partitions: int = Field(default=6, ge=1, le=10_000)
    topic_replication: int = Field(default=1, ge=1, le=10)
    max_quote_age_ms: int = Field(default=2_000, ge=0)
    #: Branch-and-bound nodes per plan before the best allocation found so far is taken
    #: (``optimal: false`` in the plan). Bounds the worst case of adversarial lot steps.
    routing_node_limit: int = Field(default=2_000, ge=1, le=10_000_000)
    max_in_flight: int = Field(default=256, ge=1, le=100_000)
    leg_timeout_ms: int = Field(default=2_000, ge=1)
    reconcile_timeout_ms: int = Field(default=30_000, ge=0)
    max_rounds: int = Field(default=3, ge=1, le=20)
    # Subtract this worker's own takes from the books until a snapshot newer than the leg's
    # acknowledgement arrives; without it, a burst of intents all aims at the same top levels.
    # Off: every plan is exactly `sor plan` on the cached books (reproducible plans).
    reserve_own_liquidity: bool = True
    execution_deadline_ms: int = Field(default=10_000, ge=1)
    # Legs still unknown after reconciliation are asked about again this often, for this long.
    sweep_interval_ms: int = Field(default=5_000, ge=10)
    sweep_max_age_ms: int = Field(default=7 * 24 * 3_600_000, ge=1)
    intent_ttl_ms: int = Field(default=60_000, ge=1)
    commit_interval_ms: int = Field(default=200, ge=10)
    session_timeout_ms: int = Field(default=6_000, ge=1_000)  # Kafka's minimum: fast failover; Tansu joins in half of it
    heartbeat_interval_ms: int = Field(default=2_000, ge=100)
    breaker_threshold: int = Field(default=5, ge=1)
    breaker_cooldown_ms: int = Field(default=5_000, ge=1)
    shutdown_timeout_s: float = Field(default=30.0, gt=0)
    connect_timeout_s: float = Field(default=60.0, ge=0)
    dedupe_capacity: int = Field(default=1_000_000, ge=1)
    account_max_notional: dict[str, NotionalCap] = Field(default_factory=dict)
    venue_credentials: dict[str, VenueCredentials] = Field(default_factory=dict)
    # Per-account venue allow-list, e.g. SOR_ACCOUNT_VENUES='{"acct-7": ["binance", "kraken"]}'
    account_venues: dict[str, list[str]] = Field(default_factory=dict)  # SOR_VENUE_CREDENTIALS__BINANCE__API_KEY
    default_max_notional: NotionalCap | None = None
    # "auto": try the idempotent producer, fall back (with a warning) where the broker refuses
    # InitProducerId, as the embedded Tansu broker does. Production sets "true".
    enable_idempotence: Literal["auto", "true", "false"] = "auto"
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: Path | None = None
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None
    log_format: Literal["json", "console"] = "json"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    # The largest record this worker produces (the producer's max_request_size; the broker's
    # message.max.bytes must be at least this). Bigger outcomes are split, never refused.
    max_request_bytes: int = Field(default=1_048_576, ge=65_536, le=100 * 1_048_576)
    # How long a fetch may wait for data (aiokafka's default is 500 ms, and a broker that
    # answers only when the wait runs out, as Tansu does, adds that to every intent).
    fetch_max_wait_ms: int = Field(default=10, ge=0, le=10_000)
    http_port: int | None = Field(default=None, ge=0, le=65535)
    # Loopback by default: /metrics tells a lot about the order flow. Pods and compose set 0.0.0.0.
    http_host: str = "127.0.0.1"
    # --- `sor api` (the HTTP front; see docs/README-api.md) ---
    api_host: str = "127.0.0.1"
    api_port: int = Field(default=8090, ge=0, le=65535)
    # SOR_API_KEYS='{"<key>": {"secret": "<hmac secret>", "account_id": "acct-1"}}'
    api_keys: dict[str, ApiKey] = Field(default_factory=dict)
    # Venue-style symbols (Binance's BTCUSDT) -> ours; also resolves /v1/route/BTCUSDT.
    api_symbols: dict[str, str] = Field(default_factory=lambda: {"BTCUSDT": "BTC/USD", "ETHUSDT": "ETH/USD", "SOLUSDT": "SOL/USD"})
    api_default_quote: str = "USD"  # /v1/route/BTC means BTC/<this>
    api_result_timeout_ms: int = Field(default=10_000, ge=0)  # then 202 + poll (Binance: -1007)
    api_result_lookback_ms: int = Field(default=86_400_000, ge=0)  # results re-read at start: the idempotency window
    api_result_capacity: int = Field(default=100_000, ge=1)
    api_max_body_bytes: int = Field(default=16_384, ge=256)
    api_rate_limit_per_s: float = Field(default=50.0, gt=0)  # per API key (per client address when unsigned)
    api_rate_limit_burst: int = Field(default=100, ge=1)
    # --- hostile input and bounded resources (issue 11) ---
    # A quote dated further ahead than this is refused (DLQ, field `ts`): it would shadow
    # every newer real snapshot of its book.
    max_clock_skew_ms: int = Field(default=5_000, ge=0, le=3_600_000)
    # Levels kept per book side; deeper levels are dropped and the plan lists the book.
    max_book_levels: int = Field(default=1_000, ge=1, le=100_000)
    # Start-up reads at most this many latest quote records per partition (the topic is
    # compacted; older snapshots are stale anyway).
    quote_lookback_records: int = Field(default=20_000, ge=1)
    # DLQ records keep this many bytes of the original value (plus its sha256 and size).
    dlq_max_value_bytes: int = Field(default=16_384, ge=0, le=500_000)
    dlq_max_error_chars: int = Field(default=1_000, ge=80, le=100_000)
    # Done markers in the journal are dropped after this long (intents are expired by then).
    dedupe_retention_ms: int = Field(default=86_400_000, ge=60_000)
    # `sor paper-venue` listens here; compose and Kubernetes set 0.0.0.0.
    paper_venue_host: str = "127.0.0.1"
    # `sor feed`: how often each venue's book is polled, how many levels, and how long one
    # request may take before it counts as failed (that venue only; the others go on).
    feed_interval_ms: int = Field(default=500, ge=10, le=600_000)
    feed_depth: int = Field(default=20, ge=1, le=5_000)
    feed_timeout_ms: int = Field(default=3_000, ge=10, le=600_000)
    # --- throughput (issue 12) ---
    # The producer's batch per partition (aiokafka's max_batch_size; capped at
    # max_request_bytes). aiokafka queues one batch per partition and a send waits while it
    # is full; at 16 KB (its default) a few journal records fill it, so every intent queued
    # behind it waits a broker round trip, and all of them wake on each drain.
    producer_batch_bytes: int = Field(default=524_288, ge=16_384, le=100 * 1_048_576)
    # How long the producer waits to fill a batch before sending it (aiokafka's linger_ms).
    producer_linger_ms: int = Field(default=0, ge=0, le=1_000)

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, env_settings, dotenv_settings,
                                   file_secret_settings) -> tuple[PydanticBaseSettingsSource, ...]:
        """Flags > ``SOR_*`` env vars > ``SOR_CONFIG_FILE`` (TOML) > ``SOR_SECRETS_DIR`` files > defaults."""
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = os.environ.get("SOR_CONFIG_FILE")
        if config_file:
            if not Path(config_file).exists():
                raise InputError(f"SOR_CONFIG_FILE: {config_file} does not exist")
            if not Path(config_file).is_file():
                raise InputError(f"SOR_CONFIG_FILE: {config_file} is not a file")
            sources.append(_ExactTomlSource(settings_cls, toml_file=config_file))
        secrets_dir = os.environ.get("SOR_SECRETS_DIR")
        if secrets_dir:
            from pydantic_settings import SecretsSettingsSource

            sources.append(SecretsSettingsSource(settings_cls, secrets_dir=secrets_dir))
        return tuple(sources)


def load_venues(path: Path) -> list[VenueConfig]:
    """Read a TOML venues file (``[[venues]]`` tables); errors name the file and the field."""
    doc = read_exact_toml(path, f"venues file {path}")
    tables = doc.get("venues")
    if not isinstance(tables, list) or not tables:
        raise InputError(f"venues file {path}: expected at least one [[venues]] table")
    venues = []
    for i, table in enumerate(tables):
        try:
            venues.append(VenueConfig.model_validate(table))
        except ValidationError as exc:
            raise InputError(f"venues file {path}: {describe(exc, f'venues[{i}]')}") from None
    names = [v.name for v in venues]
    if len(set(names)) != len(names):
        raise InputError(f"venues file {path}: duplicate venue names in {names}")
    return venues


def kafka_security(settings: Settings) -> dict:
    """aiokafka keyword arguments for TLS and SASL; the password stays a SecretStr until here."""
    kwargs: dict = {"security_protocol": settings.security_protocol}
    if settings.security_protocol in ("SSL", "SASL_SSL"):
        from aiokafka.helpers import create_ssl_context

        kwargs["ssl_context"] = create_ssl_context(
            cafile=str(settings.ssl_cafile) if settings.ssl_cafile else None,
            certfile=str(settings.ssl_certfile) if settings.ssl_certfile else None,
            keyfile=str(settings.ssl_keyfile) if settings.ssl_keyfile else None,
        )
    if settings.security_protocol.startswith("SASL"):
        kwargs["sasl_mechanism"] = settings.sasl_mechanism or "PLAIN"
        kwargs["sasl_plain_username"] = settings.sasl_username
        kwargs["sasl_plain_password"] = settings.sasl_password.get_secret_value() if settings.sasl_password else None
    return kwargs
