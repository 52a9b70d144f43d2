//! Contacts and lists of a tenant.

use chrono::{DateTime, Utc};
use sqlx::{Acquire, PgPool, Postgres, Transaction};

use super::StoreError;
use crate::domain::{PhoneE164, TenantId};

/// A contact as given (phone already normalised). Fields left `None` keep their stored value.
#[derive(Debug, Clone, Default)]
pub struct NewContact {
    pub phone: Option<PhoneE164>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub attributes: serde_json::Map<String, serde_json::Value>,
    /// `Some(true)` unsubscribes (kept, never messaged), `Some(false)` resubscribes.
    pub unsubscribed: Option<bool>,
}

#[derive(Debug, Clone, serde::Serialize, sqlx::FromRow, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Contact {
    pub id: i64,
    pub phone: String,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    #[schema(value_type = Object)]
    pub attributes: serde_json::Value,
    pub unsubscribed_at: Option<DateTime<Utc>>,
}

/// Contacts as the column arrays a bulk statement binds (`UNNEST`).
struct Columns<'a> {
    phones: Vec<&'a str>,
    first: Vec<Option<&'a str>>,
    last: Vec<Option<&'a str>>,
    attrs: Vec<serde_json::Value>,
}

impl<'a> Columns<'a> {
    fn of(contacts: &'a [NewContact]) -> Self {
        Self {
            phones: contacts
                .iter()
                .map(|c| c.phone.as_ref().map_or("", PhoneE164::as_str))
                .collect(),
            first: contacts.iter().map(|c| c.first_name.as_deref()).collect(),
            last: contacts.iter().map(|c| c.last_name.as_deref()).collect(),
            attrs: contacts
                .iter()
                .map(|c| serde_json::Value::Object(c.attributes.clone()))
                .collect(),
        }
    }
}

/// Inserts or updates contacts by phone, in one statement; returns them in input order.
pub async fn upsert(
    pool: &PgPool,
    tenant: TenantId,
    contacts: &[NewContact],
) -> Result<Vec<Contact>, StoreError> {
    let Columns {
        phones,
        first,
        last,
        attrs,
    } = Columns::of(contacts);
    let unsub: Vec<Option<bool>> = contacts.iter().map(|c| c.unsubscribed).collect();
    // a phone given twice in one request: the last occurrence wins
    let rows = sqlx::query_as(
        "WITH input AS (
             SELECT DISTINCT ON (phone) phone, first_name, last_name, attributes, unsub, ord
             FROM UNNEST($2::text[], $3::text[], $4::text[], $5::jsonb[], $6::bool[])
                  WITH ORDINALITY AS u(phone, first_name, last_name, attributes, unsub, ord)
             ORDER BY phone, ord DESC
         ), upserted AS (
             INSERT INTO contacts (tenant_id, phone_e164, first_name, last_name, attributes, unsubscribed_at)
             SELECT $1, phone, first_name, last_name, attributes,
                    CASE WHEN unsub THEN now() END
             FROM input ORDER BY phone
             ON CONFLICT (tenant_id, phone_e164) DO UPDATE SET
                 first_name = COALESCE(EXCLUDED.first_name, contacts.first_name),
                 last_name = COALESCE(EXCLUDED.last_name, contacts.last_name),
                 attributes = contacts.attributes || EXCLUDED.attributes,
                 unsubscribed_at = CASE
                     WHEN (SELECT unsub FROM input i WHERE i.phone = EXCLUDED.phone_e164) IS NULL
                         THEN contacts.unsubscribed_at
                     WHEN (SELECT unsub FROM input i WHERE i.phone = EXCLUDED.phone_e164)
                         THEN COALESCE(contacts.unsubscribed_at, now())
                 END,
                 updated_at = now()
             RETURNING id, phone_e164 AS phone, first_name, last_name, attributes, unsubscribed_at
         )
         SELECT u.* FROM upserted u
         JOIN UNNEST($2::text[]) WITH ORDINALITY AS o(phone, ord) ON o.phone = u.phone
         ORDER BY o.ord",
    )
    .bind(tenant.get())
    .bind(&phones)
    .bind(&first)
    .bind(&last)
    .bind(&attrs)
    .bind(&unsub)
    .fetch_all(pool)
    .await?;
    Ok(rows)
}

