-- A campaign's messages are marketing (offer and unsubscribe links, quiet hours, caps) or
-- service (transactional: none of those).
ALTER TABLE campaigns ADD COLUMN message_type TEXT NOT NULL DEFAULT 'marketing'
    CHECK (message_type IN ('marketing', 'service'));
