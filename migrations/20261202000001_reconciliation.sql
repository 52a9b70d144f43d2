-- Reconciliation: messages whose report never comes end `unknown` (final, counted apart), and
-- bulk refreshes run as jobs, one at a time per campaign.

ALTER TABLE campaign_recipients DROP CONSTRAINT campaign_recipients_status_check;
ALTER TABLE campaign_recipients ADD CONSTRAINT campaign_recipients_status_check CHECK (status IN
    ('queued', 'processing', 'sent', 'delivered', 'failed', 'cancelled', 'unknown'));

ALTER TABLE campaigns DROP COLUMN total, DROP COLUMN sent;
ALTER TABLE campaigns ADD COLUMN unknown BIGINT NOT NULL DEFAULT 0 CHECK (unknown >= 0);
ALTER TABLE campaigns
    ADD COLUMN total BIGINT GENERATED ALWAYS AS
        (queued + processing + pending + delivered + send_failed + delivery_failed + cancelled
         + unknown) STORED,
    ADD COLUMN sent BIGINT GENERATED ALWAYS AS
        (pending + delivered + delivery_failed + unknown) STORED;

-- When the reconciler last asked Mitto about a campaign's messages (shown in its stats).
CREATE TABLE campaign_refreshes (
    campaign_id     BIGINT PRIMARY KEY REFERENCES campaigns (id) ON DELETE CASCADE,
    last_refresh_at TIMESTAMPTZ NOT NULL
);

-- A bulk refresh (refresh-status-bulk): its progress and totals, readable while it runs.
CREATE TABLE refresh_jobs (
    id          UUID PRIMARY KEY,
    tenant_id   BIGINT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    campaign_id BIGINT NOT NULL REFERENCES campaigns (id) ON DELETE CASCADE,
    bulk_id     UUID,
    state       TEXT NOT NULL DEFAULT 'running'
                    CHECK (state IN ('running', 'completed', 'failed', 'interrupted')),
    total       BIGINT NOT NULL CHECK (total >= 0),
    processed   BIGINT NOT NULL DEFAULT 0,
    updated     BIGINT NOT NULL DEFAULT 0,
    failed      BIGINT NOT NULL DEFAULT 0,
    -- the refreshes that failed, first ones only: [{providerMessageId, success, updated, error}]
    failures    JSONB NOT NULL DEFAULT '[]'::jsonb,
    error       TEXT,
    started_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    finished_at TIMESTAMPTZ
);
-- one running refresh per campaign
CREATE UNIQUE INDEX refresh_jobs_running ON refresh_jobs (campaign_id) WHERE state = 'running';
