-- job_columns --
-- Fragment: the columns of a job as `crawljobs.models.Job` reads it, without its HTML (each query adds `html`
-- or a NULL in its place). Every query that returns jobs names this list, never its own.
id, tenant, batch_id, batch_index, url, status, render, premium, ultra_premium, obey_robots, priority, attempt,
retries, lost_leases, max_retries, max_attempts, lease_owner, lease_expires_at, dispatched_at, created_at,
updated_at, started_at, completed_at, html_length, processing_time_ms, success_method, http_status, final_url,
content_type, error_message, cost, idempotency_key, callback_url, wait_for, wait_ms

-- claimed_job_columns --
-- Fragment: what a worker gets back when it claims a job (`crawljobs.lifecycle.ClaimedJob`).
id, tenant, batch_id, url, render, premium, ultra_premium, obey_robots, attempt, retries, lost_leases, max_retries,
wait_for, wait_ms

-- find_tenant_by_key --
-- The tenant of an API key that is not revoked, by the key's hash.
SELECT tenant FROM api_keys WHERE key_hash = %(key_hash)s AND revoked_at IS NULL;

-- insert_api_key --
-- Store a new API key (only its hash).
INSERT INTO api_keys (id, tenant, name, key_hash, key_prefix)
VALUES (%(id)s, %(tenant)s, %(name)s, %(key_hash)s, %(key_prefix)s);

-- insert_job --
-- Insert one job (a single submission) and return it.
INSERT INTO crawl_jobs (id, tenant, url, render, premium, ultra_premium, obey_robots, priority, max_retries,
                        max_attempts, dispatched_at, idempotency_key, callback_url, wait_for, wait_ms)
VALUES (%(id)s, %(tenant)s, %(url)s, %(render)s, %(premium)s, %(ultra_premium)s, %(obey_robots)s, %(priority)s,
        %(max_retries)s, %(max_retries)s + 1, now(), %(idempotency_key)s, %(callback_url)s, %(wait_for)s,
        %(wait_ms)s)
RETURNING {job_columns}, html;

-- find_job_by_idempotency_key --
-- A tenant's job submitted with this Idempotency-Key.
SELECT {job_columns}, NULL::text AS html FROM crawl_jobs
WHERE tenant = %(tenant)s AND idempotency_key = %(idempotency_key)s;

-- insert_batch --
-- Insert a batch row; its jobs follow by COPY in the same transaction.
INSERT INTO crawl_batches (tenant, batch_id, total, render, premium, ultra_premium, obey_robots, max_retries,
                           idempotency_key, request_hash, response, callback_url)
VALUES (%(tenant)s, %(batch_id)s, %(total)s, %(render)s, %(premium)s, %(ultra_premium)s, %(obey_robots)s,
        %(max_retries)s, %(idempotency_key)s, %(request_hash)s, %(response)s, %(callback_url)s);

-- copy_jobs --
-- COPY target for a batch's jobs (rows written by the store).
COPY crawl_jobs (id, tenant, batch_id, batch_index, url, render, premium, ultra_premium, obey_robots,
                 max_retries, max_attempts, dispatched_at, wait_for, wait_ms) FROM STDIN;

-- find_batch --
-- One batch of a tenant.
SELECT * FROM crawl_batches WHERE tenant = %(tenant)s AND batch_id = %(batch_id)s;

-- find_batch_by_idempotency_key --
-- A tenant's batch submitted with this Idempotency-Key.
SELECT * FROM crawl_batches WHERE tenant = %(tenant)s AND idempotency_key = %(idempotency_key)s;

-- mark_undispatched --
-- After a failed push to Redis: these pending jobs were not dispatched after all.
UPDATE crawl_jobs SET dispatched_at = NULL
WHERE id = ANY(%(ids)s::uuid[]) AND status = 'pending';

-- get_job --
-- One job of a tenant, with its HTML.
SELECT {job_columns}, html FROM crawl_jobs WHERE tenant = %(tenant)s AND id = %(id)s;

-- get_job_meta --
-- One job of a tenant, without its HTML.
SELECT {job_columns}, NULL::text AS html
FROM crawl_jobs WHERE tenant = %(tenant)s AND id = %(id)s;

-- list_attempts --
-- Every fetch attempt of a job, oldest first.
SELECT * FROM crawl_attempts WHERE job_id = %(job_id)s ORDER BY id;

-- batch_counts --
-- A batch's jobs counted by status and its last update: the sums of its shards of crawl_batch_counts, which the
-- triggers of migration 0007 keep in the transaction of every change (one row; nulls for a batch of no jobs).
SELECT sum(pending)::bigint AS pending, sum(processing)::bigint AS processing,
       sum(completed)::bigint AS completed, sum(error)::bigint AS error, sum(cancelled)::bigint AS cancelled,
       sum(cost) AS cost, max(last_updated) AS last_updated
