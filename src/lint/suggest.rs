//! "Did you mean": the closest known name to a misspelt one, by edit distance.

/// The known name closest to `name`, when it is close enough to be a likely misspelling: at most a
/// third of the name's length in edits (and at least one), case differences counting as half.
pub(crate) fn closest<'a>(name: &str, known: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let budget = (name.chars().count() / 3).max(1);
    let lower = name.to_lowercase();
    known
        .into_iter()
        .filter(|k| *k != name)
        .map(|k| {
            let exact = strsim::damerau_levenshtein(name, k);
            let folded = strsim::damerau_levenshtein(&lower, &k.to_lowercase());
            // A case slip (`valuequantity`) is nearer than a letter slip.
            ((exact * 2).min(folded * 2 + 1), k)
        })
        .filter(|(score, _)| *score <= budget * 2)
        .min()
        .map(|(_, k)| k)
}

/// ` did you mean `x`?` or nothing.
pub(crate) fn did_you_mean<'a>(
    name: &str,
    known: impl IntoIterator<Item = &'a str>,
) -> Option<String> {
    closest(name, known).map(|k| format!("did you mean `{k}`?"))
}

#[cfg(test)]
mod tests {
    use super::closest;

    #[test]
    fn misspellings_find_their_word_and_strangers_find_none() {
        let known = ["latest_observation", "observations", "medications"];
        assert_eq!(
            closest("latest_observaton", known),
            Some("latest_observation")
        );
        assert_eq!(closest("medicatoins", known), Some("medications"));
        assert_eq!(closest("frobnicate", known), None);
        assert_eq!(
            closest(
                "medicationCodableConcept",
                ["medicationCodeableConcept", "medicationReference"]
            ),
            Some("medicationCodeableConcept")
        );
        assert_eq!(
            closest("valeu", ["value", "unit", "code", "system"]),
            Some("value")
        );
    }
}
