//! The CPUID leaves that describe the guest's topology: one package of `vcpu_count` vCPUs,
//! one thread per core, or two with SMT. APIC ids are the vCPU indices, so with SMT a core's
//! two threads are ids `2n` and `2n + 1`.
//!
//! - Intel leaf 4 (deterministic cache parameters): cores per package and threads sharing
//!   each cache (L1/L2 per core, L3 per package).
//! - Intel leaves 0xB and 0x1F (extended topology): the SMT and core levels, with the x2APIC
//!   id in EDX of every subleaf.
//! - AMD leaf 0x8000_0008 ECX: thread count and APIC id size; leaf 0x8000_001E: extended
//!   APIC id, core id and threads per core.

use kvm_bindings::kvm_cpuid_entry2;

use super::{CpuidConfig, Vendor};

/// Leaf 0xB/0x1F level types.
const LEVEL_TYPE_SMT: u32 = 1;
const LEVEL_TYPE_CORE: u32 = 2;

/// Normalises `entry` if it is one of the topology leaves for `vendor`.
pub fn normalize(entry: &mut kvm_cpuid_entry2, vendor: Vendor, cfg: &CpuidConfig) {
    let topo = Topology::new(cfg);
    match (entry.function, vendor) {
        (0x4, Vendor::Intel) => cache_leaf(entry, &topo),
        (0xb | 0x1f, Vendor::Intel) => extended_topology_leaf(entry, &topo),
        (0x8000_0008, Vendor::Amd) => amd_size_leaf(entry, &topo),
        (0x8000_001e, Vendor::Amd) => amd_ext_apic_leaf(entry, &topo),
        _ => {}
    }
}

/// The topology numbers the leaves are computed from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Topology {
    /// This vCPU's APIC id.
    pub apic_id: u32,
    /// vCPUs in the package.
    pub vcpus: u32,
    /// Threads per core (1 or 2).
    pub threads_per_core: u32,
    /// Cores in the package.
    pub cores: u32,
}

impl Topology {
    /// The topology of `cfg`: SMT only means two threads per core with more than one vCPU.
    pub fn new(cfg: &CpuidConfig) -> Self {
        let vcpus = u32::from(cfg.vcpu_count.max(1));
        let threads_per_core = if cfg.smt && vcpus > 1 { 2 } else { 1 };
        Self {
            apic_id: u32::from(cfg.vcpu_index),
            vcpus,
            threads_per_core,
            cores: vcpus.div_ceil(threads_per_core),
        }
    }

    /// APIC id bits that select the thread within a core.
    pub fn thread_bits(&self) -> u32 {
        bits_for(self.threads_per_core)
    }

    /// APIC id bits that select the vCPU within the package.
    pub fn package_bits(&self) -> u32 {
        bits_for(self.vcpus).max(self.thread_bits())
    }
}

/// Number of bits needed to number `n` items (ceil(log2(n))).
pub fn bits_for(n: u32) -> u32 {
    if n <= 1 {
        0
    } else {
        u32::BITS - (n - 1).leading_zeros()
    }
}

/// Intel leaf 4: EAX[31:26] = cores - 1, EAX[25:14] = threads sharing the cache - 1.
fn cache_leaf(entry: &mut kvm_cpuid_entry2, topo: &Topology) {
    if entry.eax & 0x1f == 0 {
        return; // no more caches
    }
    let level = (entry.eax >> 5) & 0x7;
    let sharing = if level >= 3 {
        topo.vcpus
    } else {
        topo.threads_per_core
    };
    let cores = topo.cores.min(64);
    entry.eax = (entry.eax & 0x3fff) | ((sharing - 1).min(0xfff) << 14) | ((cores - 1) << 26);
}

/// Intel leaves 0xB/0x1F: subleaf 0 = SMT level, subleaf 1 = core level, then invalid.
fn extended_topology_leaf(entry: &mut kvm_cpuid_entry2, topo: &Topology) {
    let subleaf = entry.index;
    let (eax, ebx, level_type) = match subleaf {
        0 => (topo.thread_bits(), topo.threads_per_core, LEVEL_TYPE_SMT),
        1 => (topo.package_bits(), topo.vcpus, LEVEL_TYPE_CORE),
        _ => (0, 0, 0),
    };
    entry.eax = eax;
    entry.ebx = ebx;
    entry.ecx = (level_type << 8) | (subleaf & 0xff);
    entry.edx = topo.apic_id;
}

