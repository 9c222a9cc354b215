//! The gRPC transport (`proto/cardinal/v1/cds_hooks.proto`), with the standard health service and
//! server reflection. Same semantics and the same evaluation path as HTTP.

use std::sync::Arc;

use tonic::{Code, Request, Response, Status};

use crate::admission::Ticket;
use crate::audit::{AuditRecord, AuditUnavailable, CallKind};
use crate::auth::Caller;

use crate::evaluator::{CallError, Cardinal, Evaluation};
use crate::explain::ExplainReport;
use crate::proto;
use crate::proto::analytics_server::{Analytics, AnalyticsServer};
use crate::proto::cds_hooks_server::{CdsHooks, CdsHooksServer};
use crate::proto::rule_set_admin_server::{RuleSetAdmin, RuleSetAdminServer};
use crate::reload;
use crate::rule_set::Trigger;
use crate::store::FeedbackError;
use crate::store::{Store, Window};

use super::authn::{self, Authenticated};
use super::edge::Edge;
use super::grpc_convert;
use super::observe::TraceId;

/// Encoded descriptor set of Cardinal's protos, for reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("cardinal_descriptor");

#[derive(Clone)]
pub struct GrpcService {
    cardinal: Cardinal,
    edge: Edge,
}

/// The gRPC status for a call error, with the same message HTTP would give.
pub fn status_of(err: CallError) -> Status {
    let message = err.to_string();
    match err {
        CallError::UnknownService(_) => Status::not_found(message),
        CallError::InvalidRequest(_) => Status::invalid_argument(message),
        CallError::PrefetchUnavailable(_) => Status::failed_precondition(message),
        CallError::Overloaded(_) => Status::unavailable(message),
        CallError::Internal(_) => Status::internal(message),
    }
}

/// The answer to a gRPC call whose handler panicked: `INTERNAL` with fixed words (a panic message can
/// quote the request).
pub(super) fn panic_response() -> axum::response::Response {
    Status::internal("internal error: the request could not be processed")
        .into_http::<axum::body::Body>()
}

/// The answer when the audit trail cannot take a record and the policy is to refuse.
fn audit_unavailable(_: AuditUnavailable) -> Status {
    Status::unavailable("the service cannot record this call in its audit trail; try again later")
}

/// The HTTP status of the same answer over HTTP, for the audit trail.
fn http_status_of(status: &Status) -> u16 {
    match status.code() {
        Code::Ok => 200,
        Code::InvalidArgument | Code::OutOfRange => 400,
        Code::Unauthenticated => 401,
        Code::PermissionDenied => 403,
        Code::NotFound => 404,
        Code::FailedPrecondition => 412,
        Code::ResourceExhausted | Code::Unavailable => 503,
        Code::DeadlineExceeded => 504,
        _ => 500,
    }
}

impl GrpcService {
    /// The verified caller of a call to the CDS Hooks path `path` (its `aud` is checked here, now
    /// that the message has named the service).
    fn caller<T>(&self, request: &Request<T>, path: &str) -> Result<Option<Caller>, Status> {
        let Some(authenticated) = request.extensions().get::<Authenticated>() else {
            // The middleware always says; without it, fail closed.
            return Err(authn::unauthenticated_status());
        };
        authenticated.resolve(path).map_err(|why| {
            // Logged and counted like the middleware's refusals; the answer carries no detail.
            let _ = authn::reject(&self.cardinal, true, why);
            authn::unauthenticated_status()
        })
    }

    /// A hook call as `CallHook` and `Explain` take it: unknown service first, then the request, then
    /// the one evaluation path, with the trace id of the server span; recorded in the audit trail.
    async fn evaluate(
        &self,
        request: Request<proto::CallHookRequest>,
        kind: CallKind,
    ) -> Result<Evaluation, Status> {
        let trace_id = request
            .extensions()
            .get::<TraceId>()
            .map(|TraceId(id)| id.clone());
        let admission = request.extensions().get::<Arc<Ticket>>().cloned();
        let service_id = request.get_ref().service_id.clone();
        let path = match kind {
            CallKind::Explain => format!("/cds-services/{service_id}/explain"),
            _ => format!("/cds-services/{service_id}"),
        };
        let caller = self.caller(&request, &path)?;
        if kind == CallKind::Explain
            && let Some(auth) = self.edge.authenticator()
            && !caller.as_ref().is_some_and(|c| auth.may_explain(c))
        {
            return Err(Status::permission_denied(
                "this caller may not use the explain endpoint",
            ));
        }
        #[cfg(feature = "fault-injection")]
        if request.metadata().contains_key("x-cardinal-inject-panic") {
            #[allow(clippy::panic)]
            {
                panic!("injected fault while reading patient Jane Roe, MRN 4711-0815");
            }
        }
        let mut record =
            AuditRecord::new(kind, "grpc", caller.as_ref(), &service_id, trace_id.clone());
        self.edge.audit().admit().map_err(audit_unavailable)?;
        let result = self
            .evaluate_audited(
                request.into_inner(),
                caller,
                trace_id,
                admission,
                &mut record,
            )
            .await;
        match &result {
            Ok(evaluation) => {
                record.answered(&evaluation.response);
                if kind == CallKind::Hook {
                    super::record_cards(&self.edge, evaluation, &record);
                }
            }
            Err(status) => record.refused(http_status_of(status)),
        }
        self.edge
            .audit()
            .record(record)
            .map_err(audit_unavailable)?;
        result
    }

