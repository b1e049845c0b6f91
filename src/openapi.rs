//! The published OpenAPI documents, assembled from each service's
//! `#[utoipa::path]` handlers and request/response types: one for the
//! Backend API, the OAuth endpoints, registration and the hosted pages
//! (`/v1/openapi.json`), one for the platform admin API and the operational
//! endpoints (`/admin/v1/openapi.json`). The same bytes are committed under
//! `docs/openapi/`; `gatehouse openapi --check` fails when they differ.

use std::collections::BTreeSet;
use std::path::Path;

use actix_web::{HttpResponse, web};
use anyhow::Context;
use serde_json::Value;
use utoipa::OpenApi;

/// The two documents, as served and committed.
pub struct Documents {
    pub backend: String,
    pub admin: String,
}

/// File names under `docs/openapi/`.
pub const BACKEND_FILE: &str = "backend.json";
pub const ADMIN_FILE: &str = "admin.json";

#[derive(OpenApi)]
#[openapi(paths(backend_document, admin_document))]
struct Served;

#[utoipa::path(
    get,
    path = "/v1/openapi.json",
    tag = "operations",
    operation_id = "backend_openapi_document",
    responses((status = 200, description = "This document.", content_type = "application/json", body = serde_json::Value))
)]
async fn backend_document(docs: web::Data<Documents>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(docs.backend.clone())
}

#[utoipa::path(
    get,
    path = "/admin/v1/openapi.json",
    tag = "operations",
    operation_id = "admin_openapi_document",
    responses((status = 200, description = "This document.", content_type = "application/json", body = serde_json::Value))
)]
async fn admin_document(docs: web::Data<Documents>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(docs.admin.clone())
}

/// Mounts both documents (from the app's `Data<Documents>`); before the
/// services' scopes, which would take the paths.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/v1/openapi.json", web::get().to(backend_document))
        .route("/admin/v1/openapi.json", web::get().to(admin_document));
}

/// Every part, merged and finished.
fn whole() -> utoipa::openapi::OpenApi {
    let mut doc = utoipa::openapi::OpenApiBuilder::new()
        .info(
            utoipa::openapi::InfoBuilder::new()
                .title("Gatehouse")
                .version(env!("CARGO_PKG_VERSION"))
                .license(Some(utoipa::openapi::License::new("Apache-2.0")))
                .build(),
        )
        .build();
    for part in [
        gatehouse_authz::openapi(),
        gatehouse_tokens::openapi(),
        gatehouse_webhooks::openapi(),
        gatehouse_platform::tenancy::admin_api::openapi(),
        gatehouse_platform::http::ops_openapi(),
        Served::openapi(),
    ] {
        doc.merge(part);
    }
    gatehouse_platform::openapi::finish(&mut doc);
    doc
}

/// Whether a path belongs to the admin document.
fn is_admin(path: &str) -> bool {
    path.starts_with("/admin/") || matches!(path, "/healthz" | "/readyz" | "/metrics")
}

/// The documents, pretty-printed with a final newline.
pub fn documents() -> Documents {
    let whole = serde_json::to_value(whole()).unwrap_or(Value::Null);
    let render = |admin: bool| {
        let mut doc = whole.clone();
        if let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) {
            paths.retain(|p, _| is_admin(p) == admin);
        }
        prune(&mut doc);
        let mut text = serde_json::to_string_pretty(&doc).unwrap_or_default();
        text.push('\n');
        text
    };
    Documents {
        backend: render(false),
        admin: render(true),
    }
}

/// Drops the component schemas and security schemes no path uses, so each
/// document carries only its own.
fn prune(doc: &mut Value) {
    let mut used = BTreeSet::new();
    let mut schemes = BTreeSet::new();
    let mut pending = vec![doc.get("paths").cloned().unwrap_or(Value::Null)];
    let schemas = doc
        .pointer("/components/schemas")
        .cloned()
        .unwrap_or(Value::Null);
    while let Some(v) = pending.pop() {
        match v {
            Value::Object(map) => {
                for (k, child) in map {
                    if k == "$ref"
                        && let Some(name) = child
                            .as_str()
                            .and_then(|r| r.strip_prefix("#/components/schemas/"))
                        && used.insert(name.to_owned())
                    {
                        pending.push(schemas.get(name).cloned().unwrap_or(Value::Null));
                    }
                    if k == "security"
                        && let Some(list) = child.as_array()
                    {
                        for req in list {
                            if let Some(o) = req.as_object() {
                                schemes.extend(o.keys().cloned());
                            }
                        }
                    }
                    pending.push(child);
                }
            }
            Value::Array(list) => pending.extend(list),
            _ => {}
        }
    }
    if let Some(map) = doc
        .pointer_mut("/components/schemas")
        .and_then(Value::as_object_mut)
    {
        map.retain(|name, _| used.contains(name));
    }
    if let Some(map) = doc
        .pointer_mut("/components/securitySchemes")
        .and_then(Value::as_object_mut)
    {
        map.retain(|name, _| schemes.contains(name));
    }
}

/// `gatehouse openapi`: writes both documents into `dir`, or with `check`
/// fails naming each committed file that differs from what the code
/// generates.
pub fn run(dir: &Path, check: bool) -> anyhow::Result<()> {
    let docs = documents();
    let mut stale = Vec::new();
    for (file, text) in [(BACKEND_FILE, &docs.backend), (ADMIN_FILE, &docs.admin)] {
        let path = dir.join(file);
        if check {
            let committed = std::fs::read_to_string(&path).unwrap_or_default();
            if committed != *text {
                stale.push(path.display().to_string());
            }
        } else {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            std::fs::write(&path, text)
                .with_context(|| format!("cannot write {}", path.display()))?;
            println!("wrote {}", path.display());
        }
    }
    if !stale.is_empty() {
        anyhow::bail!(
            "the committed OpenAPI document differs from the code: {} (run `gatehouse openapi` and commit the result)",
            stale.join(", ")
        );
    }
    if check {
        println!("OpenAPI documents in {} match the code", dir.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_document_keeps_its_own_paths_and_the_schemas_they_use() {
        let docs = documents();
        let backend: Value = serde_json::from_str(&docs.backend).unwrap();
        let admin: Value = serde_json::from_str(&docs.admin).unwrap();
        assert_eq!(backend["openapi"], "3.1.0");
        let paths = |d: &Value| -> Vec<String> {
            d["paths"].as_object().unwrap().keys().cloned().collect()
        };
        assert!(
            paths(&admin).iter().all(|p| is_admin(p)),
            "{:?}",
            paths(&admin)
        );
        assert!(paths(&backend).iter().all(|p| !is_admin(p)));
        assert!(paths(&admin).contains(&"/admin/v1/tenants".to_owned()));
        assert!(admin["components"]["schemas"]["Tenant"].is_object());
        assert!(backend["components"]["schemas"].get("Tenant").is_none());
        assert!(admin["components"]["securitySchemes"]["admin_token"].is_object());
    }
}
