//! A small HTTP/1.x request parser and response writer for what guests send to MMDS.
//!
//! It understands just enough: the request line, `Accept`, `Content-Length`, `Connection`,
//! and keeps every other header (bounded in number) for the token rules. A request, head and
//! body, must fit in [`MAX_REQUEST_LEN`] bytes; that bound is what keeps each connection's
//! receive buffer small. Responses are written byte for byte like Firecracker's `micro_http`
//! (`HTTP/1.1 200 \r\n`, `Server: Firecracker API`, `Connection: keep-alive`, ...), because
//! guest tooling written against Firecracker reads them.

use std::fmt::Write as _;

/// Largest request (head and body) accepted on one connection, in bytes.
pub const MAX_REQUEST_LEN: usize = 2500;
/// Most header lines kept from one request.
pub const MAX_HEADERS: usize = 32;

/// Request methods `micro_http` recognises; MMDS serves `GET` and `PUT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// `GET`
    Get,
    /// `HEAD`
    Head,
    /// `POST`
    Post,
    /// `PUT`
    Put,
    /// `PATCH`
    Patch,
    /// `DELETE`
    Delete,
}

impl Method {
    fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "GET" => Self::Get,
            "HEAD" => Self::Head,
            "POST" => Self::Post,
            "PUT" => Self::Put,
            "PATCH" => Self::Patch,
            "DELETE" => Self::Delete,
            _ => return None,
        })
    }

    /// The method as it appears on the wire.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Get => "GET",
            Self::Head => "HEAD",
            Self::Post => "POST",
            Self::Put => "PUT",
            Self::Patch => "PATCH",
            Self::Delete => "DELETE",
        }
    }
}

/// HTTP version of a request; the response repeats it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Version {
    /// `HTTP/1.0`
    Http10,
    /// `HTTP/1.1`
    #[default]
    Http11,
}

impl Version {
    fn as_str(self) -> &'static str {
        match self {
            Self::Http10 => "HTTP/1.0",
            Self::Http11 => "HTTP/1.1",
        }
    }
}

/// The two media types MMDS speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MediaType {
    /// `text/plain` (also the answer to a missing or unknown `Accept`).
    #[default]
    PlainText,
    /// `application/json`
    ApplicationJson,
}

impl MediaType {
    fn as_str(self) -> &'static str {
        match self {
            Self::PlainText => "text/plain",
            Self::ApplicationJson => "application/json",
        }
    }
}

/// A parsed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The method.
    pub method: Method,
    /// The absolute path of the URI (`""` for `http://host` with no path).
    pub path: String,
    /// The HTTP version.
    pub version: Version,
    /// What `Accept` asked for.
    pub accept: MediaType,
    /// Every header other than `Accept`, `Content-Length`, `Connection`, trimmed, as sent.
    pub headers: Vec<(String, String)>,
    /// Whether the connection should close after the response.
    pub close: bool,
}

impl Request {
    /// The first header whose name is one of `names` (case-insensitive): `(name, value)`.
    #[must_use]
    pub fn header(&self, names: &[&str]) -> Option<(&str, &str)> {
        self.headers
            .iter()
            .find(|(key, _)| names.iter().any(|name| key.eq_ignore_ascii_case(name)))
            .map(|(key, value)| (key.as_str(), value.as_str()))
    }
}

/// Why a request could not be parsed; each maps to Firecracker's status and text.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum HttpError {
    /// The request line or head is malformed.
    #[error("Invalid request.")]
    InvalidRequest,
    /// The URI is neither `/path` nor `http://host/path`.
    #[error("Invalid URI.")]
    InvalidUri,
    /// A method `micro_http` does not know.
    #[error("Unsupported HTTP method.")]
    UnsupportedMethod,
    /// Neither HTTP/1.0 nor HTTP/1.1.
    #[error("Unsupported HTTP version.")]
    UnsupportedVersion,
    /// A header line without a colon.
    #[error("Header is incorrectly formatted. Key: {0}")]
    HeaderFormat(String),
    /// A header value we cannot honour (bad `Content-Length`, chunked bodies).
    #[error("Invalid value. Key:{0}; Value:{1}")]
    HeaderValue(String, String),
    /// More than [`MAX_HEADERS`] header lines.
    #[error("Too many headers.")]
    TooManyHeaders,
    /// The body would not fit in [`MAX_REQUEST_LEN`].
    #[error(
        "Request payload with size {0} is larger than the limit of {MAX_REQUEST_LEN} allowed by server."
    )]
    PayloadTooLarge(usize),
}

