"""One settings object per process, read from the environment (the seeds' names)."""

from __future__ import annotations

import base64
import ipaddress
import os
import secrets
from functools import cached_property
from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import URL, make_url

from alchemist.netguard import Network, parse_networks

MIN_JWT_SECRET_LENGTH = 32
WEBHOOK_SECRET_PREFIX = "whsec_"  # noqa: S105 (Standard Webhooks' marker of a base64 secret)
MIN_WEBHOOK_KEY_BYTES, MAX_WEBHOOK_KEY_BYTES = 24, 64
JWT_SECRET_FILE = "jwt_secret"  # noqa: S105 (a file name)


_DATABASE = ("MYSQL_HOST", "MYSQL_PORT", "MYSQL_USER", "MYSQL_PASSWORD", "MYSQL_DB")
_BROKER = ("RABBITMQ_HOST|AMQP_URL", "RABBITMQ_USER|AMQP_URL", "RABBITMQ_PASSWORD|AMQP_URL")
# What each service needs from its environment when it runs apart (containers); "A|B" means
# either. Deployment manifests are checked against this in the tests.
SERVICE_SETTINGS: dict[str, tuple[str, ...]] = {
    "migrate": _DATABASE,
    "auth": (*_DATABASE, "JWT_SECRET"),
    "gateway": (
        *_DATABASE,
        *_BROKER,
        "JWT_SECRET",
        "AUTH_SVC_ADDRESS",
        "VIDEO_QUEUE",
        "MONGODB_URI",
        "WEBHOOK_SECRET",
    ),
    "converter": (*_DATABASE, *_BROKER, "VIDEO_QUEUE", "MP3_QUEUE", "MONGODB_URI"),
    "notification": (
        *_DATABASE,
        *_BROKER,
        "MP3_QUEUE",
        "PUBLIC_URL",
        "SMTP_HOST",
        "JWT_SECRET",
        "WEBHOOK_SECRET",
    ),
}
# Read from the environment outside Settings (by the image, the engine or the CLI).
OTHER_VARIABLES = ("HEALTH_URL", "ALCHEMIST_SPOOL_DIR", "ALCHEMIST_SHUTDOWN_GRACE")


class ConfigError(Exception):
    """The configuration cannot work; the message says what to set."""


