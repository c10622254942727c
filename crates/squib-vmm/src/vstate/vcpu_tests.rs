//! vCPU control and exit handling: the command protocol against fake vCPU threads that run
//! the real vCPU-side code ([`serve_commands`], [`wait_for_start`]), the same protocol
//! (pause, save, resume) against real vCPU threads running a guest on `/dev/kvm`, and
//! [`handle_exit`] on hand-built `VcpuExit`s (they borrow their data, so no KVM is needed).

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::mpsc;

use kvm_bindings::{kvm_debug_exit_arch, KVM_SYSTEM_EVENT_CRASH};
use squib_arch::memory::GuestMemoryMmap;
use squib_devices::legacy::serial::SerialDevice;
use squib_devices::virtio::block::{Block, BlockConfig, CacheMode};
use squib_devices::virtio::mmio::MmioTransport;
use vm_memory::GuestAddress;

use super::*;

#[test]
fn the_first_stop_reason_wins_and_wakes_the_vmm() {
    let evt = Arc::new(EventFd::new(libc::EFD_NONBLOCK).unwrap());
    let stop = StopNotifier::new(evt.clone());
    assert_eq!(stop.reason(), None);
    stop.notify(StopReason::GuestReset);
    stop.clone().notify(StopReason::Fault("later".into()));
    assert_eq!(stop.reason(), Some(StopReason::GuestReset));
    assert_eq!(evt.read().unwrap(), 2);
}

// ---- the command protocol ----

/// A vCPU thread without KVM: it sleeps `delay` (a slow vCPU), then serves commands with the
/// real vCPU-side code. `running` is true while it is outside a pause.
struct FakeVcpu {
    handle: VcpuHandle,
    running: Arc<AtomicBool>,
    control: Arc<NoKvm>,
}

/// What a fake vCPU does besides waiting: it counts its pauses and cannot save a state.
#[derive(Default)]
struct NoKvm {
    pauses: AtomicUsize,
}

impl VcpuControl for NoKvm {
    fn paused(&self) {
        self.pauses.fetch_add(1, Ordering::SeqCst);
    }

    fn save(&self) -> Result<VcpuState, VcpuStateError> {
        Err(VcpuStateError::Ioctl(
            "save a fake vCPU",
            kvm_ioctls::Error::new(libc::ENOTTY),
        ))
    }
}

fn fake_vcpu(index: u8, delay: Duration) -> FakeVcpu {
    register_kick_signal_handler().unwrap();
    let (cmd_tx, cmd_rx) = mpsc::channel();
    let (ack_tx, ack_rx) = mpsc::channel();
    let running = Arc::new(AtomicBool::new(true));
    let flag = running.clone();
    let control = Arc::new(NoKvm::default());
    let vcpu = control.clone();
    let thread = std::thread::spawn(move || {
        std::thread::sleep(delay);
        loop {
            flag.store(false, Ordering::SeqCst);
            if !serve_commands(&cmd_rx, &ack_tx, vcpu.as_ref()) {
                return;
            }
            flag.store(true, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(1));
        }
    });
    FakeVcpu {
        handle: VcpuHandle {
            index,
            thread,
            commands: cmd_tx,
            acks: ack_rx,
            seq: AtomicU64::new(0),
        },
        running,
        control,
    }
}

