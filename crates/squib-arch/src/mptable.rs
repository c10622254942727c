//! The Intel MultiProcessor (MP 1.4) table, for kernels that do not read ACPI.
//!
//! A kernel built without ACPI (or booted with `acpi=off`) finds its vCPUs and the I/O APIC
//! only through this table, and routes the legacy ISA interrupts through the I/O APIC only if
//! the table lists them. Following Firecracker (`arch/x86_64/mptable.rs`) it holds:
//! one processor entry per vCPU (APIC id = vCPU index, vCPU 0 is the bootstrap processor),
//! one ISA bus, one I/O APIC with id `num_cpus + 1`, one I/O interrupt entry per ISA IRQ
//! `0..=23` (identity-mapped to the same I/O APIC pin) and the two local interrupts
//! (LINT0 = ExtINT, LINT1 = NMI).
//!
//! Placement: the 16-byte MP floating pointer sits at [`MPTABLE_START`] (the first byte of the
//! reserved "system memory" area, inside the last KiB of base memory where Linux scans for
//! `_MP_`), and the configuration table follows it immediately. The table never grows past
//! [`MPTABLE_MAX_SIZE`] bytes, so the ACPI tables (see [`crate::acpi`]) start after that.
//!
//! The entries are serialised field by field in little-endian order (no `unsafe`
//! `ByteValued` casts); each entry's length is fixed by the MP spec and pinned by a test.

use vm_memory::{Bytes, GuestAddress, GuestMemoryError};

use crate::layout::{APIC_ADDR, IOAPIC_ADDR, LAST_GSI, SYSTEM_MEM_START};
use crate::memory::GuestMemoryMmap;

/// Where the MP floating pointer goes: the first byte of the reserved system-memory area.
pub const MPTABLE_START: u64 = SYSTEM_MEM_START;
/// [`MPTABLE_START`] as the 32-bit physical address the floating pointer stores.
const MPTABLE_BASE: u32 = MPTABLE_START as u32;

/// Most vCPUs the table can describe: APIC ids are 8 bits, 0xff is the broadcast id and the
/// I/O APIC takes id `num_cpus + 1`.
pub const MAX_CPUS: u8 = 254;

/// Highest ISA/legacy IRQ routed through the I/O APIC (its 24 pins are 0..=23).
const IRQ_MAX: u8 = LAST_GSI as u8;

/// Where the local APICs are mapped (the architectural default).
const APIC_DEFAULT_PHYS_BASE: u32 = APIC_ADDR as u32;
/// Where the I/O APIC is mapped.
const IO_APIC_DEFAULT_PHYS_BASE: u32 = IOAPIC_ADDR as u32;

// The casts above are exact: the table stores 32-bit addresses and 8-bit IRQs.
const _: () = assert!(MPTABLE_START < 1 << 32 && APIC_ADDR < 1 << 32 && IOAPIC_ADDR < 1 << 32);
const _: () = assert!(LAST_GSI < 255);

/// Local APIC version reported for the vCPUs (integrated APIC).
const APIC_VERSION: u8 = 0x14;
/// CPU signature: family 6 (Firecracker's `CPU_STEPPING`).
const CPU_STEPPING: u32 = 0x600;
/// CPUID.1:EDX feature bits reported per processor: APIC and FPU.
const CPU_FEATURE_APIC: u32 = 0x200;
const CPU_FEATURE_FPU: u32 = 0x001;

/// MP spec revision 1.4.
const MP_SPEC_REV: u8 = 4;
const MP_FLOATING_SIGNATURE: [u8; 4] = *b"_MP_";
const MP_CONFIG_SIGNATURE: [u8; 4] = *b"PCMP";
const OEM_ID: [u8; 8] = *b"FC      ";
const PRODUCT_ID: [u8; 12] = *b"000000000000";
const BUS_TYPE_ISA: [u8; 6] = *b"ISA   ";

