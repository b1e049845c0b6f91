//! Authorization server metadata (RFC 8414) and OpenID discovery for each
//! instance's issuer `<public url>/i/<instance>`, at every URL a client
//! derives from that issuer:
//!
//! - `/.well-known/oauth-authorization-server/i/<instance>` (RFC 8414 §3.1,
//!   the well-known segment inserted before the issuer's path),
//! - `/.well-known/openid-configuration/i/<instance>` (the same insertion,
//!   which the MCP authorization spec also tries),
//! - `/i/<instance>/.well-known/openid-configuration` (OpenID Discovery's
//!   appended form) and `/i/<instance>/.well-known/oauth-authorization-server`.
//!
//! `issuer` is byte for byte the issuer these URLs derive from. Open CORS.

use actix_web::{HttpResponse, web};
use gatehouse_platform::http::public_cors;
use gatehouse_platform::oauth::paths;
use gatehouse_platform::tenancy;
use gatehouse_platform::{ApiError, ApiResult, Platform};
use serde_json::{Value, json};

use crate::oauth_apps::{registration, scopes};

pub fn configure(cfg: &mut web::ServiceConfig) {
    for path in [
        "/.well-known/oauth-authorization-server/i/{instance_id}",
        "/.well-known/openid-configuration/i/{instance_id}",
        "/i/{instance_id}/.well-known/openid-configuration",
        "/i/{instance_id}/.well-known/oauth-authorization-server",
    ] {
        cfg.service(web::resource(path).wrap(public_cors()).get(metadata));
    }
}

/// The metadata document of an instance.
pub async fn document(platform: &Platform, instance_id: &str) -> ApiResult<Value> {
    let issuer = platform.issuer(instance_id);
    let url = |p: &str| format!("{issuer}{p}");
    let scopes = scopes::known(platform.db(), instance_id).await?;
    let settings = registration::settings(platform.db(), instance_id).await?;
    let client_auth = ["client_secret_basic", "client_secret_post", "none"];
    let mut doc = json!({
        "issuer": issuer,
        "authorization_endpoint": url(paths::AUTHORIZE),
        "token_endpoint": url(paths::TOKEN),
        "jwks_uri": url(paths::JWKS),
        "userinfo_endpoint": url(paths::USERINFO),
        "revocation_endpoint": url(paths::REVOKE),
        "introspection_endpoint": url(paths::INTROSPECT),
        "scopes_supported": scopes,
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials"],
        "token_endpoint_auth_methods_supported": client_auth,
        "revocation_endpoint_auth_methods_supported": client_auth,
        "introspection_endpoint_auth_methods_supported": client_auth,
        "code_challenge_methods_supported": ["S256"],
        "authorization_response_iss_parameter_supported": true,
        "client_id_metadata_document_supported": settings.metadata_documents,
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["ES256", "RS256"],
        "claims_supported": ["iss", "sub", "aud", "exp", "iat", "auth_time", "nonce", "email", "email_verified", "name", "given_name", "family_name", "preferred_username", "updated_at"],
        "prompt_values_supported": ["none", "consent", "login"],
    });
    if settings.dynamic_registration {
        doc["registration_endpoint"] = json!(url(paths::REGISTER));
    }
    Ok(doc)
}

async fn metadata(
    platform: web::Data<Platform>,
    path: web::Path<String>,
) -> ApiResult<HttpResponse> {
    let id = path.into_inner();
    if tenancy::active_instance_cached(&platform, &id)
        .await?
        .is_none()
    {
        return Err(ApiError::not_found("issuer"));
    }
    let doc = document(&platform, &id).await?;
    Ok(HttpResponse::Ok()
        .insert_header(("cache-control", "public, max-age=60"))
        .json(doc))
}
