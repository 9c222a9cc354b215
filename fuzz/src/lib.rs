//! The fuzz harness: one function per fuzz target, taking the fuzzer's bytes.
//!
//! Each function calls Cardinal's public API the way a hook call reaches it, and asserts a few
//! invariants that hold for every input; a panic (or an abort, e.g. a stack overflow) is a bug in
//! Cardinal. The same functions are called by the fuzz targets (`fuzz_targets/*.rs`) and, through
//! `#[path]`, by the main crate's `tests/fuzz_regressions.rs`, which replays every committed crash.
//! So this file uses only what the main crate's tests have too: `cardinal`, `serde_json`, `chrono`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use cardinal::cds_hooks::HookRequest;
use cardinal::config::Config;
use cardinal::evaluator::{CallOptions, Cardinal};
use cardinal::fhir::{
    Origin, Prefetch, PrefetchValue, Resource, parse_fhir_date, parse_fhir_instant,
};
use cardinal::patient::PatientContext;
use cardinal::prefetch::Template;
use chrono::{DateTime, FixedOffset, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Utc};
use serde_json::{Map, Value};

/// A target's harness: the fuzzer's bytes in, a panic for a bug.
pub type Harness = fn(&[u8]);

/// Every target, by name: the directory names under `fuzz/seeds/` and `fuzz/regressions/`.
pub const TARGETS: [(&str, Harness); 4] = [
    ("hook_request", hook_request),
    ("fhir_reader", fhir_reader),
    ("fhir_dates", fhir_dates),
    ("prefetch_template", prefetch_template),
];

// ---------------------------------------------------------------------------------------------
// hook_request: the whole path of a hook call (request reader, FHIR reader, patient index, rules).

/// The shipped services, loaded once, and their ids by hook.
struct Services {
    cardinal: Cardinal,
    by_hook: BTreeMap<String, Vec<String>>,
    any: String,
}

/// The repository's `rules/`: the first ancestor of this crate's directory that has it (the fuzz
/// crate lives in `fuzz/`, the main crate's tests at the root).
fn rules_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .map(|dir| dir.join("rules"))
        .find(|rules| rules.join("patient-greeting/service.toml").is_file())
        .expect("the repository's rules/ directory")
}

fn services() -> &'static Services {
    static SERVICES: OnceLock<Services> = OnceLock::new();
    SERVICES.get_or_init(|| {
        let config = Config {
            rules_dir: rules_dir(),
            // Requests are evaluated at a fixed time, so crashes reproduce.
            ..Config::default().development()
        };
        let cardinal = Cardinal::load(config).expect("the shipped rules load");
        let mut by_hook: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for service in cardinal.rule_set().registry().services() {
            by_hook
                .entry(service.hook().to_owned())
                .or_default()
                .push(service.id().to_owned());
        }
        for ids in by_hook.values_mut() {
            ids.sort();
        }
        let any = by_hook
            .values()
            .flatten()
            .min()
            .cloned()
            .expect("at least one service");
        Services {
            cardinal,
            by_hook,
            any,
        }
    })
}

/// The evaluation time is pinned, so a crash reproduces whatever the day.
fn evaluation_time() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2023, 5, 1, 12, 0, 0)
        .single()
        .expect("a valid time")
}

