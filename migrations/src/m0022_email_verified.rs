//! Whether each email address is verified: the users projection keeps it per
//! address, the token service's read model for its user's primary address
//! (userinfo's `email_verified`).
//!
//! Rows from before the column follow the rule `identity.proto` gives events
//! from before the field: verified unless hosted sign-up created the user
//! (its first event's actor is `sign_up`). The token service's rows take
//! the answer of their user's address in the users projection, read once
//! here in the shared database; from then on its consumer keeps them.

pub const MIGRATION: crate::Script = crate::Script {
    file: file!(),
    up: r#"ALTER TABLE authz_user_emails ADD COLUMN verified BOOLEAN NOT NULL DEFAULT FALSE;
         UPDATE authz_user_emails SET verified = TRUE WHERE user_id NOT IN (
             SELECT stream_id FROM authz_events WHERE stream_type = 'user' AND stream_version = 1
             AND metadata LIKE '%"actor":"sign\_up"%' ESCAPE '\');
         ALTER TABLE tokens_users ADD COLUMN email_verified BOOLEAN NOT NULL DEFAULT FALSE;
         UPDATE tokens_users SET email_verified = TRUE WHERE NOT deleted AND EXISTS (
             SELECT 1 FROM authz_user_emails e WHERE e.user_id = tokens_users.user_id
             AND e.email_address = tokens_users.email AND e.verified)"#,
    down: "ALTER TABLE tokens_users DROP COLUMN email_verified;
           ALTER TABLE authz_user_emails DROP COLUMN verified",
};
