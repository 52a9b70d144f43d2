//! SMS segment counting: how many billable parts a text becomes on the air.
//!
//! GSM-7 carries 160 septets in one SMS, or 153 per part when concatenated (the rest is the
//! concatenation header). Characters of the GSM-7 extension table take two septets (escape +
//! character). Any character outside GSM-7 switches the whole text to UCS-2: 70 UTF-16 units
//! in one SMS, 67 per part; characters beyond the BMP (most emoji) take two units.
//! A two-unit character is never split across parts — handsets and SMSCs refuse to — so
//! parts are counted by packing, which matches `ceil(len/153)` / `ceil(len/67)` whenever no
//! such character straddles a part boundary, and is one more part when one does.

/// Which alphabet a text is sent in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum Encoding {
    #[serde(rename = "GSM-7")]
    Gsm7,
    #[serde(rename = "UCS-2")]
    Ucs2,
}

/// The on-air size of one text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Segments {
    pub encoding: Encoding,
    /// Septets (GSM-7) or UTF-16 code units (UCS-2).
    pub units: usize,
    /// Billable SMS parts; an empty text is still one SMS.
    pub parts: u32,
}

const GSM7_BASIC: &str = "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?\
¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà";
const GSM7_EXTENSION: &str = "\u{0C}^{}\\[~]|€";

/// Septets a character takes in GSM-7, or `None` if GSM-7 cannot carry it.
fn gsm7_cost(c: char) -> Option<usize> {
    if GSM7_BASIC.contains(c) {
        Some(1)
    } else if GSM7_EXTENSION.contains(c) {
        Some(2)
    } else {
        None
    }
}

/// A text longer than a campaign may send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the text is {parts} SMS parts; at most {max} are allowed")]
pub struct TooLong {
    pub parts: u32,
    pub max: u32,
}

impl Segments {
    /// The parts of `text` as stored per recipient, refused above `max` (at most
    /// `i16::MAX`, the column's range, whatever `max` says).
    pub fn bounded(text: &str, max: u32) -> Result<i16, TooLong> {
        let parts = Self::count(text).parts;
        let max = max.min(i16::MAX as u32);
        if parts > max {
            return Err(TooLong { parts, max });
        }
        Ok(parts as i16)
    }

    pub fn count(text: &str) -> Self {
        let gsm: Option<Vec<usize>> = text.chars().map(gsm7_cost).collect();
        match gsm {
            Some(costs) => Self::pack(Encoding::Gsm7, &costs, 160, 153),
            None => {
                let costs: Vec<usize> = text.chars().map(char::len_utf16).collect();
                Self::pack(Encoding::Ucs2, &costs, 70, 67)
            }
        }
    }

    /// The characters (each once, in order of appearance) that GSM-7 cannot carry: those that
    /// make a text UCS-2.
    pub fn ucs2_characters(text: &str) -> Vec<char> {
        let mut found = Vec::new();
        for c in text.chars().filter(|c| gsm7_cost(*c).is_none()) {
            if !found.contains(&c) {
                found.push(c);
            }
        }
        found
    }

