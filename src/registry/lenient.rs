//! Every problem in a `service.toml`, not just the first. serde stops at the first unknown key or
//! wrong type; this reports it, comments the offending entry out (keeping line numbers), and parses
//! again, so a misspelt key cannot hide a bad prefetch template further down. What serde accepts
//! and refuses is still the [`Manifest`] type's own: nothing here lists keys.

use std::ops::Range;

use toml_edit::{ImDocument, Item, Table, Value};

use super::loader::line_col;
use super::manifest::Manifest;

/// A problem at a 1-based line and column (none for a missing key).
pub(crate) type Problem = (Option<(usize, usize)>, String);

/// How many problems one manifest can report before giving up.
const MAX_PROBLEMS: usize = 32;

/// The manifest (with the broken entries left out, so later checks can still run) and every
/// problem found. `None` when the file is not TOML at all.
pub(crate) fn parse(text: &str) -> (Option<Manifest>, Vec<Problem>) {
    let mut problems: Vec<Problem> = Vec::new();
    let mut current = text.to_owned();
    // Lines prepended for missing keys, so positions still point into the file as written.
    let mut prepended = 0usize;
    for _ in 0..MAX_PROBLEMS {
        let error = match toml::from_str::<Manifest>(&current) {
            Ok(manifest) => {
                problems.extend(manifest.problems().into_iter().map(|p| (None, p)));
                return (Some(manifest), problems);
            }
            Err(e) => e,
        };
        let message = explained(error.message());
        let missing = missing_field(error.message());
        let Ok(document) = ImDocument::parse(current.clone()) else {
            // Not TOML: the syntax error is all there is to say.
            let place = error.span().map(|s| line_col(&current, s.start));
            problems.push((place, message));
            return (None, problems);
        };
        let found = error
            .span()
            .and_then(|s| Some((s.start, extent(document.as_table(), s.start)?)));
        // A missing key of the whole file has no place: serde points at the file's start.
        let place = match (&found, missing) {
            (Some((_, (_, false))), Some(_)) => None,
            _ => error.span().map(|s| {
                let (line, column) = line_col(&current, s.start);
                (line.saturating_sub(prepended).max(1), column)
            }),
        };
        if problems.contains(&(place, message.clone())) {
            // No progress: report what we have.
            break;
        }
        problems.push((place, message));
        match (found, missing) {
            // A key missing from the file: give it a placeholder and read on.
            (None | Some((_, (_, false))), Some(field)) => {
                current = format!("{field} = \"-\"\n{current}");
                prepended += 1;
            }
            (Some((_, (range, _))), _) => current = commented_out(&current, range),
            (None, None) => break,
        }
    }
    (None, problems)
}

/// serde's "unknown field `titel`, expected one of `id`, `hook`, ..." as a suggestion.
fn explained(message: &str) -> String {
    let Some(rest) = message.strip_prefix("unknown field `") else {
        return message.to_owned();
    };
    let Some((field, expected)) = rest.split_once('`') else {
        return message.to_owned();
    };
    let known: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
    match crate::lint::closest_name(field, known.iter().copied()) {
        Some(name) => format!("unknown field `{field}`; did you mean `{name}`?"),
        None => message.to_owned(),
    }
}

fn missing_field(message: &str) -> Option<&str> {
    message
        .strip_prefix("missing field `")?
        .split_once('`')
        .map(|(f, _)| f)
}

fn contains(range: &Option<Range<usize>>, offset: usize) -> bool {
    range
        .as_ref()
        .is_some_and(|r| r.start <= offset && offset < r.end.max(r.start + 1))
}

/// The byte extent of the innermost entry (key and value, or a whole table) at `offset`, and
/// whether it is a table.
fn extent(table: &Table, offset: usize) -> Option<(Range<usize>, bool)> {
    for (name, item) in table.iter() {
        let key = table.key(name).and_then(|k| k.span());
        match item {
            Item::Table(t) => {
                if let Some(inner) = extent(t, offset) {
                    return Some(inner);
                }
                if contains(&t.span(), offset) || contains(&key, offset) {
                    return whole_table(t).map(|r| (r, true));
                }
            }
            Item::ArrayOfTables(tables) => {
                for t in tables.iter() {
                    if let Some(inner) = extent(t, offset) {
                        return Some(inner);
                    }
                    if contains(&t.span(), offset) {
                        return whole_table(t).map(|r| (r, true));
                    }
                }
            }
            Item::Value(value) => {
                let start = key.as_ref().map(|k| k.start);
                let end = value.span().map(|v| v.end);
                if let (Some(start), Some(end)) = (start, end)
                    && start <= offset
                    && offset < end
                {
                    if let Value::InlineTable(inline) = value
                        && let Some(inner) = extent(&inline.clone().into_table(), offset)
                    {
                        return Some(inner);
                    }
                    return Some((start..end, false));
                }
            }
            Item::None => {}
        }
    }
    None
}

/// A table from its header to its last value.
fn whole_table(table: &Table) -> Option<Range<usize>> {
    let start = table.span()?.start;
    let mut end = table.span()?.end;
    for (_, item) in table.iter() {
        let last = match item {
            Item::Table(t) => whole_table(t).map(|r| r.end),
            Item::Value(v) => v.span().map(|s| s.end),
            _ => None,
        };
        end = end.max(last.unwrap_or(end));
    }
    Some(start..end)
}

/// `text` with every line the extent touches turned into a comment.
fn commented_out(text: &str, extent: Range<usize>) -> String {
    let mut out = String::with_capacity(text.len() + 16);
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let end = offset + line.len();
        if offset < extent.end.max(extent.start + 1) && extent.start < end {
            out.push('#');
        }
        out.push_str(line);
        offset = end;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn every_problem_is_reported_with_its_line() {
        let text = "id = \"k\"\nhook = \"order-sign\"\ndescripton = \"d\"\nversion = \"1\"\ntitel = \"t\"\n\n[prefetch]\npatient = \"Patient/{{context.patientId}}\"\n\n[source]\nlable = \"x\"\n";
        let (manifest, problems) = parse(text);
        let messages: Vec<String> = problems.iter().map(|(p, m)| format!("{p:?} {m}")).collect();
        assert!(manifest.is_some(), "{messages:?}");
        assert!(
            messages.iter().any(|m| m.starts_with(
                "Some((3, 1)) unknown field `descripton`; did you mean `description`?"
            )),
            "{messages:?}"
        );
        assert!(messages.iter().any(|m| m.starts_with("Some((5, 1)) unknown field `titel`; did you mean `title`?")), "{messages:?}");
        assert!(
            messages
                .iter()
                .any(|m| m.contains("(11, 1)") && m.contains("`lable`")),
            "{messages:?}"
        );
        assert!(
            messages
                .iter()
                .any(|m| m == "None missing field `description`"),
            "{messages:?}"
        );
    }
}
