"""The user's connection settings for the distributed backend: `app.yaml` plus environment overrides.

Where the file is found, first hit wins:

1. the file named by ``MERLIN_MDM_CONFIG``;
2. ``app.yaml`` next to the spec being run (when a spec is given);
3. ``~/.merlin-mdm/app.yaml`` (written by ``merlin-mdm server start``).

With none of these the broker is ``redis://127.0.0.1:6379/0`` without a password. Environment variables
``MERLIN_MDM_BROKER_<FIELD>`` and ``MERLIN_MDM_RESULTS_<FIELD>`` (FIELD: SCHEME, HOST, PORT, DB, USERNAME,
PASSWORD_FILE, CA_CERTS, CERTFILE, KEYFILE, CERT_REQS) override the file, and
``MERLIN_MDM_VISIBILITY_TIMEOUT`` its ``visibility_timeout`` (`run-workers` derives one from the study's
walltimes when neither sets it). A password is only ever read from
``password_file``: it never appears in the file itself, on a command line, or in any message.
"""

from __future__ import annotations

import os
import re
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import yaml

from merlin_mdm.errors import MerlinMdmError

__all__ = [
    "CONFIG_ENV",
    "VISIBILITY_ENV",
    "AppConfig",
    "ConfigError",
    "RedisConfig",
    "config_path",
    "load_config",
    "user_config_dir",
]

CONFIG_ENV = "MERLIN_MDM_CONFIG"
VISIBILITY_ENV = "MERLIN_MDM_VISIBILITY_TIMEOUT"  # set by `run-workers` from the study's walltimes
SCHEMES = ("redis", "rediss")
CERT_REQS = ("required", "optional", "none")
_INT_FIELDS = ("port", "db")


class ConfigError(MerlinMdmError):
    """app.yaml is malformed or names a file that cannot be read."""


class EnvironmentConfigError(ConfigError):
    """A MERLIN_MDM_BROKER_*/RESULTS_* environment variable holds a value that cannot be used (not app.yaml's fault)."""


def user_config_dir() -> Path:
    """``~/.merlin-mdm`` (honours ``HOME``)."""
    return Path(os.path.expanduser("~")) / ".merlin-mdm"


@dataclass(frozen=True)
class RedisConfig:
    """How to reach one Redis server (the broker, or the status store)."""

    scheme: str = "redis"  # redis | rediss (TLS)
    host: str = "127.0.0.1"
    port: int = 6379
    db: int = 0
    username: str | None = None  # Redis 6 ACL user; None: the default user
    password_file: str | None = None  # a file whose first line is the password
    ca_certs: str | None = None  # rediss: CA bundle that signed the server's certificate
    certfile: str | None = None  # rediss: client certificate (mutual TLS)
    keyfile: str | None = None  # rediss: client key
    cert_reqs: str = "required"  # rediss: required | optional | none

    def __post_init__(self) -> None:
        if self.scheme not in SCHEMES:
            raise ConfigError(f"scheme '{self.scheme}' is not one of {', '.join(SCHEMES)}")
        if not 0 < self.port < 65536:
            raise ConfigError(f"port {self.port} is not between 1 and 65535")
        if self.db < 0:
            raise ConfigError(f"db {self.db} is negative")
        if self.cert_reqs not in CERT_REQS:
            raise ConfigError(f"cert_reqs '{self.cert_reqs}' is not one of {', '.join(CERT_REQS)}")

    @property
    def tls(self) -> bool:
        """True for rediss://."""
        return self.scheme == "rediss"

    def password(self) -> str | None:
        """The password read from ``password_file`` (None without one)."""
        if not self.password_file:
            return None
        path = Path(self.password_file).expanduser()
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read the password file {path}: {exc.strerror or exc}") from None
        lines = text.splitlines()
        if not lines or not lines[0].strip():
            raise ConfigError(f"the password file {path} is empty")
        return lines[0].strip()

    def url(self) -> str:
        """The connection URL, password included: pass it to a client, never print it (see :meth:`safe_url`)."""
        secret = self.password()
        auth = ""
        if secret is not None or self.username:
            user = urllib.parse.quote(self.username or "", safe="")
            auth = f"{user}:{urllib.parse.quote(secret or '', safe='')}@"
        return f"{self.scheme}://{auth}{self.host}:{self.port}/{self.db}"

    def safe_url(self) -> str:
        """The URL with the password masked, for messages."""
        auth = ""
        if self.password_file or self.username:
            auth = f"{self.username or ''}:***@"
        return f"{self.scheme}://{auth}{self.host}:{self.port}/{self.db}"

    def ssl_options(self) -> dict[str, Any] | None:
        """Options for redis-py / kombu's ``ssl`` settings (None for plain redis://)."""
        if not self.tls:
            return None
        import ssl

        reqs = {"required": ssl.CERT_REQUIRED, "optional": ssl.CERT_OPTIONAL, "none": ssl.CERT_NONE}
        opts: dict[str, Any] = {"ssl_cert_reqs": reqs[self.cert_reqs]}
        for name in ("ca_certs", "certfile", "keyfile"):
            value = getattr(self, name)
            if value:
                opts[f"ssl_{name}"] = str(Path(value).expanduser())
        return opts

    def client(self, timeout: float = 5.0, retry: bool = True) -> Any:
        """A redis-py client; ``retry`` makes it ride out a short server restart (about 30 s).

        Without ``retry`` (probes such as `info`) every read also times out after ``timeout``.
        """
        import redis
        from redis.backoff import ExponentialBackoff
        from redis.retry import Retry

        kwargs: dict[str, Any] = {
            "host": self.host, "port": self.port, "db": self.db, "username": self.username,
            "password": self.password(), "socket_connect_timeout": timeout,
            "socket_timeout": max(timeout, 30.0) if retry else timeout,
            "health_check_interval": 30, "decode_responses": True,
        }
        if retry:
            kwargs["retry"] = _credentials_final(Retry)(ExponentialBackoff(cap=2.0, base=0.1), 25)
            kwargs["retry_on_error"] = [redis.ConnectionError, redis.TimeoutError]
        else:
            kwargs["retry"] = Retry(ExponentialBackoff(), 0)
        if self.tls:
            kwargs["ssl"] = True
            kwargs.update(self.ssl_options() or {})
        return redis.Redis(**kwargs)


