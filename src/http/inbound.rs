//! `POST /webhooks/mitto/inbound`: mobile-originated messages. A STOP keyword (configurable;
//! case, accents and full-width forms ignored) opts the phone out of the marketing of the
//! tenant that messaged it, and counts as an `unsubscribe` of the latest campaign that messaged
//! the phone within `links.attribution_days`.
//!
//! Signatures follow the DLR webhook's rules. Which tenant: the one whose campaign last
//! messaged the phone from the sender the reply went to (`to`, at any time), else — a reply to
//! a number the campaigns do not name, or without `to` — the one that last messaged the phone
//! at all; the STOP is attributed only to that tenant's latest campaign within the window.
//! Numbers may come as bare international digits (`306984303406`).
//! A request accepted once is refused as a replay (409), as on the DLR webhook, so an old STOP
//! replayed after the phone resubscribed cannot opt it out again.

use actix_web::{web, HttpRequest, HttpResponse};
use chrono::Utc;

use super::webhooks::{verified, Verified, WebhookError};
use super::AppState;
use crate::domain::inbound::{parse_inbound, InboundMessage};
use crate::domain::{EngagementKind, Event, PhoneE164};
use crate::store::contacts::{self, NewContact};
use crate::store::links::{self, LastMessage};
use crate::store::StoreError;
use sha2::{Digest, Sha256};

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/webhooks/mitto/inbound", web::post().to(receive_inbound));
}

/// What became of one request's messages.
#[derive(Default, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct Outcome {
    received: usize,
    /// STOPs that opted a phone out (or found it opted out already).
    unsubscribed: usize,
    /// Of those, STOPs attributed to a campaign (each recipient counts once in the campaign's
    /// `unsubscribes`, however often it sends STOP).
    attributed: usize,
    /// Other texts, phones that are not E.164, and STOPs from phones no tenant messaged.
    ignored: usize,
}

/// One mobile-originated message. Also accepted: the aliases integrations use (`sender`,
/// `msisdn`, `destination`, `message`, `body`, `sms.text`, …) and one object instead of an
/// array.
#[derive(utoipa::ToSchema)]
#[schema(rename_all = "camelCase")]
#[allow(dead_code)] // documentation: messages are read field by field, by alias
pub(super) struct InboundText {
    /// The subscriber's number.
    from: String,
    /// Our sender the reply went to.
    to: Option<String>,
    text: String,
    message_id: Option<String>,
    received_at: Option<chrono::DateTime<chrono::Utc>>,
}

#[utoipa::path(post, path = "/webhooks/mitto/inbound", tag = "webhooks", security(()),
    params(super::webhooks::WebhookHeaders),
    request_body(content = Vec<InboundText>, description = "One message or an array"),
    responses((status = 202, description = "Handled: STOP keywords opted their phones out", body = Outcome),
        (status = 400, description = "`INVALID_MESSAGE` or `BAD_REQUEST`", body = super::openapi::ErrorBody),
        (status = 401, description = "`INVALID_SIGNATURE`", body = super::openapi::ErrorBody),
        (status = 409, description = "`REPLAYED`", body = super::openapi::ErrorBody),
        (status = 413, description = "`PAYLOAD_TOO_LARGE`", body = super::openapi::ErrorBody),
        (status = 503, description = "Not stored; retry", body = super::openapi::ErrorBody)))]
#[tracing::instrument(skip_all)]
pub(super) async fn receive_inbound(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, WebhookError> {
    let Verified { body, key, .. } = verified(&req, payload, &state).await?;
    let messages = parse_inbound(&body).map_err(|e| WebhookError::BadInbound(e.to_string()))?;
    let outcome = std::cell::RefCell::new(Outcome {
        received: messages.len(),
        ..Outcome::default()
    });
    let work = async {
        for message in &messages {
            let done = opt_out(&state, message).await?;
            let mut outcome = outcome.borrow_mut();
            match done {
                Some(attributed) => {
                    outcome.unsubscribed += 1;
                    outcome.attributed += usize::from(attributed);
                }
                None => outcome.ignored += 1,
            }
        }
        Ok(())
    };
    // a replay (say, of a STOP sent before the phone resubscribed) is refused with 409
    let key: [u8; 32] = Sha256::new()
        .chain_update(b"inbound:")
        .chain_update(key)
        .finalize()
        .into();
    state.replays.accept_once(key, work).await?;
    Ok(HttpResponse::Accepted().json(outcome.into_inner()))
}

/// How long a STOP waits for the sends applied so far to reach the recipients' rows before
/// the request is answered 503 (the provider retries).
const SETTLE_LIMIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Opts the sender of a STOP out; `Some(attributed)` when it did, `None` when the message is
/// not a STOP or no tenant messaged the phone.
async fn opt_out(state: &AppState, message: &InboundMessage) -> Result<Option<bool>, String> {
    if !state.stop_keywords.is_stop(&message.text) {
        return Ok(None);
    }
    let Ok(phone) = PhoneE164::parse_msisdn(&message.from) else {
        tracing::warn!("an inbound STOP from a number that is not international was ignored");
        return Ok(None);
    };
    // the tenant and the campaign are found from the recipients' rows: the sends applied so
    // far must be in them, or a reply to a first message would find no tenant, and a reply
    // to a new campaign would be credited to an older one
    if !state.events.applied.settled(SETTLE_LIMIT).await {
        return Err("the latest sends are not in place yet; retry".to_owned());
    }
    let Some(tenant) = tenant_of(state, phone.as_str(), message.to.as_deref())
        .await
        .map_err(|e| e.to_string())?
    else {
        return Ok(None);
    };
    let days = state.settings.links.attribution_days;
    let last = links::last_message_to(&state.pool, phone.as_str(), tenant, days)
        .await
        .map_err(|e| e.to_string())?;
    if let Some(last) = &last {
        publish(state, last).await?;
    }
    let contact = NewContact {
        phone: Some(phone),
        unsubscribed: Some(true),
        ..NewContact::default()
    };
    contacts::upsert(&state.pool, tenant, &[contact])
        .await
        .map_err(|e| e.to_string())?;
    Ok(Some(last.is_some()))
}

/// The tenant a STOP opts out of: the one that last messaged the phone from the number the
/// reply went to; when no campaign names that number (or the reply names none), the one that
/// last messaged the phone at all.
async fn tenant_of(
    state: &AppState,
    phone: &str,
    to: Option<&str>,
) -> Result<Option<crate::domain::TenantId>, StoreError> {
    if let Some(to) = to {
        if let Some(tenant) = links::tenant_of_sender(&state.pool, phone, Some(to)).await? {
            return Ok(Some(tenant));
        }
    }
    links::tenant_of_sender(&state.pool, phone, None).await
}

/// The `unsubscribe` event of the attributed recipient (counted once per recipient).
async fn publish(state: &AppState, last: &LastMessage) -> Result<(), String> {
    let ids = (last.campaign_id, last.recipient_id);
    let message = last.provider_message_id.as_deref();
    let event = Event::engagement(
        EngagementKind::Unsubscribe,
        ids,
        message,
        Some("inbound"),
        Utc::now(),
    )
    .map_err(|e| e.to_string())?;
    super::links::publish_event(state, event).await
}
