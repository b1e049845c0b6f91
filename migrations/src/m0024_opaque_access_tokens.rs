//! Opaque access tokens (`oat_…`) as an application setting: the
//! application's format in the authorization service's projection and in
//! the token service's copy of clients, and the opaque token's hash on its
//! access token row, by which verification finds it.

pub const MIGRATION: crate::Script = crate::Script {
    file: file!(),
    up: "ALTER TABLE authz_oauth_applications ADD COLUMN access_token_format TEXT NOT NULL DEFAULT 'jwt';
         ALTER TABLE tokens_clients ADD COLUMN access_token_format TEXT NOT NULL DEFAULT 'jwt';
         ALTER TABLE tokens_access_tokens ADD COLUMN token_hash TEXT;
         CREATE UNIQUE INDEX tokens_access_tokens_by_hash ON tokens_access_tokens (token_hash)",
    down: "DROP INDEX IF EXISTS tokens_access_tokens_by_hash;
           ALTER TABLE tokens_access_tokens DROP COLUMN token_hash;
           ALTER TABLE tokens_clients DROP COLUMN access_token_format;
           ALTER TABLE authz_oauth_applications DROP COLUMN access_token_format",
};
