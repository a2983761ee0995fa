//! The hardware domain's share of PCI: which I/O memory and ports it gets, and how its
//! configuration-space accesses are filtered.
//!
//! Xen gives a PV dom0 nearly all I/O memory and ports (`dom0_setup_permissions`); rxen
//! gives it only what its devices decode. At boot the hypervisor walks the PCI hierarchy
//! ([`scan`]: bus 0 and every bridge's secondary bus), sizes each BAR, and finds each
//! MSI-X table and PBA. [`Dom0Resources`] turns that into the hardware domain's I/O
//! memory (the memory BARs), its I/O ports (the I/O BARs) and the frames no domain may map
//! writable (the MSI-X tables and PBAs: Xen's `mmio_ro_ranges`, here from the start rather
//! than from the first `map_pirq`).
//!
//! The configuration mechanism (ports 0xcf8/0xcfc) itself is emulated, as Xen does for a
//! PV dom0 (`guest_io_read`/`guest_io_write` with the per-domain `pci_cf8`): the domain's
//! address register is virtual, and each data access is performed by the hypervisor after
//! [`intercept_write`] (Xen's `pci_msi_conf_write_intercept`) has looked at it. Writes
//! into an MSI-X capability other than a 16-bit write of its message control are dropped,
//! so the table's location and size stay what the hypervisor programmed.

use alloc::vec::Vec;
use arrayvec::ArrayVec;

use crate::pirq::{reg, Bdf, ConfigSpace};

/// `PCI_COMMAND_IO`: I/O space decoding.
const COMMAND_IO: u16 = 1 << 0;
/// The 0xcf8 enable bit.
pub const CF8_ENABLE: u32 = 1 << 31;
/// The configuration mechanism's ports: address 0xcf8..0xcfc, data 0xcfc..0xd00.
pub const CONFIG_PORTS: (u16, u16) = (0xcf8, 0xd00);
/// MSI-X capability: PBA offset/BIR (offset in the capability).
const MSIX_PBA: u8 = 8;
/// Bytes of the MSI-X capability (header, control, table, PBA).
const MSIX_CAP_LEN: u8 = 12;

/// What a BAR decodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BarSpace {
    /// Memory space (32- or 64-bit).
    Memory,
    /// I/O space.
    Io,
}

/// One assigned BAR.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bar {
    /// BAR index (0..=5; the first of a 64-bit pair).
    pub index: u8,
    /// Memory or I/O.
    pub space: BarSpace,
    /// First address.
    pub base: u64,
    /// Bytes decoded (a power of two).
    pub size: u64,
}

impl Bar {
    /// The last address decoded.
    pub fn last(&self) -> u64 {
        self.base.saturating_add(self.size - 1)
    }
}

/// Where a function's MSI-X structures are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MsixLayout {
    /// Offset of the capability in configuration space.
    pub pos: u8,
    /// Machine address of the table, if its BAR is assigned.
    pub table: Option<u64>,
    /// Bytes of the table (16 per entry).
    pub table_len: u64,
    /// Machine address of the pending-bit array, if its BAR is assigned.
    pub pba: Option<u64>,
    /// Bytes of the PBA (one bit per entry, in quadwords).
    pub pba_len: u64,
}

/// One PCI function as the hypervisor found it at boot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PciFunction {
    /// Its address.
    pub bdf: Bdf,
    /// Vendor and device id (the first dword of configuration space).
    pub id: u32,
    /// Its assigned BARs.
    pub bars: ArrayVec<Bar, 6>,
    /// Its MSI-X capability, if any.
    pub msix: Option<MsixLayout>,
}