/// Whether the fake vCPU runs (seen outside a pause at least once within 200 ms).
fn is_running(vcpu: &FakeVcpu) -> bool {
    let deadline = Instant::now() + Duration::from_millis(200);
    while Instant::now() < deadline {
        if vcpu.running.load(Ordering::SeqCst) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    false
}

const SHORT: Duration = Duration::from_millis(100);
const LONG: Duration = Duration::from_secs(5);

#[test]
fn a_late_ack_of_a_timed_out_pause_does_not_fail_later_commands() {
    let vcpu = fake_vcpu(0, Duration::from_millis(300));
    let err = vcpu.handle.command(VcpuCommand::Pause, SHORT).unwrap_err();
    assert!(
        matches!(err, VcpuControlError::Timeout(0, VcpuCommand::Pause)),
        "{err}"
    );
    // The vCPU now pauses and acknowledges the old pause; the resume must skip that answer.
    std::thread::sleep(Duration::from_millis(400));
    vcpu.handle.command(VcpuCommand::Resume, LONG).unwrap();
    assert!(is_running(&vcpu));
    vcpu.handle.command(VcpuCommand::Pause, LONG).unwrap();
    assert!(!is_running(&vcpu));
    vcpu.handle.command(VcpuCommand::Resume, LONG).unwrap();
    assert!(is_running(&vcpu));
}

#[test]
fn a_failed_pause_resumes_the_vcpus_already_paused() {
    let fast = fake_vcpu(0, Duration::ZERO);
    let slow = fake_vcpu(1, Duration::from_millis(400));
    let (fast_running, slow_running) = (fast.running.clone(), slow.running.clone());
    let vcpus = [fast.handle, slow.handle];
    let err = pause_all(&vcpus, SHORT).unwrap_err();
    assert!(
        matches!(err, VcpuControlError::Timeout(1, VcpuCommand::Pause)),
        "{err}"
    );
    std::thread::sleep(Duration::from_millis(20));
    assert!(
        fast_running.load(Ordering::SeqCst),
        "vCPU 0 was left paused"
    );
    // The slow vCPU's pause lands late and is undone by the resume queued behind it.
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        slow_running.load(Ordering::SeqCst),
        "vCPU 1 was left paused"
    );
    // And the next pause and resume of everything work.
    pause_all(&vcpus, LONG).unwrap();
    resume_all(&vcpus, LONG).unwrap();
}

#[test]
fn pause_and_resume_all_reach_every_vcpu() {
    let a = fake_vcpu(0, Duration::ZERO);
    let b = fake_vcpu(1, Duration::ZERO);
    let (ra, rb) = (a.running.clone(), b.running.clone());
    let vcpus = [a.handle, b.handle];
    pause_all(&vcpus, LONG).unwrap();
    std::thread::sleep(Duration::from_millis(20));
    assert!(!ra.load(Ordering::SeqCst) && !rb.load(Ordering::SeqCst));
    resume_all(&vcpus, LONG).unwrap();
    std::thread::sleep(Duration::from_millis(20));
    assert!(ra.load(Ordering::SeqCst) && rb.load(Ordering::SeqCst));
}

#[test]
fn only_a_paused_vcpu_saves_its_state_and_each_pause_is_told_once() {
    let vcpu = fake_vcpu(0, Duration::ZERO);
    let err = vcpu.handle.save_state(LONG).unwrap_err();
    assert!(matches!(err, VcpuControlError::NotPaused(0)), "{err}");
    assert!(is_running(&vcpu), "a refused save paused the vCPU");

    vcpu.handle.command(VcpuCommand::Pause, LONG).unwrap();
    // The paused fake answers with its save attempt (which fails: it has no KVM).
    let err = vcpu.handle.save_state(LONG).unwrap_err();
    assert_eq!(
        err.to_string(),
        "vCPU 0 could not save its state: Failed to save a fake vCPU: \
         Inappropriate ioctl for device (os error 25)"
    );
    assert!(!is_running(&vcpu), "a save resumed the vCPU");
    vcpu.handle.command(VcpuCommand::Pause, LONG).unwrap();
    assert_eq!(vcpu.control.pauses.load(Ordering::SeqCst), 1);
    vcpu.handle.command(VcpuCommand::Resume, LONG).unwrap();
    vcpu.handle.command(VcpuCommand::Pause, LONG).unwrap();
    assert_eq!(vcpu.control.pauses.load(Ordering::SeqCst), 2);
}

#[test]
fn save_all_stops_at_the_first_vcpu_that_refuses() {
    let paused = fake_vcpu(0, Duration::ZERO);
    let running = fake_vcpu(1, Duration::ZERO);
    paused.handle.command(VcpuCommand::Pause, LONG).unwrap();
    let err = save_all(&[paused.handle, running.handle], LONG).unwrap_err();
    assert!(matches!(err, VcpuControlError::SaveState(0, _)), "{err}");
}

#[test]
fn a_spawned_vcpu_does_not_run_the_guest_before_it_is_started() {
    let kvm = kvm_ioctls::Kvm::new().expect("this test needs /dev/kvm");
    register_kick_signal_handler().unwrap();
    let vm = crate::vstate::vm::Vm::new(&kvm).unwrap();
    let fd = vm.fd().create_vcpu(0).unwrap();
    let stop = StopNotifier::new(Arc::new(EventFd::new(libc::EFD_NONBLOCK).unwrap()));
    let runner = VcpuRunner {
        index: 0,
        fd,
        pio_bus: Arc::new(Bus::new()),
        mmio_bus: Arc::new(Bus::new()),
        stop: stop.clone(),
        instance_start: None,
        state_caps: Arc::new(vm.vcpu_state_caps(&kvm).unwrap()),
    };
    let handle = runner.spawn().unwrap();
    std::thread::sleep(Duration::from_millis(50));
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        handle.abandon();
        let _ = tx.send(());
    });
    rx.recv_timeout(LONG)
        .expect("an abandoned vCPU thread did not end: it is running the guest");
    assert_eq!(stop.reason(), None);
}

