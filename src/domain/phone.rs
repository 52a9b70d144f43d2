//! E.164 phone numbers.

use std::fmt;

/// Why a phone number was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PhoneError {
    #[error("phone number is empty")]
    Empty,
    #[error("phone number {0:?} contains {1:?}, which is not a digit or a separator")]
    InvalidCharacter(String, char),
    #[error("phone number {0:?} has no country code (start it with + or 00)")]
    MissingCountryCode(String),
    #[error("phone number {0:?} has {1} digits; E.164 allows 8 to 15")]
    BadLength(String, usize),
    #[error("phone number {0:?} starts its country code with 0")]
    LeadingZero(String),
}

/// A phone number in E.164 form: `+` followed by 8 to 15 digits, the first not 0.
///
/// The only constructor is [`PhoneE164::parse`], which normalises common human spellings
/// (spaces, dashes, dots, parentheses, a `00` international prefix), so two spellings of one
/// number always compare equal — recipient de-duplication relies on that.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(transparent)]
pub struct PhoneE164(String);

/// Shortest national significant number plus country code that we accept. E.164 sets only the
/// maximum (15); 8 keeps obviously truncated numbers out without refusing small countries.
const MIN_DIGITS: usize = 8;
const MAX_DIGITS: usize = 15;

impl PhoneE164 {
    /// Parses and normalises a number written in international form.
    pub fn parse(input: &str) -> Result<Self, PhoneError> {
        let trimmed = input.trim();
        if trimmed.is_empty() {
            return Err(PhoneError::Empty);
        }
        let (international, rest) = split_prefix(trimmed);
        let digits = collect_digits(trimmed, rest)?;
        if !international {
            return Err(PhoneError::MissingCountryCode(trimmed.to_owned()));
        }
        if !(MIN_DIGITS..=MAX_DIGITS).contains(&digits.len()) {
            return Err(PhoneError::BadLength(trimmed.to_owned(), digits.len()));
        }
        if digits.starts_with('0') {
            return Err(PhoneError::LeadingZero(trimmed.to_owned()));
        }
        Ok(Self(format!("+{digits}")))
    }

    /// A provider's report of a number: as [`PhoneE164::parse`], and also bare international
    /// digits without `+` (`306984303406`), the usual MSISDN form in inbound messages.
    pub fn parse_msisdn(input: &str) -> Result<Self, PhoneError> {
        let trimmed = input.trim();
        match Self::parse(trimmed) {
            Err(PhoneError::MissingCountryCode(_))
                if trimmed.bytes().all(|b| b.is_ascii_digit()) && !trimmed.starts_with('0') =>
            {
                Self::parse(&format!("+{trimmed}"))
            }
            other => other,
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Splits off `+` or `00`; reports whether the number was written in international form.
fn split_prefix(s: &str) -> (bool, &str) {
    if let Some(rest) = s.strip_prefix('+') {
        (true, rest)
    } else if let Some(rest) = s.strip_prefix("00") {
        (true, rest)
    } else {
        (false, s)
    }
}

fn collect_digits(original: &str, rest: &str) -> Result<String, PhoneError> {
    let mut digits = String::with_capacity(rest.len());
    for c in rest.chars() {
        match c {
            '0'..='9' => digits.push(c),
            ' ' | '-' | '.' | '(' | ')' | '\u{a0}' => {}
            other => return Err(PhoneError::InvalidCharacter(original.to_owned(), other)),
        }
    }
    Ok(digits)
}

impl fmt::Display for PhoneE164 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for PhoneE164 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PhoneE164({})", self.0)
    }
}

impl std::str::FromStr for PhoneE164 {
    type Err = PhoneError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl<'de> serde::Deserialize<'de> for PhoneE164 {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        Self::parse(&raw).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn inbound_msisdns_without_a_plus_are_international() {
        assert_eq!(
            PhoneE164::parse_msisdn("306984303406").unwrap().as_str(),
            "+306984303406"
        );
        assert_eq!(
            PhoneE164::parse_msisdn("+30 698 430 3406")
                .unwrap()
                .as_str(),
            "+306984303406"
        );
        assert!(
            PhoneE164::parse_msisdn("06984303406").is_err(),
            "national form"
        );
        assert!(PhoneE164::parse_msisdn("12345").is_err(), "a short code");
    }

    use super::*;

    #[test]
    fn human_spellings_normalise_to_one_number() {
        for s in [
            "+30 698 430 3406",
            "0030-698-430-3406",
            "+30 (698) 430.3406",
            " +306984303406 ",
        ] {
            assert_eq!(
                PhoneE164::parse(s).unwrap().as_str(),
                "+306984303406",
                "{s}"
            );
        }
    }

    #[test]
    fn bad_numbers_say_what_is_wrong() {
        assert_eq!(PhoneE164::parse("  "), Err(PhoneError::Empty));
        assert!(matches!(
            PhoneE164::parse("6984303406"),
            Err(PhoneError::MissingCountryCode(_))
        ));
        assert!(matches!(
            PhoneE164::parse("+30 698x"),
            Err(PhoneError::InvalidCharacter(_, 'x'))
        ));
        assert!(matches!(
            PhoneE164::parse("+3069"),
            Err(PhoneError::BadLength(_, 4))
        ));
        assert!(matches!(
            PhoneE164::parse("+1234567890123456"),
            Err(PhoneError::BadLength(_, 16))
        ));
        assert!(matches!(
            PhoneE164::parse("+0306984303406"),
            Err(PhoneError::LeadingZero(_))
        ));
    }

    #[test]
    fn deserialising_goes_through_parse() {
        let p: PhoneE164 = serde_json::from_str("\"0044 20 7946 0958\"").unwrap();
        assert_eq!(p.as_str(), "+442079460958");
        assert!(serde_json::from_str::<PhoneE164>("\"12\"").is_err());
    }
}
