//! Slow and greedy clients: a body that never arrives is answered 408 after
//! `--body-read-timeout` and its connection let go, in the RFC 6749 shape on
//! OAuth endpoints and the one error shape elsewhere; one address cannot
//! hold more than `--max-requests-per-peer` requests at once; an oversized
//! body is 413 in the endpoint's shape.

use crate::common;

use std::time::Duration;

use crate::common::Gatehouse;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Sends a request head that promises `length` bytes and `sent` of them.
async fn half_sent(g: &Gatehouse, path: &str, extra: &str, length: usize, sent: &str) -> TcpStream {
    let addr = g.base.trim_start_matches("http://").to_owned();
    let mut s = TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: {length}\r\n{extra}\r\n{sent}"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s
}

/// The status and JSON body of the one response on `s` (read to its end:
/// the server closes the connection after refusing).
async fn answer(mut s: TcpStream) -> (u16, Value) {
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut raw))
        .await
        .expect("no answer within 30 s")
        .unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("");
    // A chunked body: the JSON is the line that starts with `{`.
    let json = body
        .lines()
        .find(|l| l.starts_with('{'))
        .and_then(|l| serde_json::from_str(l).ok())
        .unwrap_or(Value::Null);
    (status, json)
}

#[tokio::test]
async fn slow_bodies_time_out_and_one_peer_is_bounded() {
    let mut args = common::high_limits();
    args.extend(["--body-read-timeout", "1", "--max-requests-per-peer", "6"].map(String::from));
    let g = Gatehouse::embedded_with(args).await;
    let t = g.tenant().await;
    let form = "content-type: application/x-www-form-urlencoded\r\n";
    let token = format!("/i/{}/oauth/token", t.dev.id);

    // A body that stops halfway: 408, the RFC shape on the token endpoint.
    let s = half_sent(&g, &token, form, 100, "grant_type=cli").await;
    let (status, body) = answer(s).await;
    assert_eq!(status, 408, "{body}");
    assert_eq!(body["error"], "invalid_request", "{body}");
    // And the one error shape on the Backend API.
    let auth = format!(
        "authorization: Bearer {}\r\ncontent-type: application/json\r\n",
        t.dev.key
    );
    let s = half_sent(&g, "/v1/users", &auth, 100, "{\"email_address\":").await;
    let (status, body) = answer(s).await;
    assert_eq!(status, 408, "{body}");
    assert_eq!(body["errors"][0]["code"], "request_timeout", "{body}");

    // Six bodies held open from one address: the seventh request waits for
    // none of them, it is refused at once; once they time out, all is well.
    let mut held = Vec::new();
    for _ in 0..6 {
        held.push(half_sent(&g, &token, form, 100, "grant").await);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let res = g.client.get(g.url("/healthz")).send().await.unwrap();
    assert_eq!(res.status(), 429);
    for s in held {
        assert_eq!(answer(s).await.0, 408);
    }
    let res = g.client.get(g.url("/healthz")).send().await.unwrap();
    assert_eq!(res.status(), 200);

    // Oversized: 413 before anything is read, in the endpoint's shape.
    let s = half_sent(&g, &token, form, 2 * 1024 * 1024, "grant_type=").await;
    let (status, body) = answer(s).await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(body["error"], "invalid_request", "{body}");
    let res = g
        .client
        .post(g.url(&token))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(vec![b'a'; 1024 * 1024 + 1])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 413);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"], "invalid_request", "{body}");
}
