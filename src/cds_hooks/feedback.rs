//! `POST /cds-services/{id}/feedback`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use super::card::Coding;
use super::request::{RequestError, json_field};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FeedbackOutcome {
    Accepted,
    Overridden,
}

impl FeedbackOutcome {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "accepted" => Some(Self::Accepted),
            "overridden" => Some(Self::Overridden),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Accepted => "accepted",
            Self::Overridden => "overridden",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AcceptedSuggestion {
    pub id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct OverrideReason {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<Coding>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_comment: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FeedbackEntry {
    pub card: String,
    pub outcome: FeedbackOutcome,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub accepted_suggestions: Vec<AcceptedSuggestion>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub override_reason: Option<OverrideReason>,
    pub outcome_timestamp: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeedbackRequest {
    pub feedback: Vec<FeedbackEntry>,
}

impl FeedbackRequest {
    pub fn from_json_bytes(body: &[u8]) -> Result<Self, RequestError> {
        // Read as top-level fields, then `feedback` on its own: a whole-body tree would meet serde's
        // recursion limit as a bare syntax error, where a field too deep can be named.
        let first = body.iter().find(|b| !b.is_ascii_whitespace());
        if first.is_some_and(|&b| b != b'{') {
            return Err(
                match serde_json::from_slice::<serde::de::IgnoredAny>(body) {
                    Ok(_) => RequestError::NotAnObject,
                    Err(e) => RequestError::from_json(&e),
                },
            );
        }
        let fields: BTreeMap<String, &RawValue> =
            serde_json::from_slice(body).map_err(|e| RequestError::from_json(&e))?;
        let mut object = Map::new();
        if let Some(raw) = fields.get("feedback") {
            object.insert("feedback".into(), json_field("feedback", raw.get())?);
        }
        Self::from_value(&Value::Object(object))
    }

    pub fn from_value(value: &Value) -> Result<Self, RequestError> {
        if !value.is_object() {
            return Err(RequestError::NotAnObject);
        }
        let Some(items) = value.get("feedback") else {
            return Err(RequestError::MissingField("feedback".into()));
        };
        let Some(items) = items.as_array() else {
            return Err(RequestError::wrong_type("feedback", "an array"));
        };
        if items.is_empty() {
            return Err(RequestError::Invalid("`feedback` must not be empty".into()));
        }
        let feedback = items
            .iter()
            .enumerate()
            .map(|(i, item)| parse_entry(i, item))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self { feedback })
    }
}

fn parse_entry(i: usize, item: &Value) -> Result<FeedbackEntry, RequestError> {
    let at = |field: &str| format!("feedback[{i}].{field}");
    let str_field = |field: &str| -> Result<String, RequestError> {
        match item.get(field) {
            Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
            Some(Value::String(_)) => Err(RequestError::Invalid(format!(
                "`{}` must not be empty",
                at(field)
            ))),
            None | Some(Value::Null) => Err(RequestError::MissingField(at(field))),
            Some(_) => Err(RequestError::wrong_type(at(field), "a string")),
        }
    };
    let card = str_field("card")?;
    let outcome = str_field("outcome")?;
    let outcome = FeedbackOutcome::parse(&outcome).ok_or_else(|| {
        RequestError::Invalid(format!(
            "`{}` must be `accepted` or `overridden`",
            at("outcome")
        ))
    })?;
    let outcome_timestamp = str_field("outcomeTimestamp")?;
    if chrono::DateTime::parse_from_rfc3339(&outcome_timestamp).is_err() {
        return Err(RequestError::Invalid(format!(
            "`{}` must be an RFC 3339 date-time",
            at("outcomeTimestamp")
        )));
    }
    let accepted_suggestions: Vec<AcceptedSuggestion> = match item.get("acceptedSuggestions") {
        None | Some(Value::Null) => Vec::new(),
        Some(v) => serde_json::from_value(v.clone()).map_err(|_| {
            RequestError::wrong_type(at("acceptedSuggestions"), "an array of {\"id\": string}")
        })?,
    };
    if outcome == FeedbackOutcome::Accepted && accepted_suggestions.is_empty() {
        return Err(RequestError::MissingField(at("acceptedSuggestions")));
    }
    let override_reason: Option<OverrideReason> = match item.get("overrideReason") {
        None | Some(Value::Null) => None,
        Some(v) => Some(serde_json::from_value(v.clone()).map_err(|_| {
            RequestError::wrong_type(
                at("overrideReason"),
                "an object with optional `reason` (Coding) and `userComment` (string)",
            )
        })?),
    };
    if override_reason.is_some() && outcome != FeedbackOutcome::Overridden {
        return Err(RequestError::Invalid(format!(
            "`{}` is only allowed when the outcome is `overridden`",
            at("overrideReason")
        )));
    }
    Ok(FeedbackEntry {
        card,
        outcome,
        accepted_suggestions,
        override_reason,
        outcome_timestamp,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_feedback_body_nesting_too_deep_is_refused_by_name() {
        let deep = "[".repeat(100_000) + "]".repeat(100_000).as_str();
        let body = format!(
            r#"{{"feedback": [{{"card": "c", "outcome": "overridden", "outcomeTimestamp": "2026-11-25T10:00:00Z", "overrideReason": {deep}}}]}}"#
        );
        let err = FeedbackRequest::from_json_bytes(body.as_bytes()).err();
        assert_eq!(
            err.map(|e| e.to_string()).as_deref(),
            Some("`feedback` nests JSON deeper than 64 levels")
        );
        // Deep fields other than `feedback` are not read at all.
        let body = format!(
            r#"{{"other": {deep}, "feedback": [{{"card": "c", "outcome": "overridden", "outcomeTimestamp": "2026-11-25T10:00:00Z"}}]}}"#
        );
        assert!(FeedbackRequest::from_json_bytes(body.as_bytes()).is_ok());
    }

    #[test]
    fn non_objects_and_broken_json_are_refused_as_before() {
        assert_eq!(
            FeedbackRequest::from_json_bytes(b"[1]").err(),
            Some(RequestError::NotAnObject)
        );
        assert!(matches!(
            FeedbackRequest::from_json_bytes(b"{\"feedback\": [").err(),
            Some(RequestError::MalformedJson { .. })
        ));
        assert_eq!(
            FeedbackRequest::from_json_bytes(b"{}").err(),
            Some(RequestError::MissingField("feedback".into()))
        );
    }
}
