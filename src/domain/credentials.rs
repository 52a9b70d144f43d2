//! Dashboard sign-in credentials: an e-mail address as the account name and a password kept
//! only as an argon2id hash (PHC string, with its own random salt and parameters).

use std::fmt;

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;

/// Why a credential was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialError {
    #[error("{0:?} is not an e-mail address")]
    Email(String),
    #[error("a password must be {MIN_PASSWORD_CHARS} to {MAX_PASSWORD_CHARS} characters")]
    PasswordLength,
    #[error("hashing the password failed: {0}")]
    Hashing(String),
}

/// Shortest password accepted: long enough to make guessing slow even without the lockout.
pub const MIN_PASSWORD_CHARS: usize = 10;
/// Longest: argon2 hashes any length, but a cap keeps one request from costing much.
pub const MAX_PASSWORD_CHARS: usize = 256;

/// An e-mail address, trimmed and lower-cased: the same person's account whatever the case
/// they type it in. Loosely checked (something@something.tld); it is an account name, not a
/// mailbox campaignd writes to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Email(String);

impl Email {
    pub fn parse(raw: &str) -> Result<Self, CredentialError> {
        let email = raw.trim().to_lowercase();
        let refused = || CredentialError::Email(raw.to_owned());
        let (local, domain) = email.split_once('@').ok_or_else(refused)?;
        let valid = (3..=254).contains(&email.len())
            && email.matches('@').count() == 1
            && !local.is_empty()
            && domain.contains('.')
            && !domain.starts_with('.')
            && !domain.ends_with('.')
            && email.chars().all(|c| !c.is_whitespace() && !c.is_control());
        if valid {
            Ok(Self(email))
        } else {
            Err(refused())
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A password's argon2id hash as stored; the password itself is never kept.
#[derive(Clone, PartialEq, Eq)]
pub struct PasswordDigest(String);

impl PasswordDigest {
    /// Hashes a new password with a fresh random salt (argon2id, the crate's default cost).
    pub fn of(password: &str) -> Result<Self, CredentialError> {
        let chars = password.chars().count();
        if !(MIN_PASSWORD_CHARS..=MAX_PASSWORD_CHARS).contains(&chars) {
            return Err(CredentialError::PasswordLength);
        }
        let salt = SaltString::generate(&mut OsRng);
        let hash = Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map_err(|e| CredentialError::Hashing(e.to_string()))?;
        Ok(Self(hash.to_string()))
    }

    /// A digest read back from storage.
    pub fn stored(phc: String) -> Self {
        Self(phc)
    }

    /// Whether `password` is the one hashed (constant time in the password, by argon2). A
    /// stored value that is not a PHC string matches nothing.
    pub fn verify(&self, password: &str) -> bool {
        let Ok(hash) = PasswordHash::new(&self.0) else {
            return false;
        };
        password.chars().count() <= MAX_PASSWORD_CHARS
            && Argon2::default()
                .verify_password(password.as_bytes(), &hash)
                .is_ok()
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for PasswordDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PasswordDigest(…)")
    }
}

/// A dashboard session's cookie value: 32 random bytes, URL-safe. Only its SHA-256 is stored,
/// so a database dump holds no usable session; `Debug` never prints it.
#[derive(Clone)]
pub struct SessionToken(String);

impl SessionToken {
    pub fn generate() -> Self {
        Self(random_text())
    }

    /// A value presented by a browser; a wrong one simply matches no stored digest.
    pub fn presented(raw: &str) -> Self {
        Self(raw.to_owned())
    }

    pub fn sha256(&self) -> [u8; 32] {
        use sha2::Digest;
        sha2::Sha256::digest(self.0.as_bytes()).into()
    }

    /// The cookie value, for the response that sets it.
    pub fn reveal(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SessionToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SessionToken(…)")
    }
}

/// 32 bytes from the OS-seeded generator as URL-safe text (session and form tokens).
pub fn random_text() -> String {
    use base64::Engine;
    use rand::RngCore;
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Whether two secrets are equal, in time independent of where they differ.
pub fn same_secret(a: &str, b: &str) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// When repeated wrong passwords lock an account, and for how long.
#[derive(Debug, Clone, Copy)]
pub struct Lockout {
    /// Wrong passwords in a row that lock the account.
    pub after: u32,
    pub first: std::time::Duration,
    pub longest: std::time::Duration,
}

impl Lockout {
    /// The lock that `failures` wrong passwords in a row earn: none below the threshold, then
    /// the first length, doubling with each further failure up to the longest.
    pub fn lock_for(&self, failures: u32) -> Option<std::time::Duration> {
        let over = failures.checked_sub(self.after)?;
        let factor = 1u32.checked_shl(over.min(31)).unwrap_or(u32::MAX);
        Some(self.first.saturating_mul(factor).min(self.longest))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lock_starts_at_the_threshold_and_doubles_up_to_the_longest() {
        let policy = Lockout {
            after: 5,
            first: std::time::Duration::from_secs(30),
            longest: std::time::Duration::from_secs(900),
        };
        let secs = |n| policy.lock_for(n).map(|d| d.as_secs());
        assert_eq!(secs(4), None);
        assert_eq!(secs(5), Some(30));
        assert_eq!(secs(6), Some(60));
        assert_eq!(secs(9), Some(480));
        assert_eq!(secs(10), Some(900));
        assert_eq!(secs(u32::MAX), Some(900));
    }

    #[test]
    fn session_tokens_are_random_and_never_printed() {
        let a = SessionToken::generate();
        assert_ne!(a.reveal(), SessionToken::generate().reveal());
        assert_eq!(a.sha256(), SessionToken::presented(a.reveal()).sha256());
        assert!(!format!("{a:?}").contains(a.reveal()));
        assert!(same_secret(a.reveal(), a.reveal()));
        assert!(!same_secret(a.reveal(), "x"));
    }

    #[test]
    fn an_address_is_trimmed_and_lower_cased_and_a_malformed_one_refused() {
        let email = Email::parse("  Ann.Lee@Shop.EXAMPLE ").unwrap();
        assert_eq!(email.as_str(), "ann.lee@shop.example");
        for bad in [
            "",
            "ann",
            "ann@",
            "@shop.example",
            "ann@shop",
            "ann@@shop.example",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad:?}");
        }
        assert!(Email::parse("ann lee@shop.example").is_err(), "a space");
        assert!(Email::parse("ann@.example").is_err());
    }

    #[test]
    fn a_password_verifies_against_its_digest_only() {
        let digest = PasswordDigest::of("correct horse battery").unwrap();
        assert!(
            digest.as_str().starts_with("$argon2id$"),
            "{}",
            digest.as_str()
        );
        assert!(digest.verify("correct horse battery"));
        assert!(!digest.verify("correct horse battery "));
        assert!(!digest.verify(""));
        let again = PasswordDigest::of("correct horse battery").unwrap();
        assert_ne!(digest, again, "each hash has its own salt");
        assert!(!PasswordDigest::stored("not a hash".into()).verify("anything at all"));
        assert_eq!(format!("{digest:?}"), "PasswordDigest(…)");
    }

    #[test]
    fn passwords_outside_the_length_limits_are_refused() {
        assert_eq!(
            PasswordDigest::of("short"),
            Err(CredentialError::PasswordLength)
        );
        let long = "x".repeat(MAX_PASSWORD_CHARS + 1);
        assert_eq!(
            PasswordDigest::of(&long),
            Err(CredentialError::PasswordLength)
        );
        assert!(
            PasswordDigest::of("ελληνικά-κλειδιά").is_ok(),
            "counted in characters"
        );
    }
}
