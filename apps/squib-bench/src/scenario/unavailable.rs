//! Scenarios squib-bench does not measure, reported as "not run" with the reason, never as
//! a number: guest block and network throughput are measured by the guest benchmarks
//! `scripts/bench/block.sh` and `scripts/bench/net.sh` (ignored tests of `apps/squib`
//! that drive the guest init's `blk-bench` and `net` actions), which write their own
//! sections of `BENCHMARKS.md`; squib-bench does not run guest workloads itself yet.
//! Network also needs a TAP device, which needs `CAP_NET_ADMIN`.

use std::fs::OpenOptions;

use crate::report::{Figure, FigureDef};

/// Block throughput figures.
pub const BLOCK: [FigureDef; 2] = [
    FigureDef {
        scenario: "block",
        key: "block_read_mib_s",
        label: "sequential read, with host CPU",
        unit: "MiB/s",
    },
    FigureDef {
        scenario: "block",
        key: "block_write_mib_s",
        label: "sequential write, with host CPU",
        unit: "MiB/s",
    },
];

/// Network throughput figures.
pub const NET: [FigureDef; 2] = [
    FigureDef {
        scenario: "net",
        key: "net_rx_gbit_s",
        label: "host to guest TCP, with host CPU",
        unit: "Gbit/s",
    },
    FigureDef {
        scenario: "net",
        key: "net_tx_gbit_s",
        label: "guest to host TCP, with host CPU",
        unit: "Gbit/s",
    },
];

/// The block figures, not run.
pub fn block(binaries: usize) -> Vec<Figure> {
    let reason = "measured by scripts/bench/block.sh (section Block I/O), not by squib-bench";
    BLOCK
        .iter()
        .map(|d| Figure::not_run(*d, binaries, reason))
        .collect()
}

/// The network figures, not run, with the TAP check's result when it fails.
pub fn net(binaries: usize) -> Vec<Figure> {
    let reason = match OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")
    {
        Err(e) => format!("no TAP permission: cannot open /dev/net/tun: {e}"),
        Ok(_) => "measured by scripts/bench/net.sh (section Network and MMDS), not by squib-bench"
            .to_owned(),
    };
    NET.iter()
        .map(|d| Figure::not_run(*d, binaries, &reason))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::Outcome;

    #[test]
    fn unavailable_figures_carry_a_reason_for_each_binary() {
        for fig in block(2).into_iter().chain(net(2)) {
            assert_eq!(fig.outcomes.len(), 2);
            for o in &fig.outcomes {
                let Outcome::NotRun { reason } = o else {
                    panic!("{} must not be measured", fig.def.key);
                };
                assert!(!reason.is_empty());
            }
        }
    }
}
