-- Counts kept by the database in the same transaction as every change of a job (DESIGN rule 6: counts are
-- derived from the statuses, never written by the application).
--
-- Statement-level triggers on crawl_jobs (INSERT, UPDATE, DELETE, TRUNCATE) read the statement's transition
-- tables, group what changed by (tenant, batch, old status, new status, method) and add the differences to:
--
--   crawl_batch_counts   a batch's jobs by status, their cost and when one of them last changed (`last_updated`,
--                        the max of their `updated_at` as the batch listing always showed it);
--   crawl_tenant_counts  all of a tenant's jobs by status (single jobs too) and their cost, and its number of
--                        batches (a trigger on crawl_batches);
--   crawl_stats_minutes  jobs that became completed / error, per tenant and minute (a ring of 60 minutes);
--   crawl_stats_hours    the same per hour (a ring of 24 hours);
--   crawl_cost_days      cost written per tenant, UTC day and `success_method` ('none' when a job ended without
--                        one), a ring of 7 days.
--
-- Hot rows. Every worker finishing a job of one batch would otherwise update the same row, holding its lock
-- until its commit: writers of one batch (and of one tenant) would take turns. So each count is spread over
-- shards: a writer adds to the shard of its backend (pg_backend_pid() modulo crawl_counts_shards(), 8 unless
-- the session sets `crawljobs.count_shards`, which bench.dashboard does to measure the difference), and readers
-- sum the shards. A shard alone may go negative (a job inserted in shard 0 and finished in shard 3); the sums
-- are exact.
--
-- Deadlocks. One trigger run takes its rows in one order (batches sorted, then the tenant, then the stats), and
-- each transaction that changes statuses runs one such statement (crawljobs/store/transitions.py), so two
-- writers of the same shards always lock them in the same order. A submission takes its tenant's row first (the
-- batch row's trigger) and then its new batch's, which no other transaction can see yet.
--
-- An UPDATE's statement trigger reads only the OLD TABLE (see crawl_jobs_count_update). The counts are read by
-- the batch listing, a batch's read, waits and event streams, batch.completed and /metrics (sql/queries.sql).
--
-- Statement-level, not row-level: a 50,000-job COPY, a batch cancelled or retried is one update of its batch's
-- row per shard, not 50,000. (Transition tables cannot be asked for an UPDATE OF a column list: the UPDATE
-- trigger runs for every UPDATE of crawl_jobs and leaves at once when no status, updated_at or cost changed,
-- as for the heartbeat's lease renewals.)
--
-- The stats tables are rings: a slot is reused for the next minute (hour, day) that maps to it, reset on its
-- first write in that minute; readers keep only the slots of the range they ask for. They count events (a job
-- failing, retried and failing again is two errors), and are backfilled below from the jobs' current state.

CREATE FUNCTION crawl_counts_shards() RETURNS integer
LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN s ~ '^[1-9][0-9]{0,2}$' THEN s::integer ELSE 8 END
    FROM coalesce(current_setting('crawljobs.count_shards', true), '') AS s
$$;

CREATE TABLE crawl_batch_counts (
    tenant        text NOT NULL,
    batch_id      text NOT NULL,
    shard         smallint NOT NULL,
    pending       bigint NOT NULL DEFAULT 0,
    processing    bigint NOT NULL DEFAULT 0,
    completed     bigint NOT NULL DEFAULT 0,
    error         bigint NOT NULL DEFAULT 0,
    cancelled     bigint NOT NULL DEFAULT 0,
    cost          double precision NOT NULL DEFAULT 0,
    last_updated  timestamptz,
    PRIMARY KEY (tenant, batch_id, shard)
);

CREATE TABLE crawl_tenant_counts (
    tenant      text NOT NULL,
    shard       smallint NOT NULL,
    pending     bigint NOT NULL DEFAULT 0,
    processing  bigint NOT NULL DEFAULT 0,
    completed   bigint NOT NULL DEFAULT 0,
    error       bigint NOT NULL DEFAULT 0,
    cancelled   bigint NOT NULL DEFAULT 0,
    cost        double precision NOT NULL DEFAULT 0,
    batches     bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant, shard)
);

CREATE TABLE crawl_stats_minutes (
    tenant     text NOT NULL,
    slot       smallint NOT NULL,  -- minutes since the epoch, modulo 60
    shard      smallint NOT NULL,
    minute     timestamptz NOT NULL,
    completed  bigint NOT NULL DEFAULT 0,
    errors     bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant, slot, shard)
);