/// A pause sent right after the start reaches a vCPU whose guest never exits to user space
/// (a tight loop): the kick may come before the thread registered its `kvm_run`, so the
/// thread must look at its queue before its first `KVM_RUN`.
#[test]
fn a_pause_right_after_the_start_stops_a_guest_that_never_exits() {
    use vm_memory::Bytes;
    register_kick_signal_handler().unwrap();
    for _ in 0..20 {
        let guest = crate::vstate::test_guest::test_vm(false);
        // jmp $: no exit to user space, ever.
        guest
            .mem
            .write_slice(
                &[0xeb, 0xfe],
                GuestAddress(crate::vstate::test_guest::CODE_ADDR),
            )
            .unwrap();
        let runner = VcpuRunner {
            index: 0,
            fd: guest.boot_vcpu(),
            pio_bus: Arc::new(Bus::new()),
            mmio_bus: Arc::new(Bus::new()),
            stop: StopNotifier::new(Arc::new(EventFd::new(libc::EFD_NONBLOCK).unwrap())),
            instance_start: None,
            state_caps: Arc::new(guest.caps.clone()),
        };
        let handle = runner.spawn().unwrap();
        handle.start().unwrap();
        pause_all(std::slice::from_ref(&handle), LONG)
            .expect("a pause right after the start was lost");
        resume_all(std::slice::from_ref(&handle), LONG).unwrap();
        pause_all(std::slice::from_ref(&handle), LONG).unwrap();
        handle.abandon();
    }
}

// ---- exit handling ----

const COM1: u16 = 0x3f8;
pub(super) const VIRTIO_BASE: u64 = 0xd000_0000;

#[derive(Clone, Default)]
struct SharedBuf(Arc<Mutex<Vec<u8>>>);

