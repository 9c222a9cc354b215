//! A realistic order-sign request for benchmarks, built deterministically (no randomness): a
//! 75-year-old man with type 2 diabetes, CKD stage 4, hypertension and atrial fibrillation on
//! warfarin, whose clinician is about to sign metformin and ibuprofen orders.
//!
//! Prefetch: the Patient, 50 Observations (LOINC, UCUM units), 20 Conditions (SNOMED CT and
//! ICD-10-CM), 30 MedicationRequests (RxNorm SCDs, an active warfarin 855332 among them). Draft
//! orders: metformin 861007 and ibuprofen 197806. With the shipped rules, `metformin-renal` fires
//! (latest eGFR 24) and so does `warfarin-nsaid`.
//!
//! Codes and displays were taken from published value-set expansions (eCQM / VSAC) where available.

use serde_json::{Value, json};

pub const PATIENT_ID: &str = "bench-pat-0001";
pub const LOINC: &str = "http://loinc.org";
const UCUM: &str = "http://unitsofmeasure.org";
const SNOMED: &str = "http://snomed.info/sct";
const ICD10CM: &str = "http://hl7.org/fhir/sid/icd-10-cm";
const RXNORM: &str = "http://www.nlm.nih.gov/research/umls/rxnorm";
const FHIR_BASE: &str = "https://ehr.example.org/fhir";

/// One laboratory or vital-sign series: `count` results, oldest first, `first` .. `last`.
pub struct LabSeries {
    pub code: &'static str,
    pub display: &'static str,
    pub text: &'static str,
    pub unit: &'static str,
    pub category: &'static str,
    pub low: f64,
    pub high: f64,
    pub first: f64,
    pub last: f64,
    pub count: u32,
    /// Decimal places of the results (0 = whole numbers).
    pub decimals: u32,
}

/// The eGFR LOINC codes used below (CKD-EPI, MDRD).
const EGFR_CODES: [&str; 2] = ["62238-1", "33914-3"];

/// 50 observations in total. The eGFR series alternates CKD-EPI (62238-1) and MDRD (33914-3)
/// codes and ends at 24 mL/min/1.73m2 (CKD stage 4).
pub const LABS: &[LabSeries] = &[
    LabSeries {
        code: "62238-1",
        display: "Glomerular filtration rate/1.73 sq M.predicted [Volume Rate/Area] in Serum, Plasma or Blood by Creatinine-based formula (CKD-EPI)",
        text: "eGFR (CKD-EPI)",
        unit: "mL/min/{1.73_m2}",
        category: "laboratory",
        low: 60.0,
        high: 120.0,
        first: 41.0,
        last: 24.0,
        count: 4,
        decimals: 0,
    },
    LabSeries {
        code: "33914-3",
        display: "Glomerular filtration rate/1.73 sq M.predicted [Volume Rate/Area] in Serum or Plasma by Creatinine-based formula (MDRD)",
        text: "eGFR (MDRD)",
        unit: "mL/min/{1.73_m2}",
        category: "laboratory",
        low: 60.0,
        high: 120.0,
        first: 48.0,
        last: 29.0,
        count: 4,
        decimals: 0,
    },
    LabSeries {
        code: "4548-4",
        display: "Hemoglobin A1c/Hemoglobin.total in Blood",
        text: "HbA1c",
        unit: "%",
        category: "laboratory",
        low: 4.0,
        high: 5.6,
        first: 7.1,
        last: 8.6,
        count: 7,
        decimals: 1,
    },
    LabSeries {
        code: "2160-0",
        display: "Creatinine [Mass/volume] in Serum or Plasma",
        text: "Creatinine",
        unit: "mg/dL",
        category: "laboratory",
        low: 0.7,
        high: 1.3,
        first: 1.5,
        last: 2.6,
        count: 8,
        decimals: 2,
    },
    LabSeries {
        code: "2823-3",
        display: "Potassium [Moles/volume] in Serum or Plasma",
        text: "Potassium",
        unit: "mmol/L",
        category: "laboratory",
        low: 3.5,
        high: 5.1,
        first: 4.3,
        last: 5.4,
        count: 7,
        decimals: 1,
    },
    LabSeries {
        code: "8480-6",
        display: "Systolic blood pressure",
        text: "Systolic BP",
        unit: "mm[Hg]",
        category: "vital-signs",
        low: 90.0,
        high: 130.0,
        first: 152.0,
        last: 138.0,
        count: 7,
        decimals: 0,
    },
    LabSeries {
        code: "8462-4",
        display: "Diastolic blood pressure",
        text: "Diastolic BP",
        unit: "mm[Hg]",
        category: "vital-signs",
        low: 60.0,
        high: 80.0,
        first: 94.0,
        last: 84.0,
        count: 5,
        decimals: 0,
    },
    LabSeries {
        code: "13457-7",
        display: "Cholesterol in LDL [Mass/volume] in Serum or Plasma by calculation",
        text: "LDL cholesterol",
        unit: "mg/dL",
        category: "laboratory",
        low: 0.0,
        high: 100.0,
        first: 131.0,
        last: 92.0,
        count: 4,
        decimals: 0,
    },
    LabSeries {
        code: "6301-6",
        display: "INR in Platelet poor plasma by Coagulation assay",
        text: "INR",
        unit: "{INR}",
        category: "laboratory",
        low: 2.0,
        high: 3.0,
        first: 1.8,
        last: 2.7,
        count: 4,
        decimals: 1,
    },
];

