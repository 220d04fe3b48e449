-- Retention: the sweeper drops the HTML of jobs finished longer ago than CRAWLJOBS_RESULT_TTL and keeps their
-- metadata; html_purged_at says when.

ALTER TABLE crawl_jobs ADD COLUMN html_purged_at timestamptz;

-- The purge finds its rows from this index alone: only jobs that still hold HTML are in it, so it shrinks as
-- the sweeper works and costs nothing once the backlog is gone.
CREATE INDEX crawl_jobs_html_retention ON crawl_jobs (completed_at)
    WHERE html IS NOT NULL AND completed_at IS NOT NULL;

-- Export walks a batch in submission order by keyset (batch_index > last seen), a page at a time.
CREATE INDEX crawl_jobs_batch_order ON crawl_jobs (tenant, batch_id, batch_index)
    WHERE batch_id IS NOT NULL;
