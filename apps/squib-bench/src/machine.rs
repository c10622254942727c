//! A description of the machine a run happened on (CPU count and model, kernel, which KVM),
//! and the run's UTC date, for the report header. Figures from a software hypervisor
//! (`kvm_pvm`) are not comparable with hardware KVM, so the report always says which it was.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

/// The machine under test.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Machine {
    /// CPUs this process may use.
    pub cpus: usize,
    /// `/proc/cpuinfo` model name.
    pub cpu_model: String,
    /// Host kernel release.
    pub kernel: String,
    /// What backs `/dev/kvm`: `kvm_pvm (software hypervisor)`, `kvm_intel`, `kvm_amd`,
    /// `absent` or `unknown`.
    pub kvm: String,
}

impl Machine {
    /// Describes this machine.
    pub fn detect() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        Machine {
            cpus: std::thread::available_parallelism().map_or(0, usize::from),
            cpu_model: cpu_model(&cpuinfo).unwrap_or_else(|| "unknown CPU".to_owned()),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .map_or_else(|_| "unknown".to_owned(), |s| s.trim().to_owned()),
            kvm: kvm_kind(Path::new("/")),
        }
    }
}

/// `true` when `/dev/kvm` is the `kvm_pvm` software hypervisor (guest-kit README).
pub fn is_kvm_pvm() -> bool {
    Path::new("/sys/module/kvm_pvm").exists()
}

fn cpu_model(cpuinfo: &str) -> Option<String> {
    cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_owned())
}

fn kvm_kind(root: &Path) -> String {
    if !root.join("dev/kvm").exists() {
        return "absent".to_owned();
    }
    let module = ["kvm_pvm", "kvm_intel", "kvm_amd"]
        .into_iter()
        .find(|m| root.join("sys/module").join(m).exists());
    match module {
        Some("kvm_pvm") => "kvm_pvm (software hypervisor)".to_owned(),
        Some(m) => m.to_owned(),
        None => "unknown".to_owned(),
    }
}

/// The current UTC time as `YYYY-MM-DD HH:MM:SS UTC`.
pub fn utc_now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    format_utc(secs)
}

/// Formats seconds since the Unix epoch as a UTC date (proleptic Gregorian calendar).
fn format_utc(secs: u64) -> String {
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    // Days to civil date: Howard Hinnant's algorithm, eras of 400 years.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_utc_known_dates() {
        assert_eq!(format_utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(format_utc(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(format_utc(1_798_761_599), "2026-12-31 23:59:59 UTC");
    }

    #[test]
    fn cpu_model_reads_first_model_name() {
        let info = "processor\t: 0\nmodel name\t: AMD EPYC 7B13\nprocessor\t: 1\n";
        assert_eq!(cpu_model(info).as_deref(), Some("AMD EPYC 7B13"));
        assert_eq!(cpu_model("flags: fpu"), None);
    }

    #[test]
    fn kvm_kind_names_the_module() {
        let root = tempfile::tempdir().unwrap();
        assert_eq!(kvm_kind(root.path()), "absent");
        std::fs::create_dir_all(root.path().join("dev")).unwrap();
        std::fs::write(root.path().join("dev/kvm"), "").unwrap();
        assert_eq!(kvm_kind(root.path()), "unknown");
        std::fs::create_dir_all(root.path().join("sys/module/kvm_pvm")).unwrap();
        assert_eq!(kvm_kind(root.path()), "kvm_pvm (software hypervisor)");
    }

    #[test]
    fn detect_fills_every_field() {
        let m = Machine::detect();
        assert!(m.cpus >= 1);
        assert!(!m.kernel.is_empty() && !m.cpu_model.is_empty());
    }
}
