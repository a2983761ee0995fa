//! The multiboot (v1) information block the loader hands over: memory map, modules
//! (dom0's kernel and ramdisk) and the command line.

use arrayvec::ArrayVec;

/// One usable RAM range from the memory map, in bytes.
#[derive(Clone, Copy, Debug)]
pub struct RamRange {
    /// First byte.
    pub start: u64,
    /// One past the last byte.
    pub end: u64,
}

/// A boot module (physical range and its command line).
#[derive(Clone, Copy, Debug)]
pub struct Module {
    /// First byte.
    pub start: u64,
    /// One past the last byte.
    pub end: u64,
    /// Physical address of its NUL-terminated string (0 if none).
    pub string: u64,
}

/// A firmware range of the memory map (not RAM): reserved (type 2, e.g. the BIOS ROM or
/// PCI's ECAM window), ACPI tables (3) or ACPI NVS (4).
#[derive(Clone, Copy, Debug)]
pub struct FirmwareRange {
    /// First byte.
    pub start: u64,
    /// One past the last byte.
    pub end: u64,
    /// The E820 type.
    pub kind: u32,
}

/// E820 type: reserved.
pub const E820_RESERVED: u32 = 2;

/// What rxen takes from the multiboot information.
pub struct BootInfo {
    /// Usable RAM.
    pub ram: ArrayVec<RamRange, 64>,
    /// Firmware ranges (E820 types 2, 3 and 4).
    pub firmware: ArrayVec<FirmwareRange, 32>,
    /// Modules in order: dom0's kernel first, then its ramdisk.
    pub modules: ArrayVec<Module, 8>,
    /// Physical address of the hypervisor's command line (0 if none).
    pub cmdline: u64,
}

fn read_u32(phys: u64) -> u32 {
    // SAFETY: the caller passes addresses inside the multiboot information, which the
    // loader placed in low RAM, mapped by the boot page tables' identity map.
    unsafe { core::ptr::read_unaligned(phys as *const u32) }
}

fn read_u64(phys: u64) -> u64 {
    // SAFETY: as for read_u32.
    unsafe { core::ptr::read_unaligned(phys as *const u64) }
}

/// Parses the information block at physical `mbi` (identity-mapped during boot).
pub fn parse(mbi: u64) -> BootInfo {
    let flags = read_u32(mbi);
    let mut info = BootInfo {
        ram: ArrayVec::new(),
        firmware: ArrayVec::new(),
        modules: ArrayVec::new(),
        cmdline: 0,
    };
    if flags & (1 << 2) != 0 {
        info.cmdline = u64::from(read_u32(mbi + 16));
    }
    if flags & (1 << 3) != 0 {
        let count = read_u32(mbi + 20);
        let addr = u64::from(read_u32(mbi + 24));
        for i in 0..u64::from(count.min(8)) {
            let m = addr + i * 16;
            let _ = info.modules.try_push(Module {
                start: u64::from(read_u32(m)),
                end: u64::from(read_u32(m + 4)),
                string: u64::from(read_u32(m + 8)),
            });
        }
    }
    if flags & (1 << 6) != 0 {
        let len = u64::from(read_u32(mbi + 44));
        let addr = u64::from(read_u32(mbi + 48));
        let mut off = 0;
        while off + 24 <= len + 4 {
            let e = addr + off;
            let size = u64::from(read_u32(e));
            let base = read_u64(e + 4);
            let length = read_u64(e + 12);
            let kind = read_u32(e + 20);
            if kind == 1 && length > 0 {
                let _ = info.ram.try_push(RamRange {
                    start: base,
                    end: base.saturating_add(length),
                });
            } else if (2..=4).contains(&kind) && length > 0 {
                let _ = info.firmware.try_push(FirmwareRange {
                    start: base,
                    end: base.saturating_add(length),
                    kind,
                });
            }
            off += size + 4;
        }
    } else if flags & 1 != 0 {
        let upper = u64::from(read_u32(mbi + 8));
        let _ = info.ram.try_push(RamRange {
            start: 0x10_0000,
            end: 0x10_0000 + upper * 1024,
        });
    }
    info
}

/// Reads a NUL-terminated string at a physical address (at most `max` bytes).
pub fn c_str(phys: u64, max: usize) -> &'static str {
    if phys == 0 {
        return "";
    }
    let mut len = 0;
    // SAFETY: the loader's strings are NUL-terminated in identity-mapped low memory;
    // `max` bounds the scan.
    unsafe {
        while len < max && *((phys + len as u64) as *const u8) != 0 {
            len += 1;
        }
        let bytes = core::slice::from_raw_parts(phys as *const u8, len);
        core::str::from_utf8(bytes).unwrap_or("")
    }
}
