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

pub use sea_orm_migration::MigratorTrait;

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m0001_platform::Migration),
            Box::new(m0002_tenancy::Migration),
            Box::new(m0003_authz::Migration),
            Box::new(m0004_rate_limits::Migration),
            Box::new(m0005_oauth_applications::Migration),
            Box::new(m0006_idempotency_claims::Migration),
            Box::new(m0007_unique_usernames::Migration),
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
            Box::new(m0018_metadata_document_switch::Migration),
            Box::new(m0019_attempts_by_endpoint::Migration),
            Box::new(m0020_revoked_families::Migration),
        ]
    }
}

/// Runs each statement of a `;`-separated script.
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
