//! Usernames are unique per instance, case-insensitively (NULLs are not
//! usernames and never collide).

pub const MIGRATION: crate::Script = crate::Script {
    file: file!(),
    up: "CREATE UNIQUE INDEX authz_users_username ON authz_users (instance_id, LOWER(username))",
    down: "DROP INDEX authz_users_username",
};
