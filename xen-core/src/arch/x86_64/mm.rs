//! Machine memory: the frame allocator, the frame table (owner and type of every
//! machine frame), the hypervisor's direct map, the read-only M2P table guests read at
//! `MACH2PHYS_VIRT_START`, and helpers to read and write page-table entries.

use super::multiboot::BootInfo;
use alloc::vec::Vec;
use spin::Mutex;
use xen_abi::{DomId, Mfn};

/// Start of the direct map of all machine memory (Xen's DIRECTMAP_VIRT_START, slot 262).
pub const DIRECTMAP_START: u64 = 0xffff_8300_0000_0000;
/// Where the hypervisor image is linked (Xen's XEN_VIRT_START, slot 261).
pub const XEN_VIRT_START: u64 = 0xffff_82d0_4000_0000;

/// Page-table entry bits.
pub mod pte {
    /// Present.
    pub const P: u64 = 1 << 0;
    /// Writable.
    pub const RW: u64 = 1 << 1;
    /// User-accessible (ring 3).
    pub const U: u64 = 1 << 2;
    /// Write-through.
    pub const PWT: u64 = 1 << 3;
    /// Cache disable.
    pub const PCD: u64 = 1 << 4;
    /// Accessed.
    pub const A: u64 = 1 << 5;
    /// Dirty.
    pub const D: u64 = 1 << 6;
    /// Large page (in L2/L3), PAT (in L1).
    pub const PS: u64 = 1 << 7;
    /// Global.
    pub const G: u64 = 1 << 8;
    /// No-execute.
    pub const NX: u64 = 1 << 63;
    /// Machine address bits of an entry.
    pub const ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;
}

/// What a machine frame is used for (a reduced form of Xen's page types; the full
/// type/reference counting of the PV MMU is a later issue).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameUse {
    /// Not RAM, or reserved by firmware/the hypervisor image.
    Reserved,
    /// On the free list.
    Free,
    /// Hypervisor-owned (heap, tables, shared_info, M2P).
    Xen,
    /// A domain's ordinary memory.
    Guest,
    /// A domain's page-table page of the given level (1..=4): never mapped writable.
    PageTable(u8),
}

/// Per-frame bookkeeping (Xen's `struct page_info`, reduced).
#[derive(Clone, Copy, Debug)]
pub struct FrameInfo {
    /// Owning domain (DomId::XEN for hypervisor frames).
    pub owner: DomId,
    /// Current use.
    pub kind: FrameUse,
}

/// The frame allocator and frame table.
pub struct Frames {
    free: Vec<u64>,
    /// One entry per machine frame below `max_mfn`.
    pub table: Vec<FrameInfo>,
    /// Frames of usable RAM in total.
    pub total: u64,
}

/// The machine's frames.
pub static FRAMES: Mutex<Frames> = Mutex::new(Frames {
    free: Vec::new(),
    table: Vec::new(),
    total: 0,
});

/// Frames backing the M2P table, in order (entry `i` of the table lives in frame `i / 512`).
static M2P_FRAMES: Mutex<Vec<u64>> = Mutex::new(Vec::new());

/// The machine's RAM ranges, for `XENMEM_machine_memory_map`.
static MACHINE_MAP: Mutex<Vec<(u64, u64)>> = Mutex::new(Vec::new());

/// Machine frames holding the M2P table, in table order.
pub fn m2p_frames() -> Vec<u64> {
    M2P_FRAMES.lock().clone()
}

/// The machine memory map (usable RAM) as E820 entries.
pub fn machine_memory_map() -> Vec<xen_abi::memory::E820Entry> {
    MACHINE_MAP
        .lock()
        .iter()
        .map(|&(s, e)| xen_abi::memory::E820Entry {
            addr: s,
            size: e - s,
            kind: xen_abi::memory::E820_RAM,
        })
        .collect()
}

impl Frames {
    /// Takes a free frame and records who owns it.
    pub fn alloc(&mut self, owner: DomId, kind: FrameUse) -> Option<Mfn> {
        let mfn = self.free.pop()?;
        if let Some(info) = self.table.get_mut(mfn as usize) {
            *info = FrameInfo { owner, kind };
        }
        zero_frame(Mfn::new(mfn));
        Some(Mfn::new(mfn))
    }

    /// Returns a frame to the free list.
    pub fn free(&mut self, mfn: Mfn) {
        if let Some(info) = self.table.get_mut(mfn.raw() as usize) {
            if info.kind != FrameUse::Free && info.kind != FrameUse::Reserved {
                *info = FrameInfo {
                    owner: DomId::INVALID,
                    kind: FrameUse::Free,
                };
                self.free.push(mfn.raw());
                set_m2p(mfn, u64::MAX);
            }
        }
    }

    /// Frames on the free list.
    pub fn free_count(&self) -> u64 {
        self.free.len() as u64
    }

