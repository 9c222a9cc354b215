#!/usr/bin/env python3
"""Convert the CDC opioid prescribing CDS test cases into Cardinal rule test cases.

Reads the 46 cleaned cases of the HL7/CDC implementation guide (cqframework/opioid-cds-r4, CC0;
`opioid-cds/cases/*.json` and `opioid-cds/case-expectations.json` of the project's shared data)
and writes one `cardinal test` case per file to `rules/opioid-cds/tests/<case name>.json`.

The old request shape becomes a CDS Hooks 2.0 request:
  * `Patient/` and `Encounter/` prefixes are stripped from `context.patientId` / `encounterId`;
  * prefetch values are taken from `prefetch` and from top-level `item1..itemN` keys (mis-nested
    in the original files), `{response, resource}` wrappers and Bundles are unwrapped recursively,
    and every resource is kept (never de-duplicated by id);
  * `fhirServer` is dropped (tests never call it; without it a missing declared prefetch key is a
    412);
  * the resources are re-keyed under the prefetch keys the service declares, by resource type:
    `patient` (the Patient or null) and searchset Bundles for the searches.

Expectations: evaluation time 2023-05-01; card count = `spec_cards`; summaries and indicators as
stored in the IG when a stored response exists and the verdict is not MISMATCH (legacy wording,
matched through `aliases.toml`), the current (2025) titles otherwise.

Standard library only. Run once from the repository root:

    python3 tools/convert_opioid_cases.py [--source DIR] [--out DIR]

It prints, per case, the resource types dropped because the service declares no prefetch key for
them, and any hook that does not match the service's hook.
"""

import argparse
import json
import re
import sys
from pathlib import Path

EVALUATION_TIME = "2023-05-01"
IG = "cqframework/opioid-cds-r4"
IG_COMMIT = "b29bdcbf6db6f3de26486dbc3820572ee9a78b89"

BASIC = ["patient", "conditions", "encounters", "medicationRequests", "medicationDispenses"]

# test group -> (service id, hook, declared prefetch keys)
SERVICES = {
    "HelloWorld": ("hello-world-patient-view", "patient-view", []),
    "OpioidCDSREC01": ("opioidcds-01", "order-sign", BASIC),
    "OpioidCDSREC02": ("opioidcds-02", "order-sign", BASIC + ["procedures", "carePlans"]),
    "OpioidCDSREC03": ("opioidcds-03", "order-sign", BASIC),
    "OpioidCDSREC03PatientView": ("opioidcds-03-patient-view", "patient-view", BASIC),
    "OpioidCDSREC04_05": (
        "opioidcds-04-05",
        "order-sign",
        ["patient", "conditions", "encounters", "medicationRequests"],
    ),
    "OpioidCDSREC06": ("opioidcds-06", "order-sign", ["patient", "conditions", "encounters"]),
    "OpioidCDSREC07": (
        "opioidcds-07",
        "order-sign",
        ["patient", "conditions", "encounters", "medicationRequests", "procedures"],
    ),
    "OpioidCDSREC08": (
        "opioidcds-08",
        "order-sign",
        ["patient", "conditions", "encounters", "medicationRequests", "procedures"],
    ),
    # The guide's retired REC08 order-sign service runs the same logic on the same hook: one service,
    # so an EHR that enables every service shows the card once.
    "OpioidCDSREC08OrderSign": (
        "opioidcds-08",
        "order-sign",
        ["patient", "conditions", "encounters", "medicationRequests", "procedures"],
    ),
    "OpioidCDSREC09": (
        "opioidcds-09",
        "order-sign",
        ["patient", "conditions", "encounters", "procedures", "observations"],
    ),
    "OpioidCDSREC10": (
        "opioidcds-10",
        "order-select",
        ["patient", "conditions", "encounters", "medicationRequests", "observations"],
    ),
    "OpioidCDSREC10OrderSign": (
        "opioidcds-10-order-sign",
        "order-sign",
        ["patient", "conditions", "encounters", "medicationRequests", "observations"],
    ),
    "OpioidCDSREC10PatientView": (
        "opioidcds-10-patient-view",
        "patient-view",
        ["patient", "conditions", "encounters", "medicationRequests", "observations"],
    ),
    "OpioidCDSREC11": (
        "opioidcds-11",
        "order-select",
        ["patient", "conditions", "encounters", "medicationRequests"],
    ),
    "OpioidCDSREC11PatientView": (
        "opioidcds-11-patient-view",
        "patient-view",
        ["patient", "conditions", "encounters", "medicationRequests"],
    ),
}

