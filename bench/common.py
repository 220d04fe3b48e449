"""What the benchmarks share: services (configured or embedded), a throwaway database, an API process."""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from crawljobs.keys import create_key
from crawljobs.migrate import migrate

ROOT = Path(__file__).resolve().parent.parent


@contextlib.contextmanager
def services() -> Iterator[tuple[str, str]]:
    """(PostgreSQL admin URL, Redis URL): from CRAWLJOBS_BENCH_DATABASE_URL / _REDIS_URL, else embedded."""
    from crawljobs.embedded import start_postgres, start_redis

    pg_url = os.environ.get("CRAWLJOBS_BENCH_DATABASE_URL")
    redis_url = os.environ.get("CRAWLJOBS_BENCH_REDIS_URL")
    with contextlib.ExitStack() as stack:
        if not pg_url:
            folder = Path(tempfile.mkdtemp(prefix="cjbpg", dir="/tmp"))
            pg_url = stack.enter_context(start_postgres(folder, cleanup="delete")).url
        if not redis_url:
            folder = Path(tempfile.mkdtemp(prefix="cjbrd", dir="/tmp"))
            redis_url = stack.enter_context(start_redis(folder, persistent=False)).url
        yield pg_url, redis_url


@contextlib.contextmanager
def scratch_database(admin_url: str) -> Iterator[str]:
    """A new, migrated database, dropped afterwards."""
    name = f"cjbench_{secrets.token_hex(4)}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = make_conninfo("", **{**conninfo_to_dict(admin_url), "dbname": name})
    try:
        migrate(url)
        yield url
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def api_process(
    database_url: str, redis_url: str, *, key: str | None = None, port: int | None = None, **env: str
) -> Iterator[tuple[str, str]]:
    """A real API process (uvicorn) on a free loopback port (or on ``port``: the port of the API process this
    one replaces, so that its clients find it again): yields (base URL, API key). The key is ``key`` (one made
    earlier, say for the API process this one replaces) or a new one."""
    key = key or create_key(database_url, name="bench")
    port = port or free_port()
    child_env = {
        **os.environ,
        "CRAWLJOBS_DATABASE_URL": database_url,
        "CRAWLJOBS_REDIS_URL": redis_url,
        **{f"CRAWLJOBS_{k.upper()}": v for k, v in env.items()},
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "crawljobs.cli", "api", "--host", "127.0.0.1", "--port", str(port)],
        env=child_env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(proc, base, timeout=30)
        yield base, key
    finally:
        stop(proc, grace=10)


def wait_ready(proc: subprocess.Popen[bytes], base: str, *, timeout: float, log: Path | None = None) -> None:
    """Until the API process at ``base`` answers ``/readyz`` with 200; RuntimeError (with its log, if given) when
    it exits or ``timeout`` seconds pass first."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            tail = f":\n{log.read_text()}" if log is not None else ""
            raise RuntimeError(f"the API process did not become ready{tail}")
        time.sleep(0.1)


def stop(popen: subprocess.Popen[bytes], grace: float = 20) -> None:
    """SIGTERM, ``grace`` seconds to exit, then SIGKILL (nothing if it has exited)."""
    if popen.poll() is not None:
        return
    popen.terminate()
    try:
        popen.wait(grace)
    except subprocess.TimeoutExpired:
        popen.kill()
        popen.wait()


def server_ms(response: httpx.Response) -> float:
    """The service's own time for a request, from its Server-Timing header."""
    header = response.headers.get("server-timing", "")
    for part in header.split(","):
        name, _, params = part.strip().partition(";")
        if name == "app" and params.startswith("dur="):
            return float(params[4:])
    raise ValueError(f"no Server-Timing in response: {header!r}")


def median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2
