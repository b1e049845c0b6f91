//! OAuth load: authorize-to-code round trips for a signed-in user with a
//! remembered grant, and token-service endpoints (client_credentials,
//! introspection, the Clerk-compatible verify endpoint). The token-service
//! scenarios speak plain OAuth to any server, so the same generator measures
//! a peer (oidc-provider) in the same run.

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use gatehouse_platform::ids::random_base62;
use serde_json::{Value, json};

use super::load;

const PASSWORD: &str = "bench correct horse battery";
const REDIRECT: &str = "https://bench.example/callback";
const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

#[derive(Args, Debug)]
pub struct AuthorizeArgs {
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub base_url: String,
    /// Secret key of the instance to set up an application and user in.
    #[arg(long, env = "GATEHOUSE_BENCH_SECRET_KEY", hide_env_values = true)]
    pub secret_key: String,
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum OauthScenario {
    /// POST token endpoint, grant_type=client_credentials, client_secret_basic.
    ClientCredentials,
    /// POST introspection endpoint (RFC 7662) with one access token.
    Introspect,
    /// POST Gatehouse's /oauth_applications/access_tokens/verify (secret key).
    Verify,
}

#[derive(Args, Debug)]
pub struct OauthArgs {
    #[arg(long, value_enum)]
    pub scenario: OauthScenario,
    /// A Gatehouse to set up a confidential application in (with
    /// --secret-key); its issuer's endpoints are then used.
    #[arg(long)]
    pub gatehouse_url: Option<String>,
    #[arg(long, env = "GATEHOUSE_BENCH_SECRET_KEY", hide_env_values = true)]
    pub secret_key: Option<String>,
    /// Any OAuth server instead: its token endpoint…
    #[arg(long)]
    pub token_url: Option<String>,
    /// …its introspection endpoint…
    #[arg(long)]
    pub introspection_url: Option<String>,
    /// …and a confidential client allowed client_credentials.
    #[arg(long)]
    pub client_id: Option<String>,
    #[arg(long)]
    pub client_secret: Option<String>,
    /// Scope to ask for with client_credentials.
    #[arg(long)]
    pub scope: Option<String>,
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
}

fn http_client(concurrency: usize) -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .pool_max_idle_per_host(concurrency)
        .build()?)
}

async fn json_ok(res: reqwest::Response, what: &str) -> anyhow::Result<Value> {
    let status = res.status();
    let body = res.text().await?;
    if !status.is_success() {
        bail!("{what} failed: {status} {body}");
    }
    serde_json::from_str(&body).with_context(|| format!("{what}: not JSON: {body}"))
}

fn cookie(res: &reqwest::Response, name: &str) -> Option<String> {
    res.headers().get_all("set-cookie").iter().find_map(|v| {
        let v = v.to_str().ok()?;
        let pair = v.split(';').next()?;
        let (n, value) = pair.split_once('=')?;
        (n == name && !value.is_empty()).then(|| value.to_owned())
    })
}

/// Sets up an application, a signed-in user and a remembered grant, then
/// measures GET /oauth/authorize → 302 with a code.
pub async fn authorize(a: AuthorizeArgs) -> anyhow::Result<()> {
    let client = http_client(a.concurrency)?;
    let base = a.base_url.trim_end_matches('/').to_owned();
    let app = json_ok(
        client
            .post(format!("{base}/v1/oauth_applications"))
            .bearer_auth(&a.secret_key)
            .json(&json!({ "name": "Bench client", "public": true,
                           "redirect_uris": [REDIRECT], "scopes": "openid email" }))
            .send()
            .await?,
        "creating the application",
    )
    .await?;
    let ins = app["instance_id"].as_str().unwrap_or_default().to_owned();
    let client_id = app["client_id"].as_str().unwrap_or_default().to_owned();
    let issuer = format!("{base}/i/{ins}");

    // Sign up (double-submit CSRF: the cookie and the field agree).
    let csrf = random_base62(32);
    let email = format!("bench-{}@bench.example", random_base62(10).to_lowercase());
    let res = client
        .post(format!("{issuer}/sign-up"))
        .header("cookie", format!("gh_csrf={csrf}"))
        .form(&[
            ("csrf_token", csrf.as_str()),
            ("email", email.as_str()),
            ("password", PASSWORD),
            ("redirect_url", &format!("/i/{ins}/signed-in")),
        ])
        .send()
        .await?;
    let session = cookie(&res, "gh_session")
        .with_context(|| format!("sign-up gave no session: {}", res.status()))?;
    let cookies = format!("gh_csrf={csrf}; gh_session={session}");

    let params = [
        ("response_type", "code"),
        ("client_id", client_id.as_str()),
        ("redirect_uri", REDIRECT),
        ("scope", "openid email"),
        ("state", "bench"),
        ("code_challenge", CHALLENGE),
        ("code_challenge_method", "S256"),
    ];
    // Consent once; the grant is remembered.
    let mut form = params.to_vec();
    form.extend([("csrf_token", csrf.as_str()), ("decision", "accept")]);
    let res = client
        .post(format!("{issuer}/oauth/authorize"))
        .header("cookie", &cookies)
        .form(&form)
        .send()
        .await?;
    if res.status() != reqwest::StatusCode::SEE_OTHER {
        bail!("consent failed: {} {}", res.status(), res.text().await?);
    }
    let query: String = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(params)
        .finish();
    let url = format!("{issuer}/oauth/authorize?{query}");

    let report = load(a.concurrency, a.seconds, move |_, _| {
        let (client, url, cookies) = (client.clone(), url.clone(), cookies.clone());
        async move {
            match client.get(&url).header("cookie", cookies).send().await {
                Ok(r) => {
                    r.status() == reqwest::StatusCode::FOUND
                        && r.headers()
                            .get("location")
                            .and_then(|l| l.to_str().ok())
                            .is_some_and(|l| l.starts_with(REDIRECT) && l.contains("code="))
                }
                Err(_) => false,
            }
        }
    })
    .await?;
    println!("authorize to code (remembered grant): {report}");
    Ok(())
}