/// (SNOMED CT code, display, ICD-10-CM code, display, onset, clinical status).
const CONDITIONS: &[(&str, &str, &str, &str, &str, &str)] = &[
    (
        "44054006",
        "Diabetes mellitus type 2 (disorder)",
        "E11.9",
        "Type 2 diabetes mellitus without complications",
        "2009-03-12",
        "active",
    ),
    (
        "431857002",
        "Chronic kidney disease stage 4 (disorder)",
        "N18.4",
        "Chronic kidney disease, stage 4 (severe)",
        "2025-08-30",
        "active",
    ),
    (
        "38341003",
        "Hypertensive disorder, systemic arterial (disorder)",
        "I10",
        "Essential (primary) hypertension",
        "2004-11-02",
        "active",
    ),
    (
        "49436004",
        "Atrial fibrillation (disorder)",
        "I48.91",
        "Unspecified atrial fibrillation",
        "2019-06-21",
        "active",
    ),
    (
        "55822004",
        "Hyperlipidemia (disorder)",
        "E78.5",
        "Hyperlipidemia, unspecified",
        "2008-01-15",
        "active",
    ),
    (
        "414916001",
        "Obesity (disorder)",
        "E66.9",
        "Obesity, unspecified",
        "2006-05-09",
        "active",
    ),
    (
        "84114007",
        "Heart failure (disorder)",
        "I50.9",
        "Heart failure, unspecified",
        "2022-02-17",
        "active",
    ),
    (
        "239873007",
        "Osteoarthritis of knee (disorder)",
        "M17.9",
        "Osteoarthritis of knee, unspecified",
        "2016-09-03",
        "active",
    ),
    (
        "90560007",
        "Gout (disorder)",
        "M10.9",
        "Gout, unspecified",
        "2018-04-27",
        "recurrence",
    ),
    (
        "40930008",
        "Hypothyroidism (disorder)",
        "E03.9",
        "Hypothyroidism, unspecified",
        "2012-10-11",
        "active",
    ),
    (
        "707323002",
        "Anemia in chronic kidney disease (disorder)",
        "D63.1",
        "Anemia in chronic kidney disease",
        "2025-11-05",
        "active",
    ),
    (
        "4855003",
        "Retinopathy due to diabetes mellitus (disorder)",
        "E11.319",
        "Type 2 diabetes mellitus with unspecified diabetic retinopathy without macular edema",
        "2021-07-19",
        "active",
    ),
    (
        "1511000119107",
        "Peripheral neuropathy due to type 2 diabetes mellitus (disorder)",
        "E11.42",
        "Type 2 diabetes mellitus with diabetic polyneuropathy",
        "2020-03-08",
        "active",
    ),
    (
        "235595009",
        "Gastroesophageal reflux disease (disorder)",
        "K21.9",
        "Gastro-esophageal reflux disease without esophagitis",
        "2014-12-01",
        "active",
    ),
    (
        "370143000",
        "Major depressive disorder (disorder)",
        "F32.9",
        "Major depressive disorder, single episode, unspecified",
        "2017-02-14",
        "active",
    ),
    (
        "13645005",
        "Chronic obstructive lung disease (disorder)",
        "J44.9",
        "Chronic obstructive pulmonary disease, unspecified",
        "2015-10-22",
        "active",
    ),
    (
        "78275009",
        "Obstructive sleep apnea syndrome (disorder)",
        "G47.33",
        "Obstructive sleep apnea (adult) (pediatric)",
        "2019-01-30",
        "active",
    ),
    (
        "14140009",
        "Hyperkalemia (disorder)",
        "E87.5",
        "Hyperkalemia",
        "2026-03-04",
        "resolved",
    ),
    (
        "266569009",
        "Benign prostatic hyperplasia (disorder)",
        "N40.0",
        "Benign prostatic hyperplasia without lower urinary tract symptoms",
        "2013-06-18",
        "active",
    ),
    (
        "34713006",
        "Vitamin D deficiency (disorder)",
        "E55.9",
        "Vitamin D deficiency, unspecified",
        "2023-09-25",
        "resolved",
    ),
];