def _credentials_final(retry: type[Any]) -> type[Any]:
    """redis-py's Retry, except that a refused password or user is not retried: redis-py takes it for a connection
    error, and a patient client (`monitor`) waited 45 s in silence before saying so; it never gets better."""
    import redis

    class CredentialsFinalRetry(retry):  # type: ignore[misc]
        def call_with_retry(self, do: Any, fail: Any, *args: Any, **kwargs: Any) -> Any:
            def failing(error: Exception, *rest: Any) -> Any:
                fail(error, *rest)  # the connection's cleanup first
                if isinstance(error, redis.AuthenticationError) or "WRONGPASS" in str(error):
                    raise error
            return super().call_with_retry(do, failing, *args, **kwargs)

    return CredentialsFinalRetry


@dataclass(frozen=True)
class AppConfig:
    """Everything `app.yaml` says."""

    broker: RedisConfig = field(default_factory=RedisConfig)
    results: RedisConfig | None = None  # the status store; None: the broker's server
    visibility_timeout: int = 86400  # seconds before an unacknowledged message is delivered again
    max_deliveries: int = 3  # a unit whose worker dies this many times is recorded as failed
    celery: Mapping[str, Any] = field(default_factory=dict)  # raw Celery settings, applied last
    source: str = "defaults"  # the file it came from (for `info`)
    visibility_set: bool = False  # visibility_timeout was given (app.yaml or MERLIN_MDM_VISIBILITY_TIMEOUT)

    def __post_init__(self) -> None:
        if self.visibility_timeout < 1:
            raise ConfigError(f"visibility_timeout {self.visibility_timeout} s is under 1 s")
        if self.max_deliveries < 1:
            raise ConfigError(f"max_deliveries {self.max_deliveries} is under 1")

    @property
    def status(self) -> RedisConfig:
        """Where the status store lives."""
        return self.results or self.broker


def config_path(spec: Path | None = None, explicit: Path | str | None = None) -> Path | None:
    """The app.yaml in effect (None: built-in defaults); ``explicit`` comes after ``MERLIN_MDM_CONFIG``."""
    named = os.environ.get(CONFIG_ENV) or (str(explicit) if explicit else None)
    if named:
        path = Path(named).expanduser()
        if not path.is_file():
            raise ConfigError(f"the configuration file {named} does not exist")
        return path
    candidates = [spec.resolve().parent / "app.yaml"] if spec is not None else []
    candidates.append(user_config_dir() / "app.yaml")
    return next((c for c in candidates if c.is_file()), None)


