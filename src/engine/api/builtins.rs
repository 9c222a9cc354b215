//! Rhai built-ins that do work proportional to their input inside one operation, overridden so they
//! charge it (functions registered on the engine are found before Rhai's packages). Each override
//! behaves exactly as the built-in it replaces.
//!
//! Built-ins that need no override: `contains`, `in`, `index_of`, `==`/`!=` on arrays and maps,
//! `dedup`, `to_string`/interpolation of arrays, and every closure-taking function (`filter`, `map`,
//! `some`, `all`, `reduce`, `sort(|a, b| ...)`...) call a Rhai function per element, and the meter
//! counts each of those calls as an operation. What remains uncounted (copies of a list or map
//! when assigned or passed by value, `+=` on lists and strings, `sort()` without a comparator,
//! `reverse`, `extract`, `pad`, `splice`, string `replace`/`sub_string`/`pad`...) is bounded per
//! operation by the size limits (`max_array_size`, `max_string_size`, `max_map_size`), and a rule
//! looping over it is stopped by the wall-clock backstop.

use rhai::{Array, Dynamic, Engine, EvalAltResult, ImmutableString, Map};

use super::super::run_state::charge;

type Fallible<T> = Result<T, Box<EvalAltResult>>;

/// `a + b` on arrays: Rhai copied both to pass them; joining them touches every element.
fn concat(a: Array, b: Array) -> Fallible<Array> {
    charge(a.len().saturating_add(b.len()))?;
    if b.is_empty() {
        return Ok(a);
    }
    if a.is_empty() {
        return Ok(b);
    }
    let mut joined = a;
    joined.extend(b);
    Ok(joined)
}

/// Scanning the string (64 bytes a unit) plus one unit per piece made.
fn split_cost(text: &str, pieces: usize) -> Fallible<()> {
    charge((text.len() / 64).saturating_add(pieces))
}

fn split_str(text: &mut ImmutableString, delimiter: &str) -> Fallible<Array> {
    if text.is_empty() || (!delimiter.is_empty() && !text.contains(delimiter)) {
        return Ok(vec![text.clone().into()]);
    }
    split_cost(text, text.matches(delimiter).count() + 1)?;
    Ok(text.split(delimiter).map(Into::into).collect())
}

fn split_char(text: &mut ImmutableString, delimiter: char) -> Fallible<Array> {
    if text.is_empty() || !text.contains(delimiter) {
        return Ok(vec![text.clone().into()]);
    }
    split_cost(text, text.matches(delimiter).count() + 1)?;
    Ok(text.split(delimiter).map(Into::into).collect())
}

fn split_whitespace(text: &mut ImmutableString) -> Fallible<Array> {
    if text.is_empty() {
        return Ok(vec![text.clone().into()]);
    }
    split_cost(text, text.split_whitespace().count())?;
    Ok(text.split_whitespace().map(Into::into).collect())
}

fn keys(map: &mut Map) -> Fallible<Array> {
    charge(map.len())?;
    Ok(map.keys().cloned().map(Into::into).collect())
}

fn values(map: &mut Map) -> Fallible<Array> {
    charge(map.len())?;
    Ok(map.values().cloned().collect::<Vec<Dynamic>>())
}

/// Text that comes from the record (a display, a medication name) made safe to put in Markdown card
/// text: Markdown and HTML punctuation is escaped so it shows as written.
fn escape_markdown(text: &str) -> Fallible<String> {
    charge(text.len() / 64)?;
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(
            c,
            '\\' | '`' | '*' | '_' | '[' | ']' | '<' | '>' | '|' | '#' | '!' | '{' | '}'
        ) {
            out.push('\\');
        }
        out.push(c);
    }
    Ok(out)
}

pub(super) fn register(engine: &mut Engine) {
    engine.register_fn("escape_markdown", escape_markdown);
    engine.register_fn("+", concat);
    engine.register_fn("split", split_str);
    engine.register_fn("split", split_char);
    engine.register_fn("split", split_whitespace);
    engine.register_fn("keys", keys);
    engine.register_fn("values", values);
}