    /// Bookkeeping of one frame, if it exists.
    pub fn info(&self, mfn: Mfn) -> Option<FrameInfo> {
        self.table.get(usize::try_from(mfn.raw()).ok()?).copied()
    }

    /// Changes the recorded use of a frame the caller has checked.
    pub fn set(&mut self, mfn: Mfn, info: FrameInfo) {
        if let Some(slot) = self.table.get_mut(mfn.raw() as usize) {
            *slot = info;
        }
    }

    /// Highest machine frame number + 1.
    pub fn max_mfn(&self) -> u64 {
        self.table.len() as u64
    }
}

/// Virtual address of a machine address in the direct map.
pub fn maddr_to_virt(maddr: u64) -> *mut u8 {
    (DIRECTMAP_START + maddr) as *mut u8
}

/// Zeroes one frame.
pub fn zero_frame(mfn: Mfn) {
    // SAFETY: every RAM frame is mapped in the direct map; the frame has just been taken
    // off the free list (or is otherwise owned by the caller), so nothing else uses it.
    unsafe { core::ptr::write_bytes(maddr_to_virt(mfn.raw() << 12), 0, 4096) };
}

/// Reads entry `index` of the page table in frame `table`.
pub fn read_entry(table: Mfn, index: usize) -> u64 {
    let p = maddr_to_virt((table.raw() << 12) + (index as u64 & 511) * 8) as *const u64;
    // SAFETY: the address is inside one direct-mapped frame and 8-byte aligned; the
    // entry may be concurrently changed only by the hypervisor itself.
    unsafe { core::ptr::read_volatile(p) }
}

/// Writes entry `index` of the page table in frame `table`.
pub fn write_entry(table: Mfn, index: usize, value: u64) {
    let p = maddr_to_virt((table.raw() << 12) + (index as u64 & 511) * 8) as *mut u64;
    // SAFETY: as for read_entry; the caller has validated `value` for this table.
    unsafe { core::ptr::write_volatile(p, value) };
}

/// Sets M2P[mfn] = pfn.
pub fn set_m2p(mfn: Mfn, pfn: u64) {
    let frames = M2P_FRAMES.lock();
    let Some(&frame) = frames.get((mfn.raw() / 512) as usize) else {
        return;
    };
    write_entry(Mfn::new(frame), (mfn.raw() % 512) as usize, pfn);
}

unsafe extern "C" {
    static boot_l4: [u64; 512];
    static __image_start: u8;
    static __bss_end: u8;
}

/// Machine frame of the idle page table's L4 (the boot L4, kept for the hypervisor).
pub fn idle_l4() -> Mfn {
    let va = (&raw const boot_l4) as u64;
    Mfn::new((va - XEN_VIRT_START) >> 12)
}

/// Physical range of the hypervisor image.
fn image_range() -> (u64, u64) {
    let (s, e) = (&raw const __image_start as u64, &raw const __bss_end as u64);
    (s - XEN_VIRT_START, e - XEN_VIRT_START)
}

const GIB: u64 = 1 << 30;

