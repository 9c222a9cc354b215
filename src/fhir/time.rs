//! FHIR `date`, `dateTime` and `instant` values, which may be partial (`2023`, `2023-05`).
//!
//! The values come from requests and may hold any UTF-8: the date part is read as bytes, never by
//! slicing the string at a byte index (which panics inside a multi-byte character).

use chrono::{DateTime, FixedOffset, NaiveDate, NaiveTime, Utc};

/// The calendar date written in a FHIR date/dateTime (time and offset ignored). Partial dates take
/// their first day.
pub fn parse_fhir_date(s: &str) -> Option<NaiveDate> {
    // Hand-rolled: this runs for every dated resource of every request, and format-string parsing
    // costs more than the rest of indexing the resource.
    let bytes = s.as_bytes();
    let number = |range: std::ops::Range<usize>| -> Option<u32> {
        bytes.get(range)?.iter().try_fold(0u32, |n, &b| {
            b.is_ascii_digit().then(|| n * 10 + u32::from(b - b'0'))
        })
    };
    let byte_is = |i: usize, want: u8| bytes.get(i) == Some(&want);
    let year = i32::try_from(number(0..4)?).ok()?;
    let (month, day) = match bytes.len() {
        4 => (1, 1),
        7 if byte_is(4, b'-') => (number(5..7)?, 1),
        n if n >= 10 && byte_is(4, b'-') && byte_is(7, b'-') && (n == 10 || byte_is(10, b'T')) => {
            (number(5..7)?, number(8..10)?)
        }
        _ => return None,
    };
    NaiveDate::from_ymd_opt(year, month, day)
}

/// A FHIR date/dateTime/instant as an absolute instant. Values without a time are taken at 00:00 UTC.
pub fn parse_fhir_instant(s: &str) -> Option<DateTime<Utc>> {
    if s.len() > 10 {
        if let Ok(dt) = DateTime::<FixedOffset>::parse_from_rfc3339(s) {
            return Some(dt.with_timezone(&Utc));
        }
        // dateTime with a time but no offset is not valid FHIR, but EHRs send it: read it as UTC.
        if let Ok(naive) = chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f") {
            return Some(naive.and_utc());
        }
        return None;
    }
    parse_fhir_date(s).map(|d| d.and_time(NaiveTime::MIN).and_utc())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_and_full_dates() {
        assert_eq!(parse_fhir_date("2023"), NaiveDate::from_ymd_opt(2023, 1, 1));
        assert_eq!(
            parse_fhir_date("2023-05"),
            NaiveDate::from_ymd_opt(2023, 5, 1)
        );
        assert_eq!(
            parse_fhir_date("2023-05-01T00:00:00-06:00"),
            NaiveDate::from_ymd_opt(2023, 5, 1)
        );
        assert_eq!(parse_fhir_date("05/01/2023"), None);
        assert_eq!(parse_fhir_date("2023-02-30"), None);
        assert_eq!(parse_fhir_date("2023-5-1"), None);
        assert_eq!(parse_fhir_date("20230501"), None);
        let t = parse_fhir_instant("2023-05-01T00:00:00-06:00").map(|t| t.to_rfc3339());
        assert_eq!(t.as_deref(), Some("2023-05-01T06:00:00+00:00"));
        assert!(parse_fhir_instant("not a date").is_none());
    }

    /// Every date shape with a non-ASCII character inserted before each byte, or replacing each
    /// byte: never a panic, and no date when the character lands in the date part.
    #[test]
    fn non_ascii_at_every_byte_position() {
        let shapes = [
            "2023",
            "2023-05",
            "2023-05-01",
            "2023-05-01T10:00:00Z",
            "2023-05-01T10:00:00.123+05:30",
        ];
        for shape in shapes {
            for c in ['é', '€', '😀', '\u{0}', '-', 'T'] {
                for at in 0..=shape.len() {
                    let (head, tail) = (shape.get(..at), shape.get(at..));
                    let (Some(head), Some(tail)) = (head, tail) else {
                        continue;
                    };
                    let inserted = format!("{head}{c}{tail}");
                    let replaced = format!("{head}{c}{}", tail.get(1..).unwrap_or(""));
                    for value in [inserted, replaced] {
                        let date = parse_fhir_date(&value);
                        let instant = parse_fhir_instant(&value);
                        if at < 10.min(shape.len()) && !c.is_ascii() {
                            assert_eq!(date, None, "{value:?}");
                            assert_eq!(instant, None, "{value:?}");
                        }
                    }
                }
            }
        }
        // The fuzzer's finding: 7 bytes whose 5th starts a multi-byte character.
        assert_eq!(parse_fhir_date("2023é-"), None);
        assert_eq!(parse_fhir_instant("2023é-"), None);
        assert_eq!(parse_fhir_date("2023-é1"), None);
        assert_eq!(parse_fhir_date("2023-05é01"), None);
        assert_eq!(parse_fhir_date("２０２３-05-01"), None);
        assert_eq!(
            parse_fhir_date("2023-05-01Té"),
            NaiveDate::from_ymd_opt(2023, 5, 1)
        );
    }

    mod properties {
        use chrono::{DateTime, NaiveDate};
        use proptest::prelude::*;

        use super::super::{parse_fhir_date, parse_fhir_instant};

        proptest! {
            #[test]
            fn never_panics_on_any_string(s in any::<String>()) {
                let _ = parse_fhir_date(&s);
                let _ = parse_fhir_instant(&s);
            }

            #[test]
            fn never_panics_on_date_like_strings(s in "[0-9é€😀T:+.Z-]{0,32}") {
                let _ = parse_fhir_date(&s);
                let _ = parse_fhir_instant(&s);
            }

            #[test]
            fn agrees_with_chrono_on_valid_dates(y in 0i32..=9999, m in 1u32..=12, d in 1u32..=31) {
                let text = format!("{y:04}-{m:02}-{d:02}");
                let expected = NaiveDate::parse_from_str(&text, "%Y-%m-%d").ok();
                prop_assert_eq!(parse_fhir_date(&text), expected);
                prop_assert_eq!(
                    parse_fhir_instant(&text).map(|t| t.date_naive()),
                    expected
                );
                prop_assert_eq!(parse_fhir_date(&format!("{y:04}-{m:02}")), NaiveDate::from_ymd_opt(y, m, 1));
            }

            #[test]
            fn agrees_with_chrono_on_valid_date_times(
                y in 1i32..=9999, m in 1u32..=12, d in 1u32..=28,
                h in 0u32..24, min in 0u32..60, sec in 0u32..60,
                offset in -840i32..=840,
            ) {
                let sign = if offset < 0 { '-' } else { '+' };
                let (oh, om) = (offset.abs() / 60, offset.abs() % 60);
                let text = format!("{y:04}-{m:02}-{d:02}T{h:02}:{min:02}:{sec:02}{sign}{oh:02}:{om:02}");
                let expected = DateTime::parse_from_rfc3339(&text).ok();
                prop_assert!(expected.is_some(), "{}", text);
                prop_assert_eq!(parse_fhir_instant(&text), expected.map(|t| t.to_utc()));
                prop_assert_eq!(parse_fhir_date(&text), NaiveDate::from_ymd_opt(y, m, d));
            }
        }
    }
}
