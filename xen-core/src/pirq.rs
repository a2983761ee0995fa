//! Physical IRQs handed to the hardware domain (Xen's `struct pirq`, `arch/x86/irq.c`,
//! `arch/x86/msi.c`, `drivers/passthrough/pci.c`): the portable part.
//!
//! * [`VectorPool`]: the CPU vectors the hypervisor gives to device interrupts (Xen's
//!   dynamic vector range), never the ones the hypervisor or guests use otherwise.
//! * [`PirqTable`]: one domain's PIRQ → device-interrupt map (Xen's `d->pirq_tree` with
//!   `arch.irq`), with Xen's allocation order (MSI PIRQs from the top down, as
//!   `get_free_pirq`) and its range rules.
//! * PCI configuration-space parsing over a [`ConfigSpace`]: the capability list, the
//!   MSI-X capability (table BIR, offset and size) and memory BARs (32- and 64-bit), so the
//!   hypervisor finds a function's MSI-X table as Xen's `msix_capability_init` does.
//! * The MSI message the hypervisor programs ([`msi_address`], [`msi_data`]): physical
//!   destination mode, fixed delivery, edge-triggered — Xen's `msi_compose_msg`.
//!
//! Everything a guest passes (bus, devfn, entry number, PIRQ) is range-checked here; the
//! hardware access (port I/O, MMIO) is the caller's (`arch::x86_64::irq`).

use alloc::collections::BTreeMap;
use xen_abi::{DomId, Errno};

// ---------------------------------------------------------------------------------------
// Vectors

/// Lowest vector given to device interrupts (below are exceptions and reserved ones).
pub const FIRST_DEVICE_VECTOR: u8 = 0x30;
/// Highest vector given to device interrupts (above are the hypervisor's: timer 0xf0,
/// spurious 0xff).
pub const LAST_DEVICE_VECTOR: u8 = 0xdf;
/// `int $0x80` is a guest's system call gate (DPL 3), never a device vector.
const SYSCALL_VECTOR: u8 = 0x80;

/// Whether `v` is a vector device interrupts may use.
pub fn is_device_vector(v: u64) -> bool {
    (u64::from(FIRST_DEVICE_VECTOR)..=u64::from(LAST_DEVICE_VECTOR)).contains(&v)
        && v != u64::from(SYSCALL_VECTOR)
}

/// Free and used device vectors (one bit per vector).
#[derive(Clone, Debug, Default)]
pub struct VectorPool {
    used: [u64; 4],
}

impl VectorPool {
    /// An empty pool: every device vector free.
    pub const fn new() -> Self {
        Self { used: [0; 4] }
    }

    /// Takes the lowest free device vector.
    pub fn alloc(&mut self) -> Option<u8> {
        let v = (FIRST_DEVICE_VECTOR..=LAST_DEVICE_VECTOR)
            .find(|&v| is_device_vector(u64::from(v)) && !self.is_used(v))?;
        self.set(v, true);
        Some(v)
    }

    /// Returns `v` to the pool (ignored for vectors outside the device range).
    pub fn free(&mut self, v: u8) {
        if is_device_vector(u64::from(v)) {
            self.set(v, false);
        }
    }

    /// Whether `v` is allocated.
    pub fn is_used(&self, v: u8) -> bool {
        self.used[usize::from(v / 64)] & (1u64 << (v % 64)) != 0
    }

    /// Number of vectors in use.
    pub fn in_use(&self) -> u32 {
        self.used.iter().map(|w| w.count_ones()).sum()
    }

    fn set(&mut self, v: u8, used: bool) {
        let (w, b) = (usize::from(v / 64), 1u64 << (v % 64));
        if used {
            self.used[w] |= b;
        } else {
            self.used[w] &= !b;
        }
    }
}

// ---------------------------------------------------------------------------------------
// MSI messages

/// Base of the MSI address window (the local APICs).
pub const MSI_ADDR_BASE: u64 = 0xfee0_0000;
/// `MSI_DATA_LEVEL_ASSERT`: Xen and Linux set it for edge interrupts too.
const MSI_DATA_LEVEL_ASSERT: u32 = 1 << 14;

/// The MSI address targeting the local APIC `apic_id` in physical destination mode
/// without redirection hint (Xen's `MSI_ADDR_DESTMODE_PHYS | MSI_ADDR_REDIRECTION_CPU`).
pub fn msi_address(apic_id: u8) -> u64 {
    MSI_ADDR_BASE | (u64::from(apic_id) << 12)
}