/// (RxNorm SCD, display, status, authoredOn, dosage text). 30 medication requests.
const MEDICATIONS: &[(&str, &str, &str, &str, &str)] = &[
    (
        "855332",
        "warfarin sodium 5 MG Oral Tablet",
        "active",
        "2026-08-14",
        "5 mg by mouth once daily in the evening, adjust to INR",
    ),
    (
        "855312",
        "warfarin sodium 2.5 MG Oral Tablet",
        "stopped",
        "2019-06-25",
        "2.5 mg by mouth once daily",
    ),
    (
        "979492",
        "losartan potassium 50 MG Oral Tablet",
        "active",
        "2026-03-10",
        "50 mg by mouth once daily",
    ),
    (
        "314076",
        "lisinopril 10 MG Oral Tablet",
        "stopped",
        "2015-04-02",
        "10 mg by mouth once daily",
    ),
    (
        "314077",
        "lisinopril 20 MG Oral Tablet",
        "stopped",
        "2021-09-13",
        "20 mg by mouth once daily",
    ),
    (
        "197361",
        "amlodipine 5 MG Oral Tablet",
        "active",
        "2024-01-22",
        "5 mg by mouth once daily",
    ),
    (
        "308136",
        "amlodipine 2.5 MG Oral Tablet",
        "stopped",
        "2022-06-30",
        "2.5 mg by mouth once daily",
    ),
    (
        "617311",
        "atorvastatin 40 MG Oral Tablet",
        "active",
        "2023-05-17",
        "40 mg by mouth at bedtime",
    ),
    (
        "617310",
        "atorvastatin 20 MG Oral Tablet",
        "stopped",
        "2018-02-08",
        "20 mg by mouth at bedtime",
    ),
    (
        "312961",
        "simvastatin 20 MG Oral Tablet",
        "stopped",
        "2010-07-19",
        "20 mg by mouth at bedtime",
    ),
    (
        "866514",
        "metoprolol tartrate 50 MG Oral Tablet",
        "active",
        "2022-02-20",
        "50 mg by mouth twice daily",
    ),
    (
        "866924",
        "metoprolol tartrate 25 MG Oral Tablet",
        "stopped",
        "2019-06-22",
        "25 mg by mouth twice daily",
    ),
    (
        "313988",
        "furosemide 40 MG Oral Tablet",
        "active",
        "2025-08-31",
        "40 mg by mouth every morning",
    ),
    (
        "310429",
        "furosemide 20 MG Oral Tablet",
        "stopped",
        "2022-02-18",
        "20 mg by mouth every morning",
    ),
    (
        "310798",
        "hydrochlorothiazide 25 MG Oral Tablet",
        "stopped",
        "2005-01-11",
        "25 mg by mouth once daily",
    ),
    (
        "311041",
        "insulin glargine 100 UNT/ML Injectable Solution",
        "active",
        "2025-09-02",
        "18 units subcutaneously at bedtime",
    ),
    (
        "242120",
        "insulin lispro 100 UNT/ML Injectable Solution",
        "active",
        "2025-09-02",
        "sliding scale with meals",
    ),
    (
        "665033",
        "sitagliptin 100 MG Oral Tablet",
        "stopped",
        "2020-11-04",
        "100 mg by mouth once daily",
    ),
    (
        "310490",
        "glipizide 5 MG Oral Tablet",
        "active",
        "2021-03-15",
        "5 mg by mouth before breakfast",
    ),
    (
        "1545658",
        "empagliflozin 10 MG Oral Tablet",
        "stopped",
        "2023-02-27",
        "10 mg by mouth once daily",
    ),
    (
        "860975",
        "24 HR metformin hydrochloride 500 MG Extended Release Oral Tablet",
        "stopped",
        "2009-03-20",
        "500 mg by mouth with the evening meal",
    ),
    (
        "312941",
        "sertraline 50 MG Oral Tablet",
        "active",
        "2017-02-20",
        "50 mg by mouth once daily",
    ),
    (
        "856377",
        "trazodone hydrochloride 50 MG Oral Tablet",
        "active",
        "2019-02-05",
        "50 mg by mouth at bedtime as needed for sleep",
    ),
    (
        "310431",
        "gabapentin 300 MG Oral Capsule",
        "active",
        "2020-03-12",
        "300 mg by mouth at bedtime",
    ),
    (
        "200031",
        "carvedilol 6.25 MG Oral Tablet",
        "stopped",
        "2022-03-01",
        "6.25 mg by mouth twice daily",
    ),
    (
        "313096",
        "spironolactone 25 MG Oral Tablet",
        "stopped",
        "2022-03-01",
        "25 mg by mouth once daily",
    ),
    (
        "243670",
        "aspirin 81 MG Oral Tablet",
        "stopped",
        "2012-08-09",
        "81 mg by mouth once daily",
    ),
    (
        "198145",
        "prednisone 10 MG Oral Tablet",
        "completed",
        "2024-12-03",
        "40 mg by mouth daily for 5 days",
    ),
    (
        "197517",
        "clarithromycin 500 MG Oral Tablet",
        "completed",
        "2024-12-03",
        "500 mg by mouth twice daily for 7 days",
    ),
    (
        "897122",
        "3 ML liraglutide 6 MG/ML Pen Injector",
        "active",
        "2024-06-11",
        "1.2 mg subcutaneously once daily",
    ),
];

