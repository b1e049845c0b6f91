//! Attempts by endpoint and time: the dispatcher asks, after failures,
//! when an endpoint last succeeded and first failed since.

pub const MIGRATION: crate::Script = crate::Script {
    file: file!(),
    up: "CREATE INDEX webhooks_attempts_endpoint ON webhooks_attempts (endpoint_id, attempted_at)",
    down: "DROP INDEX webhooks_attempts_endpoint",
};
