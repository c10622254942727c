//! The command line: which binaries to measure (one, or two to compare A/B), the guest
//! kit's files, which scenarios to run and how many times, and where to write the report.
//!
//! Flags take `--name value` or `--name=value`. Counts given explicitly win over `--quick`,
//! whatever their order.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::output;
use crate::scenario::snapshot;

/// Usage text for `--help`.
pub const USAGE: &str = "\
squib-bench: measure any Firecracker-compatible VMM (start-up, API latency, boot, memory
overhead, churn, snapshots) and write a Markdown + JSON report.

usage: squib-bench [--vmm PATH [--vmm PATH_B]] [options]

  --vmm PATH              binary to measure; give it twice to compare A and B (runs alternate
                          A B A B and the report shows B/A). Default: `squib` next to this binary
  --out FILE              write the Markdown report (with its header) to FILE, as the section
                          between <!-- NAME:begin --> and <!-- NAME:end --> (the rest is kept)
  --section NAME          that section's name (default squib-bench; letters, digits and -)
  --json FILE             write the JSON report to FILE (default: FILE of --out with .json)
  --scenarios LIST        comma-separated subset of: startup,api,boot,churn,block,net,snapshot
  --quick                 few iterations of everything (a smoke run)
  --guest-dir DIR         guest kit directory (default $SQUIB_GUEST_DIR or ~/.cache/squib-guest)
  --kernel FILE           guest kernel (default DIR/vmlinux)
  --initrd FILE           initramfs (default DIR/initramfs.cpio)
  --rootfs FILE           boot from this ext4 root drive instead of the initramfs
  --boot-args ARGS        guest kernel command line (default: serial off, as Firecracker measures;
                          the snapshot scenario's default has the console on and a guest that
                          prints without pause)
  --iterations N          start-up runs per binary (default 20, quick 5)
  --api-requests N        requests per API figure per binary (default 1000, quick 200)
  --boot-iterations N     boots per configuration per binary (default 3, quick 1)
  --boot-timeout SECS     time a boot may take (default 600)
  --churn-seconds SECS    length of one churn window (default 10, quick 3)
  --churn-rounds N        churn windows per binary (default 3, quick 1)
  --snapshot-mem LIST     guest sizes (MiB) for the snapshot scenario: 128,1024 (default
                          both, quick 128); one boot per binary per size
  --snapshot-rounds N     load-measure-save rounds per binary per size (default 3, quick 1)
  --help                  this text
";

/// Flags that take a value.
const VALUE_FLAGS: [&str; 18] = [
    "--vmm",
    "--guest-dir",
    "--kernel",
    "--initrd",
    "--rootfs",
    "--boot-args",
    "--scenarios",
    "--iterations",
    "--api-requests",
    "--boot-iterations",
    "--boot-timeout",
    "--churn-seconds",
    "--churn-rounds",
    "--snapshot-mem",
    "--snapshot-rounds",
    "--section",
    "--out",
    "--json",
];

/// A scenario that can be selected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    /// exec → API answering.
    Startup,
    /// `GET /` and `PUT /machine-config` latency.
    Api,
    /// Boot time, memory overhead and reported start-up time.
    Boot,
    /// microVMs started and torn down per second.
    Churn,
    /// Block throughput.
    Block,
    /// Network throughput.
    Net,
    /// Snapshot create and restore latency, restored memory overhead.
    Snapshot,
}

impl Scenario {
    /// Every scenario, in report order.
    pub const ALL: [Scenario; 7] = [
        Scenario::Startup,
        Scenario::Api,
        Scenario::Boot,
        Scenario::Churn,
        Scenario::Block,
        Scenario::Net,
        Scenario::Snapshot,
    ];

    /// The scenarios' names on the command line, in [`Scenario::ALL`] order.
    const NAMES: [&'static str; 7] = [
        "startup", "api", "boot", "churn", "block", "net", "snapshot",
    ];

