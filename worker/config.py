"""Frozen, validated configuration: ``SOR_*`` environment variables, flags, a venues file.

One :class:`Settings` object is built at start (``worker.bootstrap``) and passed down; nothing
reads the environment anywhere else.
"""

from __future__ import annotations

import os
import tomllib
from decimal import Decimal
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, TomlConfigSettingsSource

from worker.domain.errors import InputError, describe
from worker.domain.models import VenueConfig


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
    max_in_flight: int = Field(default=256, ge=1, le=100_000)
    leg_timeout_ms: int = Field(default=2_000, ge=1)
    reconcile_timeout_ms: int = Field(default=30_000, ge=0)
    max_rounds: int = Field(default=3, ge=1, le=20)
    # Subtract this worker's own planned takes from a snapshot until the next one arrives.
    # Off by default so that every plan is exactly `sor plan` on the cached books.
    reserve_own_liquidity: bool = False
    execution_deadline_ms: int = Field(default=10_000, ge=1)
    intent_ttl_ms: int = Field(default=60_000, ge=1)
    commit_interval_ms: int = Field(default=200, ge=10)
    session_timeout_ms: int = Field(default=6_000, ge=1_000)  # Kafka's minimum: fast failover; Tansu joins in half of it
    heartbeat_interval_ms: int = Field(default=2_000, ge=100)
    breaker_threshold: int = Field(default=5, ge=1)
    breaker_cooldown_ms: int = Field(default=5_000, ge=1)
    shutdown_timeout_s: float = Field(default=30.0, gt=0)
    connect_timeout_s: float = Field(default=60.0, ge=0)
    dedupe_capacity: int = Field(default=1_000_000, ge=1)
    account_max_notional: dict[str, Decimal] = Field(default_factory=dict)
    venue_credentials: dict[str, VenueCredentials] = Field(default_factory=dict)
    # Per-account venue allow-list, e.g. SOR_ACCOUNT_VENUES='{"acct-7": ["binance", "kraken"]}'
    account_venues: dict[str, list[str]] = Field(default_factory=dict)  # SOR_VENUE_CREDENTIALS__BINANCE__API_KEY
    default_max_notional: Decimal | None = None
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
    http_port: int | None = Field(default=None, ge=0, le=65535)
    # `sor feed`: how often each venue's book is polled, how many levels, and how long one
    # request may take before it counts as failed (that venue only; the others go on).
    feed_interval_ms: int = Field(default=500, ge=10, le=600_000)
    feed_depth: int = Field(default=20, ge=1, le=5_000)
    feed_timeout_ms: int = Field(default=3_000, ge=10, le=600_000)

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, env_settings, dotenv_settings,
                                   file_secret_settings) -> tuple[PydanticBaseSettingsSource, ...]:
        """Flags > ``SOR_*`` env vars > ``SOR_CONFIG_FILE`` (TOML) > ``SOR_SECRETS_DIR`` files > defaults."""
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = os.environ.get("SOR_CONFIG_FILE")
        if config_file:
            if not Path(config_file).is_file():
                raise InputError(f"SOR_CONFIG_FILE: {config_file} does not exist")
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=config_file))
        secrets_dir = os.environ.get("SOR_SECRETS_DIR")
        if secrets_dir:
            from pydantic_settings import SecretsSettingsSource

            sources.append(SecretsSettingsSource(settings_cls, secrets_dir=secrets_dir))
        return tuple(sources)


def load_venues(path: Path) -> list[VenueConfig]:
    """Read a TOML venues file (``[[venues]]`` tables); errors name the file and the field."""
    try:
        doc = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(f"venues file {path}: not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"venues file {path}: invalid TOML: {exc}") from None
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
