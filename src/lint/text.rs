//! Card text a clinician would see garbled: an escape sequence (`\n`, `\t`, `\"`...) inside a
//! backtick string (Rhai backtick strings are literal, so the clinician sees the backslash and the
//! letter), and HTML in a string (a card's `detail` is GitHub-flavoured Markdown, and EHRs show
//! tags and CSS as text). Found on the source text: comments and `${...}` code are skipped.

use std::path::Path;

use super::{Finding, Severity};

/// A string literal of a rule file: its kind, its text (interpolations left out) and where each
/// character of the text is.
struct Literal {
    backtick: bool,
    chars: Vec<(char, usize, usize)>,
}

/// The string literals of a Rhai source, skipping comments and the code inside `${...}`.
fn literals(source: &str) -> Vec<Literal> {
    #[derive(PartialEq)]
    enum State {
        Code,
        LineComment,
        BlockComment(usize),
        Quoted,
        Backtick,
    }
    let chars: Vec<(char, usize, usize)> = {
        let (mut line, mut column) = (1, 1);
        source
            .chars()
            .map(|c| {
                let at = (c, line, column);
                if c == '\n' {
                    line += 1;
                    column = 1;
                } else {
                    column += 1;
                }
                at
            })
            .collect()
    };
    let mut found = Vec::new();
    let mut state = State::Code;
    // Backtick strings whose `${` interpolation is open, with the brace depth inside it.
    let mut open: Vec<(Literal, usize)> = Vec::new();
    let mut current: Option<Literal> = None;
    let mut i = 0;
    let at = |i: usize| chars.get(i).map(|c| c.0);
    while let Some(&(c, line, column)) = chars.get(i) {
        match state {
            State::Code => match c {
                '/' if at(i + 1) == Some('/') => state = State::LineComment,
                '/' if at(i + 1) == Some('*') => {
                    state = State::BlockComment(1);
                    i += 1;
                }
                '"' => {
                    state = State::Quoted;
                    current = Some(Literal {
                        backtick: false,
                        chars: Vec::new(),
                    });
                }
                '`' => {
                    state = State::Backtick;
                    current = Some(Literal {
                        backtick: true,
                        chars: Vec::new(),
                    });
                }
                '\'' => {
                    // A character literal: skip it (an escaped one is three characters).
                    i += if at(i + 1) == Some('\\') { 3 } else { 2 };
                }
                '{' => {
                    if let Some((_, depth)) = open.last_mut() {
                        *depth += 1;
                    }
                }
                '}' => {
                    if let Some((_, depth)) = open.last_mut() {
                        if *depth == 0 {
                            // The interpolation ends: back in its backtick string.
                            current = open.pop().map(|(lit, _)| lit);
                            state = State::Backtick;
                        } else {
                            *depth -= 1;
                        }
                    }
                }
                _ => {}
            },
            State::LineComment => {
                if c == '\n' {
                    state = State::Code;
                }
            }
            State::BlockComment(depth) => {
                if c == '*' && at(i + 1) == Some('/') {
                    state = if depth == 1 {
                        State::Code
                    } else {
                        State::BlockComment(depth - 1)
                    };
                    i += 1;
                } else if c == '/' && at(i + 1) == Some('*') {
                    state = State::BlockComment(depth + 1);
                    i += 1;
                }
            }
            State::Quoted => match c {
                '\\' => {
                    // An escape: the text holds what it stands for, not the backslash.
                    if let (Some(lit), Some(next)) = (current.as_mut(), at(i + 1)) {
                        lit.chars.push((next, line, column));
                    }
                    i += 1;
                }
                '"' => {
                    found.extend(current.take());
                    state = State::Code;
                }
                _ => {
                    if let Some(lit) = current.as_mut() {
                        lit.chars.push((c, line, column));
                    }
                }
            },
            State::Backtick => match c {
                '`' => {
                    found.extend(current.take());
                    state = State::Code;
                }
                '$' if at(i + 1) == Some('{') => {
                    if let Some(lit) = current.take() {
                        open.push((lit, 0));
                    }
                    state = State::Code;
                    i += 1;
                }
                _ => {
                    if let Some(lit) = current.as_mut() {
                        lit.chars.push((c, line, column));
                    }
                }
            },
        }
        i += 1;
    }
    found
}

