"""The embedded services of the zero-setup start: they start, answer, stop, and keep their data."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import psycopg
import pytest
import redis

from crawljobs.config import Settings
from crawljobs.embedded import EmbeddedServiceError, start_postgres, start_redis


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A folder under /tmp with a short name (sockets go inside), others may enter it (as pgserver needs)."""
    directory = Path(tempfile.mkdtemp(prefix="cjt", dir="/tmp"))
    directory.chmod(0o755)
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


def test_postgres_keeps_data_across_restart(short_dir: Path) -> None:
    folder = short_dir / "data" / "postgres"  # its parent does not exist yet, as on a first `crawljobs up`
    with start_postgres(folder) as server, psycopg.connect(server.url) as conn:
        conn.execute("CREATE TABLE kept (value text)")
        conn.execute("INSERT INTO kept VALUES ('survives')")
    assert not (folder / "postmaster.pid").exists(), "the server did not stop"

    with start_postgres(folder, cleanup="delete") as server, psycopg.connect(server.url) as conn:
        assert conn.execute("SELECT value FROM kept").fetchall() == [("survives",)]
    assert not folder.exists(), 'cleanup="delete" left the folder'


def test_postgres_stop_twice_is_harmless(short_dir: Path) -> None:
    folder = short_dir / "pg"
    server = start_postgres(folder)
    server.stop()
    assert not (folder / "postmaster.pid").exists(), "the first stop did not stop the server"
    # The same folder served again; the first handle's second stop must leave the new server alone.
    with start_postgres(folder, cleanup="delete") as again:
        server.stop()
        with psycopg.connect(again.url, connect_timeout=5) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    assert not folder.exists(), "the server started again was not stopped and deleted"


def test_postgres_refuses_a_socket_path_too_long(short_dir: Path) -> None:
    with pytest.raises(EmbeddedServiceError, match="too long for a unix socket"):
        start_postgres(short_dir / ("x" * 100))


@pytest.mark.skipif(os.geteuid() != 0, reason="only root runs PostgreSQL as another user")
def test_postgres_refuses_a_folder_its_user_cannot_enter(short_dir: Path) -> None:
    locked = short_dir / "locked"
    locked.mkdir(mode=0o700)
    with pytest.raises(EmbeddedServiceError, match=f"cannot enter {re.escape(str(locked))} "):
        start_postgres(locked / "pg")
    assert locked.stat().st_mode & 0o777 == 0o700, "the folder's mode was changed"


def test_persistent_redis_keeps_data_across_restart(short_dir: Path) -> None:
    with start_redis(short_dir / "redis") as server:
        assert server.url == f"unix://{short_dir}/redis/redis.sock"
        with redis.Redis.from_url(server.url) as client:
            client.set("kept", "survives")
    assert server.process.poll() is not None, "the server did not stop"

    with start_redis(short_dir / "redis") as server, redis.Redis.from_url(server.url) as client:
        assert client.get("kept") == b"survives"


def test_throwaway_redis_forgets_on_restart(short_dir: Path) -> None:
    with (
        start_redis(short_dir / "redis", persistent=False) as server,
        redis.Redis.from_url(server.url) as client,
    ):
        client.set("gone", "soon")
    with (
        start_redis(short_dir / "redis", persistent=False) as server,
        redis.Redis.from_url(server.url) as client,
    ):
        assert client.get("gone") is None


def test_redis_refuses_a_folder_already_served(short_dir: Path) -> None:
    with start_redis(short_dir / "redis", persistent=False) as server:
        with pytest.raises(EmbeddedServiceError, match=rf"\(pid {server.process.pid}\) already answers"):
            start_redis(short_dir / "redis", persistent=False)
        assert server.process.poll() is None, "the running server was disturbed"


