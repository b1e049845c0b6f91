//! The token service's part of the OpenAPI document: every route
//! [`crate::configure`] mounts, from the handlers' `#[utoipa::path]`s. A
//! handler mounted at two paths (Clerk's unversioned aliases, userinfo's
//! GET and POST) is described once and copied here.

use utoipa::OpenApi as _;
use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{OpenApi, PathItem, Required};

use crate::{keys, token, users, verify};

/// The security scheme of userinfo: an access token the instance issued.
pub const ACCESS_TOKEN: &str = "oauth_access_token";

#[derive(utoipa::OpenApi)]
#[openapi(
    paths(
        token::token,
        verify::revoke,
        verify::introspect,
        verify::jwks,
        verify::userinfo,
        verify::backend_jwks,
        verify::verify,
        verify::backend_revoke,
        verify::revoke_application_tokens,
        crate::rotate_key,
    ),
    components(schemas(
        token::TokenForm,
        token::TokenResponse,
        verify::TokenRequestForm,
        verify::IntrospectionSchema,
        verify::VerifyBody,
        verify::IdPOAuthAccessTokenSchema,
        verify::ApplicationTokenRevocation,
        keys::JwksSchema,
        keys::JsonWebKey,
        users::UserInfoSchema,
    ))
)]
struct Doc;

/// The routes of the token service, for the published document (before
/// `gatehouse_platform::openapi::finish`).
pub fn openapi() -> OpenApi {
    let mut doc = Doc::openapi();
    let paths = &mut doc.paths.paths;

    // The same handler, also answering POST (OpenID Connect Core §5.3.1).
    if let Some(item) = paths.get_mut("/i/{instance_id}/oauth/userinfo")
        && let Some(get) = item.get.clone()
    {
        item.post = Some(renamed(get, "oauth_userinfo_post"));
    }

    // Clerk's SDKs call these without the version prefix.
    for (versioned, alias) in [
        (
            "/v1/oauth_applications/access_tokens/verify",
            "/oauth_applications/access_tokens/verify",
        ),
        (
            "/v1/oauth_applications/access_tokens/revoke",
            "/oauth_applications/access_tokens/revoke",
        ),
    ] {
        if let Some(post) = paths.get(versioned).and_then(|i| i.post.clone()) {
            let id = format!(
                "{}_unversioned",
                post.operation_id.as_deref().unwrap_or_default()
            );
            let item = PathItem::new(utoipa::openapi::HttpMethod::Post, renamed(post, &id));
            paths.insert(alias.to_owned(), item);
        }
    }

    // Rotation takes an empty body as `{}`.
    if let Some(op) = paths
        .get_mut("/admin/v1/instances/{instance_id}/signing_keys/rotate")
        .and_then(|i| i.post.as_mut())
        && let Some(body) = op.request_body.as_mut()
    {
        body.required = Some(Required::False);
    }

    doc.components
        .get_or_insert_with(Default::default)
        .security_schemes
        .insert(
            ACCESS_TOKEN.to_owned(),
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "An access token the instance issued (`Authorization: Bearer …`).",
                    ))
                    .build(),
            ),
        );
    doc
}

