//! The Mitto HTTP client: bulk send, single send, status lookup (mitto-api.md).
//!
//! Every failure says what the caller may do next ([`Outcome`]): give up, try later, or —
//! for a send whose request was written but never answered — treat the outcome as unknown.
//! Sends are retried only when Mitto cannot have accepted them (connect errors, 408, 429,
//! 5xx); an ambiguous send is never retried here, so no phone is messaged twice.

use std::cell::Cell;
use std::future::Future;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use backon::Retryable;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use reqwest::{Response, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use serde::de::DeserializeOwned;

use super::retry::{next_delay, parse_retry_after, RetryPolicy};
use super::wire::{
    BulkRequest, MessageStatusResponse, ProblemDetails, SendMessage, SendResponse, API_KEY_HEADER,
    BULK_SEND_PATH, MESSAGE_PATH, SINGLE_SEND_PATH,
};
use crate::domain::{BulkId, MessageId};

/// What the caller may do about a failed call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Mitto refused; the messages are failed with the provider's reason.
    Failed,
    /// Mitto was unavailable; trying again later can succeed.
    Retryable,
    /// The request may have been accepted; resending could message phones twice.
    Ambiguous,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MittoError {
    #[error("Mitto refused the request ({status}): {message}")]
    Rejected { status: u16, message: String },
    #[error("Mitto was unavailable after {attempts} attempt(s): {message}")]
    Unavailable { attempts: u32, message: String },
    #[error("outcome unknown, the request may have been accepted: {message}")]
    Ambiguous { message: String },
    #[error("message {0} is unknown to Mitto")]
    NotFound(String),
    #[error("Mitto client cannot be built: {0}")]
    Setup(String),
}

impl MittoError {
    pub fn outcome(&self) -> Outcome {
        match self {
            Self::Rejected { .. } | Self::NotFound(_) | Self::Setup(_) => Outcome::Failed,
            Self::Unavailable { .. } => Outcome::Retryable,
            Self::Ambiguous { .. } => Outcome::Ambiguous,
        }
    }
}

/// The result for one message of a send; `items[i]` belongs to request message `i`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ItemResult {
    Accepted {
        message_id: MessageId,
    },
    /// Refused for this message alone (e.g. an invalid destination); not retryable.
    Rejected {
        code: String,
        message: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BulkOutcome {
    pub bulk_id: Option<BulkId>,
    pub items: Vec<ItemResult>,
}

/// Connection settings for [`MittoClient::new`].
#[derive(Debug, Clone)]
pub struct ClientConfig {
    pub base_url: url::Url,
    pub api_key: SecretString,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    pub retry: RetryPolicy,
    /// Status lookups per second across every clone of the client, evenly spaced.
    pub status_lookups_per_second: Option<NonZeroU32>,
}

/// One pooled HTTP client per process; cheap to clone. Clones share the lookup pace, so the
/// refresh API, the reconciler and the senders together stay within Mitto's lookup rate.
#[derive(Debug, Clone)]
pub struct MittoClient {
    http: reqwest::Client,
    base_url: url::Url,
    api_key: SecretString,
    retry: RetryPolicy,
    lookup_pace: Option<Arc<DefaultDirectRateLimiter>>,
}

/// One attempt's failure, before the retry loop decides.
#[derive(Debug)]
enum AttemptError {
    Retry {
        retry_after: Option<Duration>,
        message: String,
    },
    Final(MittoError),
}

/// What a request is: whether it may be repeated when its answer is lost, and whether it
/// counts against the lookup rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CallKind {
    /// A status lookup: idempotent, paced.
    Lookup,
    /// A send: a lost answer means an unknown outcome.
    Send,
}

impl CallKind {
    fn endpoint(self) -> &'static str {
        match self {
            CallKind::Lookup => "status",
            CallKind::Send => "send",
        }
    }
}

