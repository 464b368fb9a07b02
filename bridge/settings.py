"""Gateway settings: the only code that reads the environment and config files.

Sources, strongest first: command-line options, `BRIDGE_*` environment
variables (nested with `__`, e.g. `BRIDGE_LIMITS__MAX_COUNT=100`), the config
file given to `bridge serve --config` (YAML or TOML), then these defaults.
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from bridge.errors import ConfigError, Problem
from bridge.urls import http_url

__all__ = [
    "AdminSettings",
    "AsyncWriteSettings",
    "AuditSettings",
    "AuthSettings",
    "IdempotencySettings",
    "Limits",
    "Settings",
    "StoreSettings",
    "SystemRef",
    "Tls",
    "environment",
    "load_settings",
    "load_worker_settings",
    "share_with_workers",
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SystemTls(_Strict):
    """HTTPS to a legacy system; its certificate and host name are always verified."""

    ca_file: Path | None = Field(None, description="Trust these CAs (PEM), e.g. the hospital's.")
    cert: Path | None = Field(None, description="Client certificate chain (PEM): mutual TLS.")
    key: Path | None = Field(None, description="The client certificate's private key (PEM).")


class SystemRef(_Strict):
    """A legacy system folder this gateway serves, with optional overrides."""

    path: Path
    endpoint: str | None = Field(None, description="Overrides the endpoint in system.yaml.")
    origin: str | None = Field(
        None,
        description="Overrides scheme, host and port of the endpoint, keeping its path "
        "(e.g. every system of a test hospital on one port).",
    )
    tls: SystemTls | None = Field(
        None, description="HTTPS to this system: own CA bundle, client certificate."
    )

    @field_validator("endpoint", "origin")
    @classmethod
    def _http(cls, value: str | None) -> str | None:
        # Else every request to the system would answer 503 and never say why.
        if value is not None and not http_url(value):
            raise ValueError(
                f"'{value}' is not an http:// or https:// URL with a host, like "
                "https://ehr.example.org/soap"
            )
        return value


class Limits(_Strict):
    default_count: int = Field(20, ge=1, description="Page size when _count is not given.")
    max_count: int = Field(200, ge=1, description="The largest _count honoured.")
    max_body_bytes: int = Field(1_048_576, ge=1024)
    max_url_bytes: int = Field(8192, ge=256)
    max_json_depth: int = Field(
        64, ge=8, le=512, description="Deepest nesting of objects and arrays in a JSON body."
    )
    rate_per_second: float = Field(
        10_000,
        ge=0,
        description="Requests a second one client (token client_id, else remote address) may "
        "make, per worker; 0 turns rate limiting off. The default only stops a runaway "
        "client: set what one app may really need.",
    )
    rate_burst: int = Field(
        20_000, ge=1, description="Requests a client may make at once before the rate applies."
    )
    rate_max_clients: int = Field(
        100_000, ge=100, description="Clients tracked at once; the least recent are forgotten."
    )
    max_concurrent_bundles: int = Field(
        4,
        ge=1,
        description="Batch and transaction Bundles one worker works on at once; more wait "
        "their turn, unread, so memory stays bounded however many arrive together.",
    )
    bundle_wait: float = Field(
        30, gt=0, description="Seconds a Bundle may wait for its turn before a 503."
    )


class AuthSettings(_Strict):
    mode: Literal["jwt", "off"] = Field(
        "jwt", description="'off' serves without tokens and warns on every request."
    )
    issuer: str | None = None
    audience: str | None = Field(None, description="Defaults to the FHIR base URL.")
    jwks: dict[str, Any] | None = Field(None, description="The issuer's public keys, inline.")
    jwks_file: Path | None = None
    jwks_url: str | None = Field(
        None,
        description="Fetch the issuer's keys here; without jwks, jwks_file or jwks_url the "
        "gateway finds jwks_uri through {issuer}/.well-known/openid-configuration.",
    )
    ca_file: Path | None = Field(
        None, description="CA bundle (PEM) trusted for discovery, JWKS and introspection."
    )
    jwks_refetch_interval: float = Field(
        30,
        ge=0,
        le=3600,
        description="Fetch the issuer's keys at most once in this many seconds (an unknown "
        "kid, or keys unreachable, triggers a fetch).",
    )
    jwks_max_age: float = Field(
        3600, ge=60, description="Refetch the keys once they are this many seconds old."
    )
    http_timeout: float = Field(
        10, gt=0, le=60, description="Seconds for one discovery, JWKS or introspection call."
    )
    algorithms: list[str] = Field(default_factory=lambda: ["RS256", "RS384", "ES256", "ES384"])
    leeway: int = Field(60, ge=0, le=600, description="Clock skew allowed, seconds.")
    authorization_endpoint: str | None = Field(None, description="Published for SMART apps.")
    token_endpoint: str | None = Field(None, description="Published for SMART apps.")
    revocation_endpoint: str | None = None
    introspection_endpoint: str | None = Field(
        None,
        description="RFC 7662 endpoint for opaque tokens; by default the one discovery names.",
    )
    introspection_client_id: str | None = Field(
        None, description="The gateway's client id at the introspection endpoint."
    )
    introspection_client_secret: SecretStr | None = None
    introspection_cache: float = Field(
        30,
        ge=0,
        le=300,
        description="Seconds an introspection answer is reused (never past the token's exp): "
        "a revoked opaque token is refused after at most this long.",
    )
    scopes_supported: list[str] = Field(
        default_factory=lambda: [
            "openid",
            "fhirUser",
            "launch/patient",
            "offline_access",
            "patient/*.rs",
            "user/*.rs",
            "user/*.cruds",
            "system/*.rs",
        ]
    )


class Tls(_Strict):
    cert: Path | None = Field(None, description="PEM certificate chain; turns HTTPS on.")
    key: Path | None = None
    client_ca: Path | None = Field(None, description="Require client certificates from this CA.")
    ciphers: str = "ECDHE+AESGCM:ECDHE+CHACHA20:DHE+AESGCM"


class StoreSettings(_Strict):
    url: str = Field(
        "sqlite:///bridge-store.db",
        description="The gateway's store (consents, revocations, audit trail, idempotency "
        "keys, queued writes): sqlite:///PATH (embedded, the default) or "
        "postgresql://USER:PASSWORD@HOST:PORT/DB for several replicas.",
    )
    poll_interval: float = Field(
        1.0,
        gt=0,
        le=60,
        description="Seconds between checks for revocations and consents other replicas wrote.",
    )
    session_lease_ttl: float = Field(
        60,
        ge=5,
        le=3600,
        description="Seconds a process's hold on a legacy session slot outlives its last "
        "renewal: a killed replica's slots come free after this long. Keep it at least the "
        "legacy system's idle timeout.",
    )


class AdminSettings(_Strict):
    token: SecretStr | None = Field(
        None,
        description="Bearer credential for /admin/* (revocations); admin endpoints are off "
        "without one.",
    )


class AuditSettings(_Strict):
    sink_url: str | None = Field(
        None, description="Also POST every AuditEvent (JSON) to this URL, best effort."
    )
    group_commit: float = Field(
        0.003,
        ge=0,
        le=0.05,
        description="Seconds a commit of the audit trail (SQLite) waits for the AuditEvents "
        "of requests under way, so that they share it; never when a request is alone, never "
        "past the last of them. Longer: fewer commits under load, that much more latency.",
    )


class IdempotencySettings(_Strict):
    ttl: float = Field(
        86_400, ge=60, description="Seconds a stored Idempotency-Key result is replayed."
    )
    wait: float = Field(
        5,
        ge=0,
        le=60,
        description="Seconds a repeat waits for the first request with its key before 409.",
    )
    pending_timeout: float = Field(
        300,
        ge=30,
        description="Seconds after which a key whose request never finished (its process "
        "died) may be used again.",
    )


class AsyncWriteSettings(_Strict):
    workers: int = Field(
        2, ge=0, le=64, description="Writes one gateway process delivers at once (0: none)."
    )
    poll_interval: float = Field(
        0.5, gt=0, le=60, description="Seconds between looks for writes other replicas queued."
    )
    lease: float = Field(
        60,
        ge=2,
        le=3600,
        description="Seconds a delivery holds its write without renewing; a write held by a "
        "process that died is taken up again after this long.",
    )
    retry_base: float = Field(1, gt=0, description="First pause after a failed attempt, s.")
    retry_cap: float = Field(60, gt=0, description="Longest pause between attempts, s.")
    give_up_after: float = Field(
        86_400,
        ge=60,
        description="Seconds after acceptance when a write the legacy system never took is "
        "failed (503) instead of tried again.",
    )
    keep_results: float = Field(
        86_400, ge=60, description="Seconds a status URL answers after its write finished."
    )
    unsure_delay: float = Field(
        15,
        ge=0,
        le=3600,
        description="Seconds to wait after an interrupted delivery before checking whether "
        "it was applied: longer than a legacy call may take, so one still under way lands "
        "first.",
    )
    shutdown_grace: float = Field(
        10, ge=0, le=600, description="Seconds a delivery may finish in at shutdown."
    )
    measure_interval: float = Field(
        5, gt=0, le=300, description="Seconds between readings of the queue's depth."
    )
    purge_interval: float = Field(
        600, gt=0, description="Seconds between purges of old results and expired keys."
    )


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="BRIDGE_", env_nested_delimiter="__", extra="forbid", frozen=True
    )

    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    base_url: str | None = Field(
        None, description="The public FHIR base, e.g. https://fhir.example.org/fhir."
    )
    systems: list[SystemRef] = Field(
        default_factory=lambda: [
            SystemRef(path=p.parent, endpoint=None, origin=None)
            for p in sorted(Path("mappings").glob("*/system.yaml"))
        ],
        description="The legacy system folders served; by default every folder in mappings/.",
    )
    paging_key: SecretStr | None = Field(
        None, description="Seals paging links; give every replica the same one."
    )
    page_ttl: int = Field(3600, ge=60)
    limits: Limits = Field(default_factory=lambda: Limits())
    auth: AuthSettings = Field(default_factory=lambda: AuthSettings())
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    reload_mappings: bool = Field(
        False, description="Watch the mapping folders and swap in clean edits while serving."
    )
    wsdl_cache_dir: Path | None = Field(
        default_factory=lambda: _user_cache_dir(),
        description="Where what zeep read of each WSDL is kept between starts, checked "
        "against the SHA-256 of every document it came from; empty or 'off': read every "
        "WSDL with zeep at each start. Default: $XDG_CACHE_HOME or ~/.cache, under "
        "fhir-soap-bridge/wsdl.",
    )
    workers: int = Field(1, ge=1, le=32, description="Gateway processes sharing the port.")
    busy_poll: float | None = Field(
        None,
        ge=0,
        le=0.001,
        description="Seconds each gateway process keeps polling its connections after "
        "activity (a legacy call sent, an answer written) before it sleeps: an event "
        "that comes that soon costs no wake-up. The window that ends each stretch of "
        "polling, spent for nothing, is capped at a tenth of each second per process "
        "(bridge/busypoll.py). 0: sleep at once. Default: 0.00025 while `workers` is "
        "below the cores the gateway may run on (fewer under a CPU quota), else 0 (no "
        "idle core to poll on).",
    )
    tls: Tls = Field(default_factory=lambda: Tls())
    cors_origins: list[str] = Field(
        default_factory=list, description="Browser origins allowed to call (SMART web apps)."
    )
    trusted_proxies: list[str] = Field(
        default_factory=list,
        description="Addresses or networks (e.g. 10.0.0.0/8) of the reverse proxies in "
        "front of the gateway: from them X-Forwarded-For and X-Forwarded-Proto are "
        "believed, so the audit trail and the rate limits see the client's own address. "
        "Empty (the default): every client is the connection's peer, whatever the headers "
        "say.",
    )
    store: StoreSettings = Field(default_factory=lambda: StoreSettings())
    admin: AdminSettings = Field(default_factory=lambda: AdminSettings())
    audit: AuditSettings = Field(default_factory=lambda: AuditSettings())
    idempotency: IdempotencySettings = Field(default_factory=lambda: IdempotencySettings())
    async_writes: AsyncWriteSettings = Field(default_factory=lambda: AsyncWriteSettings())

    @field_validator("trusted_proxies")
    @classmethod
    def _proxy_networks(cls, value: list[str]) -> list[str]:
        for item in value:
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError:
                raise ValueError(
                    f"{item!r} is not an IP address or network; write e.g. 10.0.0.7 or 10.0.0.0/8"
                ) from None
        return value

    @field_validator("wsdl_cache_dir", mode="before")
    @classmethod
    def _cache_off(cls, value: object) -> object:
        if isinstance(value, str) and value.strip().lower() in ("", "off", "none"):
            return None
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, _FileSource(settings_cls, _file_data))


# The parsed config file, handed to the source below for one load_settings call.
_file_data: dict[str, Any] = {}


class _FileSource(PydanticBaseSettingsSource):
    def __init__(self, settings_cls: type[BaseSettings], data: dict[str, Any]) -> None:
        super().__init__(settings_cls)
        self.data = dict(data)

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return self.data.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return self.data


def _read_file(path: Path) -> tuple[dict[str, Any], Any]:
    from bridge.mapping.loader import _plain, load_document

    if path.suffix == ".toml":
        try:
            return tomllib.loads(path.read_text(encoding="utf-8")), None
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError([Problem(str(path), 1, 1, f"cannot read config: {exc}")]) from exc
    doc = load_document(path, anchors=True)
    data = _plain(doc.root)
    return data, doc


def load_settings(config: Path | None = None, **overrides: Any) -> Settings:
    """Build the settings; raise ConfigError naming the file and field on a bad value."""
    global _file_data
    doc = None
    data: dict[str, Any] = {}
    if config is not None:
        data, doc = _read_file(config)
        base = config.parent
        for ref in data.get("systems", []) or []:
            if isinstance(ref, dict) and isinstance(ref.get("path"), str):
                ref["path"] = str((base / ref["path"]).resolve())
    _file_data = data
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            loc = tuple(error["loc"])
            where = ".".join(str(p) for p in loc)
            message = f"{where}: {error['msg']}"
            if doc is not None:
                problems.append(doc.problem(loc, message))
            else:
                source = str(config) if config else "environment (BRIDGE_*)"
                problems.append(Problem(source, 1, 1, message))
        raise ConfigError(problems) from exc
    finally:
        _file_data = {}


_CONFIG_VARIABLE = "BRIDGE_CONFIG_FILE"


def share_with_workers(config: Path | None, settings: Settings) -> None:
    """Let worker processes load the same settings, and seal paging links alike."""
    if config is not None:
        os.environ[_CONFIG_VARIABLE] = str(config.resolve())
    # What the command line gave wins in the workers too.
    os.environ["BRIDGE_HOST"] = settings.host
    os.environ["BRIDGE_PORT"] = str(settings.port)
    os.environ["BRIDGE_WORKERS"] = str(settings.workers)
    os.environ["BRIDGE_RELOAD_MAPPINGS"] = str(settings.reload_mappings).lower()
    if settings.paging_key is None:
        import secrets

        os.environ["BRIDGE_PAGING_KEY"] = secrets.token_urlsafe(32)


def load_worker_settings() -> Settings:
    """Settings in a worker process started by `share_with_workers`."""
    path = os.environ.get(_CONFIG_VARIABLE)
    return load_settings(Path(path) if path else None)


def _user_cache_dir() -> Path | None:
    """The user's cache folder for compiled WSDLs (None when there is no home)."""
    base = os.environ.get("XDG_CACHE_HOME", "")
    try:
        # A relative XDG_CACHE_HOME is ignored, as the XDG spec says.
        root = Path(base) if os.path.isabs(base) else Path.home() / ".cache"
    except (KeyError, RuntimeError):  # no HOME and no passwd entry
        return None
    return root / "fhir-soap-bridge" / "wsdl" if root.is_absolute() else None


def environment() -> Mapping[str, str]:
    """The process environment, for the variables that mapping files name."""
    return dict(os.environ)
