//! Errors as HTTP answers: every failure becomes an `application/problem+json` body (RFC 9457)
//! with a fixed status, a stable `type` and, where one field is at fault, its name.
//!
//! This module also holds [`Json`], the request body extractor that turns serde's complaints
//! into problems naming the field, so that no handler ever sees a malformed body.

use axum::extract::{FromRequest, Request};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// An HTTP failure.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Problem {
    /// A stable URI naming the kind of failure.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// A short summary of the kind.
    pub title: &'static str,
    /// The HTTP status.
    pub status: u16,
    /// What went wrong this time.
    pub detail: String,
    /// The request field at fault, as a path into the body (`until`, `users[2]`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// Seconds to wait before trying again, sent as `Retry-After`.
    #[serde(skip)]
    pub retry_after: Option<u64>,
}

macro_rules! kinds {
    ($($(#[$m:meta])* $fn:ident => $status:ident, $slug:literal, $title:literal;)+) => {
        impl Problem {
            $(
                $(#[$m])*
                pub fn $fn(detail: impl Into<String>) -> Problem {
                    Problem {
                        kind: concat!("https://ampel.dev/problems/", $slug),
                        title: $title,
                        status: StatusCode::$status.as_u16(),
                        detail: detail.into(),
                        field: None,
                        retry_after: None,
                    }
                }
            )+
        }
    };
}

kinds! {
    /// The body or a parameter is malformed.
    bad_request => BAD_REQUEST, "bad-request", "Bad request";
    /// The body is well-formed but a value is not acceptable.
    invalid => UNPROCESSABLE_ENTITY, "invalid-value", "Invalid value";
    /// No or no valid credentials.
    unauthorized => UNAUTHORIZED, "unauthorized", "Authentication required";
    /// The caller may not do this.
    forbidden => FORBIDDEN, "forbidden", "Forbidden";
    /// The thing named does not exist.
    not_found => NOT_FOUND, "not-found", "Not found";
    /// The thing already exists.
    conflict => CONFLICT, "conflict", "Conflict";
    /// The body is larger than the server accepts.
    too_large => PAYLOAD_TOO_LARGE, "too-large", "Payload too large";
    /// The body is not JSON.
    unsupported_media => UNSUPPORTED_MEDIA_TYPE, "unsupported-media-type", "Unsupported media type";
    /// The caller sends changes faster than the server takes them.
    too_many => TOO_MANY_REQUESTS, "too-many-requests", "Too many requests";
    /// The server failed; the details are in its log.
    internal => INTERNAL_SERVER_ERROR, "internal", "Internal server error";
    /// The server cannot take the request now.
    unavailable => SERVICE_UNAVAILABLE, "unavailable", "Service unavailable";
}

impl Problem {
    /// A problem for a status without a kind of its own.
    pub fn with_status(status: StatusCode, detail: impl Into<String>) -> Problem {
        Problem {
            kind: "about:blank",
            title: status.canonical_reason().unwrap_or("Error"),
            status: status.as_u16(),
            detail: detail.into(),
            field: None,
            retry_after: None,
        }
    }

    /// Names the field at fault.
    pub fn field(mut self, field: impl Into<String>) -> Problem {
        self.field = Some(field.into());
        self
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::to_vec(&self).unwrap_or_default();
        let mut response = (status, body).into_response();
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
        if let Some(seconds) = self.retry_after {
            response.headers_mut().insert(header::RETRY_AFTER, seconds.into());
        }
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"ampel\""),
            );
        }
        response
    }
}

/// A JSON request body whose faults are answered with a problem naming the field.
#[derive(Debug, Clone)]
pub struct Json<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Json<T> {
    type Rejection = Problem;

    async fn from_request(req: Request, state: &S) -> Result<Self, Problem> {
        let content_type = req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
        if !content_type.is_some_and(is_json) {
            return Err(Problem::unsupported_media(
                "the body must be JSON in UTF-8 (Content-Type: application/json)",
            ));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                Problem::too_large("the body is larger than the server accepts")
            } else {
                Problem::bad_request(format!("the body could not be read: {e}"))
            }
        })?;
        parse_json(&bytes).map(Json)
    }
}

/// `application/json` or `application/…+json`, in UTF-8 if a charset is named.
fn is_json(content_type: &str) -> bool {
    let mut parts = content_type.split(';').map(|p| p.trim().to_ascii_lowercase());
    let essence = parts.next().unwrap_or_default();
    let json = essence == "application/json"
        || essence.strip_prefix("application/").is_some_and(|sub| sub.ends_with("+json"));
    let utf8 = parts.all(|p| match p.split_once('=') {
        Some(("charset", value)) => value.trim_matches('"') == "utf-8",
        _ => true,
    });
    json && utf8
}

/// Reads a JSON document, naming the field where it fails.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Problem> {
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        // serde_json reports some type mismatches (a number where an enum is expected) as
        // syntax errors; only a document that is not JSON at all is a bad request.
        let not_json = (inner.is_syntax() || inner.is_eof())
            && serde_json::from_slice::<serde::de::IgnoredAny>(bytes).is_err();
        let problem = if not_json {
            Problem::bad_request(format!("the body is not valid JSON: {inner}"))
        } else {
            Problem::invalid(strip_position(&inner.to_string()))
        };
        if path != "." && path != "?" {
            return problem.field(path);
        }
        // A missing field is reported at the enclosing object; name the field itself.
        let missing =
            problem.detail.strip_prefix("missing field `").and_then(|r| r.split('`').next());
        match missing.map(str::to_owned) {
            Some(field) => problem.field(field),
            None => problem,
        }
    })
}

/// serde_json appends " at line 1 column 42" to value errors; the field name says more.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_owned(),
        None => message.to_owned(),
    }
}

/// A query string whose faults are answered with a problem.
#[derive(Debug, Clone)]
pub struct Query<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> axum::extract::FromRequestParts<S> for Query<T> {
    type Rejection = Problem;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, Problem> {
        axum::extract::Query::<T>::try_from_uri(&parts.uri)
            .map(|q| Query(q.0))
            .map_err(|e| Problem::bad_request(e.body_text()))
    }
}