FROM crawl_batch_counts WHERE tenant = %(tenant)s AND batch_id = %(batch_id)s;

-- batch_job_ids --
-- The job ids of a batch in submission order (to replay an idempotent submission).
SELECT batch_index, id FROM crawl_jobs
WHERE tenant = %(tenant)s AND batch_id = %(batch_id)s ORDER BY batch_index;

-- batch_jobs --
-- A page of a batch's jobs (without HTML) in submission order, optionally of one status.
SELECT {job_columns}, NULL::text AS html
FROM crawl_jobs
WHERE tenant = %(tenant)s AND batch_id = %(batch_id)s
  AND (%(status)s::text IS NULL OR status = %(status)s::text)
ORDER BY batch_index
LIMIT %(limit)s OFFSET %(offset)s;

-- list_batches --
-- A page of a tenant's batches, newest first, each with its counts by status: the sums of its shards of
-- crawl_batch_counts (migration 0007).
SELECT b.batch_id, b.created_at, b.total, b.render, b.premium, b.ultra_premium,
       coalesce(c.pending, 0) AS pending, coalesce(c.processing, 0) AS processing,
       coalesce(c.completed, 0) AS completed, coalesce(c.error, 0) AS error,
       coalesce(c.cancelled, 0) AS cancelled, coalesce(c.cost, 0) AS cost,
       coalesce(c.last_updated, b.created_at) AS last_updated
FROM (SELECT tenant, batch_id, created_at, total, render, premium, ultra_premium
      FROM crawl_batches WHERE tenant = %(tenant)s
      ORDER BY created_at DESC, batch_id DESC LIMIT %(limit)s OFFSET %(offset)s) AS b
LEFT JOIN LATERAL (
    SELECT sum(s.pending)::bigint AS pending, sum(s.processing)::bigint AS processing,
           sum(s.completed)::bigint AS completed, sum(s.error)::bigint AS error,
           sum(s.cancelled)::bigint AS cancelled, sum(s.cost) AS cost, max(s.last_updated) AS last_updated
    FROM crawl_batch_counts AS s WHERE s.tenant = b.tenant AND s.batch_id = b.batch_id
) AS c ON true
ORDER BY b.created_at DESC, b.batch_id DESC;

-- list_batches_search --
-- The same, of the batches whose id starts with `search` (a range of crawl_batches_search: batch ids are ASCII,
-- so every id with that prefix lies between it and it followed by '~').
SELECT b.batch_id, b.created_at, b.total, b.render, b.premium, b.ultra_premium,
       coalesce(c.pending, 0) AS pending, coalesce(c.processing, 0) AS processing,
       coalesce(c.completed, 0) AS completed, coalesce(c.error, 0) AS error,
       coalesce(c.cancelled, 0) AS cancelled, coalesce(c.cost, 0) AS cost,
       coalesce(c.last_updated, b.created_at) AS last_updated
FROM (SELECT tenant, batch_id, created_at, total, render, premium, ultra_premium
      FROM crawl_batches
      WHERE tenant = %(tenant)s AND batch_id COLLATE "C" >= %(search)s::text
        AND batch_id COLLATE "C" < %(search)s::text || '~' AND starts_with(batch_id, %(search)s::text)
      ORDER BY created_at DESC, batch_id DESC LIMIT %(limit)s OFFSET %(offset)s) AS b
LEFT JOIN LATERAL (
    SELECT sum(s.pending)::bigint AS pending, sum(s.processing)::bigint AS processing,
           sum(s.completed)::bigint AS completed, sum(s.error)::bigint AS error,
           sum(s.cancelled)::bigint AS cancelled, sum(s.cost) AS cost, max(s.last_updated) AS last_updated
    FROM crawl_batch_counts AS s WHERE s.tenant = b.tenant AND s.batch_id = b.batch_id
) AS c ON true
ORDER BY b.created_at DESC, b.batch_id DESC;

-- count_batches --
-- How many batches a tenant has (kept by the trigger on crawl_batches, migration 0007).
SELECT coalesce(sum(batches), 0)::bigint AS count FROM crawl_tenant_counts WHERE tenant = %(tenant)s;

-- count_batches_search --
-- How many of a tenant's batches have an id that starts with `search` (see list_batches_search).
SELECT count(*) FROM crawl_batches
WHERE tenant = %(tenant)s AND batch_id COLLATE "C" >= %(search)s::text
  AND batch_id COLLATE "C" < %(search)s::text || '~' AND starts_with(batch_id, %(search)s::text);

