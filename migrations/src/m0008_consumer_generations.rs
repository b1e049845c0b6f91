//! Consumer projections are rebuilt by replaying their topics from the start
//! under a new consumer group; the generation names the group.

use sea_orm_migration::prelude::*;

use crate::{drop_tables, run_script};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run_script(
            manager,
            "CREATE TABLE platform_consumer_generations (
                consumer TEXT PRIMARY KEY,
                generation BIGINT NOT NULL
            )",
        )
        .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run_script(manager, &drop_tables(&["platform_consumer_generations"])).await
    }
}
