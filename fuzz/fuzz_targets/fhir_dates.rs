//! Bytes -> parse_fhir_date / parse_fhir_instant, on the raw text and on a well-formed date built from them.
//! The harness is `cardinal_fuzz::fhir_dates` (fuzz/src/lib.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| cardinal_fuzz::fhir_dates(data));
