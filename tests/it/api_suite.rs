//! The same Backend and admin API suite against both shapes: the embedded
//! default (SQLite, in-process bus) and `gatehouse serve authz` (PostgreSQL,
//! Kafka, Redis). Both run the same service code.

use crate::common::{Gatehouse, Mode, assert_error_shape, unique};
use reqwest::Method;
use serde_json::{Value, json};

async fn user_lifecycle(mode: Mode) {
    let g = Gatehouse::start(mode).await;
    let t = g.tenant().await;
    let key = &t.dev.key;
    let (s, u) = g
        .call(
            key,
            Method::POST,
            "/v1/users",
            Some(json!({
                "email_address": ["Ada@Example.com", "ada2@example.com"],
                "password": "correct horse battery",
                "first_name": "Ada", "last_name": "Lovelace", "external_id": "ext-1",
                "public_metadata": { "plan": "pro" }, "private_metadata": { "n": 1 },
                "unsafe_metadata": { "theme": "dark" }
            })),
        )
        .await;
    assert_eq!(s, 200, "{u}");
    assert_eq!(u["object"], "user");
    let id = u["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("user_"));
    assert_eq!(u["password_enabled"], true);
    assert_eq!(u["email_addresses"][0]["email_address"], "Ada@Example.com");
    assert_eq!(u["primary_email_address_id"], u["email_addresses"][0]["id"]);
    assert_eq!(u["email_addresses"][0]["linked_to"], json!([]));
    assert_eq!(u["public_metadata"]["plan"], "pro");
    assert!(u.get("password").is_none() && !u.to_string().contains("argon2"));

    let (s, got) = g
        .call(key, Method::GET, &format!("/v1/users/{id}"), None)
        .await;
    assert_eq!(s, 200);
    assert_eq!(got, u, "GET returns what POST returned");

    let (s, upd) = g
        .call(
            key,
            Method::PATCH,
            &format!("/v1/users/{id}"),
            Some(json!({ "first_name": "Augusta", "last_name": null,
                         "primary_email_address_id": u["email_addresses"][1]["id"] })),
        )
        .await;
    assert_eq!(s, 200, "{upd}");
    assert_eq!(upd["first_name"], "Augusta");
    assert!(upd["last_name"].is_null());
    assert_eq!(
        upd["primary_email_address_id"],
        u["email_addresses"][1]["id"]
    );
    assert!(upd["updated_at"].as_i64() >= u["updated_at"].as_i64());

    // Deep merge, null removes a key.
    let (s, m) = g
        .call(
            key,
            Method::PATCH,
            &format!("/v1/users/{id}/metadata"),
            Some(json!({ "public_metadata": { "plan": null, "seats": 3 } })),
        )
        .await;
    assert_eq!(s, 200, "{m}");
    assert_eq!(m["public_metadata"], json!({ "seats": 3 }));
    assert_eq!(m["private_metadata"], json!({ "n": 1 }));
    // Replace.
    let (s, m) = g
        .call(
            key,
            Method::PUT,
            &format!("/v1/users/{id}/metadata"),
            Some(json!({ "private_metadata": {} })),
        )
        .await;
    assert_eq!(s, 200, "{m}");
    assert_eq!(m["private_metadata"], json!({}));
    assert_eq!(m["public_metadata"], json!({ "seats": 3 }));

    let (s, b) = g
        .call(key, Method::POST, &format!("/v1/users/{id}/ban"), None)
        .await;
    assert_eq!((s, b["banned"].clone()), (200, json!(true)));
    let (s, b) = g
        .call(key, Method::POST, &format!("/v1/users/{id}/unban"), None)
        .await;
    assert_eq!((s, b["banned"].clone()), (200, json!(false)));

    let (s, d) = g
        .call(key, Method::DELETE, &format!("/v1/users/{id}"), None)
        .await;
    assert_eq!(s, 200);
    assert_eq!(d, json!({ "object": "user", "id": id, "deleted": true }));
    let (s, e) = g
        .call(key, Method::GET, &format!("/v1/users/{id}"), None)
        .await;
    assert_eq!(s, 404);
    assert_error_shape(s, &e);
    let (s, _) = g
        .call(key, Method::DELETE, &format!("/v1/users/{id}"), None)
        .await;
    assert_eq!(s, 404);
    // The address is free again.
    g.create_user(key, "ada@example.com").await;
}

async fn list_count_and_filters(mode: Mode) {
    let g = Gatehouse::start(mode).await;
    let t = g.tenant().await;
    let key = &t.dev.key;
    let mut ids = Vec::new();
    for i in 0..12 {
        let (s, u) = g
            .call(
                key,
                Method::POST,
                "/v1/users",
                Some(json!({ "email_address": [format!("user{i}@list.example")],
                             "first_name": format!("Name{i:02}"), "external_id": format!("x{i}") })),
            )
            .await;
        assert_eq!(s, 200, "{u}");
        ids.push(u["id"].as_str().unwrap().to_owned());
    }
    let (s, list) = g.call(key, Method::GET, "/v1/users", None).await;
    assert_eq!(s, 200);
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 10, "default limit is 10");
    assert_eq!(list[0]["id"], ids[11].as_str(), "newest first by default");
    let (_, page) = g
        .call(
            key,
            Method::GET,
            "/v1/users?limit=5&offset=10&order_by=created_at",
            None,
        )
        .await;
    let page: Vec<&str> = page
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["id"].as_str().unwrap())
        .collect();
    assert_eq!(page, vec![ids[10].as_str(), ids[11].as_str()]);
    let (_, by_name) = g
        .call(
            key,
            Method::GET,
            "/v1/users?order_by=-first_name&limit=1",
            None,
        )
        .await;
    assert_eq!(by_name[0]["first_name"], "Name11");
    let (_, f) = g
        .call(
            key,
            Method::GET,
            "/v1/users?email_address=USER3%40list.example&email_address=user4%40list.example",
            None,
        )
        .await;
    assert_eq!(f.as_array().unwrap().len(), 2);
    let (_, q) = g
        .call(key, Method::GET, "/v1/users?query=name07", None)
        .await;
    assert_eq!(q.as_array().unwrap().len(), 1);
    let (_, q) = g.call(key, Method::GET, "/v1/users?query=%25", None).await;
    assert_eq!(q.as_array().unwrap().len(), 0, "% is matched literally");
    let (_, x) = g
        .call(key, Method::GET, "/v1/users?external_id=x5", None)
        .await;
    assert_eq!(x[0]["id"], ids[5].as_str());
    let (s, c) = g.call(key, Method::GET, "/v1/users/count", None).await;
    assert_eq!(
        (s, c),
        (200, json!({ "object": "total_count", "total_count": 12 }))
    );
    let (_, c) = g
        .call(key, Method::GET, "/v1/users/count?query=list.example", None)
        .await;
    assert_eq!(c["total_count"], 12);
    let (_, c) = g
        .call(
            key,
            Method::GET,
            "/v1/users/count?email_address=user1%40list.example",
            None,
        )
        .await;
    assert_eq!(c["total_count"], 1);
}

