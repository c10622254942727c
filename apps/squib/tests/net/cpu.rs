//! CPU time of a process's threads from `/proc/<pid>/task/*/stat`, split the way the
//! network benchmark reports it: the VMM's event loop (the main thread, which runs the
//! devices) and the vCPU threads (the guest itself); the API and signal threads are left out.

use std::time::Duration;

/// CPU time (user + system) used so far by each group of threads.
#[derive(Debug, Default, Clone, Copy)]
pub struct ThreadCpu {
    pub event_loop: Duration,
    pub vcpus: Duration,
}

impl ThreadCpu {
    /// The CPU used since `earlier`.
    pub fn since(&self, earlier: &ThreadCpu) -> ThreadCpu {
        ThreadCpu {
            event_loop: self.event_loop.saturating_sub(earlier.event_loop),
            vcpus: self.vcpus.saturating_sub(earlier.vcpus),
        }
    }
}

/// `(name, utime + stime in clock ticks)` from one `/proc/.../stat` line.
fn parse_stat(stat: &str) -> Option<(String, u64)> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let name = stat.get(open + 1..close)?.to_owned();
    // Fields after the name start at field 3 (state); utime and stime are fields 14 and 15.
    let mut fields = stat.get(close + 1..)?.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((name, utime + stime))
}

/// The CPU time of `pid`'s threads now (empty when the process is gone).
pub fn thread_cpu(pid: u32) -> ThreadCpu {
    // SAFETY: sysconf(3) takes no pointers.
    let ticks_per_second = u64::try_from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) })
        .unwrap_or(100)
        .max(1);
    let mut cpu = ThreadCpu::default();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return cpu;
    };
    for task in tasks.flatten() {
        let tid = task.file_name().to_string_lossy().into_owned();
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            continue;
        };
        let Some((name, ticks)) = parse_stat(&stat) else {
            continue;
        };
        let time = Duration::from_millis(ticks * 1000 / ticks_per_second);
        if tid == pid.to_string() {
            cpu.event_loop += time;
        } else if name.starts_with("fc_vcpu") {
            cpu.vcpus += time;
        }
    }
    cpu
}

#[test]
fn parse_stat_reads_names_with_spaces_and_the_cpu_fields() {
    let line = "7826 (fc_vcpu 0) R 7770 7770 1 0 -1 4194368 74 0 0 0 63583 17 0 0 20 0 5 0";
    assert_eq!(parse_stat(line), Some(("fc_vcpu 0".to_owned(), 63600)));
    assert_eq!(parse_stat("garbage"), None);
    let gone = thread_cpu(u32::MAX);
    assert_eq!(gone.event_loop + gone.vcpus, Duration::ZERO);
}