    fn pack(encoding: Encoding, costs: &[usize], single: usize, per_part: usize) -> Self {
        let units: usize = costs.iter().sum();
        let parts = if units <= single {
            1
        } else {
            let mut parts = 1;
            let mut used = 0;
            for &cost in costs {
                if used + cost > per_part {
                    parts += 1;
                    used = 0;
                }
                used += cost;
            }
            parts
        };
        Self {
            encoding,
            units,
            parts,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parts(text: &str) -> u32 {
        Segments::count(text).parts
    }

    #[test]
    fn the_characters_that_force_ucs2_are_named_once_each() {
        assert_eq!(Segments::ucs2_characters("Hi {€} [ok]"), Vec::<char>::new());
        assert_eq!(
            Segments::ucs2_characters("Γειά σου 😀 σου"),
            vec!['ε', 'ι', 'ά', 'σ', 'ο', 'υ', '😀']
        );
    }

    #[test]
    fn gsm7_boundaries_are_160_and_153() {
        assert_eq!(parts(""), 1);
        assert_eq!(parts(&"a".repeat(160)), 1);
        assert_eq!(parts(&"a".repeat(161)), 2);
        assert_eq!(parts(&"a".repeat(306)), 2);
        assert_eq!(parts(&"a".repeat(307)), 3);
        assert_eq!(Segments::count("Hi, test msg.").encoding, Encoding::Gsm7);
    }

    #[test]
    fn extension_characters_count_double() {
        let s = Segments::count("€{}");
        assert_eq!((s.encoding, s.units), (Encoding::Gsm7, 6));
        assert_eq!(parts(&"€".repeat(80)), 1); // 160 septets
        assert_eq!(parts(&format!("{}a", "€".repeat(80))), 2); // 161 septets
    }

    #[test]
    fn an_escaped_character_is_not_split_across_parts() {
        // 152 plain septets then '€': the escape pair cannot straddle, so '€' opens part 2,
        // and 153 more plain septets spill into a third part.
        let text = format!("{}€{}", "a".repeat(152), "a".repeat(153));
        assert_eq!(Segments::count(&text).units, 307);
        assert_eq!(parts(&text), 3);
    }

    #[test]
    fn greek_capitals_in_gsm7_stay_gsm7_but_lowercase_greek_is_ucs2() {
        assert_eq!(Segments::count("ΔΦΓΛΩ").encoding, Encoding::Gsm7);
        assert_eq!(Segments::count("Καλημέρα").encoding, Encoding::Ucs2);
    }

    #[test]
    fn ucs2_boundaries_are_70_and_67() {
        assert_eq!(parts(&"ж".repeat(70)), 1);
        assert_eq!(parts(&"ж".repeat(71)), 2);
        assert_eq!(parts(&"ж".repeat(134)), 2);
        assert_eq!(parts(&"ж".repeat(135)), 3);
    }

    #[test]
    fn emoji_force_ucs2_and_take_two_units() {
        let s = Segments::count("Sale 🎉");
        assert_eq!((s.encoding, s.units, s.parts), (Encoding::Ucs2, 7, 1));
        assert_eq!(parts(&"🎉".repeat(35)), 1); // 70 units
        assert_eq!(parts(&format!("{}a", "🎉".repeat(35))), 2); // 71 units
    }

    proptest! {
        /// Any text, however long or exotic, is either within the bound or refused; never a
        /// panic and never a count outside `1..=max`.
        #[test]
        fn bounded_counts_stay_within_the_bound_or_refuse(
            text in "\\PC{0,3000}",
            max in 1u32..40,
        ) {
            match Segments::bounded(&text, max) {
                Ok(parts) => prop_assert!((1..=max as i16).contains(&parts)),
                Err(e) => prop_assert!(e.parts > max && e.parts == Segments::count(&text).parts),
            }
        }

        #[test]
        fn plain_gsm7_parts_follow_the_formula(len in 0usize..2000) {
            let expected = if len <= 160 { 1 } else { len.div_ceil(153) as u32 };
            prop_assert_eq!(parts(&"x".repeat(len)), expected);
        }

        #[test]
        fn plain_ucs2_parts_follow_the_formula(len in 1usize..1000) {
            let expected = if len <= 70 { 1 } else { len.div_ceil(67) as u32 };
            prop_assert_eq!(parts(&"ж".repeat(len)), expected);
        }

        #[test]
        fn parts_always_hold_every_unit(text in "\\PC{0,400}") {
            let s = Segments::count(&text);
            let (single, per_part) = match s.encoding {
                Encoding::Gsm7 => (160, 153),
                Encoding::Ucs2 => (70, 67),
            };
            if s.units <= single {
                prop_assert_eq!(s.parts, 1);
            } else {
                // packing never needs fewer parts than the formula, and loses at most one
                // unit per part to an unsplittable pair
                prop_assert!(s.parts as usize >= s.units.div_ceil(per_part));
                prop_assert!(s.parts as usize <= s.units.div_ceil(per_part - 1));
            }
        }

        #[test]
        fn appending_text_never_reduces_parts(a in "\\PC{0,200}", b in "\\PC{0,200}") {
            let joined = format!("{a}{b}");
            let more = Segments::count(&joined);
            let less = Segments::count(&a);
            if more.encoding == less.encoding {
                prop_assert!(more.parts >= less.parts);
            }
        }
    }
}
