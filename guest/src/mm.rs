//! The portable half of the guest's PV memory management (Xen's direct-paging model,
//! ABI.md §1.3 and §3.3): page-table entry bits and indices, the entry adjustments the
//! hypervisor applies for ring-3 kernels, the pseudo-physical frame allocator, and the
//! layout of the builder's initial mapping.
//!
//! Everything here is plain data and arithmetic, tested on the host. The half that talks
//! to the hypervisor and touches page tables (mapping, pinning, switching CR3, the map
//! area) is [`crate::arch::mmu`].

/// Bytes in a page.
pub const PAGE_SIZE: u64 = 4096;
/// Entries in a page table.
pub const ENTRIES: usize = 512;

/// Page-table entry bits (x86-64, as Xen names them in `page.h`).
pub mod pte {
    /// `_PAGE_PRESENT`.
    pub const PRESENT: u64 = 1 << 0;
    /// `_PAGE_RW`.
    pub const RW: u64 = 1 << 1;
    /// `_PAGE_USER`.
    pub const USER: u64 = 1 << 2;
    /// `_PAGE_PWT`.
    pub const PWT: u64 = 1 << 3;
    /// `_PAGE_PCD`.
    pub const PCD: u64 = 1 << 4;
    /// `_PAGE_ACCESSED`.
    pub const ACCESSED: u64 = 1 << 5;
    /// `_PAGE_DIRTY`.
    pub const DIRTY: u64 = 1 << 6;
    /// `_PAGE_PSE` (L2/L3) — `_PAGE_PAT` in an L1.
    pub const PSE: u64 = 1 << 7;
    /// `_PAGE_GLOBAL`.
    pub const GLOBAL: u64 = 1 << 8;
    /// Xen's private "guest kernel page" bit (`_PAGE_GUEST_KERNEL`, bit 52), added to
    /// supervisor L1 entries of 64-bit PV guests.
    pub const GUEST_KERNEL: u64 = 1 << 52;
    /// Bit 62, reserved to the hypervisor's grant mappings (`_PAGE_GNTTAB`): refused in
    /// guest L1 entries.
    pub const GNTTAB: u64 = 1 << 62;
    /// `_PAGE_NX`.
    pub const NX: u64 = 1 << 63;
    /// The machine-address bits of an entry.
    pub const ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;

    /// Flags for a kernel read-only data mapping.
    pub const KERNEL_RO: u64 = PRESENT | ACCESSED;
    /// Flags for a kernel read-write data mapping.
    pub const KERNEL_RW: u64 = PRESENT | RW | ACCESSED | DIRTY;
    /// Flags for an entry of an L2/L3/L4 pointing at the next-lower table (what Xen's
    /// builders write).
    pub const TABLE: u64 = PRESENT | RW | USER | ACCESSED | DIRTY;
}

/// The machine frame number in an entry.
pub const fn pte_mfn(e: u64) -> u64 {
    (e & pte::ADDR_MASK) >> 12
}

/// An entry mapping `mfn` with `flags`.
pub const fn pte_of(mfn: u64, flags: u64) -> u64 {
    ((mfn << 12) & pte::ADDR_MASK) | (flags & !pte::ADDR_MASK)
}

/// What Xen stores for a present L1 entry of a 64-bit PV guest (`adjust_guest_l1e`): a
/// supervisor entry gets `_PAGE_USER | _PAGE_GUEST_KERNEL`; a user entry (no guest-kernel
/// bit) gets `_PAGE_USER | _PAGE_GLOBAL`. Not-present entries are stored unchanged.
pub const fn xen_adjusted_l1e(e: u64) -> u64 {
    if e & pte::PRESENT == 0 {
        return e;
    }
    let mut e = e;
    if e & pte::USER == 0 {
        e |= pte::GUEST_KERNEL | pte::USER;
    }
    if e & pte::GUEST_KERNEL == 0 {
        e |= pte::GLOBAL | pte::USER;
    }
    e
}

/// Undo [`xen_adjusted_l1e`] for a supervisor entry read back from a live L1, so that it
/// can be written into another table as the guest meant it.
pub const fn guest_view_l1e(e: u64) -> u64 {
    if e & pte::PRESENT != 0 && e & pte::GUEST_KERNEL != 0 {
        e & !(pte::GUEST_KERNEL | pte::USER)
    } else {
        e
    }
}

/// Index of `va` in the table of `level` (1 = L1 ... 4 = L4).
pub const fn table_index(va: u64, level: u32) -> usize {
    ((va >> (12 + 9 * (level - 1))) & 0x1ff) as usize
}

/// Whether L4 slot `i` belongs to the hypervisor (slots 256–271, ABI.md §1.7).
pub const fn is_xen_l4_slot(i: usize) -> bool {
    i >= 256 && i < 272
}

