//! Any instance answers any request (README, "Several instances"): a request for one
//! campaign that another member owns is passed to that member, which answers it from the
//! campaign's actor — so stats, lifecycle actions, reports and live streams are the owner's,
//! whichever instance a load balancer picked. Requests about several campaigns (lists, bulk
//! stats) are answered where they arrive, from the owners' last checkpointed snapshots.

use std::time::Duration;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{web, HttpMessage, HttpResponse};
use futures::StreamExt;

use super::error::ApiError;
use super::AppState;
use crate::domain::CampaignId;

/// Set on a forwarded request: its receiver answers it or refuses it, never forwards again.
pub const FORWARDED_BY: &str = "x-campaignd-forwarded-by";

/// The largest body forwarded (campaign routes take small JSON or form bodies).
const MAX_FORWARDED_BODY: usize = 4 * 1024 * 1024;

/// Headers that belong to one connection, not to the request or response.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "transfer-encoding",
    "te",
    "upgrade",
    "proxy-connection",
    "host",
    "content-length",
];

/// The campaign a path is about, for the routes of one campaign.
fn campaign_of(path: &str) -> Option<CampaignId> {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let id = match segments.as_slice() {
        ["api", "v1", "campaigns", id, ..] | ["api", "campaigns", id, ..] => id,
        ["app", "campaigns", id, ..] => id,
        _ => return None,
    };
    id.parse::<i64>().ok().and_then(|i| CampaignId::new(i).ok())
}

/// Middleware: forwards a request for a campaign another member owns to that member.
pub async fn to_owner<B: MessageBody + 'static>(
    mut req: ServiceRequest,
    next: Next<B>,
) -> Result<ServiceResponse<EitherBody<B>>, actix_web::Error> {
    let (Some(id), Some(state)) = (
        campaign_of(req.path()),
        req.app_data::<web::Data<AppState>>().cloned(),
    ) else {
        return Ok(next.call(req).await?.map_into_left_body());
    };
    let events = &state.events;
    if events.registry.owns(id) {
        return Ok(next.call(req).await?.map_into_left_body());
    }
    let answer = match forward(&mut req, &state, id).await {
        Ok(response) => response,
        Err(e) => actix_web::ResponseError::error_response(&e),
    };
    Ok(req.into_response(answer).map_into_right_body())
}

async fn forward(
    req: &mut ServiceRequest,
    state: &AppState,
    id: CampaignId,
) -> Result<HttpResponse, ApiError> {
    let moving = || {
        ApiError::Unavailable(format!(
            "campaign {id} is moving between instances; retry in a moment"
        ))
    };
    if req.headers().contains_key(FORWARDED_BY) {
        return Err(moving());
    }
    let cluster = &state.events.cluster;
    let partition = state.events.registry.partition_of(id);
    let owner = crate::store::cluster::owner_of(&state.pool, &cluster.scope, partition)
        .await
        .map_err(|e| ApiError::Unexpected(e.into()))?;
    let address = match owner {
        Some((member, Some(address))) if member != state.events.registry.member() => address,
        _ => return Err(moving()),
    };
    let body = read_body(req).await?;
    let url = format!(
        "{address}{}",
        req.uri().path_and_query().map_or("", |p| p.as_str())
    );
    // actix and reqwest use different versions of the `http` types: passed as bytes
    let method = reqwest::Method::from_bytes(req.method().as_str().as_bytes())
        .map_err(|e| ApiError::BadRequest(format!("method: {e}")))?;
    let mut request = cluster
        .http
        .request(method, &url)
        .header(FORWARDED_BY, state.events.registry.member().to_string())
        .body(body);
    for (name, value) in req.headers() {
        if !HOP_BY_HOP.contains(&name.as_str()) {
            request = request.header(name.as_str(), value.as_bytes());
        }
    }
    let answer = request.send().await.map_err(|e| {
        tracing::warn!(campaign_id = %id, owner = %address, error = %e, "forwarding to the campaign's owner failed");
        moving()
    })?;
    let status = actix_web::http::StatusCode::from_u16(answer.status().as_u16())
        .unwrap_or(actix_web::http::StatusCode::BAD_GATEWAY);
    let mut response = HttpResponse::build(status);
    for (name, value) in answer.headers() {
        use actix_web::http::header::{HeaderName, HeaderValue};
        let pair = (
            HeaderName::from_bytes(name.as_str().as_bytes()),
            HeaderValue::from_bytes(value.as_bytes()),
        );
        if let (false, (Ok(name), Ok(value))) = (HOP_BY_HOP.contains(&name.as_str()), pair) {
            response.append_header((name, value));
        }
    }
    // streamed: a live stats stream stays open for as long as the owner keeps it
    let stream = answer
        .bytes_stream()
        .map(|chunk| chunk.map_err(actix_web::error::ErrorBadGateway));
    Ok(response.streaming(stream))
}

async fn read_body(req: &mut ServiceRequest) -> Result<web::Bytes, ApiError> {
    let mut payload = req.take_payload();
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk =
            chunk.map_err(|e| ApiError::BadRequest(format!("reading the body failed: {e}")))?;
        if body.len() + chunk.len() > MAX_FORWARDED_BODY {
            return Err(ApiError::PayloadTooLarge(format!(
                "the body exceeds {MAX_FORWARDED_BODY} bytes"
            )));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// How members reach each other: the offsets' scope (which names the partitions' owners) and
/// one HTTP client for forwarded requests.
#[derive(Clone)]
pub struct ClusterHandle {
    pub scope: crate::store::checkpoints::OffsetScope,
    pub http: reqwest::Client,
}

impl ClusterHandle {
    pub fn new(scope: crate::store::checkpoints::OffsetScope) -> Self {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(2))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_default();
        Self { scope, http }
    }
}

#[cfg(test)]
mod tests {
    use super::campaign_of;

    #[test]
    fn only_the_routes_of_one_campaign_are_forwarded() {
        let id = |path| campaign_of(path).map(|c| c.get());
        assert_eq!(id("/api/v1/campaigns/42/stats"), Some(42));
        assert_eq!(id("/api/v1/campaigns/42"), Some(42));
        assert_eq!(id("/api/campaigns/7/status"), Some(7));
        assert_eq!(id("/app/campaigns/9/live"), Some(9));
        assert_eq!(id("/api/v1/campaigns/stats"), None);
        assert_eq!(id("/api/v1/campaigns/preview"), None);
        assert_eq!(id("/api/v1/campaigns"), None);
        assert_eq!(id("/api/v1/contacts/3"), None);
        assert_eq!(id("/api/v1/campaigns/-1/stats"), None);
    }
}
