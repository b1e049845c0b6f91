//! Tenancy: its event store and its projection (tenants, instances, secret
//! keys), plus the instance usage read model fed from the bus.

use sea_orm_migration::prelude::*;

use crate::{drop_tables, events_table, run_script};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run_script(
            manager,
            &events_table(manager.get_database_backend(), "tenancy_events"),
        )
        .await?;
        run_script(
            manager,
            "CREATE TABLE tenancy_tenants (
                id TEXT PRIMARY KEY,
                name TEXT NOT NULL,
                disabled BOOLEAN NOT NULL,
                created_at BIGINT NOT NULL,
                updated_at BIGINT NOT NULL
            );
            CREATE INDEX tenancy_tenants_created ON tenancy_tenants (created_at, id);
            CREATE TABLE tenancy_instances (
                id TEXT PRIMARY KEY,
                tenant_id TEXT NOT NULL,
                environment TEXT NOT NULL,
                publishable_key TEXT NOT NULL,
                created_at BIGINT NOT NULL
            );
            CREATE INDEX tenancy_instances_tenant ON tenancy_instances (tenant_id);
            CREATE TABLE tenancy_secret_keys (
                id TEXT PRIMARY KEY,
                instance_id TEXT NOT NULL,
                key_hash TEXT NOT NULL UNIQUE,
                key_hint TEXT NOT NULL,
                name TEXT NOT NULL,
                created_at BIGINT NOT NULL,
                revoked_at BIGINT
            );
            CREATE INDEX tenancy_secret_keys_instance ON tenancy_secret_keys (instance_id);
            CREATE TABLE tenancy_instance_usage (
                instance_id TEXT PRIMARY KEY,
                users_total BIGINT NOT NULL,
                events_applied BIGINT NOT NULL
            )",
        )
        .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run_script(
            manager,
            &drop_tables(&[
                "tenancy_instance_usage",
                "tenancy_secret_keys",
                "tenancy_instances",
                "tenancy_tenants",
                "tenancy_events",
            ]),
        )
        .await
    }
}
