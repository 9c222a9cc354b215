//! A caller's value, cut down for an error message. Ids and keys a caller chooses can be any length
//! and hold any characters; a message quotes only a short, printable prefix, so it can neither carry
//! a whole payload back (or into logs) nor forge lines or reorder text on a terminal.

/// How many characters of a caller's value a message may quote, the ellipsis included.
pub const EXCERPT_CHARS: usize = 64;

/// At most [`EXCERPT_CHARS`] characters of `value`, control and invisible formatting characters
/// replaced by `?`, ending in `…` when cut.
pub fn excerpt(value: &str) -> String {
    let cut = value.chars().nth(EXCERPT_CHARS).is_some();
    let keep = if cut {
        EXCERPT_CHARS - 1
    } else {
        EXCERPT_CHARS
    };
    let mut out: String = value
        .chars()
        .take(keep)
        .map(|c| if is_printable(c) { c } else { '?' })
        .collect();
    if cut {
        out.push('…');
    }
    out
}

/// Not a control character and not one that changes how text around it is laid out or read
/// (zero-width characters, bidirectional overrides, line and paragraph separators, BOM).
fn is_printable(c: char) -> bool {
    !c.is_control()
        && !matches!(
            c,
            '\u{00AD}'
                | '\u{061C}'
                | '\u{180E}'
                | '\u{200B}'..='\u{200F}'
                | '\u{2028}'..='\u{202E}'
                | '\u{2060}'..='\u{206F}'
                | '\u{FEFF}'
                | '\u{FFF9}'..='\u{FFFB}'
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_printable_values_pass_unchanged() {
        assert_eq!(excerpt("metformin-renal"), "metformin-renal");
        assert_eq!(excerpt("née-2023é"), "née-2023é");
        assert_eq!(excerpt(""), "");
        let exact = "x".repeat(EXCERPT_CHARS);
        assert_eq!(excerpt(&exact), exact);
    }

    #[test]
    fn long_values_are_cut_with_an_ellipsis() {
        let long = "é".repeat(65 * 1024);
        let cut = excerpt(&long);
        assert_eq!(cut.chars().count(), EXCERPT_CHARS);
        assert!(cut.ends_with("é…"));
        assert_eq!(
            excerpt(&"y".repeat(EXCERPT_CHARS + 1)).chars().count(),
            EXCERPT_CHARS
        );
    }

    #[test]
    fn control_and_layout_characters_are_replaced() {
        assert_eq!(excerpt("a\nb\r\t\u{0}c"), "a?b???c");
        assert_eq!(excerpt("x\u{202E}y\u{200B}z\u{FEFF}"), "x?y?z?");
        assert_eq!(excerpt("\u{1b}[31mred"), "?[31mred");
    }
}