async fn duplicate_email_and_idempotency(mode: Mode) {
    let g = Gatehouse::start(mode).await;
    let t = g.tenant().await;
    let key = &t.dev.key;
    g.create_user(key, "dup@example.com").await;
    let (s, e) = g
        .call(
            key,
            Method::POST,
            "/v1/users",
            Some(json!({ "email_address": ["DUP@example.com"] })),
        )
        .await;
    assert_eq!(s, 409, "{e}");
    assert_eq!(e["errors"][0]["code"], "form_identifier_exists");
    // The same address in another instance is fine.
    g.create_user(&t.prod.key, "dup@example.com").await;

    // Usernames are unique per instance too, case-insensitively.
    let (s, u1) = g
        .call(
            key,
            Method::POST,
            "/v1/users",
            Some(json!({ "email_address": ["u1@example.com"], "username": "grace_h" })),
        )
        .await;
    assert_eq!(s, 200, "{u1}");
    let (s, e) = g
        .call(
            key,
            Method::POST,
            "/v1/users",
            Some(json!({ "email_address": ["u2@example.com"], "username": "Grace_H" })),
        )
        .await;
    assert_eq!(s, 409, "{e}");
    assert_eq!(e["errors"][0]["meta"]["param_name"], "username");
    let u2 = g.create_user(key, "u2@example.com").await;
    let (s, e) = g
        .call(
            key,
            Method::PATCH,
            &format!("/v1/users/{}", u2["id"].as_str().unwrap()),
            Some(json!({ "username": "GRACE_H" })),
        )
        .await;
    assert_eq!(s, 409, "{e}");
    let (s, _) = g
        .call(
            &t.prod.key,
            Method::POST,
            "/v1/users",
            Some(json!({ "email_address": ["u1@example.com"], "username": "grace_h" })),
        )
        .await;
    assert_eq!(s, 200, "another instance may use it");

    let idem = unique("idem-");
    let body = json!({ "email_address": ["once@example.com"] });
    let send = || {
        g.client
            .post(g.url("/v1/users"))
            .bearer_auth(key)
            .header("Idempotency-Key", &idem)
            .json(&body)
            .send()
    };
    let first = send().await.unwrap();
    assert_eq!(first.status(), 200);
    let first: Value = first.json().await.unwrap();
    let again = send().await.unwrap();
    assert_eq!(again.status(), 200);
    assert_eq!(again.headers().get("idempotent-replayed").unwrap(), "true");
    assert_eq!(again.json::<Value>().await.unwrap(), first);
    // The stored response is not readable in the database.
    if let Some(db) = &g.db {
        use sea_orm::ConnectionTrait;
        let conn = db.connect().await;
        let row = conn
            .query_one_raw(sea_orm::Statement::from_sql_and_values(
                sea_orm::DbBackend::Postgres,
                "SELECT body FROM platform_idempotency WHERE idem_key = $1",
                vec![idem.clone().into()],
            ))
            .await
            .unwrap()
            .unwrap();
        let stored: String = row.try_get("", "body").unwrap();
        assert!(!stored.contains("once@example.com"), "{stored}");
    }
    let (_, c) = g
        .call(
            key,
            Method::GET,
            "/v1/users/count?email_address=once%40example.com",
            None,
        )
        .await;
    assert_eq!(c["total_count"], 1, "created once");
    // Same key, different body → 422; keys are per instance.
    let other = g
        .client
        .post(g.url("/v1/users"))
        .bearer_auth(key)
        .header("Idempotency-Key", &idem)
        .json(&json!({ "email_address": ["other@example.com"] }))
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 422);
    let prod = g
        .client
        .post(g.url("/v1/users"))
        .bearer_auth(&t.prod.key)
        .header("Idempotency-Key", &idem)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(prod.status(), 200);
    assert_ne!(prod.json::<Value>().await.unwrap()["id"], first["id"]);
}

