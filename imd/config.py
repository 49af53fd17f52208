# -*- test-case-name: tests.test_config -*-
"""
imd's configuration: one frozen object per section, read from a TOML file
with ``tomllib`` and overridden by ``IMD_<SECTION>_<KEY>`` environment
variables.

Every key has a default that serves one machine with no other server, so
``Config.load(None)`` is a working configuration.  A bad value raises
:class:`ConfigError` whose message names the key, which ``twistd`` and the
CLI print as one line before exiting.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from twisted.internet.endpoints import serverFromString


class ConfigError(Exception):
    """A configuration value is missing, unknown or malformed."""


def _endpoint(value: str) -> None:
    # An empty string turns the listener off.  Parsing an endpoint only
    # stores its reactor, so a placeholder is enough to validate the string
    # without touching the real reactor.
    if value == "":
        return
    try:
        serverFromString(object(), value)
    except Exception as e:
        raise ValueError(f"not a Twisted server endpoint string: {e}") from None


def _positive(value: int) -> None:
    if value <= 0:
        raise ValueError("must be greater than 0")


def _not_negative(value: int) -> None:
    if value < 0:
        raise ValueError("must not be negative")


def _at_least(floor: int) -> Callable[[int], None]:
    def check(value: int) -> None:
        if value < floor:
            raise ValueError(f"must be at least {floor}")

    return check


def _domain(value: str) -> None:
    if not value or len(value) > 253 or any(c in value for c in "@/ \t\r\n<>&'\""):
        raise ValueError("must be a host name (no @, /, spaces or markup)")


def _choice(*allowed: str) -> Callable[[str], None]:
    def check(value: str) -> None:
        if value not in allowed:
            raise ValueError(f"must be one of {', '.join(map(repr, allowed))}")

    return check


def _aes_key(value: str) -> None:
    if len(value.encode("utf-8")) not in (16, 24, 32):
        raise ValueError("must be 16, 24 or 32 bytes long")


def _database_url(value: str) -> None:
    from sqlalchemy.engine import make_url

    try:
        url = make_url(value)
    except Exception as e:
        raise ValueError(f"not a database URL: {e}") from None
    if url.get_backend_name() not in ("sqlite", "postgresql"):
        raise ValueError("only sqlite:/// and postgresql:// URLs are supported")


def _redis_url(value: str) -> None:
    if value and not value.startswith(("redis://", "unix://")):
        raise ValueError("must be empty, a redis:// or a unix:// URL")


def _http_url(value: str) -> None:
    if value and not value.startswith(("http://", "https://")):
        raise ValueError("must be empty or an http:// or https:// URL")


def key(default: Any, check: Callable[[Any], None] | None = None, doc: str = "") -> Any:
    return field(default=default, metadata={"check": check, "doc": doc})


@dataclass(frozen=True)
class HttpConfig:
    endpoint: str = key("tcp:8080:interface=127.0.0.1:backlog=20000", _endpoint)
    max_body: int = key(1_048_576, _positive, "largest JSON body accepted, in bytes")


def _origins(value: str) -> None:
    for origin in filter(None, (o.strip() for o in value.split(","))):
        if not origin.startswith(("http://", "https://")) or origin.count("/") != 2:
            raise ValueError(f"{origin!r} is not an origin such as https://chat.example.com")


@dataclass(frozen=True)
class WebConfig:
    origins: str = key(
        "", _origins, "origins besides the server's own (comma-separated) whose pages may open /ws and the console"
    )
    max_message: int = key(65_536, _positive, "largest WebSocket message accepted, in bytes")

    @property
    def allowed_origins(self) -> frozenset[str]:
        return frozenset(o.strip().rstrip("/") for o in self.origins.split(",") if o.strip())


@dataclass(frozen=True)
class LongConnConfig:
    endpoint: str = key("tcp:8283:interface=127.0.0.1:backlog=20000", _endpoint)
    max_frame: int = key(65_536, _positive)
    idle_timeout: int = key(180, _positive)


@dataclass(frozen=True)
class SocketConfig:
    endpoint: str = key("tcp:8282:interface=127.0.0.1:backlog=20000", _endpoint)
    encrypt: bool = key(True)
    aes_key: str = key("2108a4c486350f3a", _aes_key)
    max_frame: int = key(65_535, _positive, "largest frame body, in bytes")
    idle_timeout: int = key(180, _positive)


@dataclass(frozen=True)
class XmppConfig:
    endpoint: str = key("tcp:5222:interface=127.0.0.1:backlog=20000", _endpoint)
    domain: str = key("localhost", _domain, "XMPP domain: a user's JID is uid@domain")
    tls_cert: str = key("", doc="PEM certificate file for STARTTLS; empty: no TLS")
    tls_key: str = key("", doc="PEM private key file for STARTTLS")
    require_tls: bool = key(False, doc="refuse to authenticate before STARTTLS")
    plain_without_tls: bool = key(False, doc="offer SASL PLAIN on a stream without TLS")
    scram_iterations: int = key(4096, _at_least(4096), "PBKDF2 iterations of new SCRAM keys")
    resume_timeout: int = key(300, _positive, "seconds a dead stream stays resumable (XEP-0198)")
    max_stanza: int = key(262_144, _positive, "largest stanza accepted, in bytes")
    download_url: str = key("", _http_url, "public URL of /upload/mobileFileDownload, for stock clients")
    # Clients such as slixmpp send a whitespace keepalive every 300 s.
    idle_timeout: int = key(600, _positive)

    def check(self) -> None:
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ConfigError("xmpp.tls_cert and xmpp.tls_key are set together or not at all")
        if self.require_tls and not self.tls_cert:
            raise ConfigError("xmpp.require_tls needs xmpp.tls_cert and xmpp.tls_key")


@dataclass(frozen=True)
class DatabaseConfig:
    url: str = key("sqlite:///var/imd.sqlite3", _database_url)
    migrate_on_start: bool = key(True)
    pool_size: int = key(5, _positive, "Postgres connections (and store threads)")
    sqlite_checkpoint_pages: int = key(
        10_000, _positive, "SQLite: WAL pages after which a commit copies the WAL back into the database"
    )
    store_process: str = key(
        "auto",
        _choice("auto", "on", "off"),
        "commit batches of messages in a process of their own, on a second core; auto: on unless SQLite is in memory",
    )

    @property
    def _in_memory(self) -> bool:
        from imd.store.database import normalize_url, sqlite_in_memory

        return sqlite_in_memory(normalize_url(self.url))

    @property
    def uses_store_process(self) -> bool:
        """Whether L{store_process} asks for the store process, for this database."""
        if self.store_process == "auto":
            # Faster on both databases (docs/benchmarks.rst, round 7).
            return not self._in_memory
        return self.store_process == "on"

    def check(self) -> None:
        if self.store_process == "on" and self._in_memory:
            raise ConfigError("database.store_process = on needs a database file: a SQLite database in memory is one process's own")


@dataclass(frozen=True)
class RedisConfig:
    url: str = key("", _redis_url)
    prefix: str = key("imd", doc="prefix of every Redis key and channel imd uses")
    heartbeat: int = key(10, _positive, "seconds between an instance's heartbeats")


@dataclass(frozen=True)
class InstanceConfig:
    id: str = key("", doc="this instance's name; empty: host:port of the HTTP listener")


@dataclass(frozen=True)
class FilesConfig:
    dir: str = key("var/files")
    max_size: int = key(104_857_600, _positive)
    max_chunk: int = key(4_194_304, _positive, "largest decoded chunk of one /file/upload, in bytes")
    quota: int = key(1_073_741_824, _positive, "bytes of files per user, unfinished uploads included")
    unfinished_ttl: int = key(
        604_800, _not_negative, "seconds an unfinished upload may go without a chunk before it is purged; 0: never"
    )


@dataclass(frozen=True)
class SmsConfig:
    mode: str = key("log", _choice("log", "http", "off"))
    required: bool = key(True)
    url: str = key("", _http_url, "gateway URL for mode = http")
    code_ttl: int = key(300, _positive)
    resend_interval: int = key(60, _not_negative)
    max_attempts: int = key(5, _positive)

    def check(self) -> None:
        if self.mode == "http" and not self.url:
            raise ConfigError('sms.url must be set when sms.mode = "http"')


@dataclass(frozen=True)
class AuthConfig:
    token_ttl: int = key(86_400, _positive)
    sign_window: int = key(300, _positive)
    hash_time_cost: int = key(3, _positive)
    hash_memory_kib: int = key(65_536, _positive)


@dataclass(frozen=True)
class MessagesConfig:
    friends_only: bool = key(False)
    recall_window: int = key(120, _not_negative)
    history_days: int = key(14, _positive)
    max_body: int = key(16_384, _positive, "longest message body, in characters")


@dataclass(frozen=True)
class LimitsConfig:
    auth_timeout: int = key(10, _positive, "seconds a TCP client has to authenticate before it is closed")
    unauthenticated_per_address: int = key(
        100, _positive, "connections one address may hold open on each TCP listener before authenticating"
    )
    http_header_timeout: int = key(10, _positive, "seconds an HTTP request may take to send its headers")
    http_min_body_rate: int = key(
        1024, _positive, "bytes per second an HTTP body must average, after http_header_timeout seconds"
    )
    login_failures: int = key(5, _positive, "failed logins to one account from one address before it backs off")
    login_address_failures: int = key(50, _positive, "failed logins from one address, any account, before it backs off")
    login_window: int = key(900, _positive, "seconds over which failed logins are counted")
    lookups_per_minute: int = key(30, _positive, "user lookups (by exact id or telephone) one user may make a minute")


@dataclass(frozen=True)
class ServerApiConfig:
    app_key: str = key("", doc="an app set here, besides those of python -m imd app add; empty: none")
    app_secret: str = key("", doc="that app's secret")
    max_body: int = key(65_536, _positive, "largest form body of one call, in bytes")

    def check(self) -> None:
        if bool(self.app_key) != bool(self.app_secret):
            raise ConfigError("serverapi.app_key and serverapi.app_secret are set together or not at all")


@dataclass(frozen=True)
class WebhooksConfig:
    url: str = key("", _http_url, "where message copies are POSTed; empty: no message copy")
    app_key: str = key("", doc="the app whose secret signs them; empty: the only app there is")
    timeout: int = key(10, _positive, "seconds one POST may take")
    retry_min_ms: int = key(1_000, _positive, "first wait after a failed POST, in ms; doubled each time")
    retry_max_ms: int = key(300_000, _positive, "longest wait between attempts, in ms")
    max_attempts: int = key(100, _not_negative, "attempts before a row is set aside as dead; 0: never")
    poll_ms: int = key(1_000, _positive, "how often an idle deliverer looks for new rows, in ms")
    lease: int = key(60, _positive, "seconds an instance holds the rows it delivers; a crashed one's are then taken over")
    batch: int = key(20, _positive, "rows claimed at a time")
    keep_delivered: int = key(86_400, _not_negative, "seconds a delivered row is kept (for a look with SQL) before it is deleted")

    def check(self) -> None:
        if self.lease <= self.timeout:
            raise ConfigError("webhooks.lease must be longer than webhooks.timeout")


@dataclass(frozen=True)
class Config:
    http: HttpConfig = field(default_factory=HttpConfig)
    web: WebConfig = field(default_factory=WebConfig)
    longconn: LongConnConfig = field(default_factory=LongConnConfig)
    socket: SocketConfig = field(default_factory=SocketConfig)
    xmpp: XmppConfig = field(default_factory=XmppConfig)
    database: DatabaseConfig = field(default_factory=DatabaseConfig)
    redis: RedisConfig = field(default_factory=RedisConfig)
    instance: InstanceConfig = field(default_factory=InstanceConfig)
    files: FilesConfig = field(default_factory=FilesConfig)
    sms: SmsConfig = field(default_factory=SmsConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)
    messages: MessagesConfig = field(default_factory=MessagesConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    serverapi: ServerApiConfig = field(default_factory=ServerApiConfig)
    webhooks: WebhooksConfig = field(default_factory=WebhooksConfig)

    @classmethod
    def load(
        cls,
        path: str | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> "Config":
        """
        Read C{path} (or nothing, for the defaults) and apply the
        C{IMD_<SECTION>_<KEY>} variables of C{environ} (default: the
        process environment).
        """
        raw: dict[str, Any] = {}
        if path is not None:
            try:
                with open(path, "rb") as f:
                    raw = tomllib.load(f)
            except OSError as e:
                raise ConfigError(f"cannot read config file {path}: {e.strerror}") from None
            except tomllib.TOMLDecodeError as e:
                raise ConfigError(f"{path}: not valid TOML: {e}") from None
        return cls.from_dict(raw, os.environ if environ is None else environ)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], environ: Mapping[str, str] = {}) -> "Config":
        sections = {f.name: f.type for f in dataclasses.fields(cls)}
        values: dict[str, dict[str, Any]] = {name: {} for name in sections}
        for name, table in raw.items():
            if name not in sections:
                raise ConfigError(f"unknown config section [{name}]")
            if not isinstance(table, dict):
                raise ConfigError(f"[{name}] must be a table")
            values[name].update(table)
        for var, text in environ.items():
            if not var.startswith("IMD_"):
                continue
            section, _, keyname = var[4:].lower().partition("_")
            # IMD_CONFIG, IMD_TEST_… and the like are not config keys.
            if section not in sections or not keyname:
                continue
            values[section][keyname] = _EnvText(var, text)
        built = {}
        for name, section_cls in sections.items():
            built[name] = _build_section(name, _section_class(section_cls), values[name])
        return cls(**built)


class _EnvText(str):
    """A value that came from the environment, to be parsed to the key's type."""

    def __new__(cls, var: str, text: str) -> "_EnvText":
        self = super().__new__(cls, text)
        self.var = var
        return self


