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

/// The paths `configure` mounts besides the documented one, with their
/// operation ids.
const ALIASES: [(&str, &str); 3] = [
    (
        "/.well-known/openid-configuration/i/{instance_id}",
        "get_openid_configuration_inserted",
    ),
    (
        "/i/{instance_id}/.well-known/openid-configuration",
        "get_openid_configuration",
    ),
    (
        "/i/{instance_id}/.well-known/oauth-authorization-server",
        "get_authorization_server_metadata_appended",
    ),
];

#[derive(utoipa::OpenApi)]
#[openapi(paths(metadata), components(schemas(MetadataDocument)))]
struct Doc;

/// The OpenAPI description of the metadata documents, at every path they
/// are served.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let mut doc = <Doc as utoipa::OpenApi>::openapi();
    let primary = doc
        .paths
        .paths
        .get("/.well-known/oauth-authorization-server/i/{instance_id}")
        .cloned();
    if let Some(item) = primary {
        for (path, operation_id) in ALIASES {
            let mut alias = item.clone();
            if let Some(op) = alias.get.as_mut() {
                op.operation_id = Some(operation_id.to_owned());
            }
            doc.paths.paths.insert(path.to_owned(), alias);
        }
    }
    doc
}

/// RFC 8414 §2 authorization server metadata, also served as OpenID
/// Connect Discovery §3 configuration (as `document` builds it).
#[derive(utoipa::ToSchema)]
#[schema(as = AuthorizationServerMetadata)]
#[allow(dead_code)]
struct MetadataDocument {
    /// `<public url>/i/<instance id>`, byte for byte.
    issuer: String,
    authorization_endpoint: String,
    token_endpoint: String,
    jwks_uri: String,
    userinfo_endpoint: String,
    revocation_endpoint: String,
    introspection_endpoint: String,
    /// Only while dynamic client registration is on.
    #[schema(nullable = false)]
    registration_endpoint: Option<String>,
    /// The standard scopes and the instance's custom ones.
    scopes_supported: Vec<String>,
    response_types_supported: Vec<String>,
    response_modes_supported: Vec<String>,
    grant_types_supported: Vec<String>,
    token_endpoint_auth_methods_supported: Vec<String>,
    revocation_endpoint_auth_methods_supported: Vec<String>,
    introspection_endpoint_auth_methods_supported: Vec<String>,
    code_challenge_methods_supported: Vec<String>,
    authorization_response_iss_parameter_supported: bool,
    /// Whether clients may be identified by a metadata document URL.
    client_id_metadata_document_supported: bool,
    subject_types_supported: Vec<String>,
    id_token_signing_alg_values_supported: Vec<String>,
    claims_supported: Vec<String>,
    prompt_values_supported: Vec<String>,
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

#[utoipa::path(
    get,
    path = "/.well-known/oauth-authorization-server/i/{instance_id}",
    tag = "metadata",
    operation_id = "get_authorization_server_metadata",
    summary = "Authorization server metadata (RFC 8414) / OpenID discovery",
    params(("instance_id" = String, Path, description = "The instance whose issuer this is (`ins_…`).")),
    responses(
        (status = 200, description = "The issuer's metadata document.", body = MetadataDocument, headers(("cache-control" = String, description = "`public, max-age=60`."))),
        (status = 400, description = "A URL with a NUL character (`malformed_request`).", body = gatehouse_platform::openapi::ErrorBody),
        (status = 404, description = "No active instance has this issuer (`resource_not_found`).", body = gatehouse_platform::openapi::ErrorBody),
        (status = 413, description = "A declared body over 1 MiB (`request_body_too_large`).", body = gatehouse_platform::openapi::ErrorBody),
        (status = 429, description = "Too many requests in flight from this address (`too_many_requests`).", body = gatehouse_platform::openapi::ErrorBody),
    )
)]
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

#[cfg(test)]
mod tests {
    #[test]
    fn every_mounted_route_is_documented() {
        gatehouse_platform::openapi::assert_documents_exactly(
            &super::openapi(),
            &[
                (
                    "GET",
                    "/.well-known/oauth-authorization-server/i/{instance_id}",
                ),
                ("GET", "/.well-known/openid-configuration/i/{instance_id}"),
                ("GET", "/i/{instance_id}/.well-known/openid-configuration"),
                (
                    "GET",
                    "/i/{instance_id}/.well-known/oauth-authorization-server",
                ),
            ],
        );
    }

    #[test]
    fn each_alias_has_its_own_operation_id() {
        let doc = super::openapi();
        let mut ids: Vec<String> = doc
            .paths
            .paths
            .values()
            .filter_map(|item| item.get.as_ref()?.operation_id.clone())
            .collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), 4, "{ids:?}");
    }
}
