-- Campaign actors are activated from the campaign's snapshot, never by counting its
-- recipients. The snapshot is kept exact by addition: each checkpoint adds what the
-- transitions it commits changed (in the same transaction as their rows and offsets), and the
-- campaign's own writes (enqueue, claims, releases, cancel, retry-failed) add theirs in the
-- same statement or transaction as the recipient rows they change.
ALTER TABLE campaigns ADD COLUMN pending BIGINT NOT NULL DEFAULT 0 CHECK (pending >= 0);
ALTER TABLE campaigns DROP COLUMN total, DROP COLUMN sent;

-- The per-minute series of sent, delivered and failed messages (UTC minutes).
CREATE TABLE campaign_minutes (
    campaign_id BIGINT NOT NULL REFERENCES campaigns (id) ON DELETE CASCADE,
    minute      TIMESTAMPTZ NOT NULL,
    sent        BIGINT NOT NULL DEFAULT 0,
    delivered   BIGINT NOT NULL DEFAULT 0,
    failed      BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (campaign_id, minute)
);

-- Existing campaigns: one recount, consistent with the last committed checkpoint (rows are
-- written only by checkpoints and by the campaign's own writes).
UPDATE campaigns c SET
    queued          = r.queued,
    processing      = r.processing,
    pending         = r.pending,
    delivered       = r.delivered,
    send_failed     = r.send_failed,
    delivery_failed = r.delivery_failed,
    cancelled       = r.cancelled,
    first_sent_at   = r.first_sent_at,
    last_event_at   = r.last_event_at
FROM (
    SELECT campaign_id,
           count(*) FILTER (WHERE status = 'queued') AS queued,
           count(*) FILTER (WHERE status = 'processing') AS processing,
           count(*) FILTER (WHERE status = 'sent') AS pending,
           count(*) FILTER (WHERE status = 'delivered') AS delivered,
           count(*) FILTER (WHERE status = 'failed' AND sent_at IS NULL) AS send_failed,
           count(*) FILTER (WHERE status = 'failed' AND sent_at IS NOT NULL) AS delivery_failed,
           count(*) FILTER (WHERE status = 'cancelled') AS cancelled,
           min(sent_at) AS first_sent_at,
           max(GREATEST(sent_at, delivered_at, failed_at)) AS last_event_at
    FROM campaign_recipients GROUP BY campaign_id
) r
WHERE c.id = r.campaign_id;

INSERT INTO campaign_minutes (campaign_id, minute, sent, delivered, failed)
SELECT campaign_id, minute, sum(sent), sum(delivered), sum(failed) FROM (
    SELECT campaign_id, date_trunc('minute', sent_at) AS minute, 1 AS sent, 0 AS delivered, 0 AS failed
    FROM campaign_recipients WHERE sent_at IS NOT NULL
    UNION ALL
    SELECT campaign_id, date_trunc('minute', delivered_at), 0, 1, 0
    FROM campaign_recipients WHERE status = 'delivered'
    UNION ALL
    SELECT campaign_id, date_trunc('minute', failed_at), 0, 0, 1
    FROM campaign_recipients WHERE status = 'failed'
) s
GROUP BY campaign_id, minute;

-- Derived figures, for readers of the table (never written directly).
ALTER TABLE campaigns
    ADD COLUMN total BIGINT GENERATED ALWAYS AS
        (queued + processing + pending + delivered + send_failed + delivery_failed + cancelled) STORED,
    ADD COLUMN sent BIGINT GENERATED ALWAYS AS (pending + delivered + delivery_failed) STORED;
