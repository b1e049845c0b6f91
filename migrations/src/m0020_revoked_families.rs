//! Revoked token families by time: the revocation set is refilled from
//! the families revoked within an access token lifetime.

pub const MIGRATION: crate::Script = crate::Script {
    file: file!(),
    up: "CREATE INDEX tokens_families_revoked ON tokens_families (revoked_at)",
    down: "DROP INDEX tokens_families_revoked",
};