    /// Its name on the command line.
    pub fn name(self) -> &'static str {
        let i = Scenario::ALL.iter().position(|s| *s == self).unwrap_or(0);
        Scenario::NAMES[i]
    }

    fn parse(name: &str) -> Option<Scenario> {
        Scenario::NAMES
            .iter()
            .position(|n| *n == name)
            .map(|i| Scenario::ALL[i])
    }
}

/// Errors in the command line.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum CliError {
    /// A flag nobody knows.
    #[error("unknown argument {0:?} (see --help)")]
    Unknown(String),
    /// A flag without its value.
    #[error("{0} needs a value")]
    MissingValue(String),
    /// A value that does not parse.
    #[error("bad value {value:?} for {flag}")]
    BadValue {
        /// The flag.
        flag: String,
        /// The value given.
        value: String,
    },
    /// More than two `--vmm`.
    #[error("at most two --vmm binaries can be compared")]
    TooManyBinaries,
    /// `--help` was asked for.
    #[error("help requested")]
    Help,
}

/// Everything a run needs.
#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    /// A, and B when comparing.
    pub binaries: Vec<PathBuf>,
    /// Guest kernel.
    pub kernel: PathBuf,
    /// Guest initramfs.
    pub initrd: PathBuf,
    /// Root drive instead of the initramfs.
    pub rootfs: Option<PathBuf>,
    /// Kernel command line override.
    pub boot_args: Option<String>,
    /// Scenarios to run.
    pub scenarios: Vec<Scenario>,
    /// Start-up runs per binary.
    pub startup_iterations: usize,
    /// Requests per API figure per binary.
    pub api_requests: usize,
    /// Boots per configuration per binary.
    pub boot_iterations: usize,
    /// Time one boot may take.
    pub boot_timeout: Duration,
    /// One churn window.
    pub churn_window: Duration,
    /// Churn windows per binary.
    pub churn_rounds: usize,
    /// Guest sizes (MiB) of the snapshot scenario.
    pub snapshot_mem: Vec<u64>,
    /// Measured snapshot rounds per binary per size.
    pub snapshot_rounds: usize,
    /// Name of the `--out` file's section.
    pub section: String,
    /// Markdown output.
    pub out: Option<PathBuf>,
    /// JSON output.
    pub json: Option<PathBuf>,
}

/// Parses the arguments (without the program name).
pub fn parse(args: &[String]) -> Result<Options, CliError> {
    let mut raw = Raw::default();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f, Some(v.to_owned())),
            _ => (arg.as_str(), None),
        };
        match flag {
            "--help" | "-h" => return Err(CliError::Help),
            "--quick" => raw.quick = true,
            _ if !VALUE_FLAGS.contains(&flag) => return Err(CliError::Unknown(flag.to_owned())),
            _ => {
                let value = match inline {
                    Some(v) => v,
                    None => it
                        .next()
                        .cloned()
                        .ok_or_else(|| CliError::MissingValue(flag.to_owned()))?,
                };
                raw.set(flag, value)?;
            }
        }
    }
    raw.finish()
}

#[derive(Default)]
struct Raw {
    quick: bool,
    binaries: Vec<PathBuf>,
    guest_dir: Option<PathBuf>,
    kernel: Option<PathBuf>,
    initrd: Option<PathBuf>,
    rootfs: Option<PathBuf>,
    boot_args: Option<String>,
    scenarios: Option<Vec<Scenario>>,
    iterations: Option<usize>,
    api_requests: Option<usize>,
    boot_iterations: Option<usize>,
    boot_timeout: Option<f64>,
    churn_seconds: Option<f64>,
    churn_rounds: Option<usize>,
    snapshot_mem: Option<Vec<u64>>,
    snapshot_rounds: Option<usize>,
    section: Option<String>,
    out: Option<PathBuf>,
    json: Option<PathBuf>,
}