impl HttpError {
    /// The status Firecracker answers this error with.
    #[must_use]
    pub fn status(&self) -> StatusCode {
        match self {
            Self::UnsupportedMethod | Self::UnsupportedVersion => StatusCode::NotImplemented,
            Self::PayloadTooLarge(_) => StatusCode::PayloadTooLarge,
            _ => StatusCode::BadRequest,
        }
    }

    /// The plain-text response for this error.
    #[must_use]
    pub fn to_response(&self) -> Response {
        Response::text(Version::Http11, self.status(), self.to_string())
    }
}

/// Result of looking at the bytes received so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// No complete request yet; wait for more bytes.
    Incomplete,
    /// A complete request (or a broken one) occupying the first `consumed` bytes.
    Complete {
        /// The request, or why it is unusable.
        request: Result<Request, HttpError>,
        /// Bytes of the buffer that belong to this request.
        consumed: usize,
    },
}

/// Parse the first request in `buf`.
#[must_use]
pub fn parse_request(buf: &[u8]) -> Parsed {
    let Some((head_len, sep_len)) = find_head_end(buf) else {
        return Parsed::Incomplete;
    };
    let head_end = head_len + sep_len;
    let (request, body_len) = match parse_head(&buf[..head_len]) {
        Ok(pair) => pair,
        Err(error) => {
            return Parsed::Complete {
                request: Err(error),
                consumed: head_end,
            };
        }
    };
    let total = head_end.saturating_add(body_len);
    if total > MAX_REQUEST_LEN {
        return Parsed::Complete {
            request: Err(HttpError::PayloadTooLarge(body_len)),
            consumed: head_end,
        };
    }
    if buf.len() < total {
        return Parsed::Incomplete;
    }
    Parsed::Complete {
        request: Ok(request),
        consumed: total,
    }
}

/// Where the head ends: `(head length, separator length)` for `\r\n\r\n` or `\n\n`.
fn find_head_end(buf: &[u8]) -> Option<(usize, usize)> {
    (0..buf.len()).find_map(|i| {
        if buf[i..].starts_with(b"\r\n\r\n") {
            Some((i, 4))
        } else if buf[i..].starts_with(b"\n\n") {
            Some((i, 2))
        } else {
            None
        }
    })
}

fn parse_head(head: &[u8]) -> Result<(Request, usize), HttpError> {
    let text = std::str::from_utf8(head).map_err(|_| HttpError::InvalidRequest)?;
    let mut lines = text
        .split('\n')
        .map(|line| line.strip_suffix('\r').unwrap_or(line));
    let request_line = lines.next().ok_or(HttpError::InvalidRequest)?;
    let mut request = parse_request_line(request_line)?;
    let mut body_len = 0usize;
    let mut connection: Option<bool> = None;
    for line in lines {
        let (key, value) = line
            .split_once(':')
            .ok_or_else(|| HttpError::HeaderFormat(line.to_string()))?;
        let (key, value) = (key.trim(), value.trim());
        if key.eq_ignore_ascii_case("accept") {
            request.accept = match value {
                "application/json" => MediaType::ApplicationJson,
                _ => MediaType::PlainText,
            };
        } else if key.eq_ignore_ascii_case("content-length") {
            body_len = value
                .parse::<u32>()
                .map_err(|_| HttpError::HeaderValue(key.to_string(), value.to_string()))?
                as usize;
        } else if key.eq_ignore_ascii_case("transfer-encoding") && value != "identity" {
            return Err(HttpError::HeaderValue(key.to_string(), value.to_string()));
        } else if key.eq_ignore_ascii_case("connection") {
            connection = Some(value.eq_ignore_ascii_case("close"));
        } else {
            if request.headers.len() >= MAX_HEADERS {
                return Err(HttpError::TooManyHeaders);
            }
            request.headers.push((key.to_string(), value.to_string()));
        }
    }
    request.close = connection.unwrap_or(request.version == Version::Http10);
    Ok((request, body_len))
}

