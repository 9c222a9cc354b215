//! What every request of a run carries, built once before the run so that the generator spends its
//! time sending, not serializing: the JSON body for HTTP and the `CallHookRequest` for gRPC, mapped
//! the way the server's `transport/grpc_convert.rs` maps it back.
//!
//! The request file is a CDS Hooks request, or a rule test case (`rules/*/tests/*.json`), read with
//! the `cardinal test` reader, whose `service` and `evaluation_time` become the defaults: the opioid
//! cases only fire at their pinned evaluation time.

use std::path::Path;

use hyper::body::Bytes;
use serde_json::Value;

use super::BenchError;
use crate::evaluator::parse_evaluation_time;
use crate::proto;
use crate::rule_tests::TestCase;

/// One request, ready to send over either transport.
#[derive(Debug, Clone)]
pub struct Workload {
    pub service: String,
    /// Sent as `X-Cardinal-Evaluation-Time` / `evaluation_time` when set.
    pub evaluation_time: Option<String>,
    /// The HTTP body.
    pub body: Bytes,
    /// The gRPC message.
    pub grpc: proto::CallHookRequest,
}

impl Workload {
    /// Reads `path`; `service` and `evaluation_time` override a test case's.
    pub fn load(
        path: &Path,
        service: Option<String>,
        evaluation_time: Option<String>,
    ) -> Result<Self, BenchError> {
        let text = std::fs::read_to_string(path).map_err(|source| BenchError::ReadRequest {
            path: path.to_path_buf(),
            source,
        })?;
        let value: Value = serde_json::from_str(&text).map_err(|e| BenchError::RequestJson {
            path: path.to_path_buf(),
            line: e.line(),
            column: e.column(),
        })?;
        let is_case =
            value.get("hook").is_none() && value.get("request").is_some_and(Value::is_object);
        let (request, case_service, case_time) = if is_case {
            let case = TestCase::read(path)?;
            (case.request, Some(case.service), case.evaluation_time)
        } else {
            (value, None, None)
        };
        let Some(service) = service.or(case_service) else {
            return Err(BenchError::Usage(format!(
                "--service is required: {} is not a test case naming one",
                path.display()
            )));
        };
        let evaluation_time = evaluation_time.or(case_time);
        if let Some(time) = &evaluation_time
            && parse_evaluation_time(time).is_none()
        {
            return Err(BenchError::Usage(format!(
                "--evaluation-time `{time}` is not an RFC 3339 date-time or a date"
            )));
        }
        Self::from_request(&request, service, evaluation_time)
    }

    /// Builds both encodings of one CDS Hooks request.
    pub fn from_request(
        request: &Value,
        service: String,
        evaluation_time: Option<String>,
    ) -> Result<Self, BenchError> {
        if !request.is_object() {
            return Err(BenchError::Usage(
                "the request must be a JSON object (a CDS Hooks request)".into(),
            ));
        }
        let body = Bytes::from(serde_json::to_vec(request)?);
        let grpc = grpc_request(request, &service, evaluation_time.as_deref());
        Ok(Self {
            service,
            evaluation_time,
            body,
            grpc,
        })
    }
}

/// The `CallHookRequest` the server turns back into this JSON request.
fn grpc_request(
    request: &Value,
    service: &str,
    evaluation_time: Option<&str>,
) -> proto::CallHookRequest {
    let text = |key: &str| {
        request
            .get(key)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let json = |key: &str| request.get(key).map(Value::to_string).unwrap_or_default();
    let fhir_authorization =
        request
            .get("fhirAuthorization")
            .map(|auth| proto::FhirAuthorization {
                access_token: field(auth, "access_token"),
                token_type: field(auth, "token_type"),
                expires_in: auth
                    .get("expires_in")
                    .and_then(Value::as_i64)
                    .unwrap_or_default(),
                scope: field(auth, "scope"),
                subject: field(auth, "subject"),
                patient: field(auth, "patient"),
            });
    let prefetch_json = request
        .get("prefetch")
        .and_then(Value::as_object)
        .map(|prefetch| {
            prefetch
                .iter()
                .map(|(key, value)| (key.clone(), value.to_string()))
                .collect()
        })
        .unwrap_or_default();
    proto::CallHookRequest {
        service_id: service.to_owned(),
        hook: text("hook"),
        hook_instance: text("hookInstance"),
        fhir_server: text("fhirServer"),
        fhir_authorization,
        context_json: json("context"),
        prefetch_json,
        extension_json: json("extension"),
        evaluation_time: evaluation_time.unwrap_or_default().to_owned(),
    }
}

fn field(object: &Value, key: &str) -> String {
    object
        .get(key)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn grpc_message_carries_the_json_parts() {
        let request = json!({
            "hook": "order-sign",
            "hookInstance": "h-1",
            "context": {"patientId": "p"},
            "prefetch": {"patient": {"resourceType": "Patient", "id": "p"}, "none": null},
        });
        let workload =
            Workload::from_request(&request, "svc".into(), Some("2023-05-01".into())).ok();
        let Some(workload) = workload else {
            panic!("the workload is built");
        };
        let msg = workload.grpc;
        assert_eq!(msg.service_id, "svc");
        assert_eq!(msg.hook, "order-sign");
        assert_eq!(msg.hook_instance, "h-1");
        assert_eq!(msg.context_json, r#"{"patientId":"p"}"#);
        assert_eq!(
            msg.prefetch_json.get("none").map(String::as_str),
            Some("null")
        );
        assert!(msg.prefetch_json.contains_key("patient"));
        assert!(msg.extension_json.is_empty());
        assert_eq!(msg.evaluation_time, "2023-05-01");
    }
}