/// An HTML tag starting at `i` of `text`: `<name ...>`, `</name>` or `<name/>`, returning its name.
fn html_tag(text: &[char], i: usize) -> Option<String> {
    if text.get(i) != Some(&'<') {
        return None;
    }
    let mut j = i + 1;
    if text.get(j) == Some(&'/') {
        j += 1;
    }
    let start = j;
    while text.get(j).is_some_and(|c| c.is_ascii_alphanumeric()) {
        j += 1;
    }
    let name: String = text.get(start..j)?.iter().collect();
    if name.is_empty() || !name.starts_with(|c: char| c.is_ascii_alphabetic()) {
        return None;
    }
    // The tag must close on the same string without another `<` first.
    let rest = text.get(j..)?;
    let close = rest.iter().position(|&c| c == '>')?;
    let before = rest.get(..close)?;
    let plausible = before
        .first()
        .is_none_or(|c| c.is_whitespace() || *c == '/')
        && !before.contains(&'<');
    plausible.then_some(name.to_ascii_lowercase())
}

/// Warnings about the string literals of one rule or library file.
pub fn lint_source(path: &Path, source: &str) -> Vec<Finding> {
    let mut warnings = Vec::new();
    for literal in literals(source) {
        let text: Vec<char> = literal.chars.iter().map(|c| c.0).collect();
        let place = |k: usize| literal.chars.get(k).map_or((0, 0), |c| (c.1, c.2));
        if literal.backtick {
            for (k, pair) in text.windows(2).enumerate() {
                if let [
                    '\\',
                    e @ ('n' | 't' | 'r' | '"' | '\\' | '\'' | '0' | 'u' | 'x'),
                ] = pair
                {
                    let (line, column) = place(k);
                    warnings.push(Finding {
                        path: path.to_path_buf(),
                        line,
                        column,
                        severity: Severity::Warning,
                        check: "card-text",
                        message: format!(
                            "escape sequence `\\{e}` in a backtick string: backtick strings are literal, so the clinician sees `\\{e}`"
                        ),
                        hint: Some(
                            "use a real line break in the string, or a \"...\" string".into(),
                        ),
                    });
                }
            }
        }
        let mut k = 0;
        while k < text.len() {
            if let Some(tag) = html_tag(&text, k) {
                let (line, column) = place(k);
                warnings.push(Finding {
                    path: path.to_path_buf(),
                    line,
                    column,
                    severity: Severity::Warning,
                    check: "card-text",
                    message: format!(
                        "HTML tag `<{tag}>` in a string: a card's `detail` is GitHub-flavoured Markdown and EHRs show HTML and CSS as text"
                    ),
                    hint: Some("write Markdown (tables too)".into()),
                });
                // One warning per string is enough to find it.
                break;
            }
            k += 1;
        }
    }
    warnings
}

#[cfg(test)]
mod tests {
    use super::*;

    fn messages(source: &str) -> Vec<(usize, usize, String)> {
        lint_source(Path::new("r.rhai"), source)
            .into_iter()
            .map(|w| (w.line, w.column, w.message))
            .collect()
    }

    #[test]
    fn escapes_in_backtick_strings_are_flagged_not_in_quoted_ones() {
        let found = messages("let a = \"one\\n\\ntwo\";\nlet b = `x ${a} y.\\n\\n` + \"z\";");
        assert_eq!(found.len(), 2, "{found:?}");
        assert_eq!((found[0].0, found[0].1), (2, 19));
        assert!(found[0].2.contains("`\\n`"));
    }

    #[test]
    fn interpolated_code_and_comments_are_not_strings() {
        let source =
            "// `\\n` <b>\n/* \"<table>\" */ let x = `a ${ if y { \"b\" } else { `c` } } d`;";
        assert!(messages(source).is_empty(), "{:?}", messages(source));
    }

    #[test]
    fn html_tags_are_flagged_but_comparisons_are_not() {
        assert_eq!(messages("let d = \"<style>.x{}</style>\";").len(), 1);
        assert_eq!(messages("let d = `<td class=\"x\">pos</td>`;").len(), 1);
        assert!(messages("let d = \"eGFR < 30 and > 15, a<b>c\";").len() == 1);
        assert!(messages("let d = \"eGFR < 30 and > 15\";").is_empty());
        assert!(messages("if a < b && c > d { \"<\" }").is_empty());
    }
}
