//! Keep HTTP/1.0 connections alive, as Firecracker's `micro_http` does.
//!
//! Some Firecracker clients (e.g. `firecracker-rs-sdk`) send `HTTP/1.0` requests without
//! `Connection: keep-alive` and reuse the connection; hyper would close it after the first
//! response. This reader rewrites the request-line version ` HTTP/1.0\r\n` to ` HTTP/1.1\r\n`
//! (same length) as bytes arrive. The sequence cannot occur in a valid JSON body (raw CR/LF
//! are not allowed inside JSON strings), so bodies that matter are never altered. A request
//! line split across two reads exactly inside the marker is not rewritten (the connection then
//! closes after that response, which is still correct HTTP/1.0).

use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

const HTTP10: &[u8] = b" HTTP/1.0\r\n";
const HTTP11: &[u8] = b" HTTP/1.1\r\n";

/// Rewrite every ` HTTP/1.0\r\n` in `bytes` to ` HTTP/1.1\r\n`.
pub(crate) fn upgrade_request_lines(bytes: &mut [u8]) {
    let mut i = 0;
    while i + HTTP10.len() <= bytes.len() {
        if &bytes[i..i + HTTP10.len()] == HTTP10 {
            bytes[i..i + HTTP10.len()].copy_from_slice(HTTP11);
            i += HTTP10.len();
        } else {
            i += 1;
        }
    }
}

/// A stream whose incoming HTTP/1.0 request lines read as HTTP/1.1.
#[derive(Debug)]
pub(crate) struct KeepAlive10<S>(pub S);

impl<S: AsyncRead + Unpin> AsyncRead for KeepAlive10<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.0).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = result {
            upgrade_request_lines(&mut buf.filled_mut()[before..]);
        }
        result
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for KeepAlive10<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, data)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewrites_only_the_version_marker() {
        let mut req =
            b"GET / HTTP/1.0\r\n\r\nPUT /mmds HTTP/1.0\r\nContent-Length: 2\r\n\r\n{}".to_vec();
        upgrade_request_lines(&mut req);
        assert_eq!(
            req,
            b"GET / HTTP/1.1\r\n\r\nPUT /mmds HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}".to_vec()
        );
        let mut other = b"GET / HTTP/1.1\r\n HTTP/1.0".to_vec();
        upgrade_request_lines(&mut other);
        assert_eq!(other, b"GET / HTTP/1.1\r\n HTTP/1.0".to_vec());
    }
}
