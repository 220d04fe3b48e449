-- Jobs may ask the worker to obey the target site's robots.txt.

ALTER TABLE crawl_jobs ADD COLUMN obey_robots boolean NOT NULL DEFAULT false;
ALTER TABLE crawl_batches ADD COLUMN obey_robots boolean NOT NULL DEFAULT false;