/// Bytes -> `HookRequest::from_json_bytes`; a request that parses is evaluated in-process by a
/// shipped service of its hook (picked by `hookInstance`, so the fuzzer reaches every service), or
/// by any service when none has that hook (the refusal path).
pub fn hook_request(data: &[u8]) {
    let request = match HookRequest::from_json_bytes(data) {
        Ok(request) => request,
        Err(error) => {
            let _ = error.to_string();
            return;
        }
    };
    let services = services();
    let service_id = match services.by_hook.get(&request.hook) {
        Some(ids) => {
            let pick = request.hook_instance.bytes().fold(0usize, |h, b| {
                h.wrapping_mul(31).wrapping_add(usize::from(b))
            });
            &ids[pick % ids.len()]
        }
        None => &services.any,
    };
    let options = CallOptions {
        evaluation_time: Some(evaluation_time()),
        ..CallOptions::default()
    };
    match services.cardinal.evaluate(service_id, request, options) {
        Ok(evaluation) => {
            // What the HTTP transport sends back.
            let _body = serde_json::to_vec(&evaluation.response).expect("a response serializes");
        }
        Err(error) => {
            let _ = (error.http_status(), error.to_string());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// fhir_reader: one prefetch answer (a resource, a Bundle or null) as read from a FHIR server.

/// UTF-8 bytes -> `PrefetchValue::from_json(text, Origin::Fetched)`; every resource read is checked
/// against its full JSON tree, then the answer is indexed as a patient's record.
pub fn fhir_reader(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(value) = PrefetchValue::from_json(text, Origin::Fetched) else {
        return;
    };
    let _ = value.is_operation_outcome();
    match &value {
        PrefetchValue::Null => {}
        PrefetchValue::Resource(resource) => check_resource(resource),
        PrefetchValue::Bundle(resources) => resources.iter().for_each(check_resource),
    }
    let mut prefetch = Prefetch::new();
    prefetch.insert("fuzz".to_owned(), value);
    let patient = PatientContext::build(Map::new(), prefetch);
    let _ = patient.patient().map(Resource::reference);
    for resource in patient.record() {
        let codes: Vec<String> = resource
            .codings()
            .filter(|(_, code)| !code.contains('|'))
            .map(|(system, code)| format!("{system}|{code}"))
            .collect();
        let codes: Vec<&str> = codes.iter().map(String::as_str).collect();
        let hits = patient.newest_first(resource.resource_type(), &codes);
        assert!(
            codes.is_empty() || hits.iter().any(|r| r.text() == resource.text()),
            "a resource is not found by its own codes"
        );
    }
}

/// The fields the reader indexes in one pass agree with the resource's full JSON tree.
fn check_resource(resource: &Resource) {
    let json = resource.json();
    assert!(
        json.is_object(),
        "the JSON text kept for a {} resource does not parse back to an object",
        resource.resource_type()
    );
    assert_eq!(
        json.get("resourceType").and_then(Value::as_str),
        Some(resource.resource_type()),
        "resourceType"
    );
    assert_eq!(json.get("id").and_then(Value::as_str), resource.id(), "id");
    assert_eq!(
        json.get("status").and_then(Value::as_str),
        resource.status(),
        "status"
    );
    let _ = resource.reference();
    let _ = resource.main_concept();
    let _ = resource.clinical_status().count();
    // `has_code` reads `a|b` as system `a`, code `b`: a code with a `|` cannot be asked for alone.
    for (_, code) in resource.codings().filter(|(_, code)| !code.contains('|')) {
        assert!(resource.has_code(code), "has_code of its own code {code:?}");
    }
    match (resource.date(), resource.instant()) {
        (Some(date), Some(instant)) => {
            assert_eq!(parse_fhir_instant(date), Some(instant), "date {date:?}");
        }
        (None, None) => {}
        other => panic!("date and instant disagree: {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// fhir_dates: `parse_fhir_date` and `parse_fhir_instant`.

/// The bytes are read twice: as a string (lossily, so that any byte sequence is a test), and as
/// the parts of a well-formed FHIR date/dateTime whose value chrono computes independently.
pub fn fhir_dates(data: &[u8]) {
    check_date_text(&String::from_utf8_lossy(data));
    check_well_formed(data);
}

/// `d` stands for an ASCII digit, anything else for itself.
fn has_shape(s: &str, shape: &str) -> bool {
    s.len() == shape.len()
        && s.bytes().zip(shape.bytes()).all(|(c, p)| match p {
            b'd' => c.is_ascii_digit(),
            _ => c == p,
        })
}

fn midnight(date: NaiveDate) -> DateTime<Utc> {
    date.and_time(NaiveTime::MIN).and_utc()
}

fn check_date_text(s: &str) {
    let date = parse_fhir_date(s);
    let instant = parse_fhir_instant(s);
    if s.len() <= 10 {
        assert_eq!(instant, date.map(midnight), "a date without a time: {s:?}");
    }
    let number = |range: std::ops::Range<usize>| s[range].parse::<u32>().expect("digits");
    let expected = if has_shape(s, "dddd") {
        Some(NaiveDate::from_ymd_opt(number(0..4) as i32, 1, 1))
    } else if has_shape(s, "dddd-dd") {
        Some(NaiveDate::from_ymd_opt(
            number(0..4) as i32,
            number(5..7),
            1,
        ))
    } else if has_shape(s, "dddd-dd-dd") {
        Some(NaiveDate::parse_from_str(s, "%Y-%m-%d").ok())
    } else {
        None
    };
    if let Some(expected) = expected {
        assert_eq!(date, expected, "{s:?}");
    }
}

/// Reads the fuzzer's bytes as small numbers (zero once they run out).
struct Bytes<'a>(std::slice::Iter<'a, u8>);

impl Bytes<'_> {
    fn below(&mut self, n: u32) -> u32 {
        u32::from(self.0.next().copied().unwrap_or(0)) % n
    }
}

/// A FHIR date, partial date or dateTime built from the bytes (with out-of-range months, days,
/// hours, minutes and offsets now and then), and its value computed by chrono.
fn check_well_formed(data: &[u8]) {
    let mut b = Bytes(data.iter());
    let year = (b.below(256) * 256 + b.below(256)) % 10_000;
    let month = b.below(14);
    let day = b.below(33);
    let (hour, minute, second) = (b.below(25), b.below(61), b.below(60));
    let fraction: String = (0..b.below(10))
        .map(|_| char::from(b'0' + b.below(10) as u8))
        .collect();
    let (offset_hour, offset_minute) = (b.below(25), b.below(61));
    let shape = b.below(7);
    let date = NaiveDate::from_ymd_opt(year as i32, month, day);
    let time = NaiveTime::from_hms_opt(hour, minute, second).map(|t| {
        let nanos: u32 = format!("{fraction:0<9}").parse().expect("digits");
        t + chrono::Duration::nanoseconds(i64::from(nanos))
    });
    let dot = if fraction.is_empty() { "" } else { "." };
    let day_text = format!("{year:04}-{month:02}-{day:02}");
    let time_text = format!("T{hour:02}:{minute:02}:{second:02}{dot}{fraction}");
    let offset_seconds = (offset_hour * 3600 + offset_minute * 60) as i32;
    let offset_ok = offset_hour < 24 && offset_minute < 60;
    let (text, expected_date, expected_instant) = match shape {
        0 => {
            let date = NaiveDate::from_ymd_opt(year as i32, 1, 1);
            (format!("{year:04}"), date, date.map(midnight))
        }
        1 => {
            let date = NaiveDate::from_ymd_opt(year as i32, month, 1);
            (format!("{year:04}-{month:02}"), date, date.map(midnight))
        }
        2 => (day_text, date, date.map(midnight)),
        // A time but no offset: not valid FHIR, but EHRs send it and it is read as UTC.
        3 => {
            let instant = date
                .zip(time)
                .map(|(d, t)| NaiveDateTime::new(d, t).and_utc());
            (format!("{day_text}{time_text}"), date, instant)
        }
        4 => {
            let instant = date
                .zip(time)
                .map(|(d, t)| NaiveDateTime::new(d, t).and_utc());
            (format!("{day_text}{time_text}Z"), date, instant)
        }
        sign => {
            let (symbol, seconds) = if sign == 5 {
                ('+', offset_seconds)
            } else {
                ('-', -offset_seconds)
            };
            let offset = FixedOffset::east_opt(seconds).filter(|_| offset_ok);
            let instant = date.zip(time).zip(offset).and_then(|((d, t), o)| {
                o.from_local_datetime(&NaiveDateTime::new(d, t))
                    .single()
                    .map(|t| t.with_timezone(&Utc))
            });
            let text = format!("{day_text}{time_text}{symbol}{offset_hour:02}:{offset_minute:02}");
            (text, date, instant)
        }
    };
    check_date_text(&text);
    assert_eq!(parse_fhir_date(&text), expected_date, "{text:?}");
    assert_eq!(parse_fhir_instant(&text), expected_instant, "{text:?}");
}

// ---------------------------------------------------------------------------------------------
// prefetch_template: parsing and rendering prefetch templates.

/// The bytes as `TEMPLATE\nHOOK\nCONTEXT`, where CONTEXT is a JSON object (anything else gives every
/// usual context field the value of that text). A template that parses must render only
/// percent-encoded values: every character that is not unreserved comes from the template itself,
/// so a context value can never add a path segment or a query parameter.
pub fn prefetch_template(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mut lines = text.splitn(3, '\n');
    let source = lines.next().unwrap_or_default();
    let hook = lines.next().unwrap_or("patient-view");
    let context_text = lines.next().unwrap_or_default();
    let context = match serde_json::from_str(context_text) {
        Ok(Value::Object(context)) => context,
        _ => default_context(context_text),
    };
    let template = match Template::parse(source, hook) {
        Ok(template) => template,
        Err(error) => {
            assert!(error.offset <= source.len(), "error offset out of range");
            assert_eq!(source.get(error.offset..error.offset + 2), Some("{{"));
            let _ = error.to_string();
            return;
        }
    };
    for token in template.tokens() {
        let shown = token.to_string();
        let again = Template::parse(&shown, hook)
            .unwrap_or_else(|e| panic!("token {shown} does not parse back: {e}"));
        assert_eq!(again.tokens().collect::<Vec<_>>(), [token], "{shown}");
    }
    match template.render(&context) {
        Ok(url) => {
            let literal = literal_text(source);
            assert_eq!(reserved(&url), reserved(&literal), "{url:?}");
            if template.tokens().next().is_none() {
                assert_eq!(url, source);
            }
        }
        Err(error) => {
            let _ = error.to_string();
        }
    }
}

fn default_context(value: &str) -> Map<String, Value> {
    let mut context = Map::new();
    context.insert("userId".into(), format!("Practitioner/{value}").into());
    for field in ["patientId", "encounterId", "medication", "appointments"] {
        context.insert(field.into(), value.into());
    }
    context
}

/// The template without its `{{...}}` tokens.
fn literal_text(source: &str) -> String {
    let mut out = String::new();
    let mut rest = source;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            break;
        };
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    out
}

/// Counts of each character that a percent-encoded value cannot contain.
fn reserved(text: &str) -> BTreeMap<char, usize> {
    let mut counts = BTreeMap::new();
    for c in text.chars() {
        if !(c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '~' | '%')) {
            *counts.entry(c).or_default() += 1;
        }
    }
    counts
}
