//! Card literals (`card(#{ summary: ..., indicator: "warnign" })`) checked before any patient
//! reaches them, by the same validator that checks a card at run time (`cards::from_rule_spec`):
//! unknown fields, required fields left out, and constant values it would refuse (an unknown
//! indicator or selection behaviour, a link type, an action type...). Values computed at run time
//! are not guessed at.

use std::path::Path;

use rhai::{Expr, Position};
use serde_json::{Map, Value};

use crate::cds_hooks::Source;

use super::suggest::did_you_mean;
use super::{Finding, Severity};

/// The CDS Hooks 2.0 card fields, to suggest a spelling (the validator decides what is accepted).
const CARD_FIELDS: &[&str] = &[
    "summary",
    "detail",
    "indicator",
    "source",
    "suggestions",
    "selectionBehavior",
    "overrideReasons",
    "links",
];

/// A constant expression as JSON; `None` when any part is computed at run time.
fn constant(e: &Expr) -> Option<Value> {
    Some(match e {
        Expr::StringConstant(s, _) => Value::String(s.to_string()),
        Expr::BoolConstant(b, _) => Value::Bool(*b),
        Expr::IntegerConstant(i, _) => Value::from(*i),
        Expr::FloatConstant(f, _) => Value::from(**f),
        Expr::CharConstant(c, _) => Value::String(c.to_string()),
        Expr::Unit(_) => Value::Null,
        Expr::Array(items, _) => Value::Array(items.iter().map(constant).collect::<Option<_>>()?),
        Expr::Map(x, _) => Value::Object(
            x.0.iter()
                .map(|(k, v)| Some((k.name.to_string(), constant(v)?)))
                .collect::<Option<_>>()?,
        ),
        _ => return None,
    })
}

/// A minimal valid card: what each probe adds one field to.
fn minimal() -> Map<String, Value> {
    let mut card = Map::new();
    card.insert("summary".into(), Value::String("s".into()));
    card.insert("indicator".into(), Value::String("info".into()));
    card
}

fn validate(card: Map<String, Value>) -> Result<(), String> {
    crate::cards::from_rule_spec(Value::Object(card), &Source::default()).map(|_| ())
}

/// The values a message such as "`indicator` must be info, warning or critical" allows.
fn allowed(message: &str) -> Vec<&str> {
    message
        .split_once(" must be ")
        .map(|(_, list)| {
            list.split([',', ' '])
                .filter(|w| !w.is_empty() && *w != "or")
                .collect()
        })
        .unwrap_or_default()
}

/// Findings for the argument of one `card(...)` call at `call`.
pub(crate) fn check(path: &Path, spec: &Expr, call: Position) -> Vec<Finding> {
    let Expr::Map(x, _) = spec else {
        return Vec::new();
    };
    let fields = &x.0;
    let mut findings = Vec::new();
    let mut push = |pos: Position, message: String, hint: Option<String>| {
        findings.push(Finding {
            path: path.to_path_buf(),
            line: pos.line().unwrap_or(0),
            column: pos.position().unwrap_or(0),
            severity: Severity::Error,
            check: "card",
            message,
            hint,
        });
    };
    // Required fields: those the validator refuses a card without.
    for required in minimal().keys() {
        if fields.iter().any(|(k, _)| k.name.as_str() == required) {
            continue;
        }
        let mut card = minimal();
        card.remove(required);
        if let Err(message) = validate(card) {
            push(
                call,
                format!("invalid card: {message}"),
                Some(format!("add `{required}: ...` to the card")),
            );
        }
    }
    for (key, value) in fields.iter() {
        let name = key.name.as_str();
        let mut card = minimal();
        let probe = !card.contains_key(name);
        card.insert(name.to_owned(), Value::Null);
        if let (true, Err(message)) = (probe, validate(card)) {
            let hint = did_you_mean(name, CARD_FIELDS.iter().copied())
                .unwrap_or_else(|| format!("a card has: {}", CARD_FIELDS.join(", ")));
            push(key.pos, format!("invalid card: {message}"), Some(hint));
            continue;
        }
        let Some(json) = constant(value) else {
            continue;
        };
        let mut card = minimal();
        card.insert(name.to_owned(), json.clone());
        if let Err(message) = validate(card) {
            let hint = match &json {
                Value::String(s) => did_you_mean(s, allowed(&message)),
                _ => None,
            }
            .unwrap_or_else(|| "see \"card(#{ ... })\" in docs/rules.md".to_owned());
            push(
                value.position(),
                format!("invalid card: {message}"),
                Some(hint),
            );
        }
    }
    findings
}
