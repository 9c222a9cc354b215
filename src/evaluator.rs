//! The one evaluation path. Both transports hand a validated [`HookRequest`] to [`Cardinal::call`];
//! the CLI (`cardinal test`, `explain`) uses [`Cardinal::evaluate`] in-process the same way.
//!
//! request → the serving rule set, taken once → service lookup → hook and context checks →
//!   prefetch (fetch what is missing, or 412) → patient context (parse once, index) → each rule in
//!   the sandbox (active and silent rules, then candidates) → cards with explanations (active rules
//!   only) + diagnostics, stamped with the rule-set version

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::Value;
use tracing::Instrument;

use crate::admission::{Admission, Overloaded, Ticket};

use crate::candidate::Disagreement;
use crate::cards;
use crate::cds_hooks::context as hook_context;
use crate::cds_hooks::{
    Discovery, EXTENSION_EVALUATION_TIME, FeedbackRequest, HookRequest, HookResponse, RequestError,
};
use crate::config::Config;
use crate::engine::{
    CallBudget, CompileError, CompiledRule, RuleEngine, RuleInput, RuleMode, RuleOutcome, Verdict,
};
use crate::fhir::PrefetchValue;
use crate::patient::PatientContext;
use crate::prefetch::{self, Prefetcher};
use crate::registry::{CdsService, LoadErrors};
use crate::repeats::{RepeatIndex, SuppressedCard};
use crate::rule_set::{RuleSet, RuleSets};
use crate::telemetry::{self, Metrics};
use crate::terminology::{RemoteTerminology, Terminology, TerminologyError};

/// Why a call was refused or failed. Messages never contain patient data.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("unknown CDS service `{}`", crate::cds_hooks::excerpt(.0))]
    UnknownService(String),
    #[error(transparent)]
    InvalidRequest(#[from] RequestError),
    #[error("required FHIR data could not be obtained: {0}")]
    PrefetchUnavailable(String),
    #[error(transparent)]
    Overloaded(#[from] Overloaded),
    #[error("internal error: {0}")]
    Internal(String),
}

impl CallError {
    /// The HTTP status the CDS Hooks endpoint answers this refusal with (`cardinal test` compares
    /// refusals by it, so in-process and HTTP results read the same).
    pub fn http_status(&self) -> u16 {
        match self {
            Self::UnknownService(_) => 404,
            Self::InvalidRequest(_) => 400,
            Self::PrefetchUnavailable(_) => 412,
            Self::Overloaded(_) => 503,
            Self::Internal(_) => 500,
        }
    }
}

/// Per-call settings that come from the transport rather than the CDS Hooks body.
#[derive(Debug, Clone, Default)]
pub struct CallOptions {
    /// Pins "now" for the rules (e.g. from the `X-Cardinal-Evaluation-Time` header).
    pub evaluation_time: Option<DateTime<Utc>>,
    pub trace_id: Option<String>,
    /// The call's admission, taken by the transport on arrival. Without one (in-process callers),
    /// `Cardinal::call` admits the call itself.
    pub admission: Option<Arc<Ticket>>,
    /// The rule set the call runs on, taken on arrival ([`Cardinal::call_target`]). Without one,
    /// the call takes the serving set when it starts.
    pub rule_set: Option<Arc<RuleSet>>,
    /// The verified caller (issuer, subject, tenant); `None` with authentication off and for
    /// in-process callers. Prefetch fetches only from the `fhirServer`s its issuer may name.
    pub caller: Option<crate::auth::Caller>,
}

/// A finished evaluation: the response and, for explanation and metrics, every rule's outcome.
#[derive(Debug, Clone)]
pub struct Evaluation {
    pub service_id: String,
    pub response: HookResponse,
    /// Every rule's outcome: active, silent and candidate (after the rules they are candidates for).
    pub outcomes: Vec<RuleOutcome>,
    /// Where a candidate and the rule in use disagreed.
    pub disagreements: Vec<Disagreement>,
    /// Cards held back because the patient saw them within their rule's window.
    pub suppressed: Vec<SuppressedCard>,
    /// Prefetch keys sent that the service does not declare, so its rules did not see.
    pub ignored_prefetch: Vec<String>,
    /// The rule set that produced it.
    pub rule_set: Arc<RuleSet>,
    pub evaluated_at: DateTime<Utc>,
    pub duration: Duration,
}

/// Cardinal's core: the rule set serving now, and what outlives rule-set reloads (configuration,
/// admission control, metrics, the prefetch client, the terminology server's client and cache).
/// Cheap to clone.
///
/// Evaluating a hook call in-process, as the servers and the CLI do:
///
/// ```
/// use cardinal::cds_hooks::HookRequest;
/// use cardinal::config::Config;
/// use cardinal::evaluator::{CallOptions, Cardinal};
///
/// let cardinal = Cardinal::load(Config::default())?; // the services in ./rules
/// let request = HookRequest::from_json_bytes(
///     br#"{"hook": "patient-view", "hookInstance": "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea",
///          "context": {"userId": "Practitioner/1", "patientId": "p1"},
///          "prefetch": {"patient": {"resourceType": "Patient", "id": "p1", "birthDate": "1960-05-01"}}}"#,
/// )?;
/// let evaluation = cardinal.evaluate("patient-greeting", request, CallOptions::default())?;
/// let card = &evaluation.response.cards[0];
/// assert!(card.summary.starts_with("Now seeing"));
/// assert_eq!(card.explanation().map(|e| e.rule_id.as_str()), Some("greeting"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct Cardinal {
    rule_sets: Arc<RuleSets>,
    repeats: Arc<RepeatIndex>,
    remote_terminology: Option<Arc<RemoteTerminology>>,
    config: Arc<Config>,
    admission: Admission,
    metrics: Arc<Metrics>,
    prefetcher: Prefetcher,
}

