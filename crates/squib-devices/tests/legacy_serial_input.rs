//! The serial input subscriber under a real `event_manager::EventManager`, fed by a pipe:
//! bounded reads, pause when the FIFO is full, resume when the guest drains it, detach on
//! EOF, and no busy loop in any state.

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::{Arc, Mutex};

use event_manager::{EventManager, SubscriberOps};
use squib_devices::bus::BusDevice;
use squib_devices::legacy::serial::{InputState, SerialDevice, SerialInput};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

const RBR: u64 = 0;
const IER: u64 = 1;
const FIFO_SIZE: usize = 64;
/// Long enough for a ready fd to be reported, short enough to keep the test quick.
const POLL_MS: i32 = 50;

type Manager = EventManager<Arc<Mutex<SerialInput>>>;

/// A pipe: (read end, write end).
fn pipe() -> (OwnedFd, File) {
    let mut fds = [0; 2];
    // SAFETY: `fds` is a writable array of two ints, as pipe2 requires.
    let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    assert_eq!(rc, 0, "pipe2: {}", io::Error::last_os_error());
    // SAFETY: pipe2 succeeded, so both fds are open and owned by nobody else.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), File::from_raw_fd(fds[1])) }
}

struct Rig {
    serial: Arc<Mutex<SerialDevice>>,
    input: Arc<Mutex<SerialInput>>,
    irq: EventFd,
    manager: Manager,
}

impl Rig {
    fn new(input_fd: OwnedFd) -> Self {
        let irq = EventFd::new(EFD_NONBLOCK).unwrap();
        let serial = Arc::new(Mutex::new(SerialDevice::new(
            irq.try_clone().unwrap(),
            Box::new(io::sink()),
        )));
        serial.lock().unwrap().write(IER, &[0x01]);
        let input = Arc::new(Mutex::new(
            SerialInput::new(serial.clone(), input_fd).unwrap(),
        ));
        let mut manager = Manager::new().unwrap();
        manager.add_subscriber(input.clone());
        Self {
            serial,
            input,
            irq,
            manager,
        }
    }

    fn run(&mut self) -> usize {
        self.manager.run_with_timeout(POLL_MS).unwrap()
    }

    fn state(&self) -> InputState {
        self.input.lock().unwrap().state()
    }

    fn fifo_capacity(&self) -> usize {
        self.serial.lock().unwrap().fifo_capacity()
    }

    /// What the guest reads from RBR, `n` times.
    fn guest_reads(&self, n: usize) -> Vec<u8> {
        let mut serial = self.serial.lock().unwrap();
        (0..n)
            .map(|_| {
                let mut b = [0u8];
                serial.read(RBR, &mut b);
                b[0]
            })
            .collect()
    }
}

#[test]
fn pipe_input_reaches_the_guest_with_flow_control() {
    let (read_end, mut write_end) = pipe();
    let mut rig = Rig::new(read_end);
    assert_eq!(rig.state(), InputState::Reading);
    assert_eq!(rig.run(), 0, "nothing to read yet: the loop sleeps");

    let data: Vec<u8> = (0..100u8).collect();
    write_end.write_all(&data).unwrap();
    assert_eq!(rig.run(), 1);
    assert_eq!(
        rig.fifo_capacity(),
        0,
        "one read fills the FIFO, never more"
    );
    assert_eq!(rig.irq.read().unwrap(), 1, "the receive interrupt fired");

    assert_eq!(rig.run(), 1, "the fd is still readable: seen once more");
    assert_eq!(rig.state(), InputState::Paused);
    assert_eq!(
        rig.run(),
        0,
        "paused: no busy loop while the guest does not read"
    );

    let first = rig.guest_reads(FIFO_SIZE);
    assert_eq!(first, data[..FIFO_SIZE]);
    assert_eq!(rig.run(), 1, "buffer-ready wakes the subscriber");
    assert_eq!(rig.state(), InputState::Reading);
    assert_eq!(rig.run(), 1, "the rest of the pipe is read");
    let rest = rig.guest_reads(data.len() - FIFO_SIZE);
    assert_eq!(rest, data[FIFO_SIZE..]);

    // Buffer-ready fires again after the drain; handling it while Reading changes nothing.
    rig.run();
    assert_eq!(rig.state(), InputState::Reading);
    assert_eq!(rig.run(), 0);

    drop(write_end);
    assert_eq!(rig.run(), 1, "the hang-up is seen once");
    assert_eq!(rig.state(), InputState::Detached);
    assert_eq!(
        rig.run(),
        0,
        "detached: the closed pipe no longer wakes the loop"
    );
}

#[test]
fn eof_while_paused_detaches_after_the_guest_drains() {
    let (read_end, mut write_end) = pipe();
    let mut rig = Rig::new(read_end);
    write_end.write_all(&[b'x'; FIFO_SIZE + 1]).unwrap();
    drop(write_end);
    rig.run();
    rig.run();
    assert_eq!(rig.state(), InputState::Paused);
    assert_eq!(rig.run(), 0, "a hung-up pipe does not spin while paused");

    rig.guest_reads(FIFO_SIZE);
    rig.run();
    assert_eq!(rig.state(), InputState::Reading);
    rig.run();
    assert_eq!(rig.guest_reads(1), [b'x']);
    rig.run();
    assert_eq!(rig.state(), InputState::Detached);
    assert_eq!(rig.run(), 0);
}

#[test]
fn unpollable_input_is_detached_at_registration() {
    let file = tempfile::tempfile().unwrap();
    let mut rig = Rig::new(OwnedFd::from(file));
    assert_eq!(rig.state(), InputState::Detached);
    assert_eq!(rig.run(), 0, "no fd was registered");
}

#[test]
fn stdin_constructor_builds_a_subscriber() {
    let irq = EventFd::new(EFD_NONBLOCK).unwrap();
    let serial = Arc::new(Mutex::new(SerialDevice::new(irq, Box::new(io::sink()))));
    let input = SerialInput::stdin(serial).unwrap();
    assert_eq!(
        input.state(),
        InputState::Detached,
        "not registered with a loop yet"
    );
}
