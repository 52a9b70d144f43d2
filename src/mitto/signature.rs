//! Webhook authentication for delivery reports (mitto-api.md, "Delivery report webhook").
//!
//! `X-Webhook-Signature` carries the hex HMAC-SHA256 of the raw body, or, when
//! `X-Webhook-Timestamp` is present, of `"{timestamp}.{body}"`; stale timestamps are refused.
//! A static token header is the fallback for senders that cannot sign. Several secrets may be
//! active at once (rotation). Comparisons are constant-time.

use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;
use subtle::ConstantTimeEq;

pub const SIGNATURE_HEADER: &str = "X-Webhook-Signature";
pub const TIMESTAMP_HEADER: &str = "X-Webhook-Timestamp";

type HmacSha256 = Hmac<Sha256>;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("no signature or token was presented")]
    Missing,
    #[error("no webhook secret or token is configured; refusing every request")]
    NotConfigured,
    #[error("the signature is not valid hex")]
    Malformed,
    #[error("the timestamp is not a unix time in seconds")]
    BadTimestamp,
    #[error("the timestamp is {age_secs} s away from now; at most {tolerance_secs} s is accepted")]
    Stale { age_secs: i64, tolerance_secs: u64 },
    #[error("the signature does not match")]
    Mismatch,
    #[error("the token does not match")]
    BadToken,
}

/// What a request presented: header values as received.
#[derive(Debug, Default, Clone, Copy)]
pub struct Presented<'a> {
    pub signature: Option<&'a str>,
    pub timestamp: Option<&'a str>,
    pub token: Option<&'a str>,
}

/// The verifier's configuration.
#[derive(Debug, Clone)]
pub struct Verifier {
    pub secrets: Vec<SecretString>,
    pub tokens: Vec<SecretString>,
    pub tolerance_secs: u64,
}

/// Signs a body as the webhook expects; `timestamp` switches to the timestamped form.
pub fn sign(secret: &str, timestamp: Option<i64>, body: &[u8]) -> String {
    hex::encode(
        mac(secret, timestamp.map(|t| t.to_string()).as_deref(), body)
            .finalize()
            .into_bytes(),
    )
}

fn mac(secret: &str, timestamp: Option<&str>, body: &[u8]) -> HmacSha256 {
    let mut mac =
        HmacSha256::new_from_slice(secret.as_bytes()).expect("HMAC accepts any key length");
    if let Some(ts) = timestamp {
        mac.update(ts.as_bytes());
        mac.update(b".");
    }
    mac.update(body);
    mac
}

impl Verifier {
    /// Accepts the request when its signature matches any active secret (with a fresh
    /// timestamp when one is given), or when no signature is sent and its token matches.
    pub fn verify(
        &self,
        presented: Presented<'_>,
        body: &[u8],
        now_unix: i64,
    ) -> Result<(), SignatureError> {
        if self.secrets.is_empty() && self.tokens.is_empty() {
            return Err(SignatureError::NotConfigured);
        }
        match (presented.signature, presented.token) {
            (Some(signature), _) => {
                self.verify_signature(signature, presented.timestamp, body, now_unix)
            }
            (None, Some(token)) => self.verify_token(token),
            (None, None) => Err(SignatureError::Missing),
        }
    }

    fn verify_signature(
        &self,
        signature: &str,
        timestamp: Option<&str>,
        body: &[u8],
        now_unix: i64,
    ) -> Result<(), SignatureError> {
        let expected = hex::decode(signature.trim()).map_err(|_| SignatureError::Malformed)?;
        if let Some(ts) = timestamp {
            self.check_fresh(ts, now_unix)?;
        }
        let matches = self.secrets.iter().any(|secret| {
            mac(secret.expose_secret(), timestamp.map(str::trim), body)
                .verify_slice(&expected)
                .is_ok()
        });
        matches.then_some(()).ok_or(SignatureError::Mismatch)
    }

    fn check_fresh(&self, ts: &str, now_unix: i64) -> Result<(), SignatureError> {
        let ts: i64 = ts
            .trim()
            .parse()
            .map_err(|_| SignatureError::BadTimestamp)?;
        let age_secs = now_unix.saturating_sub(ts);
        if age_secs.unsigned_abs() > self.tolerance_secs {
            return Err(SignatureError::Stale {
                age_secs,
                tolerance_secs: self.tolerance_secs,
            });
        }
        Ok(())
    }

    fn verify_token(&self, token: &str) -> Result<(), SignatureError> {
        let matches = self
            .tokens
            .iter()
            .any(|t| bool::from(t.expose_secret().as_bytes().ct_eq(token.as_bytes())));
        matches.then_some(()).ok_or(SignatureError::BadToken)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verifier() -> Verifier {
        Verifier {
            secrets: vec!["old-secret".into(), "new-secret".into()],
            tokens: vec!["static-token".into()],
            tolerance_secs: 300,
        }
    }

    fn signed(sig: &str) -> Presented<'_> {
        Presented {
            signature: Some(sig),
            ..Default::default()
        }
    }

    #[test]
    fn a_body_signed_with_any_active_secret_passes() {
        let body = br#"{"messageId":"x"}"#;
        for secret in ["old-secret", "new-secret"] {
            let sig = sign(secret, None, body);
            assert_eq!(verifier().verify(signed(&sig), body, 0), Ok(()));
        }
        let sig = sign("retired-secret", None, body);
        assert_eq!(
            verifier().verify(signed(&sig), body, 0),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn a_changed_body_fails() {
        let sig = sign("new-secret", None, b"original");
        assert_eq!(
            verifier().verify(signed(&sig), b"tampered", 0),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verifier().verify(signed("zz"), b"x", 0),
            Err(SignatureError::Malformed)
        );
    }

    #[test]
    fn timestamped_signatures_cover_the_timestamp_and_expire() {
        let body = b"[]";
        let sig = sign("new-secret", Some(1_000), body);
        let at = |ts: &'static str| Presented {
            signature: Some(&sig),
            timestamp: Some(ts),
            token: None,
        };
        let v = verifier();
        assert_eq!(v.verify(at("1000"), body, 1_100), Ok(()));
        assert_eq!(
            v.verify(at("1001"), body, 1_100),
            Err(SignatureError::Mismatch)
        );
        assert!(matches!(
            v.verify(at("1000"), body, 1_301),
            Err(SignatureError::Stale { .. })
        ));
        assert!(matches!(
            v.verify(at("1000"), body, 699),
            Err(SignatureError::Stale { .. })
        ));
        assert_eq!(
            v.verify(at("soon"), body, 1_000),
            Err(SignatureError::BadTimestamp)
        );
    }

    #[test]
    fn the_static_token_is_a_fallback() {
        let v = verifier();
        let token = |t| Presented {
            token: Some(t),
            ..Default::default()
        };
        assert_eq!(v.verify(token("static-token"), b"", 0), Ok(()));
        assert_eq!(
            v.verify(token("guess"), b"", 0),
            Err(SignatureError::BadToken)
        );
        assert_eq!(
            v.verify(Presented::default(), b"", 0),
            Err(SignatureError::Missing)
        );
    }

    #[test]
    fn with_nothing_configured_every_request_is_refused() {
        let v = Verifier {
            secrets: vec![],
            tokens: vec![],
            tolerance_secs: 300,
        };
        let sig = sign("", None, b"x");
        assert_eq!(
            v.verify(signed(&sig), b"x", 0),
            Err(SignatureError::NotConfigured)
        );
    }
}
