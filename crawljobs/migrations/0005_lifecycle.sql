-- The job lifecycle held by the database itself.
--
-- 1. The retry budget as two counters of their own (crawljobs/lifecycle.py states the rule): `retries` counts
--    the transient failures that were retried (bounded by the job's max_retries), `lost_leases` the times the
--    sweeper took the job back from a worker that stopped renewing its lease (bounded by
--    CRAWLJOBS_MAX_LOST_LEASES). Escalations are bounded by the ladder and spend neither. `attempt` stays
--    what it was: the number of the current fetch, the fence of every write (DESIGN rule 3).
-- 2. DESIGN rule 6 as a trigger: a status moves only along
--        pending -> processing | cancelled
--        processing -> completed | error | cancelled | pending
--        error -> pending, only in a transaction that declared an explicit retry
--    (`SELECT set_config('crawljobs.explicit_retry', 'on', true)`, done by the retry_failed_jobs statement).
--    Any other change of status raises, whoever sends it.

ALTER TABLE crawl_jobs
    ADD COLUMN retries integer NOT NULL DEFAULT 0 CHECK (retries >= 0),
    ADD COLUMN lost_leases integer NOT NULL DEFAULT 0 CHECK (lost_leases >= 0);

CREATE FUNCTION crawl_jobs_check_transition() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF (OLD.status = 'pending' AND NEW.status IN ('processing', 'cancelled'))
       OR (OLD.status = 'processing' AND NEW.status IN ('completed', 'error', 'cancelled', 'pending'))
       OR (OLD.status = 'error' AND NEW.status = 'pending'
           AND current_setting('crawljobs.explicit_retry', true) = 'on') THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'crawl job % may not go from % to %', OLD.id, OLD.status, NEW.status
        USING ERRCODE = 'check_violation', HINT = 'see DESIGN rule 6 (docs/DESIGN.md)';
END;
$$;

CREATE TRIGGER crawl_jobs_transition
    BEFORE UPDATE OF status ON crawl_jobs
    FOR EACH ROW
    WHEN (OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION crawl_jobs_check_transition();
