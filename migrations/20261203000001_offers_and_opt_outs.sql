-- Offers and opt-outs: what a campaign offers, what its recipients did with their links
-- (visits, redemptions, unsubscribes), recipients skipped at send time, quiet hours and caps.

-- The offer a marketing campaign's link opens (no title: the campaign has no offer link).
ALTER TABLE campaigns
    ADD COLUMN offer_title       TEXT CHECK (offer_title IS NULL OR length(offer_title) <= 200),
    ADD COLUMN offer_text        TEXT CHECK (offer_text IS NULL OR length(offer_text) <= 2000),
    ADD COLUMN offer_expires_at  TIMESTAMPTZ,
    ADD COLUMN offer_self_redeem BOOLEAN NOT NULL DEFAULT FALSE;

-- Engagement counters of the snapshot (redemptions and unsubscribes exist since the start):
-- visits count recipients, clicks count every counted opening of an offer link.
ALTER TABLE campaigns
    ADD COLUMN visits  BIGINT NOT NULL DEFAULT 0 CHECK (visits >= 0),
    ADD COLUMN clicks  BIGINT NOT NULL DEFAULT 0 CHECK (clicks >= 0),
    ADD COLUMN skipped BIGINT NOT NULL DEFAULT 0 CHECK (skipped >= 0);
ALTER TABLE campaigns DROP COLUMN total;
ALTER TABLE campaigns
    ADD COLUMN total BIGINT GENERATED ALWAYS AS
        (queued + processing + pending + delivered + send_failed + delivery_failed + cancelled
         + unknown + skipped) STORED;

-- A recipient whose contact opted out (or hit the tenant's cap) after enqueue is `skipped` when
-- its batch is claimed: never sent, its credits refunded, the reason in `error`.
ALTER TABLE campaign_recipients DROP CONSTRAINT campaign_recipients_status_check;
-- added NOT VALID, then validated: the check of existing rows does not block writes
ALTER TABLE campaign_recipients ADD CONSTRAINT campaign_recipients_status_check CHECK (status IN
    ('queued', 'processing', 'sent', 'delivered', 'failed', 'cancelled', 'unknown', 'skipped'))
    NOT VALID;
ALTER TABLE campaign_recipients VALIDATE CONSTRAINT campaign_recipients_status_check;

-- What a recipient did with its links; written only by the DlrActor of the partition its
-- engagement events are keyed to (r:<recipient id>), in checkpoints.
ALTER TABLE campaign_recipients
    ADD COLUMN visited_at       TIMESTAMPTZ,
    ADD COLUMN clicks           INTEGER NOT NULL DEFAULT 0 CHECK (clicks >= 0),
    ADD COLUMN redeemed_at      TIMESTAMPTZ,
    ADD COLUMN redeemed_by      TEXT CHECK (redeemed_by IN ('shop', 'self')),
    ADD COLUMN unsubscribed_at  TIMESTAMPTZ,
    ADD COLUMN unsubscribed_via TEXT CHECK (unsubscribed_via IN ('link', 'inbound'));

-- A redemption asked for through the API or the offer page: the once-only answer (409 for a
-- second one). Counting is the event's, through the ledger.
DROP TABLE link_events;
CREATE TABLE redemptions (
    recipient_id BIGINT PRIMARY KEY REFERENCES campaign_recipients (id) ON DELETE CASCADE,
    campaign_id  BIGINT NOT NULL REFERENCES campaigns (id) ON DELETE CASCADE,
    tenant_id    BIGINT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    by           TEXT NOT NULL CHECK (by IN ('shop', 'self')),
    redeemed_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Quiet hours (marketing only; start = end turns them off) and the per-contact cap of marketing
-- messages in any rolling 24 hours (NULL: no cap).
ALTER TABLE tenants
    ADD COLUMN time_zone         TEXT NOT NULL DEFAULT 'UTC',
    ADD COLUMN quiet_start       TIME NOT NULL DEFAULT '22:00',
    ADD COLUMN quiet_end         TIME NOT NULL DEFAULT '09:00',
    ADD COLUMN marketing_cap_24h INTEGER CHECK (marketing_cap_24h IS NULL OR marketing_cap_24h > 0);

-- Server secrets generated once per database (e.g. the key of the public forms' CSRF tokens),
-- so every instance and every restart agrees on them.
CREATE TABLE app_secrets (
    name   TEXT PRIMARY KEY,
    secret BYTEA NOT NULL CHECK (length(secret) >= 32)
);
