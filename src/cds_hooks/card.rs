//! Cards and what hangs off them: sources, suggestions, actions, links, codings.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::explanation::Explanation;

/// Maximum summary length allowed by the spec ("<140 characters").
pub const MAX_SUMMARY_CHARS: usize = 139;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Indicator {
    Info,
    Warning,
    Critical,
}

impl Indicator {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "info" => Some(Self::Info),
            "warning" => Some(Self::Warning),
            "critical" => Some(Self::Critical),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Info => "info",
            Self::Warning => "warning",
            Self::Critical => "critical",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SelectionBehavior {
    #[serde(rename = "at-most-one")]
    AtMostOne,
    #[serde(rename = "any")]
    Any,
}

impl SelectionBehavior {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "at-most-one" => Some(Self::AtMostOne),
            "any" => Some(Self::Any),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::AtMostOne => "at-most-one",
            Self::Any => "any",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Coding {
    pub system: String,
    pub code: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Source {
    pub label: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub icon: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<Coding>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ActionType {
    Create,
    Update,
    Delete,
}

impl ActionType {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "create" => Some(Self::Create),
            "update" => Some(Self::Update),
            "delete" => Some(Self::Delete),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Create => "create",
            Self::Update => "update",
            Self::Delete => "delete",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Action {
    #[serde(rename = "type")]
    pub kind: ActionType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// A FHIR resource, as a JSON object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Suggestion {
    pub label: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_recommended: Option<bool>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub actions: Vec<Action>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LinkType {
    Absolute,
    Smart,
}

impl LinkType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Absolute => "absolute",
            Self::Smart => "smart",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Link {
    pub label: String,
    pub url: String,
    #[serde(rename = "type")]
    pub kind: LinkType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_context: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autolaunchable: Option<bool>,
}

/// A card's `extension` object: Cardinal's explanation plus anything else, passed through.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct CardExtension {
    #[serde(
        rename = "org.cardinalcds.explanation",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub explanation: Option<Explanation>,
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Card {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
    pub summary: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    pub indicator: Indicator,
    pub source: Source,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub suggestions: Vec<Suggestion>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selection_behavior: Option<SelectionBehavior>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub override_reasons: Vec<Coding>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub links: Vec<Link>,
    #[serde(default, skip_serializing_if = "skip_extension")]
    pub extension: Option<CardExtension>,
    /// What makes two cards of a rule "the same card" for repeat suppression (the rule's
    /// `repeatKey`; default the summary). Never sent.
    #[serde(skip)]
    pub repeat_key: Option<String>,
}

fn skip_extension(extension: &Option<CardExtension>) -> bool {
    extension.as_ref().is_none_or(CardExtension::is_empty)
}

impl CardExtension {
    pub fn is_empty(&self) -> bool {
        self.explanation.is_none() && self.other.is_empty()
    }
}

impl Card {
    /// The explanation Cardinal attached, if any.
    pub fn explanation(&self) -> Option<&Explanation> {
        self.extension.as_ref()?.explanation.as_ref()
    }
}
