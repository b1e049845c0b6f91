//! RFC 8414 metadata and OpenID discovery: every URL a client derives from
//! an issuer, `issuer` byte for byte, registration endpoint only when on,
//! custom scopes per instance, open CORS with preflight.

use crate::common;

use crate::common::{Gatehouse, Mode};
use reqwest::Method;
use serde_json::{Value, json};

async fn fetch(g: &Gatehouse, url: &str) -> (u16, reqwest::header::HeaderMap, Value) {
    let res = g
        .client
        .get(url)
        .header("origin", "https://client.example")
        .send()
        .await
        .unwrap();
    let (s, h) = (res.status().as_u16(), res.headers().clone());
    (s, h, res.json().await.unwrap_or(Value::Null))
}

fn urls(g: &Gatehouse, ins: &str) -> Vec<String> {
    vec![
        g.url(&format!("/.well-known/oauth-authorization-server/i/{ins}")),
        g.url(&format!("/.well-known/openid-configuration/i/{ins}")),
        g.url(&format!("/i/{ins}/.well-known/openid-configuration")),
        g.url(&format!("/i/{ins}/.well-known/oauth-authorization-server")),
    ]
}

async fn metadata(mode: Mode) {
    let g = Gatehouse::start(mode).await;
    let t = g.tenant().await;
    let ins = t.dev.id.as_str();
    let issuer = g.url(&format!("/i/{ins}"));
    g.call(
        &t.dev.key,
        Method::POST,
        "/v1/oauth_scopes",
        Some(json!({ "name": "notes:read", "description": "Read your notes" })),
    )
    .await;
    for url in urls(&g, ins) {
        let (s, h, m) = fetch(&g, &url).await;
        assert_eq!(s, 200, "{url}: {m}");
        assert_eq!(m["issuer"].as_str().unwrap(), issuer, "{url}");
        assert_eq!(h.get("access-control-allow-origin").unwrap(), "*", "{url}");
        assert!(h.get("access-control-allow-credentials").is_none());
        assert_eq!(
            m["authorization_endpoint"],
            format!("{issuer}/oauth/authorize")
        );
        assert_eq!(m["token_endpoint"], format!("{issuer}/oauth/token"));
        assert_eq!(m["jwks_uri"], format!("{issuer}/.well-known/jwks.json"));
        assert_eq!(m["code_challenge_methods_supported"], json!(["S256"]));
        assert_eq!(m["authorization_response_iss_parameter_supported"], true);
        assert_eq!(m["client_id_metadata_document_supported"], true);
        assert_eq!(m["response_types_supported"], json!(["code"]));
        assert!(
            m.get("registration_endpoint").is_none(),
            "registration is off"
        );
        let scopes = m["scopes_supported"].as_array().unwrap();
        assert!(scopes.contains(&json!("openid")) && scopes.contains(&json!("notes:read")));
    }
    // Preflight.
    let res = g
        .client
        .request(Method::OPTIONS, &urls(&g, ins)[0])
        .header("origin", "https://client.example")
        .header("access-control-request-method", "GET")
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success(), "{}", res.status());
    assert_eq!(
        res.headers().get("access-control-allow-origin").unwrap(),
        "*"
    );
    assert!(res.headers().get("access-control-allow-methods").is_some());

    // Registration on: the endpoint is published.
    g.enable_registration(&t.dev.key).await;
    let (_, _, m) = fetch(&g, &urls(&g, ins)[0]).await;
    assert_eq!(
        m["registration_endpoint"],
        format!("{issuer}/oauth/register")
    );

    // Another instance: its own issuer, not this one's scopes or settings.
    let (_, _, other) = fetch(&g, &urls(&g, &t.prod.id)[0]).await;
    assert_eq!(other["issuer"], g.url(&format!("/i/{}", t.prod.id)));
    assert!(
        !other["scopes_supported"]
            .as_array()
            .unwrap()
            .contains(&json!("notes:read"))
    );
    assert!(other.get("registration_endpoint").is_none());

    // Unknown issuer.
    let (s, _, e) = fetch(&g, &urls(&g, "ins_nope")[0]).await;
    assert_eq!(s, 404);
    common::assert_error_shape(s, &e);
}

#[tokio::test]
async fn metadata_embedded() {
    metadata(Mode::Embedded).await;
}

#[tokio::test]
async fn metadata_production_shape() {
    metadata(Mode::Production).await;
}
