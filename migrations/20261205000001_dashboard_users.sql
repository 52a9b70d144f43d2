-- People who sign in to a tenant's dashboard (the API keeps bearer tokens). The password is
-- kept only as an argon2id PHC string; failed sign-ins are counted for the lockout.
CREATE TABLE dashboard_users (
    id              BIGSERIAL PRIMARY KEY,
    tenant_id       BIGINT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    email           TEXT NOT NULL,
    password_hash   TEXT NOT NULL,
    failed_sign_ins INTEGER NOT NULL DEFAULT 0,
    locked_until    TIMESTAMPTZ,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT dashboard_users_email_lowercase CHECK (email = lower(email))
);

-- one account per address across tenants: the sign-in form asks for an address only
CREATE UNIQUE INDEX dashboard_users_email ON dashboard_users (email);

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