/// Enumerates the functions reachable from bus 0 through bridges, sizing their BARs.
/// Each bus is visited once, so a bridge loop ends; at most 256 buses exist.
pub fn scan(cfg: &mut impl ConfigSpace) -> Vec<PciFunction> {
    let mut found = Vec::new();
    let mut seen = [false; 256];
    let mut queue: Vec<u8> = alloc::vec![0];
    seen[0] = true;
    while let Some(bus) = queue.pop() {
        for dev in 0..32u8 {
            let nr_funcs = {
                let f0 = Bdf {
                    bus,
                    devfn: dev << 3,
                };
                if cfg.read16(f0, reg::VENDOR_ID) == 0xffff {
                    continue;
                }
                if cfg.read8(f0, reg::HEADER_TYPE) & 0x80 != 0 {
                    8
                } else {
                    1
                }
            };
            for func in 0..nr_funcs {
                let bdf = Bdf {
                    bus,
                    devfn: (dev << 3) | func,
                };
                let id = cfg.read32(bdf, reg::VENDOR_ID);
                if id & 0xffff == 0xffff {
                    continue;
                }
                let header = cfg.read8(bdf, reg::HEADER_TYPE) & 0x7f;
                let nr_bars = match header {
                    0 => 6,
                    1 => 2,
                    _ => 0,
                };
                if header == 1 {
                    // Primary, secondary, subordinate bus numbers at 0x18.
                    let secondary = cfg.read8(bdf, 0x19);
                    if secondary != 0 && !seen[usize::from(secondary)] {
                        seen[usize::from(secondary)] = true;
                        queue.push(secondary);
                    }
                }
                let bars = size_bars(cfg, bdf, nr_bars);
                let msix = if header == 0 {
                    msix_layout(cfg, bdf, &bars)
                } else {
                    None
                };
                found.push(PciFunction {
                    bdf,
                    id,
                    bars,
                    msix,
                });
            }
        }
    }
    found.sort_by_key(|f| f.bdf);
    found
}

/// Sizes BARs `0..nr_bars` the standard way (write all-ones, read the mask back, restore),
/// with the function's decoding off meanwhile so it never answers at the probe address.
fn size_bars(cfg: &mut impl ConfigSpace, bdf: Bdf, nr_bars: u8) -> ArrayVec<Bar, 6> {
    let mut bars = ArrayVec::new();
    if nr_bars == 0 {
        return bars;
    }
    let command = cfg.read16(bdf, reg::COMMAND);
    cfg.write16(
        bdf,
        reg::COMMAND,
        command & !(COMMAND_IO | reg::COMMAND_MEMORY),
    );
    let mut index = 0;
    while index < nr_bars {
        let off = reg::BAR0 + 4 * index;
        let lo = cfg.read32(bdf, off);
        cfg.write32(bdf, off, u32::MAX);
        let lo_mask = cfg.read32(bdf, off);
        cfg.write32(bdf, off, lo);
        let this = index;
        index += 1;
        if lo & 1 != 0 {
            let mask = u64::from(lo_mask & !3) | 0xffff_0000;
            let size = (!mask & 0xffff) + 1;
            let base = u64::from(lo & !3) & 0xffff;
            if lo_mask & !3 != 0 && base != 0 {
                let _ = bars.try_push(Bar {
                    index: this,
                    space: BarSpace::Io,
                    base,
                    size,
                });
            }
            continue;
        }
        let is64 = (lo >> 1) & 3 == 2 && index < nr_bars;
        let (base, mask) = if is64 {
            let hi_off = off + 4;
            let hi = cfg.read32(bdf, hi_off);
            cfg.write32(bdf, hi_off, u32::MAX);
            let hi_mask = cfg.read32(bdf, hi_off);
            cfg.write32(bdf, hi_off, hi);
            index += 1;
            (
                (u64::from(hi) << 32) | u64::from(lo & !0xf),
                (u64::from(hi_mask) << 32) | u64::from(lo_mask & !0xf),
            )
        } else {
            (
                u64::from(lo & !0xf),
                0xffff_ffff_0000_0000 | u64::from(lo_mask & !0xf),
            )
        };
        // An unimplemented BAR reads back 0; an unassigned one sits at 0.
        if mask & 0xffff_ffff != 0 && base != 0 {
            let size = (!mask).wrapping_add(1);
            if size != 0 {
                let _ = bars.try_push(Bar {
                    index: this,
                    space: BarSpace::Memory,
                    base,
                    size,
                });
            }
        }
    }
    cfg.write16(bdf, reg::COMMAND, command);
    bars
}

/// The function's MSI-X table and PBA, located through its sized BARs.
fn msix_layout(cfg: &mut impl ConfigSpace, bdf: Bdf, bars: &[Bar]) -> Option<MsixLayout> {
    let pos = crate::pirq::find_capability(cfg, bdf, reg::CAP_ID_MSIX)?;
    let control = cfg.read16(bdf, pos.wrapping_add(reg::MSIX_CONTROL));
    let entries = u64::from(control & reg::MSIX_QSIZE) + 1;
    let locate = |v: u32| {
        let bir = (v & 7) as u8;
        bars.iter()
            .find(|b| b.index == bir && b.space == BarSpace::Memory)
            .map(|b| b.base.wrapping_add(u64::from(v & !7)))
    };
    let table = cfg.read32(bdf, pos.wrapping_add(reg::MSIX_TABLE));
    let pba = cfg.read32(bdf, pos.wrapping_add(MSIX_PBA));
    Some(MsixLayout {
        pos,
        table: locate(table),
        table_len: entries * reg::MSIX_ENTRY_SIZE,
        pba: locate(pba),
        pba_len: entries.div_ceil(64) * 8,
    })
}

