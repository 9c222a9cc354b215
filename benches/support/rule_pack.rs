//! A generated CDS service with 50 small rules, written to a directory at bench start. Each rule
//! does what real rules do: find the latest observation for a LOINC code, compare it with a
//! threshold, record why (`because`), sometimes also require an active problem-list condition, and
//! every fifth rule emits a card.

use std::fmt::Write as _;
use std::path::Path;

use super::patient_gen::LABS;

pub const SERVICE_ID: &str = "bench-50-rules";
pub const RULE_COUNT: usize = 50;

/// (SNOMED CT, ICD-10-CM, name) of conditions some rules additionally require.
const CONDITIONS: &[(&str, &str, &str)] = &[
    ("44054006", "E11.9", "Type 2 diabetes"),
    ("431857002", "N18.4", "CKD stage 4"),
    ("38341003", "I10", "Hypertension"),
    ("49436004", "I48.91", "Atrial fibrillation"),
    ("84114007", "I50.9", "Heart failure"),
    // Not on the generated patient's problem list: those rules stop at the `require`.
    ("195967001", "J45.909", "Asthma"),
];

/// Formats a threshold as a Rhai float literal (`45.0`, `7.5`).
fn float_literal(value: f64) -> String {
    let text = format!("{value:.1}");
    if text.contains('.') {
        text
    } else {
        format!("{text}.0")
    }
}

fn rule_source(i: usize) -> String {
    let lab = &LABS[i % LABS.len()];
    // Thresholds spread over (and a little beyond) the reference range, alternating direction, so
    // that some rules are met and some are not.
    let span = lab.high - lab.low;
    let position = ((i * 37) % 140) as f64 / 100.0 - 0.2;
    let threshold = float_literal(lab.low + span * position);
    let (op, words) = if i.is_multiple_of(2) {
        (">", "above")
    } else {
        ("<", "below")
    };
    let mut src = String::new();
    let _ = writeln!(
        src,
        "// Generated rule {i}: {} {words} {threshold} {}.",
        lab.text, lab.unit
    );
    let _ = writeln!(
        src,
        "const CODES = [\"{}\", \"http://loinc.org|{}\"];",
        lab.code, lab.code
    );
    let _ = writeln!(src, "const THRESHOLD = {threshold};");
    let _ = writeln!(
        src,
        "let obs = require(\"a {} result on record\", patient.latest_observation(CODES));",
        lab.text
    );
    let _ = writeln!(
        src,
        "let value = require(\"the {} has a numeric value\", obs.value);",
        lab.text
    );
    let _ = writeln!(
        src,
        "require(\"{} {words} {threshold}\", value {op} THRESHOLD);",
        lab.text
    );
    let _ = writeln!(
        src,
        "because(\"{}\", obs, `{words} ${{THRESHOLD}} {}`);",
        lab.text, lab.unit
    );
    if i % 4 == 3 {
        let (sct, icd, name) = CONDITIONS[(i / 4) % CONDITIONS.len()];
        let _ = writeln!(
            src,
            "let dx = require(\"{name} on the problem list\", patient.active_conditions([\"{sct}\", \"{icd}\"]));"
        );
        let _ = writeln!(src, "because(\"{name}\", dx[0]);");
    }
    if i.is_multiple_of(5) {
        let indicator = if i.is_multiple_of(10) {
            "warning"
        } else {
            "info"
        };
        let _ = writeln!(
            src,
            "card(#{{ summary: `{} ${{value}} {}: {words} ${{THRESHOLD}}`, indicator: \"{indicator}\", \
             detail: `The latest {} (${{obs.date}}) is ${{value}} {}, {words} the threshold of ${{THRESHOLD}}. Review and act if appropriate.` }});",
            lab.text, lab.unit, lab.text, lab.unit
        );
    } else {
        // Rules without a card still read a little more of the record, as real ones do.
        let _ = writeln!(
            src,
            "let on_warfarin = patient.active_medications([\"855332\"]).len() > 0;"
        );
        let _ = writeln!(src, "because(\"On warfarin\", on_warfarin);");
    }
    src
}

/// The manifest. Its prefetch keys are those the generated request carries.
const MANIFEST: &str = r#"id = "bench-50-rules"
hook = "order-sign"
title = "Benchmark: 50 lab threshold rules"
description = "Generated for benchmarks: 50 rules comparing the latest lab values with thresholds."
version = "1.0.0"

[prefetch]
patient = "Patient/{{context.patientId}}"
egfr = "Observation?patient={{context.patientId}}&code=http://loinc.org|62238-1,http://loinc.org|33914-3"
observations = "Observation?patient={{context.patientId}}&category=laboratory,vital-signs"
conditions = "Condition?patient={{context.patientId}}&category=problem-list-item"
medications = "MedicationRequest?patient={{context.patientId}}"

[source]
label = "Cardinal benchmark rules"
"#;

/// Writes the service (manifest + 50 rule files) into `<dir>/bench-50-rules/`.
pub fn write(dir: &Path) -> std::io::Result<()> {
    let service = dir.join(SERVICE_ID);
    std::fs::create_dir_all(&service)?;
    std::fs::write(service.join("service.toml"), MANIFEST)?;
    for i in 0..RULE_COUNT {
        std::fs::write(service.join(format!("rule-{i:02}.rhai")), rule_source(i))?;
    }
    Ok(())
}
