//! PCI configuration space as dom0 sees it: the hardware domain owns the PCI bus (Xen's
//! model: the hypervisor keeps only the interrupt controllers), so dom0 enumerates
//! functions, reads their BARs and walks their capability lists itself, as Linux's
//! `drivers/pci/probe.c` does.
//!
//! Everything here is portable: the access method (configuration mechanism #1 through
//! ports 0xcf8/0xcfc in dom0's kernel) sits behind [`ConfigSpace`], so enumeration and the
//! capability walk are tested on the host against a fake bus.

use alloc::vec::Vec;
use core::fmt;

/// Bus/device/function address of a PCI function.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Bdf {
    /// Bus number.
    pub bus: u8,
    /// Device number (0..32).
    pub dev: u8,
    /// Function number (0..8).
    pub func: u8,
}

impl Bdf {
    /// A BDF; `dev` and `func` are masked to their widths.
    pub const fn new(bus: u8, dev: u8, func: u8) -> Bdf {
        Bdf {
            bus,
            dev: dev & 0x1f,
            func: func & 7,
        }
    }

    /// `devfn` as Xen's physdev interface and Linux name it: device << 3 | function.
    pub const fn devfn(self) -> u8 {
        (self.dev << 3) | self.func
    }
}

impl fmt::Display for Bdf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02x}:{:02x}.{:x}", self.bus, self.dev, self.func)
    }
}

/// Reads and writes one function's configuration space (the first 256 bytes).
pub trait ConfigSpace {
    /// The dword at `offset & !3`.
    fn read32(&mut self, bdf: Bdf, offset: u8) -> u32;
    /// Writes the dword at `offset & !3`.
    fn write32(&mut self, bdf: Bdf, offset: u8, value: u32);
    /// Writes the word at `offset & !1` (a dword write would also hit the neighbouring
    /// register, e.g. the write-1-to-clear status bits next to the command register).
    fn write16(&mut self, bdf: Bdf, offset: u8, value: u16);

    /// The word at `offset & !1`.
    fn read16(&mut self, bdf: Bdf, offset: u8) -> u16 {
        let shift = u32::from(offset & 2) * 8;
        (self.read32(bdf, offset) >> shift) as u16
    }

    /// The byte at `offset`.
    fn read8(&mut self, bdf: Bdf, offset: u8) -> u8 {
        let shift = u32::from(offset & 3) * 8;
        (self.read32(bdf, offset) >> shift) as u8
    }
}

/// Standard configuration-header offsets.
pub mod reg {
    /// Vendor ID (u16).
    pub const VENDOR: u8 = 0x00;
    /// Device ID (u16).
    pub const DEVICE: u8 = 0x02;
    /// Command register (u16).
    pub const COMMAND: u8 = 0x04;
    /// Status register (u16).
    pub const STATUS: u8 = 0x06;
    /// Revision ID (u8), then prog-if, subclass, class.
    pub const REVISION: u8 = 0x08;
    /// Header type (u8); bit 7: multi-function device.
    pub const HEADER_TYPE: u8 = 0x0e;
    /// First BAR.
    pub const BAR0: u8 = 0x10;
    /// Bridge: secondary bus number (u8).
    pub const SECONDARY_BUS: u8 = 0x19;
    /// Subsystem vendor ID (u16, type-0 header).
    pub const SUBSYS_VENDOR: u8 = 0x2c;
    /// Capabilities pointer (u8).
    pub const CAP_PTR: u8 = 0x34;
    /// Interrupt line (u8).
    pub const INTERRUPT_LINE: u8 = 0x3c;

    /// Command: respond to I/O space.
    pub const CMD_IO: u16 = 1 << 0;
    /// Command: respond to memory space.
    pub const CMD_MEMORY: u16 = 1 << 1;
    /// Command: bus master (the device may DMA).
    pub const CMD_MASTER: u16 = 1 << 2;
    /// Command: legacy INTx disabled.
    pub const CMD_INTX_DISABLE: u16 = 1 << 10;
    /// Status: the capability list exists.
    pub const STATUS_CAP_LIST: u16 = 1 << 4;
}

/// Capability IDs used here.
pub mod cap {
    /// MSI.
    pub const MSI: u8 = 0x05;
    /// Vendor specific (virtio's transport structures).
    pub const VENDOR: u8 = 0x09;
    /// PCI Express.
    pub const EXP: u8 = 0x10;
    /// MSI-X.
    pub const MSIX: u8 = 0x11;
}

/// One base address register as the firmware programmed it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bar {
    /// Not implemented (or the upper half of a 64-bit BAR).
    None,
    /// I/O space at `port`.
    Io {
        /// First port.
        port: u32,
    },
    /// Memory space at `addr`.
    Mem {
        /// Bus address (may be above 4 GiB for a 64-bit BAR).
        addr: u64,
        /// 64-bit BAR (takes two slots).
        is64: bool,
        /// Prefetchable.
        prefetch: bool,
    },
}

