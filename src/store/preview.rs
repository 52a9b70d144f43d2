//! What an enqueue would do, without doing it: the same audience query (deduplicated by phone,
//! opted-out contacts left out, phones the campaign already holds not added again), the same
//! composition of links and the same part counting ([`super::enqueue::recipient_text`],
//! [`super::enqueue::static_parts`]), so the credits a preview names are the credits an
//! enqueue a moment later reserves. Read-only, in one database snapshot.

use futures::TryStreamExt;
use serde::Serialize;
use sqlx::PgPool;

use super::enqueue::{
    audience_bound, recipient_text, static_parts, Audience, AudienceRow, StartError, AUDIENCE,
};
use crate::domain::{CampaignId, Carried, Encoding, LinkWording, Segments, Template, TenantId};

/// What to preview: a saved campaign (its id: phones it already holds are not counted again)
/// or an unsaved definition.
#[derive(Debug, Clone)]
pub struct PreviewInput {
    pub tenant: TenantId,
    pub campaign: Option<CampaignId>,
    pub body: String,
    /// As stored: `{"listIds": [...], "phones": [...]}`.
    pub audience: serde_json::Value,
    pub carried: Carried,
    /// Recipients whose texts are shown.
    pub samples: usize,
}

/// One recipient's message as it would be sent (links with a stand-in code of the real
/// length).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SampleMessage {
    pub phone: String,
    pub text: String,
    pub encoding: Encoding,
    /// GSM-7 septets or UCS-2 code units.
    pub units: usize,
    pub segments: u32,
    /// The characters that made the text UCS-2 (empty for GSM-7).
    pub ucs2_characters: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AudienceCounts {
    /// Entries of the lists and inline phones, before anything is removed.
    pub entries: i64,
    /// Entries dropped because their phone was already in the audience.
    pub duplicates: i64,
    /// Phones left out because their contact opted out.
    pub opted_out: i64,
    /// Phones the campaign already holds (an earlier enqueue): not added again.
    pub already_added: i64,
    /// Recipients the enqueue would add.
    pub recipients: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Credits {
    /// One credit per SMS part: what the enqueue would reserve.
    pub required: i64,
    pub balance: i64,
    pub sufficient: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Preview {
    pub audience: AudienceCounts,
    /// The fewest and most parts one recipient's text takes (equal without placeholders).
    pub segments_min: u32,
    pub segments_max: u32,
    pub credits: Credits,
    pub subscription_active: bool,
    pub samples: Vec<SampleMessage>,
}

/// Previews an enqueue: counts and samples as the enqueue would see them now. A text over
/// `max_segments` parts is refused exactly as the enqueue would refuse it.
pub async fn preview(
    pool: &PgPool,
    input: &PreviewInput,
    links: &LinkWording,
    max_segments: u32,
) -> Result<Preview, StartError> {
    let mut tx = pool.begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .execute(&mut *tx)
        .await?;
    let campaign = input.campaign.map_or(0, |c| c.get());
    let audience = Audience::of(input.campaign, input.audience.clone())?;
    let phones = audience.inline_phones();
    let entries = audience_bound(&mut tx, input.tenant, &audience, phones.len()).await? as i64;
    let (distinct, opted_out): (i64, i64) = sqlx::query_as(DISTINCT_AND_OPTED_OUT)
        .bind(input.tenant.get())
        .bind(&audience.list_ids)
        .bind(&phones)
        .fetch_one(&mut *tx)
        .await?;
    let (balance, subscription_active): (i64, bool) = sqlx::query_as(
        "SELECT credit_balance,
                subscription_active AND (subscription_until IS NULL OR subscription_until > now())
         FROM tenants WHERE id = $1",
    )
    .bind(input.tenant.get())
    .fetch_one(&mut *tx)
    .await?;

    let plan = links.plan(input.carried);
    let composed = plan.compose(&input.body);
    let template = Template::parse(&composed);
    let fixed = match template.is_static() {
        true => Some(static_parts(&composed, &plan, max_segments)?),
        false => None,
    };
    // the audience is read as a stream: a preview holds one row at a time, however large
    let query = format!(
        "WITH {AUDIENCE} SELECT phone, contact_id, first_name, last_name, attributes
         FROM audience
         WHERE NOT EXISTS (SELECT 1 FROM campaign_recipients r
                           WHERE r.campaign_id = $4 AND r.phone_e164 = audience.phone)
         ORDER BY phone"
    );
    let mut rows = sqlx::query_as::<_, AudienceRow>(&query)
        .bind(input.tenant.get())
        .bind(&audience.list_ids)
        .bind(&phones)
        .bind(campaign)
        .fetch(&mut *tx);
    let (mut required, mut recipients) = (0i64, 0i64);
    let mut sizes: Option<(i16, i16)> = None;
    let mut samples = Vec::new();
    while let Some(row) = rows.try_next().await? {
        let (text, n) = match fixed {
            Some(n) => (None, n),
            None => {
                let (text, n) = recipient_text(&template, &plan, &row, max_segments)?;
                (Some(text), n)
            }
        };
        required += i64::from(n);
        recipients += 1;
        sizes = Some(sizes.map_or((n, n), |(min, max)| (min.min(n), max.max(n))));
        if samples.len() < input.samples {
            let text = text.as_deref().unwrap_or(&composed);
            samples.push(sample(&row.0, &plan.sized(text)));
        }
    }
    drop(rows);
    tx.commit().await?;
    // with no recipient the body alone still tells its size
    let (segments_min, segments_max) = sizes.or(fixed.map(|n| (n, n))).unwrap_or((0, 0));
    Ok(Preview {
        audience: AudienceCounts {
            entries,
            duplicates: entries - distinct,
            opted_out,
            already_added: distinct - opted_out - recipients,
            recipients,
        },
        segments_min: segments_min as u32,
        segments_max: segments_max as u32,
        credits: Credits {
            required,
            balance,
            sufficient: balance >= required,
        },
        subscription_active,
        samples,
    })
}

fn sample(phone: &str, text: &str) -> SampleMessage {
    let size = Segments::count(text);
    SampleMessage {
        phone: phone.to_owned(),
        text: text.to_owned(),
        encoding: size.encoding,
        units: size.units,
        segments: size.parts,
        ucs2_characters: Segments::ucs2_characters(text)
            .into_iter()
            .map(String::from)
            .collect(),
    }
}

/// Distinct phones of the audience before opt-outs are removed, and how many of them opted
/// out. Binds: $1 tenant, $2 list ids, $3 inline phones (as the enqueue's audience).
const DISTINCT_AND_OPTED_OUT: &str = "
    SELECT count(DISTINCT phone), count(DISTINCT phone) FILTER (WHERE opted_out) FROM (
        SELECT c.phone_e164 AS phone, c.unsubscribed_at IS NOT NULL AS opted_out
        FROM list_members m
        JOIN lists l ON l.id = m.list_id AND l.tenant_id = $1
        JOIN contacts c ON c.id = m.contact_id
        WHERE m.list_id = ANY($2)
        UNION ALL
        SELECT p, COALESCE(c.unsubscribed_at IS NOT NULL, false)
        FROM UNNEST($3::text[]) AS p
        LEFT JOIN contacts c ON c.tenant_id = $1 AND c.phone_e164 = p
    ) a";
