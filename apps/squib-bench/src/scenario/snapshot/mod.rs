//! Snapshots: how long a VMM takes to save a running guest and to bring one back in a new
//! process, and what a restored VMM costs in memory, for each guest size.
//!
//! Guest boots cost tens of CPU seconds on `kvm_pvm`, so each binary boots ONE guest per
//! size (round 0, not measured), pauses it, saves a Full base snapshot and exits. Every
//! later round, in fresh processes:
//! 1. `PUT /snapshot/load` of the base snapshot (memory file mapped, `resume_vm`), timed to
//!    its 204 and to the guest's first new console byte (the guest prints continuously);
//! 2. after one second of guest run: the VMM's memory overhead (smaps) and the load time the
//!    VMM reports in its metrics (`latencies_us.vmm_load_snapshot`, else `load_snapshot`);
//! 3. pause, `PUT /snapshot/create` Full (timed), resume, one second of guest run, pause,
//!    `PUT /snapshot/create` Diff (timed), exit;
//! 4. that Full snapshot of a restored guest is loaded in one more process (timed to its
//!    204, and the guest must print a whole line), which shows a restored guest can be
//!    saved and restored again.
//!
//! Rounds alternate binaries (A B A B), and only one guest runs at a time. A VMM that
//! refuses a request (a Diff it does not support yet) makes that figure "not run" with its
//! `fault_message`, never a number.

mod console;
mod replies;
mod series;

use std::path::Path;

use super::{alternate, boot};
use crate::report::{Figure, FigureDef};
use series::Series;

/// The guest's pause between two tick lines (`squib.tick_period`, seconds): none, so a
/// restored guest's first output comes as soon as it runs, wherever it was paused.
pub const TICK_PERIOD: &str = "0";

/// What the report says about this scenario's method (a paragraph of its header).
pub const METHOD: &str = "\
Snapshot figures: each binary boots one 1-vCPU guest per size with the serial console on
and the guest kit's `squib.action=tick squib.tick_period=0` (its shell prints tick lines
without pause), saves it (Full, the base snapshot) and exits. Then every round, in new
processes, loads the base snapshot (`mem_backend` File, `resume_vm: true`), measures, saves
the restored guest (Full, then Diff after one more second of guest run), exits, and loads
that Full snapshot in one more process (*reload*). Rounds alternate A B A B; one guest runs
at a time. *load* is `PUT /snapshot/load` to its 204; *first output* is from the same
request to the first new byte on the restored process's stdout (the serial console): the
restore, the resume, and the rest of the guest's current turn of its print loop (on
`kvm_pvm`, where guest code is emulated, a turn takes about 40 ms; every round restores the
same point of it); *memory overhead* is the restored VMM's RSS outside guest-memory-sized
mappings, one second after the resume. Dirty-page tracking is asked for at boot and load
(`track_dirty_pages`) and left off where the VMM refuses it. Create times include the VMM's
`fsync` of both files, so they follow the disk.
";

/// One guest size and its figures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotSize {
    /// Guest memory.
    pub mem_mib: u64,
    /// The figures, in [`keys`] order.
    pub figures: [FigureDef; 7],
}

/// The sizes that can be measured.
pub const SIZES: [SnapshotSize; 2] = [
    SnapshotSize {
        mem_mib: 128,
        figures: figures("snapshot 1 vCPU/128 MiB"),
    },
    SnapshotSize {
        mem_mib: 1024,
        figures: figures("snapshot 1 vCPU/1024 MiB"),
    },
];

/// The figures' keys, shared by every size (each size is its own scenario).
pub mod keys {
    /// `PUT /snapshot/create` Full.
    pub const CREATE_FULL: &str = "create_full_ms";
    /// `PUT /snapshot/create` Diff.
    pub const CREATE_DIFF: &str = "create_diff_ms";
    /// `PUT /snapshot/load` to its 204.
    pub const LOAD: &str = "load_ms";
    /// The load as the VMM reports it in its metrics.
    pub const LOAD_REPORTED: &str = "load_reported_us";
    /// Load request to the first new console line.
    pub const FIRST_OUTPUT: &str = "first_output_ms";
    /// Restored VMM's memory overhead.
    pub const OVERHEAD: &str = "restored_overhead_kib";
    /// Load of a snapshot taken from a restored guest.
    pub const RELOAD: &str = "reload_ms";
    /// Every key, in figure order.
    pub const ALL: [&str; 7] = [
        CREATE_FULL,
        CREATE_DIFF,
        LOAD,
        LOAD_REPORTED,
        FIRST_OUTPUT,
        OVERHEAD,
        RELOAD,
    ];
}

