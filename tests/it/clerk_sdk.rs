//! The official `@clerk/backend` SDK, unmodified, against a running Gatehouse
//! in both shapes (the test command installs the npm package).

use crate::common;

use crate::common::browser::{Browser, location, param};
use crate::common::{Gatehouse, Mode};
use base64::Engine;
use reqwest::Method;
use serde_json::{Value, json};

const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

async fn sdk_drives_the_users_api(mode: Mode) {
    let g = Gatehouse::start(mode).await;
    let t = g.tenant().await;
    for script in ["users.mjs", "oauth_applications.mjs", "access_tokens.mjs"] {
        common::run_node(
            "clerk-sdk",
            script,
            &[
                ("GATEHOUSE_URL", g.base.as_str()),
                ("GATEHOUSE_SECRET_KEY", t.dev.key.as_str()),
            ],
        );
    }
}

/// A client_credentials token of a new confidential application of `key`'s
/// instance issuing `format` tokens, once the token service knows the
/// client; (client id, token).
async fn machine_token(g: &Gatehouse, key: &str, instance: &str, format: &str) -> (String, String) {
    let app = g
        .create_app(
            key,
            json!({ "name": "Worker", "redirect_uris": ["https://w.example/cb"], "scopes": "openid",
                    "access_token_format": format }),
        )
        .await;
    let (id, secret) = (
        app["client_id"].as_str().unwrap().to_owned(),
        app["client_secret"].as_str().unwrap().to_owned(),
    );
    for _ in 0..200 {
        let res = g
            .client
            .post(g.url(&format!("/i/{instance}/oauth/token")))
            .basic_auth(&id, Some(&secret))
            .form(&[("grant_type", "client_credentials")])
            .send()
            .await
            .unwrap();
        if res.status() == 200 {
            let body: Value = res.json().await.unwrap();
            return (id, body["access_token"].as_str().unwrap().to_owned());
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("the token service never learned of the client");
}

/// `authenticateRequest(…, { acceptsToken: 'oauth_token' })` and
/// `@clerk/express` `getAuth` against a default instance (RS256 JWTs,
/// verified by the SDK with the instance's JWKS, no call per token), and
/// an application's opaque tokens, which the SDK verifies through the
/// verify endpoint, refused once revoked.
async fn sdk_resource_server(mode: Mode) {
    let g = Gatehouse::start(mode).await;
    let t = g.tenant().await;
    let (key, ins) = (t.dev.key.as_str(), t.dev.id.as_str());
    let (_, inst) = g
        .admin(Method::GET, &format!("/admin/v1/instances/{ins}"), None)
        .await;
    let publishable = inst["publishable_key"].as_str().unwrap().to_owned();

    // A user's token, from the code flow with PKCE.
    let redirect = "https://app.example/cb";
    let app = g
        .create_app(
            key,
            json!({ "name": "MCP client", "public": true, "redirect_uris": [redirect],
                    "scopes": "openid email", "consent_screen_enabled": false }),
        )
        .await;
    let client_id = app["client_id"].as_str().unwrap();
    let q: String = form_urlencoded::Serializer::new(String::new())
        .extend_pairs([
            ("response_type", "code"),
            ("client_id", client_id),
            ("redirect_uri", redirect),
            ("scope", "openid email"),
            ("code_challenge", CHALLENGE),
            ("code_challenge_method", "S256"),
        ])
        .finish();
    let authorize = format!("/oauth/authorize?{q}");
    let mut b = Browser::new(&g, ins);
    let (_, h, _) = b.get(&authorize).await;
    let (_, back) = b.sign_up_from(&location(&h)).await;
    let (_, h, _) = b.get(&back).await;
    let code = param(&location(&h), "code").unwrap();
    let mut tok = Value::Null;
    for _ in 0..200 {
        let res = g
            .client
            .post(g.url(&format!("/i/{ins}/oauth/token")))
            .form(&[
                ("grant_type", "authorization_code"),
                ("code", code.as_str()),
                ("redirect_uri", redirect),
                ("client_id", client_id),
                ("code_verifier", VERIFIER),
            ])
            .send()
            .await
            .unwrap();
        let status = res.status();
        tok = res.json().await.unwrap();
        if status != 401 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let user_token = tok["access_token"].as_str().unwrap().to_owned();
    let claims: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(user_token.split('.').nth(1).unwrap())
            .unwrap(),
    )
    .unwrap();
    let user_id = claims["sub"].as_str().unwrap().to_owned();

    let (machine_client, machine) = machine_token(&g, key, ins, "jwt").await;
    let (_, foreign) = machine_token(&g, &t.prod.key, &t.prod.id, "jwt").await;
    let (opaque_client, opaque) = machine_token(&g, key, ins, "opaque").await;
    assert!(opaque.starts_with("oat_"), "{opaque}");
    common::run_node(
        "clerk-sdk",
        "resource_server.mjs",
        &[
            ("GATEHOUSE_URL", g.base.as_str()),
            ("GATEHOUSE_SECRET_KEY", key),
            ("GATEHOUSE_PUBLISHABLE_KEY", publishable.as_str()),
            ("USER_TOKEN", user_token.as_str()),
            ("USER_ID", user_id.as_str()),
            ("MACHINE_TOKEN", machine.as_str()),
            ("CLIENT_ID", machine_client.as_str()),
            ("FOREIGN_TOKEN", foreign.as_str()),
            ("OPAQUE_TOKEN", opaque.as_str()),
            ("OPAQUE_CLIENT_ID", opaque_client.as_str()),
        ],
    );
}

in_both_shapes!(sdk_resource_server: resource_server_embedded, resource_server_production_shape);

#[tokio::test]
async fn clerk_sdk_against_embedded() {
    sdk_drives_the_users_api(Mode::Embedded).await;
}

#[tokio::test]
async fn clerk_sdk_against_production_shape() {
    sdk_drives_the_users_api(Mode::Production).await;
}
