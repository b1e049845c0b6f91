//! Dynamic client registration (RFC 7591) and management (RFC 7592), in both
//! shapes: off by default, validated metadata with the RFC error codes,
//! consent forced on, a registration access token, per-IP throttling.

use crate::common;

use crate::common::{Gatehouse, Mode};
use reqwest::Method;
use serde_json::{Value, json};

async fn post(g: &Gatehouse, path: &str, body: &str) -> (u16, Value, reqwest::header::HeaderMap) {
    let res = g
        .client
        .post(g.url(path))
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    (status, res.json().await.unwrap_or(Value::Null), headers)
}

fn assert_rfc_error(status: u16, body: &Value, headers: &reqwest::header::HeaderMap, code: &str) {
    assert_eq!(body["error"], code, "{status}: {body}");
    assert!(body["error_description"].is_string(), "{body}");
    assert_eq!(headers.get("cache-control").unwrap(), "no-store");
}

async fn registration_lifecycle(mode: Mode) {
    let g = Gatehouse::start(mode).await;
    let t = g.tenant().await;
    let register = format!("/i/{}/oauth/register", t.dev.id);
    let mcp_client = json!({
        "client_name": "Claude",
        "redirect_uris": ["http://127.0.0.1:33418/callback", "https://claude.ai/api/mcp/auth_callback"],
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        "token_endpoint_auth_method": "none",
        "scope": "openid email",
        "software_statement_ignored": "unknown metadata is ignored"
    })
    .to_string();

    // Off by default.
    let (s, e, h) = post(&g, &register, &mcp_client).await;
    assert_eq!(s, 403);
    assert_rfc_error(s, &e, &h, "access_denied");
    let (s, settings) = g
        .call(
            &t.dev.key,
            Method::GET,
            "/v1/instance/oauth_application_settings",
            None,
        )
        .await;
    assert_eq!(
        (s, settings["dynamic_oauth_client_registration"].clone()),
        (200, json!(false))
    );
    assert_eq!(
        settings["client_id_metadata_documents"], true,
        "on by default"
    );
    let (s, settings) = g
        .call(
            &t.dev.key,
            Method::PATCH,
            "/v1/instance/oauth_application_settings",
            Some(json!({ "dynamic_oauth_client_registration": true })),
        )
        .await;
    assert_eq!(
        (s, settings["dynamic_oauth_client_registration"].clone()),
        (200, json!(true))
    );
    assert_eq!(
        settings["client_id_metadata_documents"], true,
        "left as it was"
    );
    for bad in [
        json!({ "dynamic_oauth_client_registration": "yes" }),
        json!({ "client_id_metadata_documents": "no" }),
        json!({ "surprise": true }),
    ] {
        let (s, e) = g
            .call(
                &t.dev.key,
                Method::PATCH,
                "/v1/instance/oauth_application_settings",
                Some(bad.clone()),
            )
            .await;
        assert_eq!(s, 422, "{bad}: {e}");
        common::assert_error_shape(s, &e);
    }
    // Switching one instance on leaves the other off.
    let (s, _, _) = post(&g, &format!("/i/{}/oauth/register", t.prod.id), &mcp_client).await;
    assert_eq!(s, 403);

    // A public client, as MCP clients register themselves.
    let (s, reg, h) = post(&g, &register, &mcp_client).await;
    assert_eq!(s, 201, "{reg}");
    assert_eq!(h.get("cache-control").unwrap(), "no-store");
    let client_id = reg["client_id"].as_str().unwrap().to_owned();
    let token = reg["registration_access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        reg.get("client_secret").is_none(),
        "public clients get no secret"
    );
    assert_eq!(reg["token_endpoint_auth_method"], "none");
    assert_eq!(reg["scope"], "openid email");
    assert_eq!(reg["response_types"], json!(["code"]));
    assert_eq!(
        reg["registration_client_uri"],
        g.url(&format!("{register}/{client_id}")).as_str()
    );
    assert!(reg["client_id_issued_at"].as_i64().unwrap() > 1_600_000_000);

    // It is an OAuth application of the instance, consent forced on.
    let (_, apps) = g
        .call(&t.dev.key, Method::GET, "/v1/oauth_applications", None)
        .await;
    let app = apps["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["client_id"] == client_id.as_str())
        .unwrap()
        .clone();
    assert_eq!(app["dynamically_registered"], true);
    assert_eq!(app["consent_screen_enabled"], true);
    assert_eq!(app["public"], true);
    let (s, e) = g
        .call(
            &t.dev.key,
            Method::PATCH,
            &format!("/v1/oauth_applications/{}", app["id"].as_str().unwrap()),
            Some(json!({ "consent_screen_enabled": false })),
        )
        .await;
    assert_eq!(s, 400, "{e}");
    assert_eq!(e["errors"][0]["code"], "consent_required");

    // A confidential client gets a secret that does not expire.
    let (s, conf, _) = post(
        &g,
        &register,
        &json!({ "redirect_uris": ["https://c.example/cb"] }).to_string(),
    )
    .await;
    assert_eq!(s, 201, "{conf}");
    assert!(conf["client_secret"].as_str().unwrap().len() >= 40);
    assert_eq!(conf["client_secret_expires_at"], 0);
    assert_eq!(conf["token_endpoint_auth_method"], "client_secret_basic");

    // Bad metadata: the RFC 7591 §3.2.2 codes.
    for (body, code) in [
        (json!({ "redirect_uris": ["http://evil.example/cb"] }).to_string(), "invalid_redirect_uri"),
        (json!({ "redirect_uris": ["https://c.example/cb#frag"] }).to_string(), "invalid_redirect_uri"),
        (json!({ "client_name": "no uris" }).to_string(), "invalid_redirect_uri"),
        (json!({ "redirect_uris": ["https://c.example/cb"], "token_endpoint_auth_method": "tls_client_auth" }).to_string(), "invalid_client_metadata"),
        (json!({ "redirect_uris": ["https://c.example/cb"], "grant_types": ["password"] }).to_string(), "invalid_client_metadata"),
        (json!({ "redirect_uris": ["https://c.example/cb"], "scope": "root" }).to_string(), "invalid_client_metadata"),
        (json!({ "redirect_uris": "https://c.example/cb" }).to_string(), "invalid_client_metadata"),
        ("{not json".to_owned(), "invalid_client_metadata"),
    ] {
        let (s, e, h) = post(&g, &register, &body).await;
        assert_eq!(s, 400, "{body}: {e}");
        assert_rfc_error(s, &e, &h, code);
    }

    // RFC 7592 management with the registration access token.
    let manage = format!("{register}/{client_id}");
    let (s, read) = g.call(&token, Method::GET, &manage, None).await;
    assert_eq!(s, 200, "{read}");
    assert_eq!(read["client_name"], "Claude");
    assert!(read.get("registration_access_token").is_none());
    for bad in [
        "wrong-token",
        conf["registration_access_token"].as_str().unwrap(),
    ] {
        let (s, e) = g.call(bad, Method::GET, &manage, None).await;
        assert_eq!(s, 401, "{e}");
        assert_eq!(e["error"], "invalid_token");
    }
    // Another instance's endpoint does not know the client.
    g.enable_registration(&t.prod.key).await;
    let (s, _) = g
        .call(
            &token,
            Method::GET,
            &format!("/i/{}/oauth/register/{client_id}", t.prod.id),
            None,
        )
        .await;
    assert_eq!(s, 401);

    let (s, upd) = g
        .call(&token, Method::PUT, &manage,
              Some(json!({ "client_id": client_id, "client_name": "Claude Desktop",
                           "redirect_uris": ["http://127.0.0.1:40000/cb"], "token_endpoint_auth_method": "none" })))
        .await;
    assert_eq!(s, 200, "{upd}");
    assert_eq!(upd["client_name"], "Claude Desktop");
    assert_eq!(upd["redirect_uris"], json!(["http://127.0.0.1:40000/cb"]));
    let (s, e) = g
        .call(
            &token,
            Method::PUT,
            &manage,
            Some(json!({ "client_name": "no id", "redirect_uris": ["https://c.example/cb"] })),
        )
        .await;
    assert_eq!(
        (s, e["error"].clone()),
        (400, json!("invalid_client_metadata"))
    );
    let (s, e) = g
        .call(&token, Method::PUT, &manage,
              Some(json!({ "client_id": client_id, "redirect_uris": ["https://c.example/cb"], "token_endpoint_auth_method": "client_secret_post" })))
        .await;
    assert_eq!(
        (s, e["error"].clone()),
        (400, json!("invalid_client_metadata")),
        "cannot become confidential"
    );

    let res = g
        .client
        .delete(g.url(&manage))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    let (s, _) = g.call(&token, Method::GET, &manage, None).await;
    assert_eq!(s, 401, "deleted clients are unknown");
    let (_, apps) = g
        .call(&t.dev.key, Method::GET, "/v1/oauth_applications", None)
        .await;
    assert!(!apps.to_string().contains(&client_id));

    // Per-IP throttling.
    let mut throttled = None;
    for i in 0..40 {
        let (s, e, h) = post(&g, &register, &json!({ "client_name": format!("burst {i}"), "redirect_uris": ["https://b.example/cb"] }).to_string()).await;
        if s == 429 {
            throttled = Some((e, h));
            break;
        }
        assert_eq!(s, 201, "{e}");
    }
    let (e, h) = throttled.expect("registrations from one address are throttled");
    assert_eq!(e["error"], "too_many_requests");
    assert!(h.get("retry-after").is_some());
}

/// POSTs a token request form with HTTP Basic client authentication.
async fn token_basic(
    g: &Gatehouse,
    instance: &str,
    id: &str,
    secret: &str,
    form: &str,
) -> (u16, Value, reqwest::header::HeaderMap) {
    let res = g
        .client
        .post(g.url(&format!("/i/{instance}/oauth/token")))
        .basic_auth(id, Some(secret))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form.to_owned())
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    (status, res.json().await.unwrap_or(Value::Null), headers)
}