/// The MSI data for `vector`: fixed delivery, edge-triggered, asserted.
pub fn msi_data(vector: u8) -> u32 {
    MSI_DATA_LEVEL_ASSERT | u32::from(vector)
}

// ---------------------------------------------------------------------------------------
// PCI configuration space

/// A PCI function on segment 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Bdf {
    /// Bus.
    pub bus: u8,
    /// Device (bits 7..3) and function (bits 2..0).
    pub devfn: u8,
}

impl Bdf {
    /// The function named by a guest's `bus`/`devfn` (`int`s in the ABI; the segment in
    /// the high 16 bits of `bus` for the `_SEG` map types). `None` for a segment other
    /// than 0 (rxen sees only segment 0) or values out of range.
    pub fn from_guest(bus: i32, devfn: i32, with_segment: bool) -> Option<Bdf> {
        let (seg, bus) = if with_segment {
            (((bus as u32) >> 16) as u16, (bus as u32) & 0xffff)
        } else {
            (0, bus as u32)
        };
        if seg != 0 {
            return None;
        }
        Some(Bdf {
            bus: u8::try_from(bus).ok()?,
            devfn: u8::try_from(devfn).ok()?,
        })
    }

    /// The value for the 0xcf8 configuration address register (enable bit set).
    pub fn config_address(self, offset: u8) -> u32 {
        0x8000_0000
            | (u32::from(self.bus) << 16)
            | (u32::from(self.devfn) << 8)
            | u32::from(offset & 0xfc)
    }
}

/// Access to the PCI configuration space (the first 256 bytes of each function).
pub trait ConfigSpace {
    /// Reads the aligned dword at `offset & !3`.
    fn read32(&mut self, bdf: Bdf, offset: u8) -> u32;
    /// Writes the aligned word at `offset & !1` (without touching its neighbour, which
    /// may hold write-one-to-clear bits).
    fn write16(&mut self, bdf: Bdf, offset: u8, value: u16);
    /// Writes the aligned dword at `offset & !3`.
    fn write32(&mut self, bdf: Bdf, offset: u8, value: u32);

    /// Reads the aligned word at `offset & !1`.
    fn read16(&mut self, bdf: Bdf, offset: u8) -> u16 {
        (self.read32(bdf, offset) >> (8 * u32::from(offset & 2))) as u16
    }
    /// Reads the byte at `offset`.
    fn read8(&mut self, bdf: Bdf, offset: u8) -> u8 {
        (self.read32(bdf, offset) >> (8 * u32::from(offset & 3))) as u8
    }
}

/// Configuration-space registers and bits used here.
pub mod reg {
    /// Vendor ID (0xffff: no function).
    pub const VENDOR_ID: u8 = 0x00;
    /// Command register.
    pub const COMMAND: u8 = 0x04;
    /// `PCI_COMMAND_MEMORY`: memory space decoding enabled.
    pub const COMMAND_MEMORY: u16 = 1 << 1;
    /// Status register.
    pub const STATUS: u8 = 0x06;
    /// `PCI_STATUS_CAP_LIST`.
    pub const STATUS_CAP_LIST: u16 = 1 << 4;
    /// Header type (bit 7: multi-function; low bits: layout).
    pub const HEADER_TYPE: u8 = 0x0e;
    /// First BAR.
    pub const BAR0: u8 = 0x10;
    /// Capabilities pointer.
    pub const CAP_PTR: u8 = 0x34;
    /// `PCI_CAP_ID_MSI`.
    pub const CAP_ID_MSI: u8 = 0x05;
    /// `PCI_CAP_ID_MSIX`.
    pub const CAP_ID_MSIX: u8 = 0x11;
    /// MSI-X message control (offset in the capability).
    pub const MSIX_CONTROL: u8 = 2;
    /// MSI-X table offset/BIR (offset in the capability).
    pub const MSIX_TABLE: u8 = 4;
    /// `PCI_MSIX_FLAGS_ENABLE`.
    pub const MSIX_ENABLE: u16 = 1 << 15;
    /// `PCI_MSIX_FLAGS_MASKALL`.
    pub const MSIX_MASKALL: u16 = 1 << 14;
    /// `PCI_MSIX_FLAGS_QSIZE`: table size - 1.
    pub const MSIX_QSIZE: u16 = 0x7ff;
    /// Bytes per MSI-X table entry.
    pub const MSIX_ENTRY_SIZE: u64 = 16;
    /// Entry: message address low (offset in the entry).
    pub const MSIX_ENTRY_ADDR_LO: u64 = 0;
    /// Entry: message address high.
    pub const MSIX_ENTRY_ADDR_HI: u64 = 4;
    /// Entry: message data.
    pub const MSIX_ENTRY_DATA: u64 = 8;
    /// Entry: vector control (bit 0: masked).
    pub const MSIX_ENTRY_CTRL: u64 = 12;
}

