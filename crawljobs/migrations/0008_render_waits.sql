-- A rendered job may say what it waits for after the page loaded (crawlproject/settling.py): a CSS selector
-- (`wait_for`) and a delay (`wait_ms`), both null when it asks for nothing but the default settling.

ALTER TABLE crawl_jobs ADD COLUMN wait_for text;
ALTER TABLE crawl_jobs ADD COLUMN wait_ms integer CHECK (wait_ms IS NULL OR wait_ms >= 0);
