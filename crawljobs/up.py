"""``crawljobs up``: the whole system in one command, on embedded services unless they are configured.

Startup: the data folder's lock (one ``up`` a folder), a watchdog (``crawljobs.watchdog``: if this process dies
however it dies, what it started is stopped), the embedded PostgreSQL and Redis that are not configured (under
the data folder), migrations, the first API key, the metrics token, the child processes (workers, sweeper), then
the API in this process. Shutdown (Ctrl-C or SIGTERM) in the reverse order: the API, the children, Redis,
PostgreSQL.

/metrics is closed without a token (it names worker hosts and pids). Rather than leave a local start's metrics
unreadable, or open them on an address that ``--host`` may have made public, ``up`` makes a metrics token on
first start when none is configured (and ``CRAWLJOBS_METRICS_OPEN`` is not set), keeps it next to the first key
and prints it, so a local Prometheus can be pointed at it at once.
"""

from __future__ import annotations

import fcntl
import logging
import os
import secrets
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

from crawljobs.config import Settings
from crawljobs.embedded import start_postgres, start_redis
from crawljobs.exceptions import CrawlJobsError
from crawljobs.keys import ensure_first_key
from crawljobs.migrate import migrate
from crawljobs.watchdog import Watchdog

logger = logging.getLogger(__name__)

CHILD_STOP_TIMEOUT = 10.0
DATABASE_URL_VARIABLE = "CRAWLJOBS_DATABASE_URL"
REDIS_URL_VARIABLE = "CRAWLJOBS_REDIS_URL"
METRICS_TOKEN_VARIABLE = "CRAWLJOBS_METRICS_TOKEN"
METRICS_TOKEN_FILE = "metrics-token"

Handler = Callable[[int, FrameType | None], Any] | int | None


class Stopping(BaseException):
    """SIGTERM arrived: unwind and stop everything (a BaseException, like KeyboardInterrupt)."""


def child_commands(settings: Settings) -> list[list[str]]:
    """The long-running processes that ``up`` starts next to the API, each an argv list.

    They run with this process's environment, which by then names the database and Redis in use
    (``CRAWLJOBS_DATABASE_URL``, ``CRAWLJOBS_REDIS_URL``): the sweeper, and one crawl worker per core
    (``CRAWLJOBS_WORKERS`` to choose another number; one Scrapy process is CPU-bound on one core).
    """
    cli = [sys.executable, "-m", "crawljobs.cli"]
    return [[*cli, "sweeper"]] + [[*cli, "worker"] for _ in range(settings.workers or os.cpu_count() or 1)]


def run_up(settings: Settings, *, host: str, port: int) -> None:
    """Run the whole system until Ctrl-C or SIGTERM, then stop everything it started, last started first."""
    port = _usable_port(host, port)
    data_dir = settings.data_dir.expanduser().resolve()
    previous_handlers = _set_signal_handlers(_raise_stop)
    previous_environ = {
        name: os.environ.get(name)
        for name in (DATABASE_URL_VARIABLE, REDIS_URL_VARIABLE, METRICS_TOKEN_VARIABLE)
    }
    stack = ExitStack()
    try:
        stack.enter_context(_only_up_of(data_dir))
        watchdog = stack.enter_context(Watchdog.running())
        database_url = settings.database_url
        if not database_url:
            watchdog.postgres(data_dir / "postgres")
            database_url = stack.enter_context(start_postgres(data_dir / "postgres")).url
            os.environ[DATABASE_URL_VARIABLE] = database_url
        if not settings.redis_url:
            redis_server = stack.enter_context(start_redis(data_dir / "redis"))
            watchdog.group(redis_server.process.pid)
            os.environ[REDIS_URL_VARIABLE] = redis_server.url
        applied = migrate(database_url)
        if applied:
            logger.info("applied migrations: %s", ", ".join(applied), extra={"action": "migrate"})
        key = ensure_first_key(database_url, data_dir)
        metrics_token = settings.metrics_token or None
        if metrics_token is None and not settings.metrics_open:
            metrics_token = os.environ[METRICS_TOKEN_VARIABLE] = ensure_metrics_token(data_dir)
        for child in stack.enter_context(_running(child_commands(settings))):
            watchdog.group(child.pid)

        base = f"http://{_display_host(host)}:{port}"
        print(f"crawljobs API:  {base}")
        print(f"API docs:       {base}/docs")
        print(f"Dashboard:      {base}/  (sign in with the API key)")
        print(f"API key:        {key}  (kept in {data_dir / 'api-key'})")
        if metrics_token is None:
            print(f"Metrics:        {base}/metrics  (open: CRAWLJOBS_METRICS_OPEN)")
        elif not settings.metrics_token:
            print(
                f"Metrics token:  {metrics_token}  (kept in {data_dir / METRICS_TOKEN_FILE}; {base}/metrics)"
            )
        else:
            print(f"Metrics:        {base}/metrics  (with CRAWLJOBS_METRICS_TOKEN)")
        print("Press Ctrl-C to stop.", flush=True)
        from service.server import serve

        serve(settings, host=host, port=port)  # uvicorn's, ending the open waits first when it stops
    except (KeyboardInterrupt, Stopping):
        pass
    finally:
        logger.info("stopping", extra={"action": "up"})
        _set_signal_handlers(_log_already_stopping)  # a second Ctrl-C must not cut the shutdown short
        try:
            stack.close()
        finally:
            _restore(previous_handlers, previous_environ)


