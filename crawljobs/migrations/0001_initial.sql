-- The first schema of crawljobs: jobs, their attempts, batches and API keys.

CREATE TABLE api_keys (
    id          uuid PRIMARY KEY,
    tenant      text NOT NULL CHECK (length(tenant) BETWEEN 1 AND 128),
    name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 128),
    key_hash    bytea NOT NULL UNIQUE,
    key_prefix  text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);

CREATE TABLE crawl_batches (
    tenant           text NOT NULL,
    batch_id         text NOT NULL CHECK (batch_id ~ '^[A-Za-z0-9._:-]{1,128}$'),
    created_at       timestamptz NOT NULL DEFAULT now(),
    total            integer NOT NULL CHECK (total >= 0),
    render           boolean NOT NULL DEFAULT false,
    premium          boolean NOT NULL DEFAULT false,
    ultra_premium    boolean NOT NULL DEFAULT false,
    max_retries      integer NOT NULL CHECK (max_retries >= 0),
    idempotency_key  text,
    request_hash     text,
    response         jsonb,
    PRIMARY KEY (tenant, batch_id)
);
CREATE UNIQUE INDEX crawl_batches_idempotency ON crawl_batches (tenant, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX crawl_batches_listing ON crawl_batches (tenant, created_at DESC, batch_id DESC);

CREATE TABLE crawl_jobs (
    id                  uuid PRIMARY KEY,
    tenant              text NOT NULL,
    batch_id            text,
    batch_index         integer,
    url                 text NOT NULL,
    status              text NOT NULL DEFAULT 'pending'
                        CHECK (status IN ('pending', 'processing', 'completed', 'error', 'cancelled')),
    render              boolean NOT NULL DEFAULT false,
    premium             boolean NOT NULL DEFAULT false,
    ultra_premium       boolean NOT NULL DEFAULT false,
    priority            smallint NOT NULL DEFAULT 0,
    attempt             integer NOT NULL DEFAULT 0 CHECK (attempt >= 0),
    max_retries         integer NOT NULL CHECK (max_retries >= 0),
    max_attempts        integer NOT NULL CHECK (max_attempts >= 1),
    lease_owner         text,
    lease_expires_at    timestamptz,
    dispatched_at       timestamptz,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    started_at          timestamptz,
    completed_at        timestamptz,
    html                text,
    html_length         integer,
    processing_time_ms  integer,
    success_method      text,
    http_status         integer,
    final_url           text,
    content_type        text,
    error_message       text,
    cost                double precision NOT NULL DEFAULT 0,
    idempotency_key     text
    -- (tenant, batch_id) names a crawl_batches row, written in the same transaction by the manager. No
    -- FOREIGN KEY: its per-row trigger doubled the time of a batch's COPY.
);
-- Batch counts and a batch's page of jobs: counted from the index alone.
CREATE INDEX crawl_jobs_batch_status ON crawl_jobs (tenant, batch_id, status) INCLUDE (updated_at)
    WHERE batch_id IS NOT NULL;
-- The sweeper: pending and never dispatched, pending and dispatched long ago, expired leases.
CREATE INDEX crawl_jobs_undispatched ON crawl_jobs (created_at)
    WHERE status = 'pending' AND dispatched_at IS NULL;
CREATE INDEX crawl_jobs_dispatched_pending ON crawl_jobs (dispatched_at)
    WHERE status = 'pending' AND dispatched_at IS NOT NULL;
CREATE INDEX crawl_jobs_leases ON crawl_jobs (lease_expires_at) WHERE status = 'processing';
CREATE INDEX crawl_jobs_lease_owner ON crawl_jobs (lease_owner) WHERE status = 'processing';
CREATE UNIQUE INDEX crawl_jobs_idempotency ON crawl_jobs (tenant, idempotency_key)
    WHERE idempotency_key IS NOT NULL;

CREATE TABLE crawl_attempts (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id       uuid NOT NULL REFERENCES crawl_jobs (id) ON DELETE CASCADE,
    attempt      integer NOT NULL,
    method       text NOT NULL,
    worker       text,
    started_at   timestamptz NOT NULL DEFAULT now(),
    duration_ms  integer,
    http_status  integer,
    outcome      text NOT NULL,
    error        text
);
CREATE INDEX crawl_attempts_job ON crawl_attempts (job_id, id);
