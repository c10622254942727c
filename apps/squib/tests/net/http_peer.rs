//! The host end of the guest's TCP transfers: a one-shot HTTP server the guest's `wget`
//! downloads from, an HTTP client that fetches the file back from the guest's `httpd`, and
//! the test data with its SHA-256 (from the host's `sha256sum`, which the guest runs too).

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// `len` bytes that compress badly and differ at every offset (xorshift64).
pub fn test_data(len: usize) -> Vec<u8> {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut data = Vec::with_capacity(len + 8);
    while data.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        data.extend_from_slice(&state.to_le_bytes());
    }
    data.truncate(len);
    data
}

/// The SHA-256 of `data` in hex, as `sha256sum` prints it.
pub fn sha256_hex(data: &[u8]) -> String {
    let mut child = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run sha256sum on the host");
    let mut stdin = child.stdin.take().expect("piped stdin");
    stdin.write_all(data).expect("feed sha256sum");
    drop(stdin);
    let out = child.wait_with_output().expect("sha256sum output");
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace()
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// Reads from `stream` until the end of an HTTP head and returns it with whatever body bytes
/// came along.
fn read_head(stream: &mut TcpStream) -> io::Result<(String, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            return Ok((head, buf[end + 4..].to_vec()));
        }
        let n = stream.read(&mut chunk)?;
        if n == 0 || buf.len() > 64 * 1024 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("no HTTP head in {} bytes", buf.len()),
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Answers one HTTP request on `listener`, whatever its path, with `body`; gives up when no
/// client connects within `timeout`. The thread returns the request line.
pub fn serve_once(
    listener: TcpListener,
    body: std::sync::Arc<Vec<u8>>,
    timeout: Duration,
) -> JoinHandle<io::Result<String>> {
    std::thread::spawn(move || {
        listener.set_nonblocking(true)?;
        let deadline = Instant::now() + timeout;
        let mut stream = loop {
            match listener.accept() {
                Ok((stream, _)) => break stream,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => return Err(e),
            }
        };
        stream.set_nonblocking(false)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        let (head, _) = read_head(&mut stream)?;
        let reply = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        stream.write_all(reply.as_bytes())?;
        stream.write_all(&body)?;
        stream.flush()?;
        Ok(head.lines().next().unwrap_or_default().to_owned())
    })
}

/// GETs `path` from `addr` over HTTP/1.0 and returns the body of a 200 reply and the time
/// from connecting to the last byte.
pub fn fetch(addr: SocketAddr, path: &str, timeout: Duration) -> io::Result<(Vec<u8>, Duration)> {
    let start = Instant::now();
    let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes())?;
    let (head, mut body) = read_head(&mut stream)?;
    if !head.starts_with("HTTP/1.0 200") && !head.starts_with("HTTP/1.1 200") {
        return Err(io::Error::other(format!("GET {path}: {head}")));
    }
    stream.read_to_end(&mut body)?;
    Ok((body, start.elapsed()))
}

#[test]
fn serve_once_and_fetch_move_the_data_over_loopback() {
    let data = std::sync::Arc::new(test_data(100_000));
    assert_ne!(data[..8], data[8..16]);
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("address");
    let server = serve_once(listener, data.clone(), Duration::from_secs(10));
    let (body, _) = fetch(addr, "/net", Duration::from_secs(10)).expect("fetch");
    assert_eq!(body, *data);
    let request = server.join().expect("server thread").expect("served");
    assert_eq!(request, "GET /net HTTP/1.0");
    assert_eq!(
        sha256_hex(b"netdata\n"),
        "c6db9daa6617cce98f4431a19ac4c825856a247b684e779e88b67cc46e488d9a"
    );
}