def _section_class(annotation: Any) -> type:
    # With "from __future__ import annotations" field types are strings.
    return globals()[annotation] if isinstance(annotation, str) else annotation


_TYPES = {"str": str, "int": int, "bool": bool}


def _build_section(name: str, section_cls: type, values: Mapping[str, Any]) -> Any:
    fields = {f.name: f for f in dataclasses.fields(section_cls)}
    kwargs = {}
    for keyname, value in values.items():
        where = f"{name}.{keyname}"
        if keyname not in fields:
            source = f" (from {value.var})" if isinstance(value, _EnvText) else ""
            raise ConfigError(f"unknown config key {where}{source}")
        f = fields[keyname]
        typ = _TYPES[f.type] if isinstance(f.type, str) else f.type
        if isinstance(value, _EnvText):
            where = f"{where} (from {value.var})"
            value = _parse_env(where, typ, str(value))
        elif typ is int and (isinstance(value, bool) or not isinstance(value, int)):
            raise ConfigError(f"{where} must be an integer, not {value!r}")
        elif not isinstance(value, typ):
            raise ConfigError(f"{where} must be {_TYPE_NAMES[typ]}, not {value!r}")
        check = f.metadata.get("check")
        if check is not None:
            try:
                check(value)
            except ValueError as e:
                raise ConfigError(f"{where} = {value!r}: {e}") from None
        kwargs[keyname] = value
    section = section_cls(**kwargs)
    if hasattr(section, "check"):
        section.check()
    return section


_TYPE_NAMES = {str: "a string", int: "an integer", bool: "true or false"}


def _parse_env(where: str, typ: type, text: str) -> Any:
    if typ is str:
        return text
    if typ is int:
        try:
            return int(text.strip())
        except ValueError:
            raise ConfigError(f"{where} must be an integer, not {text!r}") from None
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{where} must be true or false, not {text!r}")


def describe() -> list[tuple[str, str, Any, str]]:
    """(section, key, default, doc) for every key, in declaration order."""
    rows = []
    for section in dataclasses.fields(Config):
        for f in dataclasses.fields(_section_class(section.type)):
            rows.append((section.name, f.name, f.default, f.metadata.get("doc", "")))
    return rows
