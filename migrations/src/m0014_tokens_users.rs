//! The token service's read model of users, for userinfo claims.

use sea_orm_migration::prelude::*;

use crate::{drop_tables, run_script};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run_script(
            manager,
            "CREATE TABLE tokens_users (
                user_id TEXT PRIMARY KEY,
                instance_id TEXT NOT NULL,
                email TEXT,
                first_name TEXT,
                last_name TEXT,
                username TEXT,
                banned BOOLEAN NOT NULL,
                deleted BOOLEAN NOT NULL,
                updated_at BIGINT NOT NULL
            )",
        )
        .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run_script(manager, &drop_tables(&["tokens_users"])).await
    }
}