/// Calls carrying at most this many FHIR resources (context and prefetch) are evaluated on the
/// async worker that read them; larger ones (a whole patient record) on the blocking pool, so the
/// other connections' reads and refusals are never held up by a long evaluation.
const INLINE_EVALUATION_RESOURCES: usize = 64;

/// The FHIR resources a call carries in its prefetch and context (draft orders and the like).
fn resource_count(request: &HookRequest) -> usize {
    let prefetched: usize = request
        .prefetch
        .values()
        .map(|value| match value {
            PrefetchValue::Null => 0,
            PrefetchValue::Resource(_) => 1,
            PrefetchValue::Bundle(entries) => entries.len(),
        })
        .sum();
    let in_context: usize = request
        .context
        .values()
        .map(|value| match value {
            serde_json::Value::Object(o) => o
                .get("entry")
                .and_then(serde_json::Value::as_array)
                .map_or(1, Vec::len),
            serde_json::Value::Array(items) => items.len(),
            _ => 0,
        })
        .sum();
    prefetched + in_context
}

/// Parses an RFC 3339 date-time, or a plain date (taken at 00:00 UTC).
pub fn parse_evaluation_time(text: &str) -> Option<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Some(t.with_timezone(&Utc));
    }
    chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .ok()
        .map(|d| d.and_time(chrono::NaiveTime::MIN).and_utc())
}

impl Cardinal {
    /// Starts the terminology server client (when configured) and loads the rules directory named
    /// by `config`.
    pub fn load(config: Config) -> Result<Self, LoadErrors> {
        let remote = remote_terminology(&config)?;
        let rule_set = RuleSet::load(&config, remote.clone())?;
        rule_set.pre_expand();
        Ok(Self::new(config, rule_set, remote))
    }

    /// Cardinal serving `rule_set`; `remote` is the terminology server client its engine uses, if
    /// any (kept for the rule sets later reloads build).
    pub fn new(config: Config, rule_set: RuleSet, remote: Option<Arc<RemoteTerminology>>) -> Self {
        // OTLP metric export needs a Tokio runtime; the CLI's in-process commands have none.
        let otlp =
            telemetry::otlp_endpoint().is_some() && tokio::runtime::Handle::try_current().is_ok();
        let metrics = Metrics::new(otlp);
        metrics.observe_terminology(remote.clone());
        Self {
            metrics: Arc::new(metrics),
            admission: Admission::new(config.admission()),
            prefetcher: Prefetcher::new(&config.prefetch, &config.auth, config.max_body_bytes),
            rule_sets: Arc::new(RuleSets::new(rule_set)),
            repeats: Arc::new(RepeatIndex::default()),
            remote_terminology: remote,
            config: Arc::new(config),
        }
    }