/// Sign-extend a 48-bit address built from table indices.
pub const fn canonical(va: u64) -> u64 {
    if va & (1 << 47) != 0 {
        va | 0xffff_0000_0000_0000
    } else {
        va & 0x0000_ffff_ffff_ffff
    }
}

/// The builder's start-of-day layout as a kernel sees it (ABI.md §1.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BootLayout {
    /// `start_info.nr_pages`.
    pub nr_pages: u64,
    /// PFN of the initial L4 (`pt_base`).
    pub pt_pfn: u64,
    /// `start_info.nr_pt_frames`.
    pub nr_pt_frames: u64,
    /// First PFN past the page tables and the boot stack page that follows them.
    pub first_free_pfn: u64,
    /// First PFN that the initial mapping does not map (the end of the 4 MiB-aligned
    /// region the builder maps from `VIRT_BASE`).
    pub mapped_end_pfn: u64,
}

impl BootLayout {
    /// The layout from `start_info` fields: `pt_base` is a VA inside the initial mapping
    /// (PFN = (VA − VIRT_BASE) / 4096); the boot stack page follows the tables.
    /// `mapped_end_pfn` starts as `first_free_pfn` until the mapping was walked.
    pub fn new(nr_pages: u64, pt_base: u64, nr_pt_frames: u64, virt_base: u64) -> Option<Self> {
        let pt_pfn = pt_base.checked_sub(virt_base)? / PAGE_SIZE;
        let first_free_pfn = pt_pfn.checked_add(nr_pt_frames)?.checked_add(1)?;
        if first_free_pfn > nr_pages || nr_pt_frames == 0 {
            return None;
        }
        Some(BootLayout {
            nr_pages,
            pt_pfn,
            nr_pt_frames,
            first_free_pfn,
            mapped_end_pfn: first_free_pfn,
        })
    }

    /// Whether `pfn` is one of the builder's page-table frames.
    pub fn is_boot_pt(&self, pfn: u64) -> bool {
        pfn >= self.pt_pfn && pfn < self.pt_pfn + self.nr_pt_frames
    }
}

/// Most pseudo-physical frames the allocator tracks (1 GiB of guest RAM); frames above are
/// left alone.
pub const MAX_TRACKED_PFNS: usize = 1 << 18;
const WORDS: usize = MAX_TRACKED_PFNS / 64;

/// Which of the two pools a frame comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pool {
    /// Inside the builder's initial mapping: the frame has a RW mapping at
    /// `VIRT_BASE + pfn * 4096` (unless made read-only, e.g. as a page table).
    Mapped,
    /// Above the initial mapping: not mapped anywhere until the kernel maps it.
    Unmapped,
}

/// A page-frame allocator over the domain's free pseudo-physical frames: a bitmap (set =
/// free) over `[first_free_pfn, nr_pages)`, split at `mapped_end_pfn` into two pools.
pub struct FrameAllocator {
    free: [u64; WORDS],
    mapped_end: u64,
    end: u64,
    nr_free: u64,
}

impl FrameAllocator {
    /// An allocator with no free frames.
    pub const fn empty() -> Self {
        FrameAllocator {
            free: [0; WORDS],
            mapped_end: 0,
            end: 0,
            nr_free: 0,
        }
    }

    /// Free every frame of `layout` past the boot region.
    pub fn init(&mut self, layout: &BootLayout) {
        *self = FrameAllocator::empty();
        self.end = layout.nr_pages.min(MAX_TRACKED_PFNS as u64);
        self.mapped_end = layout.mapped_end_pfn.min(self.end);
        for pfn in layout.first_free_pfn..self.end {
            self.free(pfn);
        }
    }

    /// Free frames left.
    pub fn nr_free(&self) -> u64 {
        self.nr_free
    }

    /// First PFN of the unmapped pool.
    pub fn mapped_end(&self) -> u64 {
        self.mapped_end
    }

    /// Which pool `pfn` belongs to.
    pub fn pool_of(&self, pfn: u64) -> Pool {
        if pfn < self.mapped_end {
            Pool::Mapped
        } else {
            Pool::Unmapped
        }
    }

    /// Whether `pfn` is free.
    pub fn is_free(&self, pfn: u64) -> bool {
        pfn < self.end && self.free[(pfn / 64) as usize] & (1 << (pfn % 64)) != 0
    }

    /// Return `pfn` to the allocator (ignored when out of range or already free).
    pub fn free(&mut self, pfn: u64) {
        if pfn >= self.end || self.is_free(pfn) {
            return;
        }
        self.free[(pfn / 64) as usize] |= 1 << (pfn % 64);
        self.nr_free += 1;
    }

    /// Take a free frame from `pool`: the lowest one for the mapped pool, the highest for
    /// the unmapped pool (so that the two ends meet last).
    pub fn alloc(&mut self, pool: Pool) -> Option<u64> {
        let pfn = match pool {
            Pool::Mapped => self.find_up(0, self.mapped_end)?,
            Pool::Unmapped => self.find_down(self.mapped_end, self.end)?,
        };
        self.free[(pfn / 64) as usize] &= !(1 << (pfn % 64));
        self.nr_free -= 1;
        Some(pfn)
    }

