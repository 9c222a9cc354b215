//! The HTTP side of a FHIR R4 terminology server: `ValueSet/$validate-code`, `ValueSet/$expand`
//! (paged with `offset`/`count`), `CodeSystem/$lookup` and `CodeSystem/$subsumes` as `GET` requests,
//! FHIR `Parameters` / `ValueSet` / `OperationOutcome` answers, and the retry policy: 5xx, timeouts
//! and connection errors are retried with doubling backoff while the deadline allows; 4xx is not.
//! Errors name the operation and the value set or code system, never the code or the token.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::header::ACCEPT;
use reqwest::{StatusCode, Url};
use serde_json::Value;

use super::cache::Counters;
use super::local::{ValueSetIndex, collect_contains};
use super::settings::{RemoteSettings, Secret};
use super::{Subsumption, TerminologyError};

/// Codes asked for per `$expand` page (servers may return fewer).
pub(super) const EXPAND_PAGE_SIZE: usize = 1000;
/// Largest expansion kept in memory.
pub(super) const MAX_EXPANSION_CODES: usize = 1_000_000;
/// Largest response body read.
pub(super) const MAX_BODY_BYTES: usize = 64 * 1024 * 1024;

#[derive(Debug, Clone, Copy)]
pub(super) enum Operation {
    ValidateCode,
    Expand,
    Lookup,
    Subsumes,
}

impl Operation {
    pub(super) fn path(self) -> &'static str {
        match self {
            Self::ValidateCode => "ValueSet/$validate-code",
            Self::Expand => "ValueSet/$expand",
            Self::Lookup => "CodeSystem/$lookup",
            Self::Subsumes => "CodeSystem/$subsumes",
        }
    }
}

/// `url|version` → (`url`, `version`).
pub(super) fn split_version(url: &str) -> (&str, Option<&str>) {
    match url.split_once('|') {
        Some((url, version)) => (url, Some(version)),
        None => (url, None),
    }
}

pub(super) fn timeout_error(op: Operation, about: &str) -> TerminologyError {
    TerminologyError::Timeout(format!("{} for `{about}`", op.path()))
}

pub(super) fn server_error(
    op: Operation,
    about: &str,
    what: impl fmt::Display,
) -> TerminologyError {
    TerminologyError::Server(format!("{} for `{about}`: {what}", op.path()))
}

/// The parameter `name` of a FHIR `Parameters` resource.
pub(super) fn parameter<'a>(parameters: &'a Value, name: &str) -> Option<&'a Value> {
    parameters
        .get("parameter")?
        .as_array()?
        .iter()
        .find(|p| p.get("name").and_then(Value::as_str) == Some(name))
}

pub(super) fn is_operation_outcome(body: &Value) -> bool {
    body.get("resourceType").and_then(Value::as_str) == Some("OperationOutcome")
}

/// Whether an `OperationOutcome` says the thing asked about does not exist.
pub(super) fn is_not_found(outcome: &Value) -> bool {
    outcome
        .get("issue")
        .and_then(Value::as_array)
        .is_some_and(|issues| {
            issues
                .iter()
                .any(|i| i.get("code").and_then(Value::as_str) == Some("not-found"))
        })
}

/// The readable text of an `OperationOutcome`: each issue's severity and diagnostics (or details).
pub(super) fn outcome_text(outcome: &Value) -> String {
    let issues: Vec<String> = outcome
        .get("issue")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|issue| {
            let severity = issue
                .get("severity")
                .and_then(Value::as_str)
                .unwrap_or("error");
            let text = issue
                .get("diagnostics")
                .and_then(Value::as_str)
                .or_else(|| issue.pointer("/details/text").and_then(Value::as_str))
                .or_else(|| issue.get("code").and_then(Value::as_str))
                .unwrap_or("no details");
            format!("{severity}: {text}")
        })
        .collect();
    if issues.is_empty() {
        "OperationOutcome without issues".into()
    } else {
        issues.join("; ")
    }
}

/// The innermost cause of a transport error (no URL: it carries the code being asked about).
pub(super) fn root_cause(error: &reqwest::Error) -> String {
    let mut cause: &dyn std::error::Error = error;
    while let Some(next) = cause.source() {
        cause = next;
    }
    if std::ptr::addr_eq(cause, error as &dyn std::error::Error) {
        "request failed".into()
    } else {
        cause.to_string()
    }
}

