//! What every service's OpenAPI description shares: the two error shapes,
//! the security schemes, and the responses that the request guard, the
//! extractors and the rate limiter give on every route of a kind, added to
//! each operation after the services' own (`finish`). Each handler states
//! only what it answers itself; this module states what the layers around
//! it answer, so the published document lists every status a client can
//! get without each handler repeating them.

use utoipa::openapi::path::Operation;
use utoipa::openapi::request_body::RequestBody;
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{Content, OpenApi, Ref, RefOr};
use utoipa::{PartialSchema, ToSchema};

/// The one error shape of the Backend and admin APIs.
#[derive(ToSchema)]
#[schema(as = Error)]
#[allow(dead_code)]
pub struct ErrorBody {
    errors: Vec<ErrorItemSchema>,
    /// The request's trace id, also in the `x-trace-id` header.
    trace_id: String,
    /// The same value, for Clerk's SDKs.
    clerk_trace_id: String,
}

#[derive(ToSchema)]
#[schema(as = ErrorItem)]
#[allow(dead_code)]
pub struct ErrorItemSchema {
    /// Stable, machine-readable.
    code: String,
    message: String,
    /// What went wrong, for a person; quoted input is cut to 100 characters.
    long_message: String,
    /// `param_name`: the path of the field at fault, when one is.
    #[schema(value_type = Object)]
    meta: serde_json::Value,
}

/// RFC 6749 §5.2, on the OAuth endpoints.
#[derive(ToSchema)]
#[schema(as = OAuthError)]
#[allow(dead_code)]
pub struct OAuthErrorBody {
    error: String,
    error_description: String,
}

/// Security scheme names used by the services' `#[utoipa::path]`s.
pub const SECRET_KEY: &str = "secret_key";
pub const ADMIN_TOKEN: &str = "admin_token";
pub const CLIENT_BASIC: &str = "client_secret_basic";

/// The kind of an operation, by where it is mounted: what the layers
/// around its handler may answer.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Surface {
    /// `/v1/…` and Clerk's unversioned aliases: secret key, rate limited.
    Backend,
    /// `/admin/v1/…`: the admin token.
    Admin,
    /// `/i/{instance_id}/oauth/…`: answers in the RFC 6749 shape.
    OAuth,
    /// Other JSON under an issuer, or the discovery documents under
    /// `/.well-known/`: each handler documents its own refusals.
    IssuerDocument,
    /// Hosted HTML pages under an issuer.
    Page,
    /// `/healthz`, `/readyz`, `/metrics`, the documents themselves.
    Ops,
}

impl Surface {
    pub fn of(path: &str, op: &Operation) -> Self {
        let page = op.responses.responses.values().any(|r| match r {
            RefOr::T(r) => r.content.contains_key("text/html"),
            RefOr::Ref(_) => false,
        });
        if path.starts_with("/admin/") {
            Self::Admin
        } else if path.starts_with("/i/") && page {
            Self::Page
        } else if crate::http::is_oauth_path(path) {
            Self::OAuth
        } else if path.starts_with("/i/") || path.starts_with("/.well-known/") {
            Self::IssuerDocument
        } else if matches!(path, "/healthz" | "/readyz" | "/metrics")
            || path.ends_with("/openapi.json")
        {
            Self::Ops
        } else {
            Self::Backend
        }
    }
}

fn json_error(description: &str) -> RefOr<utoipa::openapi::Response> {
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            Content::new(Some(Ref::from_schema_name("Error"))),
        )
        .into()
}

fn oauth_error(description: &str) -> RefOr<utoipa::openapi::Response> {
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            Content::new(Some(Ref::from_schema_name("OAuthError"))),
        )
        .into()
}

fn has_body(op: &Operation) -> bool {
    op.request_body
        .as_ref()
        .is_some_and(|b: &RequestBody| !b.content.is_empty())
}

/// Adds what the layers answer to one operation, unless the handler
/// documented that status itself.
fn add_layer_responses(surface: Surface, op: &mut Operation) {
    let body = has_body(op);
    let mut add = |status: &str, r: RefOr<utoipa::openapi::Response>| {
        op.responses.responses.entry(status.to_owned()).or_insert(r);
    };
    let error = match surface {
        Surface::OAuth => oauth_error,
        _ => json_error,
    };
    // The request guard, on every route.
    add(
        "408",
        error("The request body did not arrive within the read timeout."),
    );
    add("413", error("The request body is over 1 MiB."));
    add(
        "429",
        error(
            "Too many requests: over the instance's rate limit, or too many in flight from one address.",
        ),
    );
    match surface {
        Surface::Backend => {
            add(
                "401",
                json_error(
                    "The secret key is missing, malformed, revoked or unknown, or its tenant is disabled.",
                ),
            );
            add("400", json_error("A malformed request."));
            if body {
                add("415", json_error("A body that is not JSON."));
                add(
                    "422",
                    json_error("A body or parameter that does not meet the schema."),
                );
            }
        }
        Surface::Admin => {
            add("401", json_error("The admin token is missing or wrong."));
            add(
                "403",
                json_error("The admin API is switched off on this process."),
            );
            add("400", json_error("A malformed request."));
            if body {
                add("415", json_error("A body that is not JSON."));
                add(
                    "422",
                    json_error("A body or parameter that does not meet the schema."),
                );
            }
        }
        Surface::OAuth => {
            add(
                "400",
                oauth_error("A malformed request (RFC 6749 §5.2 codes)."),
            );
            add("404", oauth_error("No active instance has this issuer."));
        }
        Surface::Page | Surface::IssuerDocument | Surface::Ops => {}
    }
}

