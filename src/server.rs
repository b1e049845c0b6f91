//! Running services: the HTTP app every mode shares, `serve`, `migrate`,
//! `rebuild`.

use std::time::Duration;

use actix_web::{App, HttpServer, middleware, web};
use anyhow::{Context, anyhow, bail};
use gatehouse_migrations::{Migrator, MigratorTrait};
use gatehouse_platform::bus::{KafkaBus, SharedBus};
use gatehouse_platform::db::redact_url;
use gatehouse_platform::oauth_code::CodeSealer;
use gatehouse_platform::{Platform, Settings, Worker};
use sea_orm::DatabaseConnection;

use crate::cli::{DbArgs, LogFormat, RebuildArgs, ServeArgs, Service};

pub fn init_logging(format: LogFormat) {
    // Info by default; one summary line for the migrations instead of
    // sea-orm-migration's line for each, which debug (or naming it) shows.
    let mut directives = std::env::var("RUST_LOG").unwrap_or_else(|_| "info".to_owned());
    if !["debug", "trace", "sea_orm_migration"]
        .iter()
        .any(|d| directives.contains(d))
    {
        directives.push_str(",sea_orm_migration=warn");
    }
    let filter = tracing_subscriber::EnvFilter::try_new(&directives)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sea_orm_migration=warn"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let _ = match format {
        LogFormat::Json => builder.json().with_current_span(true).try_init(),
        LogFormat::Text => builder.compact().try_init(),
    };
}

/// Which services a process mounts. The all-in-one mode mounts every built
/// one; `serve` mounts one.
#[derive(Debug, Clone, Copy)]
pub struct Mounts {
    pub authz: bool,
    pub tokens: bool,
    pub webhooks: bool,
}

impl Mounts {
    pub const ALL: Self = Self {
        authz: true,
        tokens: true,
        webhooks: true,
    };
}

/// Starts the background workers of the platform and of mounted services.
pub fn spawn_workers(platform: &Platform, mounts: Mounts) {
    let mut workers: Vec<(&'static str, Worker)> = gatehouse_platform::workers(platform);
    if mounts.authz {
        workers.extend(gatehouse_authz::workers(platform));
    }
    if mounts.tokens {
        workers.extend(gatehouse_tokens::workers(platform));
    }
    if mounts.webhooks {
        workers.extend(gatehouse_webhooks::workers(platform));
    }
    for (name, worker) in workers {
        tracing::debug!(worker = name, "starting worker");
        tokio::spawn(worker);
    }
}

/// Serves HTTP until SIGINT/SIGTERM.
pub async fn run_http(platform: Platform, listen: &str, mounts: Mounts) -> anyhow::Result<()> {
    let data = web::Data::new(platform);
    let docs = web::Data::new(crate::openapi::documents());
    let server = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .app_data(docs.clone())
            .configure(gatehouse_platform::http::configure_extractors)
            .configure(gatehouse_platform::http::configure_ops)
            .configure(crate::openapi::configure)
            // Services first: the admin API's `/admin/v1` scope would take
            // the admin routes a service adds.
            // Tokens before authz: its `/v1/oauth_applications/access_tokens/verify`
            // sits under the authz scope `/v1/oauth_applications`.
            .configure(|cfg| {
                if mounts.tokens {
                    gatehouse_tokens::configure(cfg);
                }
                if mounts.authz {
                    gatehouse_authz::configure(cfg);
                }
                if mounts.webhooks {
                    gatehouse_webhooks::configure(cfg);
                }
            })
            .configure(gatehouse_platform::tenancy::admin_api::configure)
            .wrap(middleware::from_fn(
                gatehouse_platform::http::guard_requests,
            ))
            .wrap(middleware::Compress::default())
            .wrap(middleware::from_fn(gatehouse_platform::http::observe))
    })
    .shutdown_timeout(10)
    .bind(listen)
    .with_context(|| format!("cannot listen on {listen}"))?;
    server.run().await.context("HTTP server failed")
}

/// The process clock, and the same clock as the handle `--test-clock`
/// gives the admin API (`None` without the flag).
pub fn clocks(
    test_clock: bool,
) -> (
    gatehouse_platform::clock::SharedClock,
    Option<std::sync::Arc<gatehouse_platform::clock::OffsetClock>>,
) {
    match test_clock.then(gatehouse_platform::clock::OffsetClock::new) {
        Some(c) => (c.clone(), Some(c)),
        None => (gatehouse_platform::clock::system(), None),
    }
}

pub async fn connect_db(url: &str) -> anyhow::Result<DatabaseConnection> {
    if !(url.starts_with("postgres://")
        || url.starts_with("postgresql://")
        || url.starts_with("sqlite:"))
    {
        bail!(
            "unsupported database URL {}: use postgres://… (or sqlite:… for the embedded database)",
            redact_url(url)
        );
    }
    tokio::time::timeout(
        Duration::from_secs(10),
        gatehouse_platform::db::connect(url),
    )
    .await
    .map_err(|_| {
        anyhow!(
            "cannot reach the database at {}: timed out",
            redact_url(url)
        )
    })?
    .with_context(|| format!("cannot reach the database at {}", redact_url(url)))
}

fn required(value: Option<String>, flag: &str, env: &str) -> anyhow::Result<String> {
    value
        .filter(|v| !v.trim().is_empty())
        .ok_or_else(|| anyhow!("{flag} (or the {env} environment variable) is required"))
}

