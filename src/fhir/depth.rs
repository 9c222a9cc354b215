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

/// Whether `text` may hold what [`TooDeep::Unrepresentable`] names: a `\u` escape of a surrogate
/// (`\uD800`–`\uDFFF`), a number with an exponent, or a run of more than 300 digits. Cheap and
/// conservative (text inside strings counts too): a `true` only means the text is parsed in full to
/// find out.
pub fn may_be_unrepresentable(text: &str) -> bool {
    let bytes = text.as_bytes();
    let surrogate = memchr::memmem::find_iter(bytes, b"\\u")
        .any(|at| matches!(bytes.get(at + 2), Some(b'd' | b'D')));
    if surrogate {
        return true;
    }
    let mut digits = 0usize;
    let mut previous = 0u8;
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        i += 1;
        if b == b'\\' && bytes.get(i) == Some(&b'u') {
            // The hex digits of an escape (`\u00e9`) are not a number.
            i += 5;
            digits = 0;
            previous = 0;
            continue;
        }
        if b.is_ascii_digit() {
            digits += 1;
            if digits > 300 {
                return true;
            }
        } else {
            if matches!(b, b'e' | b'E') && previous.is_ascii_digit() {
                return true;
            }
            digits = 0;
        }
        previous = b;
    }
    false
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
    fn flags_surrogate_escapes_exponents_and_long_numbers_only() {
        assert!(may_be_unrepresentable(r#"{"a": "\ud800"}"#));
        assert!(may_be_unrepresentable(r#"{"a": "\uDFFF"}"#));
        assert!(may_be_unrepresentable(r#"{"a": 1e400}"#));
        assert!(may_be_unrepresentable(&format!("[{}]", "9".repeat(301))));
        assert!(!may_be_unrepresentable(
            r#"{"a": "\u00e9", "b": 12.5, "c": "Dose"}"#
        ));
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
