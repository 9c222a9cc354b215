//! HTTP status + FHIR OperationOutcome body for everything that is not a 200.

use axum::Json;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::admission::{Overloaded, RETRY_AFTER_SECS};
use crate::cds_hooks::{IssueType, OperationOutcome, RequestError};
use crate::evaluator::CallError;
use crate::store::FeedbackError;

/// An HTTP error answer.
#[derive(Debug)]
pub struct HttpError {
    pub status: StatusCode,
    pub code: IssueType,
    pub message: String,
}

impl HttpError {
    pub fn new(status: StatusCode, code: IssueType, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, IssueType::NotFound, message)
    }
}

impl From<RequestError> for HttpError {
    fn from(err: RequestError) -> Self {
        let code = match err {
            RequestError::MalformedJson { .. } | RequestError::NotAnObject => IssueType::Structure,
            RequestError::MissingField(_) => IssueType::Required,
            _ => IssueType::Invalid,
        };
        Self::new(StatusCode::BAD_REQUEST, code, err.to_string())
    }
}

impl From<CallError> for HttpError {
    fn from(err: CallError) -> Self {
        let status =
            StatusCode::from_u16(err.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        match err {
            CallError::UnknownService(_) => Self::not_found(err.to_string()),
            CallError::InvalidRequest(e) => e.into(),
            CallError::PrefetchUnavailable(_) => {
                Self::new(status, IssueType::Incomplete, err.to_string())
            }
            CallError::Overloaded(why) => why.into(),
            CallError::Internal(_) => Self::new(status, IssueType::Exception, err.to_string()),
        }
    }
}

impl From<FeedbackError> for HttpError {
    fn from(err: FeedbackError) -> Self {
        match err {
            FeedbackError::UnknownCard { .. } => Self::not_found(err.to_string()),
            FeedbackError::Unavailable(_) => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                IssueType::Transient,
                err.to_string(),
            ),
        }
    }
}

impl From<Overloaded> for HttpError {
    fn from(why: Overloaded) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            IssueType::Throttled,
            why.to_string(),
        )
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let body = Json(OperationOutcome::error(self.code, self.message));
        let mut response = (self.status, body).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("application/fhir+json"),
        );
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            // The EHR may retry, here after a pause or at once on another replica.
            response.headers_mut().insert(
                header::RETRY_AFTER,
                header::HeaderValue::from(RETRY_AFTER_SECS),
            );
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_http_status_of_a_call_error_is_the_one_the_endpoint_answers() {
        let errors = || {
            vec![
                CallError::UnknownService("x".into()),
                CallError::InvalidRequest(RequestError::MissingField("hook".into())),
                CallError::PrefetchUnavailable("prefetch x".into()),
                CallError::Overloaded(Overloaded::QueueFull),
                CallError::Internal("x".into()),
            ]
        };
        for (err, same) in errors().into_iter().zip(errors()) {
            assert_eq!(HttpError::from(err).status.as_u16(), same.http_status());
        }
    }
}