/// How one HTTP attempt ended.
pub(super) enum Attempt {
    /// A final answer (`Ok(None)` = not found) or an error not worth retrying.
    Done(Result<Option<Value>, TerminologyError>),
    /// A 5xx, a timeout or a connection error.
    Retry(TerminologyError),
}

impl Attempt {
    pub(super) fn failed(&self) -> bool {
        matches!(self, Self::Retry(_) | Self::Done(Err(_)))
    }
}

/// The HTTP side: async, shared with the tasks on the runtime.
pub(super) struct Client {
    pub(super) http: reqwest::Client,
    /// Ends with `/`, so operation paths join below it.
    pub(super) base: Url,
    pub(super) token: Option<Secret>,
    pub(super) retries: u32,
    pub(super) backoff: Duration,
    pub(super) timeout: Duration,
    pub(super) counters: Arc<Counters>,
}

impl Client {
    pub(super) fn new(
        settings: &RemoteSettings,
        counters: Arc<Counters>,
    ) -> Result<Self, TerminologyError> {
        settings.validate().map_err(TerminologyError::Config)?;
        let mut base = Url::parse(&settings.base_url)
            .map_err(|e| TerminologyError::Config(format!("terminology.remote.base_url: {e}")))?;
        if !base.path().ends_with('/') {
            let path = format!("{}/", base.path());
            base.set_path(&path);
        }
        let http = reqwest::Client::builder()
            .connect_timeout(settings.timeout().min(Duration::from_secs(5)))
            .pool_idle_timeout(Duration::from_secs(90))
            .user_agent(concat!("cardinal/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| {
                TerminologyError::Config(format!("cannot build the terminology HTTP client: {e}"))
            })?;
        Ok(Self {
            http,
            base,
            token: settings.bearer_token.clone(),
            retries: settings.retries,
            backoff: settings.backoff(),
            timeout: settings.timeout(),
            counters,
        })
    }

    /// `GET base/op?params`, retried on 5xx, timeouts and connection errors while `end` allows.
    pub(super) async fn get(
        &self,
        op: Operation,
        about: &str,
        params: &[(&str, &str)],
        end: Instant,
    ) -> Result<Option<Value>, TerminologyError> {
        let mut url = self
            .base
            .join(op.path())
            .map_err(|e| server_error(op, about, e))?;
        url.query_pairs_mut().extend_pairs(params);
        let mut retried = 0;
        loop {
            let now = Instant::now();
            if now >= end {
                return Err(timeout_error(op, about));
            }
            let attempt = self.attempt(&url, op, about, end - now).await;
            let error = match attempt {
                Attempt::Done(result) => return result,
                Attempt::Retry(error) => error,
            };
            let wait = self.backoff.saturating_mul(1 << retried.min(16));
            if retried >= self.retries || Instant::now() + wait >= end {
                return Err(error);
            }
            tracing::debug!(
                operation = op.path(),
                about,
                retry = retried + 1,
                %error,
                "retrying terminology request"
            );
            tokio::time::sleep(wait).await;
            retried += 1;
        }
    }