impl Raw {
    fn set(&mut self, flag: &str, value: String) -> Result<(), CliError> {
        let bad = || CliError::BadValue {
            flag: flag.to_owned(),
            value: value.clone(),
        };
        let count = || {
            value
                .parse::<usize>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(bad)
        };
        let secs = || {
            value
                .parse::<f64>()
                .ok()
                .filter(|s| *s > 0.0 && s.is_finite())
                .ok_or_else(bad)
        };
        match flag {
            "--vmm" if self.binaries.len() == 2 => return Err(CliError::TooManyBinaries),
            "--vmm" => self.binaries.push(PathBuf::from(&value)),
            "--guest-dir" => self.guest_dir = Some(PathBuf::from(&value)),
            "--kernel" => self.kernel = Some(PathBuf::from(&value)),
            "--initrd" => self.initrd = Some(PathBuf::from(&value)),
            "--rootfs" => self.rootfs = Some(PathBuf::from(&value)),
            "--boot-args" => self.boot_args = Some(value.clone()),
            "--scenarios" => {
                let list: Option<Vec<Scenario>> = value.split(',').map(Scenario::parse).collect();
                self.scenarios = Some(list.filter(|l| !l.is_empty()).ok_or_else(bad)?);
            }
            "--iterations" => self.iterations = Some(count()?),
            "--api-requests" => self.api_requests = Some(count()?),
            "--boot-iterations" => self.boot_iterations = Some(count()?),
            "--boot-timeout" => self.boot_timeout = Some(secs()?),
            "--churn-seconds" => self.churn_seconds = Some(secs()?),
            "--churn-rounds" => self.churn_rounds = Some(count()?),
            "--snapshot-rounds" => self.snapshot_rounds = Some(count()?),
            "--snapshot-mem" => {
                let sizes: Option<Vec<u64>> = value
                    .split(',')
                    .map(|v| v.parse().ok().filter(|m| snapshot::size(*m).is_some()))
                    .collect();
                self.snapshot_mem = Some(sizes.ok_or_else(bad)?);
            }
            "--section" => {
                let ok = !value.is_empty()
                    && value.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
                self.section = Some(ok.then(|| value.clone()).ok_or_else(bad)?);
            }
            "--out" => self.out = Some(PathBuf::from(&value)),
            "--json" => self.json = Some(PathBuf::from(&value)),
            _ => return Err(CliError::Unknown(flag.to_owned())),
        }
        Ok(())
    }

    fn finish(self) -> Result<Options, CliError> {
        let q = self.quick;
        let dir = self.guest_dir.unwrap_or_else(default_guest_dir);
        let binaries = if self.binaries.is_empty() {
            vec![default_binary()]
        } else {
            self.binaries
        };
        let json = self
            .json
            .or_else(|| self.out.as_ref().map(|o| o.with_extension("json")));
        Ok(Options {
            binaries,
            kernel: self.kernel.unwrap_or_else(|| dir.join("vmlinux")),
            initrd: self.initrd.unwrap_or_else(|| dir.join("initramfs.cpio")),
            rootfs: self.rootfs,
            boot_args: self.boot_args,
            scenarios: self.scenarios.unwrap_or_else(|| Scenario::ALL.to_vec()),
            startup_iterations: self.iterations.unwrap_or(if q { 5 } else { 20 }),
            api_requests: self.api_requests.unwrap_or(if q { 200 } else { 1000 }),
            boot_iterations: self.boot_iterations.unwrap_or(if q { 1 } else { 3 }),
            boot_timeout: Duration::from_secs_f64(self.boot_timeout.unwrap_or(600.0)),
            churn_window: Duration::from_secs_f64(self.churn_seconds.unwrap_or(if q {
                3.0
            } else {
                10.0
            })),
            churn_rounds: self.churn_rounds.unwrap_or(if q { 1 } else { 3 }),
            snapshot_mem: self.snapshot_mem.unwrap_or_else(|| {
                let all = snapshot::SIZES.map(|s| s.mem_mib);
                all[..if q { 1 } else { all.len() }].to_vec()
            }),
            snapshot_rounds: self.snapshot_rounds.unwrap_or(if q { 1 } else { 3 }),
            section: self
                .section
                .unwrap_or_else(|| output::DEFAULT_SECTION.to_owned()),
            out: self.out,
            json,
        })
    }
}

/// `$SQUIB_GUEST_DIR`, else `~/.cache/squib-guest` (where `scripts/guest/build.sh` puts it).
fn default_guest_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("SQUIB_GUEST_DIR") {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
    Path::new(&home).join(".cache/squib-guest")
}

