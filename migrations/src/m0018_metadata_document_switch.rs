//! A per-instance switch for clients identified by a metadata document URL
//! (on unless an instance turns it off).

use sea_orm_migration::prelude::*;

use crate::run_script;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run_script(
            manager,
            "ALTER TABLE authz_oauth_settings \
             ADD COLUMN metadata_documents_disabled BOOLEAN NOT NULL DEFAULT FALSE",
        )
        .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run_script(
            manager,
            "ALTER TABLE authz_oauth_settings DROP COLUMN metadata_documents_disabled",
        )
        .await
    }
}