    pub(super) async fn attempt(
        &self,
        url: &Url,
        op: Operation,
        about: &str,
        budget: Duration,
    ) -> Attempt {
        let mut request = self
            .http
            .get(url.clone())
            .header(ACCEPT, "application/fhir+json")
            .timeout(budget);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token.expose());
        }
        let started = Instant::now();
        let attempt = match request.send().await {
            Ok(response) => {
                let status = response.status();
                match read_body(response).await {
                    Ok(body) => classify(op, about, status, &body),
                    Err(error) => transport_failure(op, about, &error),
                }
            }
            Err(error) => transport_failure(op, about, &error),
        };
        self.counters
            .remote_call(started.elapsed(), attempt.failed());
        attempt
    }

    pub(super) async fn validate_code(
        &self,
        url: &str,
        system: &str,
        code: &str,
        end: Instant,
    ) -> Result<Option<bool>, TerminologyError> {
        let op = Operation::ValidateCode;
        let (value_set, version) = split_version(url);
        let mut params = vec![("url", value_set), ("code", code)];
        if !system.is_empty() {
            params.push(("system", system));
        }
        if let Some(version) = version {
            params.push(("valueSetVersion", version));
        }
        let Some(body) = self.get(op, url, &params, end).await? else {
            return Ok(None);
        };
        parameter(&body, "result")
            .and_then(|p| p.get("valueBoolean"))
            .and_then(Value::as_bool)
            .map(Some)
            .ok_or_else(|| server_error(op, url, "the answer has no boolean `result` parameter"))
    }

    pub(super) async fn lookup(
        &self,
        system: &str,
        code: &str,
        end: Instant,
    ) -> Result<Option<String>, TerminologyError> {
        let params = [("system", system), ("code", code)];
        let Some(body) = self.get(Operation::Lookup, system, &params, end).await? else {
            return Ok(None);
        };
        Ok(parameter(&body, "display")
            .and_then(|p| p.get("valueString"))
            .and_then(Value::as_str)
            .map(str::to_owned))
    }

    pub(super) async fn subsumes(
        &self,
        system: &str,
        a: &str,
        b: &str,
        end: Instant,
    ) -> Result<Option<Subsumption>, TerminologyError> {
        let op = Operation::Subsumes;
        let params = [("system", system), ("codeA", a), ("codeB", b)];
        let Some(body) = self.get(op, system, &params, end).await? else {
            return Ok(None);
        };
        let outcome = parameter(&body, "outcome").and_then(|p| p.get("valueCode"));
        match outcome.and_then(Value::as_str).and_then(Subsumption::parse) {
            Some(relation) => Ok(Some(relation)),
            None => Err(server_error(
                op,
                system,
                "the answer has no valid `outcome` parameter",
            )),
        }
    }

    /// Every code of a value set, page by page until `expansion.total`; `None` if unknown.
    pub(super) async fn expand(
        &self,
        url: &str,
    ) -> Result<Option<ValueSetIndex>, TerminologyError> {
        let op = Operation::Expand;
        let (value_set, version) = split_version(url);
        let count = EXPAND_PAGE_SIZE.to_string();
        let mut index = ValueSetIndex::default();
        let mut offset = 0usize;
        loop {
            let offset_text = offset.to_string();
            let mut params = vec![
                ("url", value_set),
                ("offset", offset_text.as_str()),
                ("count", count.as_str()),
            ];
            if let Some(version) = version {
                params.push(("valueSetVersion", version));
            }
            let end = Instant::now() + self.timeout;
            let body = match self.get(op, url, &params, end).await? {
                Some(body) => body,
                None if offset == 0 => return Ok(None),
                None => return Err(server_error(op, url, format!("no page at offset {offset}"))),
            };
            let expansion = body
                .get("expansion")
                .ok_or_else(|| server_error(op, url, "the answer has no `expansion`"))?;
            if let Some(echoed) = expansion.get("offset").and_then(Value::as_u64)
                && echoed != offset as u64
            {
                return Err(server_error(
                    op,
                    url,
                    format!("asked for offset {offset}, got {echoed}"),
                ));
            }
            let contains = expansion
                .get("contains")
                .and_then(Value::as_array)
                .map(Vec::as_slice)
                .unwrap_or_default();
            let mut entries = Vec::new();
            collect_contains(contains, &mut entries);
            for (system, code, _) in &entries {
                index.insert(system, code);
            }
            if index.len() > MAX_EXPANSION_CODES {
                return Err(server_error(
                    op,
                    url,
                    format!("more than {MAX_EXPANSION_CODES} codes"),
                ));
            }
            offset += contains.len();
            let total = expansion.get("total").and_then(Value::as_u64);
            let done = match total {
                Some(total) => offset as u64 >= total,
                None => contains.len() < EXPAND_PAGE_SIZE,
            };
            if done {
                return Ok(Some(index));
            }
            if contains.is_empty() {
                return Err(server_error(
                    op,
                    url,
                    format!(
                        "the expansion stopped at {offset} of {} codes",
                        total.unwrap_or_default()
                    ),
                ));
            }
        }
    }
}