/// `squib` in this binary's directory (`target/<profile>/`), the squib just built.
fn default_binary() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|d| d.join("squib")))
        .unwrap_or_else(|| PathBuf::from("squib"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn defaults_measure_one_squib_with_every_scenario() {
        let o = parse(&[]).unwrap();
        assert_eq!(o.binaries.len(), 1);
        assert!(o.binaries[0].ends_with("squib"));
        assert_eq!(o.scenarios, Scenario::ALL.to_vec());
        assert_eq!((o.startup_iterations, o.boot_iterations), (20, 3));
        assert!(o.kernel.ends_with("vmlinux") && o.initrd.ends_with("initramfs.cpio"));
        assert_eq!((o.out, o.json), (None, None));
    }

    #[test]
    fn two_binaries_and_no_more() {
        let o = parse(&args(&["--vmm", "/a", "--vmm=/b"])).unwrap();
        assert_eq!(o.binaries, vec![PathBuf::from("/a"), PathBuf::from("/b")]);
        let err = parse(&args(&["--vmm", "/a", "--vmm", "/b", "--vmm", "/c"]));
        assert_eq!(err, Err(CliError::TooManyBinaries));
    }

    #[test]
    fn explicit_counts_win_over_quick_in_any_order() {
        let o = parse(&args(&["--boot-iterations", "4", "--quick"])).unwrap();
        assert_eq!((o.boot_iterations, o.startup_iterations), (4, 5));
        assert_eq!(o.churn_window, Duration::from_secs(3));
    }

    #[test]
    fn out_implies_json_beside_it() {
        let o = parse(&args(&["--out", "BENCHMARKS.md"])).unwrap();
        assert_eq!(o.json, Some(PathBuf::from("BENCHMARKS.json")));
        let o = parse(&args(&["--out", "a.md", "--json", "b.json"])).unwrap();
        assert_eq!(o.json, Some(PathBuf::from("b.json")));
    }

    #[test]
    fn snapshot_sizes_rounds_and_section() {
        let o = parse(&[]).unwrap();
        assert_eq!((o.snapshot_mem, o.snapshot_rounds), (vec![128, 1024], 3));
        assert_eq!(o.section, output::DEFAULT_SECTION);
        let o = parse(&args(&["--quick"])).unwrap();
        assert_eq!((o.snapshot_mem, o.snapshot_rounds), (vec![128], 1));
        let o = parse(&args(&[
            "--snapshot-mem=1024",
            "--snapshot-rounds",
            "5",
            "--section",
            "snapshot-1",
        ]))
        .unwrap();
        assert_eq!((o.snapshot_mem, o.snapshot_rounds), (vec![1024], 5));
        assert_eq!(o.section, "snapshot-1");
        for bad in [
            ["--snapshot-mem", "512"],
            ["--snapshot-mem", "128,"],
            ["--section", "a b"],
            ["--section", ""],
            ["--snapshot-rounds", "0"],
        ] {
            assert!(
                matches!(parse(&args(&bad)), Err(CliError::BadValue { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn scenarios_subset_and_rejections() {
        let o = parse(&args(&["--scenarios", "api,startup"])).unwrap();
        assert_eq!(o.scenarios, vec![Scenario::Api, Scenario::Startup]);
        assert!(matches!(
            parse(&args(&["--scenarios", "api,fast"])),
            Err(CliError::BadValue { .. })
        ));
        assert!(matches!(
            parse(&args(&["--iterations", "0"])),
            Err(CliError::BadValue { .. })
        ));
        assert!(matches!(
            parse(&args(&["--boot-timeout", "nan"])),
            Err(CliError::BadValue { .. })
        ));
        assert_eq!(
            parse(&args(&["--kernel"])),
            Err(CliError::MissingValue("--kernel".to_owned()))
        );
        assert_eq!(
            parse(&args(&["--fast"])),
            Err(CliError::Unknown("--fast".to_owned()))
        );
        assert_eq!(parse(&args(&["--help"])), Err(CliError::Help));
    }
}
