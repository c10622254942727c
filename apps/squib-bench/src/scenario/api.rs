//! API latency: `GET /` and `PUT /machine-config` round trips over one keep-alive
//! connection to a fresh, not-started VMM, after a short warm-up. Each request is one
//! sample, so the figures' p50 and p99 are the latency distribution. The requests are
//! spread over [`ROUNDS`] VMM processes per binary so that two binaries alternate.

use std::path::Path;
use std::time::{Duration, Instant};

use super::{us, Samples};
use crate::http::ApiClient;
use crate::report::FigureDef;
use crate::vmm::VmmProcess;

/// VMM processes per binary the requests are spread over, alternating binaries.
pub const ROUNDS: usize = 5;
/// Time the API gets to come up.
const API_TIMEOUT: Duration = Duration::from_secs(20);
/// Requests of each kind sent before measuring.
const WARM_UP: usize = 10;
/// Body of the measured `PUT /machine-config` (Firecracker's defaults).
const MACHINE_CONFIG: &str = r#"{"vcpu_count": 1, "mem_size_mib": 128}"#;

/// The figures of this scenario.
pub const FIGURES: [FigureDef; 2] = [
    FigureDef {
        scenario: "api",
        key: "get_root_us",
        label: "GET / round trip",
        unit: "us",
    },
    FigureDef {
        scenario: "api",
        key: "put_machine_config_us",
        label: "PUT /machine-config round trip",
        unit: "us",
    },
];

/// One VMM, `requests` of each kind.
pub fn run(binary: &Path, id: &str, requests: usize) -> Result<Samples, String> {
    let mut vmm = VmmProcess::spawn(binary, id, false).map_err(|e| e.to_string())?;
    let mut client = vmm.wait_api(API_TIMEOUT).map_err(|e| e.to_string())?;
    for _ in 0..WARM_UP {
        timed(&mut client, "GET", "/", None, 200)?;
        timed(
            &mut client,
            "PUT",
            "/machine-config",
            Some(MACHINE_CONFIG),
            204,
        )?;
    }
    let mut samples = Vec::with_capacity(2 * requests);
    for _ in 0..requests {
        let get = timed(&mut client, "GET", "/", None, 200)?;
        samples.push((FIGURES[0].key, Ok(us(get))));
    }
    for _ in 0..requests {
        let put = timed(
            &mut client,
            "PUT",
            "/machine-config",
            Some(MACHINE_CONFIG),
            204,
        )?;
        samples.push((FIGURES[1].key, Ok(us(put))));
    }
    vmm.kill().map_err(|e| e.to_string())?;
    Ok(samples)
}

/// Sends one request and returns its round-trip time; a status other than `expect` fails.
fn timed(
    client: &mut ApiClient,
    method: &str,
    path: &str,
    body: Option<&str>,
    expect: u16,
) -> Result<Duration, String> {
    let start = Instant::now();
    let reply = client
        .request(method, path, body)
        .map_err(|e| format!("{method} {path}: {e}"))?;
    let elapsed = start.elapsed();
    if reply.status != expect {
        return Err(format!(
            "{method} {path} answered {} instead of {expect}: {}",
            reply.status, reply.body
        ));
    }
    Ok(elapsed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::unix::net::UnixListener;

    /// A fake VMM API: answers every request with `reply` on one connection.
    fn fake_api(reply: &'static [u8]) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("api.sock");
        let listener = UnixListener::bind(&path).unwrap();
        std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let mut buf = [0u8; 4096];
            while let Ok(n) = conn.read(&mut buf) {
                if n == 0 || conn.write_all(reply).is_err() {
                    break;
                }
            }
        });
        (dir, path)
    }

    #[test]
    fn timed_measures_a_matching_reply() {
        let (_dir, path) = fake_api(b"HTTP/1.1 200 \r\nContent-Length: 2\r\n\r\n{}");
        let mut client = ApiClient::connect(&path, Duration::from_secs(5)).unwrap();
        let d = timed(&mut client, "GET", "/", None, 200).unwrap();
        assert!(d > Duration::ZERO && d < Duration::from_secs(5));
    }

    #[test]
    fn timed_rejects_an_unexpected_status_with_its_body() {
        let body = b"HTTP/1.1 400 \r\nContent-Length: 21\r\n\r\n{\"fault_message\":\"x\"}";
        let (_dir, path) = fake_api(body);
        let mut client = ApiClient::connect(&path, Duration::from_secs(5)).unwrap();
        let err = timed(&mut client, "PUT", "/machine-config", Some("{}"), 204).unwrap_err();
        assert!(err.contains("answered 400 instead of 204"), "{err}");
        assert!(err.contains("fault_message"), "{err}");
    }
}