    /// Take a specific free frame.
    pub fn take(&mut self, pfn: u64) -> bool {
        if !self.is_free(pfn) {
            return false;
        }
        self.free[(pfn / 64) as usize] &= !(1 << (pfn % 64));
        self.nr_free -= 1;
        true
    }

    fn find_up(&self, from: u64, to: u64) -> Option<u64> {
        let mut w = from / 64;
        while w * 64 < to {
            let mut bits = self.free[w as usize];
            if w == from / 64 {
                bits &= !0u64 << (from % 64);
            }
            if bits != 0 {
                let pfn = w * 64 + u64::from(bits.trailing_zeros());
                return (pfn < to).then_some(pfn);
            }
            w += 1;
        }
        None
    }

    fn find_down(&self, from: u64, to: u64) -> Option<u64> {
        (from..to).rev().find(|&p| self.is_free(p))
    }
}

/// Median of a small sample (sorts it in place); 0 for an empty one.
pub fn median(v: &mut [u64]) -> u64 {
    v.sort_unstable();
    match v.len() {
        0 => 0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries() {
        assert_eq!(pte_mfn(0x8000_0000_1234_5067), 0x12345);
        assert_eq!(pte_of(0x12345, pte::KERNEL_RW), 0x1234_5063);
        assert_eq!(table_index(0xffff_ffff_8010_0000, 4), 511);
        assert_eq!(table_index(0xffff_ffff_8010_0000, 3), 510);
        assert_eq!(table_index(0xffff_ffff_8010_0000, 2), 0);
        assert_eq!(table_index(0xffff_ffff_8010_0000, 1), 0x100);
        assert_eq!(canonical(511 << 39), 0xffff_ff80_0000_0000);
        assert!(is_xen_l4_slot(256) && is_xen_l4_slot(271));
        assert!(!is_xen_l4_slot(255) && !is_xen_l4_slot(272));
    }

    #[test]
    fn adjustment() {
        let k = pte_of(5, pte::KERNEL_RW);
        let a = xen_adjusted_l1e(k);
        assert_eq!(a, k | pte::USER | pte::GUEST_KERNEL);
        assert_eq!(xen_adjusted_l1e(a), a);
        assert_eq!(guest_view_l1e(a), k);
        let u = pte_of(5, pte::KERNEL_RW | pte::USER);
        assert_eq!(xen_adjusted_l1e(u), u | pte::GLOBAL);
        assert_eq!(xen_adjusted_l1e(0x1234_5000), 0x1234_5000);
    }

    #[test]
    fn layout() {
        let base = 0xffff_ffff_8000_0000;
        let l = BootLayout::new(1000, base + 0x200 * 4096, 5, base).unwrap();
        assert_eq!(l.pt_pfn, 0x200);
        assert_eq!(l.first_free_pfn, 0x206);
        assert!(l.is_boot_pt(0x204) && !l.is_boot_pt(0x205));
        assert!(BootLayout::new(10, base + 0x200 * 4096, 5, base).is_none());
        assert!(BootLayout::new(1000, 0x1000, 5, base).is_none());
    }

    #[test]
    fn allocator() {
        let base = 0xffff_ffff_8000_0000;
        let mut l = BootLayout::new(300, base + 10 * 4096, 3, base).unwrap();
        l.mapped_end_pfn = 100;
        let mut a = FrameAllocator::empty();
        a.init(&l);
        assert_eq!(a.nr_free(), 300 - 14);
        assert_eq!(a.alloc(Pool::Mapped), Some(14));
        assert_eq!(a.alloc(Pool::Unmapped), Some(299));
        assert!(!a.is_free(14));
        a.free(14);
        assert!(a.is_free(14));
        a.free(14);
        assert_eq!(a.nr_free(), 300 - 15);
        assert!(a.take(50));
        assert!(!a.take(50));
        let mut n = 0;
        while a.alloc(Pool::Mapped).is_some() {
            n += 1;
        }
        assert_eq!(n, 100 - 14 - 1);
        assert_eq!(a.pool_of(99), Pool::Mapped);
        assert_eq!(a.pool_of(100), Pool::Unmapped);
        let mut m = 0;
        while let Some(p) = a.alloc(Pool::Unmapped) {
            assert!(p >= 100);
            m += 1;
        }
        assert_eq!(m, 199);
        assert_eq!(a.nr_free(), 0);
    }

    #[test]
    fn medians() {
        assert_eq!(median(&mut []), 0);
        assert_eq!(median(&mut [5, 1, 3]), 3);
        assert_eq!(median(&mut [4, 1, 3, 2]), 2);
    }
}
