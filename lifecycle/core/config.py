"""Settings: one frozen object, loaded once at the entry point from ``LIFECYCLE_*`` variables.

Tests pass a mapping instead of touching ``os.environ``.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lifecycle.core.errors import ConfigError

__all__ = ["Settings", "PROJECT_ROOT", "ENV_PREFIX"]

ENV_PREFIX = "LIFECYCLE_"
PROJECT_ROOT = Path(__file__).resolve().parents[2]  # lifecycle/core/config.py -> the checkout


def _default_state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "lifecycle"


def _bool(name: str, raw: str) -> bool:
    low = raw.strip().lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{ENV_PREFIX}{name}: expected true or false, got {raw!r}")


def _int(name: str, raw: str, *, minimum: int = 0) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{ENV_PREFIX}{name}: expected an integer, got {raw!r}") from None
    if value < minimum:
        raise ConfigError(f"{ENV_PREFIX}{name}: must be >= {minimum}, got {value}")
    return value


@dataclasses.dataclass(frozen=True)
class Settings:
    """Every knob of the pipeline. Secrets are kept out of ``repr``."""

    kafka_bootstrap: str | None = None
    postgres_dsn: str | None = dataclasses.field(default=None, repr=False)
    redis_url: str | None = None
    schema_registry_url: str | None = None
    topic_prefix: str = "lifecycle."
    topic_spec: Path = PROJECT_ROOT / "deploy" / "topics.yaml"
    retention_policy: Path = PROJECT_ROOT / "deploy" / "retention.yaml"
    topic_profile: str | None = None  # a profile of the topic spec, e.g. "production"
    http_host: str = "127.0.0.1"
    http_port: int = 6066
    http_token: str | None = dataclasses.field(default=None, repr=False)
    metrics_port: int | None = None  # a connector's /metrics (workers serve theirs on http_port)
    state_dir: Path = dataclasses.field(default_factory=_default_state_dir)
    log_level: str = "info"
    # Kafka security, passed through to every Kafka client.
    kafka_security_protocol: str = "PLAINTEXT"
    kafka_sasl_mechanism: str | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: str | None = dataclasses.field(default=None, repr=False)
    kafka_ssl_cafile: str | None = None
    kafka_ssl_certfile: str | None = None
    kafka_ssl_keyfile: str | None = None
    # None means: on for a real Kafka, off for the embedded broker (it rejects InitProducerId).
    kafka_idempotence: bool | None = None
    # Faust timings; the short defaults suit the embedded broker (see docs/operations.md).
    broker_session_timeout_s: int = 6
    # How long a consumer's fetch waits at the broker for records (docs/performance.md): Kafka answers
    # a waiting fetch when records arrive, so a long wait is free there; the embedded broker looks
    # again only at halving intervals, so this bounds its hop latency and sets its idle polling.
    fetch_wait_ms: int = 100
    embedded_pg_fast: bool = False
    # Time and windows (docs/processors.md).
    clock: str = "wall"  # "wall", or "event": now = the latest event time seen (tests, demo)
    session_idle_timeout_s: int = 1800
    traffic_k: int = 5
    traffic_grace_s: int = 300
    max_future_s: int = 86400  # events dated further ahead of the wall clock are refused
    hash_key: str | None = dataclasses.field(default=None, repr=False)  # "" (set but empty) is refused
    hash_key_file: Path | None = None  # default <state_dir>/secrets/hash.key (lifecycle/core/keys.py)
    # Crypto-shredding (docs/crypto-shredding.md).
    master_key: str | None = dataclasses.field(default=None, repr=False)  # 64 hex digits
    master_key_file: Path | None = None  # default <state_dir>/secrets/master.key (lifecycle/core/crypto.py)
    data_key_cache_s: int = 30  # how long a process keeps an unwrapped data key
    encrypt_personal_data: bool = True  # off only to measure what sealing costs (benchmarks/ceiling.py)
    keys_token: str | None = dataclasses.field(default=None, repr=False)  # bearer token(s) of /v1/keys
    read_token: str | None = dataclasses.field(default=None, repr=False)  # bearer token(s) of the read scope
    http_tokens_file: Path | None = None  # "SCOPE[,SCOPE] TOKEN" lines (streams/http/auth.py)
    http_body_timeout_s: int = 10  # a request body not received whole by then is refused (408)
    http_max_in_flight: int = 64  # requests served at once; more are answered 503
    keys_url: str | None = None  # where the emitter SDK asks for keys when it has no database
    proof_key_file: Path | None = None  # Ed25519 key that signs certificates (lifecycle/proofs.py)
    store_key: str | None = dataclasses.field(default=None, repr=False)  # a connector's ack key (storekeys.py)
    store_key_file: Path | None = None  # default <state_dir>/secrets/stores/NAME.key
    order_key_file: Path | None = None  # Ed25519 key that signs orders (lifecycle/core/orderkeys.py)
    order_public_key: str | None = None  # the pipeline's order key as a store is given it (base64)
    order_public_key_file: Path | None = None  # or a file holding it (default: order.pub beside the order key)
    # Erasure (docs/erasure.md).
    erasure_deadline_days: int = 30
    erasure_stores: tuple[str, ...] = ("postgres", "files", "mailing-list", "redis")
    erasure_retry_s: int = 30
    erasure_reverify_days: int = 30  # a completed erasure is verified again this often (0: never)
    access_keep_days: int = 7  # an access archive is kept this long for the person to fetch (docs/access.md)
    files_root: Path | None = None
    # Least privilege in PostgreSQL (lifecycle/core/pgroles.py): a role per component.
    postgres_roles: bool = True
    postgres_role_prefix: str = "lifecycle_"
    postgres_roles_dir: Path | None = None  # default <state_dir>/secrets/postgres-roles
    outbox_batch: int = 2000  # records per outbox relay round

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Build settings from ``LIFECYCLE_*`` entries of ``env`` (default: the process environment)."""
        env = os.environ if env is None else env
        kw: dict[str, Any] = {}

        def get(name: str) -> str | None:
            raw = env.get(ENV_PREFIX + name)
            return raw if raw not in (None, "") else None

        for name, attr in (
            ("KAFKA_BOOTSTRAP", "kafka_bootstrap"),
            ("POSTGRES_DSN", "postgres_dsn"),
            ("REDIS_URL", "redis_url"),
            ("SCHEMA_REGISTRY_URL", "schema_registry_url"),
            ("HTTP_HOST", "http_host"),
            ("HTTP_TOKEN", "http_token"),
            ("LOG_LEVEL", "log_level"),
            ("KAFKA_SECURITY_PROTOCOL", "kafka_security_protocol"),
            ("KAFKA_SASL_MECHANISM", "kafka_sasl_mechanism"),
            ("KAFKA_SASL_USERNAME", "kafka_sasl_username"),
            ("KAFKA_SASL_PASSWORD", "kafka_sasl_password"),
            ("KAFKA_SSL_CAFILE", "kafka_ssl_cafile"),
            ("KAFKA_SSL_CERTFILE", "kafka_ssl_certfile"),
            ("KAFKA_SSL_KEYFILE", "kafka_ssl_keyfile"),
            ("CLOCK", "clock"),
            ("TOPIC_PROFILE", "topic_profile"),
            ("HASH_KEY", "hash_key"),
            ("MASTER_KEY", "master_key"),
            ("KEYS_TOKEN", "keys_token"),
            ("READ_TOKEN", "read_token"),
            ("STORE_KEY", "store_key"),
            ("ORDER_PUBLIC_KEY", "order_public_key"),
            ("KEYS_URL", "keys_url"),
            ("POSTGRES_ROLE_PREFIX", "postgres_role_prefix"),
        ):
            value = get(name)
            if value is not None:
                kw[attr] = value
        prefix = env.get(ENV_PREFIX + "TOPIC_PREFIX")
        if prefix is not None:  # an empty prefix is a legitimate choice
            kw["topic_prefix"] = prefix
        if (raw := get("TOPIC_SPEC")) is not None:
            kw["topic_spec"] = Path(raw)
        if (raw := get("RETENTION_POLICY")) is not None:
            kw["retention_policy"] = Path(raw)
        if env.get(ENV_PREFIX + "HASH_KEY") == "":  # a secret set empty is a mistake, not a default
            kw["hash_key"] = ""
        if (raw := get("HASH_KEY_FILE")) is not None:
            kw["hash_key_file"] = Path(raw)
        if (raw := get("PROOF_KEY_FILE")) is not None:
            kw["proof_key_file"] = Path(raw)
        if (raw := get("STORE_KEY_FILE")) is not None:
            kw["store_key_file"] = Path(raw)
        if (raw := get("ORDER_PUBLIC_KEY_FILE")) is not None:
            kw["order_public_key_file"] = Path(raw)
        if (raw := get("ORDER_KEY_FILE")) is not None:
            kw["order_key_file"] = Path(raw)
        if (raw := get("HTTP_TOKENS_FILE")) is not None:
            kw["http_tokens_file"] = Path(raw)
        if (raw := get("POSTGRES_ROLES_DIR")) is not None:
            kw["postgres_roles_dir"] = Path(raw)
        if (raw := get("POSTGRES_ROLES")) is not None:
            kw["postgres_roles"] = _bool("POSTGRES_ROLES", raw)
        if (raw := get("MASTER_KEY_FILE")) is not None:
            kw["master_key_file"] = Path(raw)
        if (raw := get("ENCRYPT_PERSONAL_DATA")) is not None:
            kw["encrypt_personal_data"] = _bool("ENCRYPT_PERSONAL_DATA", raw)
        if (raw := get("STATE_DIR")) is not None:
            kw["state_dir"] = Path(raw)
        for name in ("HTTP_PORT", "METRICS_PORT"):
            if (raw := get(name)) is not None:
                kw[name.lower()] = _int(name, raw)
                if not 0 <= kw[name.lower()] <= 65535:
                    raise ConfigError(f"{ENV_PREFIX}{name}: not a port number: {raw!r}")
        if (raw := get("KAFKA_IDEMPOTENCE")) is not None:
            kw["kafka_idempotence"] = _bool("KAFKA_IDEMPOTENCE", raw)
        if (raw := get("BROKER_SESSION_TIMEOUT_S")) is not None:
            kw["broker_session_timeout_s"] = _int("BROKER_SESSION_TIMEOUT_S", raw, minimum=1)
        if (raw := env.get(ENV_PREFIX + "ERASURE_STORES")) is not None:
            kw["erasure_stores"] = tuple(s.strip() for s in raw.split(",") if s.strip())
        if (raw := get("FILES_ROOT")) is not None:
            kw["files_root"] = Path(raw)
        for name, minimum in (("SESSION_IDLE_TIMEOUT_S", 1), ("TRAFFIC_K", 1), ("TRAFFIC_GRACE_S", 0),
                              ("MAX_FUTURE_S", 0),
                              ("ERASURE_DEADLINE_DAYS", 1), ("ERASURE_RETRY_S", 1), ("ERASURE_REVERIFY_DAYS", 0),
                              ("ACCESS_KEEP_DAYS", 1),
                              ("OUTBOX_BATCH", 1), ("DATA_KEY_CACHE_S", 0), ("FETCH_WAIT_MS", 1),
                              ("HTTP_BODY_TIMEOUT_S", 1), ("HTTP_MAX_IN_FLIGHT", 1)):
            if (raw := get(name)) is not None:
                kw[name.lower()] = _int(name, raw, minimum=minimum)
        if (raw := get("EMBEDDED_PG_FAST")) is not None:
            kw["embedded_pg_fast"] = _bool("EMBEDDED_PG_FAST", raw)
        settings = cls(**kw)
        settings.validate()
        return settings

    def validate(self) -> None:
        """Refuse combinations that cannot work, with the variable named."""
        if self.clock not in ("wall", "event"):
            raise ConfigError(f"{ENV_PREFIX}CLOCK: 'wall' or 'event', got {self.clock!r}")
        protocols = {"PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"}
        if self.kafka_security_protocol not in protocols:
            raise ConfigError(
                f"{ENV_PREFIX}KAFKA_SECURITY_PROTOCOL: one of {sorted(protocols)}, "
                f"got {self.kafka_security_protocol!r}"
            )
        if not re.fullmatch(r"[a-z][a-z0-9_]{0,39}", self.postgres_role_prefix):
            raise ConfigError(f"{ENV_PREFIX}POSTGRES_ROLE_PREFIX: lower-case letters, digits and _, starting with a "
                              f"letter, at most 40; got {self.postgres_role_prefix!r}")
        if self.kafka_security_protocol.startswith("SASL") and not self.kafka_sasl_mechanism:
            raise ConfigError(f"{ENV_PREFIX}KAFKA_SASL_MECHANISM is required with SASL")

    def topic(self, name: str) -> str:
        """The full (prefixed) name of a contract topic."""
        return f"{self.topic_prefix}{name}"

    @property
    def app_id(self) -> str:
        """The workers' consumer group on the input topics (the intake loop), one per topic prefix;
        Faust's app is `<app_id>-acks`."""
        return f"{self.topic_prefix}worker" if self.topic_prefix else "lifecycle-worker"

    @property
    def files_dir(self) -> Path:
        """The files store's folder tree (one folder per account)."""
        return self.files_root or self.state_dir / "files"

    def with_servers(self, *, kafka_bootstrap: str, postgres_dsn: str, redis_url: str | None = None) -> Settings:
        """A copy pointing at concrete servers (used once the embedded stack has started)."""
        return dataclasses.replace(self, kafka_bootstrap=kafka_bootstrap, postgres_dsn=postgres_dsn,
                                   redis_url=redis_url or self.redis_url)

    # The one place settings become Kafka client options: kafka-python's keywords, aiokafka's, Faust's.
    def kafka_client_kwargs(self) -> dict[str, Any]:
        """Security settings in kafka-python's keyword form."""
        kw: dict[str, Any] = {"security_protocol": self.kafka_security_protocol}
        if self.kafka_sasl_mechanism:
            kw["sasl_mechanism"] = self.kafka_sasl_mechanism
            kw["sasl_plain_username"] = self.kafka_sasl_username
            kw["sasl_plain_password"] = self.kafka_sasl_password
        if self.kafka_security_protocol.endswith("SSL"):
            kw["ssl_cafile"] = self.kafka_ssl_cafile
            kw["ssl_certfile"] = self.kafka_ssl_certfile
            kw["ssl_keyfile"] = self.kafka_ssl_keyfile
        return kw

    def aiokafka_kwargs(self) -> dict[str, Any]:
        """The security settings in aiokafka's keyword form: kafka-python's, with an SSL context in
        place of the certificate files."""
        kw = {k: v for k, v in self.kafka_client_kwargs().items() if not k.startswith("ssl_")}
        if self.kafka_security_protocol.endswith("SSL"):
            kw["ssl_context"] = self.kafka_ssl_context()
        return kw

    def faust_credentials(self) -> Any:
        """The security settings as Faust's ``broker_credentials`` (None for PLAINTEXT)."""
        if self.kafka_security_protocol == "PLAINTEXT":
            return None
        import faust

        context = self.kafka_ssl_context()
        if self.kafka_security_protocol.startswith("SASL"):
            return faust.SASLCredentials(username=self.kafka_sasl_username, password=self.kafka_sasl_password,
                                         mechanism=self.kafka_sasl_mechanism, ssl_context=context)
        return faust.SSLCredentials(context)

    def kafka_ssl_context(self) -> Any:
        """The TLS context for the asyncio clients (Faust, aiokafka take a context, not files);
        None unless the security protocol uses SSL."""
        if not self.kafka_security_protocol.endswith("SSL"):
            return None
        import ssl

        context = ssl.create_default_context(cafile=self.kafka_ssl_cafile)
        if self.kafka_ssl_certfile:
            context.load_cert_chain(self.kafka_ssl_certfile, self.kafka_ssl_keyfile)
        return context

    def to_env(self) -> dict[str, str]:
        """The ``LIFECYCLE_*`` variables that reproduce these settings in a child process."""
        out: dict[str, str] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is None:
                continue
            if isinstance(value, bool):
                value = "true" if value else "false"
            elif isinstance(value, tuple):
                value = ",".join(value)
            out[ENV_PREFIX + f.name.upper()] = str(value)
        return out
