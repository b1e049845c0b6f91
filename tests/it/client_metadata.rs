//! Client ID Metadata Documents: a client whose `client_id` is an https URL
//! goes through authorize (consent forced, its host named on the consent
//! screen), token exchange as a public client, refresh, and grant
//! revocation; documents that break the rules, are too big, too slow,
//! redirect or sit on a private address are refused on an error page
//! without redirecting; fetches are cached. The documents are served over
//! real TLS by a server in this test, with a test CA Gatehouse is told to
//! trust.

use crate::common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::common::browser::{Browser, location, param, submit_consent};
use crate::common::{Gatehouse, free_port};
use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use reqwest::Method;
use serde_json::{Value, json};

const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
const REDIRECT: &str = "http://127.0.0.1:33418/callback";

/// The document server: what it serves and how often it was asked.
struct Docs {
    base: String,
    fetches: Arc<AtomicUsize>,
}

struct DocState {
    base: String,
    fetches: Arc<AtomicUsize>,
}

async fn serve_doc(state: web::Data<DocState>, req: HttpRequest) -> HttpResponse {
    state.fetches.fetch_add(1, Ordering::SeqCst);
    let me = format!("{}{}", state.base, req.path());
    let good = json!({
        "client_id": me,
        "client_name": "Example MCP Client",
        "client_uri": "https://client.example",
        "logo_uri": "https://client.example/logo.png",
        "redirect_uris": [REDIRECT],
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        "token_endpoint_auth_method": "none",
        "scope": "openid email offline_access mcp:tools",
    });
    match req.path() {
        "/clients/good.json" | "/clients/cached.json" => HttpResponse::Ok()
            .insert_header(("cache-control", "max-age=3600"))
            .json(good),
        "/clients/wrong-id.json" => {
            let mut d = good;
            d["client_id"] = json!("https://elsewhere.example/clients/good.json");
            HttpResponse::Ok().json(d)
        }
        "/clients/secret.json" => {
            let mut d = good;
            d["token_endpoint_auth_method"] = json!("client_secret_basic");
            HttpResponse::Ok().json(d)
        }
        "/clients/big.json" => {
            let mut d = good;
            d["padding"] = json!("x".repeat(8 * 1024));
            HttpResponse::Ok().json(d)
        }
        "/clients/not-json.json" => HttpResponse::Ok().body("<html>hello</html>"),
        "/clients/slow.json" => {
            tokio::time::sleep(Duration::from_secs(8)).await;
            HttpResponse::Ok().json(good)
        }
        "/clients/moved.json" => HttpResponse::Found()
            .insert_header(("location", format!("{}/clients/good.json", state.base)))
            .finish(),
        _ => HttpResponse::NotFound().finish(),
    }
}

/// Starts the TLS document server for `host` (a name or an IP literal) and
/// writes the CA that signed its certificate to a PEM file.
fn doc_server(host: &str) -> (Docs, std::path::PathBuf) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "Gatehouse test CA");
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);

    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()])
        .unwrap()
        .signed_by(&leaf_key, &issuer)
        .unwrap();

    let ca_file = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("{}.pem", common::unique("cimd-ca")));
    std::fs::write(&ca_file, ca_cert.pem()).unwrap();

    let tls = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![leaf.der().clone()],
        rustls::pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into()),
    )
    .unwrap();

    let port = free_port();
    let base = format!("https://{host}:{port}");
    let fetches = Arc::new(AtomicUsize::new(0));
    let state = web::Data::new(DocState {
        base: base.clone(),
        fetches: fetches.clone(),
    });
    let server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .default_service(web::to(serve_doc))
    })
    .workers(1)
    .bind_rustls_0_23(("127.0.0.1", port), tls)
    .unwrap()
    .run();
    tokio::spawn(server);
    (Docs { base, fetches }, ca_file)
}