/// Inclusive ranges of machine frames.
pub type FrameRanges = Vec<(u64, u64)>;

/// What the hardware domain is given for the functions found at boot.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Dom0Resources {
    /// I/O memory it may map: every memory BAR's frames.
    pub iomem: FrameRanges,
    /// I/O ports it may use, `[start, end)`: the configuration ports and every I/O BAR.
    pub ioports: Vec<(u32, u32)>,
    /// Frames nobody may map writable: the MSI-X tables and PBAs.
    pub read_only: FrameRanges,
}

impl Dom0Resources {
    /// The resources for `functions`.
    pub fn for_functions(functions: &[PciFunction]) -> Self {
        let mut r = Dom0Resources {
            ioports: alloc::vec![(u32::from(CONFIG_PORTS.0), u32::from(CONFIG_PORTS.1))],
            ..Default::default()
        };
        for f in functions {
            for b in &f.bars {
                match b.space {
                    BarSpace::Memory => r.iomem.push((b.base >> 12, b.last() >> 12)),
                    BarSpace::Io => {
                        let end = (b.base + b.size).min(0x1_0000);
                        r.ioports.push((b.base as u32, end as u32));
                    }
                }
            }
            if let Some(m) = f.msix {
                for (at, len) in [(m.table, m.table_len), (m.pba, m.pba_len)] {
                    if let Some(at) = at {
                        r.read_only
                            .push((at >> 12, at.saturating_add(len - 1) >> 12));
                    }
                }
            }
        }
        r
    }
}

/// Removes frames `first..=last` from `ranges` (splitting a range that straddles them).
pub fn punch(ranges: &mut FrameRanges, first: u64, last: u64) {
    let mut out = Vec::with_capacity(ranges.len() + 1);
    for &(s, e) in ranges.iter() {
        if e < first || s > last {
            out.push((s, e));
            continue;
        }
        if s < first {
            out.push((s, first - 1));
        }
        if e > last {
            out.push((last + 1, e));
        }
    }
    *ranges = out;
}

/// What becomes of a domain's write into configuration space.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfWrite {
    /// Perform it with this value.
    Allow(u32),
    /// Drop it (Xen: `pci_conf_write_intercept` < 0).
    Drop,
}

/// Xen's `pci_msi_conf_write_intercept` for MSI-X: a write of `size` bytes at register
/// `reg` of a function whose MSI-X capability is at `msix_pos`. Anything overlapping the
/// capability but a 16-bit write of its message control is dropped. (Xen also forces the
/// function mask on while it holds the function masked itself; rxen only does so inside
/// `map_pirq`, when no domain runs.)
pub fn intercept_write(msix_pos: Option<u8>, reg: u8, size: u8, value: u32) -> ConfWrite {
    let Some(pos) = msix_pos else {
        return ConfWrite::Allow(value);
    };
    let (start, end) = (u16::from(reg), u16::from(reg) + u16::from(size));
    let (cap_start, cap_end) = (u16::from(pos), u16::from(pos) + u16::from(MSIX_CAP_LEN));
    if end <= cap_start || start >= cap_end {
        return ConfWrite::Allow(value);
    }
    if start != cap_start + u16::from(reg::MSIX_CONTROL) || size != 2 {
        return ConfWrite::Drop;
    }
    ConfWrite::Allow(value)
}

/// The function and register a configuration data-port access reaches: `cf8` is the
/// domain's (virtual) address register, `port` one of 0xcfc..0xcff, `size` 1, 2 or 4.
/// `None` when the enable bit is clear or the access crosses the data dword (such an
/// access reads all-ones and writes nothing, as on hardware).
pub fn data_target(cf8: u32, port: u16, size: u16) -> Option<(Bdf, u8)> {
    let lane = port.checked_sub(0xcfc)?;
    if cf8 & CF8_ENABLE == 0 || lane + size > 4 {
        return None;
    }
    let bdf = Bdf {
        bus: (cf8 >> 16) as u8,
        devfn: (cf8 >> 8) as u8,
    };
    Some((bdf, (cf8 as u8 & 0xfc) + lane as u8))
}

#[cfg(test)]
pub(crate) mod fake;
#[cfg(test)]
mod tests;
