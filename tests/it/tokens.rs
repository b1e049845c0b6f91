//! The token service end to end, in both shapes: authorization code + PKCE
//! from a real authorize redirect, refresh rotation and reuse detection,
//! code replay revoking what the code gave, client_credentials with each
//! client authentication method, RFC 6749 errors, introspection,
//! revocation, the Clerk-compatible verify endpoint, JWKS checked with an
//! independent JWT library, key rotation, CORS, grant revocation reaching
//! the tokens through the bus, a revocation seen at once by a second
//! process, and instance isolation.

use crate::common;

use std::time::Duration;

use crate::common::browser::Browser;
use crate::common::{Gatehouse, Mode};
use base64::Engine;
use reqwest::Method;
use serde_json::{Value, json};

const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
const REDIRECT: &str = "https://app.example/cb";

struct Oauth<'a> {
    g: &'a Gatehouse,
    ins: String,
}

impl Oauth<'_> {
    async fn post(
        &self,
        path: &str,
        form: &[(&str, &str)],
        basic: Option<(&str, &str)>,
    ) -> (u16, reqwest::header::HeaderMap, Value) {
        let body: String = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        let mut req = self
            .g
            .client
            .post(self.g.url(&format!("/i/{}{path}", self.ins)))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body);
        if let Some((id, secret)) = basic {
            req = req.basic_auth(id, Some(secret));
        }
        let res = req.send().await.unwrap();
        let (s, h) = (res.status().as_u16(), res.headers().clone());
        (s, h, res.json().await.unwrap_or(Value::Null))
    }

    async fn token(&self, form: &[(&str, &str)], basic: Option<(&str, &str)>) -> (u16, Value) {
        let (s, h, b) = self.post("/oauth/token", form, basic).await;
        assert_eq!(h.get("cache-control").unwrap(), "no-store", "{b}");
        (s, b)
    }
}

fn jwt_part(token: &str, i: usize) -> Value {
    let part = token.split('.').nth(i).unwrap();
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(part)
            .unwrap(),
    )
    .unwrap()
}

async fn verify(g: &Gatehouse, key: &str, token: &str, path: &str) -> (u16, Value) {
    g.call(
        key,
        Method::POST,
        path,
        Some(json!({ "access_token": token })),
    )
    .await
}

/// Signs in a new user and returns a code from the authorize redirect.
async fn code_for(b: &mut Browser, authorize: &str) -> String {
    let (s, h, _) = b.get(authorize).await;
    assert_eq!(s, 302);
    let loc = h.get("location").unwrap().to_str().unwrap().to_owned();
    if loc.starts_with("/i/") {
        b.sign_up_from(&loc).await;
        return Box::pin(code_for(b, authorize)).await;
    }
    form_urlencoded::parse(loc.split_once('?').unwrap().1.as_bytes())
        .find(|(k, _)| k == "code")
        .unwrap_or_else(|| panic!("no code in {loc}"))
        .1
        .into_owned()
}