impl MittoClient {
    pub fn new(config: ClientConfig) -> Result<Self, MittoError> {
        let http = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .timeout(config.request_timeout)
            // Below common server keep-alive limits, so a pooled connection is rarely closed
            // by the server just as a send is written on it (which would be ambiguous).
            .pool_idle_timeout(Duration::from_secs(4))
            .build()
            .map_err(|e| MittoError::Setup(e.to_string()))?;
        let lookup_pace = config
            .status_lookups_per_second
            .map(|rate| Arc::new(RateLimiter::direct(lookup_quota(rate))));
        Ok(Self {
            http,
            base_url: config.base_url,
            api_key: config.api_key,
            retry: config.retry,
            lookup_pace,
        })
    }

    /// Sends up to 1000 messages in one request. The response is mapped by index; a response
    /// whose length differs from the request is an error for the whole batch — and an
    /// ambiguous one, since Mitto answered 200 and may have accepted every message.
    #[tracing::instrument(skip_all, fields(messages = messages.len()))]
    pub async fn send_bulk(&self, messages: &[SendMessage]) -> Result<BulkOutcome, MittoError> {
        self.send_bulk_paced(messages, no_pace).await
    }

    /// [`MittoClient::send_bulk`], with `again` awaited before every retry: a rate limit
    /// takes the batch's budget again, since a refused request sent nothing and the retry
    /// goes out in a later second.
    pub async fn send_bulk_paced<P, F>(
        &self,
        messages: &[SendMessage],
        again: P,
    ) -> Result<BulkOutcome, MittoError>
    where
        P: Fn() -> F,
        F: Future<Output = ()>,
    {
        let body = BulkRequest {
            messages: messages.to_vec(),
        };
        let response: SendResponse = self
            .call(
                CallKind::Send,
                || self.http.post(self.url(BULK_SEND_PATH)).json(&body),
                again,
            )
            .await?;
        let bulk_id = match response.bulk_id.as_deref().map(BulkId::parse).transpose() {
            Ok(id) => id,
            Err(e) => return Err(ambiguous(format!("response carried {e}"))),
        };
        let items = map_items(messages.len(), response)?;
        Ok(BulkOutcome { bulk_id, items })
    }

    /// Sends one message through the single-send endpoint.
    #[tracing::instrument(skip_all)]
    pub async fn send_one(&self, message: &SendMessage) -> Result<ItemResult, MittoError> {
        let response: SendResponse = self
            .call(
                CallKind::Send,
                || self.http.post(self.url(SINGLE_SEND_PATH)).json(message),
                no_pace,
            )
            .await?;
        let mut items = map_items(1, response)?;
        Ok(items.remove(0))
    }

    /// The provider's current view of one message. Lookups are idempotent, so timeouts are
    /// retried like any transient failure.
    #[tracing::instrument(skip_all, fields(message_id = %id))]
    pub async fn message_status(
        &self,
        id: &MessageId,
    ) -> Result<MessageStatusResponse, MittoError> {
        let url = self.url(&format!("{MESSAGE_PATH}/{}", id.as_str()));
        self.call(CallKind::Lookup, || self.http.get(url.clone()), no_pace)
            .await
            .map_err(|e| match e {
                MittoError::Rejected { status: 404, .. } => MittoError::NotFound(id.to_string()),
                other => other,
            })
    }