-- retry_failed_jobs --
-- The one explicit retry (error -> pending, which the transition trigger allows only in a transaction that
-- declares it): a batch's failed jobs back to pending with a fresh retry budget; their attempts stay recorded.
UPDATE crawl_jobs
SET status = 'pending', retries = 0, lost_leases = 0, max_attempts = attempt + max_retries + 1,
    error_message = NULL, completed_at = NULL, lease_owner = NULL, lease_expires_at = NULL,
    dispatched_at = now(), updated_at = now()
FROM (SELECT set_config('crawljobs.explicit_retry', 'on', true)) AS explicit_retry
WHERE tenant = %(tenant)s AND batch_id = %(batch_id)s AND status = 'error'
RETURNING id;

-- claim_jobs --
-- Claim dispatched jobs that are still pending (rule 2); ids whose claim fails are simply not returned.
UPDATE crawl_jobs
SET status = 'processing', attempt = attempt + 1, lease_owner = %(worker)s,
    lease_expires_at = now() + make_interval(secs => %(lease_seconds)s),
    started_at = coalesce(started_at, now()), updated_at = now()
WHERE id = ANY(%(ids)s::uuid[]) AND status = 'pending'
RETURNING {claimed_job_columns};

-- claim_pending_jobs --
-- Claim up to `limit` pending jobs straight from the table (single jobs first), skipping locked rows.
UPDATE crawl_jobs
SET status = 'processing', attempt = attempt + 1, lease_owner = %(worker)s,
    lease_expires_at = now() + make_interval(secs => %(lease_seconds)s),
    started_at = coalesce(started_at, now()), updated_at = now()
WHERE id IN (
    SELECT id FROM crawl_jobs
    WHERE status = 'pending'
      AND (%(tenant)s::text IS NULL OR tenant = %(tenant)s::text)
      AND (%(batch_id)s::text IS NULL OR batch_id = %(batch_id)s::text)
    ORDER BY priority DESC, created_at
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
RETURNING {claimed_job_columns};

-- lock_claim_tenants --
-- CRAWLJOBS_TENANT_MAX_IN_FLIGHT, first step of a claim: take each tenant's claim lock (in tenant order, so two
-- claimers never wait on each other in a circle), held to the end of the transaction. The next statement's
-- snapshot is taken after the lock, so it sees every claim of those tenants committed before.
SELECT count(pg_advisory_xact_lock(%(namespace)s::integer, hashtext(tenant))) AS locked
FROM (SELECT DISTINCT tenant FROM crawl_jobs
      WHERE id = ANY(%(ids)s::uuid[]) AND status = 'pending' ORDER BY tenant) AS tenants;

-- claim_jobs_within --
-- Claim dispatched jobs that are still pending (rule 2), but no more of a tenant than keeps its jobs in
-- 'processing' at `cap` (single jobs first, then oldest); the others stay pending (`waiting_jobs`).
WITH wanted AS (
    SELECT id, tenant, row_number() OVER (PARTITION BY tenant ORDER BY priority DESC, created_at, id) AS n
    FROM crawl_jobs WHERE id = ANY(%(ids)s::uuid[]) AND status = 'pending'
), busy AS (
    SELECT tenant, count(*) AS n FROM crawl_jobs
    WHERE status = 'processing' AND tenant IN (SELECT tenant FROM wanted) GROUP BY tenant
)
UPDATE crawl_jobs
SET status = 'processing', attempt = attempt + 1, lease_owner = %(worker)s,
    lease_expires_at = now() + make_interval(secs => %(lease_seconds)s),
    started_at = coalesce(started_at, now()), updated_at = now()
WHERE status = 'pending' AND id IN (
    SELECT w.id FROM wanted w LEFT JOIN busy b ON b.tenant = w.tenant WHERE w.n + coalesce(b.n, 0) <= %(cap)s
)
RETURNING {claimed_job_columns};

-- waiting_jobs --
-- After `claim_jobs_within`: the given jobs still pending (their tenant was at its limit), to queue again.
SELECT id, tenant, batch_id, priority FROM crawl_jobs WHERE id = ANY(%(ids)s::uuid[]) AND status = 'pending';

-- renew_leases --
-- The heartbeat: extend the lease of every job this worker holds, in one statement (rule 4). Only the ids it
-- still holds: a job it let go of (a result it could not write, a claim whose answer it never read) must be
-- left to expire, or it would stay 'processing' for as long as the worker lives.
UPDATE crawl_jobs SET lease_expires_at = now() + make_interval(secs => %(lease_seconds)s)
WHERE status = 'processing' AND lease_owner = %(worker)s AND id = ANY(%(ids)s::uuid[])
RETURNING id, attempt;

-- next_attempt --
-- Start another fetch of a job this worker holds, fenced by the attempt (rule 3): a retry after a transient
-- failure spends one of the job's retries, an escalation spends none.
UPDATE crawl_jobs
SET attempt = attempt + 1, retries = retries + CASE WHEN %(retry)s THEN 1 ELSE 0 END, updated_at = now(),
    lease_expires_at = now() + make_interval(secs => %(lease_seconds)s)
