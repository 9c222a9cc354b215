//! Quantities, durations and dosage arithmetic for rules: UCUM durations to days, masses to mg,
//! doses per day from `timing.repeat`, the ordered dose of a `dosageInstruction`, and "days covered"
//! by a set of supply intervals.
//!
//! Each helper charges the size of what it is given (`units_of`): Rhai copied it to pass it, and the
//! helper reads it; `days_covered` also charges its sort.

use chrono::NaiveDate;
use rhai::{Array, Dynamic, Engine, EvalAltResult, Map};

use super::super::run_state::charge;
use super::json::units_of;
use super::time::date_value;

const UCUM: &str = "http://unitsofmeasure.org";
const ORDERABLE_DRUG_FORM: &str = "http://terminology.hl7.org/CodeSystem/v3-orderableDrugForm";

fn field<'a>(map: &'a Map, name: &str) -> Option<&'a Dynamic> {
    map.get(name).filter(|v| !v.is_unit())
}

fn text(map: &Map, name: &str) -> Option<String> {
    field(map, name).and_then(|v| v.clone().into_string().ok())
}

fn number(value: &Dynamic) -> Option<f64> {
    value
        .as_float()
        .ok()
        .or_else(|| value.as_int().ok().map(|i| i as f64))
}

fn map_of(value: &Dynamic) -> Option<Map> {
    value.clone().try_cast::<Map>()
}

/// Days in one unit of a UCUM time code or a plain English unit word.
pub(crate) fn days_per_unit(unit: &str) -> Option<f64> {
    Some(match unit.trim().to_ascii_lowercase().as_str() {
        "a" | "year" | "years" => 365.0,
        "mo" | "month" | "months" => 30.0,
        "wk" | "week" | "weeks" => 7.0,
        "d" | "day" | "days" => 1.0,
        "h" | "hour" | "hours" => 1.0 / 24.0,
        "min" | "minute" | "minutes" => 1.0 / 1440.0,
        "s" | "second" | "seconds" => 1.0 / 86_400.0,
        "ms" | "millisecond" | "milliseconds" => 1.0 / 86_400_000.0,
        _ => return None,
    })
}

/// A Duration (e.g. `expectedSupplyDuration`) in days: its UCUM `code`, else its `unit` word.
fn to_days(quantity: &Dynamic) -> Dynamic {
    let Some(q) = map_of(quantity) else {
        return Dynamic::UNIT;
    };
    let Some(value) = field(&q, "value").and_then(number) else {
        return Dynamic::UNIT;
    };
    let per_unit = text(&q, "code")
        .as_deref()
        .and_then(days_per_unit)
        .or_else(|| text(&q, "unit").as_deref().and_then(days_per_unit));
    per_unit
        .map(|d| Dynamic::from_float(value * d))
        .unwrap_or(Dynamic::UNIT)
}

/// A mass in milligrams (`mg`, `ug`/`mcg`, `g`).
fn to_mg(value: f64, unit: &str) -> Dynamic {
    let factor = match unit {
        "mg" => 1.0,
        "ug" | "mcg" | "µg" => 0.001,
        "g" => 1000.0,
        _ => return Dynamic::UNIT,
    };
    Dynamic::from_float(value * factor)
}

/// Doses per day from `timing.repeat`: frequency (frequencyMax if given) × per-day factor of
/// periodUnit / period. Without them, the number of `timeOfDay` entries (0 when none).
fn doses_per_day(dosage: &Dynamic) -> Dynamic {
    let repeat = map_of(dosage)
        .and_then(|d| field(&d, "timing").and_then(map_of))
        .and_then(|t| field(&t, "repeat").and_then(map_of));
    let Some(repeat) = repeat else {
        return Dynamic::from_float(0.0);
    };
    let frequency = field(&repeat, "frequencyMax")
        .or_else(|| field(&repeat, "frequency"))
        .and_then(number);
    let period = field(&repeat, "period").and_then(number);
    let per_day = text(&repeat, "periodUnit")
        .as_deref()
        .and_then(days_per_unit)
        .map(|days| 1.0 / days);
    match (frequency, period, per_day) {
        (Some(f), Some(p), Some(u)) if p > 0.0 => Dynamic::from_float(f * u / p),
        _ => {
            let times = field(&repeat, "timeOfDay")
                .and_then(|t| t.clone().try_cast::<Array>())
                .map_or(0, |a| a.len());
            Dynamic::from_float(times as f64)
        }
    }
}