/// Saves one batch of an import, in the import's transaction: contacts inserted or updated by
/// phone (names kept where the file has none, attributes merged, opt-outs untouched) and, with
/// `list`, made its members. Answers the contacts saved (a phone given twice in the batch once).
///
/// New and known phones are written apart ([`SAVE_APART`]): an `ON CONFLICT` insert costs a
/// speculative index insertion per row, which was half of an import into a fresh list. Should
/// another writer add one of the batch's phones (or memberships) between the look-up and the
/// insert, the batch is saved again with the upsert ([`UPSERT`]), which cannot conflict.
///
/// That retry needs a savepoint per batch, and each is a subtransaction of the import. Past
/// [`MAX_SAVEPOINTS`] of them Postgres no longer keeps a transaction's subtransactions in
/// shared memory, and every other session's visibility checks consult `pg_subtrans` while the
/// import is open; batch `batch` (counted from 0) and later ones use the upsert directly.
pub async fn import_batch(
    tx: &mut Transaction<'_, Postgres>,
    tenant: TenantId,
    contacts: &[NewContact],
    (list, batch): (Option<i64>, usize),
) -> Result<u64, StoreError> {
    let columns = Columns::of(contacts);
    if batch >= MAX_SAVEPOINTS {
        return Ok(save_batch(tx, UPSERT, tenant, &columns, list).await?);
    }
    let mut apart = tx.begin().await?;
    match save_batch(&mut apart, SAVE_APART, tenant, &columns, list).await {
        Ok(saved) => {
            apart.commit().await?;
            Ok(saved)
        }
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
            apart.rollback().await?;
            Ok(save_batch(tx, UPSERT, tenant, &columns, list).await?)
        }
        Err(e) => Err(e.into()),
    }
}

/// Subtransactions Postgres keeps per backend in shared memory (`PGPROC_MAX_CACHED_SUBXIDS`).
pub const MAX_SAVEPOINTS: usize = 64;

/// The batch's rows, each phone once (its last row wins).
const IMPORT_INPUT: &str = "
    input AS (
        SELECT DISTINCT ON (phone) phone, first_name, last_name, attributes
        FROM UNNEST($2::text[], $3::text[], $4::text[], $5::jsonb[])
             WITH ORDINALITY AS u(phone, first_name, last_name, attributes, ord)
        ORDER BY phone, ord DESC
    )";

/// Known phones updated, new ones inserted without conflict handling, memberships added where
/// missing (a new contact has none).
const SAVE_APART: &str = "
    updated AS (
        UPDATE contacts c SET
            first_name = COALESCE(i.first_name, c.first_name),
            last_name = COALESCE(i.last_name, c.last_name),
            attributes = c.attributes || i.attributes,
            updated_at = now()
        FROM input i
        WHERE c.tenant_id = $1 AND c.phone_e164 = i.phone
        RETURNING c.id
    ), inserted AS (
        INSERT INTO contacts (tenant_id, phone_e164, first_name, last_name, attributes)
        SELECT $1, phone, first_name, last_name, attributes FROM input i
        WHERE NOT EXISTS (SELECT 1 FROM contacts c WHERE c.tenant_id = $1 AND c.phone_e164 = i.phone)
        ORDER BY phone
        RETURNING id
    ), saved AS (
        SELECT id FROM inserted
        UNION ALL
        SELECT u.id FROM updated u
        WHERE NOT EXISTS (SELECT 1 FROM list_members m WHERE m.list_id = $6 AND m.contact_id = u.id)
    ), joined AS (
        INSERT INTO list_members (list_id, contact_id)
        SELECT $6, id FROM saved
        WHERE EXISTS (SELECT 1 FROM lists l WHERE l.id = $6 AND l.tenant_id = $1)
    )
    SELECT (SELECT count(*) FROM inserted) + (SELECT count(*) FROM updated)";

