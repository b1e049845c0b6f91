//! Webhook endpoints through the Backend API, in both shapes: create with
//! a `whsec_` secret shown once, URL rules per environment (production:
//! https to public addresses only; development: http on localhost too),
//! list pagination, get, update, disable and re-enable, secret rotation,
//! delete, bad input in the one error shape, instance isolation, and the
//! event catalog.

use crate::common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::common::{Gatehouse, Mode, assert_error_shape};
use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use base64::Engine;
use reqwest::Method;
use serde_json::{Value, json};

const BASE: &str = "/v1/webhooks/endpoints";

fn secret_bytes(secret: &str) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(secret.strip_prefix("whsec_").unwrap())
        .unwrap()
}

async fn endpoints_flow(mode: Mode) {
    let g = Gatehouse::start(mode).await;
    let t = g.tenant().await;
    let (dev, prod) = (t.dev.key.as_str(), t.prod.key.as_str());

    // Create: the secret is shown here and is a Standard Webhooks secret.
    let (s, ep) = g
        .call(
            dev,
            Method::POST,
            BASE,
            Some(
                json!({ "url": "http://localhost:4000/hooks", "description": "local",
                         "filter_types": ["user.created", "user.created", "user.deleted"] }),
            ),
        )
        .await;
    assert_eq!(s, 200, "{ep}");
    assert_eq!(ep["object"], "webhook_endpoint");
    assert_eq!(ep["filter_types"], json!(["user.created", "user.deleted"]));
    assert_eq!(ep["disabled"], false);
    let id = ep["id"].as_str().unwrap().to_owned();
    let first_secret = ep["secret"].as_str().unwrap().to_owned();
    assert!(secret_bytes(&first_secret).len() >= 24);
    let path = format!("{BASE}/{id}");
    let (s, got) = g.call(dev, Method::GET, &path, None).await;
    assert_eq!(s, 200);
    assert!(
        got.get("secret").is_none(),
        "the secret is not in the object"
    );
    let (_, sec) = g
        .call(dev, Method::GET, &format!("{path}/secret"), None)
        .await;
    assert_eq!(sec["secret"], first_secret.as_str());

    // Idempotency-Key: a retry gets the first answer (the same endpoint and
    // secret), marked replayed; another body under the same key is 422.
    let post_once = |body: Value| {
        let (g, dev) = (&g, dev.to_owned());
        async move {
            let res = g
                .client
                .post(g.url(BASE))
                .bearer_auth(dev)
                .header("idempotency-key", "create-endpoint-1")
                .json(&body)
                .send()
                .await
                .unwrap();
            let replayed = res.headers().get("idempotent-replayed").is_some();
            (
                res.status().as_u16(),
                replayed,
                res.json::<Value>().await.unwrap(),
            )
        }
    };
    let once = json!({ "url": "https://93.184.216.34/once" });
    let (s1, r1, first) = post_once(once.clone()).await;
    let (s2, r2, again) = post_once(once).await;
    assert_eq!((s1, r1, s2, r2), (200, false, 200, true), "{first} {again}");
    assert_eq!(first["id"], again["id"]);
    assert_eq!(first["secret"], again["secret"]);
    let (s, _, e) = post_once(json!({ "url": "https://93.184.216.34/other" })).await;
    assert_eq!(
        (s, e["errors"][0]["code"].clone()),
        (422, json!("idempotency_key_reused"))
    );
    let once_path = format!("{BASE}/{}", first["id"].as_str().unwrap());
    let (s, _) = g.call(dev, Method::DELETE, &once_path, None).await;
    assert_eq!(s, 200);

    // URL rules.
    for (key, url, ok) in [
        (prod, "http://localhost:4000/hooks", false),
        (prod, "https://127.0.0.1/hooks", false),
        (prod, "https://10.0.0.1/hooks", false),
        (prod, "https://169.254.169.254/latest", false),
        (prod, "https://[::1]/hooks", false),
        (prod, "https://localhost/hooks", false),
        (prod, "https://93.184.216.34/hooks", true),
        (dev, "http://example.com/hooks", false),
        (dev, "ftp://localhost/x", false),
        (dev, "https://user:pw@example.com/hooks", false),
        (dev, "not a url", false),
        (dev, "https://93.184.216.34/hooks", true),
    ] {
        let (s, b) = g
            .call(key, Method::POST, BASE, Some(json!({ "url": url })))
            .await;
        if ok {
            assert_eq!(s, 200, "{url}: {b}");
        } else {
            assert_eq!(s, 422, "{url}: {b}");
            assert_error_shape(s, &b);
            assert_eq!(b["errors"][0]["meta"]["param_name"], "url", "{b}");
        }
    }

    // Bad input.
    for bad in [
        json!({}),
        json!({ "url": "http://localhost/x", "filter_types": ["no.such_event"] }),
        json!({ "url": "http://localhost/x", "filter_types": ["token.issued"] }),
        json!({ "url": "http://localhost/x", "colour": "blue" }),
        json!({ "url": 7 }),
    ] {
        let (s, b) = g.call(dev, Method::POST, BASE, Some(bad.clone())).await;
        assert!(s == 400 || s == 422, "{bad}: {s} {b}");
        assert_error_shape(s, &b);
    }

    // Update: filter back to every type with null, disable, re-enable.
    let (s, up) = g
        .call(
            dev,
            Method::PATCH,
            &path,
            Some(json!({ "filter_types": null, "disabled": true, "description": "off" })),
        )
        .await;
    assert_eq!(s, 200, "{up}");
    assert_eq!(up["filter_types"], Value::Null);
    assert_eq!(up["disabled"], true);
    let (s, en) = g
        .call(dev, Method::POST, &format!("{path}/enable"), None)
        .await;
    assert_eq!((s, en["disabled"].clone()), (200, json!(false)));
    let (s, b) = g
        .call(
            dev,
            Method::PATCH,
            &path,
            Some(json!({ "url": "https://10.0.0.1/x" })),
        )
        .await;
    assert_eq!(s, 422, "development too stays off private networks: {b}");
    let (s, b) = g
        .call(
            dev,
            Method::PATCH,
            &path,
            Some(json!({ "url": "https://localhost:8443/x" })),
        )
        .await;
    assert_eq!(s, 200, "but may use localhost: {b}");

    // Rotation: a new secret; the old one keeps signing for 24 hours.
    let (s, rot) = g
        .call(dev, Method::POST, &format!("{path}/rotate_secret"), None)
        .await;
    assert_eq!(s, 200, "{rot}");
    let second = rot["secret"].as_str().unwrap();
    assert_ne!(second, first_secret);
    assert_eq!(secret_bytes(second).len(), 32);
    let until = rot["previous_secret_expires_at"].as_i64().unwrap();
    let day_ms = 24 * 3600 * 1000;
    assert!((until - day_ms - ep["created_at"].as_i64().unwrap()).abs() < 600_000);
    let (_, sec) = g
        .call(dev, Method::GET, &format!("{path}/secret"), None)
        .await;
    assert_eq!(sec["secret"], second);

    // Pagination: every endpoint reachable.
    for i in 0..11 {
        let (s, _) = g
            .call(
                dev,
                Method::POST,
                BASE,
                Some(json!({ "url": format!("http://localhost:5000/{i}") })),
            )
            .await;
        assert_eq!(s, 200);
    }
    let (s, page) = g
        .call(dev, Method::GET, &format!("{BASE}?limit=5&offset=10"), None)
        .await;
    assert_eq!(s, 200, "{page}");
    assert_eq!(page["total_count"], 13);
    assert_eq!(page["data"].as_array().unwrap().len(), 3);
    let (_, all) = g
        .call(dev, Method::GET, &format!("{BASE}?limit=500"), None)
        .await;
    assert_eq!(all["data"][0]["id"], id.as_str(), "oldest first");
    let (s, b) = g
        .call(dev, Method::GET, &format!("{BASE}?limit=0"), None)
        .await;
    assert_eq!(s, 422, "{b}");

    // Isolation: the production instance's key sees none of it.
    let (_, theirs) = g.call(prod, Method::GET, BASE, None).await;
    assert!(
        theirs["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["id"] != id.as_str()),
        "{theirs}"
    );
    for (method, p) in [
        (Method::GET, path.clone()),
        (Method::PATCH, path.clone()),
        (Method::DELETE, path.clone()),
        (Method::GET, format!("{path}/secret")),
        (Method::POST, format!("{path}/rotate_secret")),
        (Method::POST, format!("{path}/enable")),
    ] {
        let body = (method == Method::PATCH).then(|| json!({ "disabled": true }));
        let (s, b) = g.call(prod, method.clone(), &p, body).await;
        assert_eq!(s, 404, "{method} {p}: {b}");
        assert_error_shape(s, &b);
    }
    let (_, still) = g.call(dev, Method::GET, &path, None).await;
    assert_eq!(still["disabled"], false);

    // The projection rebuilds from the events to the same endpoints.
    if mode == Mode::Production {
        let (_, before) = g
            .call(dev, Method::GET, &format!("{BASE}?limit=500"), None)
            .await;
        let out = std::process::Command::new(common::BIN)
            .args(["rebuild", "webhook_endpoints", "--database-url", &g.db_url])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let (_, after) = g
            .call(dev, Method::GET, &format!("{BASE}?limit=500"), None)
            .await;
        assert_eq!(after, before);
        let (_, sec) = g
            .call(dev, Method::GET, &format!("{path}/secret"), None)
            .await;
        assert_eq!(sec["secret"], second);
    }

    // Delete.
    let (s, d) = g.call(dev, Method::DELETE, &path, None).await;
    assert_eq!((s, d["deleted"].clone()), (200, json!(true)));
    let (s, _) = g.call(dev, Method::GET, &path, None).await;
    assert_eq!(s, 404);
    let (s, _) = g.call(dev, Method::DELETE, &path, None).await;
    assert_eq!(s, 404);
}

/// The catalog lists every public type with an example built by the
/// delivery payload code, for the caller's instance.
async fn catalog_flow(mode: Mode) {
    let g = Gatehouse::start(mode).await;
    let t = g.tenant().await;
    let (s, cat) = g
        .call(&t.dev.key, Method::GET, "/v1/webhooks/event_types", None)
        .await;
    assert_eq!(s, 200, "{cat}");
    let entries = cat["data"].as_array().unwrap();
    assert_eq!(cat["total_count"], entries.len());
    let names: Vec<&str> = entries
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    for expected in [
        "user.created",
        "user.updated",
        "user.deleted",
        "session.created",
        "oauth_application.created",
        "oauth_application.updated",
        "oauth_application.deleted",
    ] {
        assert!(
            names.contains(&expected),
            "{expected} missing from {names:?}"
        );
    }
    assert!(
        !names
            .iter()
            .any(|n| n.starts_with("token.") || n.starts_with("webhook_"))
    );
    for e in entries {
        let ex = &e["example"];
        assert!(
            e["description"].as_str().is_some_and(|d| !d.is_empty()),
            "{e}"
        );
        assert_eq!(ex["object"], "event", "{e}");
        assert_eq!(ex["type"], e["name"], "{e}");
        assert_eq!(ex["instance_id"], t.dev.id.as_str());
        assert!(ex["timestamp"].is_i64());
        assert!(ex["data"]["id"].is_string(), "{e}");
    }
    let user = &entries[names.iter().position(|n| *n == "user.created").unwrap()]["example"];
    assert_eq!(user["data"]["object"], "user");
    assert_eq!(
        user["data"]["email_addresses"][0]["email_address"],
        "ada@example.com"
    );
    let app = &entries[names
        .iter()
        .position(|n| *n == "oauth_application.created")
        .unwrap()]["example"];
    assert!(app["data"].get("client_secret").is_none());
    assert_eq!(
        app["data"]["authorize_url"],
        g.url(&format!("/i/{}/oauth/authorize", t.dev.id))
    );
    let (s, _) = g
        .call(
            "sk_test_nope",
            Method::GET,
            "/v1/webhooks/event_types",
            None,
        )
        .await;
    assert_eq!(s, 401);
}

/// What the test's receiver got: path, headers, body.
type Received = Arc<Mutex<Vec<(String, HashMap<String, String>, String)>>>;

/// A real HTTP receiver on loopback that records every request and answers
/// 500 to the first `fail_first` of them, 204 after.
fn receiver(fail_first: usize) -> (String, Received) {
    slow_receiver(fail_first, 0)
}

/// [`receiver`], taking `delay_ms` over each answer.
fn slow_receiver(fail_first: usize, delay_ms: u64) -> (String, Received) {
    let got: Received = Arc::new(Mutex::new(Vec::new()));
    let sink = got.clone();
    let url = serve(move |req: HttpRequest, body: web::Bytes| {
        let sink = sink.clone();
        async move {
            tokio::time::sleep(std::time::Duration::from_millis(delay_ms)).await;
            let headers = req
                .headers()
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_owned()))
                .collect();
            let mut got = sink.lock().unwrap();
            got.push((
                req.path().to_owned(),
                headers,
                String::from_utf8_lossy(&body).into_owned(),
            ));
            if got.len() <= fail_first {
                HttpResponse::InternalServerError().body("not now")
            } else {
                HttpResponse::NoContent().finish()
            }
        }
    });
    (url, got)
}

