#!/usr/bin/env python3
"""Builds the product-level medication value sets of the starter rules (run once; output committed).

A rule that matches an ingredient code (RxNorm IN, e.g. naproxen 7258) misses what EHRs order:
products (RxNorm SCD/SBD, e.g. 849574 "Naproxen sodium 220 MG Oral Tablet"). These value sets list,
per ingredient, the ingredient codes and every product code found in public data whose RxNorm name
contains the ingredient:

* the eCQM value sets of `../shared/data/valuesets-ecqm/` (VSAC expansions published by NLM for the
  2024 eCQMs; US government work, free to use);
* the opioid-cds value sets and MME table of `../shared/data/opioid-cds/` (HL7/CDC implementation
  guide, CC0 1.0);
* the Synthea sample bundles of `../shared/data/synthea/` (Apache-2.0), whose MedicationRequests carry
  real RxNorm codes and names;
* the ingredient concepts (RxNorm IN/PIN) written by hand below.

RxNorm names are normalised: a product's name states its ingredients ("naproxen sodium 220 MG Oral
Tablet", "ibuprofen 200 MG / oxycodone hydrochloride 5 MG Oral Tablet"), so an ingredient's products
are the codes whose name contains the ingredient's name as a word. RxNorm content: courtesy of the
U.S. National Library of Medicine. Usage: python3 tools/build_ingredient_valuesets.py
"""
import glob
import gzip
import json
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(ROOT, "..", "shared", "data")
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"

# Ingredient concepts (RxNorm IN / PIN), with the word that names them in product names.
INGREDIENTS = {
    "warfarin": [("11289", "warfarin"), ("114194", "warfarin sodium")],
    "ibuprofen": [("5640", "ibuprofen")],
    "naproxen": [("7258", "naproxen"), ("142442", "naproxen sodium")],
    "diclofenac": [("3355", "diclofenac")],
    "celecoxib": [("140587", "celecoxib")],
    "meloxicam": [("41493", "meloxicam")],
    "ketorolac": [("35827", "ketorolac")],
    "indomethacin": [("5781", "indomethacin")],
    "metformin": [("6809", "metformin"), ("235743", "metformin hydrochloride")],
    # ACE inhibitors
    "benazepril": [("18867", "benazepril")],
    "captopril": [("1998", "captopril")],
    "enalapril": [("3827", "enalapril")],
    "fosinopril": [("50166", "fosinopril")],
    "lisinopril": [("29046", "lisinopril")],
    "quinapril": [("35208", "quinapril")],
    "ramipril": [("35296", "ramipril")],
    # Angiotensin II receptor blockers
    "candesartan": [("214354", "candesartan")],
    "irbesartan": [("83818", "irbesartan")],
    "losartan": [("52175", "losartan")],
    "olmesartan": [("321064", "olmesartan")],
    "telmisartan": [("73494", "telmisartan")],
    "valsartan": [("69749", "valsartan")],
}

# Product codes the earlier hand-written NSAID list of the warfarin-nsaid rule matched, whose names the
# public data here does not carry (so they are kept without a display rather than dropped).
EARLIER = {"nsaid-products": ["197805", "197806", "197807", "198013", "205323"]}

VALUE_SETS = [
    ("warfarin-nsaid", "warfarin-products", "Warfarin products",
     "Warfarin and every product containing it (RxNorm IN, PIN, SCD, SBD).", ["warfarin"]),
    ("warfarin-nsaid", "nsaid-products", "NSAID products",
     "Nonsteroidal anti-inflammatory drugs (ibuprofen, naproxen, diclofenac, celecoxib, meloxicam, "
     "ketorolac, indomethacin) and every product containing one, combinations included "
     "(RxNorm IN, PIN, SCD, SBD).",
     ["ibuprofen", "naproxen", "diclofenac", "celecoxib", "meloxicam", "ketorolac", "indomethacin"]),
    ("metformin-renal", "metformin-products", "Metformin products",
     "Metformin and every product containing it, combinations included (RxNorm IN, PIN, SCD, SBD).",
     ["metformin"]),
    ("hyperkalemia", "ace-inhibitor-arb-products", "ACE inhibitor and ARB products",
     "Angiotensin-converting-enzyme inhibitors (benazepril, captopril, enalapril, fosinopril, "
     "lisinopril, quinapril, ramipril) and angiotensin II receptor blockers (candesartan, irbesartan, "
     "losartan, olmesartan, telmisartan, valsartan), and every product containing one, combinations "
     "included (RxNorm IN, SCD, SBD).",
     ["benazepril", "captopril", "enalapril", "fosinopril", "lisinopril", "quinapril", "ramipril",
      "candesartan", "irbesartan", "losartan", "olmesartan", "telmisartan", "valsartan"]),
]


