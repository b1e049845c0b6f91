//! `/oauth/authorize` and the consent screen at the HTTP level, in both
//! shapes: every refusal branch (unknown client and redirect URI mismatch
//! never redirect), PKCE for public clients, sign-in and back, consent with
//! name, logo and custom scope descriptions, deny, remembered grants, silent
//! grants when consent is off, grants listed and revoked by the user and by
//! the Backend API, CSRF, framing headers, instance isolation.

use crate::common;

use crate::common::browser::{Browser, consent_fields, hidden, location, param, submit_consent};
use crate::common::{Gatehouse, Mode};
use reqwest::Method;
use serde_json::json;

const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
const REDIRECT: &str = "https://app.example/cb";
const RESOURCE: &str = "https://mcp.example/mcp";

fn authorize_path(pairs: &[(&str, &str)]) -> String {
    let q: String = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish();
    format!("/oauth/authorize?{q}")
}

async fn authorize_flow(mode: Mode) {
    let g = Gatehouse::start(mode).await;
    let t = g.tenant().await;
    let (key, ins) = (t.dev.key.as_str(), t.dev.id.as_str());
    let issuer = g.url(&format!("/i/{ins}"));
    g.define_scope(key, "files:read", "Read the files you keep in Acme")
        .await;
    let app = g
        .create_app(
            key,
            json!({ "name": "Acme Desktop", "public": true, "redirect_uris": [REDIRECT],
                    "scopes": "openid email files:read",
                    "client_image_url": "https://app.example/logo.png" }),
        )
        .await;
    let client_id = app["client_id"].as_str().unwrap().to_owned();
    let app_id = app["id"].as_str().unwrap().to_owned();
    let good = |scope: &'static str| -> Vec<(&'static str, String)> {
        vec![
            ("response_type", "code".into()),
            ("client_id", client_id.clone()),
            ("redirect_uri", REDIRECT.into()),
            ("scope", scope.into()),
            ("state", "st-1".into()),
            ("code_challenge", CHALLENGE.into()),
            ("code_challenge_method", "S256".into()),
            ("resource", RESOURCE.into()),
        ]
    };
    let path = |pairs: &[(&'static str, String)]| {
        let v: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (*k, v.as_str())).collect();
        authorize_path(&v)
    };
    let with = |scope: &'static str, change: &[(&'static str, Option<&'static str>)]| {
        let mut p = good(scope);
        for (k, v) in change {
            p.retain(|(n, _)| n != k);
            if let Some(v) = v {
                p.push((k, (*v).to_owned()));
            }
        }
        path(&p)
    };

    let mut b = Browser::new(&g, ins);

    // Untrusted client or redirect URI: an error page, never a redirect.
    for (change, want) in [
        (vec![("client_id", Some("nope"))], "Unknown application"),
        (vec![("client_id", None)], "does not say which application"),
        (
            vec![("redirect_uri", Some("https://evil.example/cb"))],
            "not registered",
        ),
        (
            vec![("redirect_uri", Some("https://app.example/cb/extra"))],
            "not registered",
        ),
    ] {
        let (s, h, html) = b.get(&with("openid", &change)).await;
        assert_eq!(s, 400, "{change:?}");
        assert!(h.get("location").is_none(), "{change:?}");
        assert!(html.contains(want), "{change:?}: {html}");
        assert_eq!(h.get("x-frame-options").unwrap(), "DENY");
    }

    // Trusted redirect URI: errors go back to the client with state and iss.
    for (change, want) in [
        (
            vec![("code_challenge", None), ("code_challenge_method", None)],
            "invalid_request",
        ),
        (
            vec![("code_challenge_method", Some("plain"))],
            "invalid_request",
        ),
        (vec![("code_challenge_method", None)], "invalid_request"),
        (vec![("code_challenge", Some("short"))], "invalid_request"),
        (vec![("scope", Some("openid admin"))], "invalid_scope"),
        (
            vec![("response_type", Some("token"))],
            "unsupported_response_type",
        ),
        (vec![("resource", Some("not a uri"))], "invalid_target"),
        (vec![("prompt", Some("none"))], "login_required"),
    ] {
        let (s, h, _) = b.get(&with("openid", &change)).await;
        assert_eq!(s, 302, "{change:?}");
        let loc = location(&h);
        assert!(loc.starts_with(REDIRECT), "{change:?}: {loc}");
        assert_eq!(
            param(&loc, "error").as_deref(),
            Some(want),
            "{change:?}: {loc}"
        );
        assert_eq!(param(&loc, "state").as_deref(), Some("st-1"));
        assert_eq!(param(&loc, "iss").as_deref(), Some(issuer.as_str()));
        assert!(param(&loc, "code").is_none());
    }

    // No session: to sign-in, then back to the very request.
    let first = with("openid files:read", &[]);
    let (s, h, _) = b.get(&first).await;
    assert_eq!(s, 302);
    let sign_in = location(&h);
    assert!(
        sign_in.starts_with(&format!("/i/{ins}/sign-in?")),
        "{sign_in}"
    );
    let back = param(&sign_in, "redirect_url").unwrap();
    assert!(back.starts_with(&format!("/i/{ins}/oauth/authorize?")));
    let (email, returned) = b.sign_up_from(&sign_in).await;
    assert_eq!(returned, back);

    // The consent screen: name, logo, scope descriptions, resource, no framing.
    let (s, h, html) = b.get(&back).await;
    assert_eq!(s, 200, "{html}");
    assert_eq!(h.get("x-frame-options").unwrap(), "DENY");
    let csp = h.get("content-security-policy").unwrap().to_str().unwrap();
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert!(html.contains("Acme Desktop"));
    assert!(
        html.contains("src=\"https://app.example/logo.png\"")
            || html.contains("src=\"https:&#x2f;&#x2f;app.example&#x2f;logo.png\""),
        "{html}"
    );
    assert!(html.contains("Read the files you keep in Acme"), "{html}");
    assert!(html.contains("Confirm who you are"));
    assert!(
        !html.contains("See your email address"),
        "only requested scopes"
    );
    assert!(html.contains("mcp.example"));
    assert!(html.contains(&email));

    // The form without its CSRF token is refused.
    let mut fields = consent_fields(&html);
    fields.retain(|(k, _)| k != "csrf_token");
    fields.push(("decision".into(), "accept".into()));
    let pairs: Vec<(&str, &str)> = fields
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let (s, h, _) = b.post("/oauth/authorize", &pairs).await;
    assert_eq!(s, 403);
    assert!(h.get("location").is_none());

    // Deny: access_denied with state and iss; nothing remembered.
    let (s, loc) = submit_consent(&mut b, &html, "deny").await;
    assert_eq!(s, 303);
    assert!(loc.starts_with(REDIRECT), "{loc}");
    assert_eq!(param(&loc, "error").as_deref(), Some("access_denied"));
    assert_eq!(param(&loc, "state").as_deref(), Some("st-1"));
    assert_eq!(param(&loc, "iss").as_deref(), Some(issuer.as_str()));
    let (s, _, html) = b.get(&back).await;
    assert_eq!(s, 200, "consent is asked again after a deny");

    // Accept: a code at the redirect URI.
    let (s, loc) = submit_consent(&mut b, &html, "accept").await;
    assert_eq!(s, 303);
    assert!(loc.starts_with(&format!("{REDIRECT}?")), "{loc}");
    let code = param(&loc, "code").unwrap();
    assert!(code.starts_with("ghc_") && code.len() > 100, "{code}");
    assert_eq!(param(&loc, "state").as_deref(), Some("st-1"));
    assert_eq!(param(&loc, "iss").as_deref(), Some(issuer.as_str()));

    // Remembered: the same scopes go straight through, each code new.
    let (s, h, _) = b.get(&back).await;
    assert_eq!(s, 302);
    let again = param(&location(&h), "code").unwrap();
    assert_ne!(again, code);
    let (s, h, _) = b.get(&with("openid", &[])).await;
    assert_eq!(s, 302, "a subset of the grant needs no consent");
    assert!(param(&location(&h), "code").is_some());
    // prompt=none works when nothing needs asking, and fails when it would.
    let (s, h, _) = b.get(&with("openid", &[("prompt", Some("none"))])).await;
    assert_eq!(s, 302);
    assert!(param(&location(&h), "code").is_some());
    let (s, h, _) = b
        .get(&with("openid email", &[("prompt", Some("none"))]))
        .await;
    assert_eq!(s, 302);
    assert_eq!(
        param(&location(&h), "error").as_deref(),
        Some("consent_required")
    );
    // More scopes, or prompt=consent: asked again.
    let (s, _, html) = b.get(&with("openid email", &[])).await;
    assert_eq!(s, 200);
    assert!(html.contains("See your email address"));
    let (s, _, _) = b.get(&with("openid", &[("prompt", Some("consent"))])).await;
    assert_eq!(s, 200);
    let (s, loc) = submit_consent(&mut b, &html, "accept").await;
    assert_eq!(s, 303);
    assert!(param(&loc, "code").is_some());

    // The grant, through the Backend API.
    let (_, users) = g
        .call(
            key,
            Method::GET,
            &format!("/v1/users?email_address={email}"),
            None,
        )
        .await;
    let user_id = users[0]["id"].as_str().unwrap().to_owned();
    let (s, list) = g
        .call(
            key,
            Method::GET,
            &format!("/v1/users/{user_id}/oauth_grants"),
            None,
        )
        .await;
    assert_eq!(s, 200, "{list}");
    assert_eq!(list["total_count"], 1);
    let grant = &list["data"][0];
    assert_eq!(grant["object"], "oauth_grant");
    assert_eq!(grant["application_id"], app_id.as_str());
    assert_eq!(grant["client_id"], client_id.as_str());
    assert_eq!(grant["scopes"], "openid files:read email");
    assert_eq!(grant["consented"], true);
    // Another instance's key sees none of it.
    let (s, _) = g
        .call(
            &t.prod.key,
            Method::GET,
            &format!("/v1/users/{user_id}/oauth_grants"),
            None,
        )
        .await;
    assert_eq!(s, 404);
    let (s, _) = g
        .call(
            &t.prod.key,
            Method::DELETE,
            &format!("/v1/users/{user_id}/oauth_grants/{app_id}"),
            None,
        )
        .await;
    assert_eq!(s, 404);

    // The user's own page lists it and takes it back.
    let (s, _, html) = b.get("/account/grants").await;
    assert_eq!(s, 200);
    assert!(html.contains("Acme Desktop") && html.contains("Read the files you keep in Acme"));
    let csrf = hidden(&html, "csrf_token");
    let (s, _, _) = b
        .post("/account/grants/revoke", &[("application_id", &app_id)])
        .await;
    assert_eq!(s, 403, "CSRF token required");
    let (s, h, _) = b
        .post(
            "/account/grants/revoke",
            &[("csrf_token", &csrf), ("application_id", &app_id)],
        )
        .await;
    assert_eq!(s, 303);
    assert_eq!(location(&h), format!("/i/{ins}/account/grants"));
    let (_, _, html) = b.get("/account/grants").await;
    assert!(!html.contains("Acme Desktop"));
    let (s, _, _) = b.get(&back).await;
    assert_eq!(s, 200, "consent asked again after revocation");

    // Backend API revocation.
    let (_, _, html) = b.get(&back).await;
    let (s, _) = submit_consent(&mut b, &html, "accept").await;
    assert_eq!(s, 303);
    let grant_path = format!("/v1/users/{user_id}/oauth_grants/{app_id}");
    let (s, got) = g.call(key, Method::GET, &grant_path, None).await;
    assert_eq!(s, 200, "{got}");
    let (s, del) = g.call(key, Method::DELETE, &grant_path, None).await;
    assert_eq!(s, 200, "{del}");
    assert_eq!(del["deleted"], true);
    let (s, e) = g.call(key, Method::DELETE, &grant_path, None).await;
    assert_eq!(s, 404);
    common::assert_error_shape(s, &e);

    // Consent off: a signed-in user is granted silently (the documented risk).
    let (s, quiet) = g
        .call(
            key,
            Method::POST,
            "/v1/oauth_applications",
            Some(
                json!({ "name": "Quiet", "redirect_uris": [REDIRECT], "scopes": "openid",
                         "consent_screen_enabled": false, "pkce_required": false }),
            ),
        )
        .await;
    assert_eq!(s, 200, "{quiet}");
    let quiet_path = authorize_path(&[
        ("response_type", "code"),
        ("client_id", quiet["client_id"].as_str().unwrap()),
        ("state", "q"),
    ]);
    let (s, h, _) = b.get(&quiet_path).await;
    assert_eq!(s, 302);
    let loc = location(&h);
    assert!(param(&loc, "code").is_some(), "{loc}");
    assert_eq!(param(&loc, "state").as_deref(), Some("q"));
    let (_, list) = g
        .call(
            key,
            Method::GET,
            &format!("/v1/users/{user_id}/oauth_grants"),
            None,
        )
        .await;
    assert_eq!(list["data"][0]["application_id"], quiet["id"]);
    assert_eq!(list["data"][0]["consented"], false);

    // Another instance: the client is unknown there and the session does not count.
    let mut other = Browser::new(&g, &t.prod.id);
    other.session = b.session.clone();
    let (s, h, html) = other.get(&with("openid", &[])).await;
    assert_eq!(s, 400);
    assert!(h.get("location").is_none());
    assert!(html.contains("Unknown application"));
    let (s, prod_app) = g
        .call(
            &t.prod.key,
            Method::POST,
            "/v1/oauth_applications",
            Some(json!({ "name": "Prod", "redirect_uris": [REDIRECT], "scopes": "openid" })),
        )
        .await;
    assert_eq!(s, 200);
    let (s, h, _) = other
        .get(&authorize_path(&[
            ("response_type", "code"),
            ("client_id", prod_app["client_id"].as_str().unwrap()),
            ("code_challenge", CHALLENGE),
            ("code_challenge_method", "S256"),
        ]))
        .await;
    assert_eq!(s, 302);
    let loc = location(&h);
    assert!(
        loc.starts_with(&format!("/i/{}/sign-in", t.prod.id)),
        "a development session is not a production one: {loc}"
    );

    // The grants projection rebuilds from its events to the same rows.
    if let Some(db) = &g.db {
        use sea_orm::{ConnectionTrait, Statement};
        let conn = db.connect().await;
        let q = "SELECT COALESCE(string_agg(row_to_json(t)::text, ',' ORDER BY user_id, application_id), '') \
                 FROM authz_oauth_grants t";
        let snapshot = || async {
            let row = conn
                .query_one_raw(Statement::from_string(conn.get_database_backend(), q))
                .await
                .unwrap()
                .unwrap();
            row.try_get_by_index::<String>(0).unwrap()
        };
        let before = snapshot().await;
        assert!(before.contains(&user_id));
        conn.execute_unprepared("DELETE FROM authz_oauth_grants")
            .await
            .unwrap();
        let out = std::process::Command::new(common::BIN)
            .args(["rebuild", "oauth_grants", "--database-url", &db.url])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(snapshot().await, before);
    }
}

#[tokio::test]
async fn authorize_embedded() {
    authorize_flow(Mode::Embedded).await;
}

#[tokio::test]
async fn authorize_production_shape() {
    authorize_flow(Mode::Production).await;
}