/// Serves `handler` for every request, on a free port; the base URL.
fn serve<F, Args>(handler: F) -> String
where
    F: actix_web::Handler<Args> + Clone + Send + 'static,
    Args: actix_web::FromRequest + 'static,
    F::Output: actix_web::Responder + 'static,
{
    let port = common::free_port();
    let server = HttpServer::new(move || App::new().default_service(web::to(handler.clone())))
        .workers(1)
        .bind(("127.0.0.1", port))
        .unwrap()
        .run();
    tokio::spawn(server);
    format!("http://127.0.0.1:{port}")
}

/// The Standard Webhooks check, written here from the specification (not
/// the production signing code): base64 HMAC-SHA256 over "id.timestamp.body"
/// with the base64-decoded secret, one of the space-separated `v1,` values.
fn signature_ok(secret: &str, headers: &HashMap<String, String>, body: &str) -> bool {
    use hmac::Mac;
    let key = secret_bytes(secret);
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
    let signed = format!(
        "{}.{}.{body}",
        headers["webhook-id"], headers["webhook-timestamp"]
    );
    mac.update(signed.as_bytes());
    let expected = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    headers["webhook-signature"]
        .split(' ')
        .any(|s| s.strip_prefix("v1,") == Some(expected.as_str()))
}

/// A public event reaches the endpoints whose filter takes it, signed per
/// Standard Webhooks (and under the svix-* names), and not the others.
async fn delivery_flow(mode: Mode) {
    let g = Gatehouse::start(mode).await;
    let t = g.tenant().await;
    let key = t.dev.key.as_str();
    let (url, got) = receiver(0);
    let mut secrets = Vec::new();
    let mut ids = Vec::new();
    for (path, types) in [
        ("a", json!(["user.created"])),
        ("b", json!(["user.deleted"])),
    ] {
        let (s, ep) = g
            .call(
                key,
                Method::POST,
                BASE,
                Some(json!({ "url": format!("{url}/{path}"), "filter_types": types })),
            )
            .await;
        assert_eq!(s, 200, "{ep}");
        secrets.push(ep["secret"].as_str().unwrap().to_owned());
        ids.push(ep["id"].as_str().unwrap().to_owned());
    }
    let user = g.create_user(key, "hooked@example.com").await;
    let user_id = user["id"].as_str().unwrap().to_owned();
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    g.eventually("user.created is delivered", 20, || {
        let got = got.clone();
        async move { !got.lock().unwrap().is_empty() }
    })
    .await;
    let (path, headers, body) = got.lock().unwrap()[0].clone();
    assert_eq!(path, "/a");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["type"], "user.created");
    assert_eq!(v["object"], "event");
    assert_eq!(v["instance_id"], t.dev.id.as_str());
    assert_eq!(v["data"]["id"], user_id.as_str());
    assert_eq!(v["data"]["object"], "user");
    assert!(headers["webhook-id"].starts_with("msg_"));
    assert_eq!(headers["svix-id"], headers["webhook-id"]);
    assert_eq!(headers["svix-signature"], headers["webhook-signature"]);
    let ts: i64 = headers["webhook-timestamp"].parse().unwrap();
    assert!((ts - started).abs() < 60, "{ts} vs {started}");
    assert!(signature_ok(&secrets[0], &headers, &body), "{headers:?}");
    assert!(!signature_ok(&secrets[1], &headers, &body));

    // History: the message, its delivery state and its attempt.
    let messages = format!("{BASE}/{}/messages", ids[0]);
    g.eventually("the attempt is recorded", 10, || {
        let (g, messages) = (&g, messages.clone());
        async move {
            let (_, l) = g.call(key, Method::GET, &messages, None).await;
            l["data"][0]["status"] == "succeeded"
        }
    })
    .await;
    let (s, listed) = g.call(key, Method::GET, &messages, None).await;
    assert_eq!(s, 200, "{listed}");
    assert_eq!(listed["total_count"], 1);
    let msg = &listed["data"][0];
    assert_eq!(msg["id"], headers["webhook-id"].as_str());
    assert_eq!(msg["event_type"], "user.created");
    assert_eq!(msg["attempts"], 1);
    assert_eq!(msg["payload"], v);
    let attempts = format!("{messages}/{}/attempts", headers["webhook-id"]);
    let (s, a) = g.call(key, Method::GET, &attempts, None).await;
    assert_eq!(s, 200, "{a}");
    assert_eq!(a["data"][0]["status_code"], 204, "{a}");
    let metrics = g
        .client
        .get(g.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for name in [
        "gatehouse_webhook_attempts_total{outcome=\"succeeded\"} ",
        "gatehouse_webhook_attempt_duration_seconds_bucket",
        "gatehouse_webhook_queue_depth ",
        "gatehouse_webhook_oldest_pending_seconds ",
    ] {
        assert!(metrics.contains(name), "{name} missing from /metrics");
    }
    assert!(a["data"][0]["next_attempt_at"].is_null());
    for (method, p) in [
        (Method::GET, messages.clone()),
        (Method::GET, attempts.clone()),
        (
            Method::POST,
            format!("{messages}/{}/resend", headers["webhook-id"]),
        ),
    ] {
        let (s, _) = g.call(&t.prod.key, method, &p, None).await;
        assert_eq!(s, 404, "{p}");
    }
    // Resend: the same message again, same webhook-id.
    let (s, r) = g
        .call(
            key,
            Method::POST,
            &format!("{messages}/{}/resend", headers["webhook-id"]),
            None,
        )
        .await;
    assert_eq!(s, 202, "{r}");
    g.eventually("the resend arrives", 10, || {
        let got = got.clone();
        async move { got.lock().unwrap().len() >= 2 }
    })
    .await;
    let again = got.lock().unwrap()[1].clone();
    assert_eq!(again.0, "/a");
    assert_eq!(again.1["webhook-id"], headers["webhook-id"]);
    assert_eq!(again.2, body);

    let (s, _) = g
        .call(key, Method::DELETE, &format!("/v1/users/{user_id}"), None)
        .await;
    assert_eq!(s, 200);
    g.eventually("user.deleted is delivered", 20, || {
        let got = got.clone();
        async move { got.lock().unwrap().len() >= 3 }
    })
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let all = got.lock().unwrap().clone();
    assert_eq!(all.len(), 3, "one delivery per matching endpoint: {all:?}");
    let (path, headers, body) = &all[2];
    assert_eq!(path, "/b");
    assert!(body.contains("\"user.deleted\""));
    assert!(signature_ok(&secrets[1], headers, body));
    assert_ne!(headers["webhook-id"], all[0].1["webhook-id"]);
}

