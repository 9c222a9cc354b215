//! How deeply input may nest, and the check that enforces it.
//!
//! serde_json guards its recursion (128 levels) only inside one deserializer. Cardinal skips resource
//! fields as raw text (which serde does without any depth limit), re-reads some of that text later
//! with a fresh deserializer (a Bundle whose `entry` comes before `resourceType`, a CDS Hooks 1.0
//! wrapper, a rule reading a resource), and a value too deep for that second read would be lost
//! silently, or, when the re-reading itself recurses, overflow the stack and abort the process. So
//! Cardinal bounds depth itself, up front, where it can still name the field.

use std::fmt;

/// How many Bundles or CDS Hooks 1.0 `{"resource": ...}` wrappers one prefetch answer may nest. Real
/// data nests two or three (a batch of searchsets); each level is a recursion of the reader.
pub const MAX_NESTING: usize = 16;

/// How many arrays/objects deep one JSON value Cardinal keeps may be: a resource (counted from the
/// resource itself), `context`, `extension`, `fhirAuthorization`, a feedback entry. Real FHIR stays
/// under 20 (nested Questionnaire items, extensions of extensions). Kept well under serde_json's 128 so
/// that every later parse of kept text succeeds, and so that building, converting and dropping the
/// trees (all recursive) stays shallow.
pub const MAX_JSON_DEPTH: usize = 64;

/// A value nests deeper than Cardinal reads. Displayed after the field's name:
/// "`prefetch.opioids` nests Bundles or resource wrappers deeper than 16 levels".
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TooDeep {
    #[error("nests Bundles or resource wrappers deeper than {MAX_NESTING} levels")]
    Nesting,
    #[error("nests JSON deeper than {MAX_JSON_DEPTH} levels")]
    Json,
    /// Text the reader can keep but JSON cannot represent: a lone UTF-16 surrogate escape
    /// (`"\ud800"`) or a number beyond a 64-bit float (`1e400`). Kept, it would read as nothing
    /// when a rule opens the resource, silently hiding every other field.
    #[error(
        "holds a string or number JSON cannot represent (a lone surrogate escape, or a number out of range)"
    )]
    Unrepresentable,
}

impl TooDeep {
    /// The message for `field`.
    pub fn at(self, field: impl fmt::Display) -> String {
        format!("`{field}` {self}")
    }
}

