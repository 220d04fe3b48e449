"""The one settings object of crawljobs.

Every option is an environment variable prefixed ``CRAWLJOBS_``; the README's configuration table lists them
all with their defaults. The API, the workers, the sweeper and the CLI all read this object, and the Scrapy
settings are derived from it (never retyped).
"""

from __future__ import annotations

import ipaddress
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def _split_csv(value: Any) -> Any:
    """Accept a comma-separated string (the environment's form) as well as a list."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CRAWLJOBS_", extra="ignore", frozen=True)

    # Services. Both unset: `crawljobs up` starts an embedded PostgreSQL and Redis under data_dir.
    database_url: str | None = None
    redis_url: str | None = None
    data_dir: Path = Path(".crawljobs")

    # The API.
    api_host: str = "127.0.0.1"
    api_port: int = Field(default=8000, ge=0, le=65535)
    db_pool_size: int = Field(default=10, ge=1, le=500)
    max_request_bytes: int = Field(default=64 * 1024 * 1024, ge=1024)
    # Bodies cost memory while they are read and handled: the bytes of all bodies in flight in one API process
    # are bounded (a body that does not fit waits for its client's retry: 503), and so is the time one may take.
    max_body_bytes_in_flight: int = Field(default=256 * 1024 * 1024, ge=1024)
    body_read_timeout_seconds: float = Field(default=60.0, gt=0)
    max_batch_size: int = Field(default=50_000, ge=1)
    max_url_length: int = Field(default=8192, ge=64)
    dns_timeout_seconds: float = Field(default=2.0, gt=0)
    # The longest a wait route holds a request (a longer maxWaitTimeMs or timeout is cut to this).
    max_wait_seconds: float = Field(default=300.0, gt=0)
    # How long a stopping API process lets open requests finish before it closes them: waits and event streams
    # would otherwise hold a restart for as long as they last (their clients ask the next process again).
    shutdown_grace_seconds: int = Field(default=5, ge=1)
    # Worker runs on demand (process-crawl-jobs, /v1/jobs/process), each a whole worker process (Chromium's
    # too, if it renders): at most this many at once per API process, and this many of one tenant.
    max_processing_runs: int = Field(default=2, ge=1, le=64)
    max_processing_runs_per_tenant: int = Field(default=1, ge=1, le=64)
    # How often a long wait or an event stream checks that its API key is still valid (not revoked).
    key_recheck_seconds: float = Field(default=5.0, gt=0, le=300)

    # Network rules: networks that fetched URLs may reach although they are not public.
    allowed_networks: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # Browser pages of these origins may call the API (CORS); none by default, "*" for any (service/cors.py).
    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)

    # The queue.
    queue_prefix: str = Field(default="crawljobs", pattern=r"^[A-Za-z0-9._:-]{1,64}$")

    # Jobs.
    max_retries: int = Field(default=3, ge=0, le=100)
    lease_seconds: int = Field(default=60, ge=2)
    # How many times a job may lose its worker (its lease expired) and go back to pending; the next loss fails
    # it "worker lost". Its own budget: retries and escalations do not spend it (crawljobs.lifecycle).
    max_lost_leases: int = Field(default=3, ge=0, le=100)

    # The sweeper. Its liveness check (dead workers' jobs back at once, crawljobs.lifecycle) runs this often: a
    # cheap read of pg_locks and the worker registry.
    worker_check_seconds: float = Field(default=1.0, gt=0, le=60)
    sweep_interval_seconds: float = Field(default=2.0, gt=0)
    dispatch_stale_seconds: int = Field(default=30, ge=1)
    # The longest one webhook delivery may take, all of it: resolving, connecting, sending, the whole answer.
    webhook_timeout_seconds: float = Field(default=10.0, gt=0, le=300)
    # Retention: seconds after a job finished when the sweeper drops its HTML (metadata kept); 0 keeps it.
    result_ttl: int = Field(default=7 * 24 * 3600, ge=0)

    # Fetching (used by the workers).
    premium_proxies: Annotated[list[str], NoDecode] = Field(default_factory=list)
    ultra_premium_proxies: Annotated[list[str], NoDecode] = Field(default_factory=list)
    browser_executable: str | None = None
    max_body_bytes: int = Field(default=10 * 1024 * 1024, ge=1024)
    ladder: str | None = None
    ladder_ceiling: str | None = None
    method_costs: str | None = None
    explore_rate: float = Field(default=0.1, ge=0, le=1)
    domain_memory: bool = True
    workers: int | None = Field(default=None, ge=0, le=256)
    worker_concurrency: int = Field(default=64, ge=1, le=2000)
    browser_concurrency: int = Field(default=4, ge=1, le=64)
    per_domain_concurrency: int = Field(default=16, ge=1, le=1000)
    download_delay: float = Field(default=0.0, ge=0)
    download_timeout: float = Field(default=30.0, gt=0)
    autothrottle: bool = False
    # The hard deadline of one rendered fetch, from its page's opening to its HTML in the worker (page scripts
    # that never stop included); CRAWLJOBS_DOWNLOAD_TIMEOUT is the navigation's share of it.
    render_timeout: float = Field(default=60.0, gt=0)
    # The data memory (RLIMIT_DATA) each Chromium process may take, renderers included: a page past it crashes
    # its renderer alone. 0: no cap.
    browser_memory_mb: int = Field(default=1024, ge=0)

    # Rendering until settled, and sessions per domain (crawlproject/settling.py, crawlproject/sessions.py).
    # After `load`, a render waits for the network to be quiet (no request in flight for this long; 0: no
    # wait), at most render_settle_max_ms; then for a job's wait_for selector or wait_ms, each at most
    # render_max_wait_ms (a longer wait_ms is refused at submission). A page that looks like a JavaScript
    # challenge is given render_challenge_wait_ms to navigate itself on, and up to render_max_reloads such
    # navigations are followed. All of it inside CRAWLJOBS_RENDER_TIMEOUT.
    render_quiet_ms: int = Field(default=500, ge=0, le=60_000)
    render_settle_max_ms: int = Field(default=5_000, ge=0, le=600_000)
    render_max_wait_ms: int = Field(default=30_000, ge=0, le=600_000)
    render_challenge_wait_ms: int = Field(default=15_000, ge=0, le=600_000)
    render_max_reloads: int = Field(default=3, ge=0, le=20)
    # The cookies (and the browser profile) that passed a challenge are kept per tenant, domain and proxy tier
    # in Redis for this long, and later jobs of the domain send them; 0: no sessions.
    session_ttl_seconds: int = Field(default=1800, ge=0, le=30 * 24 * 3600)

    # Observability (crawljobs.metrics, crawljobs.logs). /metrics wants `Authorization: Bearer <token>`; with
    # no token it is closed (it names worker hosts and pids, queue depths) unless metrics_open says otherwise.
    # A plain str: processing.worker_environment spells settings out.
    metrics_token: str | None = None
    metrics_open: bool = False
    # How long /metrics reuses its PostgreSQL job counts; how often a worker publishes heartbeat and Scrapy stats.
    metrics_cache_seconds: float = Field(default=5.0, ge=0)
    metrics_interval_seconds: float = Field(default=5.0, gt=0, le=3600)
    log_format: Literal["text", "json"] = "text"

    @field_validator(
        "allowed_networks", "premium_proxies", "ultra_premium_proxies", "cors_origins", mode="before"
    )
    @classmethod
    def _csv(cls, value: Any) -> Any:
        return _split_csv(value)

    @field_validator("allowed_networks")
    @classmethod
    def _networks_parse(cls, value: list[str]) -> list[str]:
        for item in value:
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError as exc:
                raise ValueError(f"not a network: {item!r}") from exc
        return value

    @model_validator(mode="after")
    def _one_body_fits_in_flight(self) -> Settings:
        if self.max_body_bytes_in_flight < self.max_request_bytes:
            raise ValueError(
                "CRAWLJOBS_MAX_BODY_BYTES_IN_FLIGHT must be at least CRAWLJOBS_MAX_REQUEST_BYTES "
                "(else a body of the largest size allowed could never be read)"
            )
        return self

    @field_validator("cors_origins")
    @classmethod
    def _origins_parse(cls, value: list[str]) -> list[str]:
        for origin in value:
            if origin == "*":
                continue
            scheme, _, rest = origin.partition("://")
            if scheme not in ("http", "https") or not rest or "/" in rest or origin != origin.strip():
                raise ValueError(f"not an origin (scheme://host[:port], or *): {origin!r}")
        return [origin.rstrip("/") for origin in value]

    @cached_property
    def networks(self) -> tuple[IPNetwork, ...]:
        """The allowed networks, parsed."""
        return tuple(ipaddress.ip_network(item, strict=False) for item in self.allowed_networks)

    @property
    def embedded(self) -> bool:
        """True when neither service is configured and `crawljobs up` runs its own."""
        return self.database_url is None and self.redis_url is None