/// What open registration may get: no `client_credentials` client and no
/// custom scope unless the instance allows them, and tokens only for the
/// resources the instance declared (RFC 8707), by the `/authorize` rules.
async fn open_registration_policy(mode: Mode) {
    let g = Gatehouse::start(mode).await;
    let t = g.tenant().await;
    let (key, instance) = (t.dev.key.as_str(), t.dev.id.as_str());
    g.enable_registration(key).await;
    g.define_scope(key, "files:read", "Read your files").await;
    let register = format!("/i/{instance}/oauth/register");
    let machine = json!({ "client_name": "bot", "grant_types": ["client_credentials"],
                          "scope": "files:read" })
    .to_string();
    let (s, e, h) = post(&g, &register, &machine).await;
    assert_eq!(s, 400, "{e}");
    assert_rfc_error(s, &e, &h, "invalid_client_metadata");
    let custom = json!({ "redirect_uris": ["https://c.example/cb"], "scope": "openid files:read" })
        .to_string();
    let (s, e, h) = post(&g, &register, &custom).await;
    assert_eq!(s, 400, "{e}");
    assert_rfc_error(s, &e, &h, "invalid_client_metadata");

    // Browser-based clients may register: CORS on the endpoint.
    let res = g
        .client
        .request(Method::OPTIONS, g.url(&register))
        .header("origin", "https://inspector.example")
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "content-type")
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success(), "{}", res.status());
    assert_eq!(res.headers()["access-control-allow-origin"], "*");

    // The instance opts in, and declares its one resource.
    let settings = "/v1/instance/oauth_application_settings";
    for (bad, param) in [
        (
            json!({ "resource_indicators": ["a:b"] }),
            "resource_indicators[0]",
        ),
        (
            json!({ "resource_indicators": ["https://ok.example/", "https://x.example/#f"] }),
            "resource_indicators[1]",
        ),
        (
            json!({ "resource_indicators": "https://ok.example/" }),
            "resource_indicators",
        ),
        (
            json!({ "registration_client_credentials": "yes" }),
            "registration_client_credentials",
        ),
    ] {
        let (s, e) = g
            .call(key, Method::PATCH, settings, Some(bad.clone()))
            .await;
        assert_eq!(s, 422, "{bad}: {e}");
        assert_eq!(e["errors"][0]["meta"]["param_name"], param, "{e}");
    }
    let (s, b) = g
        .call(
            key,
            Method::PATCH,
            settings,
            Some(json!({ "registration_client_credentials": true,
                           "registration_custom_scopes": true,
                           "resource_indicators": ["https://mcp.example/mcp"] })),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["resource_indicators"], json!(["https://mcp.example/mcp"]));
    let (s, bot, _) = post(&g, &register, &machine).await;
    assert_eq!(s, 201, "{bot}");
    assert_eq!(bot["scope"], "files:read");
    let (id, secret) = (
        bot["client_id"].as_str().unwrap(),
        bot["client_secret"].as_str().unwrap(),
    );

    let good = "grant_type=client_credentials&resource=https%3A%2F%2Fmcp.example%2Fmcp";
    // The token service learns of the client and the resources through the
    // bus (two streams, so in either order): wait for both.
    let other = "grant_type=client_credentials&resource=https%3A%2F%2Fother.example%2F";
    let mut last = (0, Value::Null, Value::Null);
    for _ in 0..100 {
        let (s, b, _) = token_basic(&g, instance, id, secret, good).await;
        let (_, refused, _) = token_basic(&g, instance, id, secret, other).await;
        last = (s, b, refused);
        if last.0 == 200 && last.2["error"] == "invalid_target" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(last.0, 200, "{}", last.1);
    assert_eq!(last.2["error"], "invalid_target", "{}", last.2);
    for form in [
        "grant_type=client_credentials&resource=https%3A%2F%2Fother.example%2F",
        "grant_type=client_credentials&resource=a%3Ab",
        "grant_type=client_credentials&resource=mcp.example",
    ] {
        let (s, e, h) = token_basic(&g, instance, id, secret, form).await;
        assert_eq!(s, 400, "{form}: {e}");
        assert_rfc_error(s, &e, &h, "invalid_target");
    }
    // A NUL never reaches the database.
    let (s, e, h) = token_basic(
        &g,
        instance,
        id,
        secret,
        "grant_type=client_credentials&scope=%00",
    )
    .await;
    assert_eq!(s, 400, "{e}");
    assert_rfc_error(s, &e, &h, "invalid_request");
    // A client that failed Basic authentication is told the Basic scheme.
    let (s, e, h) = token_basic(&g, instance, id, "wrong", good).await;
    assert_eq!(s, 401, "{e}");
    assert_rfc_error(s, &e, &h, "invalid_client");
    assert!(
        h["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Basic "),
        "{h:?}"
    );
}

