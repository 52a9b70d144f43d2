-- Status changes stay HOT (heap-only, no index writes) when no indexed column changes,
-- including the columns in partial-index predicates. Two partial indexes on `status` made
-- every status change write every index of the hot table. The queries they served (claims
-- left by a crashed run, retry-failed) run once per campaign and read the campaign's rows
-- through the (campaign_id, phone_e164) index instead. A claim (queued → processing) and a
-- delivery report (sent → delivered | failed) now change no indexed column.
DROP INDEX IF EXISTS recipients_unsettled;
DROP INDEX IF EXISTS recipients_failed;
