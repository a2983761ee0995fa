//! PCI configuration space on the hardware: the hypervisor's own accesses (mechanism #1,
//! ports 0xcf8/0xcfc), the boot-time scan that decides what the hardware domain may
//! touch ([`crate::pci`]), and the emulation of a domain's configuration accesses (Xen's
//! `guest_io_read`/`guest_io_write` for ports 0xcf8..0xcff with a per-domain `pci_cf8`).
//!
//! The physical address register belongs to the hypervisor alone: a domain's writes to
//! 0xcf8 only change its virtual copy, and each data access is done here as one
//! address-then-data pair with interrupts off, so nothing interleaves.

use super::port::{inl_sized, outl_sized};
use crate::pci::{self, ConfWrite, Dom0Resources, PciFunction};
use crate::pirq::{Bdf, ConfigSpace};
use alloc::vec::Vec;
use spin::Mutex;

/// PCI configuration space through the legacy I/O ports (mechanism #1).
pub struct PortConfig;

const PCI_ADDR: u16 = 0xcf8;
const PCI_DATA: u16 = 0xcfc;

impl PortConfig {
    /// Reads `size` bytes (1, 2 or 4) at `offset` (naturally aligned).
    fn read_sized(&mut self, bdf: Bdf, offset: u8, size: u16) -> u32 {
        // SAFETY: the configuration mechanism's ports, which only the hypervisor drives
        // (domains see a virtual address register); one CPU with interrupts off, so the
        // address/data pair is not interleaved. Configuration reads have no side effects
        // on memory.
        unsafe {
            outl_sized(PCI_ADDR, 4, bdf.config_address(offset));
            inl_sized(PCI_DATA + u16::from(offset & 3), size)
        }
    }

    /// Writes `size` bytes (1, 2 or 4) at `offset` (naturally aligned).
    fn write_sized(&mut self, bdf: Bdf, offset: u8, size: u16, value: u32) {
        // SAFETY: as for `read_sized`; callers only write what the hypervisor manages or
        // what `pci::intercept_write` let through for the hardware domain.
        unsafe {
            outl_sized(PCI_ADDR, 4, bdf.config_address(offset));
            outl_sized(PCI_DATA + u16::from(offset & 3), size, value);
        }
    }
}

impl ConfigSpace for PortConfig {
    fn read32(&mut self, bdf: Bdf, offset: u8) -> u32 {
        self.read_sized(bdf, offset & !3, 4)
    }

    fn write16(&mut self, bdf: Bdf, offset: u8, value: u16) {
        self.write_sized(bdf, offset & !1, 2, u32::from(value));
    }

    fn write32(&mut self, bdf: Bdf, offset: u8, value: u32) {
        self.write_sized(bdf, offset & !3, 4, value);
    }
}

/// The functions found at boot (sorted by address).
static FUNCTIONS: Mutex<Vec<PciFunction>> = Mutex::new(Vec::new());

/// Scans the PCI hierarchy (once, before any domain runs), logs what it found and
/// returns what the hardware domain is to be given.
pub fn scan() -> Dom0Resources {
    let found = pci::scan(&mut PortConfig);
    for f in &found {
        crate::xinfo!(
            "PCI {:02x}:{:02x}.{} {:04x}:{:04x}{}\n",
            f.bdf.bus,
            f.bdf.devfn >> 3,
            f.bdf.devfn & 7,
            f.id & 0xffff,
            f.id >> 16,
            if f.msix.is_some() { " MSI-X" } else { "" }
        );
        for b in &f.bars {
            crate::xdebug!(
                "  BAR{} {:?} {:#x} + {:#x}\n",
                b.index,
                b.space,
                b.base,
                b.size
            );
        }
    }
    let r = Dom0Resources::for_functions(&found);
    *FUNCTIONS.lock() = found;
    r
}

/// Where the MSI-X capability of `bdf` is, for a function found at boot.
fn msix_pos(bdf: Bdf) -> Option<u8> {
    let f = FUNCTIONS.lock();
    let i = f.binary_search_by_key(&bdf, |f| f.bdf).ok()?;
    f[i].msix.map(|m| m.pos)
}

/// A domain's `in` of `size` bytes from configuration port `port` (0xcf8..0xcff), with
/// its virtual address register `cf8`.
pub fn guest_read(cf8: u32, port: u16, size: u16) -> u32 {
    if port == PCI_ADDR && size == 4 {
        return cf8;
    }
    match pci::data_target(cf8, port, size) {
        Some((bdf, offset)) => PortConfig.read_sized(bdf, offset, size),
        None => u32::MAX,
    }
}

/// A domain's `out` of `size` bytes to configuration port `port`: a doubleword to 0xcf8
/// sets its virtual address register; data-port writes go through
/// [`pci::intercept_write`]; anything else is dropped (0xcf9 is the reset port, which
/// stays the hypervisor's).
pub fn guest_write(cf8: &mut u32, port: u16, size: u16, value: u32) {
    if port == PCI_ADDR && size == 4 {
        *cf8 = value;
        return;
    }
    let Some((bdf, offset)) = pci::data_target(*cf8, port, size) else {
        return;
    };
    match pci::intercept_write(msix_pos(bdf), offset, size as u8, value) {
        ConfWrite::Allow(v) => PortConfig.write_sized(bdf, offset, size, v),
        ConfWrite::Drop => crate::xdebug!(
            "dropped a write to {:02x}:{:02x}.{} register {:#x} (MSI-X capability)\n",
            bdf.bus,
            bdf.devfn >> 3,
            bdf.devfn & 7,
            offset
        ),
    }
}
