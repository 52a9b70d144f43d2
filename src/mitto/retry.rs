//! The one retry policy for calls to Mitto and for the simulator's webhook deliveries:
//! jittered exponential backoff that never waits less than a server's `Retry-After`.

use std::time::{Duration, SystemTime};

use backon::ExponentialBuilder;

/// A server may ask for a long pause; past this we give up instead of holding a batch hostage.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(120);

#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub min_delay: Duration,
    pub max_delay: Duration,
    pub max_retries: usize,
}

impl RetryPolicy {
    pub fn backoff(&self) -> ExponentialBuilder {
        ExponentialBuilder::default()
            .with_jitter()
            .with_min_delay(self.min_delay)
            .with_max_delay(self.max_delay)
            .with_max_times(self.max_retries)
    }
}

/// The pause before the next attempt: the backoff's, stretched to the server's `Retry-After`.
/// `None` (retries exhausted, or a `Retry-After` beyond [`MAX_RETRY_AFTER`]) stops retrying.
pub fn next_delay(backoff: Option<Duration>, retry_after: Option<Duration>) -> Option<Duration> {
    match (backoff, retry_after) {
        (None, _) => None,
        (Some(_), Some(asked)) if asked > MAX_RETRY_AFTER => None,
        (Some(d), Some(asked)) => Some(d.max(asked)),
        (Some(d), None) => Some(d),
    }
}

/// Parses `Retry-After` in either form: delay-seconds, or an HTTP-date.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_reads_seconds_and_http_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_445_412_480);
        assert_eq!(parse_retry_after("1", now), Some(Duration::from_secs(1)));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:10 GMT", now),
            Some(Duration::from_secs(10))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:27:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("later", now), None);
    }

    #[test]
    fn retry_after_stretches_the_backoff_but_never_shortens_it() {
        let ms = Duration::from_millis;
        assert_eq!(next_delay(Some(ms(200)), Some(ms(1000))), Some(ms(1000)));
        assert_eq!(next_delay(Some(ms(3000)), Some(ms(1000))), Some(ms(3000)));
        assert_eq!(next_delay(Some(ms(200)), None), Some(ms(200)));
        assert_eq!(
            next_delay(None, Some(ms(1000))),
            None,
            "exhausted stays exhausted"
        );
        assert_eq!(
            next_delay(Some(ms(200)), Some(Duration::from_secs(3600))),
            None
        );
    }
}
