//! The embedded default: the whole platform in one process on SQLite under
//! `--data-dir` with the in-process bus. First start bootstraps a tenant with
//! a development and a production instance.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, anyhow};
use gatehouse_migrations::{Migrator, MigratorTrait};
use gatehouse_platform::bus::EmbeddedBus;
use gatehouse_platform::oauth_code::CodeSealer;
use gatehouse_platform::{Platform, Settings};
use serde::{Deserialize, Serialize};

use crate::cli::{EmbeddedArgs, LogFormat};
use crate::server::{Mounts, connect_db, init_logging, run_http, spawn_workers};

pub fn sqlite_url(data_dir: &Path) -> anyhow::Result<String> {
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("cannot create data directory {}", data_dir.display()))?;
    let path = data_dir.join("gatehouse.db");
    let path = path
        .to_str()
        .ok_or_else(|| anyhow!("data directory path is not UTF-8"))?;
    Ok(format!("sqlite:{path}"))
}

/// What the first start created, kept (mode 0600) so later starts can print
/// the development key again.
#[derive(Serialize, Deserialize)]
struct Bootstrap {
    tenant_id: String,
    instances: Vec<BootstrapInstance>,
}

#[derive(Serialize, Deserialize)]
struct BootstrapInstance {
    id: String,
    environment: String,
    secret_key: String,
    issuer: String,
}

fn write_private(path: &Path, contents: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    f.write_all(contents.as_bytes())?;
    Ok(())
}

fn admin_token(args: &EmbeddedArgs) -> anyhow::Result<(String, Option<PathBuf>)> {
    if let Some(t) = &args.admin_token {
        return Ok((t.clone(), None));
    }
    let path = args.data_dir.join("admin-token");
    if let Ok(t) = std::fs::read_to_string(&path) {
        return Ok((t.trim().to_owned(), Some(path)));
    }
    let token = format!("gh_admin_{}", gatehouse_platform::ids::random_base62(40));
    write_private(&path, &token)?;
    Ok((token, Some(path)))
}

fn code_sealer(args: &EmbeddedArgs) -> anyhow::Result<CodeSealer> {
    let secret = match &args.oauth_code_secret {
        Some(s) => s.clone(),
        None => {
            let path = args.data_dir.join("oauth-code-secret");
            match std::fs::read_to_string(&path) {
                Ok(s) => s.trim().to_owned(),
                Err(_) => {
                    let s = gatehouse_platform::ids::random_base62(48);
                    write_private(&path, &s)?;
                    s
                }
            }
        }
    };
    CodeSealer::from_secret(&secret).map_err(|e| anyhow!("{e}"))
}

/// One process per data directory: the embedded bus and SQLite assume a
/// single writer process. The lock is released when the process exits.
fn lock_data_dir(dir: &Path) -> anyhow::Result<std::fs::File> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create data directory {}", dir.display()))?;
    let path = dir.join(".lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(anyhow!(
            "another gatehouse process is using {}; stop it or pass another --data-dir",
            dir.display()
        )),
        Err(std::fs::TryLockError::Error(e)) => Err(anyhow!("cannot lock {}: {e}", path.display())),
    }
}

pub async fn run(args: EmbeddedArgs) -> anyhow::Result<()> {
    init_logging(args.log_format.unwrap_or(LogFormat::Text));
    let _lock = lock_data_dir(&args.data_dir)?;
    let url = sqlite_url(&args.data_dir)?;
    let db = connect_db(&url).await?;
    let pending = Migrator::get_pending_migrations(&db)
        .await
        .context("reading the embedded database's migrations")?
        .len();
    Migrator::up(&db, None)
        .await
        .context("migrating the embedded database")?;
    if pending > 0 {
        tracing::info!(applied = pending, "database migrated");
    }
    let (token, token_file) = admin_token(&args)?;
    let public_url = args
        .public_url
        .clone()
        .unwrap_or_else(|| format!("http://{}", args.listen))
        .trim_end_matches('/')
        .to_owned();
    let bus = Arc::new(EmbeddedBus::new(db.clone()));
    let (clock, test_clock) = crate::server::clocks(args.test_clock);
    let platform = Platform::new(
        db,
        bus,
        clock,
        None,
        Settings {
            public_url: public_url.clone(),
            admin_token: Some(token.clone()),
            key_cache_ttl: Duration::from_secs(2),
            rate_limits: args.rate_limits.settings()?,
            body_read_timeout: args.http.body_read_timeout()?,
            max_requests_per_peer: args.http.max_requests_per_peer,
            redis_prefix: String::new(),
            client_metadata: args.client_metadata.settings()?,
            webhooks_allow_loopback: args.webhooks_allow_loopback,
            test_clock,
            test_crash_after_commit: args.test_crash_after_commit,
            code_sealer: code_sealer(&args)?,
        },
    );
    let bootstrap_path = args.data_dir.join("bootstrap.json");
    let (tenants, _) = gatehouse_platform::tenancy::list_tenants(platform.db(), 1, 0).await?;
    if tenants.is_empty() {
        let created =
            gatehouse_platform::tenancy::create_tenant(&platform, "Default tenant", "bootstrap")
                .await
                .map_err(|e| anyhow!("bootstrapping the first tenant: {e}"))?;
        let b = Bootstrap {
            tenant_id: created.tenant.id.clone(),
            instances: created
                .instances
                .iter()
                .map(|(i, k)| BootstrapInstance {
                    id: i.id.clone(),
                    environment: i.environment.as_str().to_owned(),
                    secret_key: k.secret.clone(),
                    issuer: i.issuer.clone(),
                })
                .collect(),
        };
        write_private(&bootstrap_path, &serde_json::to_string_pretty(&b)?)?;
    }
    let mounts = Mounts::ALL;
    spawn_workers(&platform, mounts);

    println!();
    println!(
        "Gatehouse is running (embedded: SQLite at {}, in-process bus)",
        url
    );
    println!("  Backend API   {public_url}/v1/   (Authorization: Bearer <secret key>)");
    println!("  Admin API     {public_url}/admin/v1/   (Authorization: Bearer <admin token>)");
    println!("  Health        {public_url}/healthz  {public_url}/readyz  {public_url}/metrics");
    match &token_file {
        Some(p) => println!("  Admin token   {token}   (kept in {})", p.display()),
        None => println!("  Admin token   from --admin-token / GATEHOUSE_ADMIN_TOKEN"),
    }
    match std::fs::read_to_string(&bootstrap_path)
        .ok()
        .and_then(|s| serde_json::from_str::<Bootstrap>(&s).ok())
    {
        Some(b) => {
            println!("  Tenant        {}", b.tenant_id);
            for i in &b.instances {
                println!(
                    "  {:<13} {}  secret key {}",
                    i.environment, i.id, i.secret_key
                );
                println!("  {:<13} issuer {}", "", i.issuer);
            }
            println!(
                "  (bootstrap keys are kept in {})",
                bootstrap_path.display()
            );
        }
        None => println!(
            "  No bootstrap file; issue keys with POST /admin/v1/instances/<id>/secret_keys"
        ),
    }
    println!();
    run_http(platform, &args.listen, mounts).await
}
