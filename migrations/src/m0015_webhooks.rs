//! The webhooks service: its event store and the endpoints projection.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DbBackend;

use crate::{drop_tables, events_table, run_script};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let backend = manager.get_database_backend();
        run_script(manager, &events_table(backend, "webhooks_events")).await?;
        let bytes = match backend {
            DbBackend::Postgres => "BYTEA",
            _ => "BLOB",
        };
        run_script(
            manager,
            &format!(
                "CREATE TABLE webhooks_endpoints (
                    id TEXT PRIMARY KEY,
                    instance_id TEXT NOT NULL,
                    version BIGINT NOT NULL,
                    url TEXT NOT NULL,
                    description TEXT NOT NULL,
                    filter_types TEXT NOT NULL,
                    disabled BOOLEAN NOT NULL,
                    state {bytes} NOT NULL,
                    created_at BIGINT NOT NULL,
                    updated_at BIGINT NOT NULL
                );
                CREATE INDEX webhooks_endpoints_instance ON webhooks_endpoints (instance_id, created_at, id)"
            ),
        )
        .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run_script(
            manager,
            &drop_tables(&["webhooks_endpoints", "webhooks_events"]),
        )
        .await
    }
}