/// The unit of a dose quantity: UCUM (or no system) → its `code`; orderable drug form → `code`
/// else `unit`; any other system → not a usable dose.
fn dose_unit(q: &Map) -> Result<Dynamic, ()> {
    match text(q, "system").as_deref() {
        None | Some(UCUM) => Ok(text(q, "code").map(Dynamic::from).unwrap_or(Dynamic::UNIT)),
        Some(ORDERABLE_DRUG_FORM) => Ok(text(q, "code")
            .or_else(|| text(q, "unit"))
            .map(Dynamic::from)
            .unwrap_or(Dynamic::UNIT)),
        Some(_) => Err(()),
    }
}

/// The ordered dose of one dosage instruction: `#{value, unit, note}` or `()`.
fn dose_of(dosage: &Dynamic) -> Dynamic {
    let Some(dosage) = map_of(dosage) else {
        return Dynamic::UNIT;
    };
    let entries: Vec<Map> = field(&dosage, "doseAndRate")
        .and_then(|d| d.clone().try_cast::<Array>())
        .unwrap_or_default()
        .iter()
        .filter_map(map_of)
        .filter(|entry| match field(entry, "type").and_then(map_of) {
            None => true,
            Some(t) => text(&t, "text").is_some_and(|s| s.eq_ignore_ascii_case("ordered")),
        })
        .collect();
    let mut doses: Vec<(f64, Dynamic, Option<&str>)> = Vec::new();
    for entry in &entries {
        if let Some(q) = field(entry, "doseQuantity").and_then(map_of) {
            if let (Some(value), Ok(unit)) = (field(&q, "value").and_then(number), dose_unit(&q)) {
                doses.push((value, unit, None));
            }
        } else if let Some(high) = field(entry, "doseRange")
            .and_then(map_of)
            .and_then(|r| field(&r, "high").and_then(map_of))
            && let (Some(value), Ok(unit)) =
                (field(&high, "value").and_then(number), dose_unit(&high))
        {
            doses.push((value, unit, Some("dose range: the high value was used")));
        }
    }
    let several = doses.len() > 1;
    let Some((value, unit, note)) = doses.into_iter().max_by(|a, b| a.0.total_cmp(&b.0)) else {
        return Dynamic::UNIT;
    };
    let note = if several {
        Some("several ordered dose entries: the largest was used")
    } else {
        note
    };
    let mut out = Map::new();
    out.insert("value".into(), Dynamic::from_float(value));
    out.insert("unit".into(), unit);
    out.insert(
        "note".into(),
        note.map(Dynamic::from).unwrap_or(Dynamic::UNIT),
    );
    Dynamic::from_map(out)
}

/// One supply interval: `#{start, end}` or `[start, end]` of dates.
fn interval(value: &Dynamic) -> Option<(NaiveDate, NaiveDate)> {
    if let Some(m) = map_of(value) {
        return Some((date_value(m.get("start")?)?, date_value(m.get("end")?)?));
    }
    let items = value.clone().try_cast::<Array>()?;
    Some((date_value(items.first()?)?, date_value(items.get(1)?)?))
}

/// Days covered within [start, end] by the intervals: each is clipped to the window, intervals that
/// overlap or touch are merged, and the lengths (end − start, in days) are summed.
fn days_covered(intervals: &Array, start: &Dynamic, end: &Dynamic) -> Dynamic {
    let (Some(window_start), Some(window_end)) = (date_value(start), date_value(end)) else {
        return Dynamic::UNIT;
    };
    let mut clipped: Vec<(NaiveDate, NaiveDate)> = intervals
        .iter()
        .filter_map(interval)
        .map(|(s, e)| (s.max(window_start), e.min(window_end)))
        .filter(|(s, e)| s <= e)
        .collect();
    clipped.sort();
    let mut total = 0;
    let mut current: Option<(NaiveDate, NaiveDate)> = None;
    for (s, e) in clipped {
        current = match current {
            Some((cs, ce)) if s <= ce + chrono::Duration::days(1) => Some((cs, ce.max(e))),
            Some((cs, ce)) => {
                total += (ce - cs).num_days();
                Some((s, e))
            }
            None => Some((s, e)),
        };
    }
    if let Some((cs, ce)) = current {
        total += (ce - cs).num_days();
    }
    Dynamic::from_int(total)
}

