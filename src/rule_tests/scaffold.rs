//! `cardinal test new`: a compact test case from a patient record, so an author starts from a real
//! chart instead of an empty file. The record (a FHIR Bundle such as a Synthea patient, gzip or not,
//! or a single Patient) is read as `cardinal simulate` reads it, as of the pinned evaluation time;
//! the service's prefetch templates are answered from it as the simulation's FHIR-server emulation
//! would ([`crate::simulate::search`]), and only what they answer goes into the case. `expect` is
//! filled with what the service answers now, for the author to edit into what it should answer.

use std::path::Path;

use chrono::Utc;
use serde_json::{Map, Value, json};

use crate::engine::{RuleMode, Verdict};
use crate::evaluator::{Cardinal, parse_evaluation_time};
use crate::fhir::{PrefetchValue, Resource};
use crate::simulate::record::PatientRecord;
use crate::simulate::{input, search};

use super::case::{Expectation, ExpectedCard, ExpectedWhyNot, TestCase};
use super::compact::CompactCase;
use super::evaluate_case;

/// The practitioner signing or viewing in a new case.
pub const DEFAULT_USER: &str = "Practitioner/example";

/// What `cardinal test new` is asked for.
#[derive(Debug, Clone)]
pub struct NewCase<'a> {
    pub service: &'a str,
    /// A FHIR Bundle (`.json` or `.json.gz`) or a Patient resource.
    pub from: &'a Path,
    /// The draft order of an `order-select` / `order-sign` case.
    pub draft: Option<Value>,
    /// The evaluation time to pin (RFC 3339 or `YYYY-MM-DD`); default: today.
    pub at: Option<&'a str>,
}

/// Why no case could be written. Names the defect, never the patient's data.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScaffoldError {
    #[error("no service `{0}` in the rules directory")]
    UnknownService(String),
    #[error("`{0}` is not an RFC 3339 date-time or a date (YYYY-MM-DD)")]
    BadTime(String),
    #[error("{0}")]
    Record(String),
    #[error(
        "service {service} answers `{hook}`, whose context has draft orders: pass the order being signed with --draft ORDER.json"
    )]
    DraftNeeded { service: String, hook: String },
    #[error("--draft must be one FHIR resource (a JSON object with a `resourceType`)")]
    BadDraft,
    #[error("the new case cannot be expanded: {0}")]
    Expand(String),
}

/// The case, and notes for the author (search parameters the emulation could not apply).
#[derive(Debug, Clone)]
pub struct Scaffold {
    pub case: CompactCase,
    pub notes: Vec<String>,
}

/// Writes a compact case for `request.service` from a patient record, its expectations filled with
/// what the service answers now.
pub fn new_case(cardinal: &Cardinal, request: &NewCase<'_>) -> Result<Scaffold, ScaffoldError> {
    let (at_text, at) = evaluation_time(request)?;
    let record = read_record(request.from, at)?;
    from_record(cardinal, request, at_text, record)
}

/// The same from the record's text (a Bundle or a Patient, not gzipped), e.g. pasted into the
/// playground; `request.from` only names it.
pub fn new_case_from_text(
    cardinal: &Cardinal,
    request: &NewCase<'_>,
    text: &str,
) -> Result<Scaffold, ScaffoldError> {
    let (at_text, at) = evaluation_time(request)?;
    let name = request.from.display().to_string();
    let value: Value = serde_json::from_str(text).map_err(|e| {
        ScaffoldError::Record(format!("{name}:{}:{}: not JSON", e.line(), e.column()))
    })?;
    let record = match value.get("resourceType").and_then(Value::as_str) {
        Some("Patient") => PatientRecord::new(name.clone(), vec![value], at)
            .map_err(|e| ScaffoldError::Record(format!("{name}: {e}")))?,
        Some("Bundle") => input::bundle_from_text(&name, text, at)
            .map_err(|e| ScaffoldError::Record(format!("{}: {}", e.source, e.message)))?,
        _ => {
            return Err(ScaffoldError::Record(format!(
                "{name}: not a FHIR Bundle or Patient resource"
            )));
        }
    };
    from_record(cardinal, request, at_text, record)
}

/// The pinned evaluation time, as written and parsed (default: today).
fn evaluation_time(
    request: &NewCase<'_>,
) -> Result<(String, chrono::DateTime<Utc>), ScaffoldError> {
    let at_text = request
        .at
        .map_or_else(|| Utc::now().format("%Y-%m-%d").to_string(), str::to_owned);
    let at =
        parse_evaluation_time(&at_text).ok_or_else(|| ScaffoldError::BadTime(at_text.clone()))?;
    Ok((at_text, at))
}

