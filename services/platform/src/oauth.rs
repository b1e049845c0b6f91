//! The RFC 6749 §5.2 error shape for OAuth protocol endpoints
//! (`{"error","error_description"}`, `Cache-Control: no-store`), used
//! instead of the Backend API shape there.

use actix_web::http::StatusCode;
use actix_web::http::header::{CACHE_CONTROL, PRAGMA};
use actix_web::{HttpResponse, ResponseError};
use serde_json::json;

/// Every error code an OAuth endpoint of ours answers, by the RFC that
/// defines it: the only way to name one, so a misspelt code cannot be
/// sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OAuthCode {
    // RFC 6749 §4.1.2.1, §5.2
    InvalidRequest,
    InvalidClient,
    InvalidGrant,
    UnauthorizedClient,
    UnsupportedGrantType,
    InvalidScope,
    AccessDenied,
    UnsupportedResponseType,
    ServerError,
    TemporarilyUnavailable,
    // RFC 6750 §3.1 (userinfo and other bearer-protected endpoints)
    InvalidToken,
    InsufficientScope,
    // RFC 7009 §2.2.1
    UnsupportedTokenType,
    // RFC 7591 §3.2.2 (and RFC 7592)
    InvalidRedirectUri,
    InvalidClientMetadata,
    InvalidSoftwareStatement,
    UnapprovedSoftwareStatement,
    // RFC 8707 §2
    InvalidTarget,
    // OpenID Connect Core §3.1.2.6
    LoginRequired,
    ConsentRequired,
    InteractionRequired,
    /// Ours: no RFC names a rate limit; registration answers 429 with it.
    TooManyRequests,
}

impl OAuthCode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidRequest => "invalid_request",
            Self::InvalidClient => "invalid_client",
            Self::InvalidGrant => "invalid_grant",
            Self::UnauthorizedClient => "unauthorized_client",
            Self::UnsupportedGrantType => "unsupported_grant_type",
            Self::InvalidScope => "invalid_scope",
            Self::AccessDenied => "access_denied",
            Self::UnsupportedResponseType => "unsupported_response_type",
            Self::ServerError => "server_error",
            Self::TemporarilyUnavailable => "temporarily_unavailable",
            Self::InvalidToken => "invalid_token",
            Self::InsufficientScope => "insufficient_scope",
            Self::UnsupportedTokenType => "unsupported_token_type",
            Self::InvalidRedirectUri => "invalid_redirect_uri",
            Self::InvalidClientMetadata => "invalid_client_metadata",
            Self::InvalidSoftwareStatement => "invalid_software_statement",
            Self::UnapprovedSoftwareStatement => "unapproved_software_statement",
            Self::InvalidTarget => "invalid_target",
            Self::LoginRequired => "login_required",
            Self::ConsentRequired => "consent_required",
            Self::InteractionRequired => "interaction_required",
            Self::TooManyRequests => "too_many_requests",
        }
    }
}

impl std::fmt::Display for OAuthCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl serde::Serialize for OAuthCode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("{error}: {description}")]
pub struct OAuthError {
    pub status: StatusCode,
    pub error: OAuthCode,
    pub description: String,
    pub retry_after: Option<u64>,
}

impl OAuthError {
    pub fn new(status: StatusCode, error: OAuthCode, description: impl Into<String>) -> Self {
        Self {
            status,
            error,
            description: description.into(),
            retry_after: None,
        }
    }

    pub fn bad_request(error: OAuthCode, description: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, error, description)
    }

    pub fn internal(err: impl std::fmt::Display) -> Self {
        tracing::error!(error = %err, "internal error on an OAuth endpoint");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            OAuthCode::ServerError,
            "The server hit an unexpected condition; the request was not applied.",
        )
    }
}

impl From<sea_orm::DbErr> for OAuthError {
    fn from(err: sea_orm::DbErr) -> Self {
        Self::internal(err)
    }
}

impl ResponseError for OAuthError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        let mut res = HttpResponse::build(self.status);
        res.insert_header((CACHE_CONTROL, "no-store"))
            .insert_header((PRAGMA, "no-cache"))
            .insert_header(("x-trace-id", crate::http::current_trace_id()));
        if let Some(secs) = self.retry_after {
            res.insert_header(("retry-after", secs.to_string()));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            // RFC 6749 §5.2: a client that failed to authenticate is told
            // the scheme clients use (Basic); a bad bearer token, Bearer.
            let challenge = if self.error == OAuthCode::InvalidClient {
                "Basic realm=\"oauth\", charset=\"UTF-8\"".to_owned()
            } else {
                format!("Bearer error=\"{}\"", self.error)
            };
            res.insert_header(("www-authenticate", challenge));
        }
        res.json(json!({ "error": self.error, "error_description": self.description }))
    }
}

