-- campaignd's data model (DESIGN.md section 2). Statuses are TEXT with CHECK constraints so
-- that an impossible status cannot be stored, and so that adding a value is a one-line change.

CREATE TABLE tenants (
    id                  BIGSERIAL PRIMARY KEY,
    name                TEXT NOT NULL CHECK (length(btrim(name)) BETWEEN 1 AND 200),
    subscription_active BOOLEAN NOT NULL DEFAULT TRUE,
    subscription_until  TIMESTAMPTZ,
    credit_balance      BIGINT NOT NULL DEFAULT 0 CHECK (credit_balance >= 0),
    created_at          TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Only the SHA-256 of a token is stored; the token itself is shown once, at creation.
CREATE TABLE api_keys (
    id           BIGSERIAL PRIMARY KEY,
    tenant_id    BIGINT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    token_sha256 BYTEA NOT NULL UNIQUE CHECK (length(token_sha256) = 32),
    label        TEXT NOT NULL DEFAULT '',
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    revoked_at   TIMESTAMPTZ
);
CREATE INDEX api_keys_tenant ON api_keys (tenant_id);

CREATE TABLE contacts (
    id              BIGSERIAL PRIMARY KEY,
    tenant_id       BIGINT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    phone_e164      TEXT NOT NULL CHECK (phone_e164 ~ '^\+[1-9][0-9]{7,14}$'),
    first_name      TEXT,
    last_name       TEXT,
    attributes      JSONB NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(attributes) = 'object'),
    unsubscribed_at TIMESTAMPTZ,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, phone_e164)
);

CREATE TABLE lists (
    id         BIGSERIAL PRIMARY KEY,
    tenant_id  BIGINT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name       TEXT NOT NULL CHECK (length(btrim(name)) BETWEEN 1 AND 200),
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, name)
);

CREATE TABLE list_members (
    list_id    BIGINT NOT NULL REFERENCES lists (id) ON DELETE CASCADE,
    contact_id BIGINT NOT NULL REFERENCES contacts (id) ON DELETE CASCADE,
    added_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (list_id, contact_id)
);
CREATE INDEX list_members_contact ON list_members (contact_id);

-- Counter columns are the CampaignActor's snapshot, written by the checkpointer; the actor's
-- memory is the live truth while it is active.
CREATE TABLE campaigns (
    id                 BIGSERIAL PRIMARY KEY,
    tenant_id          BIGINT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name               TEXT NOT NULL CHECK (length(btrim(name)) BETWEEN 1 AND 200),
    body               TEXT NOT NULL,
    sender             TEXT NOT NULL CHECK (sender ~ '^([0-9]{1,16}|[A-Za-z0-9 ._-]{1,11})$'),
    traffic_account_id UUID,
    status             TEXT NOT NULL DEFAULT 'draft' CHECK (status IN
                           ('draft', 'scheduled', 'sending', 'paused', 'completed', 'failed', 'cancelled')),
    scheduled_at       TIMESTAMPTZ,
    started_at         TIMESTAMPTZ,
    finished_at        TIMESTAMPTZ,
    total              BIGINT NOT NULL DEFAULT 0 CHECK (total >= 0),
    queued             BIGINT NOT NULL DEFAULT 0 CHECK (queued >= 0),
    processing         BIGINT NOT NULL DEFAULT 0 CHECK (processing >= 0),
    sent               BIGINT NOT NULL DEFAULT 0 CHECK (sent >= 0),
    delivered          BIGINT NOT NULL DEFAULT 0 CHECK (delivered >= 0),
    send_failed        BIGINT NOT NULL DEFAULT 0 CHECK (send_failed >= 0),
    delivery_failed    BIGINT NOT NULL DEFAULT 0 CHECK (delivery_failed >= 0),
    cancelled          BIGINT NOT NULL DEFAULT 0 CHECK (cancelled >= 0),
    redemptions        BIGINT NOT NULL DEFAULT 0 CHECK (redemptions >= 0),
    unsubscribes       BIGINT NOT NULL DEFAULT 0 CHECK (unsubscribes >= 0),
    first_sent_at      TIMESTAMPTZ,
    last_event_at      TIMESTAMPTZ,
    created_at         TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at         TIMESTAMPTZ NOT NULL DEFAULT now(),
    CHECK (status <> 'scheduled' OR scheduled_at IS NOT NULL)
);
CREATE INDEX campaigns_tenant ON campaigns (tenant_id, created_at DESC);
CREATE INDEX campaigns_due ON campaigns (scheduled_at) WHERE status = 'scheduled';
CREATE INDEX campaigns_active ON campaigns (id) WHERE status IN ('sending', 'paused');