fn parse_request_line(line: &str) -> Result<Request, HttpError> {
    let mut parts = line.split(' ');
    let (Some(method), Some(uri), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(HttpError::InvalidRequest);
    };
    let method = Method::parse(method).ok_or(HttpError::UnsupportedMethod)?;
    let version = match version {
        "HTTP/1.0" => Version::Http10,
        "HTTP/1.1" => Version::Http11,
        _ => return Err(HttpError::UnsupportedVersion),
    };
    Ok(Request {
        method,
        path: absolute_path(uri)?.to_string(),
        version,
        accept: MediaType::PlainText,
        headers: Vec::new(),
        close: false,
    })
}

/// `/a/b` stays; `http://host/a/b` becomes `/a/b`; `http://host` becomes `""`.
fn absolute_path(uri: &str) -> Result<&str, HttpError> {
    if uri.starts_with('/') {
        return Ok(uri);
    }
    let rest = uri.strip_prefix("http://").ok_or(HttpError::InvalidUri)?;
    Ok(rest.find('/').map_or("", |slash| &rest[slash..]))
}

/// Response statuses MMDS uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusCode {
    /// 200
    Ok,
    /// 400
    BadRequest,
    /// 401
    Unauthorized,
    /// 404
    NotFound,
    /// 405
    MethodNotAllowed,
    /// 413
    PayloadTooLarge,
    /// 501
    NotImplemented,
}

impl StatusCode {
    /// The numeric code.
    #[must_use]
    pub fn code(self) -> u16 {
        match self {
            Self::Ok => 200,
            Self::BadRequest => 400,
            Self::Unauthorized => 401,
            Self::NotFound => 404,
            Self::MethodNotAllowed => 405,
            Self::PayloadTooLarge => 413,
            Self::NotImplemented => 501,
        }
    }
}

