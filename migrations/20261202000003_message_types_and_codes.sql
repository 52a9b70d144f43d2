-- A campaign's messages are marketing (each recipient gets a link code: the offer and
-- unsubscribe links) or service (no links). Codes live in campaign_recipients.tracking_token,
-- unique across the table (recipients_tracking_token); they never change after enqueue, so
-- status updates stay HOT.
ALTER TABLE campaigns ADD COLUMN message_type TEXT NOT NULL DEFAULT 'marketing'
    CHECK (message_type IN ('marketing', 'service'));
