//! Command line: flags with environment fallbacks (PRODUCT.md §9).

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Parser, Debug)]
#[command(
    name = "gatehouse",
    version,
    about = "Self-hostable multi-tenant auth platform"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub embedded: EmbeddedArgs,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run one service against PostgreSQL, Kafka and Redis.
    Serve(ServeArgs),
    /// Apply database migrations.
    Migrate(DbArgs),
    /// Drop a projection and rebuild it from its events.
    Rebuild(RebuildArgs),
    /// Drive real HTTP or database load and print throughput and latency.
    Bench(crate::bench::BenchArgs),
    /// Write the OpenAPI documents generated from the code, or check the
    /// committed ones against it.
    Openapi(OpenapiArgs),
}

#[derive(Args, Debug)]
pub struct OpenapiArgs {
    /// Where the documents are committed.
    #[arg(long, default_value = "docs/openapi")]
    pub dir: PathBuf,
    /// Fail, writing nothing, when a committed document differs from the code.
    #[arg(long)]
    pub check: bool,
}

#[derive(Args, Debug, Clone)]
pub struct EmbeddedArgs {
    /// Address to listen on.
    #[arg(long, env = "GATEHOUSE_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: String,
    /// Where the embedded database and generated secrets live.
    #[arg(long, env = "GATEHOUSE_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// Token of the platform admin API (generated and printed once if absent).
    #[arg(long, env = "GATEHOUSE_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Public base URL (default `http://<listen>`); issuers derive from it.
    #[arg(long, env = "GATEHOUSE_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Secret sealing OAuth authorization codes (generated into the data
    /// directory if absent).
    #[arg(long, env = "GATEHOUSE_OAUTH_CODE_SECRET", hide_env_values = true)]
    pub oauth_code_secret: Option<String>,
    /// Log format: `text` (default here) or `json`.
    #[arg(long, env = "GATEHOUSE_LOG_FORMAT")]
    pub log_format: Option<LogFormat>,
    #[command(flatten)]
    pub rate_limits: RateLimitArgs,
    #[command(flatten)]
    pub http: HttpArgs,
    #[command(flatten)]
    pub client_metadata: ClientMetadataArgs,
    /// Let development instances' webhook endpoints point at this machine's
    /// localhost, 127.0.0.1 or [::1]. Every tenant can then make this
    /// process call local services and read their answers in the attempt
    /// log: for a developer's own machine only.
    #[arg(long, env = "GATEHOUSE_WEBHOOKS_ALLOW_LOOPBACK")]
    pub webhooks_allow_loopback: bool,
    /// Run on a clock the admin API can move forward
    /// (`POST /admin/v1/test/clock/advance`). End-to-end tests only.
    #[arg(long, env = "GATEHOUSE_TEST_CLOCK", hide = true)]
    pub test_clock: bool,
    /// Abort the process right after an idempotent command has committed,
    /// before its response is sent. End-to-end tests only.
    #[arg(long, env = "GATEHOUSE_TEST_CRASH_AFTER_COMMIT", hide = true)]
    pub test_crash_after_commit: bool,
}

/// How requests are read.
#[derive(Args, Debug, Clone)]
pub struct HttpArgs {
    /// Seconds a request body may take to arrive before the request is
    /// answered 408 and its connection closed.
    #[arg(long, env = "GATEHOUSE_BODY_READ_TIMEOUT", default_value_t = 10)]
    pub body_read_timeout: u64,
    /// Requests one peer address may have in flight per process (then
    /// 429); 0 turns the bound off, for a proxy in front that bounds them.
    #[arg(long, env = "GATEHOUSE_MAX_REQUESTS_PER_PEER", default_value_t = 256)]
    pub max_requests_per_peer: usize,
}

impl HttpArgs {
    pub fn body_read_timeout(&self) -> anyhow::Result<std::time::Duration> {
        if self.body_read_timeout == 0 {
            anyhow::bail!("--body-read-timeout must be at least 1 second");
        }
        Ok(std::time::Duration::from_secs(self.body_read_timeout))
    }
}

/// Backend API rate limits (per instance, per 10 seconds).
#[derive(Args, Debug, Clone)]
pub struct RateLimitArgs {
    /// Requests per 10 s for production instances without an override.
    #[arg(long, env = "GATEHOUSE_RATE_LIMIT_PRODUCTION", default_value_t = 1000)]
    pub rate_limit_production: u32,
    /// Requests per 10 s for development instances without an override.
    #[arg(long, env = "GATEHOUSE_RATE_LIMIT_DEVELOPMENT", default_value_t = 100)]
    pub rate_limit_development: u32,
    /// Processes serving the Backend API; each takes 1/replicas of a limit
    /// when Redis is unreachable and it must decide alone.
    #[arg(long, env = "GATEHOUSE_REPLICAS", default_value_t = 1)]
    pub replicas: u32,
    /// Turn Backend API rate limiting off (benchmarks only).
    #[arg(long, env = "GATEHOUSE_NO_RATE_LIMITS")]
    pub no_rate_limits: bool,
}

impl RateLimitArgs {
    pub fn settings(&self) -> anyhow::Result<gatehouse_platform::ratelimit::RateLimitSettings> {
        if self.rate_limit_production == 0 || self.rate_limit_development == 0 || self.replicas == 0
        {
            anyhow::bail!("rate limits and --replicas must be at least 1");
        }
        Ok(gatehouse_platform::ratelimit::RateLimitSettings {
            production: self.rate_limit_production,
            development: self.rate_limit_development,
            window: std::time::Duration::from_secs(10),
            replicas: self.replicas,
            enabled: !self.no_rate_limits,
            key_prefix: String::new(),
        })
    }
}

