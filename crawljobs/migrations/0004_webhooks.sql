-- Webhooks: a callback URL on a single job or on a batch, an outbox of deliveries written in the same
-- transaction as the state change they report, and a signing secret per tenant.

-- A batch's jobs carry no callback of their own: deliveries look it up on the batch row.
ALTER TABLE crawl_jobs ADD COLUMN callback_url text;
ALTER TABLE crawl_batches ADD COLUMN callback_url text;

CREATE TABLE webhook_deliveries (
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant           text NOT NULL,
    event            text NOT NULL CHECK (event IN ('job.completed', 'job.failed', 'batch.completed')),
    job_id           uuid,
    batch_id         text,
    url              text NOT NULL,
    payload          jsonb NOT NULL,
    attempts         integer NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    last_status      integer,
    last_error       text,
    delivered_at     timestamptz,
    gave_up_at       timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now()
);
-- The sender: due deliveries, from the index alone; delivered and abandoned ones leave it.
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at)
    WHERE delivered_at IS NULL AND gave_up_at IS NULL;
-- The log, per tenant (newest first), by job and by batch.
CREATE INDEX webhook_deliveries_log ON webhook_deliveries (tenant, created_at DESC);
CREATE INDEX webhook_deliveries_job ON webhook_deliveries (job_id) WHERE job_id IS NOT NULL;
CREATE INDEX webhook_deliveries_batch ON webhook_deliveries (tenant, batch_id) WHERE batch_id IS NOT NULL;
-- One batch.completed per batch, however many writers see its last job end.
CREATE UNIQUE INDEX webhook_deliveries_batch_completed ON webhook_deliveries (tenant, batch_id)
    WHERE event = 'batch.completed';

CREATE TABLE tenant_secrets (
    tenant      text PRIMARY KEY,
    secret      text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
