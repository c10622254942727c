//! Scenarios squib-bench cannot measure yet, reported as "not run" with the reason, never
//! as a number: block and network throughput need a guest-side workload (a `dd`/`fio` and
//! `iperf3` runner in the guest kit, and results read back from the guest) that does not
//! exist yet; network also needs a TAP device, which needs `CAP_NET_ADMIN`.

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
    let reason = "no guest-side block workload yet (the guest kit has no dd/fio runner \
                  whose result squib-bench can read back)";
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
        Ok(_) => "no guest-side network workload yet (the guest kit has no iperf3)".to_owned(),
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
