//! The authorization service: its event store, the users projection, and
//! password hashes (kept out of events on purpose: they never go on the bus).

use sea_orm_migration::prelude::*;

use crate::{drop_tables, events_table, run_script};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run_script(
            manager,
            &events_table(manager.get_database_backend(), "authz_events"),
        )
        .await?;
        run_script(
            manager,
            "CREATE TABLE authz_users (
                id TEXT PRIMARY KEY,
                instance_id TEXT NOT NULL,
                version BIGINT NOT NULL,
                primary_email_address_id TEXT,
                first_name TEXT,
                last_name TEXT,
                external_id TEXT,
                username TEXT,
                public_metadata TEXT NOT NULL,
                private_metadata TEXT NOT NULL,
                unsafe_metadata TEXT NOT NULL,
                password_enabled BOOLEAN NOT NULL,
                banned BOOLEAN NOT NULL,
                created_at BIGINT NOT NULL,
                updated_at BIGINT NOT NULL
            );
            CREATE INDEX authz_users_instance_created ON authz_users (instance_id, created_at, id);
            CREATE TABLE authz_user_emails (
                id TEXT PRIMARY KEY,
                instance_id TEXT NOT NULL,
                user_id TEXT NOT NULL,
                email_address TEXT NOT NULL,
                email_lower TEXT NOT NULL,
                position INTEGER NOT NULL,
                UNIQUE (instance_id, email_lower)
            );
            CREATE INDEX authz_user_emails_user ON authz_user_emails (user_id);
            CREATE TABLE authz_passwords (
                user_id TEXT PRIMARY KEY,
                instance_id TEXT NOT NULL,
                hash TEXT NOT NULL,
                updated_at BIGINT NOT NULL
            )",
        )
        .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run_script(
            manager,
            &drop_tables(&[
                "authz_passwords",
                "authz_user_emails",
                "authz_users",
                "authz_events",
            ]),
        )
        .await
    }
}
