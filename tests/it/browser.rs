//! A real browser: headless Chromium driven through ChromeDriver
//! (fantoccini) signs up, sees the consent screen with the application's
//! name, logo and scope descriptions, allows (the code reaches the client's
//! redirect URI and redeems at the token endpoint); then signs out, signs in
//! again and denies (`access_denied`). The test command installs Debian's
//! `chromium` and `chromium-driver`.

use crate::common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{Gatehouse, free_port};
use actix_web::{App, HttpResponse, HttpServer, web};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
const PASSWORD: &str = "correct horse battery";

/// ChromeDriver on a free port, stopped when dropped.
struct Driver {
    child: Child,
    url: String,
}

impl Driver {
    async fn start() -> Self {
        let port = free_port();
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver is not installed: run scripts/test.sh, which installs it");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
        }
    }

    async fn browser(&self) -> Client {
        let profile = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(common::unique("chromium-profile"));
        let caps = json!({
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--disable-quic", "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync",
                    format!("--user-data-dir={}", profile.display()),
                ]
            }
        });
        let serde_json::Value::Object(caps) = caps else {
            unreachable!()
        };
        ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&self.url)
            .await
            .expect("no Chromium session")
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The client's redirect URI: a page that says it got the answer.
fn callback_server() -> String {
    let port = free_port();
    let server = HttpServer::new(|| {
        App::new().route(
            "/cb",
            web::get().to(|| async { HttpResponse::Ok().body("back at the client") }),
        )
    })
    .workers(1)
    .bind(("127.0.0.1", port))
    .unwrap()
    .run();
    tokio::spawn(server);
    format!("http://127.0.0.1:{port}/cb")
}

