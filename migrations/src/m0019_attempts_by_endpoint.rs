//! Attempts by endpoint and time: the dispatcher asks, after failures,
//! when an endpoint last succeeded and first failed since.

use sea_orm_migration::prelude::*;

use crate::run_script;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run_script(
            manager,
            "CREATE INDEX webhooks_attempts_endpoint ON webhooks_attempts (endpoint_id, attempted_at)",
        )
        .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run_script(manager, "DROP INDEX webhooks_attempts_endpoint").await
    }
}
