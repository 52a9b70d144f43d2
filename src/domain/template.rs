//! Message templates: `{{firstName}}`, `{{lastName}}` and `{{attribute}}` placeholders,
//! rendered once per recipient at enqueue.

use std::collections::HashMap;

/// A parsed body. Literal text and placeholders alternate; an unknown placeholder renders as
/// an empty string (a contact without that attribute), never as the raw `{{…}}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Field(String),
}

/// What a placeholder can be filled from.
#[derive(Debug, Clone, Default)]
pub struct Fields<'a> {
    pub first_name: Option<&'a str>,
    pub last_name: Option<&'a str>,
    pub attributes: Option<&'a HashMap<String, serde_json::Value>>,
}

impl Template {
    pub fn parse(body: &str) -> Self {
        let mut parts = Vec::new();
        let mut rest = body;
        while let Some(start) = rest.find("{{") {
            let Some(len) = rest[start + 2..].find("}}") else {
                break;
            };
            let name = rest[start + 2..start + 2 + len].trim();
            if !rest[..start].is_empty() {
                parts.push(Part::Text(rest[..start].to_owned()));
            }
            parts.push(Part::Field(name.to_owned()));
            rest = &rest[start + 2 + len + 2..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_owned()));
        }
        Self { parts }
    }

    /// Whether every recipient gets the same text (link markers aside: they are filled in per
    /// recipient at send time, with links of one length).
    pub fn is_static(&self) -> bool {
        self.parts.iter().all(|p| match p {
            Part::Text(_) => true,
            Part::Field(name) => super::links::is_link_field(name),
        })
    }

    pub fn render(&self, fields: &Fields<'_>) -> String {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Text(t) => out.push_str(t),
                Part::Field(name) => out.push_str(&field(fields, name)),
            }
        }
        out
    }
}

fn field(fields: &Fields<'_>, name: &str) -> String {
    match name {
        link if super::links::is_link_field(link) => format!("{{{{{link}}}}}"),
        "firstName" | "first_name" => fields.first_name.unwrap_or_default().to_owned(),
        "lastName" | "last_name" => fields.last_name.unwrap_or_default().to_owned(),
        other => match fields.attributes.and_then(|a| a.get(other)) {
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(serde_json::Value::Null) | None => String::new(),
            Some(v) => v.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_markers_survive_rendering_and_leave_a_body_static() {
        let t = Template::parse("Sale {{ offerLink }} bye {{unsubscribeLink}}");
        assert!(t.is_static());
        assert_eq!(
            t.render(&Fields::default()),
            "Sale {{offerLink}} bye {{unsubscribeLink}}"
        );
    }

    #[test]
    fn placeholders_are_filled_and_unknown_ones_are_empty() {
        let t = Template::parse("Hi {{firstName}} {{ lastName }}, code {{code}}{{missing}}!");
        let attrs = HashMap::from([("code".to_owned(), serde_json::json!("X1"))]);
        let fields = Fields {
            first_name: Some("Ann"),
            last_name: None,
            attributes: Some(&attrs),
        };
        assert_eq!(t.render(&fields), "Hi Ann , code X1!");
        assert!(!t.is_static());
    }

    #[test]
    fn text_without_placeholders_is_static_and_unchanged() {
        let t = Template::parse("Sale {today} {{unclosed");
        assert!(t.is_static());
        assert_eq!(t.render(&Fields::default()), "Sale {today} {{unclosed");
    }

    mod rendered_lengths {
        use super::*;
        use crate::domain::{Segments, TooLong};
        use proptest::prelude::*;

        fn attribute() -> impl Strategy<Value = serde_json::Value> {
            prop_oneof![
                "\\PC{0,400}".prop_map(serde_json::Value::from),
                any::<i64>().prop_map(serde_json::Value::from),
                any::<bool>().prop_map(serde_json::Value::from),
                Just(serde_json::Value::Null),
                proptest::collection::vec("\\PC{0,40}", 0..4).prop_map(serde_json::Value::from),
            ]
        }

        proptest! {
            /// Any template filled from any attributes renders, and its length is either
            /// within the bound or refused with the real count — never a panic, never a
            /// count the segments column cannot hold.
            #[test]
            fn any_template_and_attributes_render_within_the_bound_or_are_refused(
                body in "(\\PC{0,60}(\\{\\{(firstName|lastName|a|b|c)\\}\\})?){0,8}",
                first in proptest::option::of("\\PC{0,80}"),
                attributes in proptest::collection::hash_map("a|b|c", attribute(), 0..3),
                max in 1u32..12,
            ) {
                let text = Template::parse(&body).render(&Fields {
                    first_name: first.as_deref(),
                    last_name: None,
                    attributes: Some(&attributes),
                });
                match Segments::bounded(&text, max) {
                    Ok(parts) => prop_assert!((1..=max as i16).contains(&parts)),
                    Err(TooLong { parts, max: limit }) => {
                        prop_assert!(parts > limit);
                        prop_assert_eq!(parts, Segments::count(&text).parts);
                    }
                }
            }
        }
    }
}