async fn tenant_isolation(mode: Mode) {
    let g = Gatehouse::start(mode).await;
    let a = g.tenant().await;
    let b = g.tenant().await;
    let ua = g.create_user(&a.dev.key, "alice@iso.example").await;
    let id = ua["id"].as_str().unwrap();
    // Another tenant's key, and the production key of the same tenant.
    for other in [&b.dev.key, &b.prod.key, &a.prod.key] {
        for (m, path, body) in [
            (Method::GET, format!("/v1/users/{id}"), None),
            (
                Method::PATCH,
                format!("/v1/users/{id}"),
                Some(json!({ "first_name": "Mallory" })),
            ),
            (
                Method::PUT,
                format!("/v1/users/{id}/metadata"),
                Some(json!({ "public_metadata": {} })),
            ),
            (
                Method::PATCH,
                format!("/v1/users/{id}/metadata"),
                Some(json!({ "public_metadata": {"x": 1} })),
            ),
            (Method::POST, format!("/v1/users/{id}/ban"), None),
            (Method::POST, format!("/v1/users/{id}/unban"), None),
            (Method::DELETE, format!("/v1/users/{id}"), None),
        ] {
            let (s, e) = g.call(other, m.clone(), &path, body).await;
            assert_eq!(s, 404, "{m} {path} must be 404 for another instance: {e}");
            assert_error_shape(s, &e);
        }
        let (_, list) = g
            .call(
                other,
                Method::GET,
                "/v1/users?email_address=alice%40iso.example",
                None,
            )
            .await;
        assert_eq!(list, json!([]));
        let (_, c) = g.call(other, Method::GET, "/v1/users/count", None).await;
        assert_eq!(c["total_count"], 0);
        let (_, q) = g
            .call(other, Method::GET, "/v1/users?query=alice", None)
            .await;
        assert_eq!(q, json!([]));
    }
    let (s, still) = g
        .call(&a.dev.key, Method::GET, &format!("/v1/users/{id}"), None)
        .await;
    assert_eq!(s, 200);
    assert_eq!(still, ua, "untouched by the other keys");
}

