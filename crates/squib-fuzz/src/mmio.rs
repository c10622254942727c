//! `mmio_transport`: arbitrary virtio-mmio register access sequences (any offset in the slot,
//! any access size, config space included) on a transport around an entropy, block or net
//! device. Whatever the sequence configures, an activated device is then asked to drain its
//! queues, wherever the registers pointed them.
//!
//! Scenario: byte 0 picks the device (`% 3`: rng, block, net), then up to 255 register
//! accesses (see [`register_access`]); a byte 0xff between them runs the device's queues.

use std::os::unix::net::UnixDatagram;
use std::sync::{Arc, Mutex, PoisonError};

use squib_devices::virtio::block::Block;
use squib_devices::virtio::mmio::MmioTransport;
use squib_devices::virtio::net::Net;
use squib_devices::virtio::rng::Entropy;
use squib_devices::virtio::VirtioDevice;
use tempfile::NamedTempFile;

use crate::block::block_device;
use crate::guest::{self, register_access};
use crate::net::net_device;
use crate::rng::entropy_device;
use crate::Input;

/// The device behind the transport, and what keeps its backend alive.
enum Device {
    Rng(Arc<Mutex<Entropy>>),
    Block {
        dev: Arc<Mutex<Block>>,
        _file: NamedTempFile,
    },
    Net {
        dev: Arc<Mutex<Net>>,
        _host: UnixDatagram,
    },
}

impl Device {
    fn new(input: &mut Input<'_>) -> Option<Self> {
        Some(match input.u8() % 3 {
            0 => Self::Rng(Arc::new(Mutex::new(entropy_device(input)?))),
            1 => {
                let (block, file) = block_device(4096, false, true)?;
                Self::Block {
                    dev: Arc::new(Mutex::new(block)),
                    _file: file,
                }
            }
            _ => {
                let (net, host) = net_device(None)?;
                Self::Net {
                    dev: Arc::new(Mutex::new(net)),
                    _host: host,
                }
            }
        })
    }

    fn shared(&self) -> Arc<Mutex<dyn VirtioDevice>> {
        match self {
            Self::Rng(d) => d.clone(),
            Self::Block { dev: d, .. } => d.clone(),
            Self::Net { dev: d, .. } => d.clone(),
        }
    }

    /// Drain the queues if the transport activated the device.
    fn run_queues(&self) {
        match self {
            Self::Rng(d) => {
                let mut d = d.lock().unwrap_or_else(PoisonError::into_inner);
                if d.is_activated() {
                    d.process_queue();
                }
            }
            Self::Block { dev: d, .. } => {
                let mut d = d.lock().unwrap_or_else(PoisonError::into_inner);
                if d.is_activated() {
                    d.process_queue();
                }
            }
            Self::Net { dev: d, .. } => {
                let mut d = d.lock().unwrap_or_else(PoisonError::into_inner);
                if d.is_activated() {
                    d.process_tx();
                    d.process_rx();
                }
            }
        }
    }
}

/// The `mmio_transport` target.
pub fn mmio_transport(data: &[u8]) {
    let mut input = Input::new(data);
    let Some(device) = Device::new(&mut input) else {
        return;
    };
    let mem = guest::guest_memory();
    let Ok(mut transport) = MmioTransport::new(mem, device.shared()) else {
        return;
    };
    for _ in 0..255 {
        if input.is_empty() {
            break;
        }
        if input.bytes(1) == [0xff] {
            device.run_queues();
        } else {
            register_access(&mut input, &mut transport);
        }
    }
    device.run_queues();
}