-- The hot table. Status changes happen millions of times, so indexes on status are partial
-- and cover only what a query needs (DESIGN.md section 9): stats come from actor memory, not
-- from COUNT over this table. fillfactor leaves room for HOT updates.
CREATE TABLE campaign_recipients (
    id                  BIGSERIAL PRIMARY KEY,
    campaign_id         BIGINT NOT NULL REFERENCES campaigns (id) ON DELETE CASCADE,
    tenant_id           BIGINT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    phone_e164          TEXT NOT NULL CHECK (phone_e164 ~ '^\+[1-9][0-9]{7,14}$'),
    contact_id          BIGINT REFERENCES contacts (id) ON DELETE SET NULL,
    status              TEXT NOT NULL DEFAULT 'queued' CHECK (status IN
                            ('queued', 'processing', 'sent', 'delivered', 'failed', 'cancelled')),
    provider_message_id TEXT,
    bulk_id             UUID,
    delivery_status     TEXT,
    error               TEXT,
    retry_count         INTEGER NOT NULL DEFAULT 0 CHECK (retry_count >= 0),
    claim_token         UUID,
    sent_at             TIMESTAMPTZ,
    delivered_at        TIMESTAMPTZ,
    failed_at           TIMESTAMPTZ,
    billing_status      TEXT NOT NULL DEFAULT 'reserved' CHECK (billing_status IN
                            ('reserved', 'charged', 'refunded')),
    segments            SMALLINT NOT NULL DEFAULT 1 CHECK (segments >= 1),
    tracking_token      TEXT,
    UNIQUE (campaign_id, phone_e164),
    -- a claim token exists exactly while a batch is out with a sender
    CHECK ((status = 'processing') = (claim_token IS NOT NULL)),
    CHECK (status NOT IN ('sent', 'delivered') OR provider_message_id IS NOT NULL)
) WITH (fillfactor = 80);
CREATE INDEX recipients_provider_message ON campaign_recipients (provider_message_id)
    WHERE provider_message_id IS NOT NULL;
CREATE INDEX recipients_bulk ON campaign_recipients (bulk_id) WHERE bulk_id IS NOT NULL;
-- partial, so the many rows without a token cost no index entry on every update
CREATE UNIQUE INDEX recipients_tracking_token ON campaign_recipients (tracking_token)
    WHERE tracking_token IS NOT NULL;
-- claiming the next batch of a campaign
CREATE INDEX recipients_queued ON campaign_recipients (campaign_id, id) WHERE status = 'queued';
-- reconciliation: claimed or sent long ago without a final report
CREATE INDEX recipients_unsettled ON campaign_recipients (status, sent_at)
    WHERE status IN ('processing', 'sent');
-- recipient listing filtered by status, and retry-failed
CREATE INDEX recipients_failed ON campaign_recipients (campaign_id, id) WHERE status = 'failed';

CREATE TABLE credit_ledger (
    id          BIGSERIAL PRIMARY KEY,
    tenant_id   BIGINT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    campaign_id BIGINT REFERENCES campaigns (id) ON DELETE SET NULL,
    delta       BIGINT NOT NULL CHECK (delta <> 0),
    reason      TEXT NOT NULL CHECK (reason IN ('reserve', 'charge', 'refund', 'topup')),
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX credit_ledger_tenant ON credit_ledger (tenant_id, created_at);
CREATE INDEX credit_ledger_campaign ON credit_ledger (campaign_id) WHERE campaign_id IS NOT NULL;

CREATE TABLE link_events (
    id           BIGSERIAL PRIMARY KEY,
    campaign_id  BIGINT NOT NULL REFERENCES campaigns (id) ON DELETE CASCADE,
    recipient_id BIGINT REFERENCES campaign_recipients (id) ON DELETE SET NULL,
    kind         TEXT NOT NULL CHECK (kind IN ('redemption', 'unsubscribe')),
    at           TIMESTAMPTZ NOT NULL DEFAULT now(),
    user_agent   TEXT,
    ip_hash      BYTEA
);
CREATE INDEX link_events_campaign ON link_events (campaign_id, kind);

-- Replay protection for the DLR webhook; rows older than the tolerance window are pruned.
CREATE TABLE webhook_receipts (
    dedup_key   TEXT PRIMARY KEY,
    received_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX webhook_receipts_age ON webhook_receipts (received_at);

-- The authoritative consumer offsets, written in the same transaction as the state they
-- cover. Keyed by the broker cluster's id so a fresh cluster never inherits old offsets.
CREATE TABLE kafka_offsets (
    cluster_id     TEXT NOT NULL,
    consumer_group TEXT NOT NULL,
    topic          TEXT NOT NULL,
    partition      INTEGER NOT NULL CHECK (partition >= 0),
    next_offset    BIGINT NOT NULL CHECK (next_offset >= 0),
    updated_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (cluster_id, consumer_group, topic, partition)
);

-- Poison input is kept here, never dropped silently.
CREATE TABLE dead_letters (
    id        BIGSERIAL PRIMARY KEY,
    source    TEXT NOT NULL,
    topic     TEXT,
    partition INTEGER,
    "offset"  BIGINT,
    key       BYTEA,
    payload   BYTEA NOT NULL,
    error     TEXT NOT NULL,
    at        TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX dead_letters_at ON dead_letters (at);
