//! The one JSON error shape of the Backend and admin APIs:
//! `{"errors":[{"code","message","long_message","meta"}],"trace_id"}`.
//! `clerk_trace_id` carries the same value for Clerk SDK compatibility.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;
use serde_json::{Value, json};

pub type ApiResult<T> = Result<T, ApiError>;

#[derive(Debug, Clone, Serialize)]
pub struct ErrorItem {
    pub code: String,
    pub message: String,
    pub long_message: String,
    pub meta: Value,
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("{status}: {}", .items.first().map(|i| i.long_message.as_str()).unwrap_or(""))]
pub struct ApiError {
    pub status: StatusCode,
    pub items: Vec<ErrorItem>,
}

/// Input echoed in a message is cut to this many characters.
pub const ECHO_CHARS: usize = 100;
/// No message is longer than this, whatever it quotes.
const MAX_MESSAGE_CHARS: usize = 400;

/// `s` cut to at most `max` characters, with `…` where it was cut.
pub fn clip_to(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        None => s.to_owned(),
        Some((i, _)) => format!("{}…", &s[..i]),
    }
}

/// Input quoted in an error message: at most [`ECHO_CHARS`] characters.
pub fn clip(s: &str) -> String {
    clip_to(s, ECHO_CHARS)
}

impl ApiError {
    pub fn new(
        status: StatusCode,
        code: &str,
        message: &str,
        long_message: impl Into<String>,
    ) -> Self {
        Self {
            status,
            items: vec![ErrorItem {
                code: code.to_owned(),
                message: message.to_owned(),
                long_message: clip_to(&long_message.into(), MAX_MESSAGE_CHARS),
                meta: json!({}),
            }],
        }
    }

    pub fn with_meta(mut self, meta: Value) -> Self {
        if let Some(item) = self.items.first_mut() {
            item.meta = meta;
        }
        self
    }

    pub fn bad_request(code: &str, long_message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, "is invalid", long_message)
    }

    /// A field-level validation failure; `meta.param_name` names the field.
    pub fn invalid_param(param: &str, long_message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "form_param_format_invalid",
            "is invalid",
            long_message,
        )
        .with_meta(json!({ "param_name": clip(param) }))
    }

    pub fn unauthorized(long_message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "authentication_invalid",
            "Unauthenticated",
            long_message,
        )
    }

    pub fn forbidden(long_message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "authorization_invalid",
            "Unauthorized request",
            long_message,
        )
    }

    pub fn not_found(what: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "resource_not_found",
            "not found",
            format!("No {what} was found with this identifier."),
        )
    }

    pub fn conflict(code: &str, long_message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, "conflict", long_message)
    }

    pub fn internal(err: impl std::fmt::Display) -> Self {
        tracing::error!(error = %err, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "Internal error",
            "The server hit an unexpected condition; the request was not applied.",
        )
    }

    pub fn unavailable(long_message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "service_unavailable",
            "Service unavailable",
            long_message,
        )
    }

    pub fn code(&self) -> &str {
        self.items.first().map(|i| i.code.as_str()).unwrap_or("")
    }

    pub fn body(&self, trace_id: &str) -> Value {
        json!({
            "errors": self.items,
            "trace_id": trace_id,
            "clerk_trace_id": trace_id,
        })
    }
}

impl From<sea_orm::DbErr> for ApiError {
    fn from(err: sea_orm::DbErr) -> Self {
        ApiError::internal(err)
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        let trace_id = crate::http::current_trace_id();
        HttpResponse::build(self.status)
            .insert_header(("x-trace-id", trace_id.clone()))
            .json(self.body(&trace_id))
    }
}