/// AMD leaf 0x8000_0008 ECX: [7:0] threads - 1, [15:12] APIC id bits.
fn amd_size_leaf(entry: &mut kvm_cpuid_entry2, topo: &Topology) {
    entry.ecx = (entry.ecx & !0xf0ff) | (topo.package_bits() << 12) | (topo.vcpus - 1);
}

/// AMD leaf 0x8000_001E: extended APIC id, core id, threads per core, one node.
fn amd_ext_apic_leaf(entry: &mut kvm_cpuid_entry2, topo: &Topology) {
    entry.eax = topo.apic_id;
    entry.ebx = ((topo.threads_per_core - 1) << 8) | (topo.apic_id >> topo.thread_bits());
    entry.ecx = 0;
    entry.edx = 0;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(vcpu_index: u8, vcpu_count: u8, smt: bool) -> CpuidConfig {
        CpuidConfig {
            vcpu_index,
            vcpu_count,
            smt,
            hide_pvm_unsupported: false,
        }
    }

    fn leaf(function: u32, index: u32, eax: u32) -> kvm_cpuid_entry2 {
        kvm_cpuid_entry2 {
            function,
            index,
            eax,
            ..Default::default()
        }
    }

    #[test]
    fn bits_for_rounds_up() {
        let got: Vec<u32> = [0, 1, 2, 3, 4, 5, 8, 9, 254].map(bits_for).to_vec();
        assert_eq!(got, vec![0, 0, 1, 2, 2, 3, 3, 4, 8]);
    }

    #[test]
    fn smt_pairs_threads_only_with_more_than_one_vcpu() {
        assert_eq!(Topology::new(&cfg(0, 1, true)).threads_per_core, 1);
        let t = Topology::new(&cfg(3, 4, true));
        assert_eq!((t.threads_per_core, t.cores, t.apic_id), (2, 2, 3));
        assert_eq!((t.thread_bits(), t.package_bits()), (1, 2));
    }

    #[test]
    fn leaf_0xb_describes_smt_and_core_levels() {
        let c = cfg(2, 4, true);
        let mut smt = leaf(0xb, 0, 0);
        let mut core = leaf(0xb, 1, 0);
        let mut end = leaf(0x1f, 2, 7);
        for e in [&mut smt, &mut core, &mut end] {
            normalize(e, Vendor::Intel, &c);
        }
        assert_eq!((smt.eax, smt.ebx, smt.ecx, smt.edx), (1, 2, 0x100, 2));
        assert_eq!((core.eax, core.ebx, core.ecx, core.edx), (2, 4, 0x201, 2));
        assert_eq!((end.eax, end.ebx, end.ecx, end.edx), (0, 0, 2, 2));
    }

    #[test]
    fn leaf_4_counts_cores_and_sharing_threads() {
        let c = cfg(0, 4, false);
        // L1 data cache (type 1, level 1) and L3 (type 3, level 3), with junk in the counts.
        let mut l1 = leaf(4, 0, 0xfc00_4121);
        let mut l3 = leaf(4, 3, 0xfc00_4163);
        let mut none = leaf(4, 4, 0);
        for e in [&mut l1, &mut l3, &mut none] {
            normalize(e, Vendor::Intel, &c);
        }
        assert_eq!(l1.eax, (3 << 26) | 0x121);
        assert_eq!(l3.eax, (3 << 26) | (3 << 14) | 0x163);
        assert_eq!(none.eax, 0);
    }

    #[test]
    fn amd_leaves_describe_threads_and_core_ids() {
        let c = cfg(3, 4, true);
        let mut size = leaf(0x8000_0008, 0, 0x3030);
        size.ecx = 0x0001_f07f;
        let mut ext = leaf(0x8000_001e, 0, 0);
        ext.ecx = 0x0300;
        normalize(&mut size, Vendor::Amd, &c);
        normalize(&mut ext, Vendor::Amd, &c);
        assert_eq!(size.ecx, 0x0001_2003);
        assert_eq!(size.eax, 0x3030);
        assert_eq!((ext.eax, ext.ebx, ext.ecx), (3, 0x101, 0));
    }

    #[test]
    fn intel_leaves_are_left_alone_on_amd_and_vice_versa() {
        let c = cfg(1, 2, false);
        let mut intel = leaf(0xb, 0, 0x55);
        normalize(&mut intel, Vendor::Amd, &c);
        assert_eq!(intel.eax, 0x55);
        let mut amd = leaf(0x8000_001e, 0, 0x55);
        normalize(&mut amd, Vendor::Intel, &c);
        assert_eq!(amd.eax, 0x55);
    }
}