/// The i-th of `count` dates, oldest first, ending in October 2026 (about 10 weeks apart).
fn series_date(i: u32, count: u32, salt: u32) -> String {
    let months_back = (count - 1 - i) * 2 + (salt % 2);
    let total = 2026 * 12 + 9 - months_back as i32; // month index of 2026-10, zero-based month
    let (year, month) = (total / 12, total % 12 + 1);
    let day = 1 + (i * 7 + salt * 3) % 27;
    let hour = 7 + (i + salt) % 4;
    format!(
        "{year:04}-{month:02}-{day:02}T{hour:02}:{:02}:00Z",
        (i * 13 + salt * 7) % 60
    )
}

fn round(value: f64, decimals: u32) -> Value {
    if decimals == 0 {
        json!(value.round() as i64)
    } else {
        let factor = 10f64.powi(decimals as i32);
        json!((value * factor).round() / factor)
    }
}

fn coding(system: &str, code: &str, display: &str) -> Value {
    json!({"system": system, "code": code, "display": display})
}

fn entry(resource: Value) -> Value {
    let url = format!(
        "{FHIR_BASE}/{}/{}",
        resource["resourceType"].as_str().unwrap_or_default(),
        resource["id"].as_str().unwrap_or_default()
    );
    json!({"fullUrl": url, "resource": resource, "search": {"mode": "match"}})
}

