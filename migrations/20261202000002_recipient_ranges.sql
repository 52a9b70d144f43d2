-- The range of recipient ids each campaign's enqueues produced, so that a campaign's rows can
-- be read by primary-key range (the reconciler's cursors) without an index on the hot table's
-- status and without scanning other campaigns' rows.
ALTER TABLE campaigns ADD COLUMN recipients_from BIGINT, ADD COLUMN recipients_to BIGINT;
UPDATE campaigns c SET recipients_from = r.lo, recipients_to = r.hi
FROM (SELECT campaign_id, min(id) AS lo, max(id) AS hi FROM campaign_recipients GROUP BY 1) r
WHERE c.id = r.campaign_id;