/// Fetching client ID metadata documents (https `client_id`s).
#[derive(Args, Debug, Clone)]
pub struct ClientMetadataArgs {
    /// Fetch metadata documents from loopback and private addresses too.
    /// Turns the SSRF protection off: development and tests only.
    #[arg(long, env = "GATEHOUSE_CLIENT_METADATA_ALLOW_PRIVATE_NETWORKS")]
    pub client_metadata_allow_private_networks: bool,
    /// PEM file of extra root certificates trusted when fetching them.
    #[arg(long, env = "GATEHOUSE_CLIENT_METADATA_CA_FILE")]
    pub client_metadata_ca_file: Option<std::path::PathBuf>,
}

impl ClientMetadataArgs {
    pub fn settings(
        &self,
    ) -> anyhow::Result<gatehouse_platform::client_metadata::ClientMetadataSettings> {
        let extra_roots = match &self.client_metadata_ca_file {
            None => Vec::new(),
            Some(path) => {
                let pem = std::fs::read(path).with_context(|| {
                    format!("cannot read --client-metadata-ca-file {}", path.display())
                })?;
                let roots = reqwest::Certificate::from_pem_bundle(&pem).with_context(|| {
                    format!(
                        "--client-metadata-ca-file {} holds no PEM certificates",
                        path.display()
                    )
                })?;
                if roots.is_empty() {
                    anyhow::bail!(
                        "--client-metadata-ca-file {} holds no PEM certificates",
                        path.display()
                    );
                }
                roots
            }
        };
        Ok(
            gatehouse_platform::client_metadata::ClientMetadataSettings {
                allow_private_networks: self.client_metadata_allow_private_networks,
                extra_roots,
            },
        )
    }
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    Authz,
    Tokens,
    Billing,
    Webhooks,
    Analytics,
}

#[derive(Args, Debug, Clone)]
pub struct ServeArgs {
    /// The service(s) to run in this process, e.g. `authz` or `authz tokens`.
    #[arg(value_enum, required = true, num_args = 1..)]
    pub services: Vec<Service>,
    #[command(flatten)]
    pub deps: Dependencies,
    /// Address to listen on.
    #[arg(long, env = "GATEHOUSE_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: String,
    /// Public base URL (default `http://<listen>`); issuers derive from it.
    #[arg(long, env = "GATEHOUSE_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Token of the platform admin API; without it this process serves no admin API.
    #[arg(long, env = "GATEHOUSE_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Secret (at least 32 characters) sealing OAuth authorization codes:
    /// the same in every authz and tokens process of a deployment.
    #[arg(long, env = "GATEHOUSE_OAUTH_CODE_SECRET", hide_env_values = true)]
    pub oauth_code_secret: Option<String>,
    /// Prefix for every Kafka topic name (several deployments on one cluster).
    #[arg(long, env = "GATEHOUSE_TOPIC_PREFIX", default_value = "")]
    pub topic_prefix: String,
    /// Prefix for every Redis key (several deployments on one Redis);
    /// default: the topic prefix.
    #[arg(long, env = "GATEHOUSE_REDIS_PREFIX")]
    pub redis_prefix: Option<String>,
    /// Seconds a resolved secret key is trusted before it is looked up again.
    #[arg(long, env = "GATEHOUSE_KEY_CACHE_SECONDS", default_value_t = 2)]
    pub key_cache_seconds: u64,
    /// Log format: `json` (default here) or `text`.
    #[arg(long, env = "GATEHOUSE_LOG_FORMAT")]
    pub log_format: Option<LogFormat>,
    #[command(flatten)]
    pub rate_limits: RateLimitArgs,
    #[command(flatten)]
    pub http: HttpArgs,
    #[command(flatten)]
    pub client_metadata: ClientMetadataArgs,
    /// Deliver development instances' webhooks to loopback endpoints, so
    /// the production-shaped end-to-end tests can run their receivers on
    /// this machine. End-to-end tests only: a deployment never sets it.
    #[arg(long, env = "GATEHOUSE_TEST_WEBHOOKS_ALLOW_LOOPBACK", hide = true)]
    pub test_webhooks_allow_loopback: bool,
    /// Run on a clock the admin API can move forward
    /// (`POST /admin/v1/test/clock/advance`). End-to-end tests only.
    #[arg(long, env = "GATEHOUSE_TEST_CLOCK", hide = true)]
    pub test_clock: bool,
    /// Abort the process right after an idempotent command has committed,
    /// before its response is sent. End-to-end tests only.
    #[arg(long, env = "GATEHOUSE_TEST_CRASH_AFTER_COMMIT", hide = true)]
    pub test_crash_after_commit: bool,
}

#[derive(Args, Debug, Clone)]
pub struct Dependencies {
    /// PostgreSQL URL, e.g. postgres://user@host:5432/gatehouse.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// Kafka bootstrap servers, e.g. 127.0.0.1:9092.
    #[arg(long, env = "KAFKA_BROKERS")]
    pub kafka_brokers: Option<String>,
    /// Redis URL, e.g. redis://127.0.0.1:6379.
    #[arg(long, env = "REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,
}

#[derive(Args, Debug, Clone)]
pub struct DbArgs {
    /// Database URL; without it, the embedded SQLite database in `--data-dir`.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    #[arg(long, env = "GATEHOUSE_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
}

#[derive(Args, Debug, Clone)]
pub struct RebuildArgs {
    /// The projection: `users`, `sessions`, `oauth_applications`, `oauth_scopes`,
    /// `oauth_settings`, `oauth_grants` (authz), `token_families`,
    /// `token_clients`, `token_users` (tokens), `webhook_endpoints` (webhooks),
    /// `tenancy`, or the consumer projection `instance_usage`.
    pub projection: String,
    #[command(flatten)]
    pub db: DbArgs,
}