fn searchset(entries: Vec<Value>) -> Value {
    json!({
        "resourceType": "Bundle",
        "type": "searchset",
        "total": entries.len(),
        "entry": entries,
    })
}

fn patient() -> Value {
    json!({
        "resourceType": "Patient",
        "id": PATIENT_ID,
        "meta": {"versionId": "7", "lastUpdated": "2026-11-19T16:02:11Z"},
        "identifier": [{
            "use": "usual",
            "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR", "display": "Medical record number"}]},
            "system": "https://ehr.example.org/mrn",
            "value": "MRN-00481516"
        }],
        "active": true,
        "name": [{"use": "official", "family": "Haddad", "given": ["Samir", "Elias"]}],
        "telecom": [
            {"system": "phone", "value": "+1-555-0142", "use": "home"},
            {"system": "email", "value": "s.haddad@example.org"}
        ],
        "gender": "male",
        "birthDate": "1951-06-15",
        "address": [{"use": "home", "line": ["42 Orchard Lane"], "city": "Springfield", "state": "IL", "postalCode": "62704", "country": "US"}],
        "communication": [{"language": {"coding": [{"system": "urn:ietf:bcp:47", "code": "en-US", "display": "English (United States)"}]}, "preferred": true}]
    })
}

fn observations() -> Vec<Value> {
    let mut out = Vec::new();
    for (s, lab) in (0u32..).zip(LABS) {
        for i in 0..lab.count {
            let fraction = if lab.count > 1 {
                f64::from(i) / f64::from(lab.count - 1)
            } else {
                1.0
            };
            // A gentle trend plus a deterministic wobble, so consecutive values differ realistically.
            let wobble =
                (f64::from((i * 7 + s * 3) % 5) - 2.0) * (lab.last - lab.first).abs() * 0.04;
            let value = if i + 1 == lab.count {
                lab.last
            } else {
                lab.first + (lab.last - lab.first) * fraction + wobble
            };
            let interpretation = if value < lab.low {
                ("L", "Low")
            } else if value > lab.high {
                ("H", "High")
            } else {
                ("N", "Normal")
            };
            let date = series_date(i, lab.count, s);
            let id = format!("obs-{}-{:02}", lab.code, i);
            let category_display = if lab.category == "laboratory" {
                "Laboratory"
            } else {
                "Vital Signs"
            };
            out.push(json!({
                "resourceType": "Observation",
                "id": id,
                "status": "final",
                "category": [{"coding": [{
                    "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                    "code": lab.category,
                    "display": category_display
                }]}],
                "code": {"coding": [coding(LOINC, lab.code, lab.display)], "text": lab.text},
                "subject": {"reference": format!("Patient/{PATIENT_ID}")},
                "encounter": {"reference": format!("Encounter/enc-{:04}", 100 + s * 10 + i)},
                "effectiveDateTime": date,
                "valueQuantity": {
                    "value": round(value, lab.decimals),
                    "unit": lab.unit,
                    "system": UCUM,
                    "code": lab.unit
                },
                "interpretation": [{"coding": [{
                    "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation",
                    "code": interpretation.0,
                    "display": interpretation.1
                }]}],
                "referenceRange": [{
                    "low": {"value": lab.low, "unit": lab.unit},
                    "high": {"value": lab.high, "unit": lab.unit}
                }]
            }));
        }
    }
    out
}

fn conditions() -> Vec<Value> {
    (0u32..)
        .zip(CONDITIONS)
        .map(|(i, &(sct, sct_display, icd, icd_display, onset, status))| {
            let mut condition = json!({
                "resourceType": "Condition",
                "id": format!("cond-{i:02}"),
                "clinicalStatus": {"coding": [{
                    "system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                    "code": status
                }]},
                "verificationStatus": {"coding": [{
                    "system": "http://terminology.hl7.org/CodeSystem/condition-ver-status",
                    "code": "confirmed"
                }]},
                "category": [{"coding": [{
                    "system": "http://terminology.hl7.org/CodeSystem/condition-category",
                    "code": "problem-list-item",
                    "display": "Problem List Item"
                }]}],
                "code": {
                    "coding": [coding(SNOMED, sct, sct_display), coding(ICD10CM, icd, icd_display)],
                    "text": icd_display
                },
                "subject": {"reference": format!("Patient/{PATIENT_ID}")},
                "onsetDateTime": onset,
                "recordedDate": onset,
                "recorder": {"reference": format!("Practitioner/pract-{}", 10 + i % 4)}
            });
            if status == "resolved" {
                condition["abatementDateTime"] = json!("2026-05-01");
            }
            condition
        })
        .collect()
}