# resource type -> the prefetch key that carries it
KEY_OF_TYPE = {
    "Patient": "patient",
    "Condition": "conditions",
    "Encounter": "encounters",
    "MedicationRequest": "medicationRequests",
    "Medication": "medicationRequests",
    "MedicationDispense": "medicationDispenses",
    "Procedure": "procedures",
    "Observation": "observations",
    "CarePlan": "carePlans",
}

# The current (G3) card titles.
REC03 = "When Initiating Opioid Therapy, Utilize Immediate Release Opioids"
REC08 = "Incorporate Risk Mitigation Strategies Into Opioid Therapy"
REC11 = (
    "Use Particular Caution When Prescribing Opioid Pain Medication and Benzodiazepines or "
    "Other CNS Depressants Concurrently"
)
TITLES = {
    "HelloWorld": "Hello World!",
    "OpioidCDSREC01": "Consider Nonopioid Treatment Options for Acute Pain",
    "OpioidCDSREC02": "Maximize Nonopioid Therapies as Appropriate",
    "OpioidCDSREC03": REC03,
    "OpioidCDSREC03PatientView": REC03,
    "OpioidCDSREC04_05": (
        "Calibrate to Lowest Opioid Dose Needed for Expected Results and Exercise Care When "
        "Changing Opioid Dosages"
    ),
    "OpioidCDSREC06": "When Treating Acute Pain, Prescribe No More Opioids Than Needed",
    "OpioidCDSREC07": "Regularly Evaluate the Benefits and Risks of Opioid Therapy",
    "OpioidCDSREC08": REC08,
    "OpioidCDSREC08OrderSign": REC08,
    "OpioidCDSREC09": "Before Ordering Opioids, Review PDMP Data",
    "OpioidCDSREC11": REC11,
    "OpioidCDSREC11PatientView": REC11,
}
REC10_TITLES = {
    "A": "Consider the Benefits and Risks of Conducting a Urine Toxicology Screen",
    "B": "Patient May Have Unexpected Toxicology Test Results",
}

# Finer assertions: the rules record the total MME as a fact named `total MME`.
FACTS = {
    "OpioidCDSREC04_05__rec-04-05-mme-greater-than-fifty": [{"name": "total MME", "value": "180.0"}],
    "OpioidCDSREC08OrderSign__rec-08-order-sign-mme-greater-than-fifty": [
        {"name": "total MME", "value": "180.0"}
    ],
    "OpioidCDSREC08OrderSign__rec-08-order-sign-multiple-doseRate": [
        {"name": "total MME", "value": "180.0"}
    ],
}

