//! Dates for rules. "Now" is the engine's evaluation time, never the wall clock, so a request can pin
//! it and the same request always evaluates the same way.

use chrono::{Datelike, NaiveDate};
use rhai::{Dynamic, Engine, EvalAltResult, NativeCallContext};

use crate::fhir::parse_fhir_date;

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
            Dynamic::from(format!(
                "`{s}` is not a FHIR date (YYYY, YYYY-MM or YYYY-MM-DD...)"
            )),
            ctx.call_position(),
        )
        .into()
    })
}

pub(super) fn register(engine: &mut Engine) {
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