CREATE TABLE crawl_stats_hours (
    tenant     text NOT NULL,
    slot       smallint NOT NULL,  -- hours since the epoch, modulo 24
    shard      smallint NOT NULL,
    hour       timestamptz NOT NULL,
    completed  bigint NOT NULL DEFAULT 0,
    errors     bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant, slot, shard)
);

CREATE TABLE crawl_cost_days (
    tenant  text NOT NULL,
    slot    smallint NOT NULL,  -- days since the epoch (UTC), modulo 7
    method  text NOT NULL,
    shard   smallint NOT NULL,
    day     date NOT NULL,
    cost    double precision NOT NULL DEFAULT 0,
    jobs    bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant, slot, method, shard)
);

-- What one statement changed, grouped: `n` jobs of (tenant, batch_id) went from old_status (NULL: inserted) to
-- new_status (NULL: deleted), their cost changed by `cost`, the last of them at `last_updated`.
CREATE TYPE crawl_count_change AS (
    tenant        text,
    batch_id      text,
    old_status    text,
    new_status    text,
    method        text,
    n             bigint,
    cost          double precision,
    last_updated  timestamptz
);

CREATE FUNCTION crawl_counts_apply(changes crawl_count_change[]) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    my_shard smallint := (pg_backend_pid() % crawl_counts_shards())::smallint;
    at_minute timestamptz := date_trunc('minute', now(), 'UTC');
    at_hour timestamptz := date_trunc('hour', now(), 'UTC');
    today date := (now() AT TIME ZONE 'UTC')::date;
