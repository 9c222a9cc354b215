//! The CDS services Cardinal offers: one folder per service under `rules/`, each with a
//! `service.toml` manifest, one or more `.rhai` rule files and, optionally, candidate versions of
//! them in `candidates/`. A [`Registry`] is one load of a rules directory; it is immutable, and a
//! reload builds a new one (see `rule_set`).

mod lenient;
mod loader;
mod manifest;

pub use loader::{CANDIDATES_DIR, LoadErrors, MANIFEST_FILE, Overlay, load, load_service_with};
pub(crate) use loader::{is_hidden, line_col};
pub use manifest::{CandidateSpec, EvidenceLink, Manifest, Mode, RuleOverride, SourceSpec};

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use serde_json::{Map, Value};

use crate::cds_hooks::{EXTENSION_SERVICE, ServiceDescriptor, Source};
use crate::engine::{CompiledRule, DataTables};
use crate::prefetch::PrefetchPlan;

/// One CDS service: its manifest and its compiled rules, in file-name order.
#[derive(Debug)]
pub struct CdsService {
    pub manifest: Manifest,
    pub rules: Vec<CompiledRule>,
    /// Candidate versions of some of `rules` (same ids), run silently after them and compared.
    pub candidates: Vec<CompiledRule>,
    pub dir: PathBuf,
    /// The `[data]` tables, loaded once.
    pub data: Arc<DataTables>,
    /// Canonical URLs of the value sets its rules name.
    pub value_sets: Vec<String>,
    /// The manifest's prefetch templates, checked at load time.
    pub prefetch: PrefetchPlan,
}

impl CdsService {
    pub fn id(&self) -> &str {
        &self.manifest.id
    }

    pub fn hook(&self) -> &str {
        &self.manifest.hook
    }

    /// The discovery entry (`GET /cds-services`).
    pub fn descriptor(&self) -> ServiceDescriptor {
        let m = &self.manifest;
        let mut meta = Map::new();
        meta.insert("version".into(), Value::from(m.version.clone()));
        if let Some(owner) = &m.owner {
            meta.insert("owner".into(), Value::from(owner.clone()));
        }
        if !m.evidence.is_empty() {
            let links = m
                .evidence
                .iter()
                .map(|e| serde_json::json!({"label": e.label, "url": e.url}))
                .collect();
            meta.insert("evidence".into(), Value::Array(links));
        }
        let mut extension = Map::new();
        extension.insert(EXTENSION_SERVICE.into(), Value::Object(meta));
        ServiceDescriptor {
            hook: m.hook.clone(),
            title: m.title.clone(),
            description: m.description.clone(),
            id: m.id.clone(),
            prefetch: m
                .prefetch
                .iter()
                .map(|(key, template)| (key.clone(), template.get_ref().clone()))
                .collect(),
            usage_requirements: m.usage_requirements.clone(),
            extension,
        }
    }

    /// The repeat-suppression window of a rule, in hours (`[rules.<id>]`, else the service's).
    pub fn suppress_repeat_hours(&self, rule_id: &str) -> Option<u32> {
        self.manifest
            .rules
            .get(rule_id)
            .and_then(|r| r.suppress_repeat_hours)
            .or(self.manifest.suppress_repeat_hours)
            .filter(|&h| h > 0)
    }

    /// The card `source` used when a rule gives none: the manifest's, else the service title.
    pub fn default_source(&self) -> Source {
        let m = &self.manifest;
        match &m.source {
            Some(s) => Source {
                label: s.label.clone(),
                url: s.url.clone(),
                icon: s.icon.clone(),
                topic: None,
            },
            None => Source {
                label: m.title.clone().unwrap_or_else(|| m.id.clone()),
                ..Source::default()
            },
        }
    }
}

/// All services, by id. Immutable once loaded.
#[derive(Debug, Default)]
pub struct Registry {
    services: BTreeMap<String, Arc<CdsService>>,
}

impl Registry {
    pub fn new(services: impl IntoIterator<Item = CdsService>) -> Self {
        Self {
            services: services
                .into_iter()
                .map(|s| (s.manifest.id.clone(), Arc::new(s)))
                .collect(),
        }
    }

    /// This registry with `service` in place of the one with its id (the others shared).
    pub fn with_service(&self, service: CdsService) -> Self {
        let mut services = self.services.clone();
        services.insert(service.manifest.id.clone(), Arc::new(service));
        Self { services }
    }

    pub fn get(&self, id: &str) -> Option<&Arc<CdsService>> {
        self.services.get(id)
    }

    pub fn services(&self) -> impl Iterator<Item = &Arc<CdsService>> {
        self.services.values()
    }

    pub fn len(&self) -> usize {
        self.services.len()
    }

    pub fn is_empty(&self) -> bool {
        self.services.is_empty()
    }

    /// Every value set named by some rule, once.
    pub fn value_sets(&self) -> Vec<String> {
        let mut urls: Vec<String> = self
            .services
            .values()
            .flat_map(|s| s.value_sets.iter().cloned())
            .collect();
        urls.sort();
        urls.dedup();
        urls
    }

    pub fn rule_count(&self) -> usize {
        self.services.values().map(|s| s.rules.len()).sum()
    }
}
