-- Replays of webhook requests are recognised in memory now (each instance remembers the
-- requests it accepted for the timestamp window); the receipts table is no longer written.
-- A replay that slips past changes nothing: applying a delivery report is idempotent.
DROP TABLE IF EXISTS webhook_receipts;

-- Every instance caches verified API keys. The database itself announces a revoked or
-- deleted key, in the transaction that changes it, so every way of revoking one (the CLI,
-- SQL by hand, a tenant deleted) reaches the caches. Payload: hex SHA-256 of the token.
CREATE FUNCTION notify_api_key_revoked() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('api_keys_revoked', encode(OLD.token_sha256, 'hex'));
    RETURN NULL;
END
$$;

CREATE TRIGGER api_keys_revoked
    AFTER UPDATE OR DELETE ON api_keys
    FOR EACH ROW EXECUTE FUNCTION notify_api_key_revoked();
