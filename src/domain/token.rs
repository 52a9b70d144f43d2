//! API tokens handed to tenants.

use rand::RngCore;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};

/// A bearer token. Its `Debug` output is redacted; only its SHA-256 is ever stored, so a
/// database dump cannot be replayed as credentials.
#[derive(Debug, Clone)]
pub struct ApiToken(SecretString);

const PREFIX: &str = "cmpd_";

impl ApiToken {
    /// 32 random bytes from the OS-seeded generator, hex-encoded behind a recognisable prefix
    /// (so leaked tokens are easy to spot in logs and secret scanners).
    pub fn generate() -> Self {
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        Self(SecretString::from(format!(
            "{PREFIX}{}",
            hex::encode(bytes)
        )))
    }

    /// Wraps a token presented by a client; no format is enforced, a wrong one simply matches
    /// no stored digest.
    pub fn presented(raw: &str) -> Self {
        Self(SecretString::from(raw.to_owned()))
    }

    pub fn sha256(&self) -> [u8; 32] {
        Sha256::digest(self.0.expose_secret().as_bytes()).into()
    }

    /// The token text, for the one moment it is shown to its owner.
    pub fn reveal(&self) -> &str {
        self.0.expose_secret()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_tokens_are_distinct_and_hash_stably() {
        let a = ApiToken::generate();
        let b = ApiToken::generate();
        assert_ne!(a.reveal(), b.reveal());
        assert!(a.reveal().starts_with("cmpd_") && a.reveal().len() == 5 + 64);
        assert_eq!(a.sha256(), ApiToken::presented(a.reveal()).sha256());
        assert!(!format!("{a:?}").contains(a.reveal()));
    }
}