/// A self-registered client's consent screen says where the code goes,
/// warns of a loopback redirect, says nobody reviewed the client, and drops
/// a logo and homepage borrowed from another host; names with bidi
/// overrides are refused; a loopback IP redirect URI takes any port.
async fn self_registered_consent(mode: Mode) {
    use crate::common::browser::{Browser, location};
    let g = Gatehouse::start(mode).await;
    let t = g.tenant().await;
    let instance = t.dev.id.as_str();
    g.enable_registration(&t.dev.key).await;
    let register = format!("/i/{instance}/oauth/register");
    let spoof = json!({ "client_name": "evil\u{202E}evirD elgooG",
                        "redirect_uris": ["http://127.0.0.1/callback"],
                        "token_endpoint_auth_method": "none" })
    .to_string();
    let (s, e, h) = post(&g, &register, &spoof).await;
    assert_eq!(s, 400, "{e}");
    assert_rfc_error(s, &e, &h, "invalid_client_metadata");
    let phish = json!({ "client_name": "Google Drive",
                        "logo_uri": "https://www.google.com/favicon.ico",
                        "client_uri": "https://drive.google.com",
                        "redirect_uris": ["http://127.0.0.1/callback"],
                        "token_endpoint_auth_method": "none", "scope": "openid email" })
    .to_string();
    let (s, reg, _) = post(&g, &register, &phish).await;
    assert_eq!(s, 201, "{reg}");
    let client_id = reg["client_id"].as_str().unwrap();

    let q: String = form_urlencoded::Serializer::new(String::new())
        .extend_pairs([
            ("response_type", "code"),
            ("client_id", client_id),
            // Registered without a port: RFC 8252 §7.3, any port.
            ("redirect_uri", "http://127.0.0.1:53682/callback"),
            ("scope", "openid email"),
            (
                "code_challenge",
                "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
            ),
            ("code_challenge_method", "S256"),
        ])
        .finish();
    let authorize = format!("/oauth/authorize?{q}");
    let mut b = Browser::new(&g, instance);
    let (s, h, _) = b.get(&authorize).await;
    assert_eq!(s, 302, "to sign-in");
    let (_, back) = b.sign_up_from(&location(&h)).await;
    let (s, _, html) = b.get(&back).await;
    assert_eq!(s, 200, "{html}");
    assert!(html.contains("Google Drive"), "{html}");
    assert!(html.contains("id=\"redirect-host\""), "{html}");
    assert!(html.contains("<strong>127.0.0.1</strong>"), "{html}");
    assert!(html.contains("id=\"loopback-warning\""), "{html}");
    assert!(html.contains("id=\"unreviewed\""), "{html}");
    assert!(
        !html.contains("google.com"),
        "borrowed logo and homepage are dropped: {html}"
    );
    // Another path on the loopback host is still not the registered URI.
    let other = authorize.replace("%2Fcallback", "%2Felsewhere");
    let (s, h, html) = b.get(&other).await;
    assert_eq!(s, 400, "{html}");
    assert!(h.get("location").is_none());
}

#[tokio::test]
async fn self_registered_consent_embedded() {
    self_registered_consent(Mode::Embedded).await;
}

in_both_shapes!(open_registration_policy: open_registration_policy_embedded, open_registration_policy_production_shape);
in_both_shapes!(registration_lifecycle: registration_embedded, registration_production_shape);
