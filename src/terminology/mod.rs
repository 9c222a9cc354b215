//! Terminology: "is this code in value set X?", "what is this code's display?", "does A subsume B?".
//!
//! One interface ([`TerminologySource`]) with two sources: value sets and code systems shipped with
//! the rule packs ([`LocalTerminology`], the default) and, when configured, a remote FHIR terminology
//! server ([`RemoteTerminology`], behind a cache). [`Terminology`] asks the sources in the configured
//! order (`terminology.order`); the first that knows the value set (or code system) answers.

mod cache;
mod client;
mod local;
mod remote;
mod settings;

pub use cache::TerminologyStats;
pub use local::{LoadReport, LocalTerminology};
pub use remote::{PreExpandReport, RemoteTerminology};
pub use settings::{RemoteSettings, Secret, SourceKind, TerminologyConfig};

use std::fmt;
use std::sync::Arc;
use std::time::Instant;

/// Why a terminology question could not be answered. Messages name value sets and code systems,
/// never patient data.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TerminologyError {
    #[error("value set `{0}` is not known to any terminology source")]
    UnknownValueSet(String),
    #[error("value set id `{id}` is ambiguous: use the canonical URL ({})", .urls.join(", "))]
    AmbiguousValueSet { id: String, urls: Vec<String> },
    #[error("code system `{0}` is not known to any terminology source")]
    UnknownCodeSystem(String),
    #[error("terminology server did not answer in time ({0})")]
    Timeout(String),
    #[error("terminology server error: {0}")]
    Server(String),
    #[error("cannot load terminology file {path}: {message}")]
    Load { path: String, message: String },
    #[error("invalid terminology configuration: {0}")]
    Config(String),
}

/// The relation between two codes of one code system (`CodeSystem/$subsumes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subsumption {
    Equivalent,
    Subsumes,
    SubsumedBy,
    NotSubsumed,
}

impl Subsumption {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Equivalent => "equivalent",
            Self::Subsumes => "subsumes",
            Self::SubsumedBy => "subsumed-by",
            Self::NotSubsumed => "not-subsumed",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "equivalent" => Self::Equivalent,
            "subsumes" => Self::Subsumes,
            "subsumed-by" => Self::SubsumedBy,
            "not-subsumed" => Self::NotSubsumed,
            _ => return None,
        })
    }
}

/// A place terminology answers come from. Every method returns `Ok(None)` when the source does not
/// know the value set or code system at all, so the next source can be asked; `deadline` bounds any
/// remote work (rules must never hang on terminology).
pub trait TerminologySource: Send + Sync {
    /// Short name recorded in explanations and metrics (`local`, `remote`).
    fn name(&self) -> &'static str;

    /// Whether (`system`, `code`) is in the value set `url` (canonical URL, optionally `url|version`).
    fn validate_code(
        &self,
        url: &str,
        system: &str,
        code: &str,
        deadline: Instant,
    ) -> Result<Option<bool>, TerminologyError>;

    /// The display of a code (`CodeSystem/$lookup`).
    fn lookup_display(
        &self,
        system: &str,
        code: &str,
        deadline: Instant,
    ) -> Result<Option<String>, TerminologyError>;

    /// How `a` relates to `b` in `system` (`CodeSystem/$subsumes`).
    fn subsumes(
        &self,
        system: &str,
        a: &str,
        b: &str,
        deadline: Instant,
    ) -> Result<Option<Subsumption>, TerminologyError>;
}

/// An answer to "is this code in the value set", with where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Membership {
    pub member: bool,
    pub source: &'static str,
}

/// The coding that made a concept a member of a value set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Match<'a> {
    pub system: &'a str,
    pub code: &'a str,
    pub source: &'static str,
}

/// The terminology sources in resolution order. Shared by every request.
#[derive(Clone, Default)]
pub struct Terminology {
    sources: Vec<Arc<dyn TerminologySource>>,
    local: Option<Arc<LocalTerminology>>,
    remote: Option<Arc<RemoteTerminology>>,
}

impl fmt::Debug for Terminology {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.sources.iter().map(|s| s.name()).collect();
        f.debug_struct("Terminology")
            .field("sources", &names)
            .finish()
    }
}

impl Terminology {
    /// Only the value sets shipped with the rules.
    pub fn local(local: LocalTerminology) -> Self {
        let local = Arc::new(local);
        Self {
            sources: vec![local.clone()],
            local: Some(local),
            remote: None,
        }
    }

    /// Sources in the given order; `local` (if any) is also kept for start-up checks.
    pub fn with_sources(
        sources: Vec<Arc<dyn TerminologySource>>,
        local: Option<Arc<LocalTerminology>>,
    ) -> Self {
        Self {
            sources,
            local,
            remote: None,
        }
    }

    /// The sources of `config`, in its order: `local`, and the remote server when one is
    /// configured (its client is started; nothing is sent yet).
    pub fn from_config(
        config: &TerminologyConfig,
        local: LocalTerminology,
    ) -> Result<Self, TerminologyError> {
        config.validate().map_err(TerminologyError::Config)?;
        let remote = match &config.remote {
            Some(settings) => Some(Arc::new(RemoteTerminology::new(settings)?)),
            None => None,
        };
        Ok(Self::assemble(config, local, remote))
    }

