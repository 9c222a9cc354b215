//! The gRPC transport (`proto/cardinal/v1/cds_hooks.proto`), with the standard health service and
//! server reflection. Same semantics and the same evaluation path as HTTP.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use crate::admission::Ticket;

use crate::evaluator::{CallError, Cardinal, Evaluation};
use crate::explain::ExplainReport;
use crate::proto;
use crate::proto::cds_hooks_server::{CdsHooks, CdsHooksServer};
use crate::proto::rule_set_admin_server::{RuleSetAdmin, RuleSetAdminServer};
use crate::reload;
use crate::rule_set::Trigger;

use super::grpc_convert;
use super::observe::TraceId;

/// Encoded descriptor set of Cardinal's protos, for reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("cardinal_descriptor");

#[derive(Clone)]
pub struct GrpcService {
    cardinal: Cardinal,
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

impl GrpcService {
    /// A hook call as `CallHook` and `Explain` take it: unknown service first, then the request, then
    /// the one evaluation path, with the trace id of the server span.
    async fn evaluate(
        &self,
        request: Request<proto::CallHookRequest>,
    ) -> Result<Evaluation, Status> {
        let trace_id = request
            .extensions()
            .get::<TraceId>()
            .map(|TraceId(id)| id.clone());
        let admission = request.extensions().get::<Arc<Ticket>>().cloned();
        #[cfg(feature = "fault-injection")]
        if request.metadata().contains_key("x-cardinal-inject-panic") {
            #[allow(clippy::panic)]
            {
                panic!("injected fault while reading patient Jane Roe, MRN 4711-0815");
            }
        }
        let message = request.into_inner();
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
        options.trace_id = trace_id;
        options.admission = admission;
        options.rule_set = Some(rule_set);
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
        let evaluation = self.evaluate(request).await?;
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
        let evaluation = self.evaluate(request).await?;
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
        let message = request.into_inner();
        self.cardinal
            .service(&message.service_id)
            .map_err(status_of)?;
        let feedback = grpc_convert::feedback(&message).map_err(|e| status_of(e.into()))?;
        let accepted = self
            .cardinal
            .feedback(&message.service_id, &feedback)
            .map_err(status_of)?;
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

/// Cardinal's gRPC services: CdsHooks, RuleSetAdmin, grpc.health.v1, and reflection (v1).
pub async fn routes(cardinal: Cardinal) -> tonic::service::Routes {
    let max_message = cardinal.config().max_body_bytes;
    let admin = RuleSetAdminServer::new(AdminService {
        cardinal: cardinal.clone(),
    });
    let service =
        CdsHooksServer::new(GrpcService { cardinal }).max_decoding_message_size(max_message);
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<CdsHooksServer<GrpcService>>()
        .await;
    let mut routes = tonic::service::Routes::new(service)
        .add_service(admin)
        .add_service(health_service);
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
