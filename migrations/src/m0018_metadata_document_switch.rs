//! A per-instance switch for clients identified by a metadata document URL
//! (on unless an instance turns it off).

pub const MIGRATION: crate::Script = crate::Script {
    file: file!(),
    up: "ALTER TABLE authz_oauth_settings \
        ADD COLUMN metadata_documents_disabled BOOLEAN NOT NULL DEFAULT FALSE",
    down: "ALTER TABLE authz_oauth_settings DROP COLUMN metadata_documents_disabled",
};
