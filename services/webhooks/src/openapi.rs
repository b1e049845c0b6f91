//! The webhooks service's part of the published OpenAPI document: the
//! event catalog, endpoints, their secrets and the delivery history, all
//! under the `webhooks` tag. What the layers around the handlers answer
//! (401, 403, 408, 413, 415, 429, …) is added by
//! `gatehouse_platform::openapi::finish` after the merge.

use serde_json::Value;

use crate::catalog;

/// The tag of every operation here.
pub(crate) const TAG: &str = "webhooks";

pub(crate) const ENDPOINT_ID: &str = "The endpoint's id (`ep_…`).";

pub(crate) const IDEMPOTENCY_KEY: &str = "1 to 255 visible ASCII characters: a retry with the same \
     key and body within 24 hours replays the first answer.";

pub(crate) const IDEMPOTENCY_400: &str =
    "An invalid `Idempotency-Key` (`idempotency_key_invalid`).";

pub(crate) const BODY_OR_IDEMPOTENCY_400: &str = "The body is not valid JSON \
     (`malformed_request`), or an invalid `Idempotency-Key` (`idempotency_key_invalid`).";

pub(crate) const IDEMPOTENCY_409: &str = "A request with this `Idempotency-Key` is still running \
     (`idempotency_request_in_progress`).";

pub(crate) const IDEMPOTENCY_422: &str =
    "The `Idempotency-Key` was used with another request (`idempotency_key_reused`).";

/// The webhooks routes of the Backend API (`configure`), described.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let mut doc = crate::api::openapi();
    doc.merge(crate::history::openapi());
    doc
}

/// A schema that takes the one value `value` (a string or a boolean).
pub(crate) fn constant(value: Value) -> utoipa::openapi::schema::Object {
    use utoipa::openapi::schema::{ObjectBuilder, Type};
    let t = if value.is_boolean() {
        Type::Boolean
    } else {
        Type::String
    };
    ObjectBuilder::new()
        .schema_type(t)
        .enum_values(Some([value]))
        .build()
}

/// `filter_types` in a request: `null`, or at most 64 public event types.
pub(crate) fn filter_types_schema() -> utoipa::openapi::schema::Array {
    use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, SchemaType, Type};
    let item = ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(catalog::PUBLIC.iter().map(|(t, _)| *t)));
    ArrayBuilder::new()
        .schema_type(SchemaType::from_iter([Type::Array, Type::Null]))
        .items(item)
        .max_items(Some(64))
        .build()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// Every route `crate::configure` mounts, by hand.
    const ROUTES: &[(&str, &str)] = &[
        ("get", "/v1/webhooks/event_types"),
        ("get", "/v1/webhooks/endpoints"),
        ("post", "/v1/webhooks/endpoints"),
        ("get", "/v1/webhooks/endpoints/{id}"),
        ("patch", "/v1/webhooks/endpoints/{id}"),
        ("delete", "/v1/webhooks/endpoints/{id}"),
        ("get", "/v1/webhooks/endpoints/{id}/secret"),
        ("post", "/v1/webhooks/endpoints/{id}/rotate_secret"),
        ("post", "/v1/webhooks/endpoints/{id}/enable"),
        ("get", "/v1/webhooks/endpoints/{id}/messages"),
        (
            "get",
            "/v1/webhooks/endpoints/{id}/messages/{message_id}/attempts",
        ),
        (
            "post",
            "/v1/webhooks/endpoints/{id}/messages/{message_id}/resend",
        ),
        ("post", "/v1/webhooks/endpoints/{id}/replay"),
    ];

    fn document() -> Value {
        serde_json::to_value(openapi()).unwrap()
    }

    #[test]
    fn every_route_is_described_and_nothing_else() {
        let doc = document();
        let mut found = BTreeSet::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                if op.get("responses").is_none() {
                    continue; // parameters shared by the path's operations
                }
                found.insert((method.clone(), path.clone()));
                assert_eq!(op["tags"], serde_json::json!([TAG]), "{method} {path}");
                assert_eq!(
                    op["security"],
                    serde_json::json!([{ "secret_key": [] }]),
                    "{method} {path}"
                );
            }
        }
        let expected: BTreeSet<_> = ROUTES
            .iter()
            .map(|(m, p)| (m.to_string(), p.to_string()))
            .collect();
        assert_eq!(found, expected);
    }

    #[test]
    fn every_referenced_schema_is_registered() {
        let doc = document();
        let schemas = doc["components"]["schemas"].as_object().unwrap();
        let text = doc.to_string();
        for part in text.split("\"#/components/schemas/").skip(1) {
            let name = part.split('"').next().unwrap();
            assert!(
                schemas.contains_key(name) || matches!(name, "Error" | "ErrorItem"),
                "{name} is referenced but not registered"
            );
        }
    }

    #[test]
    fn the_idempotent_posts_take_the_key() {
        let doc = document();
        for (method, path) in ROUTES.iter().filter(|(m, _)| *m == "post") {
            let params = doc["paths"][path][method]["parameters"].as_array().unwrap();
            assert!(
                params
                    .iter()
                    .any(|p| p["name"] == "Idempotency-Key" && p["in"] == "header"),
                "{method} {path}"
            );
        }
    }

    #[test]
    fn filter_types_lists_the_catalog() {
        let doc = document();
        let schema = &doc["components"]["schemas"]["CreateWebhookEndpointRequest"]["properties"]["filter_types"];
        assert_eq!(
            schema["items"]["enum"].as_array().unwrap().len(),
            catalog::PUBLIC.len()
        );
        assert_eq!(schema["maxItems"], 64);
    }
}
