//! Each webhook endpoint's bound on deliveries in flight at once, which
//! claims read next to the endpoint's `disabled`. Endpoints projected
//! before it get the default the dispatcher had as a constant (16), as
//! their events (without the field) mean.

pub const MIGRATION: crate::Script = crate::Script {
    file: file!(),
    up: "ALTER TABLE webhooks_endpoints ADD COLUMN max_concurrency INTEGER NOT NULL DEFAULT 16",
    down: "ALTER TABLE webhooks_endpoints DROP COLUMN max_concurrency",
};
