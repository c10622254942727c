//! Process exit codes, Firecracker's `FcExitCode`: launchers act on them.

/// Why the process exits, as the number a launcher sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum FcExitCode {
    /// Clean stop: the guest rebooted (i8042 reset) or powered off through KVM.
    Ok = 0,
    /// A vCPU or the VMM failed (triple fault, unhandled exit, boot failure...).
    GenericError = 1,
    /// An error that should not happen.
    UnexpectedError = 2,
    /// A seccomp filter killed a syscall.
    BadSyscall = 148,
    /// SIGBUS.
    SigBus = 149,
    /// SIGSEGV.
    SigSegv = 150,
    /// SIGXFSZ.
    SigXfsz = 151,
    /// A bad `--level` or other configuration.
    BadConfiguration = 152,
    /// The command line could not be parsed.
    ArgParsing = 153,
    /// SIGXCPU.
    SigXcpu = 154,
    /// SIGHUP.
    SigHup = 156,
    /// SIGILL.
    SigIll = 157,
}

impl FcExitCode {
    /// The numeric process exit code.
    #[must_use]
    pub const fn code(self) -> i32 {
        self as i32
    }
}