/// One PCI function found by [`enumerate`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Function {
    /// Its address.
    pub bdf: Bdf,
    /// Vendor ID.
    pub vendor: u16,
    /// Device ID.
    pub device: u16,
    /// Class code: base class << 16 | subclass << 8 | prog-if.
    pub class: u32,
    /// Revision ID.
    pub revision: u8,
    /// Header type without the multi-function bit (0 device, 1 bridge).
    pub header_type: u8,
    /// Subsystem vendor and device (type-0 headers; 0 otherwise).
    pub subsystem: (u16, u16),
    /// The BARs (6 for devices, 2 for bridges, the rest `None`).
    pub bars: [Bar; 6],
    /// Interrupt line the firmware assigned (legacy INTx; informational).
    pub irq_line: u8,
}

impl Function {
    /// Base class and subclass (`0x0100` = SCSI storage controller).
    pub const fn class16(&self) -> u16 {
        (self.class >> 8) as u16
    }
}

/// Reads the function header at `bdf`, or `None` if nothing answers there.
pub fn probe(cs: &mut impl ConfigSpace, bdf: Bdf) -> Option<Function> {
    let id = cs.read32(bdf, reg::VENDOR);
    let vendor = id as u16;
    if vendor == 0xffff || vendor == 0 {
        return None;
    }
    let rev_class = cs.read32(bdf, reg::REVISION);
    let header_type = cs.read8(bdf, reg::HEADER_TYPE) & 0x7f;
    let nbars = match header_type {
        0 => 6,
        1 => 2,
        _ => 0,
    };
    let mut bars = [Bar::None; 6];
    let mut i = 0;
    while i < nbars {
        let off = reg::BAR0 + 4 * i as u8;
        let lo = cs.read32(bdf, off);
        if lo & 1 == 1 {
            bars[i] = Bar::Io { port: lo & !3 };
            i += 1;
            continue;
        }
        let is64 = (lo >> 1) & 3 == 2;
        let prefetch = lo & 8 != 0;
        let mut addr = u64::from(lo & !0xf);
        if is64 && i + 1 < nbars {
            addr |= u64::from(cs.read32(bdf, off + 4)) << 32;
        }
        if addr != 0 {
            bars[i] = Bar::Mem {
                addr,
                is64,
                prefetch,
            };
        }
        i += if is64 { 2 } else { 1 };
    }
    let subsystem = if header_type == 0 {
        let s = cs.read32(bdf, reg::SUBSYS_VENDOR);
        (s as u16, (s >> 16) as u16)
    } else {
        (0, 0)
    };
    Some(Function {
        bdf,
        vendor,
        device: (id >> 16) as u16,
        class: rev_class >> 8,
        revision: rev_class as u8,
        header_type,
        subsystem,
        bars,
        irq_line: cs.read8(bdf, reg::INTERRUPT_LINE),
    })
}

/// Most buses [`enumerate`] descends into (bridges form a tree; a broken one must not
/// loop us).
const MAX_BUSES: usize = 32;

/// Every function on bus 0 and behind PCI-to-PCI bridges, in depth-first bus order (the
/// order Linux assigns names in).
pub fn enumerate(cs: &mut impl ConfigSpace) -> Vec<Function> {
    let mut found = Vec::new();
    let mut buses: Vec<u8> = alloc::vec![0];
    let mut seen: Vec<u8> = Vec::new();
    while let Some(bus) = buses.pop() {
        if seen.contains(&bus) || seen.len() >= MAX_BUSES {
            continue;
        }
        seen.push(bus);
        let mut children = Vec::new();
        for dev in 0..32u8 {
            let Some(f0) = probe(cs, Bdf::new(bus, dev, 0)) else {
                continue;
            };
            let multi = cs.read8(f0.bdf, reg::HEADER_TYPE) & 0x80 != 0;
            let nfunc = if multi { 8 } else { 1 };
            for func in 0..nfunc {
                let f = if func == 0 {
                    Some(f0)
                } else {
                    probe(cs, Bdf::new(bus, dev, func))
                };
                let Some(f) = f else { continue };
                if f.header_type == 1 {
                    let sec = cs.read8(f.bdf, reg::SECONDARY_BUS);
                    if sec != 0 && sec != bus {
                        children.push(sec);
                    }
                }
                found.push(f);
            }
        }
        // Depth-first in ascending order: push in reverse so the lowest pops first.
        children.sort_unstable_by(|a, b| b.cmp(a));
        buses.extend(children);
    }
    found
}

/// Upper bound on capability-list entries (48 = (256 - 64) / 4 as Linux's
/// `PCI_FIND_CAP_TTL`): a looping list ends there.
const CAP_TTL: usize = 48;

