//! Idempotency rows carry the claim of the request that owns them, so a
//! request whose key was taken over (after it looked abandoned) cannot
//! overwrite or release the new owner's row.

pub const MIGRATION: crate::Script = crate::Script {
    file: file!(),
    up: "ALTER TABLE platform_idempotency ADD COLUMN claim TEXT NOT NULL DEFAULT ''",
    down: "ALTER TABLE platform_idempotency DROP COLUMN claim",
};
