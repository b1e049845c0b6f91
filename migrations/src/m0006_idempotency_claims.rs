//! Idempotency rows carry the claim of the request that owns them, so a
//! request whose key was taken over (after it looked abandoned) cannot
//! overwrite or release the new owner's row.

use sea_orm_migration::prelude::*;

use crate::run_script;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run_script(
            manager,
            "ALTER TABLE platform_idempotency ADD COLUMN claim TEXT NOT NULL DEFAULT ''",
        )
        .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run_script(
            manager,
            "ALTER TABLE platform_idempotency DROP COLUMN claim",
        )
        .await
    }
}
