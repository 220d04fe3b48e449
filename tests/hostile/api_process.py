"""A real API process (uvicorn, this repository's server) on a loopback port, for the pressure tests.

The pressure tests measure what an attack does to a whole process (its memory, its event loop), which an
in-process TestClient cannot show. The child builds the app with a resolver that answers every name "does not
resolve" after ``HOSTILE_DNS_DELAY`` seconds (a slow NXDOMAIN, as a real resolver gives for a made-up name),
and it refuses any real DNS look-up (``socket.getaddrinfo`` of a name) as the suite's tripwire does: nothing
it is sent can reach a DNS server.

    python -m tests.hostile.api_process PORT    # with CRAWLJOBS_DATABASE_URL... in the environment
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from bench.common import stop, wait_ready

ROOT = Path(__file__).resolve().parents[2]
DELAY_VARIABLE = "HOSTILE_DNS_DELAY"


@dataclass(frozen=True)
class ApiProcess:
    base: str
    port: int
    process: psutil.Process

    def rss_mib(self) -> float:
        return self.process.memory_info().rss / 2**20


@contextmanager
def api_process(
    database_url: str, redis_url: str, *, log: Path, dns_delay: float = 0.001, **settings: str
) -> Iterator[ApiProcess]:
    """The API in a process of its own, ready (``/readyz`` 200); ``settings`` are CRAWLJOBS_ variables, and
    every name it resolves "does not resolve" after ``dns_delay`` seconds."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {
        **{k: v for k, v in os.environ.items() if not k.upper().startswith("CRAWLJOBS_")},
        "CRAWLJOBS_DATABASE_URL": database_url,
        "CRAWLJOBS_REDIS_URL": redis_url,
        DELAY_VARIABLE: str(dns_delay),
        **{f"CRAWLJOBS_{name.upper()}": value for name, value in settings.items()},
    }
    with log.open("wb") as output:
        popen = subprocess.Popen(
            [sys.executable, "-m", "tests.hostile.api_process", str(port)],
            env=env,
            cwd=ROOT,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(popen, base, timeout=60, log=log)
        yield ApiProcess(base, port, psutil.Process(popen.pid))
    finally:
        stop(popen, grace=15)


def _guard_dns() -> None:
    real = socket.getaddrinfo

    def guarded(host: Any, *args: Any, **kwargs: Any) -> Any:
        text = host.decode() if isinstance(host, bytes) else str(host)
        if host is not None and text.lower() != "localhost" and not text.startswith("/"):
            try:
                ipaddress.ip_address(text.split("%", 1)[0])
            except ValueError:
                raise socket.gaierror(
                    socket.EAI_NONAME, "this test process allows no real DNS look-up"
                ) from None
        return real(host, *args, **kwargs)

    socket.getaddrinfo = guarded


def main(port: int) -> None:
    import uvicorn

    from crawljobs.config import Settings
    from service.app import create_app
    from service.server import ApiServer

    _guard_dns()
    delay = float(os.environ[DELAY_VARIABLE])

    async def slow_nxdomain(host: str) -> list[str]:
        await asyncio.sleep(delay)
        raise OSError(f"test resolver: {host} does not resolve")

    settings = Settings()
    app = create_app(settings, resolver=slow_nxdomain)
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="warning", timeout_graceful_shutdown=2
    )
    ApiServer(config, hub=app.state.hub).run()


if __name__ == "__main__":
    main(int(sys.argv[1]))
