-- Signed-in dashboard browsers. The cookie carries a random token; only its SHA-256 is kept,
-- with the form token (CSRF) that every state-changing request of the session must echo.
CREATE TABLE dashboard_sessions (
    token_sha256 BYTEA PRIMARY KEY,
    user_id      BIGINT NOT NULL REFERENCES dashboard_users (id) ON DELETE CASCADE,
    tenant_id    BIGINT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    csrf         TEXT NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at   TIMESTAMPTZ NOT NULL
);

CREATE INDEX dashboard_sessions_expiry ON dashboard_sessions (expires_at);

-- Wrong passwords are counted per address typed, whether or not an account has it, so that
-- neither the answers nor the lock tell which addresses have accounts. Only the SHA-256 of
-- the (lower-cased) address is kept; rows idle for a day are dropped.
CREATE TABLE sign_in_failures (
    email_sha256 BYTEA PRIMARY KEY,
    failures     INTEGER NOT NULL,
    locked_until TIMESTAMPTZ,
    updated_at   TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX sign_in_failures_idle ON sign_in_failures (updated_at);

ALTER TABLE dashboard_users DROP COLUMN failed_sign_ins, DROP COLUMN locked_until;