BEGIN
    INSERT INTO crawl_batch_counts AS c
        (tenant, batch_id, shard, pending, processing, completed, error, cancelled, cost, last_updated)
    SELECT d.tenant, d.batch_id, my_shard,
           sum(CASE WHEN d.new_status = 'pending' THEN d.n ELSE 0 END)
               - sum(CASE WHEN d.old_status = 'pending' THEN d.n ELSE 0 END),
           sum(CASE WHEN d.new_status = 'processing' THEN d.n ELSE 0 END)
               - sum(CASE WHEN d.old_status = 'processing' THEN d.n ELSE 0 END),
           sum(CASE WHEN d.new_status = 'completed' THEN d.n ELSE 0 END)
               - sum(CASE WHEN d.old_status = 'completed' THEN d.n ELSE 0 END),
           sum(CASE WHEN d.new_status = 'error' THEN d.n ELSE 0 END)
               - sum(CASE WHEN d.old_status = 'error' THEN d.n ELSE 0 END),
           sum(CASE WHEN d.new_status = 'cancelled' THEN d.n ELSE 0 END)
               - sum(CASE WHEN d.old_status = 'cancelled' THEN d.n ELSE 0 END),
           sum(d.cost), max(d.last_updated)
    FROM unnest(changes) AS d
    WHERE d.batch_id IS NOT NULL
    GROUP BY d.tenant, d.batch_id
    ORDER BY d.tenant, d.batch_id
    ON CONFLICT (tenant, batch_id, shard) DO UPDATE
    SET pending = c.pending + EXCLUDED.pending, processing = c.processing + EXCLUDED.processing,
        completed = c.completed + EXCLUDED.completed, error = c.error + EXCLUDED.error,
        cancelled = c.cancelled + EXCLUDED.cancelled, cost = c.cost + EXCLUDED.cost,
        last_updated = greatest(c.last_updated, EXCLUDED.last_updated);

    INSERT INTO crawl_tenant_counts AS c
        (tenant, shard, pending, processing, completed, error, cancelled, cost)
    SELECT d.tenant, my_shard,
           sum(CASE WHEN d.new_status = 'pending' THEN d.n ELSE 0 END)
               - sum(CASE WHEN d.old_status = 'pending' THEN d.n ELSE 0 END),
           sum(CASE WHEN d.new_status = 'processing' THEN d.n ELSE 0 END)
               - sum(CASE WHEN d.old_status = 'processing' THEN d.n ELSE 0 END),
           sum(CASE WHEN d.new_status = 'completed' THEN d.n ELSE 0 END)
               - sum(CASE WHEN d.old_status = 'completed' THEN d.n ELSE 0 END),
           sum(CASE WHEN d.new_status = 'error' THEN d.n ELSE 0 END)
               - sum(CASE WHEN d.old_status = 'error' THEN d.n ELSE 0 END),
           sum(CASE WHEN d.new_status = 'cancelled' THEN d.n ELSE 0 END)
               - sum(CASE WHEN d.old_status = 'cancelled' THEN d.n ELSE 0 END),
           sum(d.cost)
    FROM unnest(changes) AS d
    WHERE d.old_status IS DISTINCT FROM d.new_status OR d.cost <> 0
    GROUP BY d.tenant
    ORDER BY d.tenant
    ON CONFLICT (tenant, shard) DO UPDATE
    SET pending = c.pending + EXCLUDED.pending, processing = c.processing + EXCLUDED.processing,
        completed = c.completed + EXCLUDED.completed, error = c.error + EXCLUDED.error,
        cancelled = c.cancelled + EXCLUDED.cancelled, cost = c.cost + EXCLUDED.cost;

    -- Events: a job became completed or error (an insertion is a submission, a deletion no event), bucketed by
    -- the writer's clock.
    INSERT INTO crawl_stats_minutes AS s (tenant, slot, shard, minute, completed, errors)
    SELECT d.tenant, ((extract(epoch FROM at_minute)::bigint / 60) % 60)::smallint, my_shard, at_minute,
           coalesce(sum(d.n) FILTER (WHERE d.new_status = 'completed'), 0),
           coalesce(sum(d.n) FILTER (WHERE d.new_status = 'error'), 0)
    FROM unnest(changes) AS d
    WHERE d.new_status IN ('completed', 'error') AND d.old_status IS NOT NULL AND d.old_status <> d.new_status
    GROUP BY d.tenant
    ORDER BY d.tenant
    ON CONFLICT (tenant, slot, shard) DO UPDATE
    SET completed = CASE WHEN s.minute = EXCLUDED.minute THEN s.completed ELSE 0 END + EXCLUDED.completed,
        errors = CASE WHEN s.minute = EXCLUDED.minute THEN s.errors ELSE 0 END + EXCLUDED.errors,
        minute = EXCLUDED.minute;

    INSERT INTO crawl_stats_hours AS s (tenant, slot, shard, hour, completed, errors)
    SELECT d.tenant, ((extract(epoch FROM at_hour)::bigint / 3600) % 24)::smallint, my_shard, at_hour,
           coalesce(sum(d.n) FILTER (WHERE d.new_status = 'completed'), 0),
           coalesce(sum(d.n) FILTER (WHERE d.new_status = 'error'), 0)
    FROM unnest(changes) AS d
    WHERE d.new_status IN ('completed', 'error') AND d.old_status IS NOT NULL AND d.old_status <> d.new_status
    GROUP BY d.tenant
    ORDER BY d.tenant
    ON CONFLICT (tenant, slot, shard) DO UPDATE
    SET completed = CASE WHEN s.hour = EXCLUDED.hour THEN s.completed ELSE 0 END + EXCLUDED.completed,
        errors = CASE WHEN s.hour = EXCLUDED.hour THEN s.errors ELSE 0 END + EXCLUDED.errors,
        hour = EXCLUDED.hour;

    -- Cost written by an update (a worker's result); a deletion spends nothing.
    INSERT INTO crawl_cost_days AS s (tenant, slot, method, shard, day, cost, jobs)
    SELECT d.tenant, ((today - DATE '1970-01-01') % 7)::smallint, coalesce(d.method, 'none'), my_shard, today,
           sum(d.cost), sum(d.n)
    FROM unnest(changes) AS d
    WHERE d.old_status IS NOT NULL AND d.new_status IS NOT NULL AND d.cost <> 0
    GROUP BY d.tenant, coalesce(d.method, 'none')
    ORDER BY d.tenant, coalesce(d.method, 'none')
    ON CONFLICT (tenant, slot, method, shard) DO UPDATE
    SET cost = CASE WHEN s.day = EXCLUDED.day THEN s.cost ELSE 0 END + EXCLUDED.cost,
        jobs = CASE WHEN s.day = EXCLUDED.day THEN s.jobs ELSE 0 END + EXCLUDED.jobs,
        day = EXCLUDED.day;
END;
$$;

CREATE FUNCTION crawl_jobs_count_insert() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    changes crawl_count_change[];
BEGIN
    SELECT array_agg(ROW(tenant, batch_id, NULL, status, NULL, n, cost, last_updated)::crawl_count_change)
    INTO changes
    FROM (SELECT tenant, batch_id, status, count(*) AS n, sum(cost) AS cost, max(updated_at) AS last_updated
          FROM inserted GROUP BY tenant, batch_id, status) AS g;
    IF changes IS NOT NULL THEN
        PERFORM crawl_counts_apply(changes);
    END IF;
    RETURN NULL;
END;
$$;

-- An UPDATE's new values are read back from crawl_jobs by id, not from a NEW TABLE: a transition table holds
-- its new rows as written, before TOAST, so a worker's results would be copied, HTML and all, into the
-- statement's tuplestore (and past work_mem into a temporary file); the old rows keep their TOAST pointers. The
-- rows read back are those this statement wrote: this transaction holds their locks, so they are as it left
-- them. (OFFSET 0 keeps the read an index probe per row, whatever the first plan cached for this session.)
CREATE FUNCTION crawl_jobs_count_update() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    changes crawl_count_change[];
BEGIN
    SELECT array_agg(ROW(tenant, batch_id, old_status, new_status, method, n, cost, last_updated)
                     ::crawl_count_change)
    INTO changes
    FROM (SELECT n.tenant, n.batch_id, o.status AS old_status, n.status AS new_status,
                 CASE WHEN n.cost <> o.cost THEN n.success_method END AS method,
                 count(*) AS n, sum(n.cost - o.cost) AS cost, max(n.updated_at) AS last_updated
          FROM old_rows AS o
          CROSS JOIN LATERAL (
              SELECT j.tenant, j.batch_id, j.status, j.cost, j.success_method, j.updated_at
              FROM crawl_jobs AS j WHERE j.id = o.id OFFSET 0
          ) AS n
          WHERE o.status <> n.status OR o.updated_at <> n.updated_at OR o.cost <> n.cost
          GROUP BY 1, 2, 3, 4, 5) AS g;
    IF changes IS NOT NULL THEN
        PERFORM crawl_counts_apply(changes);
    END IF;
    RETURN NULL;
END;
$$;

CREATE FUNCTION crawl_jobs_count_delete() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    changes crawl_count_change[];
BEGIN
    SELECT array_agg(ROW(tenant, batch_id, status, NULL, NULL, n, -cost, NULL)::crawl_count_change)
    INTO changes
    FROM (SELECT tenant, batch_id, status, count(*) AS n, sum(cost) AS cost
          FROM deleted GROUP BY tenant, batch_id, status) AS g;
    IF changes IS NOT NULL THEN
        PERFORM crawl_counts_apply(changes);
    END IF;
    RETURN NULL;
END;
$$;

-- TRUNCATE passes no rows: the counts of every job go with them (the events stay: they happened).
CREATE FUNCTION crawl_jobs_count_truncate() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM crawl_batch_counts;
    DELETE FROM crawl_tenant_counts;
    RETURN NULL;
END;
$$;

-- A tenant's number of batches, for the batch listing's total.
CREATE FUNCTION crawl_batches_count_insert() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO crawl_tenant_counts AS c (tenant, shard, batches)
    SELECT tenant, (pg_backend_pid() % crawl_counts_shards())::smallint, count(*)
    FROM inserted GROUP BY tenant ORDER BY tenant
    ON CONFLICT (tenant, shard) DO UPDATE SET batches = c.batches + EXCLUDED.batches;
    RETURN NULL;
END;
$$;

CREATE FUNCTION crawl_batches_count_delete() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO crawl_tenant_counts AS c (tenant, shard, batches)
    SELECT tenant, (pg_backend_pid() % crawl_counts_shards())::smallint, -count(*)
    FROM deleted GROUP BY tenant ORDER BY tenant
    ON CONFLICT (tenant, shard) DO UPDATE SET batches = c.batches + EXCLUDED.batches;
    RETURN NULL;
END;
$$;

CREATE FUNCTION crawl_batches_count_truncate() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE crawl_tenant_counts SET batches = 0 WHERE batches <> 0;
    RETURN NULL;
END;
$$;

-- Writers wait while the triggers are created and the counts backfilled (readers do not): no change can fall
-- between the backfill and the first trigger run.
LOCK TABLE crawl_batches, crawl_jobs IN SHARE ROW EXCLUSIVE MODE;

CREATE TRIGGER crawl_batches_count_insert AFTER INSERT ON crawl_batches
    REFERENCING NEW TABLE AS inserted
    FOR EACH STATEMENT EXECUTE FUNCTION crawl_batches_count_insert();
CREATE TRIGGER crawl_batches_count_delete AFTER DELETE ON crawl_batches
    REFERENCING OLD TABLE AS deleted
    FOR EACH STATEMENT EXECUTE FUNCTION crawl_batches_count_delete();
CREATE TRIGGER crawl_batches_count_truncate AFTER TRUNCATE ON crawl_batches
    FOR EACH STATEMENT EXECUTE FUNCTION crawl_batches_count_truncate();

CREATE TRIGGER crawl_jobs_count_insert AFTER INSERT ON crawl_jobs
    REFERENCING NEW TABLE AS inserted
    FOR EACH STATEMENT EXECUTE FUNCTION crawl_jobs_count_insert();
CREATE TRIGGER crawl_jobs_count_update AFTER UPDATE ON crawl_jobs
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION crawl_jobs_count_update();
CREATE TRIGGER crawl_jobs_count_delete AFTER DELETE ON crawl_jobs
    REFERENCING OLD TABLE AS deleted
    FOR EACH STATEMENT EXECUTE FUNCTION crawl_jobs_count_delete();
CREATE TRIGGER crawl_jobs_count_truncate AFTER TRUNCATE ON crawl_jobs
    FOR EACH STATEMENT EXECUTE FUNCTION crawl_jobs_count_truncate();

-- The backfill, into shard 0.
INSERT INTO crawl_batch_counts
    (tenant, batch_id, shard, pending, processing, completed, error, cancelled, cost, last_updated)
SELECT tenant, batch_id, 0,
       count(*) FILTER (WHERE status = 'pending'), count(*) FILTER (WHERE status = 'processing'),
       count(*) FILTER (WHERE status = 'completed'), count(*) FILTER (WHERE status = 'error'),
       count(*) FILTER (WHERE status = 'cancelled'), sum(cost), max(updated_at)
FROM crawl_jobs WHERE batch_id IS NOT NULL
GROUP BY tenant, batch_id;

INSERT INTO crawl_tenant_counts (tenant, shard, pending, processing, completed, error, cancelled, cost)
SELECT tenant, 0,
       count(*) FILTER (WHERE status = 'pending'), count(*) FILTER (WHERE status = 'processing'),
       count(*) FILTER (WHERE status = 'completed'), count(*) FILTER (WHERE status = 'error'),
       count(*) FILTER (WHERE status = 'cancelled'), sum(cost)
FROM crawl_jobs
GROUP BY tenant;

INSERT INTO crawl_tenant_counts AS c (tenant, shard, batches)
SELECT tenant, 0, count(*) FROM crawl_batches GROUP BY tenant
ON CONFLICT (tenant, shard) DO UPDATE SET batches = EXCLUDED.batches;

INSERT INTO crawl_stats_minutes (tenant, slot, shard, minute, completed, errors)
SELECT tenant, ((extract(epoch FROM m)::bigint / 60) % 60)::smallint, 0, m,
       count(*) FILTER (WHERE status = 'completed'), count(*) FILTER (WHERE status = 'error')
FROM (SELECT tenant, status, date_trunc('minute', completed_at, 'UTC') AS m FROM crawl_jobs
      WHERE status IN ('completed', 'error')
        AND completed_at >= date_trunc('minute', now(), 'UTC') - interval '59 minutes') AS j
GROUP BY tenant, m;

INSERT INTO crawl_stats_hours (tenant, slot, shard, hour, completed, errors)
SELECT tenant, ((extract(epoch FROM h)::bigint / 3600) % 24)::smallint, 0, h,
       count(*) FILTER (WHERE status = 'completed'), count(*) FILTER (WHERE status = 'error')
FROM (SELECT tenant, status, date_trunc('hour', completed_at, 'UTC') AS h FROM crawl_jobs
      WHERE status IN ('completed', 'error')
        AND completed_at >= date_trunc('hour', now(), 'UTC') - interval '23 hours') AS j
GROUP BY tenant, h;

INSERT INTO crawl_cost_days (tenant, slot, method, shard, day, cost, jobs)
SELECT tenant, (((now() AT TIME ZONE 'UTC')::date - DATE '1970-01-01') % 7)::smallint,
       coalesce(success_method, 'none'), 0, (now() AT TIME ZONE 'UTC')::date, sum(cost), count(*)
FROM crawl_jobs
WHERE cost <> 0 AND completed_at >= date_trunc('day', now(), 'UTC')
GROUP BY tenant, coalesce(success_method, 'none');

-- A batch's page of jobs of one status, by keyset on the batch index (the dashboard; a cancel or an explicit
-- retry finds its rows here too). It replaces the index the counts were read from, which nothing needs now.
CREATE INDEX crawl_jobs_batch_status_order ON crawl_jobs (tenant, batch_id, status, batch_index)
    WHERE batch_id IS NOT NULL;
DROP INDEX crawl_jobs_batch_status;

-- The batch listing searched by a prefix of the batch id: a range of this index (bytewise order, whatever the
-- database's collation; batch ids are ASCII).
CREATE INDEX crawl_batches_search ON crawl_batches (tenant, batch_id COLLATE "C");