/// A response to write back to the guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// Echoes the request's version.
    pub version: Version,
    /// The status.
    pub status: StatusCode,
    /// `Content-Type` of the body.
    pub content_type: MediaType,
    /// Methods listed in `Allow` (405 only).
    pub allow: Vec<Method>,
    /// Extra headers (the token TTL echo).
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Response {
    /// A response with a plain-text body.
    #[must_use]
    pub fn text(version: Version, status: StatusCode, body: impl Into<String>) -> Self {
        Self {
            version,
            status,
            content_type: MediaType::PlainText,
            allow: Vec::new(),
            headers: Vec::new(),
            body: body.into().into_bytes(),
        }
    }

    /// Append the wire form to `out`.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        let mut head = String::with_capacity(160);
        // Writing to a String cannot fail.
        let _ = write!(
            head,
            "{} {} \r\nServer: Firecracker API\r\nConnection: keep-alive\r\n",
            self.version.as_str(),
            self.status.code()
        );
        if !self.allow.is_empty() {
            let methods: Vec<&str> = self.allow.iter().map(|m| m.as_str()).collect();
            let _ = write!(head, "Allow: {}\r\n", methods.join(", "));
        }
        for (key, value) in &self.headers {
            let _ = write!(head, "{key}: {value}\r\n");
        }
        let _ = write!(
            head,
            "Content-Type: {}\r\nContent-Length: {}\r\n\r\n",
            self.content_type.as_str(),
            self.body.len()
        );
        out.extend_from_slice(head.as_bytes());
        out.extend_from_slice(&self.body);
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn complete(buf: &[u8]) -> (Result<Request, HttpError>, usize) {
        match parse_request(buf) {
            Parsed::Complete { request, consumed } => (request, consumed),
            Parsed::Incomplete => panic!("expected a complete request"),
        }
    }

    #[test]
    fn parses_get_with_headers() {
        let raw = b"GET http://169.254.169.254/latest/meta-data HTTP/1.1\r\n\
            Host: 169.254.169.254\r\nAccept: application/json\r\n\
            X-metadata-token: abc\r\n\r\nNEXT";
        let (request, consumed) = complete(raw);
        let request = request.unwrap();
        assert_eq!(consumed, raw.len() - 4);
        assert_eq!(request.method, Method::Get);
        assert_eq!(request.path, "/latest/meta-data");
        assert_eq!(request.accept, MediaType::ApplicationJson);
        assert_eq!(
            request.header(&["x-metadata-token"]),
            Some(("X-metadata-token", "abc"))
        );
        assert!(!request.close);
    }

    #[test]
    fn partial_head_or_body_is_incomplete() {
        assert_eq!(parse_request(b"GET / HTTP/1.1\r\n"), Parsed::Incomplete);
        assert_eq!(
            parse_request(b"PUT / HTTP/1.1\r\nContent-Length: 5\r\n\r\nab"),
            Parsed::Incomplete
        );
        let (request, consumed) = complete(b"PUT / HTTP/1.1\r\nContent-Length: 2\r\n\r\nab");
        assert!(request.is_ok());
        assert_eq!(consumed, 39);
    }

    #[test]
    fn broken_requests_map_to_firecracker_statuses() {
        let cases: [(&[u8], StatusCode); 7] = [
            (b"GET /\r\n\r\n", StatusCode::BadRequest),
            (b"FOO / HTTP/1.1\r\n\r\n", StatusCode::NotImplemented),
            (b"GET / HTTP/2.0\r\n\r\n", StatusCode::NotImplemented),
            (b"GET foo HTTP/1.1\r\n\r\n", StatusCode::BadRequest),
            (b"GET / HTTP/1.1\r\nNoColon\r\n\r\n", StatusCode::BadRequest),
            (
                b"PUT / HTTP/1.1\r\nContent-Length: 99999\r\n\r\n",
                StatusCode::PayloadTooLarge,
            ),
            (
                b"PUT / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
                StatusCode::BadRequest,
            ),
        ];
        for (raw, status) in cases {
            let (request, _) = complete(raw);
            assert_eq!(request.unwrap_err().status(), status, "{raw:?}");
        }
    }

    #[test]
    fn http10_closes_unless_keep_alive() {
        let (request, _) = complete(b"GET / HTTP/1.0\r\n\r\n");
        assert!(request.unwrap().close);
        let (request, _) = complete(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
        assert!(!request.unwrap().close);
        let (request, _) = complete(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n");
        assert!(request.unwrap().close);
    }

    #[test]
    fn too_many_headers_are_refused() {
        let mut raw = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..=MAX_HEADERS {
            raw.extend_from_slice(format!("H{i}: v\r\n").as_bytes());
        }
        raw.extend_from_slice(b"\r\n");
        assert_eq!(complete(&raw).0, Err(HttpError::TooManyHeaders));
    }

    #[test]
    fn response_bytes_match_micro_http() {
        let mut response = Response::text(Version::Http10, StatusCode::MethodNotAllowed, "no");
        response.allow = vec![Method::Get, Method::Put];
        let mut out = Vec::new();
        response.write_to(&mut out);
        assert_eq!(
            out,
            b"HTTP/1.0 405 \r\nServer: Firecracker API\r\nConnection: keep-alive\r\n\
              Allow: GET, PUT\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nno"
        );
    }

    proptest! {
        #[test]
        fn parser_never_panics_and_stays_in_bounds(bytes in proptest::collection::vec(any::<u8>(), 0..3000)) {
            if let Parsed::Complete { consumed, .. } = parse_request(&bytes) {
                prop_assert!(consumed <= bytes.len());
                prop_assert!(consumed > 0);
            }
        }

        #[test]
        fn parser_handles_random_header_text(
            path in "/[a-z0-9/]{0,40}",
            headers in proptest::collection::vec(("[A-Za-z-]{1,20}", "[ -~]{0,40}"), 0..40),
        ) {
            let mut raw = format!("GET {path} HTTP/1.1\r\n");
            for (k, v) in &headers {
                raw.push_str(&format!("{k}: {v}\r\n"));
            }
            raw.push_str("\r\n");
            let parsed = parse_request(raw.as_bytes());
            let complete = matches!(parsed, Parsed::Complete { .. });
            prop_assert!(complete);
        }
    }
}
