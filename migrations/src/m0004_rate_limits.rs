//! Per-instance Backend API rate-limit overrides (NULL: the default for the
//! instance's environment).

pub const MIGRATION: crate::Script = crate::Script {
    file: file!(),
    up: "ALTER TABLE tenancy_instances ADD COLUMN rate_limit BIGINT",
    down: "ALTER TABLE tenancy_instances DROP COLUMN rate_limit",
};