/// The finishing touches of a published document: the shared schemas and
/// security schemes, and each operation's layer responses.
pub fn finish(doc: &mut OpenApi) {
    let components = doc.components.get_or_insert_with(Default::default);
    for (name, schema) in [
        ("Error", ErrorBody::schema()),
        ("ErrorItem", ErrorItemSchema::schema()),
        ("OAuthError", OAuthErrorBody::schema()),
    ] {
        components.schemas.insert(name.to_owned(), schema);
    }
    let bearer = |what: &str| {
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .description(Some(what))
                .build(),
        )
    };
    components.security_schemes.insert(
        SECRET_KEY.to_owned(),
        bearer("An instance secret key (`sk_test_…` or `sk_live_…`)."),
    );
    components
        .security_schemes
        .insert(ADMIN_TOKEN.to_owned(), bearer("The platform admin token."));
    components.security_schemes.insert(
        CLIENT_BASIC.to_owned(),
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Basic)
                .description(Some(
                    "OAuth client authentication (client_secret_basic); public clients send client_id in the form instead.",
                ))
                .build(),
        ),
    );
    for (path, item) in doc.paths.paths.iter_mut() {
        for op in [
            &mut item.get,
            &mut item.post,
            &mut item.put,
            &mut item.patch,
            &mut item.delete,
            &mut item.options,
            &mut item.head,
        ]
        .into_iter()
        .flatten()
        {
            let surface = Surface::of(path, op);
            add_layer_responses(surface, op);
        }
    }
}

/// The operations `doc` documents, as (method in capitals, path).
fn operations(doc: &OpenApi) -> Vec<(&'static str, &str)> {
    let mut ops = Vec::new();
    for (path, item) in &doc.paths.paths {
        for (method, op) in [
            ("GET", &item.get),
            ("POST", &item.post),
            ("PUT", &item.put),
            ("PATCH", &item.patch),
            ("DELETE", &item.delete),
            ("OPTIONS", &item.options),
            ("HEAD", &item.head),
        ] {
            if op.is_some() {
                ops.push((method, path.as_str()));
            }
        }
    }
    ops
}

/// Panics unless `doc` documents exactly `routes` (method in capitals,
/// path as mounted): what each module's test of its mounted routes asks.
pub fn assert_documents_exactly(doc: &OpenApi, routes: &[(&str, &str)]) {
    let ops = operations(doc);
    for route in routes {
        assert!(
            ops.contains(route),
            "{} {} is not documented",
            route.0,
            route.1
        );
    }
    for op in &ops {
        assert!(
            routes.contains(op),
            "{} {} is documented but not mounted here",
            op.0,
            op.1
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use utoipa::openapi::path::{HttpMethod, OperationBuilder, PathItem};
    use utoipa::openapi::response::ResponsesBuilder;

    fn doc_with(path: &str, html: bool) -> OpenApi {
        let mut ok = ResponseBuilder::new().description("ok");
        if html {
            ok = ok.content(
                "text/html",
                Content::new(None::<RefOr<utoipa::openapi::Schema>>),
            );
        }
        let op = OperationBuilder::new()
            .responses(ResponsesBuilder::new().response("200", ok.build()).build())
            .build();
        let mut doc = OpenApi::default();
        doc.paths
            .paths
            .insert(path.to_owned(), PathItem::new(HttpMethod::Get, op));
        doc
    }

    fn statuses(doc: &OpenApi, path: &str) -> Vec<String> {
        let op = doc.paths.paths[path].get.as_ref().unwrap();
        op.responses.responses.keys().cloned().collect()
    }

    #[test]
    fn backend_operations_list_what_the_key_and_limiter_answer() {
        let mut doc = doc_with("/v1/users", false);
        finish(&mut doc);
        let s = statuses(&doc, "/v1/users");
        for code in ["200", "400", "401", "408", "413", "429"] {
            assert!(s.contains(&code.to_owned()), "{code} missing from {s:?}");
        }
        // No body, so no 415 or 422 from the JSON extractor.
        assert!(!s.contains(&"415".to_owned()));
    }

    #[test]
    fn oauth_operations_answer_in_the_rfc_shape_and_pages_get_only_the_guard() {
        let mut doc = doc_with("/i/{instance_id}/oauth/token", false);
        finish(&mut doc);
        let op = doc.paths.paths["/i/{instance_id}/oauth/token"]
            .get
            .as_ref()
            .unwrap();
        let RefOr::T(r) = &op.responses.responses["400"] else {
            panic!("a reference")
        };
        let json = serde_json::to_string(&r.content["application/json"]).unwrap();
        assert!(json.contains("OAuthError"), "{json}");

        let mut page = doc_with("/i/{instance_id}/sign-in", true);
        finish(&mut page);
        let s = statuses(&page, "/i/{instance_id}/sign-in");
        assert_eq!(s, ["200", "408", "413", "429"]);
    }
}