fn renamed(mut op: Operation, operation_id: &str) -> Operation {
    op.operation_id = Some(operation_id.to_owned());
    op
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every route `configure` mounts, by hand.
    const ROUTES: &[(&str, &str)] = &[
        ("post", "/i/{instance_id}/oauth/token"),
        ("post", "/i/{instance_id}/oauth/revoke"),
        ("post", "/i/{instance_id}/oauth/token_info"),
        ("get", "/i/{instance_id}/.well-known/jwks.json"),
        ("get", "/i/{instance_id}/oauth/userinfo"),
        ("post", "/i/{instance_id}/oauth/userinfo"),
        ("get", "/v1/jwks"),
        ("post", "/oauth_applications/access_tokens/revoke"),
        ("post", "/v1/oauth_applications/access_tokens/revoke"),
        (
            "post",
            "/v1/oauth_applications/{application_id}/revoke_tokens",
        ),
        ("post", "/oauth_applications/access_tokens/verify"),
        ("post", "/v1/oauth_applications/access_tokens/verify"),
        (
            "post",
            "/admin/v1/instances/{instance_id}/signing_keys/rotate",
        ),
    ];

    fn json() -> serde_json::Value {
        serde_json::to_value(openapi()).unwrap()
    }

    #[test]
    fn every_mounted_route_is_documented_once() {
        let doc = json();
        let paths = doc["paths"].as_object().unwrap();
        let mut ids = std::collections::HashSet::new();
        let mut count = 0;
        for (path, item) in paths {
            for (method, op) in item.as_object().unwrap() {
                assert!(
                    ROUTES.contains(&(method.as_str(), path.as_str())),
                    "{method} {path} is not mounted"
                );
                let id = op["operationId"].as_str().unwrap();
                assert!(ids.insert(id.to_owned()), "operation id {id} twice");
                count += 1;
            }
        }
        for (method, path) in ROUTES {
            assert!(
                doc["paths"][path][method].is_object(),
                "{method} {path} is missing"
            );
        }
        assert_eq!(count, ROUTES.len());
    }

    #[test]
    fn every_reference_resolves() {
        let doc = json();
        let text = doc.to_string();
        // Added by the platform's `finish`.
        let shared = ["Error", "OAuthError"];
        for part in text.split("\"#/components/schemas/").skip(1) {
            let name = &part[..part.find('"').unwrap()];
            assert!(
                shared.contains(&name) || doc["components"]["schemas"][name].is_object(),
                "{name} is not a schema"
            );
        }
    }

    #[test]
    fn the_oauth_endpoints_document_their_own_errors() {
        let doc = json();
        let op = &doc["paths"]["/i/{instance_id}/oauth/token"]["post"];
        assert!(
            op["requestBody"]["content"]["application/x-www-form-urlencoded"].is_object(),
            "{op}"
        );
        assert!(op["responses"]["401"]["headers"]["www-authenticate"].is_object());
        let userinfo = &doc["paths"]["/i/{instance_id}/oauth/userinfo"];
        assert_eq!(
            userinfo["get"]["responses"], userinfo["post"]["responses"],
            "GET and POST are one handler"
        );
        assert!(userinfo["post"]["responses"]["401"].is_object());
        let rotate = &doc["paths"]["/admin/v1/instances/{instance_id}/signing_keys/rotate"]["post"];
        assert_ne!(rotate["requestBody"]["required"], true);
    }

    /// The schemas say what the handlers' `json!` really serves.
    #[test]
    fn served_objects_match_their_schemas() {
        let doc = json();
        let props = |name: &str| -> Vec<String> {
            let mut v: Vec<String> = doc["components"]["schemas"][name]["properties"]
                .as_object()
                .unwrap()
                .keys()
                .cloned()
                .collect();
            v.sort();
            v
        };
        let record = crate::families::TokenRecord {
            jti: "j".into(),
            instance_id: "ins".into(),
            family_id: "f".into(),
            client_id: "c".into(),
            subject: "u".into(),
            user_id: "u".into(),
            scope: "openid".into(),
            audience: String::new(),
            created_at_ms: 1,
            expires_at_ms: 2,
            revoked_at_ms: None,
            revocation_reason: None,
        };
        let served = verify::access_token_json(&record, 0);
        let mut keys: Vec<String> = served.as_object().unwrap().keys().cloned().collect();
        keys.sort();
        assert_eq!(keys, props("IdPOAuthAccessToken"));
        assert_eq!(
            served["object"],
            doc["components"]["schemas"]["IdPOAuthAccessToken"]["properties"]["object"]["enum"][0]
        );

        let profile = users::Profile {
            email: Some("a@example.com".into()),
            email_verified: true,
            first_name: Some("Ada".into()),
            last_name: Some("Lovelace".into()),
            username: Some("ada".into()),
            updated_at_ms: 1000,
        };
        let mut claims: Vec<String> = profile
            .claims(&["openid", "profile", "email"])
            .keys()
            .cloned()
            .collect();
        claims.push("sub".into());
        claims.sort();
        assert_eq!(claims, props("UserInfo"));

        for alg in [
            jsonwebtoken::Algorithm::RS256,
            jsonwebtoken::Algorithm::ES256,
        ] {
            let (_, _, jwk) = keys::generate(alg).unwrap();
            let jwk = serde_json::to_value(jwk).unwrap();
            let known = props("JsonWebKey");
            for k in jwk.as_object().unwrap().keys() {
                assert!(known.contains(k), "{k} of {alg:?} not in JsonWebKey");
            }
        }
    }
}
