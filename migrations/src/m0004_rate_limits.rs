//! Per-instance Backend API rate-limit overrides (NULL: the default for the
//! instance's environment).

use sea_orm_migration::prelude::*;

use crate::run_script;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run_script(
            manager,
            "ALTER TABLE tenancy_instances ADD COLUMN rate_limit BIGINT",
        )
        .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run_script(
            manager,
            "ALTER TABLE tenancy_instances DROP COLUMN rate_limit",
        )
        .await
    }
}