WHERE id = %(id)s AND attempt = %(attempt)s AND status = 'processing' AND lease_owner = %(worker)s
RETURNING attempt, retries;

-- finish_jobs --
-- Write a batch of results (completed or error), each fenced by (id, attempt, owner): a stale worker's
-- result, or one for a cancelled job, changes nothing. Returns the ids that were written.
UPDATE crawl_jobs AS j
SET status = r.status, html = r.html, html_length = r.html_length,
    processing_time_ms = r.processing_time_ms, success_method = r.success_method,
    http_status = r.http_status, final_url = r.final_url, content_type = r.content_type,
    error_message = r.error_message, cost = j.cost + r.cost, completed_at = now(), updated_at = now(),
    lease_owner = NULL, lease_expires_at = NULL
FROM unnest(%(id)s::uuid[], %(attempt)s::int[], %(status)s::text[], %(html)s::text[], %(html_length)s::int[],
            %(processing_time_ms)s::int[], %(success_method)s::text[], %(http_status)s::int[],
            %(final_url)s::text[], %(content_type)s::text[], %(error_message)s::text[], %(cost)s::float8[])
     AS r(id, attempt, status, html, html_length, processing_time_ms, success_method, http_status, final_url,
          content_type, error_message, cost)
WHERE j.id = r.id AND j.attempt = r.attempt AND j.status = 'processing' AND j.lease_owner = %(worker)s
RETURNING j.id, j.batch_id;

-- insert_attempt --
-- Record one fetch attempt.
INSERT INTO crawl_attempts (job_id, attempt, method, worker, started_at, duration_ms, http_status, outcome, error)
VALUES (%(job_id)s, %(attempt)s, %(method)s, %(worker)s, %(started_at)s, %(duration_ms)s, %(http_status)s,
        %(outcome)s, %(error)s);

-- release_jobs --
-- A worker stopping: give back the jobs it holds (not started again here: pending, to be dispatched again).
UPDATE crawl_jobs
SET status = 'pending', lease_owner = NULL, lease_expires_at = NULL, dispatched_at = NULL, updated_at = now()
WHERE status = 'processing' AND lease_owner = %(worker)s AND id = ANY(%(ids)s::uuid[])
RETURNING id;

-- lost_worker_set --
-- Fragment: a job whose worker is gone (its lease expired, or its liveness lock was released) back to pending,
-- the loss counted in `lost_leases`; the loss that takes the count past `max_lost_leases` ends it in error
-- ("worker lost"). Marked dispatched now: the caller pushes it to the head of its list at once.
status = CASE WHEN lost_leases >= %(max_lost_leases)s THEN 'error' ELSE 'pending' END,
lost_leases = lost_leases + 1,
error_message = CASE WHEN lost_leases >= %(max_lost_leases)s
                     THEN 'worker lost: the job lost its worker ' || (lost_leases + 1) || ' times' END,
completed_at = CASE WHEN lost_leases >= %(max_lost_leases)s THEN now() END,
lease_owner = NULL, lease_expires_at = NULL, updated_at = now(),
dispatched_at = CASE WHEN lost_leases >= %(max_lost_leases)s THEN dispatched_at ELSE now() END