const fn def(
    scenario: &'static str,
    i: usize,
    label: &'static str,
    unit: &'static str,
) -> FigureDef {
    FigureDef {
        scenario,
        key: keys::ALL[i],
        label,
        unit,
    }
}

const fn figures(scenario: &'static str) -> [FigureDef; 7] {
    let s = scenario;
    [
        def(s, 0, "create Full (restored guest, paused)", "ms"),
        def(s, 1, "create Diff (after 1 s more of guest run)", "ms"),
        def(s, 2, "load (File, resume_vm) to its 204", "ms"),
        def(
            s,
            3,
            "load as the VMM times it (metrics: vmm_load_snapshot, else load_snapshot)",
            "us",
        ),
        def(
            s,
            4,
            "load request to first guest console byte after resume",
            "ms",
        ),
        def(
            s,
            5,
            "VMM memory overhead while restored (smaps RSS)",
            "KiB",
        ),
        def(
            s,
            6,
            "reload: load of a Full snapshot of a restored guest, to its 204",
            "ms",
        ),
    ]
}

/// The size measured for `mem_mib`, if it is one of [`SIZES`].
pub fn size(mem_mib: u64) -> Option<SnapshotSize> {
    SIZES.into_iter().find(|s| s.mem_mib == mem_mib)
}

/// The snapshot guest's command line: Firecracker's, serial console on (quietly: every
/// console byte is a VM exit), plus what this host needs and the print loop.
pub fn default_boot_args(kvm_pvm: bool) -> String {
    format!(
        "console=ttyS0 quiet {} squib.action=tick squib.tick_period={TICK_PERIOD}",
        boot::host_args(kvm_pvm)
    )
}

/// Every figure of `sizes`: `rounds` measured rounds per binary per size, after one boot.
/// With `problem` (no KVM, no guest kit) every figure is "not run" with it.
pub fn figures_for(
    binaries: &[&Path],
    guest: &boot::Guest,
    sizes: &[SnapshotSize],
    rounds: usize,
    problem: Option<&str>,
) -> Vec<Figure> {
    let mut out = Vec::new();
    for size in sizes {
        if let Some(p) = problem {
            out.extend(size.figures.map(|d| Figure::not_run(d, binaries.len(), p)));
            continue;
        }
        let mut series: Vec<Series> = binaries.iter().map(|_| Series::new(*size)).collect();
        // Round 0 boots each binary's guest and takes its base snapshot: no figure.
        out.extend(alternate(&size.figures, binaries, rounds + 1, |b, r| {
            let id = format!("bench-snap{}-{}-{r}", size.mem_mib, ["a", "b"][b.min(1)]);
            match (series.get_mut(b), r) {
                (None, _) => Err("no series for this binary".to_owned()),
                (Some(s), 0) => s.start(binaries[b], &id, guest).map(|()| Vec::new()),
                (Some(s), _) => s.round(binaries[b], &id),
            }
        }));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_have_distinct_scenarios_and_every_key() {
        assert_ne!(SIZES[0].figures[0].scenario, SIZES[1].figures[0].scenario);
        for s in SIZES {
            let keys: Vec<&str> = s.figures.iter().map(|f| f.key).collect();
            assert_eq!(keys, keys::ALL.to_vec());
        }
        assert_eq!(size(1024).map(|s| s.mem_mib), Some(1024));
        assert_eq!(size(512), None);
    }

    #[test]
    fn boot_args_turn_the_console_on_with_the_print_loop() {
        let args = default_boot_args(true);
        assert!(args.starts_with("console=ttyS0 "), "{args}");
        assert!(!args.contains("8250.nr_uarts=0"), "{args}");
        assert!(args.contains("noxsave"), "{args}");
        assert!(
            args.ends_with("squib.action=tick squib.tick_period=0"),
            "{args}"
        );
        assert!(!default_boot_args(false).contains("noxsave"));
    }

    #[test]
    fn without_a_guest_every_figure_is_not_run_with_the_reason() {
        let guest = boot::Guest {
            kernel: "/k".into(),
            initrd: "/i".into(),
            rootfs: None,
            boot_args: String::new(),
            timeout: std::time::Duration::from_secs(1),
        };
        let bins = [Path::new("/a"), Path::new("/b")];
        let figs = figures_for(&bins, &guest, &SIZES, 3, Some("no kit"));
        assert_eq!(figs.len(), 14);
        assert!(figs.iter().all(|f| f.outcomes.len() == 2
            && f.outcomes.iter().all(|o| matches!(
                o,
                crate::report::Outcome::NotRun { reason } if reason == "no kit"
            ))));
    }
}
