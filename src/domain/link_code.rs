//! The code in a recipient's offer and unsubscribe links.
//!
//! A code is the recipient's id followed by 96 secret bits from a CSPRNG, in URL-safe base64
//! (27 characters, one length for every link). The id makes codes unique by construction — no
//! two recipients can share one, and finding a recipient needs only its primary key; the secret
//! (stored with the recipient, compared in constant time) makes them impossible to guess.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rand::RngCore;
use subtle::ConstantTimeEq;

use super::RecipientId;

/// Secret bytes per code: 96 bits.
pub const SECRET_LEN: usize = 12;

/// Characters of a code: base64 of 8 id bytes and the secret.
pub const LINK_CODE_LEN: usize = 27;

/// A recipient's link code.
#[derive(Clone, PartialEq, Eq)]
pub struct LinkCode {
    pub recipient: RecipientId,
    secret: [u8; SECRET_LEN],
}

impl std::fmt::Debug for LinkCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // the secret is what makes a link private: never in logs
        write!(f, "LinkCode({}, …)", self.recipient)
    }
}

impl LinkCode {
    pub fn new(recipient: RecipientId, secret: [u8; SECRET_LEN]) -> Self {
        Self { recipient, secret }
    }

    /// Reads a code from a link; `None` for anything that is not one (wrong length, alphabet,
    /// or id). Whether it belongs to a recipient is [`LinkCode::matches`]'s question.
    pub fn parse(raw: &str) -> Option<Self> {
        if raw.len() != LINK_CODE_LEN {
            return None;
        }
        let bytes = URL_SAFE_NO_PAD.decode(raw).ok()?;
        let (id, secret) = bytes.split_at(8);
        let id = i64::from_be_bytes(id.try_into().ok()?);
        Some(Self {
            recipient: RecipientId::new(id).ok()?,
            secret: secret.try_into().ok()?,
        })
    }

    /// Whether the stored secret is this code's, in constant time.
    pub fn matches(&self, stored: &[u8]) -> bool {
        stored.len() == SECRET_LEN && bool::from(self.secret.ct_eq(stored))
    }

    pub fn secret(&self) -> &[u8; SECRET_LEN] {
        &self.secret
    }
}

impl std::fmt::Display for LinkCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut bytes = [0u8; 8 + SECRET_LEN];
        bytes[..8].copy_from_slice(&self.recipient.get().to_be_bytes());
        bytes[8..].copy_from_slice(&self.secret);
        f.write_str(&URL_SAFE_NO_PAD.encode(bytes))
    }
}

/// `n` secrets back to back, from the thread's CSPRNG (ChaCha, seeded by the OS).
pub fn secrets(n: usize) -> Vec<u8> {
    let mut bytes = vec![0u8; n * SECRET_LEN];
    rand::rng().fill_bytes(&mut bytes);
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_with_one_length_and_a_url_safe_alphabet() {
        for id in [1i64, 42, 9_007_199_254_740_993, i64::MAX] {
            let secret: [u8; SECRET_LEN] = secrets(1).try_into().unwrap();
            let code = LinkCode::new(RecipientId::new(id).unwrap(), secret);
            let text = code.to_string();
            assert_eq!(text.len(), LINK_CODE_LEN);
            assert!(text
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
            assert_eq!(LinkCode::parse(&text), Some(code.clone()));
            assert!(code.matches(&secret));
            assert!(!code.matches(&[0u8; SECRET_LEN]));
            assert!(!code.matches(&secret[..11]));
        }
    }

    #[test]
    fn anything_else_is_not_a_code() {
        for raw in [
            "",
            "short",
            &"A".repeat(26),
            &"A".repeat(28),
            "!!!!!!!!!!!!!!!!!!!!!!!!!!!",
        ] {
            assert_eq!(LinkCode::parse(raw), None, "{raw:?}");
        }
        // id 0 is no recipient
        let zero = URL_SAFE_NO_PAD.encode([0u8; 20]);
        assert_eq!(LinkCode::parse(&zero), None);
    }

    /// A million codes as enqueue makes them (ids in sequence, one block of CSPRNG output
    /// sliced per recipient): no two codes and no two secrets alike, every secret 96 bits, and
    /// each code reads back to its own recipient and secret.
    #[test]
    fn a_million_codes_never_collide_and_each_carries_96_secret_bits() {
        const N: usize = 1_000_000;
        let bytes = secrets(N);
        assert_eq!(SECRET_LEN * 8, 96);
        let mut seen_secrets = std::collections::HashSet::with_capacity(N);
        let mut seen_codes = std::collections::HashSet::with_capacity(N);
        for (i, s) in bytes.chunks(SECRET_LEN).enumerate() {
            assert!(seen_secrets.insert(s), "a secret repeated");
            let secret: [u8; SECRET_LEN] = s.try_into().unwrap();
            let recipient = RecipientId::new(1_000_000_000 + i as i64).unwrap();
            let code = LinkCode::new(recipient, secret).to_string();
            assert_eq!(code.len(), LINK_CODE_LEN);
            if i % 1000 == 0 {
                let back = LinkCode::parse(&code).unwrap();
                assert_eq!(back.recipient, recipient);
                assert!(back.matches(&secret));
            }
            assert!(seen_codes.insert(code), "a code repeated");
        }
    }
}
