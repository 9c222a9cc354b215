//! Bytes -> HookRequest::from_json_bytes -> evaluation by a shipped service of the request's hook.
//! The harness is `cardinal_fuzz::hook_request` (fuzz/src/lib.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| cardinal_fuzz::hook_request(data));
