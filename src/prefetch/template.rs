//! Prefetch templates (`Observation?patient={{context.patientId}}&code=...`): parsed and checked once,
//! when the rules load, and rendered into a relative FHIR URL for each request that needs a fetch.
//!
//! Tokens (CDS Hooks 2.0): `{{context.X}}` for a first-level primitive context field of the service's
//! hook, and `{{userPractitionerId}}`, `{{userPractitionerRoleId}}`, `{{userPatientId}}`,
//! `{{userRelatedPersonId}}`, the id part of `context.userId` when it names a resource of that type.
//! Every value is percent-encoded, so a value can never add a query parameter or a path segment.

use std::fmt;

use serde_json::{Map, Value};

use crate::cds_hooks::context as hook_context;

/// A token of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Token {
    /// `{{context.X}}`.
    Context(String),
    /// `{{userPractitionerId}}` and its siblings: the id of `context.userId` when its type is this one.
    User(&'static str),
}

/// The `{{user…Id}}` tokens and the resource type each one stands for.
const USER_TOKENS: [(&str, &str); 4] = [
    ("userPractitionerId", "Practitioner"),
    ("userPractitionerRoleId", "PractitionerRole"),
    ("userPatientId", "Patient"),
    ("userRelatedPersonId", "RelatedPerson"),
];

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Context(field) => write!(f, "{{{{context.{field}}}}}"),
            Self::User(resource_type) => {
                let name = USER_TOKENS
                    .iter()
                    .find(|(_, ty)| ty == resource_type)
                    .map_or("user", |(name, _)| name);
                write!(f, "{{{{{name}}}}}")
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    Token(Token),
}

/// A checked template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
}

/// Why a template was refused at load time. `offset` is the byte offset in the template of the token
/// (or the `{{`) that is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct TemplateError {
    pub offset: usize,
    pub message: String,
}

/// Why a template could not be rendered for one request: a token has no value in its context, or
/// its value is not what its place in the URL allows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    #[error("its template needs {token}, which this request's context does not give")]
    Missing { token: Token },
    /// In the path, a value must be a FHIR id (`[A-Za-z0-9\-.]{1,64}`, and not `.` or `..`), so it
    /// names one resource and cannot climb out of the resource type's path.
    #[error("the value of {token} in this request is not a valid FHIR id")]
    NotAnId { token: Token },
    /// In the query, a value must be a FHIR search value: non-empty, at most 1024 characters, no
    /// control characters, and not `.` or `..`.
    #[error("the value of {token} in this request is not a valid FHIR search value")]
    NotASearchValue { token: Token },
}

/// Longest value a token may put in a query.
const MAX_SEARCH_VALUE_CHARS: usize = 1024;

fn is_fhir_id(value: &str) -> bool {
    (1..=64).contains(&value.len())
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        && !is_dot_segment(value)
}

fn is_search_value(value: &str) -> bool {
    !value.is_empty()
        && value.chars().count() <= MAX_SEARCH_VALUE_CHARS
        && !value.chars().any(char::is_control)
        && !is_dot_segment(value)
}

/// `.` and `..`: path segments that resolve to the current or parent path.
fn is_dot_segment(value: &str) -> bool {
    matches!(value, "." | "..")
}

impl Template {
    /// Parses `source` and checks every token against the context of `hook`. A custom hook's context
    /// is unknown to Cardinal, so any first-level field name is accepted for it.
    pub fn parse(source: &str, hook: &str) -> Result<Self, TemplateError> {
        let mut parts = Vec::new();
        let mut rest = source;
        let mut offset = 0;
        while let Some((literal, after)) = rest.split_once("{{") {
            if !literal.is_empty() {
                parts.push(Part::Literal(literal.to_owned()));
            }
            let token_offset = offset + literal.len();
            let Some((name, next)) = after.split_once("}}") else {
                return Err(TemplateError {
                    offset: token_offset,
                    message: "`{{` is not closed by `}}`".into(),
                });
            };
            let token = parse_token(name.trim(), hook).map_err(|message| TemplateError {
                offset: token_offset,
                message,
            })?;
            parts.push(Part::Token(token));
            offset += rest.len() - next.len();
            rest = next;
        }
        if !rest.is_empty() {
            parts.push(Part::Literal(rest.to_owned()));
        }
        Ok(Self { parts })
    }

    /// The tokens, in order.
    pub fn tokens(&self) -> impl Iterator<Item = &Token> {
        self.parts.iter().filter_map(|p| match p {
            Part::Token(t) => Some(t),
            Part::Literal(_) => None,
        })
    }