    /// The message sent with our `reference`, or `None` when Mitto has none. campaignd sets a
    /// unique reference per send attempt, so this tells whether an unanswered send was
    /// accepted. The query form is ours (mitto-api.md marks it so); the simulator serves it.
    #[tracing::instrument(skip_all, fields(reference))]
    pub async fn message_by_reference(
        &self,
        reference: &str,
    ) -> Result<Option<MessageStatusResponse>, MittoError> {
        let mut url = self.url(MESSAGE_PATH);
        url.query_pairs_mut().append_pair("reference", reference);
        match self
            .call(CallKind::Lookup, || self.http.get(url.clone()), no_pace)
            .await
        {
            Ok(message) => Ok(Some(message)),
            Err(MittoError::Rejected { status: 404, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn url(&self, path: &str) -> url::Url {
        let mut url = self.base_url.clone();
        let base = url.path().trim_end_matches('/').to_owned();
        url.set_path(&format!("{base}{path}"));
        url
    }

    /// Runs attempts under the retry policy and turns the last failure into a `MittoError`.
    async fn call<T, B, P, F>(&self, kind: CallKind, build: B, again: P) -> Result<T, MittoError>
    where
        T: DeserializeOwned,
        B: Fn() -> reqwest::RequestBuilder,
        P: Fn() -> F,
        F: Future<Output = ()>,
    {
        let attempts = Cell::new(0u32);
        let attempt = || async {
            if attempts.get() > 0 {
                again().await;
            }
            attempts.set(attempts.get() + 1);
            self.attempt(kind, &build).await
        };
        let result = attempt
            .retry(self.retry.backoff())
            .sleep(tokio::time::sleep)
            .when(|e| matches!(e, AttemptError::Retry { .. }))
            .adjust(|e, backoff| match e {
                AttemptError::Retry { retry_after, .. } => next_delay(backoff, *retry_after),
                AttemptError::Final(_) => None,
            })
            .notify(|e, delay| tracing::warn!(error = ?e, ?delay, "Mitto call failed; retrying"))
            .await;
        result.map_err(|e| match e {
            AttemptError::Final(e) => e,
            AttemptError::Retry { message, .. } => MittoError::Unavailable {
                attempts: attempts.get(),
                message,
            },
        })
    }

    async fn attempt<T, B>(&self, kind: CallKind, build: &B) -> Result<T, AttemptError>
    where
        T: DeserializeOwned,
        B: Fn() -> reqwest::RequestBuilder,
    {
        if let (CallKind::Lookup, Some(pace)) = (kind, &self.lookup_pace) {
            pace.until_ready().await;
        }
        let request = build().header(API_KEY_HEADER, self.api_key.expose_secret());
        let started = std::time::Instant::now();
        let sent = request.send().await;
        crate::metrics::mitto_call(kind.endpoint(), call_outcome(&sent), started.elapsed());
        let response = sent.map_err(|e| transport_error(kind, e))?;
        let status = response.status();
        if status.is_success() {
            let body = response
                .bytes()
                .await
                .map_err(|e| transport_error(kind, e))?;
            return serde_json::from_slice(&body).map_err(|e| {
                let message = format!("response body is not what Mitto documents: {e}");
                match kind {
                    CallKind::Send => AttemptError::Final(ambiguous(message)),
                    CallKind::Lookup => AttemptError::Retry {
                        retry_after: None,
                        message,
                    },
                }
            });
        }
        Err(status_error(response).await)
    }
}

/// Nothing to wait for before a retry.
fn no_pace() -> std::future::Ready<()> {
    std::future::ready(())
}

/// The lookup pace: at most `rate` lookups in any one-second window. A small burst (10 ms
/// worth) lets waiters through between timer ticks (1 ms), which alone would cap the rate
/// near 1,000/s; the steady rate is lowered by the burst so that burst plus one second of
/// steady flow never exceeds `rate`.
fn lookup_quota(rate: NonZeroU32) -> Quota {
    let burst = (rate.get() / 100).max(1);
    let steady = match rate.get() > burst {
        true => rate.get() - burst,
        false => rate.get(),
    };
    let steady = NonZeroU32::new(steady).unwrap_or(NonZeroU32::MIN);
    let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
    Quota::per_second(steady).allow_burst(burst)
}

/// A call's outcome as the metrics name it.
fn call_outcome(sent: &Result<Response, reqwest::Error>) -> &'static str {
    match sent {
        Ok(r) if r.status().is_success() => "ok",
        Ok(r) if r.status() == StatusCode::TOO_MANY_REQUESTS => "rate_limited",
        Ok(r) if r.status().is_server_error() => "server_error",
        Ok(_) => "client_error",
        Err(e) if e.is_timeout() => "timeout",
        Err(e) if e.is_connect() => "connection",
        Err(_) => "transport",
    }
}

fn ambiguous(message: String) -> MittoError {
    MittoError::Ambiguous { message }
}

/// A transport failure: before the connection existed nothing was sent (safe to retry);
/// after, a send's outcome is unknown.
fn transport_error(kind: CallKind, e: reqwest::Error) -> AttemptError {
    let message = e.to_string();
    if e.is_connect() || kind == CallKind::Lookup {
        AttemptError::Retry {
            retry_after: None,
            message,
        }
    } else {
        AttemptError::Final(ambiguous(message))
    }
}

async fn status_error(response: Response) -> AttemptError {
    let status = response.status();
    let retry_after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| parse_retry_after(v, SystemTime::now()));
    let text = response.text().await.unwrap_or_default();
    let message = match serde_json::from_str::<ProblemDetails>(&text) {
        Ok(problem) if problem.title.is_some() => problem.summary(),
        _ if text.trim().is_empty() => status.to_string(),
        _ => text.chars().take(500).collect(),
    };
    let retryable = status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::REQUEST_TIMEOUT
        || status.is_server_error();
    if retryable {
        AttemptError::Retry {
            retry_after,
            message: format!("{status}: {message}"),
        }
    } else {
        AttemptError::Final(MittoError::Rejected {
            status: status.as_u16(),
            message,
        })
    }
}

/// Maps response items onto request positions; refuses to guess when the lengths differ.
fn map_items(expected: usize, response: SendResponse) -> Result<Vec<ItemResult>, MittoError> {
    if response.messages.len() != expected {
        return Err(ambiguous(format!(
            "response has {} items for {expected} messages; the mapping is unknown",
            response.messages.len()
        )));
    }
    response
        .messages
        .into_iter()
        .enumerate()
        .map(|(i, item)| match (item.message_id, item.error) {
            (_, Some(error)) => Ok(ItemResult::Rejected {
                code: error.code,
                message: error.message,
            }),
            (Some(id), None) => MessageId::parse(&id)
                .map(|message_id| ItemResult::Accepted { message_id })
                .map_err(|e| ambiguous(format!("item {i}: {e}"))),
            (None, None) => Err(ambiguous(format!(
                "item {i} has neither messageId nor error"
            ))),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mitto::wire::{ItemError, SendResponseItem};

    fn item(id: Option<&str>, error: Option<&str>) -> SendResponseItem {
        SendResponseItem {
            traffic_account_id: None,
            message_id: id.map(str::to_owned),
            error: error.map(|code| ItemError {
                code: code.to_owned(),
                message: "nope".to_owned(),
            }),
        }
    }

    #[test]
    fn items_map_by_position_and_keep_per_item_errors() {
        let response = SendResponse {
            bulk_id: None,
            messages: vec![
                item(Some("01A"), None),
                item(None, Some("InvalidDestination")),
            ],
        };
        let items = map_items(2, response).unwrap();
        assert!(
            matches!(&items[0], ItemResult::Accepted { message_id } if message_id.as_str() == "01A")
        );
        assert!(
            matches!(&items[1], ItemResult::Rejected { code, .. } if code == "InvalidDestination")
        );
    }

    #[test]
    fn the_lookup_pace_never_allows_more_than_the_rate_in_one_second() {
        for rate in [1u32, 20, 99, 100, 1_000, 5_000, 100_000] {
            let quota = lookup_quota(NonZeroU32::new(rate).unwrap());
            let per_second =
                Duration::from_secs(1).as_secs_f64() / quota.replenish_interval().as_secs_f64();
            // cells that fit in one second: the burst, then one per whole replenish interval
            let window = f64::from(quota.burst_size().get()) + per_second.floor();
            assert!(window <= f64::from(rate.max(2)), "rate {rate}: {window}");
            assert!(window >= f64::from(rate) * 0.98, "rate {rate}: {window}");
        }
    }

    #[test]
    fn a_length_mismatch_is_ambiguous_for_the_whole_batch() {
        let response = SendResponse {
            bulk_id: None,
            messages: vec![item(Some("01A"), None)],
        };
        let err = map_items(2, response).unwrap_err();
        assert_eq!(err.outcome(), Outcome::Ambiguous);
    }
}
