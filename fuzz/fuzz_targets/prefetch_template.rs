//! `TEMPLATE\nHOOK\nCONTEXT` -> Template::parse -> render.
//! The harness is `cardinal_fuzz::prefetch_template` (fuzz/src/lib.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| cardinal_fuzz::prefetch_template(data));
