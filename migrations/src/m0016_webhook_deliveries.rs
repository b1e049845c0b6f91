//! Webhook messages (one per public event and instance), their deliveries
//! (one per message × matching endpoint: the durable queue) and every
//! delivery attempt.

use sea_orm_migration::prelude::*;

use crate::{drop_tables, run_script};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run_script(
            manager,
            "CREATE TABLE webhooks_messages (
                id TEXT PRIMARY KEY,
                instance_id TEXT NOT NULL,
                event_type TEXT NOT NULL,
                body TEXT NOT NULL,
                source_event_id TEXT NOT NULL UNIQUE,
                created_at BIGINT NOT NULL
            );
            CREATE INDEX webhooks_messages_instance ON webhooks_messages (instance_id, created_at);
            CREATE TABLE webhooks_deliveries (
                message_id TEXT NOT NULL,
                endpoint_id TEXT NOT NULL,
                instance_id TEXT NOT NULL,
                status TEXT NOT NULL,
                attempts INTEGER NOT NULL,
                next_attempt_at BIGINT NOT NULL,
                created_at BIGINT NOT NULL,
                updated_at BIGINT NOT NULL,
                PRIMARY KEY (message_id, endpoint_id)
            );
            CREATE INDEX webhooks_deliveries_due ON webhooks_deliveries (status, next_attempt_at);
            CREATE TABLE webhooks_attempts (
                id TEXT PRIMARY KEY,
                message_id TEXT NOT NULL,
                endpoint_id TEXT NOT NULL,
                instance_id TEXT NOT NULL,
                status_code INTEGER,
                response_excerpt TEXT NOT NULL,
                error TEXT,
                duration_ms BIGINT NOT NULL,
                attempted_at BIGINT NOT NULL,
                next_attempt_at BIGINT
            );
            CREATE INDEX webhooks_attempts_message ON webhooks_attempts (message_id, endpoint_id)",
        )
        .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run_script(
            manager,
            &drop_tables(&[
                "webhooks_attempts",
                "webhooks_deliveries",
                "webhooks_messages",
            ]),
        )
        .await
    }
}