/// Whether a function answers at `bdf`.
pub fn function_present(cfg: &mut impl ConfigSpace, bdf: Bdf) -> bool {
    cfg.read16(bdf, reg::VENDOR_ID) != 0xffff
}

/// The offset of capability `id` in the function's capability list (Xen's
/// `pci_find_cap_offset`): at most 48 entries are followed, so a looping list ends.
pub fn find_capability(cfg: &mut impl ConfigSpace, bdf: Bdf, id: u8) -> Option<u8> {
    if cfg.read16(bdf, reg::STATUS) & reg::STATUS_CAP_LIST == 0 {
        return None;
    }
    let mut pos = cfg.read8(bdf, reg::CAP_PTR) & 0xfc;
    for _ in 0..48 {
        if pos < 0x40 {
            return None;
        }
        let hdr = cfg.read16(bdf, pos);
        match hdr as u8 {
            0xff => return None,
            cap if cap == id => return Some(pos),
            _ => pos = ((hdr >> 8) as u8) & 0xfc,
        }
    }
    None
}

/// A function's MSI-X capability.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MsixCap {
    /// Offset of the capability in configuration space.
    pub pos: u8,
    /// Number of table entries.
    pub table_size: u16,
    /// BAR holding the table (0..=5).
    pub bir: u8,
    /// Offset of the table in that BAR.
    pub offset: u32,
}

/// The MSI-X capability of `bdf`, if it has one.
pub fn msix_capability(cfg: &mut impl ConfigSpace, bdf: Bdf) -> Option<MsixCap> {
    let pos = find_capability(cfg, bdf, reg::CAP_ID_MSIX)?;
    let control = cfg.read16(bdf, pos.wrapping_add(reg::MSIX_CONTROL));
    let table = cfg.read32(bdf, pos.wrapping_add(reg::MSIX_TABLE));
    Some(MsixCap {
        pos,
        table_size: (control & reg::MSIX_QSIZE) + 1,
        bir: (table & 7) as u8,
        offset: table & !7,
    })
}

/// Why a BAR cannot hold an MSI-X table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BarError {
    /// BIR 6 or 7 (reserved), or a 64-bit BAR in the last slot.
    BadIndex,
    /// An I/O-space BAR.
    IoSpace,
    /// Not assigned (address 0).
    Unassigned,
}

/// The memory address BAR `bir` of a type-0 function decodes (Xen's `read_pci_mem_bar`):
/// 32-bit, or 64-bit spanning two BARs.
pub fn bar_address(cfg: &mut impl ConfigSpace, bdf: Bdf, bir: u8) -> Result<u64, BarError> {
    if bir > 5 {
        return Err(BarError::BadIndex);
    }
    let off = reg::BAR0 + 4 * bir;
    let lo = cfg.read32(bdf, off);
    if lo & 1 != 0 {
        return Err(BarError::IoSpace);
    }
    let addr = match (lo >> 1) & 3 {
        // 64-bit
        2 => {
            if bir == 5 {
                return Err(BarError::BadIndex);
            }
            let hi = cfg.read32(bdf, off + 4);
            (u64::from(hi) << 32) | u64::from(lo & !0xf)
        }
        _ => u64::from(lo & !0xf),
    };
    if addr == 0 {
        return Err(BarError::Unassigned);
    }
    Ok(addr)
}

// ---------------------------------------------------------------------------------------
// PIRQs

/// Where a mapped PIRQ's interrupts come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// Entry `entry` of a function's MSI-X table at machine address `entry_maddr`.
    MsiX {
        /// The function.
        bdf: Bdf,
        /// Offset of its MSI-X capability.
        cap_pos: u8,
        /// Table entry.
        entry: u16,
        /// Machine address of the entry (in the function's BAR).
        entry_maddr: u64,
    },
}

/// One mapped PIRQ.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PirqInfo {
    /// The CPU vector its interrupts arrive on.
    pub vector: u8,
    /// The device side.
    pub source: Source,
}