/// Entry types (MP spec table 4-3).
const MP_PROCESSOR: u8 = 0;
const MP_BUS: u8 = 1;
const MP_IOAPIC: u8 = 2;
const MP_INTSRC: u8 = 3;
const MP_LINTSRC: u8 = 4;

/// Processor entry flags.
const CPU_ENABLED: u8 = 1;
const CPU_BOOTPROCESSOR: u8 = 2;
/// I/O APIC entry flag: usable.
const MPC_APIC_USABLE: u8 = 1;
/// Interrupt types.
const MP_INT: u8 = 0;
const MP_NMI: u8 = 1;
const MP_EXTINT: u8 = 3;
/// Polarity and trigger "conform to the bus" (edge, active high on ISA).
const MP_IRQ_DEFAULT: u16 = 0;

/// Size of the MP floating pointer structure.
pub const FLOATING_POINTER_SIZE: usize = 16;
/// Size of the MP configuration table header.
pub const CONFIG_HEADER_SIZE: usize = 44;
/// Size of a processor entry.
pub const PROCESSOR_ENTRY_SIZE: usize = 20;
/// Size of a bus, I/O APIC, I/O interrupt or local interrupt entry.
pub const SMALL_ENTRY_SIZE: usize = 8;

/// Number of I/O interrupt entries (one per I/O APIC pin).
const NUM_INTSRC: usize = IRQ_MAX as usize + 1;
/// Number of local interrupt entries (LINT0, LINT1).
const NUM_LINTSRC: usize = 2;

/// Total bytes the floating pointer and the configuration table take for `num_cpus` vCPUs.
pub const fn mptable_size(num_cpus: u8) -> usize {
    FLOATING_POINTER_SIZE
        + CONFIG_HEADER_SIZE
        + PROCESSOR_ENTRY_SIZE * num_cpus as usize
        + SMALL_ENTRY_SIZE * (2 + NUM_INTSRC + NUM_LINTSRC)
}

/// Bytes reserved for the MP table at [`MPTABLE_START`], enough for [`MAX_CPUS`] rounded up
/// to 16 bytes; whatever follows may start at `MPTABLE_START + MPTABLE_MAX_SIZE`.
pub const MPTABLE_MAX_SIZE: u64 = (mptable_size(MAX_CPUS) as u64).next_multiple_of(16);

// The reservation must leave room for the ACPI tables before the RSDP at 0xe0000.
const _: () = assert!(MPTABLE_START + MPTABLE_MAX_SIZE + 0x1_0000 < 0xe0000);

/// Errors building or writing the MP table.
#[derive(Debug, thiserror::Error)]
pub enum MptableError {
    /// Zero vCPUs.
    #[error("an MP table needs at least one vCPU")]
    NoCpus,
    /// More vCPUs than 8-bit APIC ids allow.
    #[error("{num_cpus} vCPUs is more than the MP table supports ({max})")]
    TooManyCpus {
        /// vCPUs requested.
        num_cpus: u8,
        /// Most vCPUs supported.
        max: u8,
    },
    /// Guest memory does not cover the table.
    #[error("cannot write the MP table at {addr:#x} to guest memory")]
    Write {
        /// Where the write started.
        addr: u64,
        /// What guest memory said.
        #[source]
        source: GuestMemoryError,
    },
}

/// Builds the MP floating pointer and configuration table for `num_cpus` vCPUs and writes
/// them at [`MPTABLE_START`].
pub fn setup_mptable(mem: &GuestMemoryMmap, num_cpus: u8) -> Result<(), MptableError> {
    let bytes = build_mptable(MPTABLE_BASE, num_cpus)?;
    mem.write_slice(&bytes, GuestAddress(MPTABLE_START))
        .map_err(|source| MptableError::Write {
            addr: MPTABLE_START,
            source,
        })?;
    log::debug!(
        "mptable: wrote {} bytes for {num_cpus} vCPUs at {MPTABLE_START:#x}",
        bytes.len()
    );
    Ok(())
}