/// The capability list of `bdf`: `(offset, id)` pairs in list order.
pub fn capabilities(cs: &mut impl ConfigSpace, bdf: Bdf) -> Vec<(u8, u8)> {
    let mut caps = Vec::new();
    if cs.read16(bdf, reg::STATUS) & reg::STATUS_CAP_LIST == 0 {
        return caps;
    }
    let mut ptr = cs.read8(bdf, reg::CAP_PTR) & !3;
    for _ in 0..CAP_TTL {
        if ptr < 0x40 {
            break;
        }
        let hdr = cs.read16(bdf, ptr);
        let id = hdr as u8;
        if id == 0xff {
            break;
        }
        caps.push((ptr, id));
        ptr = ((hdr >> 8) as u8) & !3;
    }
    caps
}

/// The first capability `id` of `bdf`.
pub fn find_capability(cs: &mut impl ConfigSpace, bdf: Bdf, id: u8) -> Option<u8> {
    capabilities(cs, bdf)
        .into_iter()
        .find(|&(_, i)| i == id)
        .map(|(off, _)| off)
}

/// Sets bits in the command register.
pub fn enable(cs: &mut impl ConfigSpace, bdf: Bdf, bits: u16) {
    let cmd = cs.read16(bdf, reg::COMMAND);
    if cmd & bits != bits {
        cs.write16(bdf, reg::COMMAND, cmd | bits);
    }
}

/// A short name for a class code (Linux's `pci.ids` class names, a few of them).
pub fn class_name(class16: u16) -> &'static str {
    match class16 {
        0x0000 => "Non-VGA unclassified device",
        0x0100 => "SCSI storage controller",
        0x0101 => "IDE interface",
        0x0106 => "SATA controller",
        0x0108 => "Non-Volatile memory controller",
        0x0180 => "Mass storage controller",
        0x0200 => "Ethernet controller",
        0x0300 => "VGA compatible controller",
        0x0403 => "Audio device",
        0x0600 => "Host bridge",
        0x0601 => "ISA bridge",
        0x0604 => "PCI bridge",
        0x0680 => "Bridge",
        0x0700 => "Serial controller",
        0x0c03 => "USB controller",
        0x0c05 => "SMBus",
        0x00ff => "Unassigned class",
        _ => match class16 >> 8 {
            0x01 => "Mass storage controller",
            0x02 => "Network controller",
            0x03 => "Display controller",
            0x06 => "Bridge",
            0x08 => "System peripheral",
            0x0c => "Serial bus controller",
            _ => "Unclassified device",
        },
    }
}

/// One `lspci -nn`-style line: `00:04.0 SCSI storage controller [0100]: 1af4:1042 (rev 01)`
/// (vendor and device names are left out: dom0 carries no `pci.ids`).
pub struct LspciLine<'a>(pub &'a Function);

impl fmt::Display for LspciLine<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.0;
        write!(
            f,
            "{} {} [{:04x}]: {:04x}:{:04x}",
            d.bdf,
            class_name(d.class16()),
            d.class16(),
            d.vendor,
            d.device
        )?;
        if d.revision != 0 {
            write!(f, " (rev {:02x})", d.revision)?;
        }
        Ok(())
    }
}

#[cfg(test)]
pub mod fake {
    //! A fake PCI bus for host tests: functions with a 256-byte configuration space each.

    use super::{Bdf, ConfigSpace};
    use std::collections::BTreeMap;

    /// The fake bus.
    #[derive(Default)]
    pub struct FakeBus {
        /// Configuration space per function.
        pub funcs: BTreeMap<Bdf, [u8; 256]>,
    }

    impl FakeBus {
        /// Adds a function; returns its config space to fill.
        pub fn add(&mut self, bdf: Bdf, vendor: u16, device: u16, class: u32) -> &mut [u8; 256] {
            let c = self.funcs.entry(bdf).or_insert([0; 256]);
            c[0..2].copy_from_slice(&vendor.to_le_bytes());
            c[2..4].copy_from_slice(&device.to_le_bytes());
            c[8..12].copy_from_slice(&((class << 8) | 1).to_le_bytes());
            c
        }

        /// Appends capability `id` with `body` at `off`, linking it after the list's tail.
        pub fn add_cap(&mut self, bdf: Bdf, off: u8, id: u8, body: &[u8]) {
            let c = self.funcs.get_mut(&bdf).unwrap();
            c[6] |= 0x10;
            let mut link = 0x34usize;
            while c[link] != 0 {
                link = c[link] as usize + 1;
            }
            c[link] = off;
            let o = off as usize;
            c[o] = id;
            c[o + 1] = 0;
            c[o + 2..o + 2 + body.len()].copy_from_slice(body);
        }
    }

