//! Usernames are unique per instance, case-insensitively (NULLs are not
//! usernames and never collide).

use sea_orm_migration::prelude::*;

use crate::run_script;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run_script(
            manager,
            "CREATE UNIQUE INDEX authz_users_username ON authz_users (instance_id, LOWER(username))",
        )
        .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run_script(manager, "DROP INDEX authz_users_username").await
    }
}
