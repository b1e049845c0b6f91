//! Every end-to-end test, in one binary: each module is one area (the
//! file names say which), all share the harness in `common`. One binary
//! links the service code, rdkafka and the browser driver once instead of
//! once per area.
// Test code: the helpers beside the tests unwrap as the tests do, and the
// tests wait on real time for a server that runs on its own.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

#[macro_use]
mod common;

mod api_suite;
mod authorize;
mod browser;
mod clerk_sdk;
mod cli;
mod client_metadata;
mod dcr;
mod events;
mod hosted;
mod metadata;
mod oauth_client;
mod openapi;
mod rate_limit;
mod slow_clients;
mod tokens;
mod webhooks;