fn authorize_path(client_id: &str, extra: &[(&str, &str)]) -> String {
    let mut pairs = vec![
        ("response_type", "code"),
        ("client_id", client_id),
        ("redirect_uri", REDIRECT),
        ("scope", "openid email offline_access mcp:tools"),
        ("state", "st-1"),
        ("code_challenge", CHALLENGE),
        ("code_challenge_method", "S256"),
    ];
    pairs.extend_from_slice(extra);
    let q: String = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish();
    format!("/oauth/authorize?{q}")
}

async fn token(g: &Gatehouse, ins: &str, form: &[(&str, &str)]) -> (u16, Value) {
    let body: String = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(form)
        .finish();
    let res = g
        .client
        .post(g.url(&format!("/i/{ins}/oauth/token")))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .unwrap();
    (res.status().as_u16(), res.json().await.unwrap())
}

/// Redeems a code as a public client: PKCE verifier, no secret.
async fn exchange(g: &Gatehouse, ins: &str, code: &str, client_id: &str) -> (u16, Value) {
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code),
        ("redirect_uri", REDIRECT),
        ("client_id", client_id),
        ("code_verifier", VERIFIER),
    ];
    token(g, ins, &form).await
}

/// The instance's RFC 8414 metadata.
async fn server_metadata(g: &Gatehouse, key: &str, ins: &str) -> Value {
    let (s, meta) = g
        .call(
            key,
            Method::GET,
            &format!("/.well-known/oauth-authorization-server/i/{ins}"),
            None,
        )
        .await;
    assert_eq!(s, 200, "{meta}");
    meta
}

/// An error page, not a redirect: the client cannot be trusted.
async fn refused(b: &mut Browser, client_id: &str, reason: &str) {
    let (s, h, html) = b.get(&authorize_path(client_id, &[])).await;
    assert_eq!(s, 400, "{client_id}: {html}");
    assert!(h.get("location").is_none(), "{client_id} redirected");
    assert!(
        html.contains(reason),
        "{client_id}: no {reason:?} in {html}"
    );
}