pub async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    init_logging(args.log_format.unwrap_or(LogFormat::Json));
    let mut mounts = Mounts {
        authz: false,
        tokens: false,
        webhooks: false,
    };
    for service in &args.services {
        match service {
            Service::Authz => mounts.authz = true,
            Service::Tokens => mounts.tokens = true,
            Service::Webhooks => mounts.webhooks = true,
            other => bail!(
                "the {other:?} service is not part of this build yet; available: authz, tokens, \
                 webhooks"
            ),
        }
    }
    let database_url = required(args.deps.database_url, "--database-url", "DATABASE_URL")?;
    let brokers = required(args.deps.kafka_brokers, "--kafka-brokers", "KAFKA_BROKERS")?;
    let redis_url = required(args.deps.redis_url, "--redis-url", "REDIS_URL")?;
    let code_secret = required(
        args.oauth_code_secret,
        "--oauth-code-secret",
        "GATEHOUSE_OAUTH_CODE_SECRET",
    )?;
    let code_sealer = CodeSealer::from_secret(&code_secret).map_err(|e| anyhow!("{e}"))?;

    let db = connect_db(&database_url).await?;
    let pending = Migrator::get_pending_migrations(&db)
        .await
        .context("cannot read the migration state")?;
    if !pending.is_empty() {
        bail!(
            "the database at {} has {} pending migration(s); run `gatehouse migrate` first",
            redact_url(&database_url),
            pending.len()
        );
    }
    let kafka = KafkaBus::new(&brokers, &args.topic_prefix)
        .with_context(|| format!("invalid Kafka configuration for {brokers}"))?;
    let bus: SharedBus = std::sync::Arc::new(kafka.clone());
    tokio::time::timeout(Duration::from_secs(10), bus.check())
        .await
        .map_err(|_| anyhow!("cannot reach Kafka at {brokers}: timed out"))?
        .with_context(|| format!("cannot reach Kafka at {brokers}"))?;
    kafka
        .ensure_topics(3)
        .await
        .with_context(|| format!("cannot create topics on Kafka at {brokers}"))?;
    let redis = gatehouse_platform::connect_redis(&redis_url)
        .await
        .map_err(|e| anyhow!("cannot reach Redis at {}: {e}", redact_url(&redis_url)))?;

    let public_url = args
        .public_url
        .unwrap_or_else(|| format!("http://{}", args.listen));
    if args.admin_token.is_none() {
        tracing::warn!("no --admin-token: this process serves no admin API");
    }
    if args.test_webhooks_allow_loopback {
        tracing::warn!("--test-webhooks-allow-loopback: webhooks go to this host's loopback");
    }
    let (clock, test_clock) = clocks(args.test_clock);
    let platform = Platform::new(
        db,
        bus,
        clock,
        Some(redis),
        Settings {
            public_url,
            admin_token: args.admin_token,
            key_cache_ttl: Duration::from_secs(args.key_cache_seconds),
            rate_limits: args.rate_limits.settings()?,
            body_read_timeout: args.http.body_read_timeout()?,
            max_requests_per_peer: args.http.max_requests_per_peer,
            redis_prefix: args
                .redis_prefix
                .clone()
                .unwrap_or_else(|| args.topic_prefix.clone()),
            client_metadata: args.client_metadata.settings()?,
            webhooks_allow_loopback: args.test_webhooks_allow_loopback,
            test_clock,
            test_crash_after_commit: args.test_crash_after_commit,
            code_sealer,
        },
    );
    spawn_workers(&platform, mounts);
    tracing::info!(services = ?args.services, listen = %args.listen, "serving");
    run_http(platform, &args.listen, mounts).await
}

fn database_url(args: &DbArgs) -> anyhow::Result<String> {
    match &args.database_url {
        Some(url) => Ok(url.clone()),
        None => crate::embedded::sqlite_url(&args.data_dir),
    }
}

pub async fn migrate(args: DbArgs) -> anyhow::Result<()> {
    init_logging(LogFormat::Text);
    let url = database_url(&args)?;
    let db = connect_db(&url).await?;
    let pending = Migrator::get_pending_migrations(&db).await?.len();
    Migrator::up(&db, None).await.context("migration failed")?;
    println!("applied {pending} migration(s) to {}", redact_url(&url));
    Ok(())
}

pub async fn rebuild(args: RebuildArgs) -> anyhow::Result<()> {
    init_logging(LogFormat::Text);
    let url = database_url(&args.db)?;
    let db = connect_db(&url).await?;
    let n = match args.projection.as_str() {
        "tenancy" => gatehouse_platform::tenancy::rebuild(&db).await?,
        "instance_usage" => {
            let g = gatehouse_platform::consumer::rebuild(
                &db,
                &gatehouse_platform::tenancy::usage::InstanceUsage,
            )
            .await?;
            println!(
                "instance_usage emptied; running consumers replay their topics as generation {g}"
            );
            return Ok(());
        }
        name => match gatehouse_authz::rebuild(&db, name).await? {
            Some(n) => n,
            None => match gatehouse_tokens::rebuild(&db, name).await? {
                Some(n) => n,
                None => match gatehouse_webhooks::rebuild(&db, name).await? {
                    Some(n) => n,
                    None => bail!(
                        "unknown projection {name:?}; known: tenancy, instance_usage, {}, {}, {}",
                        gatehouse_authz::PROJECTIONS.join(", "),
                        gatehouse_tokens::PROJECTIONS.join(", "),
                        gatehouse_webhooks::PROJECTIONS.join(", ")
                    ),
                },
            },
        },
    };
    println!("rebuilt {} from {n} event(s)", args.projection);
    Ok(())
}