class Settings(BaseSettings):
    """Every setting of every service; each process builds one from its environment."""

    model_config = SettingsConfigDict(case_sensitive=True, extra="ignore", frozen=True)

    ALCHEMIST_DATA_DIR: Path = Path("alchemist-data")
    ALCHEMIST_MIGRATE_ON_START: bool = False

    DATABASE_URL: str | None = None
    MYSQL_HOST: str | None = None
    MYSQL_USER: str = "auth_user"
    MYSQL_PASSWORD: SecretStr = SecretStr("")
    MYSQL_DB: str = "auth"
    MYSQL_PORT: int = 3306

    JWT_SECRET: SecretStr | None = None
    JWT_ISSUER: str = "audio-alchemist"
    JWT_TTL_SECONDS: int = 86_400

    LOGIN_MAX_FAILURES: int = 5
    LOGIN_FAILURE_WINDOW_SECONDS: int = 300
    # Failures counted per (account, client address) above and per client address here: a
    # stranger's guesses never lock the owner out from their own address (auth/login_limiter.py).
    LOGIN_MAX_FAILURES_PER_ADDRESS: int = Field(default=50, ge=1)
    # argon2 holds ARGON2_MEMORY_KIB per hash: at most LOGIN_CONCURRENCY hashes run at once per
    # auth process; others wait up to LOGIN_QUEUE_SECONDS (at most LOGIN_QUEUE_LIMIT of them), then 503.
    LOGIN_CONCURRENCY: int = Field(default=2, ge=1)
    LOGIN_QUEUE_SECONDS: float = Field(default=2.0, gt=0)
    LOGIN_QUEUE_LIMIT: int = Field(default=64, ge=0)
    # argon2-cffi's defaults (RFC 9106 low-memory); OWASP's minimum is 19456 KiB, t=2, p=1.
    ARGON2_MEMORY_KIB: int = Field(default=65_536, ge=1024)
    ARGON2_TIME_COST: int = Field(default=3, ge=1)
    ARGON2_PARALLELISM: int = Field(default=4, ge=1, le=64)
    # Peers whose X-Forwarded-For / X-Forwarded-Proto are believed (CIDRs, comma-separated).
    TRUSTED_PROXIES: str = "127.0.0.0/8,::1/128"
    # How long a token's revocation state (user's token version, deny list) is cached.
    REVOCATION_CACHE_SECONDS: float = Field(default=3.0, ge=0)

    AUTH_SVC_ADDRESS: str = "127.0.0.1:5000"
    METRICS_PORT: int | None = Field(default=None, ge=1, le=65535)
    PUBLIC_URL: str = "http://localhost:8080"
    DOWNLOAD_LINK_TTL_SECONDS: int = Field(default=7 * 86_400, ge=60)
    MAX_UPLOAD_BYTES: int = 2 << 30
    MAX_MEDIA_SECONDS: float = 4 * 3600

    KEEP_VIDEOS: bool = False
    RETENTION_DAYS: float = Field(default=7.0, gt=0)
    USER_QUOTA_BYTES: int = Field(default=20 << 30, gt=0)
    OUTPUT_EXPANSION_LIMIT: float = Field(default=50.0, gt=1)
    STALL_SECONDS: float = Field(default=60.0, gt=0)
    HEARTBEAT_SECONDS: float = Field(default=2.0, gt=0)
    QUEUED_REPUBLISH_SECONDS: float = Field(default=900.0, gt=0)
    NOTIFY_LEASE_SECONDS: float = Field(default=120.0, gt=0)
    NOTIFY_MAX_ATTEMPTS: int = Field(default=10, ge=1)
    SWEEP_INTERVAL_SECONDS: float = Field(default=15.0, gt=0)
    ORPHAN_MIN_AGE_SECONDS: float = Field(default=3600.0, gt=0)
    ORPHAN_SCAN_SECONDS: float = Field(default=3600.0, gt=0)

    VIDEO_QUEUE: str = "video"
    MP3_QUEUE: str = "mp3"
    WEBHOOK_QUEUE: str = "webhook"
    WEBHOOK_MAX_ATTEMPTS: int = Field(default=6, ge=1)
    AMQP_URL: str | None = None
    RABBITMQ_HOST: str | None = None
    RABBITMQ_PORT: int = 5672
    RABBITMQ_USER: str = "guest"
    RABBITMQ_PASSWORD: SecretStr = SecretStr("guest")
    RABBITMQ_VHOST: str = "/"
    MAX_ATTEMPTS: int = 3

    MONGODB_URI: SecretStr | None = None
    MONGODB_VIDEOS_DB: str = "videos"
    MONGODB_MP3S_DB: str = "mp3s"

    SMTP_HOST: str | None = None
    SMTP_PORT: int = 587
    SMTP_SECURITY: str = "starttls"
    SMTP_USER: str | None = None
    SMTP_PASSWORD: SecretStr | None = None
    SMTP_FROM: str = "Audio Alchemist <no-reply@audio-alchemist.invalid>"
    # Signs webhooks (Standard Webhooks): "whsec_" + base64 of 24-64 random bytes, or a raw
    # string of at least 32 characters. Unset: uploads with a webhook_url are refused.
    WEBHOOK_SECRET: SecretStr | None = None
    # Intranet networks webhooks may call although they are private (CIDRs, comma-separated).
    WEBHOOK_ALLOWED_NETWORKS: str = ""
    API_DOCS: bool = True  # /docs and /openapi.json (false: both 404)

    @property
    def embedded(self) -> bool:
        """True when no external database is configured: the one-machine default."""
        return self.DATABASE_URL is None and self.MYSQL_HOST is None

    @cached_property
    def database_url(self) -> URL:
        """DATABASE_URL, else MySQL from MYSQL_*, else SQLite in the data dir."""
        if self.DATABASE_URL:
            return make_url(self.DATABASE_URL)
        if self.MYSQL_HOST:
            return URL.create(
                "mysql+pymysql",
                username=self.MYSQL_USER,
                password=self.MYSQL_PASSWORD.get_secret_value() or None,
                host=self.MYSQL_HOST,
                port=self.MYSQL_PORT,
                database=self.MYSQL_DB,
                query={"charset": "utf8mb4"},
            )
        return URL.create("sqlite+pysqlite", database=str(self.ALCHEMIST_DATA_DIR / "alchemist.db"))

    @property
    def amqp_url(self) -> str | None:
        """AMQP_URL, else one built from the seeds' RABBITMQ_* settings, else None (in-process)."""
        if self.AMQP_URL:
            return self.AMQP_URL
        if self.RABBITMQ_HOST:
            return str(
                URL.create(
                    "amqp",
                    username=self.RABBITMQ_USER,
                    password=self.RABBITMQ_PASSWORD.get_secret_value(),
                    host=self.RABBITMQ_HOST,
                    port=self.RABBITMQ_PORT,
                    database=self.RABBITMQ_VHOST.lstrip("/") or None,
                ).render_as_string(hide_password=False)
            )
        return None

    @field_validator("TRUSTED_PROXIES")
    @classmethod
    def _networks_parse(cls, value: str) -> str:
        for part in _split(value):
            try:
                ipaddress.ip_network(part, strict=False)
            except ValueError as exc:
                raise ValueError(f"TRUSTED_PROXIES: {part!r} is not an address or CIDR network") from exc
        return value

    @cached_property
    def trusted_proxies(self) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
        """TRUSTED_PROXIES as networks (empty: trust no proxy, every peer is the client)."""
        return tuple(ipaddress.ip_network(part, strict=False) for part in _split(self.TRUSTED_PROXIES))

    @property
    def auth_url(self) -> str:
        """The auth service's base URL (the seeds give host:port without a scheme)."""
        address = self.AUTH_SVC_ADDRESS.rstrip("/")
        return address if "://" in address else f"http://{address}"

    @field_validator("WEBHOOK_ALLOWED_NETWORKS")
    @classmethod
    def _webhook_networks_parse(cls, value: str) -> str:
        try:
            parse_networks(value)
        except ValueError as exc:
            raise ValueError(f"WEBHOOK_ALLOWED_NETWORKS: {exc}") from exc
        return value

    @cached_property
    def webhook_networks(self) -> tuple[Network, ...]:
        """WEBHOOK_ALLOWED_NETWORKS parsed: private networks webhooks may call all the same."""
        return parse_networks(self.WEBHOOK_ALLOWED_NETWORKS)

    def webhook_key(self) -> bytes | None:
        """The HMAC key of webhook signatures; None when WEBHOOK_SECRET is unset (no webhooks).

        Never the JWT secret: whoever verifies webhooks could otherwise mint tokens.
        """
        if self.WEBHOOK_SECRET is None or not self.WEBHOOK_SECRET.get_secret_value():
            return None
        secret = self.WEBHOOK_SECRET.get_secret_value()
        if self.JWT_SECRET is not None and secret == self.JWT_SECRET.get_secret_value():
            raise ConfigError("WEBHOOK_SECRET must differ from JWT_SECRET (receivers learn it)")
        if secret.startswith(WEBHOOK_SECRET_PREFIX):
            try:
                encoded = secret[len(WEBHOOK_SECRET_PREFIX) :]
                key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
            except ValueError as exc:
                raise ConfigError(f"WEBHOOK_SECRET: what follows whsec_ is not base64 ({exc})") from exc
            if not MIN_WEBHOOK_KEY_BYTES <= len(key) <= MAX_WEBHOOK_KEY_BYTES:
                raise ConfigError(
                    f"WEBHOOK_SECRET decodes to {len(key)} bytes; it must be {MIN_WEBHOOK_KEY_BYTES} "
                    f"to {MAX_WEBHOOK_KEY_BYTES} (docs/webhooks.md shows how to make one)"
                )
            return key
        if len(secret) < MIN_JWT_SECRET_LENGTH:
            raise ConfigError(
                f"WEBHOOK_SECRET is {len(secret)} characters; a raw secret must be at least "
                f"{MIN_JWT_SECRET_LENGTH} (or use the whsec_ form, see docs/webhooks.md)"
            )
        return secret.encode()

    def jwt_secret(self) -> str:
        """The signing key; the embedded default generates one and keeps it in the data dir."""
        if self.JWT_SECRET is not None:
            secret = self.JWT_SECRET.get_secret_value()
            if len(secret) < MIN_JWT_SECRET_LENGTH:
                raise ConfigError(
                    f"JWT_SECRET is {len(secret)} characters; it must be at least "
                    f"{MIN_JWT_SECRET_LENGTH} (try: python -c 'import secrets; "
                    "print(secrets.token_urlsafe(48))')"
                )
            return secret
        if not self.embedded:
            raise ConfigError(
                "JWT_SECRET is not set: a shared database is configured, so every service "
                "must be given the same secret (at least 32 characters)"
            )
        return _stored_secret(self.ALCHEMIST_DATA_DIR / JWT_SECRET_FILE)


def _split(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


def _stored_secret(path: Path) -> str:
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_urlsafe(48)
    # O_EXCL: two processes starting at once must not write two different keys.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    with os.fdopen(fd, "w") as handle:
        handle.write(secret)
    return secret