    async fn evaluate_audited(
        &self,
        message: proto::CallHookRequest,
        caller: Option<Caller>,
        trace_id: Option<String>,
        admission: Option<Arc<Ticket>>,
        record: &mut AuditRecord,
    ) -> Result<Evaluation, Status> {
        let service_id = message.service_id.clone();
        // The rule set is taken here, on arrival.
        let rule_set = self.cardinal.call_target(&service_id).map_err(status_of)?;
        /// Reading the JSON of a larger message (a patient's prefetch) goes to the blocking pool, as
        /// HTTP bodies over the same size do, so it does not stall the async workers that serve
        /// every other connection.
        const INLINE_CONVERT_LIMIT: usize = 32 * 1024;
        let converted = if prost::Message::encoded_len(&message) <= INLINE_CONVERT_LIMIT {
            grpc_convert::hook_request(message)
        } else {
            tokio::task::spawn_blocking(move || grpc_convert::hook_request(message))
                .await
                .map_err(|_| Status::internal("request conversion failed"))?
        };
        let (hook_request, mut options) = converted.map_err(|e| status_of(e.into()))?;
        record.request(&hook_request);
        options.trace_id = trace_id;
        options.admission = admission;
        options.rule_set = Some(rule_set);
        options.caller = caller;
        self.cardinal
            .call(&service_id, hook_request, options)
            .await
            .map_err(status_of)
    }
}

#[tonic::async_trait]
impl CdsHooks for GrpcService {
    async fn discover(
        &self,
        _request: Request<proto::DiscoverRequest>,
    ) -> Result<Response<proto::DiscoverResponse>, Status> {
        let discovery = self.cardinal.discovery();
        Ok(Response::new(grpc_convert::discovery(&discovery)))
    }

    async fn call_hook(
        &self,
        request: Request<proto::CallHookRequest>,
    ) -> Result<Response<proto::CallHookResponse>, Status> {
        let evaluation = self.evaluate(request, CallKind::Hook).await?;
        Ok(with_rule_set(
            Response::new(grpc_convert::hook_response(&evaluation.response)),
            &evaluation,
        ))
    }

    async fn explain(
        &self,
        request: Request<proto::CallHookRequest>,
    ) -> Result<Response<proto::ExplainResponse>, Status> {
        if !self.cardinal.config().explain_endpoint {
            return Err(Status::not_found(
                "the explain endpoint is disabled on this server (configuration `explain_endpoint`)",
            ));
        }
        let evaluation = self.evaluate(request, CallKind::Explain).await?;
        let report = ExplainReport::new(&evaluation);
        Ok(with_rule_set(
            Response::new(grpc_convert::explain_response(
                &report,
                &evaluation.response,
            )),
            &evaluation,
        ))
    }

    async fn submit_feedback(
        &self,
        request: Request<proto::SubmitFeedbackRequest>,
    ) -> Result<Response<proto::SubmitFeedbackResponse>, Status> {
        let trace_id = request
            .extensions()
            .get::<TraceId>()
            .map(|TraceId(id)| id.clone());
        let service_id = request.get_ref().service_id.clone();
        let caller = self.caller(&request, &format!("/cds-services/{service_id}/feedback"))?;
        let mut record = AuditRecord::new(
            CallKind::Feedback,
            "grpc",
            caller.as_ref(),
            &service_id,
            trace_id,
        );
        self.edge.audit().admit().map_err(audit_unavailable)?;
        let message = request.into_inner();
        let result = self.accept_feedback(&message, &mut record).await;
        record.refused(match &result {
            Ok(_) => 200,
            Err(status) => http_status_of(status),
        });
        self.edge
            .audit()
            .record(record)
            .map_err(audit_unavailable)?;
        let accepted = result?;
        Ok(Response::new(proto::SubmitFeedbackResponse {
            accepted: u32::try_from(accepted).unwrap_or(u32::MAX),
        }))
    }
}

