-- Workers' liveness, held by something that dies with them (crawljobs/lifecycle.py, `Presence`).
--
-- Each worker process takes a session-level advisory lock on a connection of its own, (namespace, lock_key),
-- and then registers here. PostgreSQL releases the lock the moment that session ends: the process was killed,
-- crashed or lost its connection. The sweeper's liveness check (`reclaim_dead_workers`) takes back, within
-- about a second, the jobs of every registered worker whose lock is no longer held; leases stay the backstop
-- for a worker that is alive but stuck or cut off (its lock is still held, so only its lease can end it).
--
-- `locked_at` says when the lock was taken: a lock taken before the server last started was released by the
-- restart, not by the worker's death, so such a worker is left to its lease until it registers again.

CREATE SEQUENCE crawl_workers_lock_key_seq AS integer MINVALUE 1 CYCLE;

CREATE TABLE crawl_workers (
    worker_id text PRIMARY KEY,
    lock_key integer NOT NULL,
    host text NOT NULL,
    pid integer NOT NULL,
    started_at timestamptz NOT NULL DEFAULT now(),
    locked_at timestamptz NOT NULL DEFAULT now(),
    seen_at timestamptz NOT NULL DEFAULT now()
);
