//! Hosted sign-in sessions (projection of `session` streams).

use sea_orm_migration::prelude::*;

use crate::{drop_tables, run_script};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run_script(
            manager,
            "CREATE TABLE authz_sessions (
                id TEXT PRIMARY KEY,
                instance_id TEXT NOT NULL,
                user_id TEXT NOT NULL,
                token_hash TEXT NOT NULL UNIQUE,
                created_at BIGINT NOT NULL,
                expires_at BIGINT NOT NULL,
                ended_at BIGINT
            );
            CREATE INDEX authz_sessions_user ON authz_sessions (user_id)",
        )
        .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run_script(manager, &drop_tables(&["authz_sessions"])).await
    }
}