    impl ConfigSpace for FakeBus {
        fn read32(&mut self, bdf: Bdf, offset: u8) -> u32 {
            match self.funcs.get(&bdf) {
                Some(c) => {
                    let o = (offset & !3) as usize;
                    u32::from_le_bytes(c[o..o + 4].try_into().unwrap())
                }
                None => u32::MAX,
            }
        }
        fn write32(&mut self, bdf: Bdf, offset: u8, value: u32) {
            if let Some(c) = self.funcs.get_mut(&bdf) {
                let o = (offset & !3) as usize;
                c[o..o + 4].copy_from_slice(&value.to_le_bytes());
            }
        }
        fn write16(&mut self, bdf: Bdf, offset: u8, value: u16) {
            if let Some(c) = self.funcs.get_mut(&bdf) {
                let o = (offset & !1) as usize;
                c[o..o + 2].copy_from_slice(&value.to_le_bytes());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fake::FakeBus;
    use super::*;

    #[test]
    fn enumerates_bus0_and_bridges() {
        let mut bus = FakeBus::default();
        bus.add(Bdf::new(0, 0, 0), 0x8086, 0x29c0, 0x060000);
        let blk = bus.add(Bdf::new(0, 4, 0), 0x1af4, 0x1042, 0x010000);
        // BAR1: 32-bit memory at 0xfebd1000; BAR4: 64-bit prefetchable above 4 GiB.
        blk[0x14..0x18].copy_from_slice(&0xfebd_1000u32.to_le_bytes());
        blk[0x20..0x24].copy_from_slice(&0x0000_000cu32.to_le_bytes());
        blk[0x24..0x28].copy_from_slice(&0x0000_0008u32.to_le_bytes());
        let br = bus.add(Bdf::new(0, 5, 0), 0x1b36, 0x0001, 0x060400);
        br[0x0e] = 1;
        br[0x19] = 1;
        bus.add(Bdf::new(1, 0, 0), 0x1af4, 0x1042, 0x010000);
        // A multi-function device.
        let mf = bus.add(Bdf::new(0, 0x1f, 0), 0x8086, 0x2918, 0x060100);
        mf[0x0e] = 0x80;
        bus.add(Bdf::new(0, 0x1f, 3), 0x8086, 0x2930, 0x0c0500);

        let fs = enumerate(&mut bus);
        let bdfs: Vec<String> = fs.iter().map(|f| f.bdf.to_string()).collect();
        assert_eq!(
            bdfs,
            ["00:00.0", "00:04.0", "00:05.0", "00:1f.0", "00:1f.3", "01:00.0"]
        );
        let blk = &fs[1];
        assert_eq!(blk.bars[0], Bar::None);
        assert_eq!(
            blk.bars[1],
            Bar::Mem {
                addr: 0xfebd_1000,
                is64: false,
                prefetch: false
            }
        );
        assert_eq!(
            blk.bars[4],
            Bar::Mem {
                addr: 0x8_0000_0000,
                is64: true,
                prefetch: true
            }
        );
        assert_eq!(blk.bars[5], Bar::None);
        assert_eq!(
            LspciLine(blk).to_string(),
            "00:04.0 SCSI storage controller [0100]: 1af4:1042 (rev 01)"
        );
        assert_eq!(blk.bdf.devfn(), 0x20);
    }

    #[test]
    fn capability_walk_is_bounded() {
        let mut bus = FakeBus::default();
        let b = Bdf::new(0, 3, 0);
        bus.add(b, 0x1af4, 0x1042, 0x010000);
        assert!(capabilities(&mut bus, b).is_empty());
        bus.add_cap(b, 0x98, cap::MSIX, &[0; 10]);
        bus.add_cap(b, 0x84, cap::VENDOR, &[16, 1, 4]);
        bus.add_cap(b, 0x70, cap::VENDOR, &[16, 2, 4]);
        assert_eq!(
            capabilities(&mut bus, b),
            [(0x98, cap::MSIX), (0x84, cap::VENDOR), (0x70, cap::VENDOR)]
        );
        assert_eq!(find_capability(&mut bus, b, cap::VENDOR), Some(0x84));
        assert_eq!(find_capability(&mut bus, b, cap::MSI), None);
        // A list that loops onto itself ends after CAP_TTL entries.
        bus.funcs.get_mut(&b).unwrap()[0x71] = 0x98;
        assert_eq!(capabilities(&mut bus, b).len(), CAP_TTL);
    }

    #[test]
    fn command_bits() {
        let mut bus = FakeBus::default();
        let b = Bdf::new(0, 3, 0);
        bus.add(b, 0x1af4, 0x1042, 0x010000);
        enable(&mut bus, b, reg::CMD_MEMORY | reg::CMD_MASTER);
        assert_eq!(bus.read16(b, reg::COMMAND), 6);
    }
}
