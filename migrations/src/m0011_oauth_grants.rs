//! What users granted OAuth applications (projection of `oauth_grant`
//! streams). One row per user × application while the grant stands.

use sea_orm_migration::prelude::*;

use crate::{drop_tables, run_script};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run_script(
            manager,
            "CREATE TABLE authz_oauth_grants (
                user_id TEXT NOT NULL,
                application_id TEXT NOT NULL,
                instance_id TEXT NOT NULL,
                client_id TEXT NOT NULL,
                scopes TEXT NOT NULL,
                consented BOOLEAN NOT NULL,
                created_at BIGINT NOT NULL,
                updated_at BIGINT NOT NULL,
                PRIMARY KEY (user_id, application_id)
            );
            CREATE INDEX authz_oauth_grants_instance ON authz_oauth_grants (instance_id, user_id)",
        )
        .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run_script(manager, &drop_tables(&["authz_oauth_grants"])).await
    }
}
