//! FHIR R4 resources as Cardinal reads them: one pass over the JSON, each resource kept as text plus
//! the fields the patient index needs, a full JSON tree only when a rule asks for more.

mod depth;
mod read;
mod resource;
mod summary;
mod time;

pub use depth::{MAX_JSON_DEPTH, MAX_NESTING, TooDeep, check_json_depth, nests_deeper_than};
pub use read::{
    Prefetch, PrefetchField, PrefetchReads, PrefetchSeed, PrefetchValue, ReadError, ReadPrefetch,
};
pub use resource::{Origin, Resource, concept_codings, split_code};
pub use time::{parse_fhir_date, parse_fhir_instant};