/// The same effect as [`SAVE_APART`], safe against concurrent writers of the same phones.
const UPSERT: &str = "
    saved AS (
        INSERT INTO contacts (tenant_id, phone_e164, first_name, last_name, attributes)
        SELECT $1, phone, first_name, last_name, attributes FROM input ORDER BY phone
        ON CONFLICT (tenant_id, phone_e164) DO UPDATE SET
            first_name = COALESCE(EXCLUDED.first_name, contacts.first_name),
            last_name = COALESCE(EXCLUDED.last_name, contacts.last_name),
            attributes = contacts.attributes || EXCLUDED.attributes,
            updated_at = now()
        RETURNING id
    ), joined AS (
        INSERT INTO list_members (list_id, contact_id)
        SELECT $6, id FROM saved
        WHERE EXISTS (SELECT 1 FROM lists l WHERE l.id = $6 AND l.tenant_id = $1)
        ON CONFLICT DO NOTHING
    )
    SELECT count(*) FROM saved";

/// Runs one of the import statements over a batch; answers the contacts saved.
async fn save_batch(
    conn: &mut sqlx::PgConnection,
    statement: &str,
    tenant: TenantId,
    columns: &Columns<'_>,
    list: Option<i64>,
) -> Result<u64, sqlx::Error> {
    let sql = format!("WITH {IMPORT_INPUT}, {statement}");
    let saved: i64 = sqlx::query_scalar(&sql)
        .bind(tenant.get())
        .bind(&columns.phones)
        .bind(&columns.first)
        .bind(&columns.last)
        .bind(&columns.attrs)
        .bind(list)
        .fetch_one(conn)
        .await?;
    Ok(saved as u64)
}

/// Why list members (or a new list) were refused; nothing was written.
#[derive(Debug, thiserror::Error)]
pub enum ListError {
    #[error("a list of that name already exists")]
    NameTaken,
    /// Ids that are not the tenant's contacts (unknown, or another tenant's), sorted, each once.
    #[error("contacts not found: {0:?}")]
    UnknownContacts(Vec<i64>),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for ListError {
    fn from(e: sqlx::Error) -> Self {
        Self::Store(e.into())
    }
}

/// Creates a list with the tenant's contacts as members, all or nothing: a taken name or any
/// id that is not the tenant's contact leaves no list behind.
pub async fn create_list(
    pool: &PgPool,
    tenant: TenantId,
    name: &str,
    contacts: &[i64],
) -> Result<i64, ListError> {
    let mut tx = pool.begin().await?;
    let id = create_list_in(&mut tx, tenant, name, contacts).await?;
    tx.commit().await?;
    Ok(id)
}

/// [`create_list`] in a transaction of the caller's.
pub async fn create_list_in(
    tx: &mut Transaction<'_, Postgres>,
    tenant: TenantId,
    name: &str,
    contacts: &[i64],
) -> Result<i64, ListError> {
    let id: Option<i64> = sqlx::query_scalar(
        "INSERT INTO lists (tenant_id, name) VALUES ($1, $2)
         ON CONFLICT (tenant_id, name) DO NOTHING RETURNING id",
    )
    .bind(tenant.get())
    .bind(name.trim())
    .fetch_optional(&mut **tx)
    .await?;
    let id = id.ok_or(ListError::NameTaken)?;
    insert_members(tx, tenant, id, contacts).await?;
    Ok(id)
}

#[derive(Debug, Clone, serde::Serialize, sqlx::FromRow, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct List {
    pub id: i64,
    pub name: String,
    pub members: i64,
    pub created_at: DateTime<Utc>,
}

