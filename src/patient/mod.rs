//! The patient context rules read: every resource of the request parsed once, indexed by type and by
//! code, shared read-only between the rules of one call.
//!
//! Two inputs are kept apart, as clinical logic needs: the patient *record* (everything from prefetch)
//! and the *draft orders* of order-select / order-sign (`context.draftOrders`), which are not yet part
//! of the record.

mod index;

pub use index::PatientContext;
