//! FHIR R4 element names, for catching a misspelt element (`valueQuantity.valeu`,
//! `medicationCodableConcept`) that would otherwise read as `()` and silently keep a rule from
//! firing. The table is generated from the HL7 StructureDefinitions by
//! `tools/build_fhir_elements.py` (see the header of `fhir_r4_elements.tsv`).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::OnceLock;

const TABLE: &str = include_str!("fhir_r4_elements.tsv");

/// Every FHIR R4 resource, datatype and backbone element, with its elements and their types.
pub(crate) struct Elements {
    types: BTreeMap<&'static str, BTreeMap<&'static str, Vec<&'static str>>>,
}

impl Elements {
    pub(crate) fn r4() -> &'static Elements {
        static TABLE_R4: OnceLock<Elements> = OnceLock::new();
        TABLE_R4.get_or_init(|| Elements::parse(TABLE))
    }

    fn parse(table: &'static str) -> Self {
        let mut types = BTreeMap::new();
        for line in table.lines().filter(|l| !l.starts_with('#')) {
            let mut fields = line.split('\t');
            let Some(name) = fields.next() else {
                continue;
            };
            let elements = fields
                .filter_map(|f| f.split_once(':'))
                .map(|(element, ty)| (element, ty.split('|').collect()))
                .collect();
            types.insert(name, elements);
        }
        Self { types }
    }

    /// Whether `name` is a FHIR type with elements (a resource, a complex datatype or a backbone).
    pub(crate) fn is_complex(&self, name: &str) -> bool {
        self.types.contains_key(name)
    }

    /// Whether `name` is a resource type (`Observation`), not a datatype.
    pub(crate) fn is_resource(&self, name: &str) -> bool {
        // Resources list `implicitRules`; datatypes and backbone elements never do.
        !name.contains('.')
            && self
                .types
                .get(name)
                .is_some_and(|e| e.contains_key("implicitRules"))
    }

    /// The resource type named `name`, as the table spells it.
    pub(crate) fn resource(&self, name: &str) -> Option<&'static str> {
        let (key, _) = self.types.get_key_value(name)?;
        self.is_resource(key).then_some(*key)
    }

    /// The types of `element` of `ty`, or `None` when `ty` has no such element.
    pub(crate) fn element(&self, ty: &str, element: &str) -> Option<&[&'static str]> {
        self.types.get(ty)?.get(element).map(Vec::as_slice)
    }

    /// The element names of `ty`.
    pub(crate) fn names(&self, ty: &str) -> BTreeSet<&'static str> {
        self.types
            .get(ty)
            .map(|e| e.keys().copied().collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::Elements;

    #[test]
    fn the_table_knows_resources_choice_elements_and_backbones() {
        let r4 = Elements::r4();
        assert!(r4.is_resource("Observation"));
        assert!(!r4.is_resource("Quantity"));
        assert_eq!(
            r4.element("Observation", "valueQuantity"),
            Some(&["Quantity"][..])
        );
        assert_eq!(r4.element("Quantity", "value"), Some(&["decimal"][..]));
        assert_eq!(
            r4.element("MedicationRequest", "dispenseRequest"),
            Some(&["MedicationRequest.dispenseRequest"][..])
        );
        assert_eq!(
            r4.element(
                "MedicationRequest.dispenseRequest",
                "expectedSupplyDuration"
            ),
            Some(&["Duration"][..])
        );
        assert!(r4.element("Observation", "valeu").is_none());
        assert!(r4.types.len() > 600, "{}", r4.types.len());
    }
}
