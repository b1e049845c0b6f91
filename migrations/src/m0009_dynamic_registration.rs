//! Dynamic client registration (RFC 7591/7592): per-instance switch and the
//! management token of each dynamically registered application.

use sea_orm_migration::prelude::*;

use crate::{drop_tables, run_script};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run_script(
            manager,
            "ALTER TABLE authz_oauth_applications ADD COLUMN registration_access_token_hash TEXT NOT NULL DEFAULT '';
            ALTER TABLE authz_oauth_applications ADD COLUMN token_endpoint_auth_method TEXT NOT NULL DEFAULT '';
            ALTER TABLE authz_oauth_applications ADD COLUMN grant_types TEXT NOT NULL DEFAULT '[]';
            CREATE TABLE authz_oauth_settings (
                instance_id TEXT PRIMARY KEY,
                dynamic_client_registration BOOLEAN NOT NULL,
                updated_at BIGINT NOT NULL
            )",
        )
        .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run_script(
            manager,
            &format!(
                "{};ALTER TABLE authz_oauth_applications DROP COLUMN grant_types;\
                 ALTER TABLE authz_oauth_applications DROP COLUMN token_endpoint_auth_method;\
                 ALTER TABLE authz_oauth_applications DROP COLUMN registration_access_token_hash",
                drop_tables(&["authz_oauth_settings"])
            ),
        )
        .await
    }
}
