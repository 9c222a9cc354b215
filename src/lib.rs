//! Cardinal: a CDS Hooks 2.0 clinical decision-support service whose rules are sandboxed Rhai
//! scripts.
//!
//! Where things happen:
//! - a hook call enters in [`transport`] (HTTP/JSON in `transport/http.rs`, gRPC in `transport/grpc.rs`);
//! - it is admitted on arrival, or refused at once when the replica is full, in [`admission`];
//! - its JWT is verified in [`auth`] (who is calling), and the call recorded in [`audit`];
//! - it is evaluated on one path in [`evaluator`], after [`prefetch`] has fetched what the EHR did
//!   not send;
//! - FHIR resources are read in one pass in [`fhir`] and indexed once per call in [`patient`];
//! - rules run in the sandboxed [`engine`], loaded from `rules/` by [`registry`] into a versioned,
//!   immutable [`rule_set`] that a [`reload`] replaces atomically, after the new set's own test
//!   cases pass; silent rules and [`candidate`] versions are evaluated and recorded, never shown;
//! - cards are built and explained in [`cards`]; a card the patient saw within its rule's window is
//!   held back by [`repeats`];
//! - the wire model is [`cds_hooks`];
//! - for rule authors: [`explain`] (every rule's verdict, facts and conditions), [`rule_tests`]
//!   (`cardinal test`: test cases next to the rules), [`lint`] (`cardinal check`'s warnings) and
//!   [`playground`] (`serve --dev`: edit a rule in the browser and see its diagnostics, cards and
//!   explanation on a test case);
//! - before go-live: [`simulate`] (`cardinal simulate`: every service over a population, with firing
//!   rates, disparities and data blind spots);
//! - for operators: [`loadgen`] (`cardinal bench`: load and idle connections, loopback only).

pub mod admission;
pub mod audit;
pub mod auth;
pub mod candidate;
pub mod cards;
pub mod cds_hooks;
pub mod config;
pub mod engine;
pub mod evaluator;
pub mod explain;
pub mod fhir;
pub mod lint;
pub mod loadgen;
pub mod patient;
pub mod playground;
pub mod prefetch;
pub mod registry;
pub mod reload;
pub mod repeats;
pub mod rule_set;
pub mod rule_tests;
pub mod simulate;
pub mod store;
pub mod telemetry;
pub mod terminology;
pub mod transport;

/// Generated from `proto/cardinal/v1/cds_hooks.proto`.
pub mod proto {
    tonic::include_proto!("cardinal.v1");
}