    /// The sources of `config`, in its order, with a remote source that already exists: a rule-set
    /// reload brings new shipped value sets but keeps the server client and its cache.
    pub fn assemble(
        config: &TerminologyConfig,
        local: LocalTerminology,
        remote: Option<Arc<RemoteTerminology>>,
    ) -> Self {
        let local = Arc::new(local);
        let sources = config
            .order
            .iter()
            .filter_map(|kind| match kind {
                SourceKind::Local => Some(local.clone() as Arc<dyn TerminologySource>),
                SourceKind::Remote => remote
                    .clone()
                    .map(|remote| remote as Arc<dyn TerminologySource>),
            })
            .collect();
        Self {
            sources,
            local: Some(local),
            remote,
        }
    }

    /// The remote source, shared (it outlives rule sets).
    pub fn shared_remote(&self) -> Option<Arc<RemoteTerminology>> {
        self.remote.clone()
    }

    /// The value sets and code systems shipped with the rules.
    pub fn local_source(&self) -> Option<&LocalTerminology> {
        self.local.as_deref()
    }

    /// The remote terminology server, when one is configured.
    pub fn remote_source(&self) -> Option<&RemoteTerminology> {
        self.remote.as_deref()
    }

    /// Cache and remote-call counters; `None` without a remote server.
    pub fn stats(&self) -> Option<TerminologyStats> {
        self.remote.as_ref().map(|remote| remote.stats())
    }

    /// Start-up pre-expansion: the value sets in `urls` that the remote server would answer (no
    /// source before it knows them) are expanded once and kept in memory. `None` when there is no
    /// remote server or `pre_expand` is off. Failures are logged and reported, never fatal.
    pub fn pre_expand(&self, urls: &[String]) -> Option<PreExpandReport> {
        let remote = self.remote.as_ref().filter(|r| r.pre_expand_enabled())?;
        let remote_at = self.sources.iter().position(|s| s.name() == "remote")?;
        let local_first = self
            .sources
            .iter()
            .take(remote_at)
            .any(|s| s.name() == "local");
        let wanted: Vec<String> = urls
            .iter()
            .filter(|url| {
                !(local_first && self.local.as_ref().is_some_and(|l| l.has_value_set(url)))
            })
            .cloned()
            .collect();
        Some(remote.pre_expand(&wanted))
    }

    /// Names of the sources, in resolution order.
    pub fn source_names(&self) -> Vec<&'static str> {
        self.sources.iter().map(|s| s.name()).collect()
    }

    pub fn validate_code(
        &self,
        url: &str,
        system: &str,
        code: &str,
        deadline: Instant,
    ) -> Result<Membership, TerminologyError> {
        for source in &self.sources {
            if let Some(member) = source.validate_code(url, system, code, deadline)? {
                return Ok(Membership {
                    member,
                    source: source.name(),
                });
            }
        }
        Err(TerminologyError::UnknownValueSet(url.to_owned()))
    }

    /// A canonical URL as given, or the URL of the shipped value set with that id.
    pub fn resolve<'a>(&'a self, url_or_id: &'a str) -> Result<&'a str, TerminologyError> {
        if url_or_id.contains(':') {
            return Ok(url_or_id);
        }
        match self.local.as_ref().and_then(|l| l.url_of_id(url_or_id)) {
            Some(Ok(url)) => Ok(url),
            Some(Err(urls)) => Err(TerminologyError::AmbiguousValueSet {
                id: url_or_id.to_owned(),
                urls: urls.into_iter().map(str::to_owned).collect(),
            }),
            None => Err(TerminologyError::UnknownValueSet(url_or_id.to_owned())),
        }
    }

    /// Whether any of `codings` is in the value set; the first matching coding is returned.
    pub fn first_member<'a>(
        &self,
        url: &str,
        codings: impl IntoIterator<Item = (&'a str, &'a str)>,
        deadline: Instant,
    ) -> Result<Option<Match<'a>>, TerminologyError> {
        let mut known = false;
        for (system, code) in codings {
            let answer = self.validate_code(url, system, code, deadline)?;
            known = true;
            if answer.member {
                return Ok(Some(Match {
                    system,
                    code,
                    source: answer.source,
                }));
            }
        }
        if !known && !self.knows_value_set(url) {
            return Err(TerminologyError::UnknownValueSet(url.to_owned()));
        }
        Ok(None)
    }

    /// Whether some source can answer for this value set without being asked a code (local only;
    /// a remote source is assumed to know every value set).
    pub fn knows_value_set(&self, url: &str) -> bool {
        self.sources.iter().any(|s| s.name() != "local")
            || self.local.as_ref().is_some_and(|l| l.has_value_set(url))
    }

    pub fn lookup_display(
        &self,
        system: &str,
        code: &str,
        deadline: Instant,
    ) -> Result<Option<String>, TerminologyError> {
        for source in &self.sources {
            if let Some(display) = source.lookup_display(system, code, deadline)? {
                return Ok(Some(display));
            }
        }
        Ok(None)
    }

    pub fn subsumes(
        &self,
        system: &str,
        a: &str,
        b: &str,
        deadline: Instant,
    ) -> Result<Subsumption, TerminologyError> {
        for source in &self.sources {
            if let Some(answer) = source.subsumes(system, a, b, deadline)? {
                return Ok(answer);
            }
        }
        if a == b {
            return Ok(Subsumption::Equivalent);
        }
        Err(TerminologyError::UnknownCodeSystem(system.to_owned()))
    }
}