/// Rounds to `places` decimals (MME rows are rounded to one).
fn round_to(value: f64, places: i64) -> f64 {
    let factor = 10f64.powi(i32::try_from(places.clamp(0, 12)).unwrap_or(0));
    (value * factor).round() / factor
}

/// `x` as text with exactly `places` decimals (`format_number(37.196, 0)` is `"37"`,
/// `format_number(180, 1)` is `"180.0"`): numbers in card text at the precision a clinician reads.
pub(crate) fn format_number(value: f64, places: i64) -> String {
    let places = usize::try_from(places.clamp(0, 6)).unwrap_or(0);
    let text = format!("{value:.places$}");
    // `-0` reads oddly in a card.
    if text
        .trim_start_matches('-')
        .chars()
        .all(|c| c == '0' || c == '.')
    {
        text.trim_start_matches('-').to_owned()
    } else {
        text
    }
}

/// A measured value as shown in an explanation: as recorded when it has at most two decimals,
/// else rounded to two significant decimals (`37.19662191733671` is shown `37.2`, `0.0749` `0.075`).
pub(crate) fn display_number(value: f64) -> String {
    let recorded = value.to_string();
    let decimals = recorded.split_once('.').map_or(0, |(_, d)| d.len());
    if decimals <= 2 || !value.is_finite() {
        return recorded;
    }
    let places = if value.abs() >= 10.0 {
        1
    } else if value.abs() >= 1.0 {
        2
    } else {
        3
    };
    let rounded = format_number(value, places);
    if rounded.contains('.') {
        rounded
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_owned()
    } else {
        rounded
    }
}

/// Charges the size of a helper's argument, then runs the helper.
fn charged(value: &Dynamic, f: fn(&Dynamic) -> Dynamic) -> Result<Dynamic, Box<EvalAltResult>> {
    charge(units_of(value))?;
    Ok(f(value))
}