# Why a case gives no card, where section 10 says the count alone could pass for the wrong reason
# (OK*, MISMATCH) or a classic mistake would show: the rule and its first false `require` condition.
ORDER_CHRONIC = "an outpatient opioid order for subacute or chronic pain"
ESTABLISHED_USE = (
    "established opioid use (7 of the past 10 days with an office visit, "
    "or 21 days in each of the past 3 months)"
)
RISK_FACTOR = "a risk factor for overdose (benzodiazepine, 50 MME/day or more, or substance misuse)"
WHY_NOT = {
    "OpioidCDSREC01__rec-01-out-inpatient-opioid": [
        ("rec01-nonopioid-acute-pain", "an outpatient opioid order for acute pain (less than 28 days' supply)", [])],
    "OpioidCDSREC02__rec-02-in-careplan-revisited": [
        ("rec02-nonopioid-subacute-chronic",
         "no pain treatment plan or pain-management procedure by the prescriber in the past 90 days", [])],
    "OpioidCDSREC04_05__rec-04-05-mme-less-than-fifty": [("rec04-05-lowest-effective-dose", ORDER_CHRONIC, [])],
    "OpioidCDSREC06__rec-06-in-criteria-met": [
        ("rec06-acute-pain-duration", "an outpatient opioid order for acute pain of more than 7 days' supply", [])],
    "OpioidCDSREC07__rec-07-end-of-life-exclusion": [
        ("rec07-evaluate-benefits-harms", ESTABLISHED_USE,
         [{"name": "days on opioids in the past 10 days", "value": "0"}])],
    "OpioidCDSREC07__rec-07-risk-assessment": [("rec07-evaluate-benefits-harms", ESTABLISHED_USE, [])],
    "OpioidCDSREC07__rec-07-six-of-past-ten-days": [("rec07-evaluate-benefits-harms", ESTABLISHED_USE, [])],
    "OpioidCDSREC08OrderSign__rec-08-order-sign-mme-less-than-fifty": [
        ("rec08-naloxone-risk-mitigation", RISK_FACTOR, [{"name": "total MME", "value": "36.0"}])],
    "OpioidCDSREC08__rec-08-mme-less-than-fifty": [
        ("rec08-naloxone-risk-mitigation", RISK_FACTOR, [{"name": "total MME", "value": "36.0"}])],
    "OpioidCDSREC08__rec-08-on-naloxone": [("rec08-naloxone-risk-mitigation", "no active naloxone prescription", [])],
    "OpioidCDSREC08__rec-08-mme-greater-than-fifty": [("rec08-naloxone-risk-mitigation", ORDER_CHRONIC, [])],
    "OpioidCDSREC09__rec-09-out-PDMP-review-90-days": [("rec09-review-pdmp", ORDER_CHRONIC, [])],
    "OpioidCDSREC10PatientView__rec-10-patient-view-illicit-drugs": [
        ("rec10-urine-drug-testing", "an unexpected urine drug screen result in the past 12 months",
         [{"name": "urine drug screens in the past 12 months", "value": "1"}])],
    "OpioidCDSREC11__rec-11-benzo-trigger-without-opioid": [
        ("rec11-opioids-with-benzodiazepines",
         "an opioid ordered with an active benzodiazepine/CNS depressant prescription, or the reverse", [])],
    "OpioidCDSREC11PatientView__rec-11-patient-view-opioid-trigger-without-benzo": [
        ("rec11-opioids-with-benzodiazepines", "an active benzodiazepine or CNS depressant prescription", [])],
}

# Facts on the cards of REC10's unexpected-results card: which screens were unexpected.
FACTS.update({
    "OpioidCDSREC10OrderSign__rec-10-order-sign-illicit-drugs": [
        {"name": "unexpected positive Cocaine screen", "value": "2022-11-25"},
        {"name": "unexpected positive Oxycodone screen", "value": "2022-11-04"},
        {"name": "unexpected positive Phencyclidine (PCP) screen", "value": "2022-12-26"},
    ],
    "OpioidCDSREC10PatientView__rec-10-patient-view-illicit-drugs-POS-Opiate": [
        {"name": "unexpected positive Oxycodone screen", "value": "2022-11-04"},
        {"name": "unexpected positive Oxycodone screen", "value": "2022-12-04"},
        {"name": "unexpected negative Oxycodone screen", "value": "2023-02-04"},
    ],
    "OpioidCDSREC10__rec-10-illicit-drugs": [
        {"name": "unexpected positive Cocaine screen", "value": "2022-09-25"},
    ],
    "OpioidCDSREC07__rec-07-seven-of-past-ten-days": [
        {"name": "days on opioids in the past 10 days", "value": "7"},
    ],
})

