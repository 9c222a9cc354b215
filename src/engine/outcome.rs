//! What one rule run produced.

use std::time::Duration;

use crate::cds_hooks::{Action, Card, Fact};

/// A condition a rule named through `require(name, ...)`, and whether it held. A condition that
/// did not hold is either *false* (decided on the data) or *unknown*: it could not be decided
/// because the elements in `unknown` were absent (e.g. `MedicationRequest.category`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConditionCheck {
    pub name: String,
    pub met: bool,
    /// The absent elements that left the condition undecided; empty when it was decided.
    pub unknown: Vec<String>,
    /// The values the condition compared, when the rule passed a `compare(...)`. Patient data:
    /// shown in the explain report, never logged, counted or put on a span.
    pub compared: Option<Compared>,
}

/// Both sides of a comparison as the explain report shows them: `38 mL/min/{1.73_m2}`, `<`, `45`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Compared {
    pub left: String,
    pub op: String,
    pub right: String,
}

impl std::fmt::Display for Compared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {} {}", self.left, self.op, self.right)
    }
}

impl ConditionCheck {
    /// Not met because the data to decide it was absent.
    pub fn is_unknown(&self) -> bool {
        !self.met && !self.unknown.is_empty()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuleErrorKind {
    /// The script raised an error (bad call, wrong type, `throw`, invalid card).
    Runtime,
    /// The call's wall-clock backstop passed (work no operation count covers), during the rule or
    /// before its turn.
    Timeout,
    /// The rule used its own operation limit (`max_operations`).
    Operations,
    /// A string, array or map grew past its limit, or calls nested too deep.
    SizeLimit,
    /// The call's operations (`call_max_operations`) were used by earlier rules: the rule was not
    /// run, or was stopped when it used what they had left.
    Budget,
    /// A terminology look-up failed (unknown value set, server down or too slow).
    Terminology,
}

impl RuleErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Runtime => "runtime",
            Self::Timeout => "timeout",
            Self::Operations => "operations",
            Self::SizeLimit => "size-limit",
            Self::Budget => "budget",
            Self::Terminology => "terminology",
        }
    }
}

/// A rule that could not finish. `message` may quote rule output, so it goes into the response and
/// `cardinal explain`, but logs carry only the kind and location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleError {
    pub kind: RuleErrorKind,
    pub message: String,
    /// The file the line and column are in, relative to the rules directory: the rule's, or the
    /// library file of the function that failed.
    pub file: Option<String>,
    pub line: Option<u32>,
    pub column: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Fired,
    NotFired,
    Error(RuleError),
}

impl Verdict {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Fired => "fired",
            Self::NotFired => "not-fired",
            Self::Error(_) => "error",
        }
    }
}

/// How a rule's result reaches the EHR. Hospitals switch a new alert on in stages: first it runs
/// silently (evaluated and recorded, never shown), or as a candidate beside the version in use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RuleMode {
    /// Its cards are returned to the EHR.
    #[default]
    Active,
    /// Evaluated and recorded (metrics, traces, explain report), its cards never returned.
    Silent,
    /// A new version of an active rule (same id), run silently on every call and compared with it.
    Candidate,
}

impl RuleMode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Silent => "silent",
            Self::Candidate => "candidate",
        }
    }

    /// Whether the rule's cards and diagnostics go into the response.
    pub fn is_active(self) -> bool {
        self == Self::Active
    }
}

#[derive(Debug, Clone)]
pub struct RuleOutcome {
    pub rule_id: String,
    pub rule_version: String,
    pub mode: RuleMode,
    pub verdict: Verdict,
    /// Cards as the rule emitted them (no uuid or explanation yet).
    pub cards: Vec<Card>,
    /// Actions the EHR should take without a clinician's choice (`systemActions`), validated like
    /// card actions.
    pub system_actions: Vec<Action>,
    pub facts: Vec<Fact>,
    pub conditions: Vec<ConditionCheck>,
    /// Text the rule printed (for `cardinal explain`; never logged by default).
    pub prints: Vec<String>,
    pub duration: Duration,
    /// Operations used: Rhai's, plus those native helpers charged. The same for the same request,
    /// whatever the load.
    pub operations: u64,
}

impl RuleOutcome {
    /// The first condition that was not met, if the rule stopped on one.
    pub fn failed_condition(&self) -> Option<&str> {
        self.conditions
            .iter()
            .find(|c| !c.met)
            .map(|c| c.name.as_str())
    }

    /// The condition that stopped the rule when it could not be decided for absent data.
    pub fn undecided(&self) -> Option<&ConditionCheck> {
        self.conditions
            .iter()
            .find(|c| !c.met)
            .filter(|c| c.is_unknown())
    }
}