#[derive(Clone)]
struct Target {
    token_url: String,
    introspection_url: String,
    client_id: String,
    client_secret: String,
    verify_url: Option<String>,
}

async fn target(a: &OauthArgs, client: &reqwest::Client) -> anyhow::Result<Target> {
    if let Some(gh) = &a.gatehouse_url {
        let key = a
            .secret_key
            .as_deref()
            .context("--gatehouse-url needs --secret-key")?;
        let gh = gh.trim_end_matches('/');
        let app = json_ok(
            client
                .post(format!("{gh}/v1/oauth_applications"))
                .bearer_auth(key)
                .json(&json!({ "name": "Bench service", "public": false,
                               "redirect_uris": [REDIRECT], "scopes": "openid email" }))
                .send()
                .await?,
            "creating the application",
        )
        .await?;
        let issuer = format!("{gh}/i/{}", app["instance_id"].as_str().unwrap_or_default());
        return Ok(Target {
            token_url: format!("{issuer}/oauth/token"),
            introspection_url: format!("{issuer}/oauth/token_info"),
            client_id: app["client_id"].as_str().unwrap_or_default().to_owned(),
            client_secret: app["client_secret"].as_str().unwrap_or_default().to_owned(),
            verify_url: Some(format!("{gh}/oauth_applications/access_tokens/verify")),
        });
    }
    let need = |v: &Option<String>, flag: &str| {
        v.clone()
            .with_context(|| format!("{flag} is needed without --gatehouse-url"))
    };
    Ok(Target {
        token_url: need(&a.token_url, "--token-url")?,
        introspection_url: need(&a.introspection_url, "--introspection-url")?,
        client_id: need(&a.client_id, "--client-id")?,
        client_secret: need(&a.client_secret, "--client-secret")?,
        verify_url: None,
    })
}

fn token_form(scope: Option<&str>) -> Vec<(&'static str, String)> {
    let mut form = vec![("grant_type", "client_credentials".to_owned())];
    if let Some(s) = scope {
        form.push(("scope", s.to_owned()));
    }
    form
}

pub async fn oauth(a: OauthArgs) -> anyhow::Result<()> {
    let client = http_client(a.concurrency)?;
    let t = target(&a, &client).await?;
    let form = token_form(a.scope.as_deref());
    // A new Gatehouse client reaches the token service through the bus:
    // allow it a few seconds.
    let mut attempts = 0;
    let first = loop {
        let res = client
            .post(&t.token_url)
            .basic_auth(&t.client_id, Some(&t.client_secret))
            .form(&form)
            .send()
            .await?;
        match json_ok(res, "client_credentials").await {
            Ok(v) => break v,
            Err(e) if attempts >= 50 => return Err(e),
            Err(_) => {
                attempts += 1;
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
        }
    };
    let token = first["access_token"]
        .as_str()
        .context("no access_token")?
        .to_owned();
    let check_active = |v: &Value| v["active"] == true;
    let scenario = a.scenario;
    if scenario == OauthScenario::Verify && t.verify_url.is_none() {
        bail!("verify is Gatehouse's endpoint: use --gatehouse-url");
    }
    let key = a.secret_key.clone().unwrap_or_default();
    let target_url = t.token_url.clone();
    let report = load(a.concurrency, a.seconds, move |_, _| {
        let (client, form, token, key) = (client.clone(), form.clone(), token.clone(), key.clone());
        let (token_url, introspection_url, verify_url) = (
            t.token_url.clone(),
            t.introspection_url.clone(),
            t.verify_url.clone().unwrap_or_default(),
        );
        let (id, secret) = (t.client_id.clone(), t.client_secret.clone());
        async move {
            let res = match scenario {
                OauthScenario::ClientCredentials => {
                    client
                        .post(&token_url)
                        .basic_auth(&id, Some(&secret))
                        .form(&form)
                        .send()
                        .await
                }
                OauthScenario::Introspect => {
                    client
                        .post(&introspection_url)
                        .basic_auth(&id, Some(&secret))
                        .form(&[("token", token.as_str())])
                        .send()
                        .await
                }
                OauthScenario::Verify => {
                    client
                        .post(&verify_url)
                        .bearer_auth(&key)
                        .json(&json!({ "access_token": token }))
                        .send()
                        .await
                }
            };
            let Ok(r) = res else { return false };
            if !r.status().is_success() {
                return false;
            }
            let Ok(body) = r.json::<Value>().await else {
                return false;
            };
            match scenario {
                OauthScenario::ClientCredentials => body["access_token"].is_string(),
                OauthScenario::Introspect => check_active(&body),
                OauthScenario::Verify => body["revoked"] == false && body["expired"] == false,
            }
        }
    })
    .await?;
    println!("oauth {scenario:?} against {target_url}: {report}");
    Ok(())
}
