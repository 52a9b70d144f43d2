-- The checkpoint's message rows are appended here, in the transaction that stores the epoch,
-- the campaign deltas and the offsets, and folded into campaign_recipients afterwards by a
-- second connection (src/actors/fold.rs). Updating campaign_recipients in place cost about
-- 19 µs per row (a `sent` changes two indexed columns, so every index takes a new entry) on
-- the checkpoint's critical path; appending to this unindexed table costs about 1 µs.
--
-- A row here is the whole message state of one recipient's attempt as of `epoch`. The fold
-- applies, per recipient, the newest attempt's newest epoch, with the same guard the direct
-- write had (a row reset for a newer attempt is left alone), and deletes what it applied, in
-- one transaction. Nothing reads this table but the fold: readers of campaign_recipients
-- wait until the epoch they need is folded, and start-up folds whatever a crash left here.
CREATE TABLE message_log (
    epoch               BIGINT NOT NULL,
    recipient_id        BIGINT NOT NULL,
    attempt             INTEGER NOT NULL,
    status              TEXT NOT NULL,
    provider_message_id TEXT,
    bulk_id             UUID,
    delivery_status     TEXT,
    error               TEXT,
    error_retryable     BOOLEAN,
    sent_at             TIMESTAMPTZ,
    delivered_at        TIMESTAMPTZ,
    failed_at           TIMESTAMPTZ
) WITH (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 50000);

