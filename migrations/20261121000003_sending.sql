-- Sending: audiences, rendered texts, claims with time, idempotent enqueues.

-- Who a campaign goes to, as created: list ids and inline phones (E.164).
ALTER TABLE campaigns ADD COLUMN audience JSONB NOT NULL DEFAULT '{"listIds":[],"phones":[]}'::jsonb
    CHECK (jsonb_typeof(audience) = 'object');
-- Segments per recipient are fixed at enqueue; the campaign keeps the reservation's total.
ALTER TABLE campaigns ADD COLUMN credits_reserved BIGINT NOT NULL DEFAULT 0 CHECK (credits_reserved >= 0);
CREATE INDEX campaigns_name ON campaigns (tenant_id, lower(name));

-- The text this recipient receives, rendered at enqueue; NULL means the campaign body as is
-- (no placeholders), which keeps the common case free of per-row text.
ALTER TABLE campaign_recipients ADD COLUMN body TEXT;

-- A repeated Idempotency-Key on enqueue returns the first answer and does nothing.
CREATE TABLE idempotency_keys (
    tenant_id   BIGINT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    key         TEXT NOT NULL CHECK (length(key) BETWEEN 1 AND 200),
    campaign_id BIGINT REFERENCES campaigns (id) ON DELETE CASCADE,
    status      SMALLINT NOT NULL,
    response    JSONB NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, key)
);