    /// Cardinal for a rule set that does not serve: a reload runs the new set's test cases on it
    /// before the swap. Its metrics are its own (test runs are not production calls) and callers may
    /// pin the evaluation time, as test cases do.
    pub fn detached(&self, rule_set: Arc<RuleSet>) -> Self {
        let config = Config {
            allow_evaluation_time_override: true,
            ..(*self.config).clone()
        };
        Self {
            metrics: Arc::new(Metrics::new(false)),
            admission: Admission::new(config.admission()),
            prefetcher: self.prefetcher.clone(),
            rule_sets: Arc::new(RuleSets::from_shared(rule_set)),
            repeats: Arc::new(RepeatIndex::default()),
            remote_terminology: self.remote_terminology.clone(),
            config: Arc::new(config),
        }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The rule set serving now. A call takes it once, on arrival.
    pub fn rule_set(&self) -> Arc<RuleSet> {
        self.rule_sets.current()
    }

    /// The serving rule set and its reloads.
    pub fn rule_sets(&self) -> &RuleSets {
        &self.rule_sets
    }

    /// The terminology server client, shared by every rule set.
    pub fn remote_terminology(&self) -> Option<&Arc<RemoteTerminology>> {
        self.remote_terminology.as_ref()
    }

    /// Admission control: callers admit a hook call on arrival, before reading its body.
    pub fn admission(&self) -> &Admission {
        &self.admission
    }

    /// Admits a call that has just arrived, or refuses it at once (counted in the metrics).
    pub fn admit(&self) -> Result<Ticket, CallError> {
        self.admission.admit().map_err(|why| {
            self.metrics.call_refused(why.as_str());
            CallError::Overloaded(why)
        })
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The metrics, for parts that outlive a call (the audit writer).
    pub fn shared_metrics(&self) -> Arc<Metrics> {
        Arc::clone(&self.metrics)
    }

    /// The terminology the serving rule set's rules consult (sources, cache statistics).
    pub fn terminology(&self) -> Arc<Terminology> {
        self.rule_set().engine().shared_terminology()
    }

    pub fn discovery(&self) -> Discovery {
        let rule_set = self.rule_set();
        Discovery {
            services: rule_set
                .registry()
                .services()
                .map(|s| s.descriptor())
                .collect(),
        }
    }

    /// A service of the serving rule set.
    pub fn service(&self, id: &str) -> Result<Arc<CdsService>, CallError> {
        self.rule_set()
            .service(id)
            .cloned()
            .ok_or_else(|| CallError::UnknownService(id.to_owned()))
    }

    /// The rule set a hook call will run on, if it has the service the call names: transports take
    /// it on arrival and pass it on in [`CallOptions::rule_set`]. An unknown service is refused here,
    /// before the body is read, and counted as a 404 of service `unknown` (caller-given ids never
    /// become metric labels).
    pub fn call_target(&self, id: &str) -> Result<Arc<RuleSet>, CallError> {
        let rule_set = self.rule_set();
        if rule_set.service(id).is_some() {
            return Ok(rule_set);
        }
        self.metrics
            .hook_call("unknown", 404, std::time::Duration::ZERO);
        Err(CallError::UnknownService(id.to_owned()))
    }

    /// Finds the service, checks the request against it and settles the evaluation time.
    fn check(
        &self,
        rule_set: &RuleSet,
        service_id: &str,
        request: &HookRequest,
        options: &CallOptions,
    ) -> Result<(Arc<CdsService>, DateTime<Utc>), CallError> {
        let service = rule_set
            .service(service_id)
            .cloned()
            .ok_or_else(|| CallError::UnknownService(service_id.to_owned()))?;
        if request.hook != service.hook() {
            return Err(RequestError::HookMismatch {
                service: service.id().to_owned(),
                expected: service.hook().to_owned(),
                got: request.hook.clone(),
            }
            .into());
        }
        hook_context::validate(&request.hook, &request.context)?;
        let from_extension = match request
            .extension
            .as_ref()
            .and_then(|e| e.get(EXTENSION_EVALUATION_TIME))
        {
            None => None,
            Some(Value::String(s)) => Some(parse_evaluation_time(s).ok_or_else(|| {
                RequestError::Invalid(format!(
                    "`extension.{EXTENSION_EVALUATION_TIME}` must be an RFC 3339 date-time or a date"
                ))
            })?),
            Some(_) => {
                return Err(RequestError::wrong_type(
                    format!("extension.{EXTENSION_EVALUATION_TIME}"),
                    "a string",
                )
                .into());
            }
        };
        let pinned = options.evaluation_time.or(from_extension);
        if pinned.is_some() && !self.config.allow_evaluation_time_override {
            return Err(RequestError::Invalid(
                "this deployment does not allow pinning the evaluation time".into(),
            )
            .into());
        }
        Ok((service, pinned.unwrap_or_else(Utc::now)))
    }

    /// Fetches the prefetch the EHR did not send, then evaluates the hook call off the async
    /// runtime, at most `max_concurrent_evaluations` at once, on the rule set it took on arrival.
    /// Traced as a `cds_hooks.call` span (ids, versions, counts and status only) and counted in the
    /// metrics.
    pub async fn call(
        &self,
        service_id: &str,
        request: HookRequest,
        mut options: CallOptions,
    ) -> Result<Evaluation, CallError> {
        let started = Instant::now();
        let _in_flight = self.metrics.in_flight();
        let rule_set = options.rule_set.take().unwrap_or_else(|| self.rule_set());
        let span = tracing::info_span!(
            "cds_hooks.call",
            cds.service.id = %service_id,
            cds.hook = %request.hook,
            cds.hook_instance = %request.hook_instance,
            cds.rule_set.version = %rule_set.version(),
            // Logs inside the call carry it, so a log line leads to its trace.
            trace_id = options.trace_id.as_deref().unwrap_or_default(),
            cds.cards = tracing::field::Empty,
            cds.rule_errors = tracing::field::Empty,
            http.response.status_code = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
        );
        // Unknown ids come from callers: one label for all of them keeps the metric bounded.
        let label = if rule_set.service(service_id).is_some() {
            service_id
        } else {
            "unknown"
        };
        let result = self
            .call_in_span(rule_set.clone(), service_id, request, options)
            .instrument(span.clone())
            .await;
        let status = match &result {
            Ok(evaluation) => {
                span.record("cds.cards", evaluation.response.cards.len());
                span.record(
                    "cds.rule_errors",
                    evaluation.response.extension.diagnostics.len(),
                );
                200
            }
            Err(e) => {
                span.record("otel.status_code", "ERROR");
                e.http_status()
            }
        };
        span.record("http.response.status_code", status);
        self.metrics.hook_call(label, status, started.elapsed());
        result
    }

    async fn call_in_span(
        &self,
        rule_set: Arc<RuleSet>,
        service_id: &str,
        mut request: HookRequest,
        mut options: CallOptions,
    ) -> Result<Evaluation, CallError> {
        let ticket = match options.admission.take() {
            Some(ticket) => ticket,
            None => Arc::new(self.admit()?),
        };
        let (service, now) = self.check(&rule_set, service_id, &request, &options)?;
        self.prefetcher
            .reconcile(&service.prefetch, &mut request, options.caller.as_ref())
            .await?;
        let _slot = ticket.evaluation_slot().await.map_err(|why| {
            self.metrics.call_refused(why.as_str());
            CallError::Overloaded(why)
        })?;
        let hook_instance = request.hook_instance.clone();
        let evaluation = if resource_count(&request) <= INLINE_EVALUATION_RESOURCES {
            // A small call is evaluated right here: handing it to another thread and waking this
            // one again costs more than the evaluation, and each wake-up can wait for a scheduler
            // time slice. Admission bounds how many run at once; operation budgets bound each.
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                self.evaluate_admitted(&rule_set, &service, request, now, options.trace_id, true)
            }))
            .map_err(|_| self.evaluation_panicked())?
        } else {
            let this = self.clone();
            // The blocking pool does not inherit the span: carry it, so rule spans are its children.
            let span = tracing::Span::current();
            tokio::task::spawn_blocking(move || {
                span.in_scope(|| {
                    this.evaluate_admitted(
                        &rule_set,
                        &service,
                        request,
                        now,
                        options.trace_id,
                        true,
                    )
                })
            })
            .await
            .map_err(|_| self.evaluation_panicked())?
        };
        // Ids, counts and timings only: the request itself is patient data. Debug level (target
        // `cardinal::calls`): formatting a line per call costs a busy replica a tenth of its
        // throughput; `log_filter = "info,cardinal::calls=debug"` turns it on.
        tracing::debug!(
            target: "cardinal::calls",
            service = %evaluation.service_id,
            hook_instance = %hook_instance,
            rule_set = %evaluation.rule_set.version(),
            cards = evaluation.response.cards.len(),
            rule_errors = evaluation.response.extension.diagnostics.len(),
            duration_us = evaluation.duration.as_micros() as u64,
            "hook call evaluated"
        );
        Ok(evaluation)
    }

    /// A panic in evaluation: the payload may quote patient data, so only the count is kept (the
    /// panic hook logs the location).
    fn evaluation_panicked(&self) -> CallError {
        self.metrics.panic("evaluation");
        CallError::Internal("the evaluation failed unexpectedly".into())
    }

    /// The same evaluation, synchronously (CLI, benchmarks), on the serving rule set (or the one in
    /// `options`). Nothing is fetched: every required prefetch key must be in the request.
    pub fn evaluate(
        &self,
        service_id: &str,
        mut request: HookRequest,
        mut options: CallOptions,
    ) -> Result<Evaluation, CallError> {
        let rule_set = options.rule_set.take().unwrap_or_else(|| self.rule_set());
        let (service, now) = self.check(&rule_set, service_id, &request, &options)?;
        prefetch::require_provided(&service.prefetch, &mut request)?;
        Ok(self.evaluate_admitted(&rule_set, &service, request, now, options.trace_id, false))
    }

    /// Runs every rule of `service`. With `hold_back_repeats` (hook calls, not the authors' tools),
    /// a card the patient was shown within its rule's `suppress_repeat_hours` is held back.
    fn evaluate_admitted(
        &self,
        rule_set: &Arc<RuleSet>,
        service: &CdsService,
        request: HookRequest,
        now: DateTime<Utc>,
        trace_id: Option<String>,
        hold_back_repeats: bool,
    ) -> Evaluation {
        let started = Instant::now();
        let engine = rule_set.engine();
        let patient_id = request
            .context
            .get("patientId")
            .and_then(Value::as_str)
            .map(str::to_owned);
        let ignored_prefetch = request.ignored_prefetch;
        let patient = PatientContext::build(request.context, request.prefetch);
        let input = RuleInput {
            patient,
            hook: request.hook,
            service_id: service.id().to_owned(),
            now,
            default_source: service.default_source(),
            budget: Arc::new(CallBudget::new(engine.limits(), started)),
            data: service.data.clone(),
        };
        let mut suppressed = Vec::new();
        let mut outcomes: Vec<RuleOutcome> = service
            .rules
            .iter()
            .map(|rule| {
                let mut outcome = self.run_rule(engine, service, rule, &input);
                if hold_back_repeats
                    && rule.mode.is_active()
                    && let Some(patient) = &patient_id
                    && let Some(hours) = service.suppress_repeat_hours(&rule.id)
                {
                    self.hold_back_repeats(
                        service,
                        &mut outcome,
                        patient,
                        now,
                        hours,
                        &mut suppressed,
                    );
                }
                outcome
            })
            .collect();
        // Candidates run after the rules in use, on what the call's budget has left: they can never
        // take anything from the rules whose cards the clinician sees.
        let mut disagreements = Vec::new();
        for candidate in &service.candidates {
            let outcome = self.run_rule(engine, service, candidate, &input);
            let active = outcomes
                .iter()
                .find(|o| o.rule_id == candidate.id && o.mode != RuleMode::Candidate);
            let disagreement = active.and_then(|active| Disagreement::between(active, &outcome));
            self.metrics.candidate_run(
                service.id(),
                &candidate.id,
                outcome.verdict.as_str(),
                disagreement.is_some(),
            );
            disagreements.extend(disagreement);
            outcomes.push(outcome);
        }
        let limits = cards::ResponseLimits {
            max_cards: self.config.max_cards_per_response,
            max_bytes: self.config.max_response_bytes,
        };
        let stamp = cards::Stamp {
            service_id: service.id(),
            evaluated_at: now,
            trace_id,
            rule_set: rule_set.version(),
        };
        let response = cards::response(&stamp, &outcomes, limits);
        Evaluation {
            service_id: service.id().to_owned(),
            response,
            outcomes,
            disagreements,
            suppressed,
            ignored_prefetch,
            rule_set: rule_set.clone(),
            evaluated_at: now,
            duration: started.elapsed(),
        }
    }

    /// Takes out of `outcome` the cards this patient was shown within `hours`, and remembers the
    /// others as shown now.
    fn hold_back_repeats(
        &self,
        service: &CdsService,
        outcome: &mut RuleOutcome,
        patient: &str,
        now: DateTime<Utc>,
        hours: u32,
        suppressed: &mut Vec<SuppressedCard>,
    ) {
        outcome.cards.retain(|card| {
            let Some(last) = self.repeats.check(
                service.id(),
                &outcome.rule_id,
                patient,
                card.repeat_key.as_deref().unwrap_or(&card.summary),
                now,
                hours,
            ) else {
                return true;
            };
            self.metrics.card_suppressed(service.id(), &outcome.rule_id);
            suppressed.push(SuppressedCard {
                rule_id: outcome.rule_id.clone(),
                rule_version: outcome.rule_version.clone(),
                summary: card.summary.clone(),
                indicator: card.indicator.as_str().to_owned(),
                last_shown: last.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                window_hours: hours,
            });
            false
        });
    }

    /// Runs one rule in its own span and counts it: active and silent rules alike, except that a
    /// silent rule's cards are counted as would-be cards.
    fn run_rule(
        &self,
        engine: &RuleEngine,
        service: &CdsService,
        rule: &CompiledRule,
        input: &RuleInput,
    ) -> RuleOutcome {
        let span = tracing::info_span!(
            "rule",
            cds.rule.id = %rule.id,
            cds.rule.version = %rule.version,
            cds.rule.mode = rule.mode.as_str(),
            cds.rule.outcome = tracing::field::Empty,
            cds.rule.error_kind = tracing::field::Empty,
            cds.rule.operations = tracing::field::Empty,
            cds.rule.duration_us = tracing::field::Empty,
            cds.rule.cards = tracing::field::Empty,
        );
        let outcome = span.in_scope(|| engine.run(rule, input));
        span.record("cds.rule.outcome", outcome.verdict.as_str());
        span.record("cds.rule.operations", outcome.operations);
        span.record("cds.rule.duration_us", outcome.duration.as_micros() as u64);
        span.record("cds.rule.cards", outcome.cards.len());
        if let Verdict::Error(e) = &outcome.verdict {
            span.record("cds.rule.error_kind", e.kind.as_str());
            span.record("otel.status_code", "ERROR");
        }
        log_outcome(service.id(), &outcome);
        if rule.mode == RuleMode::Candidate {
            // Counted by the caller, with whether it disagreed.
            return outcome;
        }
        if let Verdict::Error(e) = &outcome.verdict {
            self.metrics
                .rule_error(service.id(), &rule.id, e.kind.as_str());
        }
        // A rule stopped on a condition it could not decide (absent data) is counted apart.
        let verdict = match outcome.undecided() {
            Some(_) => "unknown",
            None => outcome.verdict.as_str(),
        };
        self.metrics
            .rule_run(service.id(), &rule.id, verdict, outcome.duration);
        for card in &outcome.cards {
            let indicator = card.indicator.as_str();
            if rule.mode.is_active() {
                self.metrics.card(service.id(), &rule.id, indicator);
            } else {
                self.metrics.silent_card(service.id(), &rule.id, indicator);
            }
        }
        outcome
    }

    /// Validates feedback for a service. Returns how many entries were accepted.
    pub fn feedback(
        &self,
        service_id: &str,
        feedback: &FeedbackRequest,
    ) -> Result<usize, CallError> {
        self.service(service_id)?;
        Ok(feedback.feedback.len())
    }
}