# Section 10 of the rule specification, briefly paraphrased.
REASONS = {
    "HelloWorld__HelloWorld": "No stored response; the smoke-test service always returns one info card.",
    "OpioidCDSREC01__rec-01-in-outpatient-opioid": "Acute pain: a 27-day supply.",
    "OpioidCDSREC01__rec-01-out-inpatient-opioid": "The order's category is inpatient.",
    "OpioidCDSREC02__rec-02-in-careplan-revisited": (
        "The CarePlan that suppresses the card was a top-level item2 in the original request; "
        "ignoring it would give 1 card."
    ),
    "OpioidCDSREC02__rec-02-out-careplan-not-revisited": "The care plan was not revisited: 1 card.",
    "OpioidCDSREC03PatientView__rec-03-patient-view-long-acting-opioid": (
        "The prescription is 92 days old: still active and the patient is still opioid-naive."
    ),
    "OpioidCDSREC04_05__rec-04-05-mme-greater-than-fifty": (
        "MME 180 (the legacy 'taper now' wording because it is at least 90)."
    ),
    "OpioidCDSREC04_05__rec-04-05-mme-less-than-fifty": (
        "OK*: 0 cards, but because RxNorm 892495 (Kadian 10 MG) is in neither the opioid value set "
        "nor the MME table, so the rule stops before any MME is computed."
    ),
    "OpioidCDSREC06__rec-06-in-criteria-met": (
        "No stored response. A 5-day supply is not more than 7 days: 0 cards (the IG's 2023 "
        "suite also asserted 0; the case name is misleading)."
    ),
    "OpioidCDSREC06__rec-06-out-extended-release-27-days": (
        "MISMATCH: the stored response has 0 cards, but a 27-day supply of extended-release "
        "oxycodone for an adult in the community (7 < 27 < 28) fires under the 2023 and 2025 logic "
        "alike, and the IG's 2023 suite asserted the card for the same patient and order. The "
        "stored response is stale; this case expects the specification's 1 card."
    ),
    "OpioidCDSREC07__rec-07-end-of-life-exclusion": (
        "OK*: the request holds no end-of-life data; 0 cards because the only prior prescription "
        "(1012727, carbinoxamine/hydrocodone) is not in the opioid value set, so there are no days "
        "on opioids."
    ),
    "OpioidCDSREC07__rec-07-risk-assessment": (
        "OK*: Procedure 268525008 (high risk drug monitoring) is not in the opioid misuse "
        "assessment value set; 0 cards because there is no prior opioid use at all."
    ),
    "OpioidCDSREC07__rec-07-seven-of-past-ten-days": "7 of the past 10 days on opioids, office visit 2023-04-21.",
    "OpioidCDSREC07__rec-07-six-of-past-ten-days": (
        "0 cards only when the draft order is kept out of the patient's history; counting it gives "
        "10 days and a card."
    ),
    "OpioidCDSREC08OrderSign__noPrefetch": (
        "No stored response. Decision: without prefetch and without a FHIR server the call is "
        "refused with 412 (section 10 of the specification allows it as the alternative to 0 cards "
        "for an unknown age); the draft order's MME would be 180."
    ),
    "OpioidCDSREC08OrderSign__rec-08-order-sign-mme-greater-than-fifty": (
        "No stored response. MME 180; the IG's 2023 suite asserted the card."
    ),
    "OpioidCDSREC08OrderSign__rec-08-order-sign-mme-less-than-fifty": (
        "No stored response. MME 36 and no other risk factor: 0 cards (2023 suite asserted 0; the "
        "2025 logic would give 1)."
    ),
    "OpioidCDSREC08OrderSign__rec-08-order-sign-multiple-doseRate": (
        "No stored response. Three typed dose entries; the `ordered` one is used: MME 180, 1 card."
    ),
    "OpioidCDSREC08OrderSign__rec-08-order-sign-on-benzodiazepine": (
        "No stored response. A benzodiazepine prescription on record and MME 180: 1 card (2023 "
        "suite asserted the card)."
    ),
    "OpioidCDSREC08__rec-08-mme-greater-than-fifty": (
        "MISMATCH: the stored response has 1 card, but the draft order is Pepto-Bismol (RxNorm "
        "1185223, not an opioid); the fentanyl prescription is only a record resource that shares "
        "the draft's id. No version of REC08 fires without an opioid draft order. The stored "
        "response predates an edit of the request; this case expects the specification's 0 cards."
    ),
    "OpioidCDSREC08__rec-08-mme-less-than-fifty": "MME 36: 0 cards (the 2025 logic would give 1).",
    "OpioidCDSREC08__rec-08-on-naloxone": (
        "An active naloxone prescription (a top-level item2 in the original request): 0 cards."
    ),
    "OpioidCDSREC08__rec-08-substance-abuse": (
        "Alcohol dependence as an encounter diagnosis (a top-level item3 in the original request)."
    ),
    "OpioidCDSREC09__rec-09-in-criteria-met": (
        "No stored response. The PDMP item is dated 2018: 1 card (2023 suite asserted the card)."
    ),
    "OpioidCDSREC09__rec-09-out-PDMP-review-90-days": (
        "OK*: 0 cards only because the draft order's category uses the MedicationDispense category "
        "system, so it is not 'community'. The recent PDMP review is a Procedure coded "
        "461651000124104, which would not have suppressed the card."
    ),
    "OpioidCDSREC10OrderSign__rec-10-order-sign-illicit-drugs-POS-Cocaine": (
        "No stored response. Cocaine positives on 2022-10-25 and 2022-11-26: card B."
    ),
    "OpioidCDSREC10OrderSign__rec-10-order-sign-illicit-drugs": (
        "Card B: cocaine positive 2022-11-25, oxycodone positive 2022-11-04 without an oxycodone "
        "prescription in the prior 31 days, PCP positive 2022-12-26."
    ),
    "OpioidCDSREC10OrderSign__rec-10-order-sign-no-screenings": "No screening: card A.",
    "OpioidCDSREC10PatientView__rec-10-patient-view-2-illicit-drugs": "Cocaine, oxycodone and PCP positives: card B.",
    "OpioidCDSREC10PatientView__rec-10-patient-view-POS-Cocaine": "Cocaine positive: card B.",
    "OpioidCDSREC10PatientView__rec-10-patient-view-illicit-drugs-POS-Opiate": (
        "No stored response. Oxycodone positives 2022-11-04 and 2022-12-04 are unexpected and the "
        "oxycodone negative 2023-02-04 is an unexpected negative (oxycodone prescribed 2023-01-31): "
        "card B (the 2023 logic would give 0)."
    ),
    "OpioidCDSREC10PatientView__rec-10-patient-view-illicit-drugs": (
        "MISMATCH: the stored response has 1 card ('Illicit Drugs Found In Urine Screening: "
        "Tetrahydrocannabinol'), but the only screen is a THC test (3426-4) of 2023-04-04 without "
        "category or value (its positive result is only in `interpretation`, which no version of "
        "the logic reads). Under the 2025 logic it counts as a screen in the last 12 months (no card "
        "A), cannabinoid checking is off and there is no valueString (no card B). This case expects "
        "the specification's 0 cards."
    ),
    "OpioidCDSREC10PatientView__rec-10-patient-view-no-screenings": "No screening: card A.",
    "OpioidCDSREC10__rec-10-illicit-drugs-POS-Cocaine": "No stored response. Cocaine positives: card B.",
    "OpioidCDSREC10__rec-10-illicit-drugs-POS-Opiate": (
        "No stored response. As the patient-view POS-Opiate case: card B (the 2023 logic would "
        "give 0)."
    ),
    "OpioidCDSREC10__rec-10-illicit-drugs": (
        "Card B: cocaine positive 2022-09-25 (the PCP positive of 2021-10-23 is outside the window)."
    ),
    "OpioidCDSREC10__rec-10-no-screenings": "No screening: card A.",
    "OpioidCDSREC11PatientView__rec-11-patient-view-opioid-trigger-with-benzo": (
        "Both prescriptions were top-level items in the original request."
    ),
    "OpioidCDSREC11__rec-11-benzo-trigger-with-opioid": (
        "The opioid prescription was a top-level item9 in the original request."
    ),
    "OpioidCDSREC11__rec-11-opioid-trigger-with-benzo": (
        "The benzodiazepine prescription was a top-level item4 in the original request."
    ),
}

