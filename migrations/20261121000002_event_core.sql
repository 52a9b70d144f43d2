-- The event core: checkpoint epochs, and whether a send failure may be retried.

-- One row: the last checkpoint committed. Written in the same transaction as the message rows
-- and offsets it covers, so a reader of rows can tell which transitions they already contain.
CREATE TABLE checkpoint_state (
    id          BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (id),
    epoch       BIGINT NOT NULL DEFAULT 0 CHECK (epoch >= 0),
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);
INSERT INTO checkpoint_state (id) VALUES (TRUE);

ALTER TABLE campaign_recipients ADD COLUMN error_retryable BOOLEAN;