fn from_record(
    cardinal: &Cardinal,
    request: &NewCase<'_>,
    at_text: String,
    record: PatientRecord,
) -> Result<Scaffold, ScaffoldError> {
    let service = cardinal
        .service(request.service)
        .map_err(|_| ScaffoldError::UnknownService(request.service.to_owned()))?;

    let hook = service.hook().to_owned();
    let mut context = Map::new();
    context.insert("userId".into(), Value::from(DEFAULT_USER));
    context.insert("patientId".into(), Value::from(record.patient_id.clone()));
    let mut draft_reference = None;
    if matches!(hook.as_str(), "order-select" | "order-sign") {
        let Some(draft) = &request.draft else {
            return Err(ScaffoldError::DraftNeeded {
                service: service.id().to_owned(),
                hook,
            });
        };
        let draft = Resource::new(draft.clone(), crate::fhir::Origin::Context);
        if draft
            .json()
            .get("resourceType")
            .and_then(Value::as_str)
            .is_none()
        {
            return Err(ScaffoldError::BadDraft);
        }
        draft_reference = draft.reference();
        if hook == "order-select"
            && let Some(reference) = &draft_reference
        {
            context.insert("selections".into(), json!([reference]));
        }
        context.insert("draftOrders".into(), json!([draft.json()]));
    } else if request.draft.as_ref().is_some_and(|d| !d.is_object()) {
        return Err(ScaffoldError::BadDraft);
    }

    // The order being signed is not in the record yet.
    let resources: Vec<Resource> = record
        .resources
        .iter()
        .filter(|r| draft_reference.is_none() || r.reference() != draft_reference)
        .cloned()
        .collect();
    let mut pool: std::collections::BTreeMap<String, Vec<Value>> = Default::default();
    let mut notes = Vec::new();
    for key in service.prefetch.keys() {
        let Ok(url) = key.template.render(&context) else {
            notes.push(format!(
                "prefetch `{}` needs a context field the new case does not have: add it to `context`",
                key.key
            ));
            continue;
        };
        let answer = search::answer(&url, &record.patient, &resources);
        for parameter in answer.unsupported {
            notes.push(format!(
                "prefetch `{}`: search parameter {parameter} not applied (every resource of the type was kept)",
                key.key
            ));
        }
        let found: Vec<Resource> = match answer.value {
            PrefetchValue::Null => Vec::new(),
            PrefetchValue::Resource(r) => vec![r],
            PrefetchValue::Bundle(items) => items,
        };
        for resource in found {
            let items = pool.entry(resource.resource_type().to_owned()).or_default();
            if !items
                .iter()
                .any(|r| r.get("id").and_then(Value::as_str) == resource.id())
            {
                items.push(resource.json().clone());
            }
        }
    }

    let source = request
        .from
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut case = CompactCase {
        description: Some(format!(
            "{hook} for the patient of {source}: edit `expect` into what {} should answer",
            service.id()
        )),
        service: service.id().to_owned(),
        evaluation_time: Some(at_text),
        hook: None,
        hook_instance: None,
        fhir_server: None,
        fhir_authorization: None,
        context,
        resources: pool,
        prefetch: Default::default(),
        not_sent: Vec::new(),
        expect: Expectation::default(),
        provenance: Some(json!({
            "source": source,
            "written_by": "cardinal test new",
            "expect": "what the service answered when the case was written",
        })),
    };
    case.expand(&service)
        .map_err(|e| ScaffoldError::Expand(e.to_string()))?;
    case.expect = answered(cardinal, &case);
    Ok(Scaffold { case, notes })
}

/// What the service answers the case now, as an expectation: status, cards, the condition that
/// stopped each rule that did not fire, and the number of rule errors.
fn answered(cardinal: &Cardinal, case: &CompactCase) -> Expectation {
    let test = TestCase::from_compact(case.clone(), Path::new("new-case.json"));
    let (actual, _) = evaluate_case(cardinal, &test);
    let mut expect = Expectation {
        status: actual.status,
        ..Expectation::default()
    };
    if let Some(response) = &actual.response {
        expect.cards = Some(
            response
                .cards
                .iter()
                .map(|c| ExpectedCard {
                    summary: c.summary.clone(),
                    indicator: c.indicator,
                    source_label: None,
                    detail_contains: Vec::new(),
                })
                .collect(),
        );
    }
    for outcome in actual.outcomes.iter().flatten() {
        if outcome.mode == RuleMode::Candidate {
            continue;
        }
        match &outcome.verdict {
            Verdict::NotFired => {
                if let Some(condition) = outcome.failed_condition() {
                    expect.why_not.push(ExpectedWhyNot {
                        rule: outcome.rule_id.clone(),
                        condition: condition.to_owned(),
                        unknown: Some(
                            outcome
                                .undecided()
                                .map(|c| c.unknown.clone())
                                .unwrap_or_default(),
                        ),
                        compared: outcome
                            .conditions
                            .iter()
                            .find(|c| !c.met)
                            .and_then(|c| c.compared.as_ref())
                            .map(ToString::to_string),
                        facts: Vec::new(),
                    });
                }
            }
            Verdict::Error(_) => expect.rule_errors += 1,
            Verdict::Fired => {}
        }
    }
    expect
}

/// A patient from a Bundle (as `cardinal simulate` reads one) or from a single Patient resource.
fn read_record(path: &Path, at: chrono::DateTime<Utc>) -> Result<PatientRecord, ScaffoldError> {
    let gzipped = path.extension().is_some_and(|x| x == "gz");
    if !gzipped {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ScaffoldError::Record(format!("{}: cannot read: {e}", path.display())))?;
        let value: Value = serde_json::from_str(&text).map_err(|e| {
            ScaffoldError::Record(format!(
                "{}:{}:{}: not JSON",
                path.display(),
                e.line(),
                e.column()
            ))
        })?;
        match value.get("resourceType").and_then(Value::as_str) {
            Some("Patient") => {
                return PatientRecord::new(path.display().to_string(), vec![value], at)
                    .map_err(|e| ScaffoldError::Record(format!("{}: {e}", path.display())));
            }
            Some("Bundle") => {}
            _ => {
                return Err(ScaffoldError::Record(format!(
                    "{}: not a FHIR Bundle or Patient resource",
                    path.display()
                )));
            }
        }
    }
    input::read_bundle(path, at)
        .map_err(|e| ScaffoldError::Record(format!("{}: {}", e.source, e.message)))
}
