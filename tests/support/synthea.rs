//! Synthea patients (`../shared/data/synthea/`, gzip FHIR transaction bundles) as CDS Hooks requests
//! for the opioid pack's services: the bundle's resources under the pack's prefetch keys, and, for
//! order hooks, a 30-day extended-release oxycodone draft order. Shared by the corpus test and the
//! opioid benchmark; the corpus is optional and its absence is reported, never a failure.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::PathBuf;

use serde_json::{Value, json};

/// The shared Synthea folder beside the project.
pub fn corpus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data/synthea")
}

/// Up to `limit` patients, largest first: (short name, bundle). Empty when the corpus is absent.
pub fn load_bundles(limit: usize) -> Vec<(String, Value)> {
    let Ok(entries) = std::fs::read_dir(corpus_dir()) else {
        return Vec::new();
    };
    let mut files: Vec<(u64, PathBuf)> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| Some((e.metadata().ok()?.len(), e.path())))
        .filter(|(_, p)| p.to_string_lossy().ends_with(".json.gz"))
        .collect();
    files.sort();
    files.reverse();
    let mut out = Vec::new();
    for (_, path) in files.into_iter().take(limit) {
        let Some(bundle) = read_bundle(&path) else {
            continue;
        };
        let name = path
            .file_name()
            .map(|n| {
                n.to_string_lossy()
                    .split('_')
                    .take(2)
                    .collect::<Vec<_>>()
                    .join("_")
            })
            .unwrap_or_default();
        out.push((name, bundle));
    }
    out
}

/// One gzip Bundle file, parsed; `None` when it cannot be read.
pub fn read_bundle(path: &std::path::Path) -> Option<Value> {
    let mut text = String::new();
    let file = std::fs::File::open(path).ok()?;
    flate2::read::GzDecoder::new(file)
        .read_to_string(&mut text)
        .ok()?;
    serde_json::from_str(&text).ok()
}

/// The bundle as a request for `hook`; order hooks get an extended-release oxycodone draft order
/// (RxNorm 1049502, 30 days, twice daily) signed on `today` (`YYYY-MM-DD`).
pub fn opioid_request(bundle: &Value, hook: &str, today: &str) -> Option<Value> {
    let mut by_type: BTreeMap<&str, Vec<&Value>> = BTreeMap::new();
    for entry in bundle["entry"].as_array()? {
        let resource = &entry["resource"];
        if let Some(ty) = resource["resourceType"].as_str() {
            by_type.entry(ty).or_default().push(resource);
        }
    }
    let patient = *by_type.get("Patient")?.first()?;
    let patient_id = patient["id"].as_str()?;
    let search = |types: &[&str]| {
        let entries: Vec<Value> = types
            .iter()
            .flat_map(|t| by_type.get(t).into_iter().flatten())
            .map(|r| json!({"resource": r}))
            .collect();
        json!({"resourceType": "Bundle", "type": "searchset", "total": entries.len(), "entry": entries})
    };
    let mut context = json!({"userId": "Practitioner/example", "patientId": patient_id});
    if hook != "patient-view" {
        let draft = json!({
            "resourceType": "MedicationRequest", "id": "draft-oxycodone", "status": "draft", "intent": "order",
            "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/medicationrequest-category", "code": "community"}]}],
            "medicationCodeableConcept": {"coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "1049502",
                "display": "12 HR Oxycodone Hydrochloride 10 MG Extended Release Oral Tablet"}]},
            "subject": {"reference": format!("Patient/{patient_id}")},
            "authoredOn": today,
            "dosageInstruction": [{"timing": {"repeat": {"frequency": 2, "period": 1, "periodUnit": "d"}},
                "doseAndRate": [{"doseQuantity": {"value": 1, "unit": "tablet", "system": "http://terminology.hl7.org/CodeSystem/v3-orderableDrugForm", "code": "TAB"}}]}],
            "dispenseRequest": {"expectedSupplyDuration": {"value": 30, "unit": "days", "system": "http://unitsofmeasure.org", "code": "d"}}
        });
        context["draftOrders"] =
            json!({"resourceType": "Bundle", "type": "collection", "entry": [{"resource": draft}]});
        if hook == "order-select" {
            context["selections"] = json!(["MedicationRequest/draft-oxycodone"]);
        }
    }
    Some(json!({
        "hook": hook,
        "hookInstance": "4cf01c0b-4a1d-4f5c-b2a4-4e0d5d3a7f10",
        "context": context,
        "prefetch": {
            "patient": patient,
            "conditions": search(&["Condition"]),
            "encounters": search(&["Encounter"]),
            "medicationRequests": search(&["MedicationRequest", "Medication"]),
            "medicationDispenses": search(&["MedicationDispense"]),
            "procedures": search(&["Procedure"]),
            "observations": search(&["Observation"]),
            "carePlans": search(&["CarePlan"]),
        }
    }))
}