/// Builds the frame table and free list from the memory map, maps all machine memory at
/// DIRECTMAP_START and creates the M2P. Runs on the boot page tables (identity map of
/// the first GiB still present). `reserved` lists further ranges (modules, boot info).
pub fn init(info: &BootInfo, reserved: &[(u64, u64)]) {
    let (img_s, img_e) = image_range();
    let ram_end = info.ram.iter().map(|r| r.end).max().unwrap_or(0);
    *MACHINE_MAP.lock() = info.ram.iter().map(|r| (r.start, r.end)).collect();
    let max_mfn = ram_end.div_ceil(4096);
    let mut frames = FRAMES.lock();
    frames.table = alloc::vec![
        FrameInfo {
            owner: DomId::INVALID,
            kind: FrameUse::Reserved
        };
        max_mfn as usize
    ];
    let is_reserved = |a: u64| {
        a < 0x10_0000
            || (a >= img_s && a < img_e)
            || reserved.iter().any(|&(s, e)| a + 4096 > s && a < e)
    };
    // Highest first onto the stack, so that allocation hands out low frames first (the
    // direct map is being built through the boot identity map of the first GiB).
    let mut usable = Vec::new();
    for r in info.ram.iter() {
        let mut a = r.start.div_ceil(4096) * 4096;
        while a + 4096 <= r.end {
            if !is_reserved(a) {
                usable.push(a >> 12);
            }
            a += 4096;
        }
    }
    usable.sort_unstable_by(|a, b| b.cmp(a));
    frames.total = usable.len() as u64;
    for &m in usable.iter() {
        if let Some(slot) = frames.table.get_mut(m as usize) {
            slot.kind = FrameUse::Free;
        }
    }
    frames.free = usable;

    // Direct map: all of [0, max(4 GiB, end of RAM)) with 2 MiB pages; what is not RAM
    // below 4 GiB (MMIO: local APIC, IO-APIC, PCI holes) uncached.
    let map_end = ram_end.max(4 * GIB).div_ceil(GIB) * GIB;
    let nr_l3 = map_end.div_ceil(512 * GIB);
    for l3i in 0..nr_l3 {
        let l3 = early_table(&mut frames);
        for gi in 0..512u64 {
            let base = (l3i * 512 + gi) * GIB;
            if base >= map_end {
                break;
            }
            let l2 = early_table(&mut frames);
            for i in 0..512u64 {
                let pa = base + i * (2 << 20);
                let cache = if pa >= ram_end && pa < 4 * GIB {
                    pte::PCD | pte::PWT
                } else {
                    0
                };
                early_write(
                    l2,
                    i,
                    pa | pte::P | pte::RW | pte::A | pte::D | pte::PS | pte::G | cache,
                );
            }
            early_write(l3, gi, (l2 << 12) | pte::P | pte::RW | pte::A);
        }
        early_write(
            idle_l4().raw(),
            262 + l3i,
            (l3 << 12) | pte::P | pte::RW | pte::A,
        );
    }
    flush_all();

    // M2P: u64 per machine frame, mapped read-only and user-accessible at
    // MACH2PHYS_VIRT_START in every address space (Xen's RO_MPT).
    let m2p_pages = (max_mfn * 8).div_ceil(4096);
    let mut m2p = Vec::new();
    for _ in 0..m2p_pages {
        if let Some(m) = frames.alloc(DomId::XEN, FrameUse::Xen) {
            // SAFETY: a fresh hypervisor frame, reachable through the direct map.
            unsafe { core::ptr::write_bytes(maddr_to_virt(m.raw() << 12), 0xff, 4096) };
            m2p.push(m.raw());
        }
    }
    let l3 = alloc_table(&mut frames);
    let mut l2 = None;
    let mut l1 = None;
    for (i, &m) in m2p.iter().enumerate() {
        let i = i as u64;
        let (l2i, l1i) = ((i >> 9) & 511, i & 511);
        if i.is_multiple_of(512 * 512) {
            let t = alloc_table(&mut frames);
            write_entry(
                l3,
                (i >> 18) as usize,
                (t.raw() << 12) | pte::P | pte::RW | pte::U | pte::A,
            );
            l2 = Some(t);
        }
        if l1i == 0 {
            let t = alloc_table(&mut frames);
            if let Some(l2) = l2 {
                write_entry(
                    l2,
                    l2i as usize,
                    (t.raw() << 12) | pte::P | pte::RW | pte::U | pte::A,
                );
            }
            l1 = Some(t);
        }
        if let Some(l1) = l1 {
            write_entry(
                l1,
                l1i as usize,
                (m << 12) | pte::P | pte::U | pte::A | pte::NX,
            );
        }
    }
    write_entry(
        idle_l4(),
        256,
        (l3.raw() << 12) | pte::P | pte::RW | pte::U | pte::A,
    );
    *M2P_FRAMES.lock() = m2p;
    drop(frames);
    flush_all();
}

fn early_table(frames: &mut Frames) -> u64 {
    let Some(m) = frames.free.pop() else {
        panic!("out of memory building the direct map");
    };
    if let Some(slot) = frames.table.get_mut(m as usize) {
        *slot = FrameInfo {
            owner: DomId::XEN,
            kind: FrameUse::Xen,
        };
    }
    assert!(
        m < (GIB >> 12),
        "direct-map table above the boot identity map"
    );
    // SAFETY: below 1 GiB, identity-mapped by the boot tables; a fresh frame.
    unsafe { core::ptr::write_bytes((m << 12) as *mut u8, 0, 4096) };
    m
}

fn early_write(table: u64, index: u64, value: u64) {
    // SAFETY: `table` is below 1 GiB (identity-mapped) or the boot L4 (also below 1 GiB:
    // the image is loaded at 2 MiB); index < 512.
    unsafe { core::ptr::write_volatile(((table << 12) + (index & 511) * 8) as *mut u64, value) };
}

fn alloc_table(frames: &mut Frames) -> Mfn {
    match frames.alloc(DomId::XEN, FrameUse::Xen) {
        Some(m) => m,
        None => panic!("out of memory for hypervisor page tables"),
    }
}

/// Removes the boot identity map of the first GiB (nothing needs it once the direct
/// map exists) so that guest address spaces start empty below the hypervisor slots.
pub fn drop_identity_map() {
    write_entry(idle_l4(), 0, 0);
    flush_all();
}

/// Flushes the whole TLB (non-global entries) by reloading CR3.
pub fn flush_all() {
    let cr3 = super::cpu::read_cr3();
    // SAFETY: reloading the current CR3 keeps the same mappings.
    unsafe { super::cpu::write_cr3(cr3) };
}
