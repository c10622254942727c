//! HTTP responses in Firecracker's shape: `Server: Firecracker API` and
//! `Connection: keep-alive` first, then `Deprecation`, `Content-Type`, `Content-Length`;
//! `204` without a body; errors as `{"fault_message": "..."}`.

use axum::body::Body;
use axum::response::Response;
use http::{header, HeaderValue, StatusCode};

use crate::action::ApiResponse;

/// `Server` header value.
pub const SERVER_NAME: &str = "Firecracker API";

/// Extra response flags.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Flags {
    /// A deprecated field or version was used.
    pub deprecation: bool,
    /// Close the connection after this response (body not read).
    pub close: bool,
}

fn build(status: u16, json: Option<Vec<u8>>, flags: Flags) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
    let mut response = Response::new(Body::empty());
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::SERVER, HeaderValue::from_static(SERVER_NAME));
    let connection = if flags.close { "close" } else { "keep-alive" };
    headers.insert(header::CONNECTION, HeaderValue::from_static(connection));
    if flags.deprecation {
        headers.insert("deprecation", HeaderValue::from_static("true"));
    }
    if let Some(body) = json {
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
        *response.body_mut() = Body::from(body);
    }
    response
}

/// A `fault_message` response.
pub(crate) fn fault(status: u16, message: &str, flags: Flags) -> Response {
    let body = serde_json::json!({ "fault_message": message });
    build(status, Some(body.to_string().into_bytes()), flags)
}

/// A `200` JSON response.
pub(crate) fn json(value: &impl serde::Serialize, flags: Flags) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => build(200, Some(body), flags),
        Err(e) => fault(
            400,
            &format!("Failed to serialise the response: {e}"),
            flags,
        ),
    }
}

/// The HTTP form of a VMM answer.
pub(crate) fn from_api(response: &ApiResponse, flags: Flags) -> Response {
    match response {
        ApiResponse::NoContent => build(204, None, flags),
        ApiResponse::Json(value) => json(value, flags),
        ApiResponse::Fault {
            status,
            fault_message,
        } => fault(*status, fault_message, flags),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_content_has_no_body_headers() {
        let r = from_api(&ApiResponse::NoContent, Flags::default());
        assert_eq!(r.status(), 204);
        assert_eq!(r.headers()[header::SERVER], SERVER_NAME);
        assert!(r.headers().get(header::CONTENT_TYPE).is_none());
    }

    #[test]
    fn fault_keeps_status_and_message() {
        let r = from_api(
            &ApiResponse::Fault {
                status: 413,
                fault_message: "x".into(),
            },
            Flags {
                deprecation: true,
                close: false,
            },
        );
        assert_eq!(r.status(), 413);
        assert_eq!(r.headers()["deprecation"], "true");
        assert_eq!(
            r.headers()[header::CONTENT_LENGTH],
            r#"{"fault_message":"x"}"#.len().to_string().as_str()
        );
    }
}
