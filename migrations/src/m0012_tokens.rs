//! The token service: its event store, its read model of OAuth clients (fed
//! by `gatehouse.oauth`), per-instance signing keys, and the projections of
//! token families, access tokens and refresh tokens.

use sea_orm_migration::prelude::*;

use crate::{drop_tables, events_table, run_script};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run_script(
            manager,
            &events_table(manager.get_database_backend(), "tokens_events"),
        )
        .await?;
        run_script(
            manager,
            "CREATE TABLE tokens_clients (
                client_id TEXT PRIMARY KEY,
                instance_id TEXT NOT NULL,
                application_id TEXT NOT NULL,
                secret_hash TEXT NOT NULL,
                is_public BOOLEAN NOT NULL,
                scopes TEXT NOT NULL,
                redirect_uris TEXT NOT NULL,
                grant_types TEXT NOT NULL,
                token_endpoint_auth_method TEXT NOT NULL,
                version BIGINT NOT NULL
            );
            CREATE TABLE tokens_signing_keys (
                kid TEXT PRIMARY KEY,
                instance_id TEXT NOT NULL,
                alg TEXT NOT NULL,
                private_pem TEXT NOT NULL,
                public_jwk TEXT NOT NULL,
                active BOOLEAN NOT NULL,
                created_at BIGINT NOT NULL,
                retired_at BIGINT
            );
            CREATE INDEX tokens_signing_keys_instance ON tokens_signing_keys (instance_id);
            CREATE UNIQUE INDEX tokens_signing_keys_active ON tokens_signing_keys (instance_id) WHERE active;
            CREATE TABLE tokens_families (
                id TEXT PRIMARY KEY,
                instance_id TEXT NOT NULL,
                client_id TEXT NOT NULL,
                user_id TEXT NOT NULL,
                created_at BIGINT NOT NULL,
                revoked_at BIGINT,
                revocation_reason TEXT
            );
            CREATE INDEX tokens_families_client_user ON tokens_families (instance_id, client_id, user_id);
            CREATE TABLE tokens_access_tokens (
                jti TEXT PRIMARY KEY,
                instance_id TEXT NOT NULL,
                family_id TEXT NOT NULL,
                client_id TEXT NOT NULL,
                subject TEXT NOT NULL,
                user_id TEXT NOT NULL,
                scope TEXT NOT NULL,
                audience TEXT NOT NULL,
                created_at BIGINT NOT NULL,
                expires_at BIGINT NOT NULL,
                revoked_at BIGINT,
                revocation_reason TEXT
            );
            CREATE INDEX tokens_access_tokens_family ON tokens_access_tokens (family_id);
            CREATE TABLE tokens_refresh_tokens (
                token_hash TEXT PRIMARY KEY,
                instance_id TEXT NOT NULL,
                family_id TEXT NOT NULL,
                access_token_id TEXT NOT NULL,
                client_id TEXT NOT NULL,
                created_at BIGINT NOT NULL,
                expires_at BIGINT NOT NULL,
                used_at BIGINT,
                revoked_at BIGINT
            );
            CREATE INDEX tokens_refresh_tokens_family ON tokens_refresh_tokens (family_id)",
        )
        .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run_script(
            manager,
            &drop_tables(&[
                "tokens_refresh_tokens",
                "tokens_access_tokens",
                "tokens_families",
                "tokens_signing_keys",
                "tokens_clients",
                "tokens_events",
            ]),
        )
        .await
    }
}
