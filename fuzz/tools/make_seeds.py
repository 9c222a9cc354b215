#!/usr/bin/env python3
"""Writes fuzz/seeds/<target>/ from the project's fixtures (run from anywhere; Python 3.11+).

- hook_request: the hook requests of tests/fixtures/requests/, the CDS Hooks examples of
  tests/fixtures/cds-hooks-examples/ (requests and other documents alike), and the `request` of every
  rule test case (rules/**/tests/*.json).
- fhir_reader: every prefetch answer and `context.draftOrders` Bundle of those requests.
- fhir_dates: every distinct shape of FHIR date/dateTime/instant found in those files (digits
  stand for any digit; the first value of each shape is kept), plus the edge cases below.
- prefetch_template: every prefetch template of rules/**/service.toml, of the prefetch test
  fixtures and of the CDS Hooks examples, as `TEMPLATE\\nHOOK\\nCONTEXT` with a context of that hook.

Seeds larger than MAX_SEED bytes are skipped (they slow the fuzzer down more than they teach it).
The output is deterministic: rerunning it on unchanged fixtures changes nothing.
"""

import hashlib
import json
import re
import shutil
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SEEDS = ROOT / "fuzz" / "seeds"
MAX_SEED = 48 * 1024

DATE = re.compile(r"^\d{4}(-\d{2}(-\d{2}(T[0-9:.]+(Z|[+-]\d{2}:\d{2})?)?)?)?$")
EDGE_DATES = [
    "2023", "2023-05", "2023-05-01", "2023-05-01T10:30:00Z", "2023-05-01T10:30:00.123+05:30",
    "2023-05-01T10:30:00", "2024-02-29", "2023-02-29", "0000-01-01", "9999-12-31T23:59:59-14:00",
    "2023-13-01", "2023-05-01T24:00:00Z", "2023-05-01 10:30:00Z", "2023-05-01t10:30:00z",
]
CONTEXTS = {
    "patient-view": {"userId": "Practitioner/1", "patientId": "p1", "encounterId": "e1"},
    "order-sign": {"userId": "Practitioner/1", "patientId": "p1", "encounterId": "e1",
                   "draftOrders": {"resourceType": "Bundle", "entry": []}},
    "order-select": {"userId": "PractitionerRole/1", "patientId": "p1", "encounterId": "e1",
                     "selections": ["MedicationRequest/m1"],
                     "draftOrders": {"resourceType": "Bundle", "entry": []}},
    "encounter-start": {"userId": "Patient/1", "patientId": "p1", "encounterId": "e 1/&x"},
}


def compact(value) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def write(target: str, name: str, data: bytes, seen: dict) -> None:
    if len(data) > MAX_SEED:
        return
    digest = hashlib.sha1(data).hexdigest()
    if digest in seen.setdefault(target, set()):
        return
    seen[target].add(digest)
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", name)[:80]
    (SEEDS / target / f"{safe}-{digest[:8]}").write_bytes(data)


def strings(value):
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from strings(v)


def date_shape(text: str) -> str:
    return re.sub(r"\d", "9", text)


def main() -> None:
    for target in ["hook_request", "fhir_reader", "fhir_dates", "prefetch_template"]:
        shutil.rmtree(SEEDS / target, ignore_errors=True)
        (SEEDS / target).mkdir(parents=True)
    seen: dict = {}
    documents = []  # (name, parsed JSON)

    for path in sorted((ROOT / "tests/fixtures/requests").glob("*.json")):
        write("hook_request", path.stem, path.read_bytes(), seen)
        documents.append((path.stem, json.loads(path.read_text())))
    for path in sorted((ROOT / "tests/fixtures/cds-hooks-examples").glob("*.json")):
        write("hook_request", "example-" + path.stem, path.read_bytes(), seen)
        documents.append(("example-" + path.stem, json.loads(path.read_text())))
    for path in sorted(ROOT.glob("rules/**/tests/*.json")):
        case = json.loads(path.read_text())
        if isinstance(case, dict) and isinstance(case.get("request"), dict):
            name = f"{path.parent.parent.name}-{path.stem}"
            write("hook_request", name, compact(case["request"]), seen)
            documents.append((name, case["request"]))

    dates = {}
    for name, doc in documents:
        request = doc if isinstance(doc, dict) else {}
        prefetch = request.get("prefetch")
        if isinstance(prefetch, dict):
            for key, answer in sorted(prefetch.items()):
                write("fhir_reader", f"{name}-{key}", compact(answer), seen)
        context = request.get("context")
        if isinstance(context, dict) and isinstance(context.get("draftOrders"), dict):
            write("fhir_reader", f"{name}-draftOrders", compact(context["draftOrders"]), seen)
        for text in strings(doc):
            if DATE.match(text):
                dates.setdefault(date_shape(text), text)
    for shape, text in sorted(dates.items()):
        write("fhir_dates", shape, text.encode(), seen)
    for text in EDGE_DATES:
        write("fhir_dates", "edge-" + text, text.encode(), seen)

    manifests = sorted(ROOT.glob("rules/**/service.toml"))
    manifests += sorted(ROOT.glob("tests/fixtures/rules-prefetch*/**/service.toml"))
    templates = []  # (name, template, hook)
    for path in manifests:
        manifest = tomllib.loads(path.read_text())
        for key, template in sorted(manifest.get("prefetch", {}).items()):
            if isinstance(template, dict):  # a key with options: { template = "...", ... }
                template = template.get("template") or template.get("query")
            if isinstance(template, str):
                templates.append((f"{path.parent.name}-{key}", template, manifest.get("hook", "")))
    for name, doc in documents:
        if name.startswith("example-") and isinstance(doc, dict):
            for service in doc.get("services", []):
                for key, template in sorted(service.get("prefetch", {}).items()):
                    templates.append((f"{name}-{key}", template, service.get("hook", "")))
    for name, template, hook in templates:
        context = CONTEXTS.get(hook, CONTEXTS["patient-view"])
        data = f"{template}\n{hook}\n".encode() + compact(context)
        write("prefetch_template", name, data, seen)

    for target in sorted(seen):
        print(f"{target}: {len(seen[target])} seeds")


if __name__ == "__main__":
    main()