pub(super) async fn read_body(mut response: reqwest::Response) -> Result<Vec<u8>, reqwest::Error> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        if body.len() + chunk.len() > MAX_BODY_BYTES {
            // Too large to be a terminology answer; keep what fits and let parsing fail.
            break;
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

pub(super) fn transport_failure(op: Operation, about: &str, error: &reqwest::Error) -> Attempt {
    if error.is_timeout() {
        Attempt::Retry(timeout_error(op, about))
    } else if error.is_connect() {
        Attempt::Retry(server_error(
            op,
            about,
            format_args!(
                "cannot connect to the terminology server ({})",
                root_cause(error)
            ),
        ))
    } else if error.is_request() || error.is_body() {
        Attempt::Retry(server_error(op, about, root_cause(error)))
    } else {
        Attempt::Done(Err(server_error(op, about, root_cause(error))))
    }
}

/// Reads an HTTP answer: a resource, "not found", or an error (retryable for 5xx).
pub(super) fn classify(op: Operation, about: &str, status: StatusCode, body: &[u8]) -> Attempt {
    let json: Option<Value> = serde_json::from_slice(body).ok();
    let outcome = json.as_ref().filter(|j| is_operation_outcome(j));
    if status == StatusCode::NOT_FOUND
        || status == StatusCode::GONE
        || (status.is_client_error() && outcome.is_some_and(is_not_found))
    {
        return Attempt::Done(Ok(None));
    }
    if status.is_success() {
        return match outcome {
            Some(outcome) if is_not_found(outcome) => Attempt::Done(Ok(None)),
            Some(outcome) => Attempt::Done(Err(server_error(op, about, outcome_text(outcome)))),
            None => match json {
                Some(json) => Attempt::Done(Ok(Some(json))),
                None => Attempt::Done(Err(server_error(op, about, "the answer is not JSON"))),
            },
        };
    }
    let text = match outcome {
        Some(outcome) => format!("HTTP {}: {}", status.as_u16(), outcome_text(outcome)),
        None => format!("HTTP {}", status.as_u16()),
    };
    let error = server_error(op, about, text);
    if status.is_server_error() {
        Attempt::Retry(error)
    } else {
        Attempt::Done(Err(error))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn operation_outcomes_are_read() {
        let outcome = json!({"resourceType": "OperationOutcome", "issue": [
            {"severity": "error", "code": "too-costly", "diagnostics": "expansion too large"},
            {"severity": "warning", "code": "processing", "details": {"text": "try later"}}]});
        assert_eq!(
            outcome_text(&outcome),
            "error: expansion too large; warning: try later"
        );
        assert!(!is_not_found(&outcome));
        let missing = json!({"resourceType": "OperationOutcome", "issue": [
            {"severity": "error", "code": "not-found"}]});
        assert!(is_not_found(&missing));
        let op = Operation::ValidateCode;
        let body = serde_json::to_vec(&missing).unwrap_or_default();
        assert!(matches!(
            classify(op, "vs", StatusCode::BAD_REQUEST, &body),
            Attempt::Done(Ok(None))
        ));
        assert!(matches!(
            classify(op, "vs", StatusCode::NOT_FOUND, b""),
            Attempt::Done(Ok(None))
        ));
        let body = serde_json::to_vec(&outcome).unwrap_or_default();
        match classify(op, "vs", StatusCode::BAD_REQUEST, &body) {
            Attempt::Done(Err(TerminologyError::Server(text))) => {
                assert!(
                    text.contains("HTTP 400: error: expansion too large"),
                    "{text}"
                );
            }
            _ => panic!("a 400 OperationOutcome is a final server error"),
        }
        assert!(matches!(
            classify(op, "vs", StatusCode::SERVICE_UNAVAILABLE, &body),
            Attempt::Retry(TerminologyError::Server(_))
        ));
        assert!(matches!(
            classify(op, "vs", StatusCode::OK, &body),
            Attempt::Done(Err(TerminologyError::Server(_)))
        ));
    }

    #[test]
    fn parameters_and_versions() {
        let params = json!({"resourceType": "Parameters", "parameter": [
            {"name": "result", "valueBoolean": true}, {"name": "display", "valueString": "x"}]});
        assert_eq!(
            parameter(&params, "result").and_then(|p| p.get("valueBoolean")),
            Some(&json!(true))
        );
        assert!(parameter(&params, "message").is_none());
        assert_eq!(
            split_version("http://x/ValueSet/a|2"),
            ("http://x/ValueSet/a", Some("2"))
        );
        assert_eq!(
            split_version("http://x/ValueSet/a"),
            ("http://x/ValueSet/a", None)
        );
    }
}
