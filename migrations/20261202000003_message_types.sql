-- A campaign's messages are marketing (offer and unsubscribe links, quiet hours, caps) or
-- service (transactional: none of those).
ALTER TABLE campaigns ADD COLUMN message_type TEXT NOT NULL DEFAULT 'marketing'
    CHECK (message_type IN ('marketing', 'service'));

-- A marketing recipient's link code is its id followed by these 96 secret bits (from a CSPRNG
-- at enqueue): unique by construction, found by primary key, so no index is needed.
ALTER TABLE campaign_recipients ADD COLUMN link_secret BYTEA
    CHECK (link_secret IS NULL OR length(link_secret) = 12);
-- The earlier, never written tracking_token column (and its unique index) is replaced by it.
ALTER TABLE campaign_recipients DROP COLUMN tracking_token;
