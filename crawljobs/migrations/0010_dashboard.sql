-- The dashboard: the key that signs its session cookies and CSRF tokens when CRAWLJOBS_DASHBOARD_SECRET is
-- not set; one row, made on first use, shared by every API process.
CREATE TABLE dashboard_secret (
    id          boolean PRIMARY KEY DEFAULT true CHECK (id),
    secret      text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
