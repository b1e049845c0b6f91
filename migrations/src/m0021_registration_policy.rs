//! What open registration may get, and the resource indicators an instance
//! declares: the authorization service's settings gain the policy, and the
//! token service keeps its own copy of the resources (fed by
//! `oauth_settings.changed`, as it keeps its own copy of clients).

pub const MIGRATION: crate::Script = crate::Script {
    file: file!(),
    up: "ALTER TABLE authz_oauth_settings ADD COLUMN registration_client_credentials BOOLEAN NOT NULL DEFAULT FALSE;
         ALTER TABLE authz_oauth_settings ADD COLUMN registration_custom_scopes BOOLEAN NOT NULL DEFAULT FALSE;
         ALTER TABLE authz_oauth_settings ADD COLUMN resource_indicators TEXT NOT NULL DEFAULT '[]';
         CREATE TABLE tokens_instance_resources (
             instance_id TEXT PRIMARY KEY,
             resource_indicators TEXT NOT NULL
         )",
    down: "DROP TABLE IF EXISTS tokens_instance_resources;
           ALTER TABLE authz_oauth_settings DROP COLUMN resource_indicators;
           ALTER TABLE authz_oauth_settings DROP COLUMN registration_custom_scopes;
           ALTER TABLE authz_oauth_settings DROP COLUMN registration_client_credentials",
};
