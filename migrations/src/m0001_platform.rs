//! What the platform library itself keeps: outbox checkpoints, consumer
//! dedupe, idempotency keys, and the embedded bus log.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DbBackend;

use crate::{drop_tables, run_script};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let (blob, serial) = match manager.get_database_backend() {
            DbBackend::Postgres => ("BYTEA", "BIGSERIAL PRIMARY KEY"),
            _ => ("BLOB", "INTEGER PRIMARY KEY AUTOINCREMENT"),
        };
        run_script(
            manager,
            &format!(
                "CREATE TABLE platform_checkpoints (
                    name TEXT PRIMARY KEY,
                    position TEXT NOT NULL
                );
                CREATE TABLE platform_processed_events (
                    consumer TEXT NOT NULL,
                    event_id TEXT NOT NULL,
                    processed_at BIGINT NOT NULL,
                    PRIMARY KEY (consumer, event_id)
                );
                CREATE TABLE platform_idempotency (
                    instance_id TEXT NOT NULL,
                    idem_key TEXT NOT NULL,
                    fingerprint TEXT NOT NULL,
                    status INTEGER NOT NULL,
                    body TEXT NOT NULL,
                    created_at BIGINT NOT NULL,
                    PRIMARY KEY (instance_id, idem_key)
                );
                CREATE TABLE platform_bus_log (
                    position {serial},
                    topic TEXT NOT NULL,
                    record_key TEXT NOT NULL,
                    payload {blob} NOT NULL
                );
                CREATE INDEX platform_bus_log_topic ON platform_bus_log (topic, position);
                CREATE TABLE platform_bus_offsets (
                    group_name TEXT PRIMARY KEY,
                    position BIGINT NOT NULL
                )"
            ),
        )
        .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run_script(
            manager,
            &drop_tables(&[
                "platform_bus_offsets",
                "platform_bus_log",
                "platform_idempotency",
                "platform_processed_events",
                "platform_checkpoints",
            ]),
        )
        .await
    }
}