/// A receiver that fails three times: the attempts follow the schedule on
/// the platform clock (moved forward through the admin API, no sleeping),
/// the fourth succeeds, every attempt carries the same `webhook-id`, and
/// all four are recorded.
async fn retry_flow(mode: Mode) {
    let g = Gatehouse::with_test_clock(mode).await;
    let t = g.tenant().await;
    let key = t.dev.key.as_str();
    let (url, got) = receiver(3);
    let path = user_created_endpoint(&g, key, &format!("{url}/flaky")).await;
    g.create_user(key, "retried@example.com").await;
    let count = |n: usize| {
        let got = got.clone();
        move || {
            let got = got.clone();
            async move { got.lock().unwrap().len() >= n }
        }
    };
    g.eventually("the first attempt", 20, count(1)).await;
    // Before its time the next attempt does not come.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(got.lock().unwrap().len(), 1);
    for (n, wait_ms) in [(2, 6_000), (3, 6 * 60_000), (4, 35 * 60_000)] {
        g.advance_clock(wait_ms).await;
        g.eventually(&format!("attempt {n}"), 20, count(n)).await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let all = got.lock().unwrap().clone();
    assert_eq!(all.len(), 4, "exactly one success after three failures");
    assert!(
        all.iter()
            .all(|r| r.1["webhook-id"] == all[0].1["webhook-id"])
    );
    let messages = format!("{path}/messages");
    g.eventually("the success is recorded", 10, || {
        let (g, messages) = (&g, messages.clone());
        async move {
            let (_, l) = g.call(key, Method::GET, &messages, None).await;
            l["data"][0]["status"] == "succeeded"
        }
    })
    .await;
    let attempts = format!("{messages}/{}/attempts", all[0].1["webhook-id"]);
    let (_, a) = g.call(key, Method::GET, &attempts, None).await;
    let codes: Vec<i64> = a["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["status_code"].as_i64().unwrap())
        .collect();
    assert_eq!(codes, vec![500, 500, 500, 204], "{a}");
    assert_eq!(a["data"][0]["response"], "not now");
    assert!(a["data"][2]["next_attempt_at"].is_i64());
    // Without --test-clock the clock cannot be moved.
    let plain = Gatehouse::embedded().await;
    let (s, _) = plain
        .admin(
            Method::POST,
            "/admin/v1/test/clock/advance",
            Some(json!({ "ms": 1 })),
        )
        .await;
    assert_eq!(s, 404);
}

/// Creates an endpoint of `key`'s instance for `user.created` at `url`;
/// returns its path under the Backend API.
async fn user_created_endpoint(g: &Gatehouse, key: &str, url: &str) -> String {
    let (s, ep) = g
        .call(
            key,
            Method::POST,
            BASE,
            Some(json!({ "url": url, "filter_types": ["user.created"] })),
        )
        .await;
    assert_eq!(s, 200, "{ep}");
    format!("{BASE}/{}", ep["id"].as_str().unwrap())
}

/// An endpoint down for five clock days is disabled (and gets nothing new);
/// re-enabled and replayed, it receives the whole backlog.
async fn disable_flow(mode: Mode) {
    let g = Gatehouse::with_test_clock(mode).await;
    let t = g.tenant().await;
    let key = t.dev.key.as_str();
    let (url, got) = receiver(9);
    let path = user_created_endpoint(&g, key, &format!("{url}/down")).await;
    let advance = |ms: i64| {
        let g = &g;
        async move {
            g.advance_clock(ms).await;
        }
    };
    let count = |n: usize| {
        let got = got.clone();
        move || {
            let got = got.clone();
            async move { got.lock().unwrap().len() >= n }
        }
    };
    let since = g.advance_clock(0).await;
    let first = g.create_user(key, "day0@example.com").await;
    g.eventually("attempt 1", 20, count(1)).await;
    // The whole schedule: eight attempts over about 28 hours, all failing.
    let day = 24 * 3600 * 1000;
    for (n, wait) in [
        6_000,
        6 * 60_000,
        35 * 60_000,
        2 * 3_600_000 + 15 * 60_000,
        5 * 3_600_000 + 35 * 60_000,
        11 * 3_600_000,
        11 * 3_600_000,
    ]
    .into_iter()
    .enumerate()
    {
        advance(wait).await;
        g.eventually(&format!("attempt {}", n + 2), 20, count(n + 2))
            .await;
    }
    let (_, e) = g.call(key, Method::GET, &path, None).await;
    assert_eq!(e["disabled"], false, "not five days yet");
    // Day five: a new event fails too, and the endpoint is disabled.
    advance(4 * day).await;
    let second = g.create_user(key, "day5@example.com").await;
    g.eventually("attempt 9", 20, count(9)).await;
    g.eventually("the endpoint is disabled", 20, || {
        let (g, path) = (&g, path.clone());
        async move { g.call(key, Method::GET, &path, None).await.1["disabled"] == true }
    })
    .await;
    let third = g.create_user(key, "while-off@example.com").await;
    tokio::time::sleep(std::time::Duration::from_millis(700)).await;
    assert_eq!(
        got.lock().unwrap().len(),
        9,
        "nothing goes to a disabled endpoint"
    );

    // Re-enable and replay: the backlog arrives, each user once.
    let (s, _) = g
        .call(key, Method::POST, &format!("{path}/enable"), None)
        .await;
    assert_eq!(s, 200);
    let (s, r) = g
        .call(
            key,
            Method::POST,
            &format!("{path}/replay"),
            Some(json!({ "since": since })),
        )
        .await;
    assert_eq!(s, 202, "{r}");
    assert_eq!(r["queued"], 3, "{r}");
    assert_eq!(r["complete"], true, "{r}");
    assert!(r["next_since"].is_null(), "{r}");
    g.eventually("the backlog", 20, count(12)).await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let all = got.lock().unwrap().clone();
    assert_eq!(all.len(), 12);
    let mut delivered: Vec<String> = all[9..]
        .iter()
        .map(|r| {
            serde_json::from_str::<Value>(&r.2).unwrap()["data"]["id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    delivered.sort();
    let mut expected: Vec<String> = [&first, &second, &third]
        .iter()
        .map(|u| u["id"].as_str().unwrap().to_owned())
        .collect();
    expected.sort();
    assert_eq!(delivered, expected);
    // The first message had spent its schedule (eight attempts, failed);
    // the replay gave it a fresh one, and its first new attempt succeeded.
    g.eventually("the replayed deliveries are recorded", 20, || {
        let (g, path) = (&g, path.clone());
        let first_id = first["id"].clone();
        async move {
            let (_, list) = g
                .call(key, Method::GET, &format!("{path}/messages"), None)
                .await;
            list["data"].as_array().unwrap().iter().any(|m| {
                m["payload"]["data"]["id"] == first_id
                    && m["status"] == "succeeded"
                    && m["attempts"] == 1
            })
        }
    })
    .await;
    let (s, e) = g
        .call(
            &t.prod.key,
            Method::POST,
            &format!("{path}/replay"),
            Some(json!({ "since": 0 })),
        )
        .await;
    assert_eq!(s, 404, "{e}");
}

/// The webhooks process is killed with about a thousand deliveries queued
/// or in flight; restarted, it delivers every message (at least once).
#[tokio::test]
async fn nothing_is_lost_when_the_process_dies() {
    let mut g = Gatehouse::with_test_clock(Mode::Production).await;
    let t = g.tenant().await;
    let key = t.dev.key.clone();
    let (url, got) = slow_receiver(0, 100);
    user_created_endpoint(&g, &key, &format!("{url}/bulk")).await;
    let mut ids = Vec::new();
    for i in 0..1000 {
        let u = g.create_user(&key, &format!("bulk{i}@example.com")).await;
        ids.push(u["id"].as_str().unwrap().to_owned());
    }
    let before = got.lock().unwrap().len();
    assert!(
        before < 1000,
        "everything was delivered before the kill ({before})"
    );
    g.kill();
    g.spawn().await;
    // Deliveries claimed by the dead process come due when their lease ends.
    g.advance_clock(61_000).await;
    let delivered = |got: &Received| -> std::collections::HashSet<String> {
        got.lock()
            .unwrap()
            .iter()
            .map(|r| {
                serde_json::from_str::<Value>(&r.2).unwrap()["data"]["id"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect()
    };
    g.eventually("every message delivered after the restart", 120, || {
        let got = got.clone();
        async move { delivered(&got).len() == 1000 }
    })
    .await;
    let set = delivered(&got);
    assert!(ids.iter().all(|i| set.contains(i)));
}

/// A receiver that holds every request until `open` is set, and counts
/// how many it holds at once (now, most) and how many it answered.
#[derive(Clone, Default)]
struct Gate {
    open_now: Arc<std::sync::atomic::AtomicUsize>,
    most: Arc<std::sync::atomic::AtomicUsize>,
    answered: Arc<std::sync::atomic::AtomicUsize>,
}

fn gated_receiver(open: tokio::sync::watch::Receiver<bool>) -> (String, Gate) {
    use std::sync::atomic::Ordering::SeqCst;
    let gate = Gate::default();
    let g = gate.clone();
    let url = serve(move || {
        let (g, mut open) = (g.clone(), open.clone());
        async move {
            let now = g.open_now.fetch_add(1, SeqCst) + 1;
            g.most.fetch_max(now, SeqCst);
            let _ = open.wait_for(|o| *o).await;
            g.open_now.fetch_sub(1, SeqCst);
            g.answered.fetch_add(1, SeqCst);
            HttpResponse::NoContent().finish()
        }
    });
    (url, gate)
}

/// An endpoint of `key`'s instance in front of a gated receiver: its path,
/// the receiver's counters and the switch that opens the gate.
async fn held_endpoint(
    g: &Gatehouse,
    key: &str,
) -> (String, Gate, tokio::sync::watch::Sender<bool>) {
    let (open, rx) = tokio::sync::watch::channel(false);
    let (url, gate) = gated_receiver(rx);
    let path = user_created_endpoint(g, key, &format!("{url}/held")).await;
    (path, gate, open)
}

/// Two webhooks processes share one endpoint's limit: with the receiver
/// holding every request, the processes fill the endpoint's sixteen slots
/// between them and then find none free (a limit per process would let
/// thirty-two through).
#[tokio::test]
async fn the_per_endpoint_limit_holds_across_processes() {
    use std::sync::atomic::Ordering::SeqCst;
    let g = Gatehouse::production().await;
    let other = g.sibling().await;
    let t = g.tenant().await;
    let key = t.dev.key.clone();
    let (_, gate, open) = held_endpoint(&g, &key).await;
    for i in 0..60 {
        let on = if i % 2 == 0 { &g } else { &other };
        on.create_user(&key, &format!("held{i}@example.com")).await;
    }
    g.eventually("the endpoint's slots are taken", 30, || {
        let gate = gate.clone();
        async move { gate.open_now.load(SeqCst) >= 16 }
    })
    .await;
    // Both processes poll at least every 100 ms; give them many chances.
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    assert_eq!(gate.open_now.load(SeqCst), 16);
    open.send(true).unwrap();
    g.eventually("all 60 delivered", 60, || {
        let gate = gate.clone();
        async move { gate.answered.load(SeqCst) >= 60 }
    })
    .await;
    assert_eq!(gate.most.load(SeqCst), 16);
}

/// An endpoint's own `max_concurrency` is a limit of the deployment too:
/// two processes, a receiver holding every request, an endpoint set to 3;
/// between them the processes fill its three slots and no more.
#[tokio::test]
async fn max_concurrency_holds_across_processes() {
    use std::sync::atomic::Ordering::SeqCst;
    let g = Gatehouse::production().await;
    let other = g.sibling().await;
    let t = g.tenant().await;
    let key = t.dev.key.clone();
    let (open, rx) = tokio::sync::watch::channel(false);
    let (url, gate) = gated_receiver(rx);
    endpoint_with_concurrency(&g, &key, &format!("{url}/three"), 3).await;
    for i in 0..12 {
        let on = if i % 2 == 0 { &g } else { &other };
        on.create_user(&key, &format!("three{i}@example.com")).await;
    }
    g.eventually("the endpoint's slots are taken", 30, || {
        let gate = gate.clone();
        async move { gate.open_now.load(SeqCst) >= 3 }
    })
    .await;
    // Both processes poll at least every 100 ms; give them many chances.
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    assert_eq!(gate.open_now.load(SeqCst), 3);
    open.send(true).unwrap();
    g.eventually("all 12 delivered", 60, || {
        let gate = gate.clone();
        async move { gate.answered.load(SeqCst) >= 12 }
    })
    .await;
    assert_eq!(gate.most.load(SeqCst), 3);
}

/// Resending a message while its delivery is being sent leaves it to that
/// attempt: the receiver never gets the same message twice at once.
#[tokio::test]
async fn resend_during_an_attempt_does_not_send_twice_at_once() {
    use std::sync::atomic::Ordering::SeqCst;
    let g = Gatehouse::embedded().await;
    let t = g.tenant().await;
    let key = t.dev.key.clone();
    let (path, gate, open) = held_endpoint(&g, &key).await;
    g.create_user(&key, "held@example.com").await;
    g.eventually("the attempt is under way", 20, || {
        let gate = gate.clone();
        async move { gate.open_now.load(SeqCst) == 1 }
    })
    .await;
    let (_, list) = g
        .call(&key, Method::GET, &format!("{path}/messages"), None)
        .await;
    let message = list["data"][0]["id"].as_str().unwrap().to_owned();
    let (s, r) = g
        .call(
            &key,
            Method::POST,
            &format!("{path}/messages/{message}/resend"),
            None,
        )
        .await;
    assert_eq!(s, 202, "{r}");
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    assert_eq!(gate.most.load(SeqCst), 1, "sent twice at once");
    open.send(true).unwrap();
    g.eventually("the attempt answered", 20, || {
        let gate = gate.clone();
        async move { gate.answered.load(SeqCst) == 1 }
    })
    .await;
}

/// A receiver that takes `hold_ms` over every request and counts how many
/// it holds at once (now, most) and how many it answered.
fn timed_receiver(hold_ms: u64) -> (String, Gate) {
    use std::sync::atomic::Ordering::SeqCst;
    let gate = Gate::default();
    let g = gate.clone();
    let url = serve(move || {
        let g = g.clone();
        async move {
            let now = g.open_now.fetch_add(1, SeqCst) + 1;
            g.most.fetch_max(now, SeqCst);
            tokio::time::sleep(std::time::Duration::from_millis(hold_ms)).await;
            g.open_now.fetch_sub(1, SeqCst);
            g.answered.fetch_add(1, SeqCst);
            HttpResponse::NoContent().finish()
        }
    });
    (url, gate)
}

/// Creates a `user.created` endpoint of `key`'s instance at `url` with its
/// own `max_concurrency`; returns its path under the Backend API.
async fn endpoint_with_concurrency(g: &Gatehouse, key: &str, url: &str, n: i64) -> String {
    let (s, ep) = g
        .call(
            key,
            Method::POST,
            BASE,
            Some(json!({ "url": url, "filter_types": ["user.created"], "max_concurrency": n })),
        )
        .await;
    assert_eq!(s, 200, "{ep}");
    assert_eq!(ep["max_concurrency"], n, "{ep}");
    format!("{BASE}/{}", ep["id"].as_str().unwrap())
}

/// `max_concurrency`: 16 unless set, 1 to 64, kept by the endpoint's events
/// and projection; the dispatcher holds each endpoint to its own. With
/// every request held 200 ms and several users created at once, an
/// endpoint set to 1 never has two deliveries open, while one set to 4
/// has them overlap (and never more than 4).
async fn concurrency_flow(mode: Mode) {
    use std::sync::atomic::Ordering::SeqCst;
    let g = Gatehouse::start(mode).await;
    let t = g.tenant().await;
    let key = t.dev.key.clone();

    // The setting: default, bounds, wrong types, on create and update.
    let (s, ep) = g
        .call(
            &key,
            Method::POST,
            BASE,
            Some(json!({ "url": "http://localhost:4000/default" })),
        )
        .await;
    assert_eq!(s, 200, "{ep}");
    assert_eq!(ep["max_concurrency"], 16, "{ep}");
    let path = format!("{BASE}/{}", ep["id"].as_str().unwrap());
    for bad in [
        json!(0),
        json!(65),
        json!("x"),
        json!(-1),
        json!(2.5),
        json!(true),
    ] {
        let (s, b) = g
            .call(
                &key,
                Method::POST,
                BASE,
                Some(json!({ "url": "http://localhost:4000/bad", "max_concurrency": bad })),
            )
            .await;
        assert_eq!(s, 422, "create {bad}: {b}");
        assert_error_shape(s, &b);
        assert_eq!(
            b["errors"][0]["meta"]["param_name"], "max_concurrency",
            "{b}"
        );
        let (s, b) = g
            .call(
                &key,
                Method::PATCH,
                &path,
                Some(json!({ "max_concurrency": bad })),
            )
            .await;
        assert_eq!(s, 422, "update {bad}: {b}");
        assert_error_shape(s, &b);
        assert_eq!(
            b["errors"][0]["meta"]["param_name"], "max_concurrency",
            "{b}"
        );
    }
    for n in [1, 64] {
        let (s, up) = g
            .call(
                &key,
                Method::PATCH,
                &path,
                Some(json!({ "max_concurrency": n })),
            )
            .await;
        assert_eq!((s, up["max_concurrency"].clone()), (200, json!(n)), "{up}");
    }
    let (s, desc) = g
        .call(
            &key,
            Method::PATCH,
            &path,
            Some(json!({ "description": "kept" })),
        )
        .await;
    assert_eq!(
        (s, desc["max_concurrency"].clone()),
        (200, json!(64)),
        "{desc}"
    );
    let (_, listed) = g.call(&key, Method::GET, BASE, None).await;
    assert_eq!(listed["data"][0]["max_concurrency"], 64, "{listed}");
    let (s, _) = g.call(&key, Method::DELETE, &path, None).await;
    assert_eq!(s, 200);

    // The dispatcher keeps to each endpoint's own setting.
    let (one_url, one) = timed_receiver(200);
    let (four_url, four) = timed_receiver(200);
    endpoint_with_concurrency(&g, &key, &format!("{one_url}/one"), 1).await;
    endpoint_with_concurrency(&g, &key, &format!("{four_url}/four"), 4).await;
    // Eight users, four at a time, so deliveries queue up behind the holds.
    let users = 8;
    for b in 0..2 {
        let e: Vec<String> = (0..4).map(|i| format!("conc{b}-{i}@example.com")).collect();
        tokio::join!(
            g.create_user(&key, &e[0]),
            g.create_user(&key, &e[1]),
            g.create_user(&key, &e[2]),
            g.create_user(&key, &e[3]),
        );
    }
    g.eventually("every delivery answered", 60, || {
        let (one, four) = (one.clone(), four.clone());
        async move { one.answered.load(SeqCst) >= users && four.answered.load(SeqCst) >= users }
    })
    .await;
    assert_eq!(
        one.most.load(SeqCst),
        1,
        "two deliveries at once to a limit of 1"
    );
    let most = four.most.load(SeqCst);
    assert!(
        (2..=4).contains(&most),
        "a limit of 4 had at most {most} at once"
    );
}

/// Loopback endpoints are the operator's switch, off by default: without it
/// a development instance can neither save a localhost, 127.0.0.1 or [::1]
/// endpoint nor have one saved earlier called, so no tenant reads this
/// host's local services through the attempt log.
async fn loopback_switch_flow(mode: Mode) {
    let mut g = Gatehouse::start(mode).await;
    let t = g.tenant().await;
    let key = t.dev.key.clone();
    let hits = Arc::new(Mutex::new(0usize));
    let counted = hits.clone();
    let url = serve(move || {
        let counted = counted.clone();
        async move {
            *counted.lock().unwrap() += 1;
            HttpResponse::Ok().body("internal admin page")
        }
    });
    let path = user_created_endpoint(&g, &key, &format!("{url}/saved")).await;

    g.kill();
    g.webhook_loopback = false;
    g.spawn().await;
    for url in [
        format!("{url}/new"),
        "http://localhost:9/x".to_owned(),
        "https://localhost/x".to_owned(),
        "https://127.0.0.1/x".to_owned(),
        "https://[::1]:8443/x".to_owned(),
        "https://127.0.0.2/x".to_owned(),
        "https://ip6-localhost/x".to_owned(),
    ] {
        let (s, b) = g
            .call(&key, Method::POST, BASE, Some(json!({ "url": url })))
            .await;
        assert_eq!(s, 422, "{url}: {b}");
        assert_eq!(b["errors"][0]["meta"]["param_name"], "url", "{b}");
    }

    g.create_user(&key, "looped@example.com").await;
    let messages = format!("{path}/messages");
    let mut attempt = Value::Null;
    for _ in 0..200 {
        let (_, l) = g.call(&key, Method::GET, &messages, None).await;
        if let Some(id) = l["data"][0]["id"].as_str() {
            let (_, a) = g
                .call(
                    &key,
                    Method::GET,
                    &format!("{messages}/{id}/attempts"),
                    None,
                )
                .await;
            attempt = a["data"][0].clone();
            if !attempt.is_null() {
                break;
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(attempt["status_code"].is_null(), "{attempt}");
    assert_eq!(attempt["response"], "", "{attempt}");
    assert!(
        attempt["error"].as_str().unwrap().contains("loopback"),
        "{attempt}"
    );
    assert_eq!(
        *hits.lock().unwrap(),
        0,
        "nothing reached the local service"
    );
}

in_both_shapes!(loopback_switch_flow: loopback_switch_embedded, loopback_switch_production_shape);
in_both_shapes!(endpoints_flow: endpoints_embedded, endpoints_production_shape);
in_both_shapes!(delivery_flow: delivery_embedded, delivery_production_shape);
in_both_shapes!(retry_flow: retry_embedded, retry_production_shape);
in_both_shapes!(disable_flow: disable_embedded, disable_production_shape);
in_both_shapes!(catalog_flow: catalog_embedded, catalog_production_shape);
in_both_shapes!(concurrency_flow: concurrency_embedded, concurrency_production_shape);
