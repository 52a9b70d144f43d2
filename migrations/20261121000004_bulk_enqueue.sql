-- Enqueue is a bulk append of up to millions of rows in one transaction (DESIGN.md section 9:
-- append where appending serves). Per-row work that protects nothing is removed:
--
-- * the foreign keys of campaign_recipients: rows are only ever inserted by the enqueue
--   transaction, which holds the campaign's row lock and copies its tenant; a campaign with
--   recipients is never deleted (only drafts are, and drafts have none), and tenants and
--   contacts are not deleted by campaignd. Each key cost one trigger call per inserted row.
-- * the phone pattern CHECK: every recipient phone comes from `contacts` (which keeps its
--   CHECK) or from an inline phone parsed to E.164 by the API.
-- * the partial index of queued rows: claims walk the (campaign_id, phone_e164) unique index
--   with a cursor instead, so inserting a row no longer updates a third index.
ALTER TABLE campaign_recipients
    DROP CONSTRAINT IF EXISTS campaign_recipients_campaign_id_fkey,
    DROP CONSTRAINT IF EXISTS campaign_recipients_tenant_id_fkey,
    DROP CONSTRAINT IF EXISTS campaign_recipients_contact_id_fkey,
    DROP CONSTRAINT IF EXISTS campaign_recipients_phone_e164_check;
DROP INDEX IF EXISTS recipients_queued;

-- Phones compare byte-wise ("C"): E.164 needs no linguistic order, the claim cursor is
-- compared the same way in Rust and in the index, and sorting for deduplication is cheaper.
ALTER TABLE campaign_recipients ALTER COLUMN phone_e164 TYPE text COLLATE "C";
ALTER TABLE contacts ALTER COLUMN phone_e164 TYPE text COLLATE "C";