@contextmanager
def _only_up_of(data_dir: Path) -> Iterator[None]:
    """Hold the data folder's lock while ``up`` runs: a second ``up`` on the same folder refuses at once (the
    lock is the kernel's: it goes with the process, however that ends)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / "up.lock"
    with path.open("a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            holder = lock.read().strip()
            raise CrawlJobsError(
                f"crawljobs up is already running on {data_dir}{f' (pid {holder})' if holder else ''}; stop it "
                "first, or give this one another CRAWLJOBS_DATA_DIR"
            ) from None
        lock.seek(0)
        lock.truncate()
        lock.write(f"{os.getpid()}\n")
        lock.flush()
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def ensure_metrics_token(data_dir: Path) -> str:
    """The metrics token of the zero-setup start: made on first start, kept (mode 0600) in
    ``data_dir/metrics-token``, so a scraper configured with it keeps working across restarts."""
    path = data_dir / METRICS_TOKEN_FILE
    if path.exists():
        return path.read_text(encoding="utf-8").strip()
    token = secrets.token_urlsafe(32)
    data_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(token + "\n")
    return token


def _usable_port(host: str, port: int) -> int:
    """``port``, or a free one for 0; fails before anything starts when the address is taken (uvicorn would
    only fail once everything else runs)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except OSError as exc:
        raise CrawlJobsError(f"cannot listen on {host}: {exc}") from exc
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            raise CrawlJobsError(f"cannot listen on {host}:{port}: {exc.strerror}") from exc
        bound: int = probe.getsockname()[1]
        return bound


def _display_host(host: str) -> str:
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


def _raise_stop(signum: int, frame: FrameType | None) -> None:
    # uvicorn puts its own handlers in place while it serves and, once it has shut down gracefully, raises
    # the signal it caught again, against these.
    raise KeyboardInterrupt if signum == signal.SIGINT else Stopping


def _log_already_stopping(signum: int, frame: FrameType | None) -> None:
    logger.warning("already stopping: signal %d ignored", signum)


def _set_signal_handlers(handler: Handler) -> dict[int, Handler]:
    """Handle SIGINT and SIGTERM with ``handler``; return the handlers replaced (none off the main thread)."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    return {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}


def _restore(handlers: dict[int, Handler], environ: dict[str, str | None]) -> None:
    for sig, handler in handlers.items():
        signal.signal(sig, handler)
    for name, value in environ.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@contextmanager
def _running(commands: Sequence[Sequence[str]]) -> Iterator[list[subprocess.Popen[bytes]]]:
    """Start ``commands`` as child processes; on exit stop them: SIGTERM, a grace period, then SIGKILL."""
    processes: list[subprocess.Popen[bytes]] = []
    try:
        for command in commands:
            logger.info("starting %s", shlex.join(command))
            # A session of their own: a Ctrl-C in the terminal reaches only us, and we stop them in order.
            processes.append(
                subprocess.Popen(list(command), stdin=subprocess.DEVNULL, start_new_session=True)
            )
        yield processes
    finally:
        stop_processes(processes)


def stop_processes(processes: Sequence[subprocess.Popen[bytes]], timeout: float = CHILD_STOP_TIMEOUT) -> None:
    """SIGTERM to every process still running, up to ``timeout`` seconds for all to exit, then SIGKILL."""
    for process in processes:
        if process.poll() is None:
            process.terminate()
    deadline = time.monotonic() + timeout
    for process in processes:
        try:
            process.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            logger.warning(
                "child %d (%s) did not stop within %.0f s: killing it", process.pid, process.args, timeout
            )
            process.kill()
            process.wait()