    /// The relative FHIR URL for one request's context, every value percent-encoded.
    pub fn render(&self, context: &Map<String, Value>) -> Result<String, RenderError> {
        let mut out = String::new();
        let mut in_query = false;
        for part in &self.parts {
            match part {
                Part::Literal(text) => {
                    out.push_str(text);
                    in_query |= text.contains('?');
                }
                Part::Token(token) => {
                    let value =
                        token_value(token, context).ok_or_else(|| RenderError::Missing {
                            token: token.clone(),
                        })?;
                    if in_query && !is_search_value(&value) {
                        return Err(RenderError::NotASearchValue {
                            token: token.clone(),
                        });
                    }
                    if !in_query && !is_fhir_id(&value) {
                        return Err(RenderError::NotAnId {
                            token: token.clone(),
                        });
                    }
                    percent_encode_into(&value, &mut out);
                }
            }
        }
        Ok(out)
    }
}

fn parse_token(name: &str, hook: &str) -> Result<Token, String> {
    if let Some(field) = name.strip_prefix("context.") {
        let first_level =
            !field.is_empty() && field.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !first_level {
            return Err(format!(
                "token `{{{{{name}}}}}`: only first-level context fields can be used, as `{{{{context.patientId}}}}`"
            ));
        }
        return match hook_context::primitive_fields(hook) {
            Some(fields) if !fields.contains(&field) => Err(format!(
                "token `{{{{{name}}}}}`: `{field}` is not a primitive context field of hook `{hook}` (it has {})",
                fields.join(", ")
            )),
            _ => Ok(Token::Context(field.to_owned())),
        };
    }
    match USER_TOKENS.iter().find(|(token, _)| *token == name) {
        Some((_, resource_type)) => Ok(Token::User(resource_type)),
        None => Err(format!(
            "unknown token `{{{{{name}}}}}` (known: `{{{{context.FIELD}}}}`, {})",
            USER_TOKENS
                .iter()
                .map(|(t, _)| format!("`{{{{{t}}}}}`"))
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

fn token_value(token: &Token, context: &Map<String, Value>) -> Option<String> {
    match token {
        Token::Context(field) => match context.get(field)? {
            Value::String(s) if !s.is_empty() => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            _ => None,
        },
        Token::User(resource_type) => {
            let user = context.get("userId")?.as_str()?;
            let (ty, id) = user.split_once('/')?;
            (ty == *resource_type && !id.is_empty() && !id.contains('/')).then(|| id.to_owned())
        }
    }
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn percent_encode_into(value: &str, out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in value.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push('%');
            for nibble in [b >> 4, b & 0x0f] {
                out.push(char::from(
                    HEX.get(usize::from(nibble)).copied().unwrap_or(b'0'),
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn context(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            _ => panic!("context must be an object"),
        }
    }

    fn render(template: &str, hook: &str, ctx: Value) -> Result<String, RenderError> {
        Template::parse(template, hook)
            .unwrap_or_else(|e| panic!("{template}: {e}"))
            .render(&context(ctx))
    }

    #[test]
    fn renders_every_context_token_of_a_standard_hook() {
        let ctx = json!({"userId": "Practitioner/pr-1", "patientId": "p-1", "encounterId": "e-1"});
        assert_eq!(
            render(
                "Encounter?_id={{context.encounterId}}&patient={{context.patientId}}&author={{context.userId}}",
                "encounter-start",
                ctx
            ),
            Ok("Encounter?_id=e-1&patient=p-1&author=Practitioner%2Fpr-1".into())
        );
    }

    #[test]
    fn renders_each_user_token_from_the_type_of_user_id() {
        let cases = [
            ("userPractitionerId", "Practitioner/7"),
            ("userPractitionerRoleId", "PractitionerRole/7"),
            ("userPatientId", "Patient/7"),
            ("userRelatedPersonId", "RelatedPerson/7"),
        ];
        for (token, user) in cases {
            let template = format!("X?who={{{{{token}}}}}");
            let ctx = json!({"userId": user, "patientId": "p"});
            assert_eq!(
                render(&template, "patient-view", ctx),
                Ok("X?who=7".into()),
                "{token}"
            );
            // Any other type of user: the token has no value in this request.
            for (_, other) in cases.iter().filter(|(t, _)| *t != token) {
                let ctx = json!({"userId": other, "patientId": "p"});
                let err = render(&template, "patient-view", ctx).err();
                assert!(
                    err.is_some_and(|e| e.to_string().contains(token)),
                    "{token} with {other}"
                );
            }
        }
    }

    #[test]
    fn percent_encodes_values_but_not_the_template() {
        let ctx = json!({"userId": "Practitioner/1", "patientId": "a b&c=d/e?f#g|h,ü"});
        assert_eq!(
            render(
                "Observation?patient={{ context.patientId }}&code=http://loinc.org|1,2",
                "patient-view",
                ctx
            ),
            Ok("Observation?patient=a%20b%26c%3Dd%2Fe%3Ff%23g%7Ch%2C%C3%BC&code=http://loinc.org|1,2".into())
        );
        let ctx = json!({"userId": "Practitioner/1", "patientId": "Az09-.x"});
        assert_eq!(
            render("Patient/{{context.patientId}}", "patient-view", ctx),
            Ok("Patient/Az09-.x".into())
        );
    }

    #[test]
    fn path_values_must_be_fhir_ids_and_query_values_search_values() {
        for bad in ["..", ".", "a/b", "a b", "", "%2e%2e", &"x".repeat(65)] {
            let ctx = json!({"userId": "Practitioner/1", "patientId": bad});
            assert!(
                matches!(
                    render("Patient/{{context.patientId}}", "patient-view", ctx),
                    Err(RenderError::NotAnId { .. }) | Err(RenderError::Missing { .. })
                ),
                "{bad:?} in the path"
            );
        }
        for bad in ["..", ".", "a\nb", &"x".repeat(1025)] {
            let ctx = json!({"userId": "Practitioner/1", "patientId": bad});
            assert!(
                matches!(
                    render(
                        "Observation?patient={{context.patientId}}",
                        "patient-view",
                        ctx
                    ),
                    Err(RenderError::NotASearchValue { .. })
                ),
                "{bad:?} in the query"
            );
        }
        let ctx = json!({"userId": "Practitioner/1", "patientId": "a..b"});
        assert_eq!(
            render("Patient/{{context.patientId}}", "patient-view", ctx),
            Ok("Patient/a..b".into())
        );
    }

    #[test]
    fn a_template_without_tokens_is_kept_as_is() {
        assert_eq!(
            render("Medication?_count=5", "patient-view", json!({})),
            Ok("Medication?_count=5".into())
        );
    }

    #[test]
    fn an_absent_optional_field_has_no_value() {
        let err = render(
            "Encounter/{{context.encounterId}}",
            "patient-view",
            json!({"userId": "Practitioner/1", "patientId": "p"}),
        )
        .err();
        assert_eq!(
            err.map(|e| e.to_string()),
            Some(
                "its template needs {{context.encounterId}}, which this request's context does not give"
                    .into()
            )
        );
    }

    #[test]
    fn custom_hooks_accept_any_first_level_field_but_only_primitive_values() {
        let template = Template::parse("X?a={{context.anything}}", "my-custom-hook")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            template.render(&context(json!({"anything": 42}))),
            Ok("X?a=42".into())
        );
        assert!(
            template
                .render(&context(json!({"anything": {"a": 1}})))
                .is_err()
        );
        assert!(template.render(&context(json!({"anything": [1]}))).is_err());
    }

    #[test]
    fn refuses_unknown_tokens_and_non_primitive_fields_with_their_offset() {
        let cases = [
            ("Patient/{{patientId}}", "patient-view", 8, "unknown token"),
            (
                "Patient/{{userPractitioner}}",
                "patient-view",
                8,
                "unknown token",
            ),
            (
                "MedicationRequest?_id={{context.draftOrders}}",
                "order-sign",
                22,
                "`draftOrders` is not a primitive context field of hook `order-sign`",
            ),
            (
                "Patient/{{context.patientId}}&x={{context.selections}}",
                "order-select",
                32,
                "`selections` is not a primitive",
            ),
            (
                "Patient/{{context.nosuch}}",
                "patient-view",
                8,
                "(it has userId, patientId, encounterId)",
            ),
            (
                "Patient/{{context.draftOrders.id}}",
                "order-sign",
                8,
                "only first-level context fields",
            ),
            (
                "Patient/{{context.patientId",
                "patient-view",
                8,
                "not closed",
            ),
        ];
        for (template, hook, offset, message) in cases {
            let err = Template::parse(template, hook)
                .err()
                .unwrap_or_else(|| panic!("{template} was accepted"));
            assert_eq!(err.offset, offset, "{template}: {err}");
            assert!(err.message.contains(message), "{template}: {err}");
        }
    }

    #[test]
    fn lists_its_tokens() {
        let template = Template::parse(
            "A?p={{context.patientId}}&u={{userPatientId}}",
            "patient-view",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let tokens: Vec<String> = template.tokens().map(ToString::to_string).collect();
        assert_eq!(tokens, ["{{context.patientId}}", "{{userPatientId}}"]);
    }
}