/// PIRQs of the hardware domain (Xen: `nr_static_irqs + extra_hwdom_irqs`).
pub const HWDOM_NR_PIRQS: u32 = 256;
/// GSIs below which MSI PIRQs are never allocated (one IO-APIC with 24 pins, Xen's
/// `nr_irqs_gsi` on QEMU's machines).
pub const NR_GSI: u32 = 24;
/// PIRQs of another domain (Xen: `nr_static_irqs + extra_domU_irqs` = 24 + 32).
pub const DOMU_NR_PIRQS: u32 = NR_GSI + 32;

/// One domain's PIRQs.
#[derive(Clone, Debug)]
pub struct PirqTable {
    nr_pirqs: u32,
    map: BTreeMap<u32, PirqInfo>,
}

impl PirqTable {
    /// A table of `nr_pirqs` PIRQs (numbers `0..nr_pirqs`), none mapped.
    pub fn new(nr_pirqs: u32) -> Self {
        Self {
            nr_pirqs,
            map: BTreeMap::new(),
        }
    }

    /// The domain's number of PIRQs (Xen's `d->nr_pirqs`).
    pub fn nr_pirqs(&self) -> u32 {
        self.nr_pirqs
    }

    /// A guest's PIRQ number, if it is in range.
    pub fn in_range(&self, pirq: i64) -> Option<u32> {
        u32::try_from(pirq).ok().filter(|&p| p < self.nr_pirqs)
    }

    /// The PIRQ a map request gets: `requested` (-1 or negative: any) checked, or the
    /// highest free one above the GSIs (Xen's `get_free_pirq` for MSI).
    ///
    /// Errors: `-EINVAL` (requested PIRQ beyond `nr_pirqs`), `-EEXIST` (requested PIRQ
    /// already mapped), `-ENOSPC` (none free).
    pub fn choose(&self, requested: i32) -> Result<u32, Errno> {
        if requested >= 0 {
            let p = self.in_range(i64::from(requested)).ok_or(Errno::EINVAL)?;
            if self.map.contains_key(&p) {
                return Err(Errno::EEXIST);
            }
            return Ok(p);
        }
        (NR_GSI.min(self.nr_pirqs)..self.nr_pirqs)
            .rev()
            .find(|p| !self.map.contains_key(p))
            .ok_or(Errno::ENOSPC)
    }

    /// Records `pirq` (from [`PirqTable::choose`]) as mapped.
    pub fn insert(&mut self, pirq: u32, info: PirqInfo) {
        self.map.insert(pirq, info);
    }

    /// Forgets `pirq`; returns what it was mapped to.
    pub fn remove(&mut self, pirq: u32) -> Option<PirqInfo> {
        self.map.remove(&pirq)
    }

    /// What `pirq` is mapped to.
    pub fn get(&self, pirq: u32) -> Option<&PirqInfo> {
        self.map.get(&pirq)
    }

    /// The PIRQ already mapped to this MSI-X entry of `bdf`, if any.
    pub fn find_msix(&self, bdf: Bdf, entry: u16) -> Option<u32> {
        self.map.iter().find_map(|(&p, i)| match i.source {
            Source::MsiX {
                bdf: b, entry: e, ..
            } if b == bdf && e == entry => Some(p),
            _ => None,
        })
    }

    /// Whether another mapped PIRQ uses an MSI-X entry of `bdf` (so MSI-X stays enabled).
    pub fn function_in_use(&self, bdf: Bdf) -> bool {
        self.map
            .values()
            .any(|i| matches!(i.source, Source::MsiX { bdf: b, .. } if b == bdf))
    }

    /// Removes every mapping (domain destruction), in PIRQ order.
    pub fn drain(&mut self) -> alloc::vec::Vec<(u32, PirqInfo)> {
        core::mem::take(&mut self.map).into_iter().collect()
    }

    /// Number of mapped PIRQs.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether no PIRQ is mapped.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

/// Which domain and PIRQ each device vector belongs to.
#[derive(Clone, Debug)]
pub struct VectorOwners {
    owner: [Option<(DomId, u32)>; 256],
}

impl Default for VectorOwners {
    fn default() -> Self {
        Self::new()
    }
}

impl VectorOwners {
    /// No owners.
    pub const fn new() -> Self {
        Self { owner: [None; 256] }
    }
    /// Records the owner of `vector`.
    pub fn set(&mut self, vector: u8, owner: Option<(DomId, u32)>) {
        self.owner[usize::from(vector)] = owner;
    }
    /// The owner of `vector`.
    pub fn get(&self, vector: u8) -> Option<(DomId, u32)> {
        self.owner[usize::from(vector)]
    }
}

#[cfg(test)]
mod tests;
