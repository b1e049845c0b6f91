//! Webhook deliveries under load: a receiver in this process behind N
//! endpoints of one instance, users created at a steady rate through the
//! Backend API, and for each delivery the time from the event (the body's
//! `timestamp`) to its arrival.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::{App, HttpResponse, HttpServer, web};
use anyhow::{Context, bail};
use clap::Args;
use serde_json::{Value, json};

use super::percentiles;

#[derive(Args, Debug)]
pub struct WebhooksArgs {
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub base_url: String,
    /// Secret key of a development instance (its endpoints may use
    /// localhost; raise its rate limit for the run).
    #[arg(long, env = "GATEHOUSE_BENCH_SECRET_KEY", hide_env_values = true)]
    pub secret_key: String,
    #[arg(long, default_value_t = 10)]
    pub endpoints: usize,
    /// Users created per second (each is one delivery per endpoint).
    #[arg(long, default_value_t = 200)]
    pub rate: u64,
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
}

fn now_ms() -> i64 {
    gatehouse_platform::clock::wall_ms()
}

pub async fn run(a: WebhooksArgs) -> anyhow::Result<()> {
    let latencies: Arc<Mutex<Vec<u64>>> = Arc::new(Mutex::new(Vec::new()));
    let sink = latencies.clone();
    let server = HttpServer::new(move || {
        let sink = sink.clone();
        App::new().default_service(web::to(move |body: web::Bytes| {
            let sink = sink.clone();
            async move {
                let arrived = now_ms();
                if let Ok(v) = serde_json::from_slice::<Value>(&body)
                    && let Some(ts) = v["timestamp"].as_i64()
                    && let Ok(mut l) = sink.lock()
                {
                    l.push(((arrived - ts).max(0) as u64) * 1000);
                }
                HttpResponse::NoContent().finish()
            }
        }))
    })
    .workers(2)
    .bind(("127.0.0.1", 0))
    .context("cannot start the receiver")?;
    let addr = *server.addrs().first().context("receiver has no address")?;
    tokio::spawn(server.run());

    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()?;
    let base = a.base_url.trim_end_matches('/').to_owned();
    for i in 0..a.endpoints {
        let res = client
            .post(format!("{base}/v1/webhooks/endpoints"))
            .bearer_auth(&a.secret_key)
            .json(
                &json!({ "url": format!("http://{addr}/e{i}"), "filter_types": ["user.created"] }),
            )
            .send()
            .await?;
        if !res.status().is_success() {
            bail!(
                "creating an endpoint failed: {} {}",
                res.status(),
                res.text().await?
            );
        }
    }

    let run_id = gatehouse_platform::ids::random_base62(8).to_lowercase();
    let started = gatehouse_platform::clock::monotonic();
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / a.rate.max(1)));
    let mut created = 0u64;
    let mut tasks = Vec::new();
    while started.elapsed() < Duration::from_secs(a.seconds) {
        tick.tick().await;
        let (client, base, key) = (client.clone(), base.clone(), a.secret_key.clone());
        let email = format!("wh-{run_id}-{created}@bench.example");
        created += 1;
        tasks.push(tokio::spawn(async move {
            client
                .post(format!("{base}/v1/users"))
                .bearer_auth(key)
                .json(&json!({ "email_address": [email] }))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
        }));
    }
    let mut ok = 0u64;
    for t in tasks {
        if t.await.unwrap_or(false) {
            ok += 1;
        }
    }
    let expected = ok as usize * a.endpoints;
    let deadline = gatehouse_platform::clock::monotonic() + Duration::from_secs(60);
    let mut last_count = 0;
    let mut last_change = gatehouse_platform::clock::monotonic();
    loop {
        let n = latencies.lock().map(|l| l.len()).unwrap_or(0);
        if n != last_count {
            last_count = n;
            last_change = gatehouse_platform::clock::monotonic();
        }
        if n >= expected || gatehouse_platform::clock::monotonic() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let elapsed = last_change.duration_since(started).as_secs_f64();
    let all = latencies.lock().map(|l| l.clone()).unwrap_or_default();
    println!(
        "webhooks: {ok} users created in {}s at {}/s, {} endpoints → {} of {expected} deliveries in {elapsed:.1} s = {:.0} deliveries/s; event → arrival {}",
        a.seconds,
        a.rate,
        a.endpoints,
        all.len(),
        all.len() as f64 / elapsed.max(0.001),
        percentiles(all)
    );
    Ok(())
}