/// Paths of the OAuth endpoints under an instance's issuer. The
/// authorization service publishes them (metadata, application objects);
/// the token service serves most of them.
pub mod paths {
    pub const AUTHORIZE: &str = "/oauth/authorize";
    pub const TOKEN: &str = "/oauth/token";
    pub const REVOKE: &str = "/oauth/revoke";
    /// Introspection (RFC 7662); the name Clerk's application objects use.
    pub const INTROSPECT: &str = "/oauth/token_info";
    pub const USERINFO: &str = "/oauth/userinfo";
    pub const JWKS: &str = "/.well-known/jwks.json";
    pub const REGISTER: &str = "/oauth/register";
}

/// A resource indicator as RFC 8707 §2 has it: an absolute URI without a
/// fragment (here one with an authority or path base, as resource servers'
/// URLs are, so `a:b` is not one; at most 2048 characters). The same rule at
/// `/authorize`, at the token endpoint and in an instance's declared list.
pub fn resource_indicator(raw: &str) -> Option<&str> {
    if raw.is_empty() || raw.len() > 2048 {
        return None;
    }
    let url = url::Url::parse(raw).ok()?;
    if url.fragment().is_some() || url.cannot_be_a_base() {
        return None;
    }
    Some(raw)
}

/// Whether a token may be bound to `resource` on an instance that declared
/// `declared` (none declared: any valid indicator).
pub fn resource_allowed(declared: &[String], resource: &str) -> bool {
    resource_indicator(resource).is_some()
        && (declared.is_empty() || declared.iter().any(|d| d == resource))
}

/// The form of an application's access tokens. JWTs (RFC 9068) are checked
/// by a resource server alone with the JWKS, so a revocation reaches it only
/// through introspection or verify; opaque tokens (`oat_…`) mean nothing
/// without a lookup, so every check sees a revocation at once.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AccessTokenFormat {
    #[default]
    Jwt,
    Opaque,
}

impl AccessTokenFormat {
    /// The prefix of an opaque access token.
    pub const OPAQUE_PREFIX: &str = "oat_";

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Jwt => "jwt",
            Self::Opaque => "opaque",
        }
    }

    /// As events and rows store it: anything but "opaque" (the empty string
    /// of events older than the setting included) is a JWT.
    pub fn stored(raw: &str) -> Self {
        if raw == "opaque" {
            Self::Opaque
        } else {
            Self::Jwt
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_indicators_are_absolute_uris_without_fragments_rfc_8707_section_2() {
        assert!(resource_indicator("https://mcp.example/mcp").is_some());
        for bad in [
            "",
            "a:b",
            "urn:example:api",
            "mcp.example",
            "/relative",
            "https://a.example/#f",
        ] {
            assert!(resource_indicator(bad).is_none(), "{bad} accepted");
        }
        assert!(resource_indicator(&format!("https://a.example/{}", "x".repeat(2048))).is_none());
    }

    #[test]
    fn a_declared_list_admits_only_its_own_resources() {
        let declared = vec!["https://mcp.example/mcp".to_owned()];
        assert!(resource_allowed(&declared, "https://mcp.example/mcp"));
        assert!(!resource_allowed(&declared, "https://other.example/"));
        assert!(resource_allowed(&[], "https://other.example/"));
        assert!(!resource_allowed(&[], "a:b"));
    }

    #[test]
    fn error_codes_are_spelt_as_their_rfcs_spell_them_and_are_distinct() {
        use OAuthCode::*;
        let all = [
            InvalidRequest,
            InvalidClient,
            InvalidGrant,
            UnauthorizedClient,
            UnsupportedGrantType,
            InvalidScope,
            AccessDenied,
            UnsupportedResponseType,
            ServerError,
            TemporarilyUnavailable,
            InvalidToken,
            InsufficientScope,
            UnsupportedTokenType,
            InvalidRedirectUri,
            InvalidClientMetadata,
            InvalidSoftwareStatement,
            UnapprovedSoftwareStatement,
            InvalidTarget,
            LoginRequired,
            ConsentRequired,
            InteractionRequired,
            TooManyRequests,
        ];
        let spelt: std::collections::HashSet<&str> = all.iter().map(|c| c.as_str()).collect();
        assert_eq!(spelt.len(), all.len());
        assert!(
            spelt
                .iter()
                .all(|s| s.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'))
        );
        assert_eq!(InvalidTarget.to_string(), "invalid_target");
        assert_eq!(
            serde_json::to_value(UnsupportedTokenType).unwrap(),
            "unsupported_token_type"
        );
    }

    #[test]
    fn only_opaque_is_stored_as_opaque_and_older_events_mean_jwt() {
        assert_eq!(
            AccessTokenFormat::stored("opaque"),
            AccessTokenFormat::Opaque
        );
        assert_eq!(AccessTokenFormat::stored(""), AccessTokenFormat::Jwt);
        assert_eq!(AccessTokenFormat::stored("jwt"), AccessTokenFormat::Jwt);
        for f in [AccessTokenFormat::Jwt, AccessTokenFormat::Opaque] {
            assert_eq!(AccessTokenFormat::stored(f.as_str()), f);
        }
    }
}
