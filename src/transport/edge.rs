//! What the transport adds around the evaluator: who is calling ([`Authenticator`]), the audit
//! trail, and whether the port speaks TLS. Built once per server from the configuration and shared
//! by the EHR-facing and the admin listeners.

use std::sync::Arc;

use crate::audit::AuditSink;
use crate::auth::{AuthError, Authenticator};
use crate::evaluator::Cardinal;
use crate::store::{Store, StoreError};

use super::tls::{TlsError, TlsReloader};

/// Why a server cannot start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Shared by both listeners; cheap to clone.
#[derive(Clone, Debug)]
pub struct Edge {
    pub(super) auth: Option<Arc<Authenticator>>,
    pub(super) audit: AuditSink,
    pub(super) tls: Option<Arc<TlsReloader>>,
    /// Cards, outcomes and feedback (`None` with `store.enabled = false`).
    pub(super) store: Option<Store>,
}

impl Edge {
    /// Reads `[auth]`, `[tls]`, `[audit]` and `[store]` of `cardinal`'s configuration; starts the
    /// audit writer and opens the store (migrating it).
    pub async fn new(cardinal: &Cardinal) -> Result<Self, ServeError> {
        let config = cardinal.config();
        let auth = Authenticator::from_config(&config.auth)?;
        let tls = TlsReloader::from_config(&config.tls)?;
        let audit = AuditSink::start(&config.audit, &config.data_dir, cardinal.shared_metrics());
        let watched = audit.clone();
        cardinal
            .metrics()
            .observe_audit(move || watched.failing().is_some());
        let store = if config.store.enabled {
            Some(Store::open(&config.store, &config.data_dir, cardinal.shared_metrics()).await?)
        } else {
            None
        };
        Ok(Self {
            auth,
            audit,
            tls,
            store,
        })
    }

    /// The scheme EHRs call this port with.
    pub(super) fn scheme(&self) -> &'static str {
        if self.tls.is_some() { "https" } else { "http" }
    }

    /// The authenticator, when authentication is on.
    pub fn authenticator(&self) -> Option<&Arc<Authenticator>> {
        self.auth.as_ref()
    }

    /// The TLS settings of the EHR-facing port (`None`: plain HTTP).
    pub fn tls(&self) -> Option<&Arc<TlsReloader>> {
        self.tls.as_ref()
    }

    pub fn audit(&self) -> &AuditSink {
        &self.audit
    }

    /// The store, when enabled.
    pub fn store(&self) -> Option<&Store> {
        self.store.as_ref()
    }
}