/// The floating pointer followed by the configuration table, as they are laid out at `base`.
fn build_mptable(base: u32, num_cpus: u8) -> Result<Vec<u8>, MptableError> {
    if num_cpus == 0 {
        return Err(MptableError::NoCpus);
    }
    if num_cpus > MAX_CPUS {
        return Err(MptableError::TooManyCpus {
            num_cpus,
            max: MAX_CPUS,
        });
    }
    let entries = config_entries(num_cpus);
    let config = config_table(&entries, entry_count(num_cpus));
    // The configuration table starts right after the floating pointer.
    let mut out = floating_pointer(base + FLOATING_POINTER_SIZE as u32);
    out.extend_from_slice(&config);
    Ok(out)
}

/// Number of entries in the configuration table (the header's `entry count`).
fn entry_count(num_cpus: u8) -> u16 {
    u16::from(num_cpus) + 2 + NUM_INTSRC as u16 + NUM_LINTSRC as u16
}

/// The 16-byte MP floating pointer structure pointing at the configuration table.
fn floating_pointer(config_addr: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(FLOATING_POINTER_SIZE);
    out.extend_from_slice(&MP_FLOATING_SIGNATURE);
    out.extend_from_slice(&config_addr.to_le_bytes());
    out.push(1); // length in 16-byte paragraphs
    out.push(MP_SPEC_REV);
    out.push(0); // checksum, fixed below
    out.extend_from_slice(&[0; 5]); // feature bytes: 0 = a configuration table is present
    out[10] = checksum(&out);
    out
}

/// The configuration table header (with its checksum) followed by `entries`.
fn config_table(entries: &[u8], count: u16) -> Vec<u8> {
    // At most 5 364 bytes (254 vCPUs), so the saturation never happens.
    let length = u16::try_from(CONFIG_HEADER_SIZE + entries.len()).unwrap_or(u16::MAX);
    let mut out = Vec::with_capacity(usize::from(length));
    out.extend_from_slice(&MP_CONFIG_SIGNATURE);
    out.extend_from_slice(&length.to_le_bytes());
    out.push(MP_SPEC_REV);
    out.push(0); // checksum, fixed below
    out.extend_from_slice(&OEM_ID);
    out.extend_from_slice(&PRODUCT_ID);
    out.extend_from_slice(&0u32.to_le_bytes()); // OEM table pointer
    out.extend_from_slice(&0u16.to_le_bytes()); // OEM table size
    out.extend_from_slice(&count.to_le_bytes());
    out.extend_from_slice(&APIC_DEFAULT_PHYS_BASE.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes()); // extended table length + checksum + reserved
    out.extend_from_slice(entries);
    out[7] = checksum(&out);
    out
}

/// Every configuration table entry, in the order the MP spec wants them (by type).
fn config_entries(num_cpus: u8) -> Vec<u8> {
    let ioapic_id = num_cpus + 1;
    let mut out = Vec::with_capacity(mptable_size(num_cpus));
    for cpu in 0..num_cpus {
        processor_entry(&mut out, cpu);
    }
    // Bus 0: ISA.
    out.push(MP_BUS);
    out.push(0);
    out.extend_from_slice(&BUS_TYPE_ISA);
    // The I/O APIC.
    out.extend_from_slice(&[MP_IOAPIC, ioapic_id, APIC_VERSION, MPC_APIC_USABLE]);
    out.extend_from_slice(&IO_APIC_DEFAULT_PHYS_BASE.to_le_bytes());
    // ISA IRQ n -> I/O APIC pin n.
    for irq in 0..=IRQ_MAX {
        interrupt_entry(&mut out, MP_INTSRC, MP_INT, irq, ioapic_id, irq);
    }
    // LINT0 of every local APIC is ExtINT (the 8259), LINT1 is NMI.
    interrupt_entry(&mut out, MP_LINTSRC, MP_EXTINT, 0, 0, 0);
    interrupt_entry(&mut out, MP_LINTSRC, MP_NMI, 0, 0xff, 1);
    out
}

