//! UTF-8 bytes -> PrefetchValue::from_json (a FHIR server's answer) -> indexed fields -> patient index.
//! The harness is `cardinal_fuzz::fhir_reader` (fuzz/src/lib.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| cardinal_fuzz::fhir_reader(data));
