//! Clients that identify themselves by a metadata document URL (see
//! `gatehouse_platform::client_metadata` for how the document is fetched).
//! The document is read as RFC 7591 client metadata with the draft's extra
//! rules, and the client is always public, PKCE-bound, and shown the
//! consent screen: nobody at the instance vetted it.

use gatehouse_platform::Platform;
use gatehouse_platform::client_metadata::{self, FetchError};
use gatehouse_proto::v1::OAuthApplicationState as AppState;
use serde_json::Value;

use super::registration::{ClientMetadata, to_state};
use super::scopes;

#[derive(Debug, thiserror::Error)]
pub enum DocumentError {
    #[error(transparent)]
    Fetch(#[from] FetchError),
    #[error("the client metadata document is invalid: {0}")]
    Invalid(String),
    #[error("client scopes could not be read: {0}")]
    Store(#[from] sea_orm::DbErr),
    #[error("this instance does not accept clients identified by a metadata document URL")]
    Disabled,
}

/// The application a metadata-document `client_id` stands for in an instance.
pub async fn resolve(
    platform: &Platform,
    instance_id: &str,
    client_id: &str,
) -> Result<AppState, DocumentError> {
    // Switched off: nothing is fetched.
    if !super::registration::settings(platform.db(), instance_id)
        .await?
        .metadata_documents
    {
        return Err(DocumentError::Disabled);
    }
    let doc = platform.client_metadata().fetch(client_id).await?;
    let known = scopes::known(platform.db(), instance_id).await?;
    to_client(client_id, Value::Object((*doc).clone()), &known).map_err(DocumentError::Invalid)
}

/// Validates a fetched document for `client_id`.
fn to_client(client_id: &str, doc: Value, known_scopes: &[String]) -> Result<AppState, String> {
    if doc.get("client_id").and_then(Value::as_str) != Some(client_id) {
        return Err("its client_id must equal the URL it is served from".into());
    }
    if doc.get("client_secret").is_some() || doc.get("client_secret_expires_at").is_some() {
        return Err("it must not carry a client secret".into());
    }
    let mut meta: ClientMetadata =
        serde_json::from_value(doc).map_err(|e| format!("a field has the wrong type ({e})"))?;
    match meta.token_endpoint_auth_method.as_deref() {
        None | Some("none") => meta.token_endpoint_auth_method = Some("none".into()),
        Some(other) => {
            return Err(format!(
                "token_endpoint_auth_method {other:?} is not supported here; use \"none\""
            ));
        }
    }
    // A document serves many servers: it may name scopes this instance does
    // not define (ignored); without `scope` it may ask for any scope here.
    let scope = match meta.scope.as_deref() {
        Some(s) => s
            .split_ascii_whitespace()
            .filter(|s| known_scopes.iter().any(|k| k == s))
            .collect::<Vec<_>>()
            .join(" "),
        None => known_scopes.join(" "),
    };
    meta.scope = Some(scope);
    let mut app = to_state(meta, known_scopes, Default::default()).map_err(|e| e.description)?;
    app.client_id = client_id.to_owned();
    app.application_id = client_metadata::application_id(client_id);
    app.dynamically_registered = false;
    app.consent_screen_enabled = true;
    app.pkce_required = true;
    app.public = true;
    Ok(app)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    const URL: &str = "https://client.example/oauth/client.json";

    fn known() -> Vec<String> {
        ["openid", "profile", "email", "offline_access", "mcp:tools"]
            .map(String::from)
            .to_vec()
    }

    #[test]
    fn a_document_becomes_a_public_client_with_forced_consent() {
        let doc = json!({
            "client_id": URL,
            "client_name": "Example MCP client",
            "logo_uri": "https://client.example/logo.png",
            "redirect_uris": ["http://127.0.0.1:33418/callback"],
            "grant_types": ["authorization_code", "refresh_token"],
            "scope": "openid mcp:tools unknown:scope",
        });
        let app = to_client(URL, doc, &known()).unwrap();
        assert_eq!(app.client_id, URL);
        assert!(app.public && app.pkce_required && app.consent_screen_enabled);
        assert_eq!(app.token_endpoint_auth_method, "none");
        assert_eq!(app.scopes, "openid mcp:tools");
        assert_eq!(app.name, "Example MCP client");
        assert_eq!(app.application_id, client_metadata::application_id(URL));

        let open = json!({ "client_id": URL, "redirect_uris": ["https://client.example/cb"] });
        assert_eq!(
            to_client(URL, open, &known()).unwrap().scopes,
            known().join(" ")
        );
    }

    #[test]
    fn documents_breaking_the_rules_are_refused() {
        let base = || json!({ "client_id": URL, "redirect_uris": ["https://client.example/cb"] });
        let with = |k: &str, v: Value| {
            let mut d = base();
            d[k] = v;
            d
        };
        for doc in [
            with("client_id", json!("https://other.example/client.json")),
            json!({ "redirect_uris": ["https://client.example/cb"] }),
            with("client_secret", json!("s3cret")),
            with("token_endpoint_auth_method", json!("client_secret_basic")),
            with("token_endpoint_auth_method", json!("private_key_jwt")),
            with("grant_types", json!(["client_credentials"])),
            with("redirect_uris", json!([])),
            with("redirect_uris", json!(["http://evil.example/cb"])),
            with("redirect_uris", json!("https://client.example/cb")),
            with("logo_uri", json!("javascript:alert(1)")),
        ] {
            assert!(
                to_client(URL, doc.clone(), &known()).is_err(),
                "{doc} accepted"
            );
        }
    }
}