/// One 20-byte processor entry; vCPU 0 is the bootstrap processor.
fn processor_entry(out: &mut Vec<u8>, cpu: u8) {
    let flags = CPU_ENABLED | if cpu == 0 { CPU_BOOTPROCESSOR } else { 0 };
    out.extend_from_slice(&[MP_PROCESSOR, cpu, APIC_VERSION, flags]);
    out.extend_from_slice(&CPU_STEPPING.to_le_bytes());
    out.extend_from_slice(&(CPU_FEATURE_APIC | CPU_FEATURE_FPU).to_le_bytes());
    out.extend_from_slice(&[0; 8]); // reserved
}

/// One 8-byte I/O or local interrupt entry from `src_irq` on bus 0 to `dst_pin` of `dst_apic`.
fn interrupt_entry(
    out: &mut Vec<u8>,
    kind: u8,
    int_type: u8,
    src_irq: u8,
    dst_apic: u8,
    dst_pin: u8,
) {
    out.extend_from_slice(&[kind, int_type]);
    out.extend_from_slice(&MP_IRQ_DEFAULT.to_le_bytes());
    out.extend_from_slice(&[0, src_irq, dst_apic, dst_pin]);
}

/// The byte that makes `data` sum to zero (mod 256) once stored in it.
fn checksum(data: &[u8]) -> u8 {
    data.iter().fold(0u8, |acc, b| acc.wrapping_sub(*b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mem() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap()
    }

    fn sum(data: &[u8]) -> u8 {
        data.iter().fold(0u8, |acc, b| acc.wrapping_add(*b))
    }

    fn read(mem: &GuestMemoryMmap, addr: u64, len: usize) -> Vec<u8> {
        let mut buf = vec![0; len];
        mem.read_slice(&mut buf, GuestAddress(addr)).unwrap();
        buf
    }

    /// Reads the configuration table the floating pointer points at.
    fn config_of(mem: &GuestMemoryMmap) -> Vec<u8> {
        let mpf = read(mem, MPTABLE_START, FLOATING_POINTER_SIZE);
        let addr = u32::from_le_bytes(mpf[4..8].try_into().unwrap());
        let header = read(mem, u64::from(addr), CONFIG_HEADER_SIZE);
        let len = u16::from_le_bytes([header[4], header[5]]);
        read(mem, u64::from(addr), usize::from(len))
    }

    /// Counts entries by type, walking the table as a kernel does.
    fn count_types(config: &[u8]) -> [usize; 5] {
        let mut counts = [0; 5];
        let mut off = CONFIG_HEADER_SIZE;
        while off < config.len() {
            let kind = config[off];
            counts[usize::from(kind)] += 1;
            off += if kind == MP_PROCESSOR {
                PROCESSOR_ENTRY_SIZE
            } else {
                SMALL_ENTRY_SIZE
            };
        }
        assert_eq!(off, config.len(), "entries must tile the table exactly");
        counts
    }

    #[test]
    fn floating_pointer_is_valid_and_points_after_itself() {
        let mem = mem();
        setup_mptable(&mem, 1).unwrap();
        let mpf = read(&mem, MPTABLE_START, FLOATING_POINTER_SIZE);
        assert_eq!(&mpf[0..4], b"_MP_");
        assert_eq!(sum(&mpf), 0);
        assert_eq!(mpf[8], 1);
        assert_eq!(mpf[9], 4);
        let addr = u32::from_le_bytes(mpf[4..8].try_into().unwrap());
        assert_eq!(u64::from(addr), MPTABLE_START + 16);
    }

    #[test]
    fn table_has_checksum_and_entry_counts_for_1_2_and_32_cpus() {
        for cpus in [1u8, 2, 32] {
            let mem = mem();
            setup_mptable(&mem, cpus).unwrap();
            let config = config_of(&mem);
            assert_eq!(&config[0..4], b"PCMP");
            assert_eq!(sum(&config), 0, "{cpus} cpus");
            assert_eq!(config.len() + 16, mptable_size(cpus));
            let counts = count_types(&config);
            assert_eq!(counts, [usize::from(cpus), 1, 1, 24, 2], "{cpus} cpus");
            let count = u16::from_le_bytes([config[34], config[35]]);
            assert_eq!(usize::from(count), counts.iter().sum::<usize>());
            let lapic = u32::from_le_bytes(config[36..40].try_into().unwrap());
            assert_eq!(lapic, 0xfee0_0000);
        }
    }

    #[test]
    fn processors_have_sequential_ids_and_cpu0_is_bsp() {
        let mem = mem();
        setup_mptable(&mem, 3).unwrap();
        let config = config_of(&mem);
        for cpu in 0..3usize {
            let e = &config[CONFIG_HEADER_SIZE + cpu * PROCESSOR_ENTRY_SIZE..];
            assert_eq!(e[0], MP_PROCESSOR);
            assert_eq!(usize::from(e[1]), cpu);
            let bsp = if cpu == 0 { CPU_BOOTPROCESSOR } else { 0 };
            assert_eq!(e[3], CPU_ENABLED | bsp);
        }
    }

    #[test]
    fn ioapic_id_is_cpus_plus_one_and_irqs_map_identity() {
        let mem = mem();
        setup_mptable(&mem, 4).unwrap();
        let config = config_of(&mem);
        let ioapic = CONFIG_HEADER_SIZE + 4 * PROCESSOR_ENTRY_SIZE + SMALL_ENTRY_SIZE;
        assert_eq!(config[ioapic], MP_IOAPIC);
        assert_eq!(config[ioapic + 1], 5);
        let addr = u32::from_le_bytes(config[ioapic + 4..ioapic + 8].try_into().unwrap());
        assert_eq!(addr, 0xfec0_0000);
        for irq in 0..24u8 {
            let e = &config[ioapic + SMALL_ENTRY_SIZE * (1 + usize::from(irq))..];
            assert_eq!(
                (e[0], e[1], e[4], e[5], e[6], e[7]),
                (MP_INTSRC, MP_INT, 0, irq, 5, irq)
            );
        }
        let bus = CONFIG_HEADER_SIZE + 4 * PROCESSOR_ENTRY_SIZE;
        assert_eq!(&config[bus + 2..bus + 8], b"ISA   ");
    }

    #[test]
    fn rejects_zero_and_too_many_cpus() {
        let mem = mem();
        assert!(matches!(setup_mptable(&mem, 0), Err(MptableError::NoCpus)));
        assert!(matches!(
            setup_mptable(&mem, 255),
            Err(MptableError::TooManyCpus {
                num_cpus: 255,
                max: 254
            })
        ));
        setup_mptable(&mem, MAX_CPUS).unwrap();
        assert_eq!(sum(&config_of(&mem)), 0);
    }

    #[test]
    fn largest_table_fits_its_reservation() {
        let bytes = build_mptable(MPTABLE_BASE, MAX_CPUS).unwrap();
        assert_eq!(bytes.len(), mptable_size(MAX_CPUS));
        assert!(bytes.len() as u64 <= MPTABLE_MAX_SIZE);
    }

    #[test]
    fn write_outside_guest_memory_is_an_error() {
        let small = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x1000)]).unwrap();
        let err = setup_mptable(&small, 1).unwrap_err();
        assert!(matches!(
            err,
            MptableError::Write {
                addr: MPTABLE_START,
                ..
            }
        ));
        assert_eq!(
            err.to_string(),
            "cannot write the MP table at 0x9fc00 to guest memory"
        );
    }
}
