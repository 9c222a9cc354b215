//! The patient context rules read: every resource of the request parsed once, indexed by type and by
//! code, shared read-only between the rules of one call.
//!
//! Two inputs are kept apart, as clinical logic needs: the patient *record* (everything from prefetch)
//! and the *draft orders* of order-select / order-sign (`context.draftOrders`), which are not yet part
//! of the record.

mod fhir_time;
mod head;
mod index;
mod resource;

pub use fhir_time::{parse_fhir_date, parse_fhir_instant};
pub use index::PatientContext;
pub use resource::{Origin, Resource, concept_codings, split_code};