ITEM_KEY = re.compile(r"^item([0-9]+)$")
REQUEST_KEYS = {"hook", "hookInstance", "fhirServer", "context", "prefetch"}


def unwrap(value, where, notes):
    """Every resource in a prefetch value: wrappers and Bundles unwrapped recursively."""
    if value is None:
        return []
    if isinstance(value, list):
        return [r for i, v in enumerate(value) for r in unwrap(v, f"{where}[{i}]", notes)]
    if not isinstance(value, dict):
        notes.append(f"{where}: not a resource, skipped")
        return []
    if "resourceType" not in value and "resource" in value:
        return unwrap(value["resource"], f"{where}.resource", notes)
    if value.get("resourceType") == "Bundle":
        found = []
        for i, entry in enumerate(value.get("entry") or []):
            if isinstance(entry, dict) and "resource" in entry:
                found.extend(unwrap(entry["resource"], f"{where}.entry[{i}]", notes))
            else:
                notes.append(f"{where}.entry[{i}]: no resource, skipped")
        return found
    if "resourceType" in value:
        return [value]
    notes.append(f"{where}: no resourceType, skipped")
    return []


def item_number(key):
    match = ITEM_KEY.match(key)
    return int(match.group(1)) if match else -1


def prefetch_values(request):
    """(key, value) of `prefetch` and of the top-level itemN keys, by item number."""
    pairs = [(f"prefetch.{k}", k, v) for k, v in (request.get("prefetch") or {}).items()]
    pairs += [(k, k, v) for k, v in request.items() if ITEM_KEY.match(k)]
    pairs.sort(key=lambda p: item_number(p[1]))
    return [(where, v) for where, _, v in pairs]


