//! Which records a helper hands to a rule as clinical facts. FHIR keeps records that are wrong
//! (`entered-in-error`), results that are not yet results (`registered`, `preliminary`) and orders,
//! procedures or diagnoses that never came into force (`cancelled`, `not-done`, `refuted`) beside the
//! true ones. A rule that asks for "the latest eGFR" must not get a retracted one, so the helpers
//! filter here, in one place, by resource type. Documented for rule authors in `docs/rules.md`
//! ("Which records count").

use serde_json::Value;

use crate::fhir::Resource;

/// The statuses of a result (Observation, DiagnosticReport) that make it a result a rule may act on.
pub(crate) const FINAL_RESULT: &[&str] = &["final", "amended", "corrected"];

/// The codes of a CodeableConcept field (e.g. `verificationStatus`).
fn concept_codes<'a>(r: &'a Resource, field: &str) -> Vec<&'a str> {
    r.get(field)
        .map(|c| {
            crate::fhir::concept_codings(c)
                .map(|(_, code)| code)
                .collect()
        })
        .unwrap_or_default()
}

/// Whether the record is marked as entered in error (its `status`, or for Conditions and allergies
/// its `verificationStatus`). Such a record is never a fact; `patient.resources(...)` drops it too.
pub(crate) fn entered_in_error(r: &Resource) -> bool {
    if r.status() == Some("entered-in-error") {
        return true;
    }
    matches!(r.resource_type(), "Condition" | "AllergyIntolerance")
        && concept_codes(r, "verificationStatus").contains(&"entered-in-error")
}

/// Statuses, per resource type, of records that were never in force (besides entered-in-error).
fn never_in_force(resource_type: &str) -> &'static [&'static str] {
    match resource_type {
        "MedicationRequest" => &["cancelled", "draft"],
        "MedicationStatement" => &["not-taken"],
        "MedicationDispense" => &["cancelled", "declined"],
        "MedicationAdministration" | "Procedure" | "Immunization" => &["not-done"],
        "ServiceRequest" | "CarePlan" => &["revoked", "draft"],
        "Encounter" | "Appointment" => &["cancelled"],
        _ => &[],
    }
}

/// Whether a record counts as a clinical fact for the fact helpers (`find`, `observations`,
/// `latest_observation`, `conditions`, `medications`...):
/// - never when entered in error;
/// - results (Observation, DiagnosticReport): `final`, `amended` or `corrected`, or, when the rule
///   asks, one of `result_statuses`;
/// - Conditions and allergies: not `refuted`;
/// - orders, statements, dispenses, procedures, encounters: not in a status FHIR defines as never
///   in force (`cancelled`, `draft`, `not-done`, `not-taken`, `revoked`...).
pub(crate) fn is_fact(r: &Resource, result_statuses: Option<&[String]>) -> bool {
    if entered_in_error(r) {
        return false;
    }
    let ty = r.resource_type();
    match ty {
        "Observation" | "DiagnosticReport" => {
            let Some(status) = r.status() else {
                return false;
            };
            match result_statuses {
                Some(asked) => asked.iter().any(|s| s == status),
                None => FINAL_RESULT.contains(&status),
            }
        }
        "Condition" | "AllergyIntolerance" => {
            !concept_codes(r, "verificationStatus").contains(&"refuted")
        }
        _ => r.status().is_none_or(|s| !never_in_force(ty).contains(&s)),
    }
}

/// Statuses a rule passed (`["preliminary", "final"]`), as owned strings.
pub(crate) fn statuses_of(value: &rhai::Dynamic) -> Result<Vec<String>, Box<rhai::EvalAltResult>> {
    super::codes_of(value)
}

/// Whether `path` (dotted, e.g. `dispenseRequest.expectedSupplyDuration`) has a value in `json`: not
/// missing, not null, not an empty string, list or object. Lists on the way count when any item has
/// the rest of the path.
pub(crate) fn has_value(json: &Value, path: &str) -> bool {
    match json {
        Value::Array(items) => items.iter().any(|item| has_value(item, path)),
        _ => match path.split_once('.') {
            Some((head, rest)) => json.get(head).is_some_and(|v| has_value(v, rest)),
            None => json.get(path).is_some_and(non_empty),
        },
    }
}

fn non_empty(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::String(s) => !s.trim().is_empty(),
        Value::Array(items) => items.iter().any(non_empty),
        Value::Object(o) => !o.is_empty(),
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fhir::Origin;
    use serde_json::json;

    fn r(v: Value) -> Resource {
        Resource::new(v, Origin::Prefetch)
    }

    #[test]
    fn results_are_final_unless_asked() {
        let prelim = r(json!({"resourceType": "Observation", "status": "preliminary"}));
        let wrong = r(json!({"resourceType": "Observation", "status": "entered-in-error"}));
        let amended = r(json!({"resourceType": "Observation", "status": "amended"}));
        assert!(!is_fact(&prelim, None) && is_fact(&amended, None) && !is_fact(&wrong, None));
        let asked = ["preliminary".to_owned()];
        assert!(is_fact(&prelim, Some(&asked)) && !is_fact(&amended, Some(&asked)));
    }

    #[test]
    fn conditions_orders_and_procedures_not_in_force_are_left_out() {
        let refuted = r(json!({"resourceType": "Condition",
            "verificationStatus": {"coding": [{"code": "refuted"}]}}));
        let error = r(json!({"resourceType": "Condition",
            "verificationStatus": {"coding": [{"code": "entered-in-error"}]}}));
        let cancelled = r(json!({"resourceType": "MedicationRequest", "status": "cancelled"}));
        let stopped = r(json!({"resourceType": "MedicationRequest", "status": "stopped"}));
        let not_done = r(json!({"resourceType": "Procedure", "status": "not-done"}));
        assert!(!is_fact(&refuted, None) && !is_fact(&error, None) && entered_in_error(&error));
        assert!(!is_fact(&cancelled, None) && is_fact(&stopped, None) && !is_fact(&not_done, None));
    }

    #[test]
    fn element_presence_follows_dotted_paths_and_lists() {
        let order = json!({"dispenseRequest": {"expectedSupplyDuration": {"value": 30}},
            "category": [], "dosageInstruction": [{"text": "x"}, {"timing": {"repeat": {"frequency": 2}}}]});
        assert!(has_value(&order, "dispenseRequest.expectedSupplyDuration"));
        assert!(!has_value(&order, "category"));
        assert!(!has_value(&order, "dispenseRequest.validityPeriod"));
        assert!(has_value(
            &order,
            "dosageInstruction.timing.repeat.frequency"
        ));
        assert!(!has_value(&order, "dosageInstruction.doseAndRate"));
    }
}
