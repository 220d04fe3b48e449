"""The job store: the only package that talks to PostgreSQL (DESIGN: only the store imports psycopg).

Every function takes an open async connection and keyword-only arguments, runs named queries from
``sql/queries.sql`` and returns plain rows; the manager and the lifecycle turn them into models. Database errors
that mean something to a caller are wrapped here into typed exceptions. One module an idea:

- `rows`: running a named query; `events`: webhook outbox rows and NOTIFYs after a change of jobs;
- `submissions`: API keys, jobs and batches as submitted; `reads`: jobs, batches, exports, counts;
- `transitions`: every change of a job's status; `sweeping`: dispatch marks and retention;
- `webhooks`: the delivery outbox (and the dashboard's signing key); `listen`: the waiting hub's LISTEN connection;
- `presence`: a worker's liveness session (its advisory lock).
"""

from crawljobs.store.events import BATCH_MARK, NOTIFY_CHANNEL, notify_payloads
from crawljobs.store.listen import JobListener, listen_jobs
from crawljobs.store.pool import Pool, open_pool
from crawljobs.store.presence import WORKER_LOCK_NAMESPACE, LivenessSession, workers_alive_on_host
from crawljobs.store.reads import (
    batch_counts,
    batch_has_jobs_after,
    batch_jobs,
    batch_jobs_page,
    cost_today,
    count_batches,
    count_live_jobs,
    export_batch_jobs,
    get_job,
    get_jobs_meta,
    list_attempts,
    list_attempts_of_jobs,
    list_batches,
    list_workers,
    overview_rows,
    stats_per_hour,
    stats_per_minute,
    tenant_counts,
)
from crawljobs.store.rows import Row
from crawljobs.store.submissions import (
    batch_job_ids,
    copy_jobs,
    copy_text,
    find_batch,
    find_batch_by_idempotency_key,
    find_job_by_idempotency_key,
    find_tenant_by_key,
    insert_api_key,
    insert_batch,
    insert_job,
    mark_undispatched,
)
from crawljobs.store.sweeping import (
    claim_stale_dispatched,
    claim_undispatched,
    count_pending_dispatched,
    purge_expired_html,
)
from crawljobs.store.transitions import (
    FINISH_COLUMNS,
    cancel_batch_jobs,
    cancel_job,
    claim_jobs,
    claim_pending_jobs,
    finish_jobs,
    next_attempt,
    reclaim_dead_workers,
    reclaim_expired_leases,
    release_jobs,
    renew_leases,
    retry_failed_jobs,
)
from crawljobs.store.webhooks import (
    claim_due_deliveries,
    dashboard_secret,
    list_deliveries,
    mark_delivered,
    mark_delivery_failed,
    redeliver_delivery,
    tenant_secret,
    unclaim_deliveries,
)

__all__ = [
    "BATCH_MARK",
    "FINISH_COLUMNS",
    "NOTIFY_CHANNEL",
    "WORKER_LOCK_NAMESPACE",
    "JobListener",
    "LivenessSession",
    "Pool",
    "Row",
    "batch_counts",
    "batch_has_jobs_after",
    "batch_job_ids",
    "batch_jobs",
    "batch_jobs_page",
    "cancel_batch_jobs",
    "cancel_job",
    "claim_due_deliveries",
    "claim_jobs",
    "claim_pending_jobs",
    "claim_stale_dispatched",
    "claim_undispatched",
    "copy_jobs",
    "copy_text",
    "cost_today",
    "count_batches",
    "count_live_jobs",
    "count_pending_dispatched",
    "dashboard_secret",
    "export_batch_jobs",
    "find_batch",
    "find_batch_by_idempotency_key",
    "find_job_by_idempotency_key",
    "find_tenant_by_key",
    "finish_jobs",
    "get_job",
    "get_jobs_meta",
    "insert_api_key",
    "insert_batch",
    "insert_job",
    "list_attempts",
    "list_attempts_of_jobs",
    "list_batches",
    "list_deliveries",
    "list_workers",
    "listen_jobs",
    "mark_delivered",
    "mark_delivery_failed",
    "mark_undispatched",
    "next_attempt",
    "notify_payloads",
    "open_pool",
    "overview_rows",
    "purge_expired_html",
    "reclaim_dead_workers",
    "reclaim_expired_leases",
    "redeliver_delivery",
    "release_jobs",
    "renew_leases",
    "retry_failed_jobs",
    "stats_per_hour",
    "stats_per_minute",
    "tenant_counts",
    "tenant_secret",
    "unclaim_deliveries",
    "workers_alive_on_host",
]
