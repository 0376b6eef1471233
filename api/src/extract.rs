//! Extractors whose rejections answer in the contract's error shape.
//!
//! They also refuse NUL characters (`\u0000` in a JSON string, `%00` in a
//! path or query) with `validation_failed`: PostgreSQL's text cannot hold
//! them, so they would otherwise fail a write half-way, as a `500`.

use axum::body::Bytes;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// `axum::Json`, with `validation_failed` for bodies that do not fit
/// (unknown fields included) and `bad_request` for bodies that are not JSON.
pub struct Json<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        // Checked first, as `axum::Json` does: a cross-site form cannot
        // send a body of this type without the browser asking first.
        if !is_json(req.headers()) {
            return Err(ApiError::BadRequest(
                "Expected request with `Content-Type: application/json`".into(),
            ));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            match e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                true => ApiError::PayloadTooLarge("the request body is too large".into()),
                false => ApiError::BadRequest(e.body_text()),
            }
        })?;
        from_json(&bytes).map(Self)
    }
}

/// A JSON body read by hand (for a route that also takes an empty one), with
/// [`Json`]'s refusals: NUL, then `validation_failed` for JSON that does not
/// fit and `bad_request` for what is not JSON.
pub fn from_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if escapes_nul(bytes) {
        return Err(nul_refused());
    }
    match axum::Json::<T>::from_bytes(bytes) {
        Ok(axum::Json(value)) => Ok(value),
        Err(JsonRejection::JsonDataError(e)) => Err(ApiError::Validation(e.body_text())),
        Err(e) => Err(ApiError::BadRequest(e.body_text())),
    }
}

/// `application/json`, or a `+json` type such as `application/merge-patch+json`.
fn is_json(headers: &HeaderMap) -> bool {
    let Some(value) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = value
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// Whether a JSON text holds a NUL in a string: `\u0000` whose backslash
/// is not itself escaped (JSON has no other way to write one).
fn escapes_nul(json: &[u8]) -> bool {
    const NUL: &[u8] = b"\\u0000";
    json.windows(NUL.len()).enumerate().any(|(at, window)| {
        window == NUL && json[..at].iter().rev().take_while(|b| **b == b'\\').count() % 2 == 0
    })
}

fn nul_refused() -> ApiError {
    ApiError::Validation("NUL characters (\\u0000, %00) are not accepted".into())
}

/// Whether a path or query string carries a NUL (`%00`).
fn has_nul(raw: &str) -> bool {
    raw.as_bytes()
        .windows(3)
        .any(|w| w[0] == b'%' && w[1] == b'0' && w[2] == b'0')
}

/// `axum::extract::Path`, with `not_found` for ids that cannot exist.
pub struct Path<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for Path<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        if has_nul(parts.uri.path()) {
            return Err(nul_refused());
        }
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(Self(value)),
            // A malformed id names nothing that exists.
            Err(PathRejection::FailedToDeserializePathParams(e)) => Err(ApiError::NotFound(
                format!("no such resource: {}", e.body_text()),
            )),
            Err(e) => Err(ApiError::BadRequest(e.body_text())),
        }
    }
}

/// `axum::extract::Query`, with `validation_failed` for bad parameters.
pub struct Query<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        if parts.uri.query().is_some_and(has_nul) {
            return Err(nul_refused());
        }
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(value)| Self(value))
            .map_err(|e: QueryRejection| ApiError::Validation(e.body_text()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_unescaped_backslash_u0000_is_a_nul() {
        assert!(escapes_nul(br#"{"a": "x\u0000y"}"#));
        assert!(
            escapes_nul(br#"{"a": "\\\u0000"}"#),
            "an escaped backslash, then NUL"
        );
        assert!(
            !escapes_nul(br#"{"a": "\\u0000"}"#),
            "a backslash, then the text u0000"
        );
        assert!(!escapes_nul(br#"{"a": "u0000 \u0001"}"#));
        assert!(has_nul("/v1/threads/a%00b"));
        assert!(!has_nul("/v1/threads?q=100%25"));
    }
}