/// Waits until the browser is at a URL starting with `prefix`.
async fn wait_for_url(c: &Client, prefix: &str) -> url::Url {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let now = c.current_url().await.unwrap();
        if now.as_str().starts_with(prefix) {
            return now;
        }
        assert!(Instant::now() < deadline, "stuck at {now}, wanted {prefix}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn fill(c: &Client, css: &str, text: &str) {
    c.find(Locator::Css(css))
        .await
        .unwrap()
        .send_keys(text)
        .await
        .unwrap();
}

async fn click(c: &Client, css: &str) {
    c.find(Locator::Css(css))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}

fn query(url: &url::Url, name: &str) -> Option<String> {
    url.query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// Opens an authorize URL signed out, follows sign-in's link to sign up,
/// and signs up a new user; returns the user's email.
async fn sign_up_at(c: &Client, issuer: &str, authorize: &str) -> String {
    c.goto(authorize).await.unwrap();
    wait_for_url(c, &format!("{issuer}/sign-in")).await;
    c.find(Locator::LinkText("Create an account"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_for_url(c, &format!("{issuer}/sign-up")).await;
    let email = format!("{}@example.com", common::unique("chromium"));
    fill(c, "#email", &email).await;
    fill(c, "#password", PASSWORD).await;
    click(c, "button[type=submit]").await;
    email
}

/// Checks the consent screen shown in the browser.
async fn consent_screen(c: &Client, email: &str) {
    c.wait().for_element(Locator::Css("#accept")).await.unwrap();
    let heading = c
        .find(Locator::Css("h1"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(heading, "Acme Desktop wants to access your account");
    let logo = c.find(Locator::Css("img.logo")).await.unwrap();
    assert_eq!(
        logo.attr("src").await.unwrap().as_deref(),
        Some("https://app.example/logo.png")
    );
    let scopes = c
        .find(Locator::Css("ul.scopes"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(scopes.contains("Confirm who you are"), "{scopes}");
    assert!(
        scopes.contains("Read the files you keep in Acme"),
        "{scopes}"
    );
    let body = c.source().await.unwrap();
    assert!(body.contains(email), "the signed-in user is not named");
}

#[actix_web::test]
async fn sign_up_consent_allow_then_sign_in_deny() {
    let g = Gatehouse::embedded().await;
    let t = g.tenant().await;
    let (key, ins) = (t.dev.key.as_str(), t.dev.id.as_str());
    g.define_scope(key, "files:read", "Read the files you keep in Acme")
        .await;
    let redirect = callback_server();
    let app = g
        .create_app(
            key,
            json!({ "name": "Acme Desktop", "public": true, "redirect_uris": [redirect],
                    "scopes": "openid files:read",
                    "client_image_url": "https://app.example/logo.png" }),
        )
        .await;
    let client_id = app["client_id"].as_str().unwrap().to_owned();
    let issuer = g.url(&format!("/i/{ins}"));
    let authorize = |state: &str, extra: &[(&str, &str)]| {
        let mut pairs = vec![
            ("response_type", "code"),
            ("client_id", client_id.as_str()),
            ("redirect_uri", redirect.as_str()),
            ("scope", "openid files:read"),
            ("state", state),
            ("code_challenge", CHALLENGE),
            ("code_challenge_method", "S256"),
        ];
        pairs.extend_from_slice(extra);
        let q: String = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(pairs)
            .finish();
        format!("{issuer}/oauth/authorize?{q}")
    };

    let driver = Driver::start().await;
    let c = driver.browser().await;

    // Not signed in: the authorize request goes to sign-in; the user
    // follows the link to create an account instead.
    let email = sign_up_at(&c, &issuer, &authorize("first", &[])).await;

    // Back at the request, now on the consent screen. Allow.
    wait_for_url(&c, &format!("{issuer}/oauth/authorize")).await;
    consent_screen(&c, &email).await;
    click(&c, "#accept").await;
    let at_client = wait_for_url(&c, &redirect).await;
    assert_eq!(query(&at_client, "state").as_deref(), Some("first"));
    assert_eq!(query(&at_client, "iss").as_deref(), Some(issuer.as_str()));
    let code = query(&at_client, "code").expect("no code at the client");
    let text = c
        .find(Locator::Css("body"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(text, "back at the client");

    // The code redeems.
    let res = g
        .client
        .post(format!("{issuer}/oauth/token"))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("redirect_uri", redirect.as_str()),
            ("client_id", client_id.as_str()),
            ("code_verifier", VERIFIER),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let tokens: Value = res.json().await.unwrap();
    assert_eq!(tokens["scope"], "openid files:read", "{tokens}");

    // Sign out, sign in again, and deny this time.
    c.goto(&format!("{issuer}/signed-in")).await.unwrap();
    click(&c, "button[type=submit]").await;
    wait_for_url(&c, &format!("{issuer}/sign-in")).await;
    c.goto(&authorize("second", &[("prompt", "consent")]))
        .await
        .unwrap();
    wait_for_url(&c, &format!("{issuer}/sign-in")).await;
    fill(&c, "#email", &email).await;
    fill(&c, "#password", PASSWORD).await;
    click(&c, "button[type=submit]").await;
    wait_for_url(&c, &format!("{issuer}/oauth/authorize")).await;
    consent_screen(&c, &email).await;
    click(&c, "#deny").await;
    let at_client = wait_for_url(&c, &redirect).await;
    assert_eq!(query(&at_client, "error").as_deref(), Some("access_denied"));
    assert_eq!(query(&at_client, "state").as_deref(), Some("second"));
    assert!(query(&at_client, "code").is_none());

    c.close().await.unwrap();
}

/// A client that registered itself (RFC 7591) with another product's name
/// and logo: Chromium shows where the code goes, the loopback warning and
/// the unreviewed notice, and no borrowed logo; registered without a port,
/// its loopback redirect takes the port the client listens on (RFC 8252
/// §7.3), and Allow lands there.
#[actix_web::test]
async fn a_self_registered_client_shows_where_the_code_goes() {
    let g = Gatehouse::embedded().await;
    let t = g.tenant().await;
    let ins = t.dev.id.as_str();
    g.enable_registration(&t.dev.key).await;
    let redirect = callback_server();
    let res = g
        .client
        .post(g.url(&format!("/i/{ins}/oauth/register")))
        .json(&json!({ "client_name": "Google Drive",
                       "logo_uri": "https://www.google.com/favicon.ico",
                       "redirect_uris": ["http://127.0.0.1/cb"],
                       "token_endpoint_auth_method": "none", "scope": "openid" }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let reg: Value = res.json().await.unwrap();
    let issuer = g.url(&format!("/i/{ins}"));
    let q: String = form_urlencoded::Serializer::new(String::new())
        .extend_pairs([
            ("response_type", "code"),
            ("client_id", reg["client_id"].as_str().unwrap()),
            ("redirect_uri", redirect.as_str()),
            ("scope", "openid"),
            ("code_challenge", CHALLENGE),
            ("code_challenge_method", "S256"),
        ])
        .finish();

    let driver = Driver::start().await;
    let c = driver.browser().await;
    sign_up_at(&c, &issuer, &format!("{issuer}/oauth/authorize?{q}")).await;
    wait_for_url(&c, &format!("{issuer}/oauth/authorize")).await;
    c.wait().for_element(Locator::Css("#accept")).await.unwrap();
    for (css, says) in [
        ("#redirect-host", "127.0.0.1"),
        ("#loopback-warning", "program on this computer"),
        ("#unreviewed", "nobody here has reviewed it"),
    ] {
        let e = c.find(Locator::Css(css)).await.unwrap();
        assert!(e.is_displayed().await.unwrap(), "{css} is hidden");
        let text = e.text().await.unwrap();
        assert!(text.contains(says), "{css}: {text}");
    }
    assert!(
        c.find(Locator::Css("img.logo")).await.is_err(),
        "a logo from a host the client does not redirect to is not shown"
    );
    click(&c, "#accept").await;
    let at_client = wait_for_url(&c, &redirect).await;
    assert!(query(&at_client, "code").is_some(), "{at_client}");
    c.close().await.unwrap();
}
