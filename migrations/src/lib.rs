//! Migrations of every Gatehouse schema, applied by `gatehouse migrate` (and
//! at start in the embedded default). One module per owner; tables are
//! prefixed by their owner so the services can share one database or not.
//!
//! DDL is written per backend: PostgreSQL in production, SQLite embedded.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::{ConnectionTrait, DbBackend};

mod m0001_platform;
mod m0002_tenancy;
mod m0003_authz;
mod m0004_rate_limits;
mod m0005_oauth_applications;
mod m0006_idempotency_claims;
mod m0007_unique_usernames;
mod m0008_consumer_generations;
mod m0009_dynamic_registration;
mod m0010_sessions;
mod m0011_oauth_grants;
mod m0012_tokens;
mod m0013_grant_client_names;
mod m0014_tokens_users;
mod m0015_webhooks;
mod m0016_webhook_deliveries;
mod m0017_delivery_leases;
mod m0018_metadata_document_switch;
mod m0019_attempts_by_endpoint;
mod m0020_revoked_families;
mod m0021_registration_policy;
mod m0022_email_verified;
mod m0023_webhook_concurrency;
mod m0024_opaque_access_tokens;

pub use sea_orm_migration::MigratorTrait;

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m0001_platform::Migration),
            Box::new(m0002_tenancy::Migration),
            Box::new(m0003_authz::Migration),
            Box::new(m0004_rate_limits::MIGRATION),
            Box::new(m0005_oauth_applications::Migration),
            Box::new(m0006_idempotency_claims::MIGRATION),
            Box::new(m0007_unique_usernames::MIGRATION),
            Box::new(m0008_consumer_generations::Migration),
            Box::new(m0009_dynamic_registration::Migration),
            Box::new(m0010_sessions::Migration),
            Box::new(m0011_oauth_grants::Migration),
            Box::new(m0012_tokens::Migration),
            Box::new(m0013_grant_client_names::Migration),
            Box::new(m0014_tokens_users::Migration),
            Box::new(m0015_webhooks::Migration),
            Box::new(m0016_webhook_deliveries::Migration),
            Box::new(m0017_delivery_leases::Migration),
            Box::new(m0018_metadata_document_switch::MIGRATION),
            Box::new(m0019_attempts_by_endpoint::MIGRATION),
            Box::new(m0020_revoked_families::MIGRATION),
            Box::new(m0021_registration_policy::MIGRATION),
            Box::new(m0022_email_verified::MIGRATION),
            Box::new(m0023_webhook_concurrency::MIGRATION),
            Box::new(m0024_opaque_access_tokens::MIGRATION),
        ]
    }
}

/// Runs each statement of a `;`-separated script.
/// A migration whose `up` and `down` are one script each, the same on both
/// backends. Named as `DeriveMigrationName` names a module's migration: by
/// the stem of the file it is declared in (`file: file!()`).
pub(crate) struct Script {
    pub file: &'static str,
    pub up: &'static str,
    pub down: &'static str,
}

impl MigrationName for Script {
    fn name(&self) -> &str {
        sea_orm_migration::util::get_file_stem(self.file)
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Script {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run_script(manager, self.up).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run_script(manager, self.down).await
    }
}

pub(crate) async fn run_script(manager: &SchemaManager<'_>, script: &str) -> Result<(), DbErr> {
    let conn = manager.get_connection();
    for stmt in script.split(';').map(str::trim).filter(|s| !s.is_empty()) {
        conn.execute_unprepared(stmt).await?;
    }
    Ok(())
}

/// An event store table: the write model and outbox of one service.
pub(crate) fn events_table(backend: DbBackend, table: &str) -> String {
    match backend {
        DbBackend::Postgres => format!(
            "CREATE TABLE {table} (
                global_position BIGSERIAL PRIMARY KEY,
                event_id TEXT NOT NULL UNIQUE,
                stream_id TEXT NOT NULL,
                stream_type TEXT NOT NULL,
                stream_version BIGINT NOT NULL,
                event_type TEXT NOT NULL,
                payload BYTEA NOT NULL,
                metadata TEXT NOT NULL,
                instance_id TEXT NOT NULL,
                recorded_at BIGINT NOT NULL,
                tx_id xid8 NOT NULL DEFAULT pg_current_xact_id(),
                UNIQUE (stream_id, stream_version)
            );
            CREATE INDEX {table}_commit_order ON {table} (tx_id, global_position)"
        ),
        _ => format!(
            "CREATE TABLE {table} (
                global_position INTEGER PRIMARY KEY AUTOINCREMENT,
                event_id TEXT NOT NULL UNIQUE,
                stream_id TEXT NOT NULL,
                stream_type TEXT NOT NULL,
                stream_version BIGINT NOT NULL,
                event_type TEXT NOT NULL,
                payload BLOB NOT NULL,
                metadata TEXT NOT NULL,
                instance_id TEXT NOT NULL,
                recorded_at BIGINT NOT NULL,
                UNIQUE (stream_id, stream_version)
            )"
        ),
    }
}

pub(crate) fn drop_tables(tables: &[&str]) -> String {
    tables
        .iter()
        .map(|t| format!("DROP TABLE IF EXISTS {t}"))
        .collect::<Vec<_>>()
        .join(";")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Names are what a database records as applied: they never change.
    #[test]
    fn migration_names_are_their_modules() {
        let names: Vec<String> = Migrator::migrations()
            .iter()
            .map(|m| m.name().to_owned())
            .collect();
        assert_eq!(
            names,
            [
                "m0001_platform",
                "m0002_tenancy",
                "m0003_authz",
                "m0004_rate_limits",
                "m0005_oauth_applications",
                "m0006_idempotency_claims",
                "m0007_unique_usernames",
                "m0008_consumer_generations",
                "m0009_dynamic_registration",
                "m0010_sessions",
                "m0011_oauth_grants",
                "m0012_tokens",
                "m0013_grant_client_names",
                "m0014_tokens_users",
                "m0015_webhooks",
                "m0016_webhook_deliveries",
                "m0017_delivery_leases",
                "m0018_metadata_document_switch",
                "m0019_attempts_by_endpoint",
                "m0020_revoked_families",
                "m0021_registration_policy",
                "m0022_email_verified",
                "m0023_webhook_concurrency",
                "m0024_opaque_access_tokens",
            ]
        );
    }
}
