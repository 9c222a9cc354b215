//! FHIR `date`, `dateTime` and `instant` values, which may be partial (`2023`, `2023-05`).

use chrono::{DateTime, FixedOffset, NaiveDate, NaiveTime, Utc};

/// The calendar date written in a FHIR date/dateTime (time and offset ignored). Partial dates take
/// their first day.
pub fn parse_fhir_date(s: &str) -> Option<NaiveDate> {
    // Hand-rolled: this runs for every dated resource of every request, and format-string parsing
    // costs more than the rest of indexing the resource.
    let number = |range: std::ops::Range<usize>| -> Option<u32> {
        let digits = s.get(range)?;
        digits
            .bytes()
            .all(|b| b.is_ascii_digit())
            .then(|| digits.parse().ok())?
    };
    let year = i32::try_from(number(0..4)?).ok()?;
    let (month, day) = match s.len() {
        4 => (1, 1),
        7 if &s[4..5] == "-" => (number(5..7)?, 1),
        n if n >= 10 && &s[4..5] == "-" && &s[7..8] == "-" && (n == 10 || &s[10..11] == "T") => {
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
}