def test_redis_left_running_by_a_killed_process_is_replaced(short_dir: Path) -> None:
    folder = short_dir / "redis"
    code = (
        "import sys, redis; from pathlib import Path; from crawljobs.embedded import start_redis\n"
        "server = start_redis(Path(sys.argv[1]))\n"
        "redis.Redis.from_url(server.url).set('kept', 'survives')\n"
        "print(server.process.pid, flush=True)\n"
        "sys.stdin.read()\n"
    )
    owner = subprocess.Popen(
        [sys.executable, "-c", code, str(folder)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert owner.stdout is not None
    orphan = int(owner.stdout.readline())
    owner.kill()  # no cleanup runs: its Redis lives on
    owner.wait()
    try:
        with start_redis(folder) as server, redis.Redis.from_url(server.url) as client:
            assert server.process.pid != orphan
            assert client.get("kept") == b"survives"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(orphan, signal.SIGKILL)


def test_redis_start_failure_shows_the_log(short_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("crawljobs.embedded._redis_config", lambda *args, **kwargs: "no-such-directive yes\n")
    with pytest.raises(EmbeddedServiceError, match=r"(?s)exited with status 1.*no-such-directive"):
        start_redis(short_dir / "redis", persistent=False)


def _start_up(data_dir: Path, port: int) -> subprocess.Popen[str]:
    code = (
        "import sys; from crawljobs.config import Settings; from crawljobs.up import run_up\n"
        "run_up(Settings(data_dir=sys.argv[1]), host='127.0.0.1', port=int(sys.argv[2]))\n"
    )
    env = {name: value for name, value in os.environ.items() if not name.startswith("CRAWLJOBS_")}
    return subprocess.Popen(
        [sys.executable, "-c", code, str(data_dir), str(port)],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )


def _printed_key(process: subprocess.Popen[str]) -> str:
    assert process.stdout is not None
    for line in process.stdout:
        if line.startswith("API key:"):
            return line.split()[2]
    raise AssertionError(f"no key printed (exit status {process.wait()})")


def test_up_runs_the_api_on_embedded_services_and_stops_them(short_dir: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    data_dir = short_dir / "data"
    keys = []
    for _ in range(2):  # the second start finds the data of the first
        process = _start_up(data_dir, port)
        try:
            keys.append(_printed_key(process))
            deadline = time.monotonic() + 30
            while True:
                try:
                    response = httpx.get(
                        f"http://127.0.0.1:{port}/v1/batches", headers={"Authorization": f"Bearer {keys[-1]}"}
                    )
                    break
                except httpx.TransportError:
                    assert time.monotonic() < deadline, "the API did not answer"
                    time.sleep(0.1)
            assert response.status_code == 200
            redis_pid = int((data_dir / "redis" / "redis.pid").read_text())
            process.send_signal(signal.SIGTERM)
            assert process.wait(30) == 0
        finally:
            if process.poll() is None:
                process.kill()
        assert not (data_dir / "postgres" / "postmaster.pid").exists(), "PostgreSQL still runs"
        with pytest.raises(ProcessLookupError):
            os.kill(redis_pid, 0)
    assert keys[0] == keys[1]
    assert (data_dir / "api-key").stat().st_mode & 0o777 == 0o600


def test_session_services_give_a_migrated_database_and_a_prefix(settings: Settings) -> None:
    assert settings.database_url is not None and settings.redis_url is not None
    with psycopg.connect(settings.database_url) as conn:
        assert conn.execute("SELECT count(*) FROM schema_migrations").fetchone() != (0,)
    with redis.Redis.from_url(settings.redis_url) as client:
        client.set(f"{settings.queue_prefix}:probe", "1")
        assert client.get(f"{settings.queue_prefix}:probe") == b"1"


def _descendants(pid: int) -> list[psutil.Process]:
    return psutil.Process(pid).children(recursive=True)


def test_a_killed_up_leaves_nothing_running(short_dir: Path) -> None:
    """SIGKILL of `crawljobs up` (nothing of it runs again): its watchdog stops the workers, the sweeper, Redis
    and the detached PostgreSQL within a few seconds. And while one `up` runs, a second on its folder refuses."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    data_dir = short_dir / "data"
    process = _start_up(data_dir, port)
    try:
        _printed_key(process)
        started = [p for p in _descendants(process.pid) if "watchdog" not in " ".join(p.cmdline())]
        postmaster = int((data_dir / "postgres" / "postmaster.pid").read_text().split()[0])
        redis_pid = int((data_dir / "redis" / "redis.pid").read_text())
        assert {p.pid for p in started} >= {redis_pid}
        assert len([p for p in started if "crawljobs.cli" in " ".join(p.cmdline())]) >= 2  # sweeper, a worker

        second = subprocess.run(
            [sys.executable, "-m", "crawljobs.cli", "up", "--port", "0"],
            env={
                **{k: v for k, v in os.environ.items() if not k.startswith("CRAWLJOBS_")},
                "CRAWLJOBS_DATA_DIR": str(data_dir),
            },
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert second.returncode != 0
        assert "already running" in second.stderr + second.stdout, second.stderr

        process.kill()
        process.wait(10)
        survivors: list[int] = []
        deadline = time.monotonic() + 15
        for pid in [*(p.pid for p in started), postmaster]:
            while psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                if time.monotonic() > deadline:
                    survivors.append(pid)
                    break
                time.sleep(0.1)
        print(f"\nleft running {time.monotonic() - deadline + 15:.1f} s after the SIGKILL: {survivors}")
        assert survivors == [], "still running after `up` was killed"
    finally:
        if process.poll() is None:
            process.kill()
        for pid in _pids_in(data_dir):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _pids_in(data_dir: Path) -> list[int]:
    pids = []
    for path in (data_dir / "postgres" / "postmaster.pid", data_dir / "redis" / "redis.pid"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            pids.append(int(path.read_text().split()[0]))
    return pids
