//! Grants remember the name and logo of their client as consented to, for
//! clients that are not applications registered here (metadata-document
//! clients); registered applications still show their current name.

use sea_orm_migration::prelude::*;

use crate::run_script;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run_script(
            manager,
            "ALTER TABLE authz_oauth_grants ADD COLUMN client_name TEXT NOT NULL DEFAULT '';
            ALTER TABLE authz_oauth_grants ADD COLUMN client_logo_url TEXT",
        )
        .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run_script(
            manager,
            "ALTER TABLE authz_oauth_grants DROP COLUMN client_logo_url;
            ALTER TABLE authz_oauth_grants DROP COLUMN client_name",
        )
        .await
    }
}