pub(super) fn register(engine: &mut Engine) {
    engine.register_fn("to_days", |q: Dynamic| charged(&q, to_days));
    engine.register_fn("to_mg", |value: f64, unit: &str| to_mg(value, unit));
    engine.register_fn("to_mg", |value: i64, unit: &str| to_mg(value as f64, unit));
    engine.register_fn("doses_per_day", |dosage: Dynamic| {
        charged(&dosage, doses_per_day)
    });
    engine.register_fn("dose_of", |dosage: Dynamic| charged(&dosage, dose_of));
    engine.register_fn(
        "days_covered",
        |intervals: Array, start: Dynamic, end: Dynamic| {
            // Reading every interval, then sorting them.
            let n = intervals.len();
            charge(
                intervals
                    .iter()
                    .map(units_of)
                    .sum::<usize>()
                    .saturating_add(n.saturating_mul(n.max(2).ilog2() as usize)),
            )?;
            Ok::<_, Box<EvalAltResult>>(days_covered(&intervals, &start, &end))
        },
    );
    engine.register_fn("round_to", round_to);
    engine.register_fn("round_to", |value: i64, places: i64| {
        round_to(value as f64, places)
    });
    engine.register_fn("format_number", format_number);
    engine.register_fn("format_number", |value: i64, places: i64| {
        format_number(value as f64, places)
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(v: serde_json::Value) -> Dynamic {
        super::super::json::json_to_dynamic(&v).unwrap_or_default()
    }

    #[test]
    fn numbers_are_shown_at_clinical_precision() {
        assert_eq!(format_number(37.19662191733671, 0), "37");
        assert_eq!(format_number(180.0, 1), "180.0");
        assert_eq!(format_number(-0.01, 1), "0.0");
        assert_eq!(display_number(37.19662191733671), "37.2");
        assert_eq!(display_number(24.0), "24");
        assert_eq!(display_number(7.25), "7.25");
        assert_eq!(display_number(0.07495), "0.075");
    }

    #[test]
    fn durations_and_doses_per_day() {
        let d = to_days(&json(serde_json::json!({"value": 2, "code": "wk"})));
        assert_eq!(d.as_float().ok(), Some(14.0));
        let d = to_days(&json(serde_json::json!({"value": 3, "unit": "days"})));
        assert_eq!(d.as_float().ok(), Some(3.0));
        assert!(to_days(&json(serde_json::json!({"value": 3, "unit": "fortnights"}))).is_unit());
        let dosage = json(serde_json::json!({"timing": {"repeat": {
            "frequency": 1, "period": 12, "periodUnit": "d"}}}));
        let per_day = doses_per_day(&dosage).as_float().unwrap_or_default();
        assert!((per_day - 1.0 / 12.0).abs() < 1e-12);
        let q8h = json(serde_json::json!({"timing": {"repeat": {
            "frequency": 1, "frequencyMax": 2, "period": 8, "periodUnit": "h"}}}));
        assert_eq!(doses_per_day(&q8h).as_float().ok(), Some(6.0));
        let none = json(serde_json::json!({"timing": {"repeat": {}}}));
        assert_eq!(doses_per_day(&none).as_float().ok(), Some(0.0));
    }

    #[test]
    fn ordered_dose_is_chosen() {
        let dosage = json(serde_json::json!({"doseAndRate": [
            {"type": {"text": "calculated"}, "doseQuantity": {"value": 5, "code": "mg"}},
            {"type": {"text": "ordered"}, "doseQuantity": {"value": 1, "unit": "patch",
                "system": "http://unitsofmeasure.org", "code": "{patch}"}},
            {"type": {"text": "admin-amount"}, "doseQuantity": {"value": 9, "code": "mg"}}]}));
        let dose = dose_of(&dosage).try_cast::<Map>().unwrap_or_default();
        assert_eq!(dose.get("value").and_then(|v| v.as_float().ok()), Some(1.0));
        assert_eq!(
            dose.get("unit")
                .and_then(|v| v.clone().into_string().ok())
                .as_deref(),
            Some("{patch}")
        );
        let range = json(serde_json::json!({"doseAndRate": [
            {"doseRange": {"low": {"value": 1, "code": "mg"}, "high": {"value": 2, "code": "mg"}}}]}));
        let dose = dose_of(&range).try_cast::<Map>().unwrap_or_default();
        assert_eq!(dose.get("value").and_then(|v| v.as_float().ok()), Some(2.0));
        let foreign = json(serde_json::json!({"doseAndRate": [
            {"doseQuantity": {"value": 1, "system": "http://example.org/units", "code": "x"}}]}));
        assert!(dose_of(&foreign).is_unit());
    }

    #[test]
    fn days_covered_merges_and_clips() {
        let iv = |s: &str, e: &str| {
            Dynamic::from_array(vec![
                Dynamic::from(s.to_owned()),
                Dynamic::from(e.to_owned()),
            ])
        };
        let start = Dynamic::from("2023-04-21".to_owned());
        let end = Dynamic::from("2023-05-01".to_owned());
        // 7-day supply from 04-23 → [04-23, 04-30] = 7.
        let one = vec![iv("2023-04-23", "2023-04-30")];
        assert_eq!(days_covered(&one, &start, &end).as_int().ok(), Some(7));
        // Touching intervals merge: [04-10, 04-22] ∪ [04-23, 04-25] clipped → [04-21, 04-25] = 4.
        let two = vec![
            iv("2023-04-23", "2023-04-25"),
            iv("2023-04-10", "2023-04-22"),
        ];
        assert_eq!(days_covered(&two, &start, &end).as_int().ok(), Some(4));
        // Touching the window on its last day only contributes 0.
        let edge = vec![iv("2023-05-01", "2023-05-08")];
        assert_eq!(days_covered(&edge, &start, &end).as_int().ok(), Some(0));
    }
}
