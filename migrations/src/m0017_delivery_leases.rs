//! A delivery's lease is its own column: a claimed delivery is leased until
//! its attempt is recorded (or the lease runs out because its process died),
//! which lets a claim count what every process has in flight per endpoint.
//! The index holds only leased rows, so that count stays cheap whatever the
//! size of the queue.

use sea_orm_migration::prelude::*;

use crate::run_script;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run_script(
            manager,
            "ALTER TABLE webhooks_deliveries ADD COLUMN leased_until BIGINT;
            CREATE INDEX webhooks_deliveries_in_flight ON webhooks_deliveries (leased_until) \
             WHERE leased_until IS NOT NULL",
        )
        .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run_script(
            manager,
            "DROP INDEX webhooks_deliveries_in_flight;
            ALTER TABLE webhooks_deliveries DROP COLUMN leased_until",
        )
        .await
    }
}