#[actix_web::test]
async fn metadata_document_clients() {
    let (docs, ca) = doc_server("localhost");
    let g = Gatehouse::embedded_with(
        common::high_limits()
            .into_iter()
            .chain([
                "--client-metadata-allow-private-networks".to_owned(),
                "--client-metadata-ca-file".to_owned(),
                ca.display().to_string(),
            ])
            .collect(),
    )
    .await;
    let t = g.tenant().await;
    let (key, ins) = (t.dev.key.as_str(), t.dev.id.as_str());
    g.define_scope(key, "mcp:tools", "Use your Acme tools")
        .await;
    let meta = server_metadata(&g, key, ins).await;
    assert_eq!(meta["client_id_metadata_document_supported"], true);

    let client_id = format!("{}/clients/good.json", docs.base);
    let mut b = Browser::new(&g, ins);
    let authorize = authorize_path(&client_id, &[]);

    // Signed out: sign-in first, then the consent screen, always shown.
    let (s, h, _) = b.get(&authorize).await;
    assert_eq!(s, 302);
    let (_, back) = b.sign_up_from(&location(&h)).await;
    let (s, _, html) = b.get(&back).await;
    assert_eq!(s, 200, "{html}");
    assert!(html.contains("Example MCP Client"), "{html}");
    // Its logo is on a host none of its redirect URIs go to: not shown.
    assert!(!html.contains("https://client.example/logo.png"), "{html}");
    assert!(html.contains("<strong>127.0.0.1</strong>"), "{html}");
    assert!(html.contains("id=\"loopback-warning\""), "{html}");
    assert!(html.contains("Use your Acme tools"));
    assert!(
        html.contains("describes itself from <strong>localhost</strong>"),
        "{html}"
    );

    // Deny, then accept.
    let (s, loc) = submit_consent(&mut b, &html, "deny").await;
    assert_eq!(s, 303);
    assert!(loc.starts_with(REDIRECT), "{loc}");
    assert_eq!(param(&loc, "error").as_deref(), Some("access_denied"));
    let (_, _, html) = b.get(&authorize).await;
    let (s, loc) = submit_consent(&mut b, &html, "accept").await;
    assert_eq!(s, 303);
    assert_eq!(param(&loc, "state").as_deref(), Some("st-1"));
    assert_eq!(
        param(&loc, "iss").unwrap(),
        g.url(&format!("/i/{ins}")),
        "{loc}"
    );
    let code = param(&loc, "code").unwrap();

    // Token exchange as a public client: PKCE verifier, no secret.
    let (s, tok) = exchange(&g, ins, &code, &client_id).await;
    assert_eq!(s, 200, "{tok}");
    let access = tok["access_token"].as_str().unwrap().to_owned();
    let refresh = tok["refresh_token"].as_str().unwrap().to_owned();
    let (s, v) = g
        .call(
            key,
            Method::POST,
            "/oauth_applications/access_tokens/verify",
            Some(json!({ "access_token": access })),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["client_id"], client_id.as_str());
    let user_id = v["subject"].as_str().unwrap().to_owned();

    // A secret is refused; the client credentials grant is not for it.
    let (s, e) = token(
        &g,
        ins,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", &refresh),
            ("client_id", &client_id),
            ("client_secret", "guess"),
        ],
    )
    .await;
    assert_eq!((s, e["error"].as_str()), (401, Some("invalid_client")));
    let (s, e) = token(
        &g,
        ins,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", &client_id),
        ],
    )
    .await;
    assert_eq!(s, 400, "{e}");
    assert_eq!(e["error"], "unauthorized_client");
    let (s, tok2) = token(
        &g,
        ins,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", &refresh),
            ("client_id", &client_id),
        ],
    )
    .await;
    assert_eq!(s, 200, "{tok2}");

    // The remembered grant is listed with the document's name; consent is
    // not asked again for the same scopes.
    let (s, grants) = g
        .call(
            key,
            Method::GET,
            &format!("/v1/users/{user_id}/oauth_grants"),
            None,
        )
        .await;
    assert_eq!(s, 200, "{grants}");
    let grant = &grants["data"][0];
    assert_eq!(grant["client_id"], client_id.as_str(), "{grants}");
    assert_eq!(grant["application_name"], "Example MCP Client", "{grants}");
    let (s, h, _) = b.get(&authorize).await;
    assert_eq!(s, 302);
    assert!(location(&h).starts_with(REDIRECT));

    // Revoking the grant ends the tokens it gave.
    let app_id = grant["application_id"].as_str().unwrap();
    let (s, _) = g
        .call(
            key,
            Method::DELETE,
            &format!("/v1/users/{user_id}/oauth_grants/{app_id}"),
            None,
        )
        .await;
    assert_eq!(s, 200);
    let new_access = tok2["access_token"].as_str().unwrap().to_owned();
    g.eventually("grant revocation reaches the tokens", 10, || {
        let (g, key, t) = (&g, key, new_access.clone());
        async move {
            let (_, v) = g
                .call(
                    key,
                    Method::POST,
                    "/oauth_applications/access_tokens/verify",
                    Some(json!({ "access_token": t })),
                )
                .await;
            v["revoked"] == true
        }
    })
    .await;

    // Fetched once for all of the above: the document is cached.
    let before = docs.fetches.load(Ordering::SeqCst);
    assert_eq!(before, 1, "fetched {before} times");

    // Documents that break the rules: an error page, never a redirect.
    let doc = |p: &str| format!("{}/clients/{p}", docs.base);
    refused(&mut b, &doc("wrong-id.json"), "client_id must equal").await;
    refused(&mut b, &doc("secret.json"), "token_endpoint_auth_method").await;
    refused(&mut b, &doc("big.json"), "larger than").await;
    refused(&mut b, &doc("not-json.json"), "not a JSON object").await;
    refused(&mut b, &doc("missing.json"), "HTTP 404").await;
    refused(&mut b, &doc("moved.json"), "HTTP 302").await;
    refused(&mut b, &doc("slow.json"), "timed out").await;
    refused(
        &mut b,
        &format!("{}/a/../clients/good.json", docs.base),
        "canonical",
    )
    .await;
    refused(&mut b, "https://localhost/", "must have a path").await;
    // A failure is cached too: asking again does not fetch again.
    let n = docs.fetches.load(Ordering::SeqCst);
    refused(&mut b, &doc("wrong-id.json"), "client_id must equal").await;
    assert_eq!(docs.fetches.load(Ordering::SeqCst), n);

    // Another instance fetches the same document but keeps its own grants.
    let other = g.tenant().await;
    g.define_scope(&other.dev.key, "mcp:tools", "Use your Other tools")
        .await;
    let mut b2 = Browser::new(&g, &other.dev.id);
    let (s, h, _) = b2.get(&authorize).await;
    assert_eq!(s, 302);
    let (_, back) = b2.sign_up_from(&location(&h)).await;
    let (s, _, html) = b2.get(&back).await;
    assert_eq!(s, 200);
    assert!(html.contains("Example MCP Client") && html.contains("Use your Other tools"));
    let (s, e) = exchange(&g, &other.dev.id, &code, &client_id).await;
    assert_eq!(s, 400, "{e}");
    assert_eq!(e["error"], "invalid_grant");

    // An instance may switch these clients off: refused without a fetch,
    // and its metadata stops advertising them; the other instance is not
    // affected; switched on again, they are back.
    let settings = |on: bool| {
        let g = &g;
        async move {
            let (s, b) = g
                .call(
                    key,
                    Method::PATCH,
                    "/v1/instance/oauth_application_settings",
                    Some(serde_json::json!({ "client_id_metadata_documents": on })),
                )
                .await;
            assert_eq!(s, 200, "{b}");
            assert_eq!(b["client_id_metadata_documents"], on);
            assert_eq!(b["dynamic_oauth_client_registration"], false);
        }
    };
    settings(false).await;
    let n = docs.fetches.load(Ordering::SeqCst);
    refused(
        &mut b,
        &client_id,
        "does not accept clients identified by a metadata document",
    )
    .await;
    assert_eq!(docs.fetches.load(Ordering::SeqCst), n);
    let meta = server_metadata(&g, key, ins).await;
    assert_eq!(meta["client_id_metadata_document_supported"], false);
    let (s, _, _) = b2.get(&authorize).await;
    assert_eq!(s, 200, "the other instance still takes them");
    settings(true).await;
    let (s, _, html) = b.get(&authorize).await;
    assert_eq!(s, 200, "{html}");
}