def searchset(resources):
    bundle = {"resourceType": "Bundle", "type": "searchset", "total": len(resources)}
    if resources:
        bundle["entry"] = [{"resource": r} for r in resources]
    return bundle


def cards_text(n):
    return f"{n} card" if n == 1 else f"{n} cards"


def resource_count(value):
    """Resources in a converted prefetch value."""
    if value is None:
        return 0
    if value.get("resourceType") == "Bundle":
        return value["total"]
    return 1


def strip_prefix(value, prefix):
    if isinstance(value, str) and value.startswith(prefix):
        return value[len(prefix):]
    return value


def convert_request(case_id, request, hook, keys, report):
    """The CDS Hooks 2.0 request for the service, and the resource types dropped."""
    unknown = [k for k in request if k not in REQUEST_KEYS and not ITEM_KEY.match(k)]
    if unknown:
        report.append(f"unknown top-level keys dropped: {', '.join(unknown)}")
    if request.get("hook") != hook:
        report.append(f"HOOK MISMATCH: the case says `{request.get('hook')}`, the service answers `{hook}`")
    context = dict(request["context"])
    context["patientId"] = strip_prefix(context.get("patientId"), "Patient/")
    if "encounterId" in context:
        context["encounterId"] = strip_prefix(context["encounterId"], "Encounter/")
    converted = {"hook": hook, "hookInstance": request["hookInstance"], "context": context}
    if request.get("prefetch") == {} and not any(ITEM_KEY.match(k) for k in request):
        # No prefetch at all (noPrefetch): kept as sent, the call is expected to be refused.
        converted["prefetch"] = {}
        return converted
    notes = []
    resources = []
    for where, value in prefetch_values(request):
        resources.extend(unwrap(value, where, notes))
    for note in notes:
        report.append(note)
    by_key = {k: [] for k in keys}
    dropped = {}
    for resource in resources:
        rtype = resource["resourceType"]
        key = KEY_OF_TYPE.get(rtype)
        if key in by_key:
            by_key[key].append(resource)
        else:
            dropped[rtype] = dropped.get(rtype, 0) + 1
    for rtype, count in sorted(dropped.items()):
        report.append(f"dropped {count} {rtype} (the service declares no prefetch key for it)")
    prefetch = {}
    for key in keys:
        if key == "patient":
            patients = by_key[key]
            if len(patients) > 1:
                raise SystemExit(f"{case_id}: {len(patients)} Patient resources; `patient` holds one")
            prefetch[key] = patients[0] if patients else None
        else:
            prefetch[key] = searchset(by_key[key])
    converted["prefetch"] = prefetch
    return converted


def expected_cards(case_id, group, row, stored):
    """Expected cards: stored summaries (legacy wording) when trusted, current titles otherwise."""
    count = row["spec_cards"]
    if stored is not None and row["verdict"] != "MISMATCH":
        cards = [{"summary": c["summary"], "indicator": c["indicator"]} for c in stored]
        if len(cards) != count:
            raise SystemExit(f"{case_id}: stored {len(cards)} cards but the spec predicts {count}")
        return cards, "stored"
    if group == "HelloWorld":
        title, indicator = TITLES[group], "info"
    elif group.startswith("OpioidCDSREC10"):
        title, indicator = REC10_TITLES[row["spec_card"] or "A"], "warning"
    else:
        title, indicator = TITLES[group], "warning"
    return [{"summary": title, "indicator": indicator} for _ in range(count)], "spec"


def read_aliases(path):
    """The legacy summaries of aliases.toml (keys of [summaries]); a minimal reader for the check."""
    if not path.exists():
        return None
    keys = set()
    for line in path.read_text(encoding="utf-8").splitlines():
        match = re.match(r'^\s*"((?:[^"\\]|\\.)*)"\s*=', line)
        if match:
            keys.add(match.group(1))
    return keys