/// The terminology server client `config` asks for, started once: it and its cache outlive every
/// rule-set reload.
pub fn remote_terminology(config: &Config) -> Result<Option<Arc<RemoteTerminology>>, LoadErrors> {
    let error = |e: TerminologyError| {
        LoadErrors(vec![CompileError {
            path: config.rules_dir.clone(),
            line: None,
            column: None,
            message: e.to_string(),
        }])
    };
    config
        .terminology
        .validate()
        .map_err(|m| error(TerminologyError::Config(m)))?;
    let Some(settings) = &config.terminology.remote else {
        return Ok(None);
    };
    let remote = RemoteTerminology::new(settings).map_err(error)?;
    tracing::info!(
        base_url = remote.base_url(),
        "terminology server configured"
    );
    Ok(Some(Arc::new(remote)))
}

/// Logs a rule's verdict: ids, kind and location only. Rule messages can quote patient data.
fn log_outcome(service_id: &str, outcome: &RuleOutcome) {
    match &outcome.verdict {
        Verdict::Error(err) => tracing::warn!(
            service = service_id,
            rule = %outcome.rule_id,
            rule_version = %outcome.rule_version,
            kind = err.kind.as_str(),
            line = err.line,
            column = err.column,
            "rule failed and was skipped"
        ),
        verdict => tracing::debug!(
            service = service_id,
            rule = %outcome.rule_id,
            outcome = verdict.as_str(),
            duration_us = outcome.duration.as_micros() as u64,
            "rule evaluated"
        ),
    }
}