#[actix_web::test]
async fn private_addresses_are_never_fetched() {
    // The default: no private networks. The document server listens on
    // loopback, by name and by address, and must never be asked.
    let (docs, ca) = doc_server("127.0.0.1");
    let g = Gatehouse::embedded_with(
        common::high_limits()
            .into_iter()
            .chain([
                "--client-metadata-ca-file".to_owned(),
                ca.display().to_string(),
            ])
            .collect(),
    )
    .await;
    let t = g.tenant().await;
    let mut b = Browser::new(&g, &t.dev.id);
    let port = docs.base.rsplit(':').next().unwrap();
    for url in [
        format!("https://127.0.0.1:{port}/clients/good.json"),
        format!("https://localhost:{port}/clients/good.json"),
        format!("https://[::1]:{port}/clients/good.json"),
        format!("https://[::ffff:7f00:1]:{port}/clients/good.json"),
        "https://169.254.169.254/latest/meta-data".to_owned(),
        "https://10.0.0.1/clients/good.json".to_owned(),
    ] {
        refused(&mut b, &url, "not on the public internet").await;
    }
    assert_eq!(docs.fetches.load(Ordering::SeqCst), 0);
    // http is never fetched, whatever the host.
    refused(
        &mut b,
        "http://client.example/c.json",
        "Unknown application",
    )
    .await;
}
