//! Dates for rules. "Now" is the engine's evaluation time, never the wall clock, so a request can pin
//! it and the same request always evaluates the same way.

use chrono::{Datelike, Months, NaiveDate};
use rhai::{Dynamic, Engine, EvalAltResult, NativeCallContext};

use crate::fhir::{parse_fhir_date, parse_fhir_instant};

use super::super::run_state;

pub(crate) fn today() -> NaiveDate {
    run_state::now().date_naive()
}

pub(crate) fn days_between(from: NaiveDate, to: NaiveDate) -> i64 {
    (to - from).num_days()
}

/// Completed years from `from` to `to` (age).
pub(crate) fn whole_years(from: NaiveDate, to: NaiveDate) -> i64 {
    let mut years = i64::from(to.year() - from.year());
    if (to.month(), to.day()) < (from.month(), from.day()) {
        years -= 1;
    }
    years
}

fn date_arg(ctx: &NativeCallContext, s: &str) -> Result<NaiveDate, Box<EvalAltResult>> {
    parse_fhir_date(s).ok_or_else(|| {
        EvalAltResult::ErrorRuntime(
            // The value is request data of any length: quote a bounded prefix only.
            Dynamic::from(format!(
                "`{}` is not a FHIR date (YYYY, YYYY-MM or YYYY-MM-DD...)",
                crate::cds_hooks::excerpt(s)
            )),
            ctx.call_position(),
        )
        .into()
    })
}

/// A date-like rule value (`"2023-05-01"`, `"2023-05-01T10:00:00-06:00"`) as a calendar date;
/// `()` and anything else give `None`.
pub(crate) fn date_value(value: &Dynamic) -> Option<NaiveDate> {
    let text = value.clone().into_immutable_string().ok()?;
    parse_fhir_date(&text)
}

fn date_dynamic(date: Option<NaiveDate>) -> Dynamic {
    date.map(|d| Dynamic::from(d.to_string()))
        .unwrap_or(Dynamic::UNIT)
}

fn shift_months(date: NaiveDate, months: i64) -> Option<NaiveDate> {
    let m = Months::new(u32::try_from(months.unsigned_abs()).ok()?);
    if months >= 0 {
        date.checked_add_months(m)
    } else {
        date.checked_sub_months(m)
    }
}

/// Whole days between two instants: floor((b - a) / 24 h), on absolute time.
fn days_between_instants(a: &Dynamic, b: &Dynamic) -> Dynamic {
    let instant = |v: &Dynamic| {
        v.clone()
            .into_immutable_string()
            .ok()
            .and_then(|s| parse_fhir_instant(&s))
    };
    match (instant(a), instant(b)) {
        (Some(a), Some(b)) => Dynamic::from_int((b - a).num_seconds().div_euclid(86_400)),
        _ => Dynamic::UNIT,
    }
}

pub(super) fn register(engine: &mut Engine) {
    // Calendar dates are "YYYY-MM-DD" strings: they compare correctly with <, <=, >, >=.
    engine.register_fn("date_of", |value: Dynamic| date_dynamic(date_value(&value)));
    engine.register_fn("add_days", |value: Dynamic, days: i64| {
        date_dynamic(
            date_value(&value).and_then(|d| d.checked_add_signed(chrono::Duration::days(days))),
        )
    });
    engine.register_fn("add_months", |value: Dynamic, months: i64| {
        date_dynamic(date_value(&value).and_then(|d| shift_months(d, months)))
    });
    engine.register_fn("add_years", |value: Dynamic, years: i64| {
        date_dynamic(date_value(&value).and_then(|d| shift_months(d, years.saturating_mul(12))))
    });
    engine.register_fn(
        "in_range",
        |value: Dynamic, start: Dynamic, end: Dynamic| match (
            date_value(&value),
            date_value(&start),
            date_value(&end),
        ) {
            (Some(d), Some(s), Some(e)) => s <= d && d <= e,
            _ => false,
        },
    );
    engine.register_fn("days_between_instants", |a: Dynamic, b: Dynamic| {
        days_between_instants(&a, &b)
    });
    engine.register_fn("now", || run_state::now().to_rfc3339());
    engine.register_fn("today", || today().to_string());
    engine.register_fn(
        "days_between",
        |ctx: NativeCallContext, a: &str, b: &str| {
            Ok::<_, Box<EvalAltResult>>(days_between(date_arg(&ctx, a)?, date_arg(&ctx, b)?))
        },
    );
    engine.register_fn("days_since", |ctx: NativeCallContext, a: &str| {
        Ok::<_, Box<EvalAltResult>>(days_between(date_arg(&ctx, a)?, today()))
    });
    engine.register_fn(
        "years_between",
        |ctx: NativeCallContext, a: &str, b: &str| {
            Ok::<_, Box<EvalAltResult>>(whole_years(date_arg(&ctx, a)?, date_arg(&ctx, b)?))
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_count_completed_years() {
        let d = |y, m, dd| NaiveDate::from_ymd_opt(y, m, dd).unwrap_or_default();
        assert_eq!(whole_years(d(1950, 6, 15), d(2026, 6, 14)), 75);
        assert_eq!(whole_years(d(1950, 6, 15), d(2026, 6, 15)), 76);
        assert_eq!(days_between(d(2023, 1, 31), d(2023, 5, 1)), 90);
    }
}
