"""``crawljobs health api|worker|sweeper``: a container's health check of the role it runs (Docker's
``HEALTHCHECK``, Compose's ``healthcheck``, a Kubernetes exec probe).

Each asks what the rest of the system relies on, cheaply, from inside the container:

- **api**: ``GET /readyz`` on this container's API (PostgreSQL and Redis both answer);
- **worker**: a worker registered from this host (the container's hostname) holds its liveness lock and was
  seen within the lease: exactly what the sweeper's liveness check counts as alive (``crawljobs.lifecycle``),
  one query on a short-lived connection;
- **sweeper**: its heartbeat file (``CRAWLJOBS_DATA_DIR/sweeper-heartbeat``, touched after each liveness pass
  that reached the database) is younger than ``--max-age`` seconds.

The worker's and the sweeper's checks fail while PostgreSQL is unreachable: they cannot do their work then.
Exit 0 when healthy, 1 with one line on stderr saying why not.
"""

from __future__ import annotations

import asyncio
import socket
import time

import httpx

from crawljobs.config import Settings
from crawljobs.store import workers_alive_on_host
from crawljobs.sweeper import heartbeat_path


class Unhealthy(Exception):
    """The role is not healthy; the message says why."""


def check_api(settings: Settings, *, url: str | None = None, timeout: float = 5.0) -> str:
    """The API of this container answers ``/readyz`` with 200."""
    port = settings.api_port
    base = url or f"http://127.0.0.1:{port}"
    try:
        response = httpx.get(f"{base.rstrip('/')}/readyz", timeout=timeout)
    except httpx.HTTPError as exc:
        raise Unhealthy(f"the API at {base} does not answer: {exc}") from exc
    if response.status_code != 200:
        raise Unhealthy(f"the API at {base} is not ready: {response.status_code} {response.text[:200]}")
    return f"the API at {base} is ready"


def check_worker(settings: Settings, *, host: str | None = None, max_age: float | None = None) -> str:
    """A worker of this host is alive as the sweeper sees it: lock held, seen within the lease."""
    if not settings.database_url:
        raise Unhealthy("CRAWLJOBS_DATABASE_URL is not set")
    host = host or socket.gethostname()
    seconds = max_age if max_age is not None else float(settings.lease_seconds)
    try:
        alive = asyncio.run(workers_alive_on_host(settings.database_url, host=host, seconds=seconds))
    except Exception as exc:  # any failure to ask is an unhealthy answer, said in one line
        raise Unhealthy(f"cannot read the worker registry: {' '.join(str(exc).split())}") from exc
    if alive < 1:
        raise Unhealthy(f"no worker of host {host} holds its liveness lock and was seen within {seconds:g} s")
    return f"{alive} worker(s) of host {host} alive"


def check_sweeper(settings: Settings, *, max_age: float = 60.0) -> str:
    """The sweeper's heartbeat file is younger than `max_age` seconds."""
    path = heartbeat_path(settings)
    try:
        age = time.time() - path.stat().st_mtime
    except OSError as exc:
        raise Unhealthy(f"no sweeper heartbeat at {path} ({exc.strerror})") from exc
    if age > max_age:
        raise Unhealthy(f"the sweeper's last liveness pass was {age:.0f} s ago (over {max_age:g} s)")
    return f"the sweeper's last liveness pass was {age:.0f} s ago"
