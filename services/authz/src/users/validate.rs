//! Input rules of the users API, each with the field it names in errors.

use gatehouse_platform::{ApiError, ApiResult};
use serde_json::Value;

pub const MAX_NAME: usize = 256;
pub const MAX_EMAILS: usize = 20;
pub const MAX_METADATA_BYTES: usize = 8 * 1024;
pub const MIN_PASSWORD: usize = 8;
pub const MAX_PASSWORD: usize = 256;

/// A practical address check: one `@`, a non-empty local part of at most 64
/// bytes, a dotted domain of letters, digits and hyphens, no spaces, at most
/// 254 bytes in all.
pub fn email(raw: &str) -> ApiResult<String> {
    let e = raw.trim();
    let invalid = || {
        ApiError::invalid_param(
            "email_address",
            format!("{raw:?} is not a valid email address."),
        )
    };
    if e.len() > 254 || e.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(invalid());
    }
    let (local, domain) = e.rsplit_once('@').ok_or_else(invalid)?;
    if local.is_empty() || local.len() > 64 || local.contains('@') {
        return Err(invalid());
    }
    let labels: Vec<&str> = domain.split('.').collect();
    if labels.len() < 2
        || labels.iter().any(|l| {
            l.is_empty()
                || l.len() > 63
                || l.starts_with('-')
                || l.ends_with('-')
                || !l.chars().all(|c| c.is_alphanumeric() || c == '-')
        })
    {
        return Err(invalid());
    }
    Ok(e.to_owned())
}

pub fn emails(list: &[String]) -> ApiResult<Vec<String>> {
    if list.len() > MAX_EMAILS {
        return Err(ApiError::invalid_param(
            "email_address",
            format!("At most {MAX_EMAILS} email addresses per user."),
        ));
    }
    let mut out: Vec<String> = Vec::new();
    for raw in list {
        let e = email(raw)?;
        // The same folding as the unique index (`email_lower`).
        if out.iter().any(|o| o.to_lowercase() == e.to_lowercase()) {
            return Err(ApiError::invalid_param(
                "email_address",
                format!("{e} is listed twice."),
            ));
        }
        out.push(e);
    }
    Ok(out)
}

/// Names and other short texts: trimmed, at most 256 characters, no control
/// characters; empty means "not set".
pub fn text(field: &str, v: Option<String>) -> ApiResult<Option<String>> {
    let Some(v) = v else { return Ok(None) };
    let v = v.trim().to_owned();
    if v.chars().count() > MAX_NAME || v.chars().any(char::is_control) {
        return Err(ApiError::invalid_param(
            field,
            format!("`{field}` must be at most {MAX_NAME} printable characters."),
        ));
    }
    Ok((!v.is_empty()).then_some(v))
}

/// Usernames: 4 to 64 of letters, digits, `_` and `-`.
pub fn username(v: Option<String>) -> ApiResult<Option<String>> {
    let Some(v) = v else { return Ok(None) };
    let ok = (4..=64).contains(&v.len())
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if !ok {
        return Err(ApiError::invalid_param(
            "username",
            "`username` must be 4 to 64 letters, digits, `_` or `-`.",
        ));
    }
    Ok(Some(v))
}

pub fn password(v: &str, skip_checks: bool) -> ApiResult<()> {
    let n = v.chars().count();
    let min = if skip_checks { 1 } else { MIN_PASSWORD };
    if n < min || n > MAX_PASSWORD {
        return Err(ApiError::invalid_param(
            "password",
            format!("Passwords must be {min} to {MAX_PASSWORD} characters long."),
        ));
    }
    Ok(())
}

/// Metadata must be a JSON object of at most 8 KiB once serialized; `null`
/// is allowed where `allow_null` (replace semantics).
pub fn metadata(field: &str, v: Option<Value>, allow_null: bool) -> ApiResult<Option<Value>> {
    let Some(v) = v else { return Ok(None) };
    match &v {
        Value::Object(_) => {}
        Value::Null if allow_null => {}
        _ => {
            return Err(ApiError::invalid_param(
                field,
                format!("`{field}` must be a JSON object."),
            ));
        }
    }
    if v.to_string().len() > MAX_METADATA_BYTES {
        return Err(ApiError::invalid_param(
            field,
            format!("`{field}` must be at most {MAX_METADATA_BYTES} bytes."),
        ));
    }
    Ok(Some(v))
}

/// Deep merge for `PATCH …/metadata`: objects merge key by key, `null`
/// removes a key, anything else replaces.
pub fn merge(base: &mut Value, patch: &Value) {
    match (base, patch) {
        (Value::Object(b), Value::Object(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    b.remove(k);
                } else {
                    merge(b.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        (b, p) => *b = p.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn accepts_ordinary_addresses() {
        for e in [
            "a@b.co",
            "first.last+tag@example.com",
            "x@sub.example.org",
            "ü@bücher.de",
        ] {
            assert!(email(e).is_ok(), "{e}");
        }
    }

    #[test]
    fn rejects_malformed_addresses() {
        for e in [
            "",
            "plain",
            "@example.com",
            "a@",
            "a@b",
            "a b@c.de",
            "a@b..c",
            "a@-b.com",
            "a@b.c@d.e",
        ] {
            assert!(email(e).is_err(), "{e}");
        }
    }

    #[test]
    fn duplicate_emails_in_one_request_are_refused() {
        assert!(emails(&["a@b.co".into(), "A@B.CO".into()]).is_err());
    }

    #[test]
    fn metadata_must_be_an_object_within_limit() {
        assert!(metadata("public_metadata", Some(json!([1])), false).is_err());
        assert!(metadata("public_metadata", Some(json!(null)), false).is_err());
        assert!(metadata("public_metadata", Some(json!(null)), true).is_ok());
        let big = json!({ "k": "x".repeat(MAX_METADATA_BYTES) });
        assert!(metadata("public_metadata", Some(big), false).is_err());
    }

    #[test]
    fn merge_is_deep_and_null_removes() {
        let mut base = json!({ "a": { "b": 1, "c": 2 }, "d": 3 });
        merge(&mut base, &json!({ "a": { "b": 10, "c": null }, "e": [1] }));
        assert_eq!(base, json!({ "a": { "b": 10 }, "d": 3, "e": [1] }));
    }

    #[test]
    fn password_length_rules() {
        assert!(password("short", false).is_err());
        assert!(password("long enough", false).is_ok());
        assert!(password("short", true).is_ok());
        assert!(password(&"x".repeat(MAX_PASSWORD + 1), true).is_err());
    }
}
