//! Hosted sign-up, sign-in and sign-out pages at the HTTP level, in both
//! shapes: cookies and their flags, CSRF, generic failures, throttling,
//! session rotation, no open redirects, no framing, instance isolation.

use crate::common::browser::{Browser, hidden, set_cookie};
use crate::common::{Gatehouse, Mode};
use reqwest::Method;

async fn hosted_pages(mode: Mode) {
    let g = Gatehouse::start(mode).await;
    let t = g.tenant().await;
    let ins = t.dev.id.clone();
    let mut b = Browser::new(&g, &ins);

    let (s, h, html) = b
        .get("/sign-up?redirect_url=https%3A%2F%2Fevil.example%2F")
        .await;
    assert_eq!(s, 200);
    assert_eq!(h.get("x-frame-options").unwrap(), "DENY");
    assert!(
        h.get("content-security-policy")
            .unwrap()
            .to_str()
            .unwrap()
            .contains("frame-ancestors 'none'")
    );
    assert_eq!(h.get("cache-control").unwrap(), "no-store");
    let (csrf, attrs) = set_cookie(&h, "gh_csrf").unwrap();
    assert!(
        attrs.contains("HttpOnly")
            && attrs.contains("SameSite=Strict")
            && attrs.contains(&format!("Path=/i/{ins}")),
        "{attrs}"
    );
    assert_eq!(hidden(&html, "csrf_token"), csrf);
    assert_eq!(
        hidden(&html, "redirect_url"),
        format!("/i/{ins}/signed-in"),
        "no open redirect"
    );

    // CSRF: missing or wrong token is refused, nothing is created.
    for token in ["", "wrong-token-000000000000000000000"] {
        let (s, _, _) = b
            .post(
                "/sign-up",
                &[
                    ("csrf_token", token),
                    ("email", "ada@hosted.example"),
                    ("password", "a good password"),
                ],
            )
            .await;
        assert_eq!(s, 403);
    }
    let (_, c) = g
        .call(&t.dev.key, Method::GET, "/v1/users/count", None)
        .await;
    assert_eq!(c["total_count"], 0);

    // Sign up: account, session cookie, redirect inside the instance.
    let (s, h, _) = b
        .post(
            "/sign-up",
            &[
                ("csrf_token", &csrf),
                ("email", "ada@hosted.example"),
                ("password", "a good password"),
                ("redirect_url", "//evil.example"),
            ],
        )
        .await;
    assert_eq!(s, 303);
    assert_eq!(h.get("location").unwrap(), &format!("/i/{ins}/signed-in"));
    let (first_session, attrs) = set_cookie(&h, "gh_session").unwrap();
    assert!(
        attrs.contains("HttpOnly")
            && attrs.contains("SameSite=Lax")
            && attrs.contains(&format!("Path=/i/{ins}")),
        "{attrs}"
    );
    assert!(
        !attrs.contains("Secure"),
        "plain-http localhost gets no Secure flag"
    );
    let (_, list) = g
        .call(
            &t.dev.key,
            Method::GET,
            "/v1/users?email_address=ada%40hosted.example",
            None,
        )
        .await;
    assert_eq!(list[0]["password_enabled"], true);
    // Nothing verified the address: the Backend API says so too.
    let verification = &list[0]["email_addresses"][0]["verification"];
    assert_eq!(verification["status"], "unverified", "{verification}");
    let (s, _, html) = b.get("/signed-in").await;
    assert_eq!(s, 200);
    assert!(html.contains("ada@hosted.example"));

    // The same address cannot sign up twice.
    let (s, _, html) = b
        .post(
            "/sign-up",
            &[
                ("csrf_token", &csrf),
                ("email", "ADA@hosted.example"),
                ("password", "another password"),
            ],
        )
        .await;
    assert_eq!(s, 409);
    assert!(html.contains("already exists"));

    // Sign out ends the session server-side.
    let old = b.session.clone().unwrap();
    let (s, h, _) = b.post("/sign-out", &[("csrf_token", &csrf)]).await;
    assert_eq!(s, 303);
    assert!(
        set_cookie(&h, "gh_session")
            .unwrap()
            .1
            .contains("Max-Age=0")
            || set_cookie(&h, "gh_session").unwrap().0.is_empty()
    );
    b.session = Some(old);
    let (s, h, _) = b.get("/signed-in").await;
    assert_eq!(s, 303, "the old cookie no longer works");
    assert_eq!(h.get("location").unwrap(), &format!("/i/{ins}/sign-in"));
    b.session = None;

    // Failures are generic: wrong password and unknown account read the same.
    let (s1, _, wrong) = b
        .post(
            "/sign-in",
            &[
                ("csrf_token", &csrf),
                ("email", "ada@hosted.example"),
                ("password", "not it at all"),
            ],
        )
        .await;
    let (s2, _, unknown) = b
        .post(
            "/sign-in",
            &[
                ("csrf_token", &csrf),
                ("email", "nobody@hosted.example"),
                ("password", "not it at all"),
            ],
        )
        .await;
    assert_eq!((s1, s2), (401, 401));
    assert!(wrong.contains("The email address or password is incorrect."));
    assert!(unknown.contains("The email address or password is incorrect."));

    // Sign in: a new session (rotated), not the first one.
    let (s, h, _) = b
        .post(
            "/sign-in",
            &[
                ("csrf_token", &csrf),
                ("email", "Ada@Hosted.example"),
                ("password", "a good password"),
                ("redirect_url", &format!("/i/{ins}/signed-in?x=1")),
            ],
        )
        .await;
    assert_eq!(s, 303);
    assert_eq!(
        h.get("location").unwrap(),
        &format!("/i/{ins}/signed-in?x=1")
    );
    let second = set_cookie(&h, "gh_session").unwrap().0;
    assert_ne!(second, first_session);
    let (s, _, _) = b.get("/signed-in").await;
    assert_eq!(s, 200);

    // A session of one instance means nothing to another.
    let mut other = Browser::new(&g, &t.prod.id);
    other.session = b.session.clone();
    let (s, _, _) = other.get("/signed-in").await;
    assert_eq!(s, 303);

    // Throttling per account: the 11th attempt in the window is refused.
    let mut last = 0;
    for _ in 0..12 {
        let (s, h, _) = b
            .post(
                "/sign-in",
                &[
                    ("csrf_token", &csrf),
                    ("email", "victim@hosted.example"),
                    ("password", "guess guess"),
                ],
            )
            .await;
        last = s;
        if s == 429 {
            assert!(h.get("retry-after").is_some());
            break;
        }
        assert_eq!(s, 401);
    }
    assert_eq!(last, 429);

    // Sign-ins are events.
    let metrics = g
        .client
        .get(g.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("gatehouse_events_appended_total{event_type=\"session.created\",store=\"authz_events\"} 2"), "{metrics}");
    assert!(metrics.contains("event_type=\"session.ended\""));

    // Only failures count: a dozen good sign-ins lock nobody out, and the
    // right password still works after nine wrong ones (one above, eight
    // here); the tenth locks the account for the window.
    let ada = "ada@hosted.example";
    for _ in 0..12 {
        assert_eq!(sign_in_as(&mut b, &csrf, ada, "a good password").await, 303);
    }
    for _ in 0..8 {
        assert_eq!(sign_in_as(&mut b, &csrf, ada, "wrong wrong").await, 401);
    }
    assert_eq!(sign_in_as(&mut b, &csrf, ada, "a good password").await, 303);
    assert_eq!(sign_in_as(&mut b, &csrf, ada, "wrong wrong").await, 401);
    assert_eq!(sign_in_as(&mut b, &csrf, ada, "a good password").await, 429);

    // Unknown instance: a page, not a stack trace.
    let mut nowhere = Browser::new(&g, "ins_0000000000000000000000");
    let (s, _, html) = nowhere.get("/sign-in").await;
    assert_eq!(s, 404);
    assert!(html.contains("no such application"));
}

async fn sign_in_as(b: &mut Browser, csrf: &str, email: &str, password: &str) -> u16 {
    let form = [
        ("csrf_token", csrf),
        ("email", email),
        ("password", password),
    ];
    b.post("/sign-in", &form).await.0
}

#[tokio::test]
async fn hosted_pages_embedded() {
    hosted_pages(Mode::Embedded).await;
}

#[tokio::test]
async fn hosted_pages_production_shape() {
    hosted_pages(Mode::Production).await;
}