async fn bad_input_matrix(mode: Mode) {
    let g = Gatehouse::start(mode).await;
    let t = g.tenant().await;
    let key = &t.dev.key;
    let u = g.create_user(key, "target@bad.example").await;
    let id = u["id"].as_str().unwrap();
    let big = format!(
        "{{\"email_address\":[\"a@b.co\"],\"first_name\":\"{}\"}}",
        "x".repeat(2 * 1024 * 1024)
    );
    let user_path = format!("/v1/users/{id}");
    let meta_path = format!("/v1/users/{id}/metadata");
    let bodies: Vec<(Method, &str, &str, u16)> = vec![
        (Method::POST, "/v1/users", "{not json", 400),
        (Method::POST, "/v1/users", "", 422),
        (Method::POST, "/v1/users", "[]", 422),
        (
            Method::POST,
            "/v1/users",
            r#"{"email_address":"a@b.co"}"#,
            422,
        ),
        (Method::POST, "/v1/users", r#"{"email_address":[42]}"#, 422),
        (
            Method::POST,
            "/v1/users",
            r#"{"email_address":["not-an-email"]}"#,
            422,
        ),
        (
            Method::POST,
            "/v1/users",
            r#"{"email_address":["a@b.co"],"unknown_field":1}"#,
            422,
        ),
        (
            Method::POST,
            "/v1/users",
            r#"{"email_address":["a@b.co"],"password":"short"}"#,
            422,
        ),
        (
            Method::POST,
            "/v1/users",
            r#"{"email_address":["a@b.co"],"public_metadata":[1]}"#,
            422,
        ),
        (
            Method::POST,
            "/v1/users",
            r#"{"email_address":["a@b.co"],"first_name":7}"#,
            422,
        ),
        (Method::POST, "/v1/users", &big, 413),
        (Method::PATCH, &user_path, "{", 400),
        (Method::PATCH, &user_path, r#"{"first_name":true}"#, 422),
        (Method::PATCH, &user_path, r#"{"nope":1}"#, 422),
        (
            Method::PATCH,
            &user_path,
            r#"{"primary_email_address_id":"idn_unknown"}"#,
            422,
        ),
        (Method::PATCH, &user_path, r#"{"username":"a b"}"#, 422),
        (Method::PATCH, &user_path, &big, 413),
        (Method::PUT, &meta_path, r#"{"public_metadata":"str"}"#, 422),
        (
            Method::PATCH,
            &meta_path,
            r#"{"public_metadata":null}"#,
            422,
        ),
        (Method::PATCH, &meta_path, r#"{"extra":{}}"#, 422),
    ];
    for (m, path, body, want) in bodies {
        let res = g
            .client
            .request(m.clone(), g.url(path))
            .bearer_auth(key)
            .header("content-type", "application/json")
            .body(body.to_owned())
            .send()
            .await
            .unwrap();
        let s = res.status().as_u16();
        let v: Value = res.json().await.unwrap_or(Value::Null);
        assert_eq!(s, want, "{m} {path} {}: {v}", &body[..body.len().min(60)]);
        assert_error_shape(s, &v);
    }
    // A JSON body under another Content-Type is 415 everywhere, an array
    // is no object, and a wrong type names the field's path.
    for (path, ct, body, want, param) in [
        (
            "/v1/users",
            Some("text/plain"),
            r#"{"email_address":["a@b.co"]}"#,
            415,
            None,
        ),
        (
            "/v1/users",
            None,
            r#"{"email_address":["a@b.co"]}"#,
            415,
            None,
        ),
        (
            "/v1/webhooks/endpoints",
            Some("application/x-www-form-urlencoded"),
            "url=x",
            415,
            None,
        ),
        (
            "/v1/users",
            Some("application/json; charset=utf-8"),
            r#"["a@b.co"]"#,
            422,
            Some("body"),
        ),
        (
            "/v1/users",
            Some("application/json"),
            r#"{"first_name":123}"#,
            422,
            Some("first_name"),
        ),
    ] {
        let mut req = g.client.post(g.url(path)).bearer_auth(key).body(body);
        if let Some(ct) = ct {
            req = req.header("content-type", ct);
        }
        let res = req.send().await.unwrap();
        let s = res.status().as_u16();
        let v: Value = res.json().await.unwrap_or(Value::Null);
        assert_eq!(s, want, "{path} {ct:?} {body}: {v}");
        assert_error_shape(s, &v);
        if let Some(p) = param {
            assert_eq!(v["errors"][0]["meta"]["param_name"], p, "{v}");
        }
    }
    for q in [
        "limit=0",
        "limit=abc",
        "offset=-1",
        "order_by=password",
        "bogus=1",
        "banned=maybe",
    ] {
        let (s, v) = g
            .call(key, Method::GET, &format!("/v1/users?{q}"), None)
            .await;
        assert_eq!(s, 422, "{q}: {v}");
        assert_error_shape(s, &v);
    }
    for path in [
        "/v1/users/not-an-id",
        "/v1/users/user_0000000000000000000000",
        "/v1/nothing",
    ] {
        let (s, v) = g.call(key, Method::GET, path, None).await;
        assert_eq!(s, 404, "{path}");
        assert_error_shape(s, &v);
    }
    // Keys: missing, garbled, wrong scheme, unknown, revoked.
    let cases: Vec<Option<String>> = vec![
        None,
        Some("Bearer".into()),
        Some("Bearer sk_test_garbled!!".into()),
        Some(format!("Basic {key}")),
        Some("Bearer sk_test_000000000000000000000000000000000000000000000000".into()),
    ];
    for h in cases {
        let mut req = g.client.get(g.url("/v1/users"));
        if let Some(h) = &h {
            req = req.header("authorization", h);
        }
        let res = req.send().await.unwrap();
        let s = res.status().as_u16();
        let v: Value = res.json().await.unwrap();
        assert_eq!(s, 401, "{h:?}");
        assert_error_shape(s, &v);
    }
    let (s, _) = g
        .admin(
            Method::POST,
            &format!(
                "/admin/v1/instances/{}/secret_keys/{}/revoke",
                t.dev.id, t.dev.key_id
            ),
            None,
        )
        .await;
    assert_eq!(s, 200);
    let (s, v) = g.call(key, Method::GET, "/v1/users", None).await;
    assert_eq!(
        s, 401,
        "revoked key is refused at once by the process that revoked it"
    );
    assert_error_shape(s, &v);
}

async fn admin_api(mode: Mode) {
    let g = Gatehouse::start(mode).await;
    let (s, e) = g
        .call("wrong", Method::GET, "/admin/v1/tenants", None)
        .await;
    assert_eq!(s, 401);
    assert_error_shape(s, &e);
    // A secret key is not an admin token.
    let t = g.tenant().await;
    let (s, _) = g
        .call(&t.dev.key, Method::GET, "/admin/v1/tenants", None)
        .await;
    assert_eq!(s, 401);
    assert!(t.dev.key.starts_with("sk_test_") && t.prod.key.starts_with("sk_live_"));

    let (s, created) = g
        .admin(
            Method::POST,
            "/admin/v1/tenants",
            Some(json!({ "name": "Acme" })),
        )
        .await;
    assert_eq!(s, 201);
    let tid = created["id"].as_str().unwrap();
    let instances = created["instances"].as_array().unwrap();
    assert_eq!(instances.len(), 2);
    for i in instances {
        let id = i["id"].as_str().unwrap();
        assert_eq!(i["issuer"], g.url(&format!("/i/{id}")).as_str());
        assert!(i["secret_key"].as_str().unwrap().starts_with("sk_"));
    }
    let (s, got) = g
        .admin(Method::GET, &format!("/admin/v1/tenants/{tid}"), None)
        .await;
    assert_eq!(s, 200);
    assert!(
        !got.to_string().contains("sk_test_"),
        "secret keys are shown only once"
    );
    let (_, list) = g
        .admin(Method::GET, "/admin/v1/tenants?limit=500", None)
        .await;
    assert!(list["total_count"].as_i64().unwrap() >= 2);
    assert!(
        list["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["id"] == tid)
    );
    for bad in [
        json!({}),
        json!({ "name": "" }),
        json!({ "name": 5 }),
        json!({ "name": "x", "extra": 1 }),
    ] {
        let (s, e) = g.admin(Method::POST, "/admin/v1/tenants", Some(bad)).await;
        assert_eq!(s, 422, "{e}");
        assert_error_shape(s, &e);
    }

    // Keys: create, list (hashed: no secrets), rotate, revoke.
    let dev = instances
        .iter()
        .find(|i| i["environment"] == "development")
        .unwrap();
    let dev_id = dev["id"].as_str().unwrap();
    let old_key = dev["secret_key"].as_str().unwrap();
    let (s, k2) = g
        .admin(
            Method::POST,
            &format!("/admin/v1/instances/{dev_id}/secret_keys"),
            Some(json!({ "name": "ci" })),
        )
        .await;
    assert_eq!(s, 201);
    let k2_secret = k2["secret_key"].as_str().unwrap();
    assert!(k2_secret.starts_with("sk_test_"));
    let (s, _) = g.call(k2_secret, Method::GET, "/v1/users", None).await;
    assert_eq!(s, 200);
    let (_, keys) = g
        .admin(
            Method::GET,
            &format!("/admin/v1/instances/{dev_id}/secret_keys"),
            None,
        )
        .await;
    assert_eq!(keys["total_count"], 2);
    assert!(!keys.to_string().contains(k2_secret) && !keys.to_string().contains(old_key));
    let (s, rotated) = g
        .admin(
            Method::POST,
            &format!(
                "/admin/v1/instances/{dev_id}/secret_keys/{}/rotate",
                dev["secret_key_id"].as_str().unwrap()
            ),
            None,
        )
        .await;
    assert_eq!(s, 201, "{rotated}");
    let (s, _) = g.call(old_key, Method::GET, "/v1/users", None).await;
    assert_eq!(s, 401, "rotated-out key is revoked");
    let (s, _) = g
        .call(
            rotated["secret_key"].as_str().unwrap(),
            Method::GET,
            "/v1/users",
            None,
        )
        .await;
    assert_eq!(s, 200);
    let (s, _) = g
        .admin(
            Method::POST,
            &format!(
                "/admin/v1/instances/{dev_id}/secret_keys/{}/revoke",
                k2["id"].as_str().unwrap()
            ),
            None,
        )
        .await;
    assert_eq!(s, 200);
    let (s, _) = g.call(k2_secret, Method::GET, "/v1/users", None).await;
    assert_eq!(s, 401);
    let (s, _) = g
        .admin(
            Method::POST,
            "/admin/v1/instances/ins_nope/secret_keys",
            None,
        )
        .await;
    assert_eq!(s, 404);

    // Disabling a tenant shuts its keys out.
    let (s, d) = g
        .admin(
            Method::POST,
            &format!("/admin/v1/tenants/{tid}/disable"),
            None,
        )
        .await;
    assert_eq!((s, d["disabled"].clone()), (200, json!(true)));
    let (s, _) = g
        .call(
            rotated["secret_key"].as_str().unwrap(),
            Method::GET,
            "/v1/users",
            None,
        )
        .await;
    assert_eq!(s, 401);
    // Other tenants are unaffected.
    let (s, _) = g.call(&t.dev.key, Method::GET, "/v1/users", None).await;
    assert_eq!(s, 200);
}

async fn ops_endpoints(mode: Mode) {
    let g = Gatehouse::start(mode).await;
    let t = g.tenant().await;
    g.create_user(&t.dev.key, "ops@example.com").await;
    let (s, r) = g.call("", Method::GET, "/readyz", None).await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["ready"], true);
    if mode == Mode::Production {
        for dep in ["database", "bus", "redis"] {
            assert_eq!(r["checks"][dep]["ok"], true, "{dep}: {r}");
        }
    }
    let res = g
        .client
        .get(g.url("/v1/users/user_0000000000000000000000"))
        .bearer_auth(&t.dev.key)
        .send()
        .await
        .unwrap();
    let header = res
        .headers()
        .get("x-trace-id")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    let body: Value = res.json().await.unwrap();
    assert_eq!(
        body["trace_id"],
        header.as_str(),
        "error body and header carry the same trace id"
    );
    let users = t.dev.id.clone();
    g.eventually("usage consumer", 30, || async {
        g.usage(&users).await == 1
    })
    .await;
    let metrics = g
        .client
        .get(g.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for family in [
        "gatehouse_http_requests_total{method=\"POST\",route=\"/v1/users\",status=\"200\"}",
        "gatehouse_http_request_duration_seconds_bucket",
        "gatehouse_events_appended_total{event_type=\"user.created\",store=\"authz_events\"}",
        "gatehouse_outbox_lag_seconds",
        "gatehouse_consumer_lag_seconds",
    ] {
        assert!(metrics.contains(family), "missing {family}");
    }
    assert!(
        g.log_text().contains(&header),
        "the trace id appears in the logs"
    );
}

async fn custom_scopes(mode: Mode) {
    let g = Gatehouse::start(mode).await;
    let t = g.tenant().await;
    let key = &t.dev.key;
    let (s, list) = g.call(key, Method::GET, "/v1/oauth_scopes", None).await;
    assert_eq!(s, 200);
    assert_eq!(list["total_count"], 4, "the standard scopes: {list}");
    let (s, sc) = g
        .call(
            key,
            Method::POST,
            "/v1/oauth_scopes",
            Some(json!({ "name": "read:docs", "description": "Read your documents" })),
        )
        .await;
    assert_eq!(s, 200, "{sc}");
    assert_eq!(
        sc,
        json!({ "object": "oauth_scope", "name": "read:docs", "description": "Read your documents", "standard": false })
    );
    let (_, list) = g.call(key, Method::GET, "/v1/oauth_scopes", None).await;
    assert!(
        list["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["name"] == "read:docs")
    );
    for (bad, want) in [
        (json!({ "name": "read:docs", "description": "again" }), 409),
        (json!({ "name": "email", "description": "mine" }), 409),
        (json!({ "name": "two words", "description": "x" }), 422),
        (json!({ "name": "ok", "description": "" }), 422),
        (json!({ "name": "ok" }), 422),
    ] {
        let (s, e) = g
            .call(key, Method::POST, "/v1/oauth_scopes", Some(bad.clone()))
            .await;
        assert_eq!(s, want, "{bad}: {e}");
        assert_error_shape(s, &e);
    }
    // Applications may request it; another instance does not know it.
    let (s, app) = g
        .call(key, Method::POST, "/v1/oauth_applications",
              Some(json!({ "name": "docs", "scopes": "openid read:docs", "redirect_uris": ["https://d.example/cb"] })))
        .await;
    assert_eq!(s, 200, "{app}");
    assert_eq!(app["scopes"], "openid read:docs");
    let (s, _) = g
        .call(
            &t.prod.key,
            Method::POST,
            "/v1/oauth_applications",
            Some(json!({ "name": "x", "scopes": "read:docs" })),
        )
        .await;
    assert_eq!(s, 422, "custom scopes are per instance");
    let (s, _) = g
        .call(
            &t.prod.key,
            Method::DELETE,
            "/v1/oauth_scopes/read:docs",
            None,
        )
        .await;
    assert_eq!(s, 404);
    let (s, d) = g
        .call(
            key,
            Method::PATCH,
            "/v1/oauth_scopes/read:docs",
            Some(json!({ "description": "Read all your documents" })),
        )
        .await;
    assert_eq!(
        (s, d["description"].clone()),
        (200, json!("Read all your documents"))
    );
    let (s, e) = g
        .call(key, Method::DELETE, "/v1/oauth_scopes/read:docs", None)
        .await;
    assert_eq!(s, 409, "in use: {e}");
    assert_eq!(e["errors"][0]["code"], "scope_in_use");
    g.call(
        key,
        Method::DELETE,
        &format!("/v1/oauth_applications/{}", app["id"].as_str().unwrap()),
        None,
    )
    .await;
    let (s, _) = g
        .call(key, Method::DELETE, "/v1/oauth_scopes/read:docs", None)
        .await;
    assert_eq!(s, 200);
    let (_, list) = g.call(key, Method::GET, "/v1/oauth_scopes", None).await;
    assert_eq!(list["total_count"], 4);
}

macro_rules! suite {
    ($($name:ident),* $(,)?) => {
        mod embedded {
            $(#[tokio::test] async fn $name() { super::$name(super::Mode::Embedded).await })*
        }
        mod production {
            $(#[tokio::test] async fn $name() { super::$name(super::Mode::Production).await })*
        }
    };
}

suite!(
    user_lifecycle,
    list_count_and_filters,
    duplicate_email_and_idempotency,
    tenant_isolation,
    bad_input_matrix,
    admin_api,
    ops_endpoints,
    oauth_applications,
    oauth_applications_paginate_to_the_last,
    custom_scopes,
    scope_removal_races_application_writes,
);

/// Removing a scope while applications are being created and updated to
/// list it, many times over: either the removal is refused (409) or the
/// application write is (422), never both accepted, so no application ends
/// up listing a scope that no longer exists.
async fn scope_removal_races_application_writes(mode: Mode) {
    let g = Gatehouse::start(mode).await;
    let t = g.tenant().await;
    let key = &t.dev.key;
    let (s, plain) = g
        .call(
            key,
            Method::POST,
            "/v1/oauth_applications",
            Some(json!({ "name": "plain", "redirect_uris": ["https://a.example/cb"], "scopes": "openid" })),
        )
        .await;
    assert_eq!(s, 200, "{plain}");
    let plain_path = format!("/v1/oauth_applications/{}", plain["id"].as_str().unwrap());
    for round in 0..25 {
        g.define_scope(key, "race:x", "Race").await;
        let create = g.call(
            key,
            Method::POST,
            "/v1/oauth_applications",
            Some(
                json!({ "name": format!("racer {round}"), "redirect_uris": ["https://a.example/cb"],
                         "scopes": "openid race:x" }),
            ),
        );
        let update = g.call(
            key,
            Method::PATCH,
            &plain_path,
            Some(json!({ "scopes": "openid race:x" })),
        );
        let remove = g.call(key, Method::DELETE, "/v1/oauth_scopes/race:x", None);
        let ((cs, created), (us, updated), (rs, removed)) = tokio::join!(create, update, remove);
        assert!(matches!(cs, 200 | 422), "{created}");
        assert!(matches!(us, 200 | 422), "{updated}");
        assert!(matches!(rs, 200 | 409), "{removed}");
        if rs == 200 {
            assert_eq!(
                (cs, us),
                (422, 422),
                "round {round}: accepted a scope being removed"
            );
            continue;
        }
        // The scope stays: undo this round's uses and remove it.
        if cs == 200 {
            let path = format!("/v1/oauth_applications/{}", created["id"].as_str().unwrap());
            assert_eq!(g.call(key, Method::DELETE, &path, None).await.0, 200);
        }
        let (s, b) = g
            .call(
                key,
                Method::PATCH,
                &plain_path,
                Some(json!({ "scopes": "openid" })),
            )
            .await;
        assert_eq!(s, 200, "{b}");
        let (s, b) = g
            .call(key, Method::DELETE, "/v1/oauth_scopes/race:x", None)
            .await;
        assert_eq!(s, 200, "{b}");
    }
}

async fn oauth_applications(mode: Mode) {
    let g = Gatehouse::start(mode).await;
    let t = g.tenant().await;
    let key = &t.dev.key;
    let (s, app) = g
        .call(
            key,
            Method::POST,
            "/v1/oauth_applications",
            Some(json!({ "name": "Claude", "redirect_uris": ["https://claude.ai/api/mcp/auth_callback", "http://localhost:6274/cb"],
                         "scopes": "openid email offline_access", "client_image_url": "https://claude.ai/logo.png" })),
        )
        .await;
    assert_eq!(s, 200, "{app}");
    assert_eq!(app["object"], "oauth_application");
    assert_eq!(app["instance_id"], t.dev.id.as_str());
    assert_eq!(app["consent_screen_enabled"], true, "consent on by default");
    assert_eq!(app["pkce_required"], true);
    assert_eq!(app["public"], false);
    assert_eq!(app["dynamically_registered"], false);
    assert_eq!(app["scopes"], "openid email offline_access");
    let issuer = g.url(&format!("/i/{}", t.dev.id));
    assert_eq!(app["authorize_url"], format!("{issuer}/oauth/authorize"));
    assert_eq!(
        app["discovery_url"],
        format!("{issuer}/.well-known/oauth-authorization-server")
    );
    let secret = app["client_secret"].as_str().unwrap().to_owned();
    assert!(secret.len() >= 40);
    let id = app["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("oa_"));

    let (s, got) = g
        .call(
            key,
            Method::GET,
            &format!("/v1/oauth_applications/{id}"),
            None,
        )
        .await;
    assert_eq!(s, 200);
    assert!(
        got.get("client_secret").is_none(),
        "the secret is shown only on create and rotate"
    );
    assert!(!got.to_string().contains(&secret));

    let (s, upd) = g
        .call(key, Method::PATCH, &format!("/v1/oauth_applications/{id}"),
              Some(json!({ "name": "Claude Desktop", "consent_screen_enabled": false, "scopes": "openid" })))
        .await;
    assert_eq!(s, 200, "{upd}");
    assert_eq!(
        (
            upd["name"].clone(),
            upd["consent_screen_enabled"].clone(),
            upd["scopes"].clone()
        ),
        (json!("Claude Desktop"), json!(false), json!("openid"))
    );
    let (s, e) = g
        .call(
            key,
            Method::PATCH,
            &format!("/v1/oauth_applications/{id}"),
            Some(json!({ "public": true })),
        )
        .await;
    assert_eq!(s, 422, "{e}");

    let (s, rot) = g
        .call(
            key,
            Method::POST,
            &format!("/v1/oauth_applications/{id}/rotate_secret"),
            None,
        )
        .await;
    assert_eq!(s, 200);
    let new_secret = rot["client_secret"].as_str().unwrap();
    assert_ne!(new_secret, secret);

    // Public clients: no secret, PKCE mandatory.
    let (s, public) = g
        .call(key, Method::POST, "/v1/oauth_applications",
              Some(json!({ "name": "CLI", "public": true, "redirect_uris": ["http://127.0.0.1:8976/cb"] })))
        .await;
    assert_eq!(s, 200, "{public}");
    assert!(public.get("client_secret").is_none());
    let pid = public["id"].as_str().unwrap();
    let (s, _) = g
        .call(
            key,
            Method::POST,
            &format!("/v1/oauth_applications/{pid}/rotate_secret"),
            None,
        )
        .await;
    assert_eq!(s, 400);
    let (s, _) = g
        .call(
            key,
            Method::PATCH,
            &format!("/v1/oauth_applications/{pid}"),
            Some(json!({ "pkce_required": false })),
        )
        .await;
    assert_eq!(s, 422);

    // Bad metadata is refused field by field.
    for bad in [
        json!({}),
        json!({ "name": "" }),
        json!({ "name": "x", "redirect_uris": ["http://evil.example/cb"] }),
        json!({ "name": "x", "redirect_uris": ["https://a.example/cb#f"] }),
        json!({ "name": "x", "redirect_uris": ["javascript:alert(1)"] }),
        json!({ "name": "x", "redirect_uris": "https://a.example/cb" }),
        json!({ "name": "x", "scopes": "openid admin" }),
        json!({ "name": "x", "client_image_url": "http://logo.example/x.png" }),
        json!({ "name": "x", "public": true, "pkce_required": false }),
        json!({ "name": "x", "surprise": 1 }),
    ] {
        let (s, e) = g
            .call(
                key,
                Method::POST,
                "/v1/oauth_applications",
                Some(bad.clone()),
            )
            .await;
        assert_eq!(s, 422, "{bad}: {e}");
        assert_error_shape(s, &e);
    }

    // Isolation: another instance sees nothing and changes nothing.
    for other in [&t.prod.key] {
        for (m, path) in [
            (Method::GET, format!("/v1/oauth_applications/{id}")),
            (Method::PATCH, format!("/v1/oauth_applications/{id}")),
            (Method::DELETE, format!("/v1/oauth_applications/{id}")),
            (
                Method::POST,
                format!("/v1/oauth_applications/{id}/rotate_secret"),
            ),
        ] {
            let (s, _) = g
                .call(other, m.clone(), &path, Some(json!({ "name": "pwned" })))
                .await;
            assert_eq!(s, 404, "{m} {path}");
        }
        let (_, list) = g
            .call(other, Method::GET, "/v1/oauth_applications", None)
            .await;
        assert_eq!(list["total_count"], 0);
    }

    let (s, d) = g
        .call(
            key,
            Method::DELETE,
            &format!("/v1/oauth_applications/{id}"),
            None,
        )
        .await;
    assert_eq!(
        (s, d),
        (
            200,
            json!({ "object": "oauth_application", "id": id, "deleted": true })
        )
    );
    let (s, _) = g
        .call(
            key,
            Method::GET,
            &format!("/v1/oauth_applications/{id}"),
            None,
        )
        .await;
    assert_eq!(s, 404);
}

async fn oauth_applications_paginate_to_the_last(mode: Mode) {
    let g = Gatehouse::start(mode).await;
    let t = g.tenant().await;
    let key = &t.prod.key;
    let mut created = std::collections::HashSet::new();
    for i in 0..500 {
        let (s, a) = g
            .call(key, Method::POST, "/v1/oauth_applications",
                  Some(json!({ "name": format!("app {i:03}"), "redirect_uris": ["https://a.example/cb"] })))
            .await;
        assert_eq!(s, 200, "{a}");
        created.insert(a["id"].as_str().unwrap().to_owned());
    }
    let mut seen = std::collections::HashSet::new();
    let mut offset = 0;
    loop {
        let (s, page) = g
            .call(
                key,
                Method::GET,
                &format!("/v1/oauth_applications?limit=37&offset={offset}&order_by=name"),
                None,
            )
            .await;
        assert_eq!(s, 200);
        assert_eq!(page["total_count"], 500);
        let data = page["data"].as_array().unwrap();
        if data.is_empty() {
            break;
        }
        for a in data {
            assert!(
                seen.insert(a["id"].as_str().unwrap().to_owned()),
                "no duplicates across pages"
            );
        }
        offset += data.len();
    }
    assert_eq!(seen, created, "all 500 reachable");
    let (_, first) = g
        .call(
            key,
            Method::GET,
            "/v1/oauth_applications?limit=1&order_by=-name",
            None,
        )
        .await;
    assert_eq!(first["data"][0]["name"], "app 499");
    let (_, q) = g
        .call(
            key,
            Method::GET,
            "/v1/oauth_applications?name_query=APP%2004",
            None,
        )
        .await;
    assert_eq!(q["total_count"], 10);
    let (s, _) = g
        .call(key, Method::GET, "/v1/oauth_applications?limit=501", None)
        .await;
    assert_eq!(s, 422);
}
