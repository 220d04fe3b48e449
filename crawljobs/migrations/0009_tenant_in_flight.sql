-- CRAWLJOBS_TENANT_MAX_IN_FLIGHT: a claim counts the tenant's jobs in 'processing' (`claim_jobs_within`). The
-- processing jobs are few (workers x concurrency) whatever the table's size: a partial index on them keeps that
-- count cheap, where the (tenant, batch_id, status) index would scan every job the tenant ever had.

CREATE INDEX crawl_jobs_processing_tenant ON crawl_jobs (tenant) WHERE status = 'processing';