/// The tenant's list, or `None` (absent or another tenant's).
pub async fn find_list(
    pool: &PgPool,
    tenant: TenantId,
    id: i64,
) -> Result<Option<List>, StoreError> {
    let list = sqlx::query_as(
        "SELECT l.id, l.name, l.created_at,
                (SELECT count(*) FROM list_members m WHERE m.list_id = l.id) AS members
         FROM lists l WHERE l.id = $1 AND l.tenant_id = $2",
    )
    .bind(id)
    .bind(tenant.get())
    .fetch_optional(pool)
    .await?;
    Ok(list)
}

/// A CSV import's result: rows imported, and each refused row with its line.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct Imported {
    pub imported: usize,
    pub failed: usize,
    pub errors: Vec<RowError>,
}

/// One CSV line that could not be imported.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct RowError {
    pub line: u64,
    pub error: String,
}

/// The tenant's lists with their sizes, by name.
pub async fn lists(pool: &PgPool, tenant: TenantId) -> Result<Vec<List>, StoreError> {
    let lists = sqlx::query_as(
        "SELECT l.id, l.name, l.created_at,
                (SELECT count(*) FROM list_members m WHERE m.list_id = l.id) AS members
         FROM lists l WHERE l.tenant_id = $1 ORDER BY l.name, l.id LIMIT 500",
    )
    .bind(tenant.get())
    .fetch_all(pool)
    .await?;
    Ok(lists)
}

/// Adds the tenant's contacts to the tenant's list, all or nothing: any id that is not the
/// tenant's contact adds none. Returns how many were new members.
pub async fn add_members(
    pool: &PgPool,
    tenant: TenantId,
    list: i64,
    contacts: &[i64],
) -> Result<u64, ListError> {
    let mut tx = pool.begin().await?;
    let added = insert_members(&mut tx, tenant, list, contacts).await?;
    tx.commit().await?;
    Ok(added)
}

/// Contacts are never moved between tenants, so ids found to be the tenant's stay so until
/// the insert in the same transaction.
async fn insert_members(
    tx: &mut Transaction<'_, Postgres>,
    tenant: TenantId,
    list: i64,
    contacts: &[i64],
) -> Result<u64, ListError> {
    let unknown = not_the_tenants(tx, tenant, contacts).await?;
    if !unknown.is_empty() {
        return Err(ListError::UnknownContacts(unknown));
    }
    let added = sqlx::query(
        "INSERT INTO list_members (list_id, contact_id)
         SELECT $1, c.id FROM contacts c
         WHERE c.tenant_id = $2 AND c.id = ANY($3)
           AND EXISTS (SELECT 1 FROM lists l WHERE l.id = $1 AND l.tenant_id = $2)
         ON CONFLICT DO NOTHING",
    )
    .bind(list)
    .bind(tenant.get())
    .bind(contacts)
    .execute(&mut **tx)
    .await?;
    Ok(added.rows_affected())
}

/// The ids among `contacts` that are not the tenant's contacts, sorted, each once.
async fn not_the_tenants(
    tx: &mut Transaction<'_, Postgres>,
    tenant: TenantId,
    contacts: &[i64],
) -> Result<Vec<i64>, StoreError> {
    let unknown = sqlx::query_scalar(
        "SELECT DISTINCT u.id FROM UNNEST($2::bigint[]) AS u(id)
         WHERE NOT EXISTS (SELECT 1 FROM contacts c WHERE c.id = u.id AND c.tenant_id = $1)
         ORDER BY u.id",
    )
    .bind(tenant.get())
    .bind(contacts)
    .fetch_all(&mut **tx)
    .await?;
    Ok(unknown)
}

/// Removes contacts from a list; returns how many were members.
pub async fn remove_members(
    pool: &PgPool,
    tenant: TenantId,
    list: i64,
    contacts: &[i64],
) -> Result<u64, StoreError> {
    let removed = sqlx::query(
        "DELETE FROM list_members m USING lists l
         WHERE m.list_id = l.id AND l.id = $1 AND l.tenant_id = $2 AND m.contact_id = ANY($3)",
    )
    .bind(list)
    .bind(tenant.get())
    .bind(contacts)
    .execute(pool)
    .await?;
    Ok(removed.rows_affected())
}