def known_products():
    """(code, name, source) of every RxNorm code with a name in the public data."""
    found = {}

    def add(code, name, source):
        if code and name and code not in found:
            found[code] = (name, source)

    for path in sorted(glob.glob(os.path.join(SHARED, "valuesets-ecqm", "*.json"))):
        vs = json.load(open(path))
        for c in vs.get("expansion", {}).get("contains", []):
            if c.get("system") == RXNORM:
                add(c["code"], c.get("display"), "VSAC " + vs.get("url", os.path.basename(path)))
    for path in sorted(glob.glob(os.path.join(SHARED, "opioid-cds", "valuesets", "*.json"))):
        vs = json.load(open(path))
        for c in vs.get("expansion", {}).get("contains", []):
            if c.get("system") == RXNORM:
                add(c["code"], c.get("display"), "opioid-cds " + vs.get("url"))
    mme = json.load(open(os.path.join(SHARED, "opioid-cds", "mme-table.json")))
    for row in mme.get("drug_ingredients", []):
        add(row["drug_rxcui"], row["drug_name"], "opioid-cds mme-table.json (OMTKData)")
    for path in sorted(glob.glob(os.path.join(SHARED, "synthea", "*.json.gz"))):
        bundle = json.load(gzip.open(path))
        for entry in bundle.get("entry", []):
            concept = entry["resource"].get("medicationCodeableConcept") or {}
            for c in concept.get("coding", []):
                if c.get("system") == RXNORM:
                    add(c["code"], c.get("display"), "Synthea sample data")
    return found


def main():
    products = known_products()
    for folder, vs_id, title, description, ingredients in VALUE_SETS:
        contains = {}
        for ingredient in ingredients:
            for code, name in INGREDIENTS[ingredient]:
                contains[code] = (name, "RxNorm ingredient concept")
            word = re.compile(r"\b" + re.escape(ingredient) + r"\b", re.IGNORECASE)
            for code, (name, source) in products.items():
                if word.search(name):
                    contains.setdefault(code, (name, source))
        for code in EARLIER.get(vs_id, []):
            contains.setdefault(code, (None, "earlier hand-written list of the rule (name not in the public data here)"))
        vs = {
            "resourceType": "ValueSet",
            "id": vs_id,
            "url": f"http://cardinalcds.org/fhir/ValueSet/{vs_id}",
            "version": "1.0.0",
            "name": title.replace(" ", ""),
            "title": title,
            "status": "active",
            "publisher": "Cardinal clinical informatics",
            "description": description + " Built by tools/build_ingredient_valuesets.py from public "
            "value sets (VSAC eCQM expansions, HL7/CDC opioid-cds) and Synthea sample data; RxNorm "
            "courtesy of the U.S. National Library of Medicine. The source of each code is in its "
            "designation.",
            "expansion": {
                "timestamp": "2025-01-01T00:00:00Z",
                "contains": [
                    dict({"system": RXNORM, "code": code},
                         **({"display": name} if name else {}),
                         designation=[{"value": "source: " + source}])
                    for code, (name, source) in sorted(contains.items(), key=lambda kv: int(kv[0]))
                ],
            },
        }
        out = os.path.join(ROOT, "rules", folder, "valuesets", vs_id + ".json")
        with open(out, "w") as f:
            json.dump(vs, f, indent=1)
            f.write("\n")
        print(f"{out}: {len(contains)} codes")


if __name__ == "__main__":
    main()
