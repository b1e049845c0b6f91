//! The authorization service's OAuth applications and custom scopes
//! projections (their events go to `authz_events` with the users').

use sea_orm_migration::prelude::*;

use crate::{drop_tables, run_script};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run_script(
            manager,
            "CREATE TABLE authz_oauth_applications (
                id TEXT PRIMARY KEY,
                instance_id TEXT NOT NULL,
                version BIGINT NOT NULL,
                name TEXT NOT NULL,
                client_id TEXT NOT NULL UNIQUE,
                client_secret_hash TEXT NOT NULL,
                client_uri TEXT,
                client_image_url TEXT,
                dynamically_registered BOOLEAN NOT NULL,
                consent_screen_enabled BOOLEAN NOT NULL,
                pkce_required BOOLEAN NOT NULL,
                is_public BOOLEAN NOT NULL,
                scopes TEXT NOT NULL,
                redirect_uris TEXT NOT NULL,
                created_at BIGINT NOT NULL,
                updated_at BIGINT NOT NULL
            );
            CREATE INDEX authz_oauth_applications_instance ON authz_oauth_applications (instance_id, created_at, id);
            CREATE TABLE authz_oauth_scopes (
                instance_id TEXT NOT NULL,
                name TEXT NOT NULL,
                description TEXT NOT NULL,
                created_at BIGINT NOT NULL,
                updated_at BIGINT NOT NULL,
                PRIMARY KEY (instance_id, name)
            )",
        )
        .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run_script(
            manager,
            &drop_tables(&["authz_oauth_scopes", "authz_oauth_applications"]),
        )
        .await
    }
}