def _redis_section(data: Any, where: str) -> RedisConfig:
    if data is None:
        return RedisConfig()
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where} must be a mapping")
    known = {f.name for f in fields(RedisConfig)}
    unknown = sorted(set(data) - known - {"password", "url"})
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)} (known: "
                          f"{', '.join(sorted(known | {'url'}))})")
    if "password" in data:
        raise ConfigError(f"{where}.password: do not write the password here; use password_file")
    values = dict(data)
    if "url" in values:
        values = {**_parse_url(str(values.pop("url")), where), **values}
    for name in _INT_FIELDS:
        if name in values:
            values[name] = _whole_number(values[name], f"{where}.{name}", name)
    try:
        clean: dict[str, Any] = {k: (str(v) if v is not None and k not in _INT_FIELDS else v)
                                 for k, v in values.items()}
        return RedisConfig(**clean)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: {exc}") from None
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None


_WHAT = {"port": "the server's TCP port, 1-65535",
         "db": "the Redis database number, 0 or more; 0-15 on a default server"}


def _whole_number(value: Any, key: str, field_name: str) -> int:
    """``value`` of ``key`` (e.g. ``broker.db``) as an int, else a ConfigError that says what is expected."""
    if isinstance(value, bool) or not isinstance(value, (int, str)) or \
            not re.fullmatch(r"-?[0-9]+", str(value).strip()):  # ASCII digits: isdigit() let "²" and "--1" through
        raise ConfigError(f"{key}: {value!r} is not a whole number ({field_name}: {_WHAT[field_name]})")
    return int(value)


def _parse_url(url: str, where: str) -> dict[str, Any]:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme in ("unix", "redis+socket", "socket") or (parts.scheme and "socket" in parts.scheme):
        raise ConfigError(f"{where}.url {url}: unix sockets are not supported (Celery workers on other nodes could "
                          "not reach one either): give the server's TCP address, e.g. redis://HOST:PORT/DB")
    if parts.password:
        raise ConfigError(f"{where}.url holds a password; use password_file")
    out: dict[str, Any] = {"scheme": parts.scheme, "host": parts.hostname or "127.0.0.1"}
    try:
        port = parts.port
    except ValueError:
        raise ConfigError(f"{where}.url {url}: the port is not a whole number ({_WHAT['port']})") from None
    if port:
        out["port"] = port
    if parts.path.strip("/"):
        out["db"] = _whole_number(parts.path.strip("/"), f"{where}.url {url}", "db")
    if parts.username:
        out["username"] = parts.username
    return out


def _env_overrides(base: RedisConfig, prefix: str) -> RedisConfig:
    changes: dict[str, Any] = {}
    for f in fields(RedisConfig):
        value = os.environ.get(f"{prefix}{f.name.upper()}")
        if value is not None:
            changes[f.name] = value
    if not changes:
        return base
    for name in _INT_FIELDS:
        if name in changes:
            try:
                changes[name] = int(changes[name])
            except ValueError:
                raise EnvironmentConfigError(f"the environment's {prefix}{name.upper()}={changes[name]!r} is not a "
                                             "whole number; fix or unset it") from None
    return replace(base, **changes)


def _read_yaml(path: Path) -> Mapping[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}:{mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "not valid YAML"
        raise ConfigError(f"{path}{where}: malformed app.yaml: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path}: malformed app.yaml: the top level must be a mapping")
    unknown = sorted(set(data) - {"broker", "results", "visibility_timeout", "max_deliveries", "celery"})
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {', '.join(map(str, unknown))} "
                          "(known: broker, results, visibility_timeout, max_deliveries, celery)")
    return data


def load_config(spec: Path | None = None, explicit: Path | str | None = None) -> AppConfig:
    """Read the app.yaml in effect (see the module docstring) and apply environment overrides."""
    path = config_path(spec, explicit)
    data = _read_yaml(path) if path is not None else {}
    source = str(path) if path is not None else "defaults"
    try:
        broker = _env_overrides(_redis_section(data.get("broker"), "broker"), "MERLIN_MDM_BROKER_")
        results = None
        if data.get("results") is not None or any(k.startswith("MERLIN_MDM_RESULTS_") for k in os.environ):
            base = _redis_section(data["results"], "results") if data.get("results") is not None else broker
            results = _env_overrides(base, "MERLIN_MDM_RESULTS_")
        celery = data.get("celery") or {}
        if not isinstance(celery, Mapping):
            raise ConfigError("celery must be a mapping of Celery settings")
        visibility = os.environ.get(VISIBILITY_ENV) or data.get("visibility_timeout")
        return AppConfig(broker, results, int(visibility or 86400), int(data.get("max_deliveries", 3)),
                         dict(celery), source, visibility is not None)
    except EnvironmentConfigError:
        raise  # about the environment, not the file
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{source}: {exc}") from None
