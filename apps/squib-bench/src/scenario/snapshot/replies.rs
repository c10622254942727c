//! Talking to a VMM for the snapshot rounds: timed requests that must answer 204, the
//! reason of a refusal (the VMM's own `fault_message`, which the report prints as
//! "not run: <fault_message>"), and latencies the VMM reports in its metrics file.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::http::{ApiClient, Reply};
use crate::vmm::VmmProcess;

/// Sends `method path body` and returns how long the 204 took; any other reply is an error
/// carrying the VMM's reason.
pub fn timed_204(
    api: &mut ApiClient,
    method: &str,
    path: &str,
    body: &str,
) -> Result<Duration, String> {
    let start = Instant::now();
    let reply = api
        .request(method, path, Some(body))
        .map_err(|e| format!("{method} {path}: {e}"))?;
    let elapsed = start.elapsed();
    if reply.status == 204 {
        Ok(elapsed)
    } else {
        Err(refusal(&reply))
    }
}

/// `PATCH /vm` to `state` (`Paused` or `Resumed`).
pub fn set_vm_state(api: &mut ApiClient, state: &str) -> Result<(), String> {
    let body = json!({ "state": state }).to_string();
    timed_204(api, "PATCH", "/vm", &body)
        .map(|_| ())
        .map_err(|e| format!("PATCH /vm {state}: {e}"))
}

/// Why a request was refused: the body's `fault_message` when it has one (Firecracker's
/// error shape), else the status and the body.
pub fn refusal(reply: &Reply) -> String {
    let fault = serde_json::from_str::<serde_json::Value>(&reply.body)
        .ok()
        .and_then(|v| v["fault_message"].as_str().map(str::to_owned));
    match fault {
        Some(message) => message,
        None => format!("HTTP {}: {}", reply.status, reply.body.trim()),
    }
}

/// Flushes the VMM's metrics and reads the first of `names` (under `latencies_us`) that the
/// VMM filled in.
pub fn reported_latency_us(
    api: &mut ApiClient,
    vmm: &VmmProcess,
    names: &[&str],
) -> Result<f64, String> {
    let flush = json!({ "action_type": "FlushMetrics" }).to_string();
    timed_204(api, "PUT", "/actions", &flush).map_err(|e| format!("FlushMetrics: {e}"))?;
    let text = std::fs::read_to_string(&vmm.metrics)
        .map_err(|e| format!("cannot read the metrics file: {e}"))?;
    first_latency_us(&text, names)
}

/// The first of `names` with a non-zero [`latency_us`]; else the first name's error.
pub fn first_latency_us(ndjson: &str, names: &[&str]) -> Result<f64, String> {
    let mut first_error = None;
    for name in names {
        match latency_us(ndjson, name) {
            Ok(us) => return Ok(us),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    Err(first_error.unwrap_or_else(|| "no metric named".to_owned()))
}

/// `latencies_us.<name>` from a fresh process's metrics file (one JSON object per flush):
/// the last non-zero value, since a VMM may flush on its own and clear the figure after
/// writing it. All zero means the VMM never stored it.
pub fn latency_us(ndjson: &str, name: &str) -> Result<f64, String> {
    let mut found = None;
    for line in ndjson.lines().filter(|l| !l.trim().is_empty()) {
        let value: serde_json::Value =
            serde_json::from_str(line).map_err(|e| format!("bad metrics line: {e}"))?;
        match value["latencies_us"][name].as_f64() {
            Some(us) if us > 0.0 => found = Some(us),
            Some(_) => found = found.or(Some(0.0)),
            None => {}
        }
    }
    match found {
        Some(us) if us > 0.0 => Ok(us),
        Some(_) => Err(format!(
            "the VMM reports latencies_us.{name} = 0 (not measured)"
        )),
        None => Err(format!("the metrics have no latencies_us.{name}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(status: u16, body: &str) -> Reply {
        Reply {
            status,
            body: body.to_owned(),
        }
    }

    #[test]
    fn refusal_is_the_fault_message_itself() {
        let r = reply(
            400,
            "{\"fault_message\":\"Diff snapshots are not supported by squib yet.\"}",
        );
        assert_eq!(
            refusal(&r),
            "Diff snapshots are not supported by squib yet."
        );
        assert_eq!(refusal(&reply(500, "oops\n")), "HTTP 500: oops");
        assert_eq!(refusal(&reply(400, "{\"x\":1}")), "HTTP 400: {\"x\":1}");
    }

    #[test]
    fn latency_is_the_last_non_zero_value() {
        let text = "{\"latencies_us\":{\"vmm_load_snapshot\":0}}\n\
                    {\"latencies_us\":{\"vmm_load_snapshot\":5123}}\n\n\
                    {\"latencies_us\":{\"vmm_load_snapshot\":0}}\n";
        assert_eq!(latency_us(text, "vmm_load_snapshot"), Ok(5123.0));
    }

    #[test]
    fn first_latency_falls_back_to_the_next_name() {
        let text = "{\"latencies_us\":{\"vmm_load_snapshot\":0,\"load_snapshot\":21556}}";
        let names = ["vmm_load_snapshot", "load_snapshot"];
        assert_eq!(first_latency_us(text, &names), Ok(21556.0));
        let text = "{\"latencies_us\":{\"vmm_load_snapshot\":9,\"load_snapshot\":0}}";
        assert_eq!(first_latency_us(text, &names), Ok(9.0));
        let none = "{\"latencies_us\":{\"vmm_load_snapshot\":0}}";
        assert!(first_latency_us(none, &names)
            .unwrap_err()
            .contains("vmm_load_snapshot = 0"));
        assert!(first_latency_us(none, &[]).is_err());
    }

    #[test]
    fn missing_zero_or_garbled_latencies_are_errors() {
        let zero = "{\"latencies_us\":{\"vmm_load_snapshot\":0}}";
        assert!(latency_us(zero, "vmm_load_snapshot")
            .unwrap_err()
            .contains("= 0"));
        assert!(latency_us("{\"latencies_us\":{}}", "vmm_load_snapshot")
            .unwrap_err()
            .contains("no latencies_us.vmm_load_snapshot"));
        assert!(latency_us("", "x")
            .unwrap_err()
            .contains("no latencies_us.x"));
        assert!(latency_us("not json", "x").is_err());
    }

    #[test]
    fn timed_204_reports_the_refusal() {
        use std::io::{Read, Write};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("api.sock");
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let server = std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let mut buf = [0u8; 4096];
            let mut seen = Vec::new();
            while !seen.ends_with(b"{}") {
                let n = conn.read(&mut buf).unwrap();
                seen.extend_from_slice(&buf[..n]);
            }
            let body = "{\"fault_message\":\"no\"}";
            let head = format!("HTTP/1.1 400 \r\nContent-Length: {}\r\n\r\n", body.len());
            conn.write_all((head + body).as_bytes()).unwrap();
        });
        let mut api = ApiClient::connect(&path, Duration::from_secs(5)).unwrap();
        assert_eq!(
            timed_204(&mut api, "PUT", "/snapshot/create", "{}"),
            Err("no".to_owned())
        );
        server.join().unwrap();
    }
}