-- reclaim_expired_leases --
-- The sweeper: jobs whose worker stopped renewing its lease (alive but stuck or cut off, or dead without the
-- liveness check noticing) go back to pending (`lost_worker_set`).
UPDATE crawl_jobs
SET {lost_worker_set}
WHERE id IN (
    SELECT id FROM crawl_jobs
    WHERE status = 'processing' AND lease_expires_at < now()
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
RETURNING id, status, priority, tenant, batch_id;

-- next_worker_lock_key --
-- A fresh liveness lock key for a starting worker (it takes the lock with `try_worker_lock`).
SELECT nextval('crawl_workers_lock_key_seq')::integer AS lock_key;

-- try_worker_lock --
-- The liveness lock, held by this session until it ends (migration 0006).
SELECT pg_try_advisory_lock(%(namespace)s::integer, %(lock_key)s::integer) AS locked;

-- register_worker --
-- A worker holding its liveness lock (taken on this same session just before) says so; again after a reconnect.
INSERT INTO crawl_workers (worker_id, lock_key, host, pid)
VALUES (%(worker)s, %(lock_key)s, %(host)s, %(pid)s)
ON CONFLICT (worker_id) DO UPDATE SET lock_key = EXCLUDED.lock_key, locked_at = now(), seen_at = now()
RETURNING worker_id;

-- worker_seen --
-- The worker's heartbeat on its liveness session; no row back means it was declared dead (it registers again).
UPDATE crawl_workers SET seen_at = now() WHERE worker_id = %(worker)s AND lock_key = %(lock_key)s
RETURNING worker_id;

-- unregister_worker --
-- A worker stopping cleanly (it gave back its jobs first).
DELETE FROM crawl_workers WHERE worker_id = %(worker)s
RETURNING worker_id;

-- reclaim_dead_workers --
-- The liveness check: registered workers whose lock is no longer held are dead (their session ended). Their
-- rows go, their jobs back to pending (`lost_worker_set`). A lock taken before the server last started was
-- released by the restart, not by a death: such a worker is left to its lease, and forgotten once it has not
-- been seen for `forget_seconds` (by then its leases have expired).
WITH held AS (
    SELECT objid FROM pg_locks
    WHERE locktype = 'advisory' AND granted AND objsubid = 2
      AND classid = %(namespace)s::integer::oid
      AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
), dead AS (
    DELETE FROM crawl_workers
    WHERE lock_key::oid NOT IN (SELECT objid FROM held)
      AND (locked_at > pg_postmaster_start_time()
           OR seen_at < now() - make_interval(secs => %(forget_seconds)s))
    RETURNING worker_id
)
UPDATE crawl_jobs
SET {lost_worker_set}
WHERE id IN (
    SELECT id FROM crawl_jobs
    WHERE status = 'processing' AND lease_owner IN (SELECT worker_id FROM dead)
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
RETURNING id, status, priority, tenant, batch_id;

-- claim_undispatched --
-- The sweeper: pending jobs never dispatched (or dispatched longer ago than `stale_seconds`), marked
-- dispatched now; the caller pushes them to Redis and undoes the mark if the push fails.
UPDATE crawl_jobs SET dispatched_at = now()
WHERE id IN (
    SELECT id FROM crawl_jobs
    WHERE status = 'pending' AND dispatched_at IS NULL
    ORDER BY created_at
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
RETURNING id, priority, tenant, batch_id;

-- claim_stale_dispatched --
-- The sweeper: pending jobs dispatched longer ago than `stale_seconds` (their message may be lost).
UPDATE crawl_jobs SET dispatched_at = now()
WHERE id IN (
    SELECT id FROM crawl_jobs
    WHERE status = 'pending' AND dispatched_at IS NOT NULL
      AND dispatched_at < now() - make_interval(secs => %(stale_seconds)s)
    ORDER BY dispatched_at
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
RETURNING id, priority, tenant, batch_id;

-- count_pending_dispatched --
-- How many pending jobs are marked dispatched (compared with the queue's length by the sweeper).
SELECT count(*) FROM crawl_jobs WHERE status = 'pending' AND dispatched_at IS NOT NULL;

-- cancel_job --
-- Cancel one of a tenant's jobs if it is not final yet (a worker fetching it finds its fence gone).
UPDATE crawl_jobs
SET status = 'cancelled', error_message = 'cancelled', completed_at = now(), updated_at = now(),
    lease_owner = NULL, lease_expires_at = NULL
WHERE tenant = %(tenant)s AND id = %(id)s AND status IN ('pending', 'processing')
RETURNING id, batch_id;

-- cancel_batch_jobs --
-- Cancel every job of a tenant's batch that is not final yet; final jobs are left as they are.
UPDATE crawl_jobs
SET status = 'cancelled', error_message = 'cancelled', completed_at = now(), updated_at = now(),
    lease_owner = NULL, lease_expires_at = NULL
WHERE tenant = %(tenant)s AND batch_id = %(batch_id)s AND status IN ('pending', 'processing')
RETURNING id;

-- export_batch_jobs --
-- A page of a batch's jobs in submission order after `after_index` (keyset), with the HTML if asked.
SELECT {job_columns}, CASE WHEN %(with_html)s THEN html END AS html
FROM crawl_jobs
WHERE tenant = %(tenant)s AND batch_id = %(batch_id)s AND batch_index > %(after_index)s
ORDER BY batch_index
LIMIT %(limit)s OFFSET %(offset)s;

-- purge_expired_html --
-- Retention: drop the HTML (metadata kept) of up to `limit` jobs finished more than `ttl_seconds` ago.
-- (ids as an array: the update finds each row by its primary key, never by scanning the table.)
UPDATE crawl_jobs SET html = NULL, html_purged_at = now()
WHERE id = ANY(ARRAY(
    SELECT id FROM crawl_jobs
    WHERE html IS NOT NULL AND completed_at IS NOT NULL
      AND completed_at < now() - make_interval(secs => %(ttl_seconds)s)
    ORDER BY completed_at
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
))
RETURNING id;

-- get_jobs_meta --
-- Jobs by id, of whatever tenant, without their HTML: the waiters' coalesced re-read (they check the tenant).
SELECT {job_columns}, NULL::text AS html
FROM crawl_jobs WHERE id = ANY(%(ids)s::uuid[]);

-- list_attempts_of_jobs --
-- Every fetch attempt of the given jobs, oldest first per job.
SELECT * FROM crawl_attempts WHERE job_id = ANY(%(ids)s::uuid[]) ORDER BY job_id, id;

-- record_job_events --
-- Webhooks, in the writer's transaction: one outbox row per written job whose job or batch has a callback.
INSERT INTO webhook_deliveries (tenant, event, job_id, batch_id, url, payload)
SELECT j.tenant, e.event, j.id, j.batch_id, coalesce(j.callback_url, b.callback_url),
       jsonb_build_object(
           'event', e.event,
           'created_at', now(),
           'job', jsonb_build_object(
               'id', j.id, 'batch_id', j.batch_id, 'url', j.url, 'status', j.status, 'attempt', j.attempt,
               'http_status', j.http_status, 'final_url', j.final_url, 'content_type', j.content_type,
               'success_method', j.success_method, 'html_length', j.html_length,
               'processing_time_ms', j.processing_time_ms, 'error_message', j.error_message, 'cost', j.cost,
               'created_at', j.created_at, 'completed_at', j.completed_at))
FROM crawl_jobs AS j
LEFT JOIN crawl_batches AS b ON j.batch_id IS NOT NULL AND b.tenant = j.tenant AND b.batch_id = j.batch_id
CROSS JOIN LATERAL (SELECT CASE WHEN j.status = 'completed' THEN 'job.completed' ELSE 'job.failed' END) AS e(event)
WHERE j.id = ANY(%(ids)s::uuid[]) AND coalesce(j.callback_url, b.callback_url) IS NOT NULL;

-- lock_callback_batches --
-- Webhooks: lock the batches (with a callback) of the given jobs, in a fixed order, until the transaction
-- ends: writers finishing jobs of one batch take turns, so the last of them sees every other job final.
SELECT 1 FROM crawl_batches
WHERE callback_url IS NOT NULL
  AND (tenant, batch_id) IN (
      SELECT DISTINCT tenant, batch_id FROM crawl_jobs WHERE id = ANY(%(ids)s::uuid[]) AND batch_id IS NOT NULL)
ORDER BY tenant, batch_id
FOR NO KEY UPDATE;

-- record_batch_events --
-- Webhooks: batch.completed for each batch (with a callback) of the written jobs that has no job left
-- pending or processing; the unique index makes a second writer's insert a no-op. The counts are the kept
-- ones (migration 0007): this statement, after lock_callback_batches, sees every other writer's committed
-- shards and this transaction's own, as it would see their jobs' rows.
INSERT INTO webhook_deliveries (tenant, event, batch_id, url, payload)
SELECT b.tenant, 'batch.completed', b.batch_id, b.callback_url,
       jsonb_build_object(
           'event', 'batch.completed',
           'created_at', now(),
           'batch', jsonb_build_object(
               'batch_id', b.batch_id, 'total', b.total, 'created_at', b.created_at,
               'completed', c.completed, 'error', c.error, 'cancelled', c.cancelled))
FROM crawl_batches AS b
CROSS JOIN LATERAL (
    SELECT coalesce(sum(s.completed), 0)::bigint AS completed, coalesce(sum(s.error), 0)::bigint AS error,
           coalesce(sum(s.cancelled), 0)::bigint AS cancelled,
           coalesce(sum(s.pending) + sum(s.processing), 0)::bigint AS open
    FROM crawl_batch_counts AS s WHERE s.tenant = b.tenant AND s.batch_id = b.batch_id
) AS c
WHERE b.callback_url IS NOT NULL AND c.open = 0
  AND (b.tenant, b.batch_id) IN (
      SELECT DISTINCT tenant, batch_id FROM crawl_jobs WHERE id = ANY(%(ids)s::uuid[]) AND batch_id IS NOT NULL)
ON CONFLICT (tenant, batch_id) WHERE event = 'batch.completed' DO NOTHING;

-- claim_due_deliveries --
-- The sender: take up to `limit` due deliveries, none of the `busy` tenants (those already sending as many as
-- they may), and push their next attempt `lease_seconds` ahead before sending (a second sender skips them),
-- counting the attempt.
UPDATE webhook_deliveries
SET next_attempt_at = now() + make_interval(secs => %(lease_seconds)s), attempts = attempts + 1
WHERE id IN (
    SELECT id FROM webhook_deliveries
    WHERE delivered_at IS NULL AND gave_up_at IS NULL AND next_attempt_at <= now()
      AND tenant <> ALL(%(busy)s::text[])
    ORDER BY next_attempt_at
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
RETURNING id, tenant, event, url, payload, attempts, job_id, batch_id;

-- mark_delivered --
-- A delivery answered with 2xx.
UPDATE webhook_deliveries SET delivered_at = now(), last_status = %(status)s, last_error = NULL
WHERE id = %(id)s;

-- mark_delivery_failed --
-- A delivery that failed: try again at `retry_in` seconds, or give up when `retry_in` is null.
UPDATE webhook_deliveries
SET last_status = %(status)s, last_error = %(error)s,
    next_attempt_at = CASE WHEN %(retry_in)s::float8 IS NULL THEN next_attempt_at
                           ELSE now() + make_interval(secs => %(retry_in)s::float8) END,
    gave_up_at = CASE WHEN %(retry_in)s::float8 IS NULL THEN now() END
WHERE id = %(id)s;

-- unclaim_deliveries --
-- The sender: claimed deliveries it will not send now (their tenant has as many sends in flight as it may),
-- due again at once and their attempt not counted.
UPDATE webhook_deliveries SET next_attempt_at = now(), attempts = attempts - 1
WHERE id = ANY(%(ids)s::uuid[]) AND delivered_at IS NULL AND gave_up_at IS NULL;

-- list_deliveries --
-- A page of a tenant's webhook deliveries, newest first, optionally of one job or one batch.
SELECT id, event, job_id, batch_id, url, payload, attempts, next_attempt_at, last_status, last_error,
       delivered_at, gave_up_at, created_at
FROM webhook_deliveries
WHERE tenant = %(tenant)s
  AND (%(job_id)s::uuid IS NULL OR job_id = %(job_id)s::uuid)
  AND (%(batch_id)s::text IS NULL OR batch_id = %(batch_id)s::text)
ORDER BY created_at DESC, id
LIMIT %(limit)s OFFSET %(offset)s;

-- tenant_secret --
-- A tenant's webhook signing secret, made on first use (the given one is kept only if none exists).
WITH made AS (
    INSERT INTO tenant_secrets (tenant, secret) VALUES (%(tenant)s, %(secret)s)
    ON CONFLICT (tenant) DO NOTHING
    RETURNING secret
)
SELECT secret FROM made
UNION ALL
SELECT secret FROM tenant_secrets WHERE tenant = %(tenant)s
LIMIT 1;

-- count_live_jobs --
-- The jobs not final yet, by status, over every tenant (/metrics): the sums of crawl_tenant_counts (migration
-- 0007), a few rows a tenant, whatever the number of jobs.
SELECT coalesce(sum(pending), 0)::bigint AS pending, coalesce(sum(processing), 0)::bigint AS processing
FROM crawl_tenant_counts;

-- -- waiting: the job changes announced to the API's hubs ------------------------------------------------
-- The channel is named once, in Python (store.NOTIFY_CHANNEL); the payloads are store.notify_payloads'.

-- listen_jobs --
-- The hub's connection: hear every job change. LISTEN takes no parameter: `{channel}` is composed as an identifier.
LISTEN {channel};

-- notify_jobs --
-- Announce changed jobs (their ids, and marks of their batches), one notification per payload, delivered to the
-- listeners when the writer's transaction commits.
SELECT pg_notify(%(channel)s, payload) FROM unnest(%(payloads)s::text[]) AS payload;

-- dashboard_secret --
-- The dashboard's signing key, made on first use (the given one is kept only if none exists yet).
WITH made AS (
    INSERT INTO dashboard_secret (secret) VALUES (%(secret)s)
    ON CONFLICT (id) DO NOTHING
    RETURNING secret
)
SELECT secret FROM made
UNION ALL
SELECT secret FROM dashboard_secret
LIMIT 1;

-- redeliver_delivery --
-- Send a webhook delivery again (the dashboard's "redeliver"): due now, with a fresh series of attempts, whether
-- it was delivered, given up or still pending. Only the tenant's own.
UPDATE webhook_deliveries
SET next_attempt_at = now(), attempts = 0, delivered_at = NULL, gave_up_at = NULL
WHERE id = %(id)s AND tenant = %(tenant)s
RETURNING id, event, job_id, batch_id, url, payload, attempts, next_attempt_at, last_status, last_error,
          delivered_at, gave_up_at, created_at;

-- -- the dashboard: a tenant's overview and a batch's pages of jobs (migration 0007) ---------------------

-- tenant_counts --
-- A tenant's jobs by status (single jobs too) and their cost: the sums of its shards of crawl_tenant_counts.
SELECT coalesce(sum(pending), 0)::bigint AS pending, coalesce(sum(processing), 0)::bigint AS processing,
       coalesce(sum(completed), 0)::bigint AS completed, coalesce(sum(error), 0)::bigint AS error,
       coalesce(sum(cancelled), 0)::bigint AS cancelled, coalesce(sum(cost), 0) AS cost
FROM crawl_tenant_counts WHERE tenant = %(tenant)s;

-- stats_per_minute --
-- Jobs of a tenant that became completed and error in each of the last 60 minutes (UTC minutes, the current
-- one last), every minute present.
SELECT m.start, coalesce(sum(s.completed), 0)::bigint AS completed, coalesce(sum(s.errors), 0)::bigint AS errors
FROM generate_series(date_trunc('minute', now(), 'UTC') - interval '59 minutes',
                     date_trunc('minute', now(), 'UTC'), interval '1 minute') AS m(start)
LEFT JOIN crawl_stats_minutes AS s ON s.tenant = %(tenant)s AND s.minute = m.start
GROUP BY m.start
ORDER BY m.start;

-- stats_per_hour --
-- The same for each of the last 24 hours (the current one last).
SELECT h.start, coalesce(sum(s.completed), 0)::bigint AS completed, coalesce(sum(s.errors), 0)::bigint AS errors
FROM generate_series(date_trunc('hour', now(), 'UTC') - interval '23 hours',
                     date_trunc('hour', now(), 'UTC'), interval '1 hour') AS h(start)
LEFT JOIN crawl_stats_hours AS s ON s.tenant = %(tenant)s AND s.hour = h.start
GROUP BY h.start
ORDER BY h.start;

-- cost_today --
-- The cost a tenant's workers wrote today (the UTC day), by `success_method` ('none': jobs that ended without).
SELECT method, sum(cost) AS cost, sum(jobs)::bigint AS jobs
FROM crawl_cost_days
WHERE tenant = %(tenant)s AND day = (now() AT TIME ZONE 'UTC')::date
GROUP BY method
ORDER BY method;

-- list_workers --
-- The registered workers (crawl_workers), whether their liveness lock is held now, and how many jobs each
-- holds (from the partial index of processing jobs by owner).
WITH held AS (
    SELECT objid FROM pg_locks
    WHERE locktype = 'advisory' AND granted AND objsubid = 2
      AND classid = %(namespace)s::integer::oid
      AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
), jobs AS (
    SELECT lease_owner, count(*) AS n FROM crawl_jobs
    WHERE status = 'processing' AND lease_owner IN (SELECT worker_id FROM crawl_workers)
    GROUP BY lease_owner
)
SELECT w.worker_id, w.host, w.pid, w.started_at, w.seen_at, w.locked_at,
       w.lock_key::oid IN (SELECT objid FROM held) AS alive, coalesce(j.n, 0)::bigint AS jobs_held
FROM crawl_workers AS w LEFT JOIN jobs AS j ON j.lease_owner = w.worker_id
ORDER BY w.host, w.started_at, w.worker_id;

-- batch_jobs_page --
-- A page of a batch's jobs (without HTML) with a batch index in (`after`, `until`], in submission order (keyset,
-- on crawl_jobs_batch_order), optionally only those whose URL contains `search` (lower-cased by the caller).
SELECT {job_columns}, NULL::text AS html
FROM crawl_jobs
WHERE tenant = %(tenant)s AND batch_id = %(batch_id)s AND batch_index > %(after)s AND batch_index <= %(until)s
  AND (%(search)s::text IS NULL OR strpos(lower(url), %(search)s::text) > 0)
ORDER BY batch_index
LIMIT %(limit)s;

-- batch_jobs_page_of_status --
-- The same, of one status (keyset on crawl_jobs_batch_status_order: a rare status is found at once).
SELECT {job_columns}, NULL::text AS html
FROM crawl_jobs
WHERE tenant = %(tenant)s AND batch_id = %(batch_id)s AND status = %(status)s AND batch_index > %(after)s
  AND batch_index <= %(until)s
  AND (%(search)s::text IS NULL OR strpos(lower(url), %(search)s::text) > 0)
ORDER BY batch_index
LIMIT %(limit)s;

-- batch_has_jobs_after --
-- Whether a batch has a job after the batch index `after` (a search that read its window to the end).
SELECT EXISTS (
    SELECT 1 FROM crawl_jobs WHERE tenant = %(tenant)s AND batch_id = %(batch_id)s AND batch_index > %(after)s
) AS more;

-- workers_alive_on_host --
-- `crawljobs health worker` (a container's health check): the workers registered from this host whose liveness
-- lock is held and whose session was seen within `seconds` (it is seen every third of the lease).
SELECT count(*)::integer AS alive FROM crawl_workers w
WHERE w.host = %(host)s
  AND w.seen_at > now() - make_interval(secs => %(seconds)s)
  AND EXISTS (
      SELECT 1 FROM pg_locks l
      WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2
        AND l.classid = %(namespace)s::integer::oid AND l.objid = w.lock_key::oid
        AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
  );
