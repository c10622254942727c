//! Wire-test harness: a real API server on a temporary Unix socket, a fake VMM thread that
//! drains the `ApiReceiver`, and a raw HTTP/1.1 client parsing replies with `httparse`.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use squib_api::action::{Admission, ApiAction, ApiResponse};
use squib_api::channel::api_channel;
use squib_api::mirror::{StateMirror, VmState};
use squib_api::schemas::{InstanceAction, MachineConfig, VmStateChange};
use squib_api::server::{ApiServer, ApiServerConfig};
use squib_api::{NOT_SUPPORTED_AFTER_START, NOT_SUPPORTED_BEFORE_START};
use vmm_sys_util::eventfd::EventFd;

/// A parsed HTTP response.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    /// Header names exactly as sent (case preserved).
    pub headers: Vec<(String, String)>,
    pub body: String,
    /// The raw header block.
    pub raw_head: String,
}

impl Reply {
    /// Case-sensitive header lookup.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }

    pub fn fault(&self) -> String {
        self.json()["fault_message"]
            .as_str()
            .unwrap_or_else(|| panic!("no fault_message: {}", self.body))
            .to_owned()
    }
}

/// One keep-alive connection.
pub struct Conn {
    stream: UnixStream,
    buf: Vec<u8>,
}

impl Conn {
    pub fn open(path: &Path) -> Self {
        let stream = UnixStream::connect(path).expect("connect to API socket");
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        Self {
            stream,
            buf: Vec::new(),
        }
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write request");
    }

    pub fn request(&mut self, method: &str, path: &str, body: &str) -> Reply {
        let mut req =
            format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nAccept: application/json\r\n");
        if !body.is_empty() {
            req.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        req.push_str("\r\n");
        req.push_str(body);
        self.send_raw(req.as_bytes());
        self.read_reply().expect("a reply")
    }

    /// Read one response; `None` if the server closed the connection first.
    pub fn read_reply(&mut self) -> Option<Reply> {
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut resp = httparse::Response::new(&mut headers);
            if let httparse::Status::Complete(head_len) =
                resp.parse(&self.buf).expect("valid HTTP response")
            {
                let status = resp.code.unwrap();
                let headers: Vec<(String, String)> = resp
                    .headers
                    .iter()
                    .map(|h| {
                        (
                            h.name.to_owned(),
                            String::from_utf8_lossy(h.value).into_owned(),
                        )
                    })
                    .collect();
                let len: usize = headers
                    .iter()
                    .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
                    .map_or(0, |(_, v)| v.parse().unwrap());
                while self.buf.len() < head_len + len {
                    self.fill()?;
                }
                let raw_head = String::from_utf8_lossy(&self.buf[..head_len]).into_owned();
                let body =
                    String::from_utf8_lossy(&self.buf[head_len..head_len + len]).into_owned();
                self.buf.drain(..head_len + len);
                return Some(Reply {
                    status,
                    headers,
                    body,
                    raw_head,
                });
            }
            self.fill()?;
        }
    }

    fn fill(&mut self) -> Option<()> {
        let mut chunk = [0u8; 4096];
        match self.stream.read(&mut chunk) {
            Ok(0) | Err(_) => None,
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                Some(())
            }
        }
    }
}

/// The fake VMM's behaviour: given the action and whether the VM is booted, answer.
pub type FakeVmm = Box<dyn FnMut(&ApiAction, &mut Store) -> ApiResponse + Send>;

/// A minimal resource store for the fake VMM.
#[derive(Debug, Default)]
pub struct Store {
    pub booted: bool,
    pub machine: MachineConfig,
    pub mmds: Option<serde_json::Value>,
    pub log: Vec<String>,
}

pub struct TestServer {
    pub dir: tempfile::TempDir,
    pub path: PathBuf,
    pub mirror: Arc<StateMirror>,
    pub store: Arc<Mutex<Store>>,
}

impl TestServer {
    pub fn start() -> Self {
        Self::with(ApiServerConfig::default(), Box::new(store_vmm))
    }

    pub fn with(mut config: ApiServerConfig, mut vmm: FakeVmm) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("api.sock");
        config.socket_path = path.clone();
        let server = ApiServer::bind(config).unwrap();
        let wake = EventFd::new(0).unwrap();
        let vmm_wake = wake.try_clone().unwrap();
        let (sender, mut receiver) = api_channel(16, wake);
        let mirror = Arc::new(StateMirror::new("test_vm".into()));
        let store = Arc::new(Mutex::new(Store::default()));
        let (vmm_store, vmm_mirror) = (store.clone(), mirror.clone());
        std::thread::spawn(move || loop {
            if vmm_wake.read().is_err() {
                return;
            }
            while let Some(request) = receiver.try_recv() {
                let mut store = vmm_store.lock().unwrap();
                store.log.push(request.action.label().to_owned());
                let response = vmm(&request.action, &mut store);
                if store.booted {
                    vmm_mirror.set_state(
                        if matches!(request.action, ApiAction::PatchVm(VmStateChange::Paused)) {
                            VmState::Paused
                        } else {
                            VmState::Running
                        },
                    );
                }
                drop(store);
                request.respond(response);
            }
        });
        server.spawn(sender, mirror.clone()).unwrap();
        Self {
            dir,
            path,
            mirror,
            store,
        }
    }

    pub fn conn(&self) -> Conn {
        Conn::open(&self.path)
    }

    pub fn get(&self, path: &str) -> Reply {
        self.conn().request("GET", path, "")
    }

    pub fn put(&self, path: &str, body: &str) -> Reply {
        self.conn().request("PUT", path, body)
    }

    pub fn patch(&self, path: &str, body: &str) -> Reply {
        self.conn().request("PATCH", path, body)
    }

    pub fn delete(&self, path: &str) -> Reply {
        self.conn().request("DELETE", path, "")
    }

    pub fn actions(&self) -> Vec<String> {
        self.store.lock().unwrap().log.clone()
    }
}

/// A fake VMM that admits like Firecracker and keeps machine config and MMDS data.
pub fn store_vmm(action: &ApiAction, store: &mut Store) -> ApiResponse {
    match (action.admission(), store.booted) {
        (Admission::PostBootOnly, false) => return ApiResponse::fault(NOT_SUPPORTED_BEFORE_START),
        (Admission::PreBootOnly, true) => return ApiResponse::fault(NOT_SUPPORTED_AFTER_START),
        _ => {}
    }
    match action {
        ApiAction::PutMachineConfig(c) => store.machine = c.clone(),
        ApiAction::PatchMachineConfig(p) => match p.apply_to(&store.machine) {
            Ok(c) => store.machine = c,
            Err(e) => return ApiResponse::fault(format!("Machine config error: {e}")),
        },
        ApiAction::GetMachineConfig => {
            return ApiResponse::Json(serde_json::to_value(&store.machine).unwrap())
        }
        ApiAction::PutMmds(c) => store.mmds = Some(c.0.clone()),
        ApiAction::GetMmds => {
            return ApiResponse::Json(store.mmds.clone().unwrap_or(serde_json::json!({})))
        }
        ApiAction::Action(InstanceAction::InstanceStart) => store.booted = true,
        ApiAction::GetVmConfig
        | ApiAction::GetBalloon
        | ApiAction::GetBalloonStats
        | ApiAction::GetBalloonHintingStatus
        | ApiAction::GetHotplugMemory => {
            return ApiResponse::Json(serde_json::json!({"route": action.label()}))
        }
        _ => {}
    }
    ApiResponse::NoContent
}