impl Write for SharedBuf {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

struct Buses {
    pio: Bus,
    mmio: Bus,
    serial_out: SharedBuf,
    _disk: tempfile::NamedTempFile,
}

fn buses() -> Buses {
    let serial_out = SharedBuf::default();
    let mut pio = Bus::new();
    let serial = SerialDevice::new(
        EventFd::new(libc::EFD_NONBLOCK).unwrap(),
        Box::new(serial_out.clone()),
    );
    pio.insert(Arc::new(Mutex::new(serial)), u64::from(COM1), 8)
        .unwrap();
    let (mmio, disk) = virtio_block_bus();
    Buses {
        pio,
        mmio,
        serial_out,
        _disk: disk,
    }
}

/// An MMIO bus with a virtio-block transport at [`VIRTIO_BASE`], over a 1 MiB temp file
/// (kept alive by the caller). Shared with the allocation tests.
pub(super) fn virtio_block_bus() -> (Bus, tempfile::NamedTempFile) {
    let disk = tempfile::NamedTempFile::new().unwrap();
    disk.as_file().set_len(1 << 20).unwrap();
    let block = Block::new(BlockConfig {
        drive_id: "rootfs".into(),
        path: disk.path().to_owned(),
        read_only: false,
        cache: CacheMode::Unsafe,
        rate_limiter: None,
        engine: Default::default(),
    })
    .unwrap();
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap();
    let transport = MmioTransport::new(mem, Arc::new(Mutex::new(block))).unwrap();
    let mut mmio = Bus::new();
    mmio.insert(Arc::new(Mutex::new(transport)), VIRTIO_BASE, 0x1000)
        .unwrap();
    (mmio, disk)
}

fn exit(b: &Buses, exit: VcpuExit<'_>) -> Step {
    handle_exit(3, exit, &b.pio, &b.mmio)
}

fn fault(step: Step) -> String {
    match step {
        Step::Stop(StopReason::Fault(msg)) => msg,
        other => panic!("expected a fault, got {other:?}"),
    }
}

#[test]
fn io_out_reaches_the_device_and_io_in_reads_it() {
    let b = buses();
    let outs = METRICS.vcpu.exit_io_out.count();
    assert_eq!(exit(&b, VcpuExit::IoOut(COM1, b"h")), Step::Continue);
    assert_eq!(exit(&b, VcpuExit::IoOut(COM1, b"i")), Step::Continue);
    assert_eq!(*b.serial_out.0.lock().unwrap(), b"hi");
    assert!(METRICS.vcpu.exit_io_out.count() >= outs + 2);
    // Line status: the transmitter is empty.
    let mut lsr = [0u8; 1];
    let ins = METRICS.vcpu.exit_io_in.count();
    assert_eq!(exit(&b, VcpuExit::IoIn(COM1 + 5, &mut lsr)), Step::Continue);
    assert_ne!(lsr[0] & 0x60, 0, "LSR {:#x}", lsr[0]);
    assert!(METRICS.vcpu.exit_io_in.count() > ins);
}

#[test]
fn io_to_an_absent_port_reads_all_ones_and_goes_on() {
    let b = buses();
    let mut data = [0u8; 4];
    assert_eq!(exit(&b, VcpuExit::IoIn(0x2f8, &mut data)), Step::Continue);
    assert_eq!(data, [0xff; 4]);
    assert_eq!(exit(&b, VcpuExit::IoOut(0x80, &[0x12])), Step::Continue);
}

#[test]
fn mmio_reaches_a_present_device_and_reads_zero_elsewhere() {
    let b = buses();
    let mut magic = [0u8; 4];
    assert_eq!(
        exit(&b, VcpuExit::MmioRead(VIRTIO_BASE, &mut magic)),
        Step::Continue
    );
    assert_eq!(&magic, b"virt");
    let mut absent = [0xaau8; 8];
    assert_eq!(
        exit(&b, VcpuExit::MmioRead(0xe000_0000, &mut absent)),
        Step::Continue
    );
    assert_eq!(absent, [0; 8]);
    assert_eq!(
        exit(&b, VcpuExit::MmioWrite(0xe000_0000, &[1, 2, 3, 4])),
        Step::Continue
    );
    // A status write to the present device lands: reading it back gives it.
    let status = VIRTIO_BASE + squib_devices::virtio::mmio::reg::STATUS;
    assert_eq!(
        exit(&b, VcpuExit::MmioWrite(status, &[1, 0, 0, 0])),
        Step::Continue
    );
    let mut back = [0u8; 4];
    assert_eq!(
        exit(&b, VcpuExit::MmioRead(status, &mut back)),
        Step::Continue
    );
    assert_eq!(back, [1, 0, 0, 0]);
}

#[test]
fn reset_and_shutdown_system_events_stop_the_vm_cleanly() {
    let b = buses();
    for kind in [KVM_SYSTEM_EVENT_RESET, KVM_SYSTEM_EVENT_SHUTDOWN] {
        assert_eq!(
            exit(&b, VcpuExit::SystemEvent(kind, &[])),
            Step::Stop(StopReason::GuestReset)
        );
    }
}

#[test]
fn a_triple_fault_or_hlt_is_a_fault_as_in_firecracker() {
    let b = buses();
    assert!(fault(exit(&b, VcpuExit::Shutdown)).contains("triple-faulted"));
    assert!(fault(exit(&b, VcpuExit::Hlt)).contains("KVM_EXIT_HLT"));
}

#[test]
fn entry_failures_and_unexpected_exits_are_faults_that_name_them() {
    let b = buses();
    assert_eq!(
        fault(exit(&b, VcpuExit::FailEntry(0x21, 2))),
        "KVM_EXIT_FAIL_ENTRY: hardware entry failure reason 0x21 on cpu 2"
    );
    assert!(fault(exit(&b, VcpuExit::InternalError)).starts_with("KVM_EXIT_INTERNAL_ERROR"));
    let msg = fault(exit(&b, VcpuExit::SystemEvent(KVM_SYSTEM_EVENT_CRASH, &[])));
    assert!(msg.starts_with("unhandled vCPU exit SystemEvent("), "{msg}");
    for unexpected in [
        VcpuExit::Unknown,
        VcpuExit::Exception,
        VcpuExit::IrqWindowOpen,
        VcpuExit::Debug(kvm_debug_exit_arch::default()),
        VcpuExit::Unsupported(1234),
    ] {
        let msg = fault(exit(&b, unexpected));
        assert!(msg.starts_with("unhandled vCPU exit "), "{msg}");
    }
}

#[test]
fn an_interrupted_run_goes_to_the_command_check() {
    let b = buses();
    assert_eq!(exit(&b, VcpuExit::Intr), Step::Interrupted);
}