def main():
    root = Path(__file__).resolve().parent.parent
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", type=Path, default=Path("/work/shared/data/opioid-cds"))
    parser.add_argument("--out", type=Path, default=root / "rules" / "opioid-cds" / "tests")
    args = parser.parse_args()

    expectations = json.loads((args.source / "case-expectations.json").read_text(encoding="utf-8"))
    rows = {row["case"]: row for row in expectations["cases"]}
    aliases = read_aliases(args.out / "aliases.toml")
    args.out.mkdir(parents=True, exist_ok=True)
    written = {}
    dropped_any = False
    mismatched_hooks = 0
    for path in sorted((args.source / "cases").glob("*.json")):
        case = json.loads(path.read_text(encoding="utf-8"))
        group, name = case["group"], case["name"]
        case_id = f"{group}__{name}"
        row = rows.get(case_id)
        if row is None:
            raise SystemExit(f"{case_id}: not in case-expectations.json")
        service, hook, keys = SERVICES[group]
        report = []
        request = convert_request(case_id, case["request"], hook, keys, report)
        stored = None
        if case.get("expected_response") is not None:
            stored = case["expected_response"].get("cards", [])
        if (stored is None) != (row["stored_cards"] is None) or (
            stored is not None and len(stored) != row["stored_cards"]
        ):
            raise SystemExit(f"{case_id}: stored cards disagree with case-expectations.json")
        expect = {}
        if case_id == "OpioidCDSREC08OrderSign__noPrefetch":
            expect["status"] = 412
            basis = "decision: 412"
        else:
            cards, basis = expected_cards(case_id, group, row, stored)
            expect["cards"] = cards
            if case_id in FACTS:
                expect["facts"] = FACTS[case_id]
            if case_id in WHY_NOT:
                expect["why_not"] = [
                    {"rule": rule, "condition": condition, **({"facts": facts} if facts else {})}
                    for rule, condition, facts in WHY_NOT[case_id]
                ]
            if basis == "stored" and aliases is not None:
                for card in cards:
                    if card["summary"] not in aliases and card["summary"] != TITLES.get(group):
                        report.append(f"stored summary has no alias: {card['summary']!r}")
        provenance = {
            "source": f"{IG} (CC0) at {IG_COMMIT}: test case {group}/{name}",
            "case_file": f"opioid-cds/cases/{path.name}",
            "group": group,
            "name": name,
            "stored_cards": None if stored is None else len(stored),
            "stored_summaries": None if stored is None else [c.get("summary") for c in stored],
            "verdict": row["verdict"],
            "expectation": {
                "stored": "the IG's stored response (legacy wording, matched through aliases.toml)",
                "spec": "the rule specification (section 10 of the opioid CDS reference)",
                "decision: 412": "refused: no prefetch and no FHIR server",
            }[basis],
            "converted_by": "tools/convert_opioid_cases.py",
        }
        if row["verdict"] == "MISMATCH":
            provenance["known_data_defect"] = (
                f"the stored response ({cards_text(len(stored))}) contradicts the IG logic; "
                f"this case asserts the specification's {cards_text(row['spec_cards'])}"
            )
        if case_id in REASONS:
            provenance["reason"] = REASONS[case_id]
        if row.get("spec_card"):
            provenance["spec_card"] = row["spec_card"]
        count = row["spec_cards"]
        description = (
            f"CDC opioid prescribing CDS, {group} test case `{name}`: "
            + ("refused with 412, no prefetch and no FHIR server" if "status" in expect
               else f"{cards_text(count)} expected")
            + f" ({row['verdict']})."
        )
        out = {
            "description": description,
            "service": service,
            "evaluation_time": EVALUATION_TIME,
            "expect": expect,
            "provenance": provenance,
            "request": request,
        }
        target = args.out / f"{name}.json"
        if target.name in written:
            raise SystemExit(f"{case_id}: {target.name} already written for {written[target.name]}")
        written[target.name] = case_id
        target.write_text(json.dumps(out, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        dropped_any |= any(r.startswith("dropped") for r in report)
        mismatched_hooks += sum(r.startswith("HOOK MISMATCH") for r in report)
        placed = ", ".join(f"{k} {resource_count(v)}" for k, v in request["prefetch"].items())
        status = "; ".join(report) if report else "nothing dropped"
        print(f"{case_id} -> {target.name} [{service}, expect {basis}] prefetch {{{placed}}}: {status}")
    print(
        f"{len(written)} cases written to {args.out}; "
        f"{'some' if dropped_any else 'no'} resource types dropped; "
        f"{mismatched_hooks} hook mismatch(es)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
