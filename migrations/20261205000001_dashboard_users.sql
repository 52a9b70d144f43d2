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