/// The `x-cardinal-rule-set` response metadata, as HTTP's header.
fn with_rule_set<T>(mut response: Response<T>, evaluation: &Evaluation) -> Response<T> {
    if let Ok(value) = evaluation.rule_set.version().parse() {
        response
            .metadata_mut()
            .insert(super::RULE_SET_HEADER, value);
    }
    response
}

/// `RuleSetAdmin`: reloading the rule set.
#[derive(Clone)]
pub struct AdminService {
    cardinal: Cardinal,
}

#[tonic::async_trait]
impl RuleSetAdmin for AdminService {
    async fn reload(
        &self,
        _request: Request<proto::ReloadRequest>,
    ) -> Result<Response<proto::ReloadResponse>, Status> {
        let report = reload::reload_async(&self.cardinal, Trigger::Admin).await;
        Ok(Response::new(grpc_convert::reload_response(&report)))
    }
}

/// `cardinal.v1.RuleSetAdmin`, served on the admin listener only (never to EHRs).
pub fn admin_service(cardinal: Cardinal) -> RuleSetAdminServer<AdminService> {
    RuleSetAdminServer::new(AdminService { cardinal })
}

/// `Analytics`: the store's alert-fatigue figures.
#[derive(Clone)]
pub struct AnalyticsService {
    store: Option<Store>,
}

#[tonic::async_trait]
impl Analytics for AnalyticsService {
    async fn rule_analytics(
        &self,
        request: Request<proto::RuleAnalyticsRequest>,
    ) -> Result<Response<proto::RuleAnalyticsResponse>, Status> {
        let Some(store) = &self.store else {
            return Err(Status::failed_precondition(
                "the store is disabled on this server (configuration `store.enabled`)",
            ));
        };
        let since = request.get_ref().since.trim();
        let window = Window::parse_since_or_default(Some(since).filter(|s| !s.is_empty()))
            .ok_or_else(|| Status::invalid_argument(Window::SINCE_FORMS))?;
        let analytics = store
            .analytics(window)
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        Ok(Response::new(grpc_convert::rule_analytics_response(
            &analytics,
        )))
    }
}

/// `cardinal.v1.Analytics`, served on the admin listener only (never to EHRs).
pub fn analytics_service(store: Option<Store>) -> AnalyticsServer<AnalyticsService> {
    AnalyticsServer::new(AnalyticsService { store })
}

impl GrpcService {
    /// Validates the feedback and, with the store on, stores it (`NOT_FOUND` for a card this
    /// service never returned); answered once the store has committed it.
    async fn accept_feedback(
        &self,
        message: &proto::SubmitFeedbackRequest,
        record: &mut AuditRecord,
    ) -> Result<usize, Status> {
        self.cardinal
            .service(&message.service_id)
            .map_err(status_of)?;
        let feedback = grpc_convert::feedback(message).map_err(|e| status_of(e.into()))?;
        record.feedback(&feedback);
        let accepted = self
            .cardinal
            .feedback(&message.service_id, &feedback)
            .map_err(status_of)?;
        if let Some(store) = self.edge.store() {
            store
                .feedback(&message.service_id, &feedback)
                .await
                .map_err(|e| match e {
                    FeedbackError::UnknownCard { .. } => Status::not_found(e.to_string()),
                    FeedbackError::Unavailable(_) => Status::unavailable(e.to_string()),
                })?;
        }
        Ok(accepted)
    }
}

/// Cardinal's gRPC services: CdsHooks, grpc.health.v1, and reflection (v1).
pub async fn routes(cardinal: Cardinal, edge: Edge) -> tonic::service::Routes {
    let max_message = cardinal.config().max_body_bytes;
    let service =
        CdsHooksServer::new(GrpcService { cardinal, edge }).max_decoding_message_size(max_message);
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<CdsHooksServer<GrpcService>>()
        .await;
    let mut routes = tonic::service::Routes::new(service).add_service(health_service);
    match tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
    {
        Ok(reflection) => routes = routes.add_service(reflection),
        // The descriptor set is compiled in; failing here is a build defect, not a reason to stop serving.
        Err(e) => tracing::error!(error = %e, "gRPC reflection unavailable"),
    }
    routes
}
