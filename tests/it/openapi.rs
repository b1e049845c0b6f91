//! The published contract: both OpenAPI documents are served as committed
//! under `docs/openapi/`, `gatehouse openapi --check` catches drift, and
//! the refusals the layers give are in the shape the documents say.

use crate::common;

use std::process::Command;

use crate::common::{BIN, Gatehouse, Mode};
use serde_json::Value;

const DOCS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/openapi");

fn committed(file: &str) -> String {
    std::fs::read_to_string(format!("{DOCS}/{file}")).unwrap()
}

#[tokio::test]
async fn the_documents_served_are_the_ones_committed() {
    let g = Gatehouse::start(Mode::Embedded).await;
    for (path, file) in [
        ("/v1/openapi.json", "backend.json"),
        ("/admin/v1/openapi.json", "admin.json"),
    ] {
        let res = g.client.get(g.url(path)).send().await.unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(
            res.headers()["content-type"].to_str().unwrap(),
            "application/json"
        );
        assert_eq!(res.text().await.unwrap(), committed(file), "{path}");
    }
    let doc: Value = serde_json::from_str(&committed("backend.json")).unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    for path in [
        "/v1/users",
        "/v1/oauth_applications/{id}",
        "/i/{instance_id}/oauth/token",
        "/i/{instance_id}/oauth/register",
        "/oauth_applications/access_tokens/verify",
    ] {
        assert!(doc["paths"][path].is_object(), "{path} is not documented");
    }
}

#[test]
fn openapi_check_fails_on_a_stale_document() {
    let ok = Command::new(BIN)
        .args(["openapi", "--check", "--dir", DOCS])
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "the committed documents differ from the code: {}",
        String::from_utf8_lossy(&ok.stderr)
    );

    let dir = std::env::temp_dir().join(common::unique("openapi"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("admin.json"), committed("admin.json")).unwrap();
    let stale = committed("backend.json").replace("\"3.1.0\"", "\"3.0.3\"");
    std::fs::write(dir.join("backend.json"), stale).unwrap();
    let out = Command::new(BIN)
        .args(["openapi", "--check", "--dir"])
        .arg(&dir)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("backend.json") && !err.contains("admin.json"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A NUL in the URL is refused before routing, in the RFC 6749 shape on
/// the OAuth endpoints and in the one error shape elsewhere.
#[tokio::test]
async fn a_nul_in_the_url_is_refused_in_the_documented_shape() {
    let g = Gatehouse::start(Mode::Embedded).await;
    let t = g.tenant().await;
    let res = g
        .client
        .get(g.url(&format!("/i/{}/oauth/register/a%00b", t.dev.id)))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"], "invalid_request", "{body}");
    assert!(body["error_description"].as_str().unwrap().contains("NUL"));

    let res = g
        .client
        .get(g.url("/v1/users/a%00b"))
        .bearer_auth(&t.dev.key)
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    let body: Value = res.json().await.unwrap();
    common::assert_error_shape(status, &body);
    assert_eq!(
        (status, body["errors"][0]["code"].as_str()),
        (400, Some("malformed_request"))
    );
}
