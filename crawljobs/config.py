"""The one settings object of crawljobs.

Every option is an environment variable prefixed ``CRAWLJOBS_``. Each field says what it does in its
``description``; docs/CONFIGURATION.md, the reference of them all, is generated from this object
(``python -m crawljobs.configref --write``; a test fails when the two differ). The API, the workers, the sweeper and the CLI all read this object, and the Scrapy
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
    database_url: str | None = Field(
        default=None,
        description="PostgreSQL URL. Unset together with the Redis URL: `crawljobs up` runs an embedded PostgreSQL",
    )
    redis_url: str | None = Field(
        default=None,
        description="Redis URL (`redis://…` or `unix://…`). Unset: an embedded Redis under `crawljobs up`",
    )
    data_dir: Path = Field(
        default=Path(".crawljobs"),
        description="where the embedded services, the first key and the metrics token of `crawljobs up` live",
    )

    # The API.
    api_host: str = Field(default="127.0.0.1", description="address the API listens on")
    api_port: int = Field(default=8000, ge=0, le=65535, description="port the API listens on")
    db_pool_size: int = Field(default=10, ge=1, le=500, description="database connections per API process")
    max_request_bytes: int = Field(
        default=64 * 1024 * 1024,
        ge=1024,
        description="largest request body (64 MiB), counted as it streams in (413 beyond)",
    )
    # Bodies cost memory while they are read and handled: the bytes of all bodies in flight in one API process
    # are bounded (a body that does not fit waits for its client's retry: 503), and so is the time one may take.
    max_body_bytes_in_flight: int = Field(
        default=256 * 1024 * 1024,
        ge=1024,
        description="bytes of request bodies one API process reads and handles at once (256 MiB, at least "
        "`CRAWLJOBS_MAX_REQUEST_BYTES`); a body that does not fit is a 503 with `Retry-After`",
    )
    body_read_timeout_seconds: float = Field(
        default=60.0,
        gt=0,
        description="time a request body has to arrive whole (408 and the connection closed after it)",
    )
    max_batch_size: int = Field(default=50_000, ge=1, description="most URLs in one batch")
    max_url_length: int = Field(default=8192, ge=64, description="longest URL")
    dns_timeout_seconds: float = Field(
        default=2.0, gt=0, description="time allowed for resolving a submission's host names"
    )
    max_wait_seconds: float = Field(
        default=300.0,
        gt=0,
        description="longest a wait route holds a request; a longer `timeout` or `maxWaitTimeMs` is cut to it",
    )
    # Waits and event streams would otherwise hold a restart for as long as they last (their clients ask the
    # next process again).
    shutdown_grace_seconds: int = Field(
        default=5,
        ge=1,
        description="how long a stopping API process lets open requests finish; its waits answer at once "
        "(`timed_out`) and its event streams end, so clients ask the next process. A stopping worker gives "
        "its renders in flight as long, then closes them and gives their jobs back",
    )
    # Each run is a whole worker process (Chromium's too, if it renders).
    max_processing_runs: int = Field(
        default=2,
        ge=1,
        le=64,
        description="worker runs on demand (`process-crawl-jobs`, `/v1/jobs/process`) an API process runs "
        "at once; beyond, a 429",
    )
    max_processing_runs_per_tenant: int = Field(
        default=1, ge=1, le=64, description="of those, how many one tenant may have at once"
    )
    key_recheck_seconds: float = Field(
        default=5.0,
        gt=0,
        le=300,
        description="how often a wait or an event stream checks that its API key is still valid; a revoked "
        "key ends it",
    )

    # Network rules.
    allowed_networks: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="comma-separated networks (`127.0.0.1/32,10.0.0.0/8`) that URLs may reach although they "
        "are not public",
    )
    # service/cors.py.
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="comma-separated origins (`https://app.example.com`) whose browser pages may call the "
        "API, or `*` for any; credentials are never allowed (keys travel in headers)",
    )

    # The queue. The prefix of every Redis key.
    queue_prefix: str = Field(default="crawljobs", pattern=r"^[A-Za-z0-9._:-]{1,64}$")

    # Fair shares (crawljobs.queue): batch jobs taken in turns by tenant and by batch; false: one FIFO list
    # (as before; workers read both, so switching loses nothing). Read by whoever dispatches: the API and the
    # sweeper.
    fair_shares: bool = True
    # At most this many jobs of one tenant processing at once, over all workers (checked in the claim; jobs
    # over it wait, queued again, and the tenant is passed over in the rotation for a moment). Unset: no limit.
    # Read by the workers.
    tenant_max_in_flight: int | None = Field(default=None, ge=1)
    # Requests a second each API key may make (a token bucket in Redis, shared by the API processes; bursts of
    # CRAWLJOBS_RATE_LIMIT_BURST, by default ten seconds' worth); over it, 429 with Retry-After. Unset: no limit.
    rate_limit_per_second: float | None = Field(default=None, gt=0)
    rate_limit_burst: int | None = Field(default=None, ge=1)

    # Jobs.
    max_retries: int = Field(
        default=3, ge=0, le=100, description="retries after the first attempt, unless a job sets its own"
    )
    lease_seconds: int = Field(
        default=60, ge=2, description="how long a worker's claim on a job lasts without a heartbeat"
    )
    # Its own budget: retries and escalations do not spend it (crawljobs.lifecycle).
    max_lost_leases: int = Field(
        default=3,
        ge=0,
        le=100,
        description="how many times a job may lose its worker (it died, or its lease expired) and run again; "
        'the next loss fails it "worker lost"',
    )

    # The sweeper. Its liveness check (dead workers' jobs back at once, crawljobs.lifecycle) is a cheap read of
    # pg_locks and the worker registry.
    worker_check_seconds: float = Field(
        default=1.0,
        gt=0,
        le=60,
        description="how often the sweeper looks for dead workers (their liveness lock released) and takes "
        "their jobs back",
    )
    sweep_interval_seconds: float = Field(default=2.0, gt=0, description="how often the sweeper runs")
    dispatch_stale_seconds: int = Field(
        default=30,
        ge=1,
        description="age after which a dispatched pending job whose message is missing is dispatched again",
    )
    webhook_timeout_seconds: float = Field(
        default=10.0,
        gt=0,
        le=300,
        description="the longest one webhook delivery may take, all of it (resolving, connecting, sending, "
        "the whole answer)",
    )
    result_ttl: int = Field(
        default=7 * 24 * 3600,
        ge=0,
        description="seconds (7 days) after a job finished when the sweeper drops its HTML (`html_length` "
        "and all metadata kept, `html_purged_at` set); `0` keeps HTML forever",
    )

    # Fetching (used by the workers).
    premium_proxies: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="comma-separated proxy URLs of the premium tier"
    )
    ultra_premium_proxies: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="comma-separated proxy URLs of the ultra-premium tier"
    )
    browser_executable: str | None = Field(
        default=None,
        description="Chromium to use (default: `chromium` on PATH, else Playwright's own); the impersonate engine "
        "reads its version (`--version`) once and sends that Chrome's handshake and headers",
    )
    max_body_bytes: int = Field(
        default=10 * 1024 * 1024, ge=1024, description="largest page a worker stores (10 MiB)"
    )
    ladder: str | None = Field(
        default=None,
        description="comma-separated methods (engines `impersonate`, `http`, `browser`), e.g. "
        "`http:direct,impersonate:direct,browser:direct,impersonate:premium` (unset: `impersonate:direct,"
        "browser:direct,impersonate:premium,browser:premium,impersonate:ultra_premium,browser:ultra_premium`)",
    )
    ladder_ceiling: str | None = Field(
        default=None, description="the highest method a job may climb to (unset: the last of the ladder)"
    )
    method_costs: str | None = Field(
        default=None,
        description="cost weight of each method (unset: `impersonate:direct=1,browser:direct=5,"
        "impersonate:premium=10,browser:premium=25,impersonate:ultra_premium=30,browser:ultra_premium=75`, and "
        "`http` as `impersonate`)",
    )
    explore_rate: float = Field(
        default=0.1,
        ge=0,
        le=1,
        description="share of jobs that start one step below their domain's remembered method",
    )
    domain_memory: bool = Field(
        default=True, description="remember per tenant and domain the method that worked"
    )
    workers: int | None = Field(
        default=None,
        ge=0,
        le=256,
        description="worker processes `crawljobs up` starts (unset: one per core)",
    )
    worker_concurrency: int = Field(
        default=64, ge=1, le=2000, description="concurrent fetches per worker process"
    )
    per_domain_concurrency: int = Field(
        default=16, ge=1, le=1000, description="concurrent fetches per domain per worker"
    )
    download_delay: float = Field(default=0.0, ge=0, description="seconds between requests to one domain")
    download_timeout: float = Field(
        default=30.0, gt=0, description="seconds per fetch (for a rendered one, its navigation)"
    )
    autothrottle: bool = Field(default=False, description="Scrapy's AutoThrottle")
    render_timeout: float = Field(
        default=60.0,
        gt=0,
        description="the hard deadline of a rendered fetch, from its page's opening to its HTML in the worker "
        "(page scripts that never stop included; `CRAWLJOBS_DOWNLOAD_TIMEOUT` is the navigation's share); "
        "past it the page is closed",
    )
    # The data memory (RLIMIT_DATA) each Chromium process may take, renderers included: a page past it crashes
    # its renderer alone. 0: no cap.
    browser_memory_mb: int = Field(default=1024, ge=0)
    # The browser's profile (crawlproject.profiles): where it says it is (locale@IANA timezone), per proxy tier
    # where a tier's proxies are elsewhere ("premium=de-DE@Europe/Berlin,..."), the brand it adds to
    # Chromium's own ("Google Chrome"; none: Chromium's, the same on every target), and WebGL: "egl" (ANGLE on
    # the system's EGL: the GPU's, or Mesa's llvmpipe), "swiftshader" (Chromium's headless default, a tell)
    # or "none" (no GPU process, no WebGL).
    browser_region: str = Field(
        default="en-US@America/New_York",
        description="where the browser says it is: UI locale (languages and `Accept-Language` follow) and IANA "
        "timezone, `locale@Timezone`",
    )
    browser_tier_regions: str | None = Field(
        default=None,
        description="per proxy tier, where its proxies are: `premium=de-DE@Europe/Berlin,ultra_premium=en-GB@"
        "Europe/London` (unset: every tier says CRAWLJOBS_BROWSER_REGION)",
    )
    browser_brand: str | None = Field(
        default=None,
        description="a brand added to Chromium's own in `sec-ch-ua` and `userAgentData` (`Google Chrome`); unset: "
        "the browser's own brands, the same on every target",
    )
    browser_gl: Literal["egl", "swiftshader", "none"] = Field(
        default="egl",
        description="WebGL: `egl` (ANGLE on the system's EGL: the GPU's renderer, or Mesa's llvmpipe), "
        "`swiftshader` (headless Chromium's default, a tell), `none` (no WebGL)",
    )
    browser_concurrency: int | None = Field(
        default=None,
        ge=1,
        le=64,
        description="pages one worker renders at once, all its browser contexts together (unset: "
        "min(PAGES_PER_CORE x cores, PAGES_PER_GIB x GiB) / CRAWLJOBS_WORKERS); a worker claims only the jobs "
        "its browser can start soon",
    )
    browser_pages_per_core: float = Field(
        default=4.0,
        gt=0,
        le=64,
        description="browser pages per core when CRAWLJOBS_BROWSER_CONCURRENCY is unset (8 pages on 2 cores "
        "rendered the most, `bench/playwright_loop.py`)",
    )
    browser_pages_per_gib: float = Field(
        default=4.0,
        gt=0,
        le=64,
        description="browser pages per GiB of memory (the cgroup's limit, else the machine's) when "
        "CRAWLJOBS_BROWSER_CONCURRENCY is unset",
    )
    browser_context_idle_seconds: float = Field(
        default=60.0,
        gt=0,
        description="a browser context (one per proxy and profile) with no page for this long is closed; at the "
        "bound of 8 contexts the least recently used idle one is closed for a new one",
    )

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
    metrics_token: str | None = Field(  # a plain str: processing.worker_environment spells settings out
        default=None,
        description="`/metrics` wants `Authorization: Bearer <token>`; unset, `/metrics` is closed (403 "
        "`metrics_closed`) unless opened (`crawljobs up` makes one)",
    )
    metrics_open: bool = Field(
        default=False,
        description="`true`: `/metrics` answers anyone who reaches the API, when no token is set (a token set "
        "is always wanted)",
    )
    metrics_cache_seconds: float = Field(
        default=5.0, ge=0, description="how long `/metrics` reuses its PostgreSQL job counts"
    )
    metrics_interval_seconds: float = Field(
        default=5.0,
        gt=0,
        le=3600,
        description="how often a worker publishes its heartbeat and Scrapy stats (kept for 6 intervals)",
    )
    # `json`: one JSON object a line (`time`, `level`, `logger`, `message`, `job_id`, `batch_id`, `worker`...)
    # for API, sweeper and workers.
    log_format: Literal["text", "json"] = "text"

    # The browser dashboard (service/dashboard, docs/DASHBOARD.md).
    dashboard_secret: str | None = Field(
        default=None,
        min_length=32,
        description="the key (32 characters or more) that signs the dashboard's session cookies and CSRF tokens; "
        "unset, one is made on first use and kept in the database, shared by every API process. Changing it "
        "signs every browser out",
    )
    dashboard_session_seconds: int = Field(
        default=12 * 3600,
        ge=60,
        le=30 * 24 * 3600,
        description="how long a dashboard session lasts after sign-in (revoking its key ends it at once)",
    )

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
