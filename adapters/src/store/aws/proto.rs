//! AWS Secrets Manager's JSON protocol as plain functions (keystore.md §5):
//! one secret per key, named like the key, the KES key file as
//! `SecretString`. Errors are told apart by `__type`, never by status
//! (moto and AWS differ there).

use kes_core::crypto::SecretBytes;
use kes_core::{StoreError, StoreReply};
use serde_json::{json, Value};

use crate::https::HttpResponse;

/// The target header value of an operation.
pub fn target(op: &str) -> String {
    format!("secretsmanager.{op}")
}

/// `CreateSecret`; without a KMS key the account's default encrypts it.
pub fn create_body(name: &str, value: &SecretBytes, kms_key: &str) -> Result<Vec<u8>, StoreError> {
    let text = std::str::from_utf8(value.expose())
        .map_err(|_| StoreError::Failed("aws: key value is not text".into()))?;
    // Sized for the worst-case escaping, so no copy is left behind.
    let mut out = Vec::with_capacity(6 * (text.len() + name.len() + kms_key.len()) + 64);
    out.extend_from_slice(br#"{"Name":"#);
    serde_json::to_writer(&mut out, name).map_err(|e| StoreError::Failed(e.to_string()))?;
    out.extend_from_slice(br#","SecretString":"#);
    serde_json::to_writer(&mut out, text).map_err(|e| StoreError::Failed(e.to_string()))?;
    if !kms_key.is_empty() {
        out.extend_from_slice(br#","KmsKeyId":"#);
        serde_json::to_writer(&mut out, kms_key).map_err(|e| StoreError::Failed(e.to_string()))?;
    }
    out.push(b'}');
    Ok(out)
}

/// `GetSecretValue`.
pub fn get_body(name: &str) -> Vec<u8> {
    json!({ "SecretId": name }).to_string().into_bytes()
}

/// `DeleteSecret`, at once, without the recovery window (as KES).
pub fn delete_body(name: &str) -> Vec<u8> {
    json!({ "SecretId": name, "ForceDeleteWithoutRecovery": true }).to_string().into_bytes()
}

/// One `ListSecrets` page.
pub fn list_body(next: Option<&str>) -> Vec<u8> {
    match next {
        Some(t) => json!({ "MaxResults": 100, "NextToken": t }),
        None => json!({ "MaxResults": 100 }),
    }
    .to_string()
    .into_bytes()
}

/// The error type of a failed answer: `__type` without any `…#` prefix.
pub fn error_type(r: &HttpResponse) -> String {
    let v: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
    let t = v["__type"].as_str().unwrap_or("");
    t.rsplit('#').next().unwrap_or(t).to_owned()
}

/// A failure as a store error: throttling and 5xx are transient.
pub fn failure(what: &str, r: &HttpResponse) -> StoreError {
    let kind = error_type(r);
    let v: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
    let msg = v["message"].as_str().or(v["Message"].as_str()).unwrap_or("");
    let text = match (kind.is_empty(), msg.is_empty()) {
        (true, _) => {
            // moto answers auth failures in XML.
            let body = String::from_utf8_lossy(&r.body);
            let code = body.split("<Code>").nth(1).and_then(|c| c.split('<').next()).unwrap_or("");
            format!("aws: {what}: status {} {code}", r.status)
        }
        (false, true) => format!("aws: {what}: {kind}"),
        (false, false) => format!("aws: {what}: {kind}: {msg}"),
    };
    if transient(r) {
        StoreError::Unreachable(text)
    } else {
        StoreError::Failed(text)
    }
}

/// Whether the call was refused for its credentials: expired or unknown
/// temporary keys (new ones may be fetched). Secrets Manager names it in
/// `__type`; some front ends answer in XML, so the body is looked at too.
pub fn credentials_refused(r: &HttpResponse) -> bool {
    const CODES: [&str; 4] = [
        "ExpiredTokenException",
        "ExpiredToken",
        "UnrecognizedClientException",
        "InvalidClientTokenId",
    ];
    if !matches!(r.status, 400 | 403) {
        return false;
    }
    let t = error_type(r);
    CODES.contains(&t.as_str()) || {
        let text = String::from_utf8_lossy(&r.body);
        CODES.iter().any(|c| text.contains(&format!("<Code>{c}</Code>")))
    }
}

/// Whether trying again may help.
pub fn transient(r: &HttpResponse) -> bool {
    r.status >= 500
        || r.status == 429
        || matches!(error_type(r).as_str(), "ThrottlingException" | "InternalServiceError")
}

/// The result of `CreateSecret`.
pub fn create_result(r: &HttpResponse) -> Result<StoreReply, StoreError> {
    match (r.status, error_type(r).as_str()) {
        (200, _) => Ok(StoreReply::Created),
        (_, "ResourceExistsException") => Err(StoreError::Exists),
        _ => Err(failure("failed to create key", r)),
    }
}

/// The result of `GetSecretValue`: `SecretString`, else `SecretBinary`.
pub fn get_result(r: &HttpResponse) -> Result<StoreReply, StoreError> {
    match (r.status, error_type(r).as_str()) {
        (200, _) => {}
        (_, "ResourceNotFoundException") => return Err(StoreError::NotFound),
        _ => return Err(failure("failed to read key", r)),
    }
    let mut v: Value = serde_json::from_slice(&r.body)
        .map_err(|e| StoreError::Failed(format!("aws: invalid answer: {e}")))?;
    let take = super::super::rest::take_string;
    match (take(&mut v, &["SecretString"]), take(&mut v, &["SecretBinary"])) {
        (Some(s), _) => Ok(StoreReply::Value(SecretBytes::new(s.into_bytes()))),
        (_, Some(b)) => {
            use base64::Engine as _;
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(b.as_bytes())
                .map_err(|e| StoreError::Failed(format!("aws: invalid SecretBinary: {e}")))?;
            Ok(StoreReply::Value(SecretBytes::new(bytes)))
        }
        _ => Err(StoreError::Failed("aws: secret has no value".into())),
    }
}

/// The result of `DeleteSecret`.
pub fn delete_result(r: &HttpResponse) -> Result<StoreReply, StoreError> {
    match (r.status, error_type(r).as_str()) {
        (200, _) => Ok(StoreReply::Deleted),
        (_, "ResourceNotFoundException") => Err(StoreError::NotFound),
        _ => Err(failure("failed to delete key", r)),
    }
}

/// One listing page: names and the token of the next page, if any.
pub fn list_result(r: &HttpResponse) -> Result<(Vec<String>, Option<String>), StoreError> {
    if r.status != 200 {
        return Err(failure("failed to list keys", r));
    }
    let v: Value = serde_json::from_slice(&r.body)
        .map_err(|e| StoreError::Failed(format!("aws: invalid listing: {e}")))?;
    let names = v["SecretList"]
        .as_array()
        .map(|a| a.iter().filter_map(|s| s["Name"].as_str().map(str::to_owned)).collect())
        .unwrap_or_default();
    let next = v["NextToken"].as_str().filter(|t| !t.is_empty()).map(str::to_owned);
    Ok((names, next))
}

#[cfg(test)]
mod tests {
    use super::*;
    use zeroize::Zeroizing;

    fn resp(status: u16, body: &str) -> HttpResponse {
        HttpResponse { status, location: None, body: Zeroizing::new(body.as_bytes().to_vec()) }
    }

    #[test]
    fn bodies() {
        let v = SecretBytes::new(b"{\"bytes\":\"AA\"}".to_vec());
        let b: Value = serde_json::from_slice(&create_body("k", &v, "alias/x").unwrap()).unwrap();
        assert_eq!(
            b,
            json!({"Name": "k", "SecretString": "{\"bytes\":\"AA\"}", "KmsKeyId": "alias/x"})
        );
        let b: Value = serde_json::from_slice(&create_body("k", &v, "").unwrap()).unwrap();
        assert!(b.get("KmsKeyId").is_none());
        let d: Value = serde_json::from_slice(&delete_body("k")).unwrap();
        assert_eq!(d["ForceDeleteWithoutRecovery"], true);
    }

    #[test]
    fn results() {
        assert!(matches!(create_result(&resp(200, "{}")), Ok(StoreReply::Created)));
        let exists =
            r#"{"__type":"com.amazonaws.secretsmanager#ResourceExistsException","message":"x"}"#;
        assert_eq!(create_result(&resp(400, exists)).err(), Some(StoreError::Exists));
        let missing = r#"{"__type":"ResourceNotFoundException"}"#;
        assert_eq!(get_result(&resp(404, missing)).err(), Some(StoreError::NotFound));
        assert_eq!(
            get_result(&resp(400, missing)).err(),
            Some(StoreError::NotFound),
            "real AWS says 400"
        );
        match get_result(&resp(200, r#"{"SecretBinary":"AAEC"}"#)).unwrap() {
            StoreReply::Value(v) => assert_eq!(v.expose(), &[0, 1, 2]),
            other => panic!("{other:?}"),
        }
        let sig =
            "<ErrorResponse><Error><Code>SignatureDoesNotMatch</Code></Error></ErrorResponse>";
        let e = get_result(&resp(403, sig)).err().unwrap();
        assert_eq!(
            e,
            StoreError::Failed("aws: failed to read key: status 403 SignatureDoesNotMatch".into())
        );
        assert!(matches!(get_result(&resp(500, "{}")), Err(StoreError::Unreachable(_))));
        let page = r#"{"SecretList":[{"Name":"a"},{"Name":"b"}],"NextToken":"1"}"#;
        assert_eq!(
            list_result(&resp(200, page)).unwrap(),
            (vec!["a".into(), "b".into()], Some("1".into()))
        );
        let last = r#"{"SecretList":[],"NextToken":null}"#;
        assert_eq!(list_result(&resp(200, last)).unwrap(), (vec![], None));
    }
}
