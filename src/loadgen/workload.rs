//! What every request of a run carries, built once before the run so that the generator spends its
//! time sending, not serializing: the JSON body for HTTP and the `CallHookRequest` for gRPC, mapped
//! the way the server's `transport/grpc_convert.rs` maps it back (a standard hook's context typed, the
//! prefetch as bytes: the fast path a gRPC caller should take).
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
use crate::proto::call_hook_request::TypedContext;
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

/// The `CallHookRequest` the server turns back into this JSON request: a standard hook's context
/// typed (when it holds only that hook's fields, as strings, a list of strings and a Bundle), any
/// other context as `context_json`, and the prefetch as bytes.
pub fn grpc_request(
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
    let prefetch = request
        .get("prefetch")
        .and_then(Value::as_object)
        .map(|prefetch| {
            prefetch
                .iter()
                .map(|(key, value)| (key.clone(), value.to_string().into_bytes()))
                .collect()
        })
        .unwrap_or_default();
    let hook = text("hook");
    let typed_context = request
        .get("context")
        .and_then(|context| typed_context(&hook, context));
    proto::CallHookRequest {
        service_id: service.to_owned(),
        hook_instance: text("hookInstance"),
        fhir_server: text("fhirServer"),
        fhir_authorization,
        context_json: if typed_context.is_some() {
            String::new()
        } else {
            json("context")
        },
        typed_context,
        hook,
        prefetch,
        extension_json: json("extension"),
        evaluation_time: evaluation_time.unwrap_or_default().to_owned(),
        ..proto::CallHookRequest::default()
    }
}

/// A standard hook's context as its typed message, or `None` when the typed message cannot say the
/// same (a custom hook, another field, a value of another type, an empty string or list, `null`):
/// such a context goes as JSON, so the server sees exactly the request given.
pub fn typed_context(hook: &str, context: &Value) -> Option<TypedContext> {
    let context = context.as_object()?;
    let (fields, bundle): (&[&str], Option<&str>) = match hook {
        "patient-view" | "encounter-start" | "encounter-discharge" => (&[], None),
        "order-select" => (&["selections"], Some("draftOrders")),
        "order-sign" => (&[], Some("draftOrders")),
        "appointment-book" => (&[], Some("appointments")),
        _ => return None,
    };
    let known = |key: &str| {
        matches!(key, "userId" | "patientId" | "encounterId")
            || fields.contains(&key)
            || bundle == Some(key)
    };
    if !context.keys().all(|key| known(key)) {
        return None;
    }
    // A present string must be non-empty: an empty one would read as absent.
    let id = |key: &str| -> Option<String> {
        match context.get(key) {
            None => Some(String::new()),
            Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
            Some(_) => None,
        }
    };
    let (user_id, patient_id, encounter_id) = (id("userId")?, id("patientId")?, id("encounterId")?);
    let bundle_bytes = match bundle.and_then(|key| context.get(key)) {
        None => Vec::new(),
        Some(Value::Null) => return None,
        Some(value) => value.to_string().into_bytes(),
    };
    Some(match hook {
        "patient-view" => TypedContext::PatientView(proto::PatientViewContext {
            user_id,
            patient_id,
            encounter_id,
        }),
        "encounter-start" => TypedContext::EncounterStart(proto::EncounterContext {
            user_id,
            patient_id,
            encounter_id,
        }),
        "encounter-discharge" => TypedContext::EncounterDischarge(proto::EncounterContext {
            user_id,
            patient_id,
            encounter_id,
        }),
        "order-select" => {
            let selections = match context.get("selections") {
                None => Vec::new(),
                Some(Value::Array(items)) if !items.is_empty() => items
                    .iter()
                    .map(|item| item.as_str().filter(|s| !s.is_empty()).map(str::to_owned))
                    .collect::<Option<Vec<_>>>()?,
                Some(_) => return None,
            };
            TypedContext::OrderSelect(proto::OrderSelectContext {
                user_id,
                patient_id,
                encounter_id,
                selections,
                draft_orders: bundle_bytes,
            })
        }
        "order-sign" => TypedContext::OrderSign(proto::OrderSignContext {
            user_id,
            patient_id,
            encounter_id,
            draft_orders: bundle_bytes,
        }),
        _ => TypedContext::AppointmentBook(proto::AppointmentBookContext {
            user_id,
            patient_id,
            encounter_id,
            appointments: bundle_bytes,
        }),
    })
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
        assert!(msg.context_json.is_empty());
        assert_eq!(
            msg.typed_context,
            Some(TypedContext::OrderSign(proto::OrderSignContext {
                patient_id: "p".into(),
                ..proto::OrderSignContext::default()
            }))
        );
        assert_eq!(
            msg.prefetch.get("none").map(Vec::as_slice),
            Some(b"null".as_slice())
        );
        assert!(msg.prefetch.contains_key("patient"));
        assert!(msg.prefetch_json.is_empty());
        assert!(msg.extension_json.is_empty());
        assert_eq!(msg.evaluation_time, "2023-05-01");
    }

    #[test]
    fn a_context_the_typed_message_cannot_say_goes_as_json() {
        for (hook, context) in [
            ("my-custom-hook", json!({"userId": "Practitioner/1"})),
            (
                "patient-view",
                json!({"userId": "Practitioner/1", "extra": 1}),
            ),
            ("patient-view", json!({"userId": "", "patientId": "p"})),
            ("patient-view", json!({"userId": 7, "patientId": "p"})),
            ("order-select", json!({"patientId": "p", "selections": []})),
            ("order-select", json!({"patientId": "p", "selections": [1]})),
            ("order-sign", json!({"patientId": "p", "draftOrders": null})),
            ("patient-view", json!(["not", "an", "object"])),
        ] {
            let request = json!({"hook": hook, "hookInstance": "h", "context": context});
            let msg = grpc_request(&request, "svc", None);
            assert!(msg.typed_context.is_none(), "{hook}: {context}");
            assert_eq!(msg.context_json, context.to_string());
        }
        let request = json!({"hook": "order-select", "hookInstance": "h", "context": {
            "userId": "Practitioner/1", "patientId": "p", "selections": ["MedicationRequest/m"],
            "draftOrders": {"resourceType": "Bundle"}}});
        let msg = grpc_request(&request, "svc", None);
        let Some(TypedContext::OrderSelect(context)) = msg.typed_context else {
            panic!("order-select is typed");
        };
        assert_eq!(context.selections, ["MedicationRequest/m"]);
        assert_eq!(context.draft_orders, br#"{"resourceType":"Bundle"}"#);
    }
}