fn medication_request(
    id: &str,
    code: &str,
    display: &str,
    status: &str,
    authored: &str,
    dosage: &str,
) -> Value {
    json!({
        "resourceType": "MedicationRequest",
        "id": id,
        "status": status,
        "intent": "order",
        "category": [{"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/medicationrequest-category",
            "code": "outpatient"
        }]}],
        "medicationCodeableConcept": {"coding": [coding(RXNORM, code, display)], "text": display},
        "subject": {"reference": format!("Patient/{PATIENT_ID}")},
        "authoredOn": authored,
        "requester": {"reference": "Practitioner/pract-10"},
        "dosageInstruction": [{"text": dosage, "timing": {"repeat": {"frequency": 1, "period": 1, "periodUnit": "d"}}}],
        "dispenseRequest": {
            "numberOfRepeatsAllowed": 3,
            "quantity": {"value": 90, "unit": "TAB"},
            "expectedSupplyDuration": {"value": 90, "unit": "days", "system": UCUM, "code": "d"}
        }
    })
}

fn medications() -> Vec<Value> {
    (0u32..)
        .zip(MEDICATIONS)
        .map(|(i, &(code, display, status, authored, dosage))| {
            medication_request(
                &format!("medrx-{i:02}-{code}"),
                code,
                display,
                status,
                authored,
                dosage,
            )
        })
        .collect()
}

fn draft_orders() -> Value {
    let mut metformin = medication_request(
        "draft-metformin",
        "861007",
        "metformin hydrochloride 500 MG Oral Tablet",
        "draft",
        "2026-11-20",
        "500 mg by mouth twice daily with meals",
    );
    metformin["dosageInstruction"][0]["timing"]["repeat"]["frequency"] = json!(2);
    let ibuprofen = medication_request(
        "draft-ibuprofen",
        "197806",
        "ibuprofen 600 MG Oral Tablet",
        "draft",
        "2026-11-20",
        "600 mg by mouth every 8 hours as needed for knee pain",
    );
    json!({
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [{"resource": metformin}, {"resource": ibuprofen}]
    })
}

/// The whole order-sign request as JSON.
///
/// Prefetch keys: `patient` and `egfr` (what `metformin-renal` declares), `medications`
/// (`warfarin-nsaid`), plus `observations` (the other labs and vitals) and `conditions`.
pub fn order_sign_request() -> Value {
    let (egfr, other_labs): (Vec<Value>, Vec<Value>) = observations().into_iter().partition(|o| {
        EGFR_CODES.contains(&o["code"]["coding"][0]["code"].as_str().unwrap_or_default())
    });
    json!({
        "hook": "order-sign",
        "hookInstance": "6f1c2a9e-3b7d-4e58-9c0a-5d2e8f714b36",
        "fhirServer": FHIR_BASE,
        "context": {
            "userId": "Practitioner/pract-10",
            "patientId": PATIENT_ID,
            "encounterId": "enc-0999",
            "draftOrders": draft_orders()
        },
        "prefetch": {
            "patient": patient(),
            "egfr": searchset(egfr.into_iter().map(entry).collect()),
            "observations": searchset(other_labs.into_iter().map(entry).collect()),
            "conditions": searchset(conditions().into_iter().map(entry).collect()),
            "medications": searchset(medications().into_iter().map(entry).collect())
        }
    })
}

/// The request body as an EHR would send it (compact JSON).
pub fn order_sign_request_bytes() -> Vec<u8> {
    serde_json::to_vec(&order_sign_request()).unwrap_or_default()
}