/// Whether the JSON text `text` opens more than `limit` arrays/objects inside one another. The text is
/// expected to be valid JSON (it is only scanned for brackets outside strings); for invalid text the
/// answer is merely approximate, and the parse that follows reports the syntax error.
pub fn nests_deeper_than(text: &str, limit: usize) -> bool {
    let bytes = text.as_bytes();
    // Cheap answers first, as this runs on every field of every resource: only an array or object
    // nests, each level takes two bytes, and `limit + 1` levels need that many opening brackets
    // (counted in u8 lanes, which vectorises; brackets inside strings only make the count high).
    let first = bytes
        .iter()
        .find(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'));
    if bytes.len() <= limit.saturating_mul(2) || !matches!(first, Some(b'[' | b'{')) {
        return false;
    }
    let opening: usize = bytes
        .chunks(255)
        .map(|chunk| {
            usize::from(
                chunk
                    .iter()
                    .fold(0u8, |n, &b| n + u8::from(b == b'[' || b == b'{')),
            )
        })
        .sum();
    if opening <= limit {
        return false;
    }
    let mut depth = 0usize;
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        i += 1;
        match b {
            b'"' => {
                // Skip the string: it ends at the first quote not escaped by a backslash.
                loop {
                    let Some(rest) = bytes.get(i..) else {
                        return false;
                    };
                    match memchr::memchr2(b'"', b'\\', rest) {
                        Some(at) if rest.get(at) == Some(&b'\\') => i += at + 2,
                        Some(at) => {
                            i += at + 1;
                            break;
                        }
                        None => return false,
                    }
                }
            }
            b'[' | b'{' => {
                depth += 1;
                if depth > limit {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

/// What [`scan_kept`] found in a kept value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scan {
    /// Nothing to worry about.
    Plain,
    /// Nests deeper than the limit.
    TooDeep,
    /// May hold what [`TooDeep::Unrepresentable`] names (a `\u` escape starting with `d`/`D` in a
    /// string, a number with an exponent or of more than 300 digits): parse it in full to know.
    Suspect,
}

/// One pass over valid JSON text that Cardinal keeps: whether it nests deeper than `limit`
/// arrays/objects, and whether it may hold an unrepresentable string or number. Precise where
/// a search for digits and `e` is coarse: numbers are looked at only outside strings and escapes only
/// inside them, so the digits and letters of ids (`"5e3f…"`) never send a field to a full parse.
/// For text that is not JSON the answer is approximate (the parse that follows reports the error).
pub fn scan_kept(text: &str, limit: usize) -> Scan {
    if clearly_plain(text.as_bytes(), limit) {
        return Scan::Plain;
    }
    scan_precisely(text.as_bytes(), limit)
}

/// The cheap answer for most fields: too few brackets to nest `limit` deep, too few digits for a
/// 301-digit run, no digit followed by an exponent (`5e3`, `1E+9`, `2e-4`) and no `\u` escape, counted
/// over the bytes without telling strings from the rest (so it vectorises). Ids and references
/// (`"5e3f…"`) still fail it, and are short: the precise scan takes those.
fn clearly_plain(bytes: &[u8], limit: usize) -> bool {
    // Backslashes are rare in FHIR text: a plain search beats building a substring searcher.
    if memchr::memchr_iter(b'\\', bytes).any(|at| bytes.get(at + 1) == Some(&b'u')) {
        return false;
    }
    let is_digit = |b: u8| b.wrapping_sub(b'0') < 10;
    let mut brackets = 0usize;
    let mut digits = 0usize;
    let mut exponent = false;
    // u8 lanes per chunk of 255 bytes, so the counts vectorise without overflowing.
    for (start, chunk) in (0..).step_by(255).zip(bytes.chunks(255)) {
        let next = bytes.get(start + 1..).unwrap_or_default();
        let after = bytes.get(start + 2..).unwrap_or_default();
        let (mut open, mut digit, mut exp) = (0u8, 0u8, 0u8);
        for ((&a, &b), &c) in chunk.iter().zip(next).zip(after) {
            open += u8::from(a == b'[' || a == b'{');
            digit += u8::from(is_digit(a));
            exp |= u8::from(is_digit(a))
                & u8::from((b | 0x20) == b'e')
                & u8::from(is_digit(c) || c == b'+' || c == b'-');
        }
        brackets += usize::from(open);
        digits += usize::from(digit);
        exponent |= exp != 0;
    }
    // The last two bytes (no window of three starts there) are a closing bracket or quote in valid
    // JSON, or the last digits of a bare number: counted apart.
    for &b in bytes
        .get(bytes.len().saturating_sub(2)..)
        .unwrap_or_default()
    {
        brackets += usize::from(b == b'[' || b == b'{');
        digits += usize::from(is_digit(b));
    }
    brackets <= limit && digits <= 300 && !exponent
}

fn scan_precisely(bytes: &[u8], limit: usize) -> Scan {
    let mut depth = 0usize;
    let mut digits = 0usize;
    let mut suspect = false;
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        i += 1;
        match b {
            b'"' => {
                digits = 0;
                // Skip the string; look at its escapes only.
                loop {
                    let Some(rest) = bytes.get(i..) else {
                        return Scan::Plain;
                    };
                    match memchr::memchr2(b'"', b'\\', rest) {
                        Some(at) if rest.get(at) == Some(&b'\\') => {
                            if rest.get(at + 1) == Some(&b'u')
                                && matches!(rest.get(at + 2), Some(b'd' | b'D'))
                            {
                                suspect = true;
                            }
                            i += at + 2;
                        }
                        Some(at) => {
                            i += at + 1;
                            break;
                        }
                        None => return Scan::Plain,
                    }
                }
            }
            b'0'..=b'9' => {
                digits += 1;
                if digits > 300 {
                    suspect = true;
                }
            }
            // An exponent: right after a digit, before a digit or sign.
            b'e' | b'E'
                if digits > 0
                    && bytes.get(i.wrapping_sub(2)).is_some_and(u8::is_ascii_digit)
                    && matches!(bytes.get(i), Some(b'0'..=b'9' | b'+' | b'-')) =>
            {
                suspect = true
            }
            b'[' | b'{' => {
                digits = 0;
                depth += 1;
                if depth > limit {
                    return Scan::TooDeep;
                }
            }
            b']' | b'}' => {
                digits = 0;
                depth = depth.saturating_sub(1);
            }
            // A number's sign and point keep its digits counting (`-0.5`, `12.5e3`).
            b'-' | b'.' => {}
            _ => digits = 0,
        }
    }
    if suspect { Scan::Suspect } else { Scan::Plain }
}

/// [`TooDeep::Json`] when `text` nests deeper than [`MAX_JSON_DEPTH`].
pub fn check_json_depth(text: &str) -> Result<(), TooDeep> {
    if nests_deeper_than(text, MAX_JSON_DEPTH) {
        Err(TooDeep::Json)
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nested(levels: usize) -> String {
        "[".repeat(levels) + "]".repeat(levels).as_str()
    }

    #[test]
    fn the_kept_scan_is_precise_about_numbers_and_escapes() {
        let scan = |t: &str| scan_kept(t, 3);
        // Ids and text: digits before an `e`, inside strings, are no number.
        assert_eq!(
            scan(r#"{"id": "5e3f9a0e-1d2e", "ref": "urn:uuid:0e5e", "v": 12.5}"#),
            Scan::Plain
        );
        assert_eq!(scan(r#"{"a": "\u00e9 \"[[[[[\\", "b": [1]}"#), Scan::Plain);
        assert_eq!(scan(r#"{"a": "\ud800"}"#), Scan::Suspect);
        assert_eq!(scan(r#"{"a": "x\uDFFF"}"#), Scan::Suspect);
        assert_eq!(scan(r#"{"a": 1e400}"#), Scan::Suspect);
        assert_eq!(scan(r#"{"a": [-2.5E+3]}"#), Scan::Suspect);
        assert_eq!(scan(r#"{"a": true, "b": false, "c": null}"#), Scan::Plain);
        assert_eq!(scan(&format!("[{}]", "9".repeat(301))), Scan::Suspect);
        assert_eq!(scan(&format!("[0.{}]", "1".repeat(300))), Scan::Suspect);
        assert_eq!(scan(&format!("[{}]", "9".repeat(300))), Scan::Plain);
        assert_eq!(scan("[[[]]]"), Scan::Plain);
        assert_eq!(scan("[[[[]]]]"), Scan::TooDeep);
        assert_eq!(scan(r#"[{"a": "]]]]"}, [[1]]]"#), Scan::Plain);
        // Not JSON: no panic, no claim.
        assert_eq!(scan(r#"[ "abc\"#), Scan::Plain);
        assert_eq!(scan(r#"[ "abc"#), Scan::Plain);
        assert_eq!(scan(""), Scan::Plain);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig {
            cases: 2_000,
            failure_persistence: None,
            ..proptest::prelude::ProptestConfig::default()
        })]

        /// The shortcut never hides what the precise scan would find.
        #[test]
        fn the_shortcut_agrees_with_the_precise_scan(
            text in "[\\[\\]{}\"\\\\u0-9eE+.:, dDa-f-]{0,400}",
            limit in 0usize..6,
        ) {
            if clearly_plain(text.as_bytes(), limit) {
                proptest::prop_assert_eq!(scan_precisely(text.as_bytes(), limit), Scan::Plain);
            }
        }
    }

    #[test]
    fn counts_brackets_outside_strings_only() {
        assert!(!nests_deeper_than(&nested(3), 3));
        assert!(nests_deeper_than(&nested(4), 3));
        assert!(!nests_deeper_than(r#"{"a": "[[[[[[[[", "b": [1]}"#, 2));
        assert!(!nests_deeper_than(r#"{"a": "\"[[[[[[[[\\", "b": [1]}"#, 2));
        assert!(nests_deeper_than(r#"{"a": "\"", "b": [{"c": [1]}]}"#, 3));
        assert!(!nests_deeper_than(r#"[{}, {}, [], [[]], {"a": {}}]"#, 3));
        assert!(nests_deeper_than(
            r#"[{}, {}, [], [[]], {"a": {"b": []}}]"#,
            3
        ));
        // Unterminated text (not JSON): no panic, no claim.
        assert!(!nests_deeper_than(r#"[ "abc\"#, 1));
        assert!(!nests_deeper_than(r#"[ "abc\\"#, 1));
        assert!(!nests_deeper_than("", 0));
        assert!(nests_deeper_than(" \n\t[[[]]]", 2));
        assert!(!nests_deeper_than(r#""[[[[[[[[[[""#, 2));
    }

    #[test]
    fn the_json_limit_is_exact_and_handles_very_deep_text() {
        assert_eq!(check_json_depth(&nested(MAX_JSON_DEPTH)), Ok(()));
        assert_eq!(
            check_json_depth(&nested(MAX_JSON_DEPTH + 1)),
            Err(TooDeep::Json)
        );
        assert_eq!(check_json_depth(&nested(100_000)), Err(TooDeep::Json));
        assert_eq!(
            TooDeep::Nesting.at("prefetch.opioids"),
            "`prefetch.opioids` nests Bundles or resource wrappers deeper than 16 levels"
        );
    }
}
