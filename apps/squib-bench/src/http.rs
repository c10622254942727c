//! A minimal HTTP/1.1 client over the VMM's Unix socket: it writes request bytes and parses
//! the reply with `httparse`, over one keep-alive connection, so latency figures measure the
//! VMM and not a client library. Firecracker's API always answers with `Content-Length`
//! (or no body), so chunked encoding is not supported.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

/// Largest reply accepted, headers and body together.
const MAX_REPLY: usize = 1 << 20;
/// Headers parsed per reply.
const MAX_HEADERS: usize = 32;

/// Errors talking to the API socket.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// Connecting, writing or reading failed.
    #[error("API socket I/O: {0}")]
    Io(#[from] std::io::Error),
    /// The reply is not valid HTTP.
    #[error("malformed HTTP reply: {0}")]
    Parse(#[from] httparse::Error),
    /// The reply lacks a status, has a bad `Content-Length` or is too large.
    #[error("unusable HTTP reply: {0}")]
    Reply(&'static str),
    /// The server closed the connection before a full reply.
    #[error("the VMM closed the API connection before replying")]
    Closed,
}

/// One reply: the status and the body as text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// HTTP status code.
    pub status: u16,
    /// Body (empty for 204).
    pub body: String,
}

/// A keep-alive connection to an API socket.
pub struct ApiClient {
    stream: UnixStream,
    buf: Vec<u8>,
}

impl ApiClient {
    /// Connects to `socket`; each read or write then waits at most `timeout`.
    pub fn connect(socket: &Path, timeout: Duration) -> Result<ApiClient, HttpError> {
        let stream = UnixStream::connect(socket)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        Ok(ApiClient {
            stream,
            buf: Vec::with_capacity(4096),
        })
    }

    /// Sends `method path` with an optional JSON body and waits for the reply.
    pub fn request(
        &mut self,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> Result<Reply, HttpError> {
        let mut req = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\n");
        if let Some(body) = body {
            req.push_str("Content-Type: application/json\r\n");
            req.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
        } else {
            req.push_str("\r\n");
        }
        self.stream.write_all(req.as_bytes())?;
        self.read_reply()
    }

    /// `GET path`.
    pub fn get(&mut self, path: &str) -> Result<Reply, HttpError> {
        self.request("GET", path, None)
    }

    fn read_reply(&mut self) -> Result<Reply, HttpError> {
        loop {
            if let Some((consumed, reply)) = parse_reply(&self.buf)? {
                self.buf.drain(..consumed);
                return Ok(reply);
            }
            if self.buf.len() > MAX_REPLY {
                return Err(HttpError::Reply("larger than 1 MiB"));
            }
            let mut chunk = [0u8; 4096];
            let n = self.stream.read(&mut chunk)?;
            if n == 0 {
                return Err(HttpError::Closed);
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

/// Parses one reply from the front of `buf`: `None` while incomplete, else the bytes it
/// used and the reply.
fn parse_reply(buf: &[u8]) -> Result<Option<(usize, Reply)>, HttpError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    let httparse::Status::Complete(head_len) = resp.parse(buf)? else {
        return Ok(None);
    };
    let status = resp.code.ok_or(HttpError::Reply("no status code"))?;
    let mut body_len = 0usize;
    for h in resp.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            body_len = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse().ok())
                .ok_or(HttpError::Reply("bad Content-Length"))?;
        }
    }
    let end = head_len
        .checked_add(body_len)
        .ok_or(HttpError::Reply("bad Content-Length"))?;
    if buf.len() < end {
        return Ok(None);
    }
    let body = String::from_utf8_lossy(&buf[head_len..end]).into_owned();
    Ok(Some((end, Reply { status, body })))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    #[test]
    fn parse_reply_waits_for_the_whole_body() {
        let full = b"HTTP/1.1 200 \r\nContent-Length: 4\r\n\r\n{}{}";
        assert_eq!(parse_reply(&full[..20]).unwrap(), None);
        assert_eq!(parse_reply(&full[..full.len() - 1]).unwrap(), None);
        let (used, reply) = parse_reply(full).unwrap().unwrap();
        assert_eq!(
            (used, reply.status, reply.body.as_str()),
            (full.len(), 200, "{}{}")
        );
    }

    #[test]
    fn parse_reply_without_body_and_with_bad_length() {
        let (_, reply) = parse_reply(b"HTTP/1.1 204 \r\nServer: Firecracker API\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!((reply.status, reply.body.as_str()), (204, ""));
        assert!(parse_reply(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n").is_err());
        assert!(parse_reply(b"garbage\r\n\r\n").is_err());
    }

    #[test]
    fn client_keeps_one_connection_for_two_requests() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("api.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let server = std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let mut seen = Vec::new();
            let ends = |seen: &[u8]| seen.windows(4).filter(|w| w == b"\r\n\r\n").count();
            let mut buf = [0u8; 1024];
            while ends(&seen) < 1 {
                let n = conn.read(&mut buf).unwrap();
                seen.extend_from_slice(&buf[..n]);
            }
            conn.write_all(b"HTTP/1.1 200 \r\nContent-Length: 2\r\n\r\n{}")
                .unwrap();
            while ends(&seen) < 2 || !seen.ends_with(b"{}") {
                let n = conn.read(&mut buf).unwrap();
                seen.extend_from_slice(&buf[..n]);
            }
            conn.write_all(b"HTTP/1.1 204 \r\n\r\n").unwrap();
            String::from_utf8(seen).unwrap()
        });
        let mut client = ApiClient::connect(&path, Duration::from_secs(5)).unwrap();
        assert_eq!(client.get("/").unwrap().status, 200);
        assert_eq!(client.request("PUT", "/x", Some("{}")).unwrap().status, 204);
        let seen = server.join().unwrap();
        assert!(seen.contains("PUT /x HTTP/1.1\r\n"), "{seen}");
        assert!(seen.contains("Content-Length: 2\r\n\r\n{}"), "{seen}");
    }
}
