-- The per-minute series gains what recipients did with their links: first visits, first
-- redemptions and first unsubscribes, each counted in the minute it happened (UTC).
ALTER TABLE campaign_minutes
    ADD COLUMN visits       BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN redemptions  BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN unsubscribes BIGINT NOT NULL DEFAULT 0;

-- Existing campaigns: their engagement so far, from the rows the checkpoints wrote.
INSERT INTO campaign_minutes (campaign_id, minute, visits, redemptions, unsubscribes)
SELECT campaign_id, minute, sum(v), sum(r), sum(u) FROM (
    SELECT campaign_id, date_trunc('minute', visited_at) AS minute, 1 AS v, 0 AS r, 0 AS u
    FROM campaign_recipients WHERE visited_at IS NOT NULL
    UNION ALL
    SELECT campaign_id, date_trunc('minute', redeemed_at), 0, 1, 0
    FROM campaign_recipients WHERE redeemed_at IS NOT NULL
    UNION ALL
    SELECT campaign_id, date_trunc('minute', unsubscribed_at), 0, 0, 1
    FROM campaign_recipients WHERE unsubscribed_at IS NOT NULL
) s
GROUP BY campaign_id, minute
ON CONFLICT (campaign_id, minute) DO UPDATE SET
    visits = EXCLUDED.visits,
    redemptions = EXCLUDED.redemptions,
    unsubscribes = EXCLUDED.unsubscribes;