async fn tokens_flow(mode: Mode) {
    let g = Gatehouse::start(mode).await;
    let t = g.tenant().await;
    let (key, ins) = (t.dev.key.clone(), t.dev.id.clone());
    let o = Oauth {
        g: &g,
        ins: ins.clone(),
    };
    let (s, public) = g
        .call(&key, Method::POST, "/v1/oauth_applications",
              Some(json!({ "name": "CLI", "public": true, "redirect_uris": [REDIRECT],
                           "scopes": "openid email offline_access", "consent_screen_enabled": false })))
        .await;
    assert_eq!(s, 200, "{public}");
    let pub_id = public["client_id"].as_str().unwrap().to_owned();
    let (s, conf) = g
        .call(
            &key,
            Method::POST,
            "/v1/oauth_applications",
            Some(
                json!({ "name": "Worker", "redirect_uris": [REDIRECT], "scopes": "openid email" }),
            ),
        )
        .await;
    assert_eq!(s, 200, "{conf}");
    let conf_id = conf["client_id"].as_str().unwrap().to_owned();
    let conf_secret = conf["client_secret"].as_str().unwrap().to_owned();

    // The token service learns of clients from events: wait for both.
    let mut known = false;
    for _ in 0..200 {
        let (s, _) = o
            .token(
                &[("grant_type", "client_credentials")],
                Some((&conf_id, &conf_secret)),
            )
            .await;
        let (s2, b2) = o
            .token(
                &[
                    ("grant_type", "authorization_code"),
                    ("client_id", &pub_id),
                    ("code", "x"),
                ],
                None,
            )
            .await;
        if s == 200 && s2 == 400 && b2["error"] == "invalid_grant" {
            known = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(known, "clients never reached the token service");

    // Authorization code + PKCE.
    let authorize = {
        let q: String = form_urlencoded::Serializer::new(String::new())
            .extend_pairs([
                ("response_type", "code"),
                ("client_id", pub_id.as_str()),
                ("redirect_uri", REDIRECT),
                ("scope", "openid email offline_access"),
                ("code_challenge", CHALLENGE),
                ("code_challenge_method", "S256"),
                ("resource", "https://mcp.example/mcp"),
                ("nonce", "n-1"),
            ])
            .finish();
        format!("/oauth/authorize?{q}")
    };
    let mut b = Browser::new(&g, &ins);
    let code = code_for(&mut b, &authorize).await;
    let exchange = |code: String, verifier: &'static str| {
        vec![
            ("grant_type", "authorization_code".to_owned()),
            ("code", code),
            ("redirect_uri", REDIRECT.to_owned()),
            ("client_id", pub_id.clone()),
            ("code_verifier", verifier.to_owned()),
        ]
    };
    let send = |v: Vec<(&'static str, String)>| {
        let o = &o;
        async move {
            let pairs: Vec<(&str, &str)> = v.iter().map(|(k, v)| (*k, v.as_str())).collect();
            o.token(&pairs, None).await
        }
    };
    // Wrong verifier, missing verifier, wrong redirect: refused, code not spent.
    let (s, e) = send(exchange(
        code.clone(),
        "wrong-verifier-wrong-verifier-wrong-verifier-x",
    ))
    .await;
    assert_eq!(
        (s, e["error"].as_str().unwrap()),
        (400, "invalid_grant"),
        "{e}"
    );
    let mut no_verifier = exchange(code.clone(), VERIFIER);
    no_verifier.retain(|(k, _)| *k != "code_verifier");
    let (s, e) = send(no_verifier).await;
    assert_eq!((s, e["error"].as_str().unwrap()), (400, "invalid_request"));
    let mut bad_redirect = exchange(code.clone(), VERIFIER);
    bad_redirect[2].1 = "https://app.example/other".into();
    let (s, e) = send(bad_redirect).await;
    assert_eq!((s, e["error"].as_str().unwrap()), (400, "invalid_grant"));
    let (s, tok) = send(exchange(code.clone(), VERIFIER)).await;
    assert_eq!(s, 200, "{tok}");
    assert_eq!(tok["token_type"], "Bearer");
    assert_eq!(tok["expires_in"], 3600);
    assert_eq!(tok["scope"], "openid email offline_access");
    let access = tok["access_token"].as_str().unwrap().to_owned();
    let header = jwt_part(&access, 0);
    assert_eq!(header["typ"], "at+jwt");
    assert_eq!(header["alg"], "RS256", "new instances sign with RS256");
    let claims = jwt_part(&access, 1);
    let issuer = g.url(&format!("/i/{ins}"));
    assert_eq!(claims["iss"], issuer.as_str());
    assert_eq!(claims["aud"], "https://mcp.example/mcp");
    assert_eq!(claims["client_id"], pub_id.as_str());
    assert!(claims["sub"].as_str().unwrap().starts_with("user_"));
    assert!(
        claims["jti"].is_string()
            && claims["exp"].as_i64().unwrap() > claims["iat"].as_i64().unwrap()
    );
    let id_token = jwt_part(tok["id_token"].as_str().unwrap(), 1);
    assert_eq!(id_token["nonce"], "n-1");
    assert_eq!(id_token["aud"], pub_id.as_str());

    // The JWKS verifies it with an independent JWT library; tampering fails.
    let res = g
        .client
        .get(g.url(&format!("/i/{ins}/.well-known/jwks.json")))
        .header("origin", "https://spa.example")
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.headers().get("access-control-allow-origin").unwrap(),
        "*"
    );
    let jwks: jsonwebtoken::jwk::JwkSet = res.json().await.unwrap();
    let jwk = jwks.find(header["kid"].as_str().unwrap()).unwrap();
    let dk = jsonwebtoken::DecodingKey::from_jwk(jwk).unwrap();
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    v.set_audience(&["https://mcp.example/mcp"]);
    v.set_issuer(&[issuer.as_str()]);
    assert!(jsonwebtoken::decode::<Value>(&access, &dk, &v).is_ok());
    let mut parts: Vec<String> = access.split('.').map(str::to_owned).collect();
    let mut forged = claims.clone();
    forged["sub"] = json!("user_someone_else");
    parts[1] = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(forged.to_string());
    let tampered = parts.join(".");
    assert!(jsonwebtoken::decode::<Value>(&tampered, &dk, &v).is_err());

    // Verify endpoint (Clerk's shape), both paths; tampered and foreign: 404.
    for path in [
        "/oauth_applications/access_tokens/verify",
        "/v1/oauth_applications/access_tokens/verify",
    ] {
        let (s, r) = verify(&g, &key, &access, path).await;
        assert_eq!(s, 200, "{r}");
        assert_eq!(r["object"], "clerk_idp_oauth_access_token");
        assert_eq!(r["id"], claims["jti"]);
        assert_eq!(r["client_id"], pub_id.as_str());
        assert_eq!(r["subject"], claims["sub"]);
        assert_eq!(r["scopes"], json!(["openid", "email", "offline_access"]));
        assert_eq!(r["revoked"], false);
        assert_eq!(r["expired"], false);
        assert_eq!(r["aud"], json!(["https://mcp.example/mcp"]));
        assert!(r["ratelimit"].is_null());
    }
    let vpath = "/oauth_applications/access_tokens/verify";
    let (s, e) = verify(&g, &key, &tampered, vpath).await;
    assert_eq!(s, 404);
    common::assert_error_shape(s, &e);
    let (s, _) = verify(&g, &key, "not-a-token", vpath).await;
    assert_eq!(s, 404);
    let (s, _) = verify(&g, &t.prod.key, &access, vpath).await;
    assert_eq!(s, 404, "a token of instance A is not valid for B");
    let (s, _) = verify(&g, "sk_test_nope", &access, vpath).await;
    assert_eq!(s, 401);

    // Replaying the code is refused and revokes what the code gave.
    let (s, e) = send(exchange(code.clone(), VERIFIER)).await;
    assert_eq!((s, e["error"].as_str().unwrap()), (400, "invalid_grant"));
    let (_, r) = verify(&g, &key, &access, vpath).await;
    assert_eq!(r["revoked"], true);
    assert_eq!(r["revocation_reason"], "code_replay");
    let refresh = tok["refresh_token"].as_str().unwrap();
    let (s, e) = o
        .token(
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh),
                ("client_id", &pub_id),
            ],
            None,
        )
        .await;
    assert_eq!((s, e["error"].as_str().unwrap()), (400, "invalid_grant"));

    // Refresh rotation; reuse of a spent refresh token revokes the family.
    let code = code_for(&mut b, &authorize).await;
    let (s, tok) = send(exchange(code, VERIFIER)).await;
    assert_eq!(s, 200);
    let r1 = tok["refresh_token"].as_str().unwrap().to_owned();
    // RFC 8707: a refresh names the granted resource or none; another one,
    // or one that is no absolute URI, is invalid_target (the token unspent).
    for other in ["https://other.example/api", "a:b"] {
        let (s, e) = o
            .token(
                &[
                    ("grant_type", "refresh_token"),
                    ("refresh_token", &r1),
                    ("client_id", &pub_id),
                    ("resource", other),
                ],
                None,
            )
            .await;
        assert_eq!(
            (s, e["error"].as_str().unwrap()),
            (400, "invalid_target"),
            "{other}: {e}"
        );
    }
    let refresh_with = |r: String| {
        let o = &o;
        let id = pub_id.clone();
        async move {
            o.token(
                &[
                    ("grant_type", "refresh_token"),
                    ("refresh_token", &r),
                    ("client_id", &id),
                ],
                None,
            )
            .await
        }
    };
    let (s, tok2) = refresh_with(r1.clone()).await;
    assert_eq!(s, 200, "{tok2}");
    let r2 = tok2["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(r1, r2);
    let a2 = tok2["access_token"].as_str().unwrap().to_owned();
    let (s, _, info) = o
        .post(
            "/oauth/token_info",
            &[("token", &a2)],
            Some((&conf_id, &conf_secret)),
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(info["active"], true, "{info}");
    assert_eq!(info["client_id"], pub_id.as_str());
    let (s, e) = refresh_with(r1.clone()).await;
    assert_eq!((s, e["error"].as_str().unwrap()), (400, "invalid_grant"));
    let (s, _) = refresh_with(r2.clone()).await;
    assert_eq!(s, 400, "the whole family is revoked after reuse");
    let (_, _, info) = o
        .post(
            "/oauth/token_info",
            &[("token", &a2)],
            Some((&conf_id, &conf_secret)),
        )
        .await;
    assert_eq!(info, json!({ "active": false }));

    // RFC 7009 revocation, seen at once by a second process.
    let code = code_for(&mut b, &authorize).await;
    let (_, tok) = send(exchange(code, VERIFIER)).await;
    let a3 = tok["access_token"].as_str().unwrap().to_owned();
    let sibling = if mode == Mode::Production {
        Some(g.sibling().await)
    } else {
        None
    };
    let (s, _, _) = o
        .post(
            "/oauth/revoke",
            &[("token", &a3), ("client_id", &pub_id)],
            None,
        )
        .await;
    assert_eq!(s, 200);
    let other = sibling.as_ref().unwrap_or(&g);
    let (_, r) = verify(other, &key, &a3, vpath).await;
    assert_eq!(r["revoked"], true, "{r}");
    assert_eq!(r["revocation_reason"], "revoked");
    let (s, _, _) = o
        .post(
            "/oauth/revoke",
            &[("token", "unknown"), ("client_id", &pub_id)],
            None,
        )
        .await;
    assert_eq!(s, 200, "unknown tokens are fine to revoke");

    // client_credentials and client authentication.
    let (s, cc) = o
        .token(
            &[("grant_type", "client_credentials"), ("scope", "email")],
            Some((&conf_id, &conf_secret)),
        )
        .await;
    assert_eq!(s, 200, "{cc}");
    assert!(cc.get("refresh_token").is_none());
    assert_eq!(
        jwt_part(cc["access_token"].as_str().unwrap(), 1)["sub"],
        conf_id.as_str()
    );
    // A public client proves only its id: it learns nothing of other
    // clients' tokens at introspection.
    let cc_token = cc["access_token"].as_str().unwrap();
    let (s, _, info) = o
        .post(
            "/oauth/token_info",
            &[("token", cc_token), ("client_id", &pub_id)],
            None,
        )
        .await;
    assert_eq!((s, info), (200, json!({ "active": false })));
    let (_, _, info) = o
        .post(
            "/oauth/token_info",
            &[("token", cc_token)],
            Some((&conf_id, &conf_secret)),
        )
        .await;
    assert_eq!(info["active"], true);
    let (s, _) = o
        .token(
            &[
                ("grant_type", "client_credentials"),
                ("client_id", &conf_id),
                ("client_secret", &conf_secret),
            ],
            None,
        )
        .await;
    assert_eq!(s, 200, "client_secret_post");
    for (form, basic, status, error) in [
        (
            vec![("grant_type", "client_credentials")],
            Some((conf_id.as_str(), "wrong")),
            401,
            "invalid_client",
        ),
        (
            vec![("grant_type", "client_credentials")],
            None,
            401,
            "invalid_client",
        ),
        (
            vec![
                ("grant_type", "client_credentials"),
                ("client_secret", conf_secret.as_str()),
            ],
            Some((conf_id.as_str(), conf_secret.as_str())),
            400,
            "invalid_request",
        ),
        (
            vec![
                ("grant_type", "client_credentials"),
                ("client_id", pub_id.as_str()),
            ],
            None,
            400,
            "unauthorized_client",
        ),
        (
            vec![("grant_type", "client_credentials"), ("scope", "admin")],
            Some((conf_id.as_str(), conf_secret.as_str())),
            400,
            "invalid_scope",
        ),
        (
            vec![("grant_type", "password")],
            Some((conf_id.as_str(), conf_secret.as_str())),
            400,
            "unsupported_grant_type",
        ),
        (
            vec![],
            Some((conf_id.as_str(), conf_secret.as_str())),
            400,
            "invalid_request",
        ),
        (
            vec![
                ("grant_type", "client_credentials"),
                ("grant_type", "client_credentials"),
            ],
            Some((conf_id.as_str(), conf_secret.as_str())),
            400,
            "invalid_request",
        ),
    ] {
        let (s, e) = o.token(&form, basic).await;
        assert_eq!(
            (s, e["error"].as_str().unwrap_or("")),
            (status, error),
            "{form:?}: {e}"
        );
    }
    let res = g
        .client
        .post(g.url(&format!("/i/{ins}/oauth/token")))
        .json(&json!({ "grant_type": "client_credentials" }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400, "JSON bodies are refused");
    // Introspection needs client authentication.
    let (s, _, _) = o.post("/oauth/token_info", &[("token", &a3)], None).await;
    assert_eq!(s, 401);

    // CORS preflight on the token endpoint.
    let res = g
        .client
        .request(Method::OPTIONS, g.url(&format!("/i/{ins}/oauth/token")))
        .header("origin", "https://spa.example")
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "content-type")
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success());
    assert_eq!(
        res.headers().get("access-control-allow-origin").unwrap(),
        "*"
    );
    assert!(
        res.headers()
            .get("access-control-allow-credentials")
            .is_none()
    );

    // Revoking the user's grant through the Backend API ends their tokens.
    let code = code_for(&mut b, &authorize).await;
    let (_, tok) = send(exchange(code, VERIFIER)).await;
    let a4 = tok["access_token"].as_str().unwrap().to_owned();
    let user = jwt_part(&a4, 1)["sub"].as_str().unwrap().to_owned();
    let (s, _) = g
        .call(
            &key,
            Method::DELETE,
            &format!(
                "/v1/users/{user}/oauth_grants/{}",
                public["id"].as_str().unwrap()
            ),
            None,
        )
        .await;
    assert_eq!(s, 200);
    let mut revoked = false;
    for _ in 0..200 {
        let (_, r) = verify(&g, &key, &a4, vpath).await;
        if r["revoked"] == true {
            assert_eq!(r["revocation_reason"], "grant_revoked");
            revoked = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(revoked, "grant revocation never reached the tokens");

    // Key rotation (to ES256, still selectable per instance): the old key
    // stays published, new tokens use the new one.
    let (s, rot) = g
        .admin(
            Method::POST,
            &format!("/admin/v1/instances/{ins}/signing_keys/rotate"),
            Some(json!({ "alg": "ES256" })),
        )
        .await;
    assert_eq!(s, 200, "{rot}");
    let jwks: Value = g
        .client
        .get(g.url(&format!("/i/{ins}/.well-known/jwks.json")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(jwks["keys"].as_array().unwrap().len(), 2, "{jwks}");
    // The Backend API serves the same document to the secret key's holder
    // (the rotating process dropped its cached copy); another instance's
    // key gets that instance's keys; no key, no keys.
    let (s, backend) = g.call(&key, Method::GET, "/v1/jwks", None).await;
    assert_eq!(s, 200, "{backend}");
    assert_eq!(backend, jwks);
    assert!(
        jwks["keys"]
            .as_array()
            .unwrap()
            .iter()
            .any(|k| k["kid"] == rot["kid"])
    );
    let (s, other) = g.call(&t.prod.key, Method::GET, "/v1/jwks", None).await;
    assert_eq!(s, 200, "{other}");
    assert!(
        other["keys"]
            .as_array()
            .unwrap()
            .iter()
            .all(|k| k["kid"] != rot["kid"])
    );
    let res = g.client.get(g.url("/v1/jwks")).send().await.unwrap();
    let status = res.status().as_u16();
    common::assert_error_shape(status, &res.json().await.unwrap());
    assert_eq!(status, 401);
    // Processes cache the active key for up to 30 s; the rotating process sees it at once.
    let (s, cc) = o
        .token(
            &[("grant_type", "client_credentials")],
            Some((&conf_id, &conf_secret)),
        )
        .await;
    assert_eq!(s, 200);
    let h = jwt_part(cc["access_token"].as_str().unwrap(), 0);
    assert_eq!(h["alg"], "ES256");
    assert_eq!(h["kid"], rot["kid"]);
    let (s, r) = verify(&g, &key, cc["access_token"].as_str().unwrap(), vpath).await;
    assert_eq!((s, r["revoked"].clone()), (200, json!(false)));
    let (s, bad) = g
        .admin(
            Method::POST,
            &format!("/admin/v1/instances/{ins}/signing_keys/rotate"),
            Some(json!({ "alg": "HS256" })),
        )
        .await;
    assert_eq!(s, 422, "{bad}");

    // Isolation: another instance's introspection does not know the token.
    let po = Oauth {
        g: &g,
        ins: t.prod.id.clone(),
    };
    let (s, _, _) = po
        .post(
            "/oauth/token_info",
            &[("token", &a4)],
            Some((&conf_id, &conf_secret)),
        )
        .await;
    assert_eq!(s, 401, "the client is not a client of the other instance");
}

/// The authorize path of a PKCE request for a public client.
fn pkce_authorize(client_id: &str, scope: &str) -> String {
    let q: String = form_urlencoded::Serializer::new(String::new())
        .extend_pairs([
            ("response_type", "code"),
            ("client_id", client_id),
            ("redirect_uri", REDIRECT),
            ("scope", scope),
            ("code_challenge", CHALLENGE),
            ("code_challenge_method", "S256"),
        ])
        .finish();
    format!("/oauth/authorize?{q}")
}

/// An access token for a public client from the authorize redirect (the
/// browser signs up on first use), once the token service knows the client.
async fn access_token_for(o: &Oauth<'_>, b: &mut Browser, client_id: &str, scope: &str) -> String {
    let code = code_for(b, &pkce_authorize(client_id, scope)).await;
    let tok = redeem(o, client_id, &code).await;
    tok["access_token"].as_str().unwrap().to_owned()
}

/// Redeems a public client's code from [`pkce_authorize`], once the token
/// service knows the client; the token response.
async fn redeem(o: &Oauth<'_>, client_id: &str, code: &str) -> Value {
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code),
        ("redirect_uri", REDIRECT),
        ("client_id", client_id),
        ("code_verifier", VERIFIER),
    ];
    let mut tok = o.token(&form, None).await;
    for _ in 0..200 {
        if tok.0 != 401 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        tok = o.token(&form, None).await;
    }
    assert_eq!(tok.0, 200, "{}", tok.1);
    tok.1
}

/// Re-authentication (OpenID Connect Core §3.1.2.1): `prompt=login` and an
/// exceeded `max_age` send a signed-in user to sign in again (with
/// `prompt=none`, `login_required`), and the ID token's `auth_time` is when
/// the user last signed in, through refreshes too.
async fn reauthentication_flow(mode: Mode) {
    use crate::common::browser::{hidden, location, param};
    let g = Gatehouse::with_test_clock(mode).await;
    let t = g.tenant().await;
    let (key, ins) = (t.dev.key.clone(), t.dev.id.clone());
    let o = Oauth {
        g: &g,
        ins: ins.clone(),
    };
    let app = g
        .create_app(
            &key,
            json!({ "name": "CLI", "public": true, "redirect_uris": [REDIRECT],
                    "scopes": "openid email offline_access", "consent_screen_enabled": false }),
        )
        .await;
    let client_id = app["client_id"].as_str().unwrap().to_owned();
    let scope = "openid email offline_access";
    let with = |extra: &[(&str, &str)]| {
        let mut a = pkce_authorize(&client_id, scope);
        for (k, v) in extra {
            a.push_str(&format!("&{k}={v}"));
        }
        a
    };
    let exchange = |code: String| {
        let (o, client_id) = (&o, client_id.clone());
        async move { redeem(o, &client_id, &code).await }
    };
    let auth_time = |tok: &Value| {
        jwt_part(tok["id_token"].as_str().unwrap(), 1)["auth_time"]
            .as_i64()
            .unwrap()
    };

    let mut b = Browser::new(&g, &ins);
    let (s, h, _) = b.get(&with(&[])).await;
    assert_eq!(s, 302);
    let (email, _) = b.sign_up_from(&location(&h)).await;
    let first = exchange(code_for(&mut b, &with(&[])).await).await;
    let signed_up = auth_time(&first);

    g.advance_clock(120_000).await;
    // Within max_age, and without prompt=login: no sign-in.
    let (s, h, _) = b.get(&with(&[("max_age", "600")])).await;
    assert_eq!(s, 302);
    assert!(param(&location(&h), "code").is_some(), "{:?}", h);
    // prompt=none cannot sign the user in again.
    for extra in [
        &[("prompt", "none"), ("max_age", "60")][..],
        &[("prompt", "none"), ("max_age", "0")],
    ] {
        let (_, h, _) = b.get(&with(extra)).await;
        assert_eq!(
            param(&location(&h), "error").as_deref(),
            Some("login_required")
        );
    }
    for extra in [&[("prompt", "login")][..], &[("max_age", "60")]] {
        let (s, h, _) = b.get(&with(extra)).await;
        assert_eq!(s, 302);
        let sign_in = location(&h);
        assert!(sign_in.contains("/sign-in?"), "{extra:?}: {sign_in}");
        let back = param(&sign_in, "redirect_url").unwrap();
        assert!(
            !back.contains("prompt=login") && !back.contains("max_age"),
            "{back}"
        );
        let (_, _, html) = b.get("/sign-in").await;
        let csrf = hidden(&html, "csrf_token");
        let (s, h, _) = b
            .post(
                "/sign-in",
                &[
                    ("csrf_token", &csrf),
                    ("email", &email),
                    ("password", "correct horse battery"),
                    ("redirect_url", &back),
                ],
            )
            .await;
        assert_eq!(s, 303);
        let (s, h2, _) = b.get(&location(&h)).await;
        assert_eq!(s, 302);
        let code = param(&location(&h2), "code").unwrap();
        let tok = exchange(code).await;
        assert!(
            auth_time(&tok) >= signed_up + 120,
            "{extra:?}: signed in again"
        );
        g.advance_clock(120_000).await;
    }
    // A refresh keeps the sign-in's auth_time.
    let form = [
        ("grant_type", "refresh_token"),
        ("refresh_token", first["refresh_token"].as_str().unwrap()),
        ("client_id", client_id.as_str()),
    ];
    let (s, refreshed) = o.token(&form, None).await;
    assert_eq!(s, 200, "{refreshed}");
    assert_eq!(auth_time(&refreshed), signed_up);
    let (s, h, _) = b.get(&with(&[("max_age", "soon")])).await;
    assert_eq!(s, 302);
    assert_eq!(
        param(&location(&h), "error").as_deref(),
        Some("invalid_request")
    );
}

in_both_shapes!(reauthentication_flow: reauthentication_embedded, reauthentication_production_shape);

/// Userinfo releases the claims of the granted scopes from the token
/// service's own copy of the user, follows profile changes, says whether the
/// email is verified (the Backend API's addresses are, hosted sign-up's are
/// not), and a deleted or banned user's tokens stop working.
async fn userinfo_flow(mode: Mode) {
    use crate::common::browser::{hidden, location, param};
    let g = Gatehouse::start(mode).await;
    let t = g.tenant().await;
    let (key, ins) = (t.dev.key.clone(), t.dev.id.clone());
    let o = Oauth {
        g: &g,
        ins: ins.clone(),
    };
    let app = g
        .create_app(
            &key,
            json!({ "name": "Profile reader", "public": true, "redirect_uris": [REDIRECT],
                    "scopes": "openid profile email", "consent_screen_enabled": false }),
        )
        .await;
    let client_id = app["client_id"].as_str().unwrap().to_owned();
    let userinfo = |token: String| {
        let url = g.url(&format!("/i/{ins}/oauth/userinfo"));
        let c = g.client.clone();
        async move {
            let res = c.get(url).bearer_auth(token).send().await.unwrap();
            (
                res.status().as_u16(),
                res.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };

    let mut b = Browser::new(&g, &ins);
    let both = access_token_for(&o, &mut b, &client_id, "openid profile email").await;
    let (_, v) = verify(&g, &key, &both, "/oauth_applications/access_tokens/verify").await;
    let user_id = v["subject"].as_str().unwrap().to_owned();
    let (s, patched) = g
        .call(
            &key,
            Method::PATCH,
            &format!("/v1/users/{user_id}"),
            Some(json!({ "first_name": "Ada", "last_name": "Lovelace", "username": "ada_l" })),
        )
        .await;
    assert_eq!(s, 200, "{patched}");
    let mut claims = Value::Null;
    for _ in 0..200 {
        let (s, c) = userinfo(both.clone()).await;
        assert_eq!(s, 200, "{c}");
        claims = c;
        if claims["given_name"] == "Ada" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(claims["sub"], user_id.as_str(), "{claims}");
    assert_eq!(claims["name"], "Ada Lovelace", "{claims}");
    assert_eq!(claims["family_name"], "Lovelace");
    assert_eq!(claims["preferred_username"], "ada_l");
    assert!(claims["email"].as_str().unwrap().ends_with("@example.com"));
    assert_eq!(
        claims["email_verified"], false,
        "hosted sign-up does not verify the address"
    );
    assert!(claims["updated_at"].is_i64());
    let (_, user) = g
        .call(&key, Method::GET, &format!("/v1/users/{user_id}"), None)
        .await;
    assert_eq!(
        user["email_addresses"][0]["verification"]["status"], "unverified",
        "{user}"
    );

    // A user the Backend API created has a verified address.
    let api_email = format!("{}@example.com", common::unique("api"));
    let (s, created) = g
        .call(
            &key,
            Method::POST,
            "/v1/users",
            Some(json!({ "email_address": [api_email], "password": "correct horse battery" })),
        )
        .await;
    assert_eq!(s, 200, "{created}");
    assert_eq!(
        created["email_addresses"][0]["verification"]["status"],
        "verified"
    );
    let mut api_browser = Browser::new(&g, &ins);
    let authorize = pkce_authorize(&client_id, "openid email");
    let (s, h, _) = api_browser.get(&authorize).await;
    assert_eq!(s, 302);
    let back = param(&location(&h), "redirect_url").unwrap();
    let (_, _, html) = api_browser.get("/sign-in").await;
    let csrf = hidden(&html, "csrf_token");
    let (s, _, _) = api_browser
        .post(
            "/sign-in",
            &[
                ("csrf_token", &csrf),
                ("email", &api_email),
                ("password", "correct horse battery"),
                ("redirect_url", &back),
            ],
        )
        .await;
    assert_eq!(s, 303);
    let code = code_for(&mut api_browser, &authorize).await;
    let api_token = redeem(&o, &client_id, &code).await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut c = Value::Null;
    for _ in 0..200 {
        let (s, v) = userinfo(api_token.clone()).await;
        assert_eq!(s, 200, "{v}");
        c = v;
        if c["email"].is_string() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(c["sub"], created["id"], "{c}");
    assert_eq!(c["email"], api_email.as_str(), "{c}");
    assert_eq!(c["email_verified"], true, "{c}");

    // Only what the scopes grant.
    let openid_only = access_token_for(&o, &mut b, &client_id, "openid").await;
    let (s, c) = userinfo(openid_only.clone()).await;
    assert_eq!(s, 200);
    assert_eq!(c, json!({ "sub": user_id }));
    let email_only = access_token_for(&o, &mut b, &client_id, "openid email").await;
    let (_, c) = userinfo(email_only).await;
    assert!(
        c["email"].is_string() && c.get("given_name").is_none(),
        "{c}"
    );

    // Deleting the user revokes its tokens through the bus.
    let (s, _) = g
        .call(&key, Method::DELETE, &format!("/v1/users/{user_id}"), None)
        .await;
    assert_eq!(s, 200);
    g.eventually("a deleted user's tokens are revoked", 10, || {
        let t = both.clone();
        let (g, key) = (&g, key.clone());
        async move {
            let (_, v) = verify(g, &key, &t, "/oauth_applications/access_tokens/verify").await;
            v["revoked"] == true
        }
    })
    .await;
    let (s, e) = userinfo(openid_only).await;
    assert_eq!((s, e["error"].as_str()), (401, Some("invalid_token")));
}

/// A code issued before a ban does not redeem after it: banned users get
/// no new tokens, whatever they hold.
async fn banned_flow(mode: Mode) {
    let g = Gatehouse::start(mode).await;
    let t = g.tenant().await;
    let (key, ins) = (t.dev.key.clone(), t.dev.id.clone());
    let o = Oauth {
        g: &g,
        ins: ins.clone(),
    };
    let app = g
        .create_app(
            &key,
            json!({ "name": "CLI", "public": true, "redirect_uris": [REDIRECT],
                    "scopes": "openid", "consent_screen_enabled": false }),
        )
        .await;
    let client_id = app["client_id"].as_str().unwrap().to_owned();
    let mut b = Browser::new(&g, &ins);
    let first = access_token_for(&o, &mut b, &client_id, "openid").await;
    let (_, v) = verify(&g, &key, &first, "/oauth_applications/access_tokens/verify").await;
    let user_id = v["subject"].as_str().unwrap().to_owned();
    let pending = code_for(&mut b, &pkce_authorize(&client_id, "openid")).await;
    let (s, _) = g
        .call(
            &key,
            Method::POST,
            &format!("/v1/users/{user_id}/ban"),
            None,
        )
        .await;
    assert_eq!(s, 200);
    g.eventually("the ban reaches the token service", 10, || {
        let (g, key, t) = (&g, key.clone(), first.clone());
        async move {
            let (_, v) = verify(g, &key, &t, "/oauth_applications/access_tokens/verify").await;
            v["revoked"] == true
        }
    })
    .await;
    let form = [
        ("grant_type", "authorization_code"),
        ("code", pending.as_str()),
        ("redirect_uri", REDIRECT),
        ("client_id", client_id.as_str()),
        ("code_verifier", VERIFIER),
    ];
    let (s, e) = o.token(&form, None).await;
    assert_eq!(
        (s, e["error"].as_str()),
        (400, Some("invalid_grant")),
        "{e}"
    );
}

/// `n` client_credentials access tokens, once the token service knows the
/// client.
/// A confidential application: its client id and secret.
async fn worker_app(g: &Gatehouse, key: &str) -> (String, String) {
    let app = g
        .create_app(
            key,
            json!({ "name": "Worker", "redirect_uris": [REDIRECT], "scopes": "openid" }),
        )
        .await;
    (
        app["client_id"].as_str().unwrap().to_owned(),
        app["client_secret"].as_str().unwrap().to_owned(),
    )
}

async fn client_credentials_tokens(o: &Oauth<'_>, id: &str, secret: &str, n: usize) -> Vec<String> {
    let mut issued = Vec::new();
    for _ in 0..300 {
        let (s, b) = o
            .token(&[("grant_type", "client_credentials")], Some((id, secret)))
            .await;
        if s == 200 {
            issued.push(b["access_token"].as_str().unwrap().to_owned());
            if issued.len() == n {
                return issued;
            }
        } else {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    panic!("the client never reached the token service");
}

/// Rotations of one instance's key at the same moment: each either makes
/// its key active, which the JWKS then publishes, or answers 409; none
/// answers 200 with a key that was never stored.
async fn concurrent_rotations(mode: Mode) {
    let g = Gatehouse::start(mode).await;
    let t = g.tenant().await;
    let ins = t.dev.id.clone();
    let path = format!("/admin/v1/instances/{ins}/signing_keys/rotate");
    let rotations = (0..8).map(|_| g.admin(Method::POST, &path, Some(json!({ "alg": "ES256" }))));
    let answers = futures_util::future::join_all(rotations).await;
    let jwks: Value = g
        .client
        .get(g.url(&format!("/i/{ins}/.well-known/jwks.json")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let published: Vec<&str> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap())
        .collect();
    let mut rotated = 0;
    for (status, body) in &answers {
        match status {
            200 => {
                rotated += 1;
                let kid = body["kid"].as_str().unwrap();
                assert!(
                    published.contains(&kid),
                    "{kid} answered but not published: {published:?}"
                );
            }
            409 => assert_eq!(
                body["errors"][0]["code"], "concurrent_modification",
                "{body}"
            ),
            other => panic!("rotation answered {other}: {body}"),
        }
    }
    assert!(rotated >= 1, "{answers:?}");
}

in_both_shapes!(concurrent_rotations: concurrent_rotations_embedded, concurrent_rotations_production_shape);

/// Private signing keys are stored encrypted under the deployment secret;
/// a process started with another secret cannot sign with them (a 500, not
/// a silent rotation) until the admin API rotates the key, and tokens of the
/// old key still verify.
#[tokio::test]
async fn signing_keys_are_encrypted_at_rest() {
    let mut g = Gatehouse::embedded().await;
    let t = g.tenant().await;
    let (key, ins) = (t.dev.key.clone(), t.dev.id.clone());
    let (id, secret) = worker_app(&g, &key).await;
    let before = {
        let o = Oauth {
            g: &g,
            ins: ins.clone(),
        };
        client_credentials_tokens(&o, &id, &secret, 1)
            .await
            .remove(0)
    };
    let url = format!(
        "sqlite:{}",
        g.data_dir.as_ref().unwrap().join("gatehouse.db").display()
    );
    let rows = stored_signing_keys(&url).await;
    assert_eq!(rows.len(), 1);
    assert!(
        rows[0].1.starts_with("ghenc1:") && !rows[0].1.contains("PRIVATE"),
        "{rows:?}"
    );

    g.kill();
    g.extra_args.extend([
        "--oauth-code-secret".to_owned(),
        "an-entirely-different-deployment-secret-0123".to_owned(),
    ]);
    g.spawn().await;
    let o = Oauth {
        g: &g,
        ins: ins.clone(),
    };
    let (s, e) = o
        .token(
            &[("grant_type", "client_credentials")],
            Some((&id, &secret)),
        )
        .await;
    assert_eq!((s, e["error"].as_str()), (500, Some("server_error")), "{e}");
    let (s, rot) = g
        .admin(
            Method::POST,
            &format!("/admin/v1/instances/{ins}/signing_keys/rotate"),
            None,
        )
        .await;
    assert_eq!(s, 200, "{rot}");
    let after = client_credentials_tokens(&o, &id, &secret, 1)
        .await
        .remove(0);
    assert_ne!(jwt_part(&before, 0)["kid"], jwt_part(&after, 0)["kid"]);
    for tok in [&before, &after] {
        let (s, v) = verify(&g, &key, tok, "/oauth_applications/access_tokens/verify").await;
        assert_eq!((s, v["revoked"].clone()), (200, json!(false)), "{v}");
    }
    let rows = stored_signing_keys(&url).await;
    assert_eq!(rows.len(), 2);
    assert_eq!(rows.iter().filter(|r| r.2).count(), 1, "{rows:?}");
}

/// (kid, stored private key, active) of every signing key in a database.
async fn stored_signing_keys(url: &str) -> Vec<(String, String, bool)> {
    use sea_orm::ConnectionTrait;
    let db = sea_orm::Database::connect(url).await.unwrap();
    let rows = db
        .query_all_raw(sea_orm::Statement::from_string(
            db.get_database_backend(),
            "SELECT kid, private_pem, active FROM tokens_signing_keys",
        ))
        .await
        .unwrap();
    let out = rows
        .iter()
        .map(|r| {
            (
                r.try_get("", "kid").unwrap(),
                r.try_get("", "private_pem").unwrap(),
                r.try_get("", "active").unwrap(),
            )
        })
        .collect();
    db.close().await.ok();
    out
}

/// The Backend API revokes one token (its family) or everything an
/// application's client holds; another instance's key can do neither.
async fn backend_revocation_flow(mode: Mode) {
    let g = Gatehouse::start(mode).await;
    let t = g.tenant().await;
    let (key, ins) = (t.dev.key.clone(), t.dev.id.clone());
    let o = Oauth {
        g: &g,
        ins: ins.clone(),
    };
    let app = g
        .create_app(
            &key,
            json!({ "name": "Worker", "redirect_uris": [REDIRECT], "scopes": "openid email" }),
        )
        .await;
    let (app_id, id, secret) = (
        app["id"].as_str().unwrap().to_owned(),
        app["client_id"].as_str().unwrap().to_owned(),
        app["client_secret"].as_str().unwrap().to_owned(),
    );
    let form = [("grant_type", "client_credentials")];
    let issued = client_credentials_tokens(&o, &id, &secret, 3).await;
    let revoke = "/v1/oauth_applications/access_tokens/revoke";
    let check = "/oauth_applications/access_tokens/verify";

    // Another instance's key: the token is not found, nothing is revoked.
    let (s, e) = verify(&g, &t.prod.key, &issued[0], revoke).await;
    assert_eq!(s, 404, "{e}");
    common::assert_error_shape(s, &e);
    let (s, e) = g
        .call(
            &t.prod.key,
            Method::POST,
            &format!("/v1/oauth_applications/{app_id}/revoke_tokens"),
            None,
        )
        .await;
    assert_eq!(s, 404, "{e}");
    let (_, v) = verify(&g, &key, &issued[0], check).await;
    assert_eq!(v["revoked"], false);

    // One token.
    let (s, v) = verify(&g, &key, &issued[0], revoke).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        (v["revoked"].clone(), v["revocation_reason"].clone()),
        (json!(true), json!("revoked"))
    );
    let (s, _, i) = o
        .post(
            "/oauth/token_info",
            &[("token", &issued[0])],
            Some((&id, &secret)),
        )
        .await;
    assert_eq!((s, i["active"].clone()), (200, json!(false)));
    let (_, v) = verify(&g, &key, &issued[1], check).await;
    assert_eq!(v["revoked"], false, "only that token's family");
    let (s, e) = g
        .call(
            &key,
            Method::POST,
            revoke,
            Some(json!({ "access_token": "not.a.jwt" })),
        )
        .await;
    assert_eq!(s, 404, "{e}");
    let (s, e) = g
        .call(&key, Method::POST, revoke, Some(json!({ "token": "x" })))
        .await;
    assert!(s == 400 || s == 422, "{s} {e}");
    common::assert_error_shape(s, &e);

    // Everything the application's client holds.
    let (s, r) = g
        .call(
            &key,
            Method::POST,
            &format!("/v1/oauth_applications/{app_id}/revoke_tokens"),
            None,
        )
        .await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["revoked_families"], 2, "{r}");
    for tok in &issued[1..] {
        let (_, v) = verify(&g, &key, tok, check).await;
        assert_eq!(v["revoked"], true, "{v}");
    }
    // New tokens still come: the application was not deleted.
    let (s, _) = o.token(&form, Some((&id, &secret))).await;
    assert_eq!(s, 200);
    let (s, _) = g
        .call(
            &key,
            Method::POST,
            "/v1/oauth_applications/oa_unknown/revoke_tokens",
            None,
        )
        .await;
    assert_eq!(s, 404);
}

/// Opaque access tokens (`oat_…`), an application setting beside JWTs:
/// introspection, userinfo, refresh and the Backend API verify accept them;
/// verify answers a revoked or expired one 404 (the official SDK takes any
/// 200 as valid); another instance's key finds nothing; switching the
/// setting changes the tokens issued next.
async fn opaque_flow(mode: Mode) {
    let g = Gatehouse::with_test_clock(mode).await;
    let t = g.tenant().await;
    let (key, ins) = (t.dev.key.clone(), t.dev.id.clone());
    let o = Oauth {
        g: &g,
        ins: ins.clone(),
    };
    let check = "/oauth_applications/access_tokens/verify";
    let userinfo = |token: &str| {
        let req = g
            .client
            .get(g.url(&format!("/i/{ins}/oauth/userinfo")))
            .bearer_auth(token);
        async move {
            let res = req.send().await.unwrap();
            (
                res.status().as_u16(),
                res.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };
    let introspect = |token: String, client_id: String| {
        let o = &o;
        async move {
            let form = [("token", token.as_str()), ("client_id", client_id.as_str())];
            let (s, _, v) = o.post("/oauth/token_info", &form, None).await;
            assert_eq!(s, 200, "{v}");
            v
        }
    };

    // The setting: JWT unless asked, anything else is refused.
    worker_app(&g, &key).await;
    let (_, jwt_app) = g
        .call(&key, Method::GET, "/v1/oauth_applications", None)
        .await;
    assert!(
        jwt_app["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|a| a["access_token_format"] == "jwt"),
        "{jwt_app}"
    );
    for (method, path) in [
        (Method::POST, "/v1/oauth_applications".to_owned()),
        (Method::PATCH, "/v1/oauth_applications/none".to_owned()),
    ] {
        let (s, e) = g
            .call(
                &key,
                method,
                &path,
                Some(json!({ "name": "X", "access_token_format": "paseto" })),
            )
            .await;
        assert_eq!(s, 422, "{e}");
        assert_eq!(e["errors"][0]["meta"]["param_name"], "access_token_format");
    }

    // A user's opaque token through the code flow, and its refresh.
    let app = g
        .create_app(
            &key,
            json!({ "name": "MCP client", "public": true, "redirect_uris": [REDIRECT],
                    "scopes": "openid email offline_access", "consent_screen_enabled": false,
                    "access_token_format": "opaque" }),
        )
        .await;
    assert_eq!(app["access_token_format"], "opaque", "{app}");
    let client_id = app["client_id"].as_str().unwrap().to_owned();
    let mut b = Browser::new(&g, &ins);
    let code = code_for(
        &mut b,
        &pkce_authorize(&client_id, "openid email offline_access"),
    )
    .await;
    let tok = redeem(&o, &client_id, &code).await;
    let first = tok["access_token"].as_str().unwrap().to_owned();
    assert!(first.starts_with("oat_") && !first.contains('.'), "{first}");
    assert_eq!(
        jwt_part(tok["id_token"].as_str().unwrap(), 1)["sub"]
            .as_str()
            .map(|s| s.starts_with("user_")),
        Some(true),
        "the ID token stays a JWT"
    );
    let (s, v) = verify(&g, &key, &first, check).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["object"], "clerk_idp_oauth_access_token");
    assert_eq!(
        (v["revoked"].clone(), v["expired"].clone()),
        (json!(false), json!(false))
    );
    let user_id = v["subject"].as_str().unwrap().to_owned();
    assert!(user_id.starts_with("user_"), "{v}");
    let (s, c) = userinfo(&first).await;
    assert_eq!((s, c["sub"].as_str()), (200, Some(user_id.as_str())), "{c}");
    let i = introspect(first.clone(), client_id.clone()).await;
    assert_eq!(
        (i["active"].clone(), i["sub"].as_str()),
        (json!(true), Some(user_id.as_str())),
        "{i}"
    );
    let (s, e) = verify(&g, &t.prod.key, &first, check).await;
    assert_eq!(s, 404, "another instance's key: {e}");
    let (s, e) = verify(&g, &key, &format!("{first}x"), check).await;
    assert_eq!(s, 404, "an unknown opaque token: {e}");

    let refresh = tok["refresh_token"].as_str().unwrap().to_owned();
    let (s, next) = o
        .token(
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh.as_str()),
                ("client_id", client_id.as_str()),
            ],
            None,
        )
        .await;
    assert_eq!(s, 200, "{next}");
    let second = next["access_token"].as_str().unwrap().to_owned();
    assert!(second.starts_with("oat_") && second != first);

    // Expired: verify is 404, introspection inactive, userinfo 401.
    g.advance_clock(61 * 60 * 1000).await;
    let (s, e) = verify(&g, &key, &first, check).await;
    assert_eq!(s, 404, "an expired opaque token: {e}");
    common::assert_error_shape(s, &e);
    assert_eq!(
        introspect(first.clone(), client_id.clone()).await["active"],
        false
    );
    assert_eq!(userinfo(&first).await.0, 401);

    // Revoked (RFC 7009 by its client): the same at once.
    let refresh = next["refresh_token"].as_str().unwrap().to_owned();
    let (s, fresh) = o
        .token(
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh.as_str()),
                ("client_id", client_id.as_str()),
            ],
            None,
        )
        .await;
    assert_eq!(s, 200, "{fresh}");
    let live = fresh["access_token"].as_str().unwrap().to_owned();
    assert_eq!(verify(&g, &key, &live, check).await.0, 200);
    let (s, _, _) = o
        .post(
            "/oauth/revoke",
            &[("token", live.as_str()), ("client_id", client_id.as_str())],
            None,
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(verify(&g, &key, &live, check).await.0, 404);
    assert_eq!(
        introspect(live.clone(), client_id.clone()).await["active"],
        false
    );
    assert_eq!(userinfo(&live).await.0, 401);

    // A machine's opaque token; switching the application to JWTs changes
    // the next tokens, not the ones issued.
    let (s, machine) = g
        .call(
            &key,
            Method::POST,
            "/v1/oauth_applications",
            Some(
                json!({ "name": "Worker", "redirect_uris": [REDIRECT], "scopes": "openid",
                         "access_token_format": "opaque" }),
            ),
        )
        .await;
    assert_eq!(s, 200, "{machine}");
    let (id, secret) = (
        machine["client_id"].as_str().unwrap().to_owned(),
        machine["client_secret"].as_str().unwrap().to_owned(),
    );
    let opaque = client_credentials_tokens(&o, &id, &secret, 1)
        .await
        .remove(0);
    assert!(opaque.starts_with("oat_"), "{opaque}");
    let (_, v) = verify(&g, &key, &opaque, check).await;
    assert_eq!(
        (v["subject"].as_str(), v["client_id"].as_str()),
        (Some(id.as_str()), Some(id.as_str()))
    );
    let machine_id = machine["id"].as_str().unwrap();
    let (s, patched) = g
        .call(
            &key,
            Method::PATCH,
            &format!("/v1/oauth_applications/{machine_id}"),
            Some(json!({ "access_token_format": "jwt" })),
        )
        .await;
    assert_eq!(
        (s, patched["access_token_format"].as_str()),
        (200, Some("jwt")),
        "{patched}"
    );
    g.eventually("the token service issues JWTs to the client", 10, || {
        let (o, id, secret) = (&o, id.clone(), secret.clone());
        async move {
            let (s, b) = o
                .token(
                    &[("grant_type", "client_credentials")],
                    Some((&id, &secret)),
                )
                .await;
            s == 200 && b["access_token"].as_str().unwrap().split('.').count() == 3
        }
    })
    .await;
    assert_eq!(
        verify(&g, &key, &opaque, check).await.0,
        200,
        "issued tokens stay opaque"
    );
}

in_both_shapes!(opaque_flow: opaque_embedded, opaque_production_shape);
in_both_shapes!(backend_revocation_flow: backend_revocation_embedded, backend_revocation_production_shape);
in_both_shapes!(userinfo_flow: userinfo_embedded, userinfo_production_shape);
in_both_shapes!(banned_flow: banned_embedded, banned_production_shape);
in_both_shapes!(tokens_flow: tokens_embedded, tokens_production_shape);

/// Whether the Backend API verify says the token is revoked.
async fn is_revoked(g: &Gatehouse, key: &str, token: &str) -> bool {
    let (s, v) = verify(g, key, token, "/oauth_applications/access_tokens/verify").await;
    assert_eq!(s, 200, "{v}");
    v["revoked"].as_bool().unwrap()
}

/// Asks a Redis server for a value.
async fn redis_get(url: &str, key: &str) -> Option<String> {
    let client = redis::Client::open(url).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    redis::cmd("GET")
        .arg(key)
        .query_async(&mut conn)
        .await
        .unwrap()
}

/// Waits until the deployment's revocation set is trusted again (its
/// marker set after a refill).
async fn revocation_set_ready(url: &str, prefix: &str) {
    for _ in 0..200 {
        if redis_get(url, &format!("{prefix}gatehouse:tokrev:ready"))
            .await
            .is_some()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the revocation set was never refilled");
}

/// Verification asks the Redis revocation set, which every replica writes
/// before a revocation commits. With Redis stopped, revoking still works
/// and both processes answer from the database; a Redis that comes back
/// empty is refilled from the database before it is trusted again.
#[tokio::test]
async fn revocation_set_survives_redis_loss() {
    let port = common::free_port();
    let redis_url = format!("redis://127.0.0.1:{port}");
    let mut redis = Some(common::RedisServer::start(port).await);
    let g = Gatehouse::production_custom(
        common::TestDb::create().await,
        common::kafka_brokers(),
        redis_url.clone(),
        common::high_limits(),
    )
    .await;
    let g2 = g.sibling().await;
    let t = g.tenant().await;
    let key = t.prod.key.clone();
    let o = Oauth {
        g: &g,
        ins: t.prod.id.clone(),
    };
    let (id, secret) = worker_app(&g, &key).await;
    let issued = client_credentials_tokens(&o, &id, &secret, 3).await;
    let family = |i: usize| {
        let sid = jwt_part(&issued[i], 1)["sid"].as_str().unwrap().to_owned();
        // Keys carry the deployment's prefix (by default its topic prefix).
        format!("{}gatehouse:tokrev:{sid}", g.topic_prefix)
    };
    let revoke = "/v1/oauth_applications/access_tokens/revoke";
    revocation_set_ready(&redis_url, &g.topic_prefix).await;

    // Revoked on one process, at once revoked on the other, from the set.
    let (s, v) = verify(&g, &key, &issued[0], revoke).await;
    assert_eq!(s, 200, "{v}");
    assert!(redis_get(&redis_url, &family(0)).await.is_some());
    assert!(is_revoked(&g2, &key, &issued[0]).await);
    assert!(!is_revoked(&g2, &key, &issued[1]).await);

    // Redis stopped: revoking works, both processes answer from the database.
    drop(redis.take());
    let (s, v) = verify(&g, &key, &issued[1], revoke).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["revoked"], true);
    for p in [&g, &g2] {
        assert!(is_revoked(p, &key, &issued[0]).await);
        assert!(is_revoked(p, &key, &issued[1]).await);
        assert!(!is_revoked(p, &key, &issued[2]).await);
    }

    // Back, but empty: the database answers until the set is refilled
    // with both revocations, the one made while it was down included.
    let _redis = common::RedisServer::start(port).await;
    assert!(is_revoked(&g2, &key, &issued[1]).await);
    revocation_set_ready(&redis_url, &g.topic_prefix).await;
    assert!(redis_get(&redis_url, &family(0)).await.is_some());
    assert!(redis_get(&redis_url, &family(1)).await.is_some());
    assert!(redis_get(&redis_url, &family(2)).await.is_none());
    for p in [&g, &g2] {
        assert!(is_revoked(p, &key, &issued[0]).await);
        assert!(is_revoked(p, &key, &issued[1]).await);
        assert!(!is_revoked(p, &key, &issued[2]).await);
    }
}

/// One number from the test's database.
async fn count(url: &str, sql: &str, value: &str) -> i64 {
    use sea_orm::ConnectionTrait;
    let db = sea_orm::Database::connect(url).await.unwrap();
    let row = db
        .query_one_raw(sea_orm::Statement::from_sql_and_values(
            db.get_database_backend(),
            sql,
            [value.into()],
        ))
        .await
        .unwrap()
        .unwrap();
    db.close().await.ok();
    row.try_get("", "n").unwrap()
}

/// Concurrent client_credentials requests share transactions (group
/// commit) on two processes; each token is still its own event with its
/// own rows. A client read from a process's cache is checked against the
/// row before its token commits: a secret rotated or a client deleted is
/// refused at once on a replica whose cache still holds the old client,
/// and the new secret works there at once.
#[tokio::test]
async fn client_credentials_group_commit() {
    let g = Gatehouse::production().await;
    let g2 = g.sibling().await;
    let t = g.tenant().await;
    let key = t.prod.key.clone();
    let ins = t.prod.id.clone();
    let (o, o2) = (
        Oauth {
            g: &g,
            ins: ins.clone(),
        },
        Oauth {
            g: &g2,
            ins: ins.clone(),
        },
    );
    let app = g
        .create_app(
            &key,
            json!({ "name": "Worker", "redirect_uris": [REDIRECT], "scopes": "openid" }),
        )
        .await;
    let field = |k: &str| app[k].as_str().unwrap().to_owned();
    let (app_id, id, secret) = (field("id"), field("client_id"), field("client_secret"));
    let mut issued = client_credentials_tokens(&o, &id, &secret, 1).await;
    issued.extend(client_credentials_tokens(&o2, &id, &secret, 1).await);

    let cc = [("grant_type", "client_credentials")];
    let answers = futures_util::future::join_all((0..48).map(|i| {
        let o = if i % 2 == 0 { &o } else { &o2 };
        o.token(&cc, Some((&id, &secret)))
    }))
    .await;
    for (s, b) in &answers {
        assert_eq!(*s, 200, "{b}");
        issued.push(b["access_token"].as_str().unwrap().to_owned());
    }
    let sids: std::collections::HashSet<String> = issued
        .iter()
        .map(|t| jwt_part(t, 1)["sid"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(sids.len(), 50, "every token has its own family");
    let url = g.db_url.clone();
    let events = "SELECT count(*) AS n FROM tokens_events \
                  WHERE event_type = 'token.issued' AND instance_id = $1";
    assert_eq!(count(&url, events, &ins).await, 50);
    let families = "SELECT count(*) AS n FROM tokens_families f \
                    JOIN tokens_access_tokens a ON a.family_id = f.id WHERE f.client_id = $1";
    assert_eq!(count(&url, families, &id).await, 50);
    for token in [&issued[2], &issued[49]] {
        assert!(!is_revoked(&g2, &key, token).await);
    }
    // Every one of them went through a group commit, on one process or the other.
    let mut grouped = 0.0;
    for p in [&g, &g2] {
        let metrics = p.client.get(p.url("/metrics")).send().await.unwrap();
        let text = metrics.text().await.unwrap();
        let sum = text
            .lines()
            .find_map(|l| l.strip_prefix("gatehouse_token_group_commit_size_sum "))
            .unwrap_or_else(|| panic!("no group commit metric in {text}"));
        grouped += sum.trim().parse::<f64>().unwrap();
    }
    assert_eq!(grouped, 50.0);

    // A new secret; the second process has just cached the old client.
    let (s, _) = o2.token(&cc, Some((&id, &secret))).await;
    assert_eq!(s, 200);
    let old_hash = format!(
        "{:x}",
        <sha2::Sha256 as sha2::Digest>::digest(secret.as_bytes())
    );
    let (s, rotated) = g
        .call(
            &key,
            Method::POST,
            &format!("/v1/oauth_applications/{app_id}/rotate_secret"),
            None,
        )
        .await;
    assert_eq!(s, 200, "{rotated}");
    let new_secret = rotated["client_secret"].as_str().unwrap().to_owned();
    let stale = "SELECT count(*) AS n FROM tokens_clients WHERE secret_hash = $1";
    g.eventually("the read model has the new secret", 20, || async {
        count(&url, stale, &old_hash).await == 0
    })
    .await;
    let (s, b) = o2.token(&cc, Some((&id, &secret))).await;
    assert_eq!(
        (s, b["error"].as_str()),
        (401, Some("invalid_client")),
        "{b}"
    );
    let (s, b) = o2.token(&cc, Some((&id, &new_secret))).await;
    assert_eq!(s, 200, "{b}");
    issued.push(b["access_token"].as_str().unwrap().to_owned());
    assert_eq!(count(&url, events, &ins).await, 52);

    // Deleted: refused at once everywhere, and every token it held revoked.
    let (s, _) = o2.token(&cc, Some((&id, &new_secret))).await;
    assert_eq!(s, 200);
    let (s, b) = g
        .call(
            &key,
            Method::DELETE,
            &format!("/v1/oauth_applications/{app_id}"),
            None,
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let known = "SELECT count(*) AS n FROM tokens_clients WHERE client_id = $1";
    g.eventually("the read model forgets the client", 20, || async {
        count(&url, known, &id).await == 0
    })
    .await;
    for o in [&o, &o2] {
        let (s, b) = o.token(&cc, Some((&id, &new_secret))).await;
        assert_eq!(
            (s, b["error"].as_str()),
            (401, Some("invalid_client")),
            "{b}"
        );
    }
    let standing = "SELECT count(*) AS n FROM tokens_families \
                    WHERE client_id = $1 AND revoked_at IS NULL";
    assert_eq!(count(&url, standing, &id).await, 0);
    for token in [&issued[0], &issued[30], issued.last().unwrap()] {
        assert!(is_revoked(&g2, &key, token).await);
    }
}
