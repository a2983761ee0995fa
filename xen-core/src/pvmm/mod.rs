//! The PV memory model: Xen's page type system (`xen/arch/x86/mm.c`), portable and
//! host-tested.
//!
//! Every machine frame has a [`PageInfo`]: owner, general reference count (Xen's
//! `count_info`, including the "allocated" reference a domain holds on its own
//! frames), a type ([`PageType`]) with a type count, and the validated and pinned
//! flags. A frame's type can change only while its type count is 0. Taking type L*n*
//! validates the frame (every present entry is checked and referenced; see the rules in
//! `../shared/ABI.md` §3.3), dropping the last L*n* reference devalidates it (the
//! references its entries hold are dropped). An L1 entry with RW takes a `Writable`
//! type reference on its target, so a frame is never both writable and a page table or
//! descriptor page.
//!
//! [`PvMm`] holds the frame table, per-domain accounting (`tot_pages`/`max_pages`,
//! I/O permission) and per-vCPU state that holds references (kernel/user base
//! pointers, GDT frames, mapped LDT pages), and implements the guest operations:
//! [`PvMm::mmu_update_pt`], [`PvMm::update_va_mapping`], [`PvMm::pin`],
//! [`PvMm::unpin`], [`PvMm::new_baseptr`], [`PvMm::new_user_baseptr`],
//! [`PvMm::set_gdt`], [`PvMm::update_descriptor`], [`PvMm::relinquish`], and the
//! grant mappings of `map_grant_ref`/`unmap_grant_ref` ([`PvMm::create_grant_mapping`],
//! [`PvMm::destroy_grant_mapping`], [`PvMm::put_grant_refs`]; `grant.rs`), ...
//!
//! Page-table contents are reached through [`PageTableMemory`] (the direct map in the
//! hypervisor, a mock in tests). The caller serialises all calls (one lock around
//! `PvMm` and the page-table writes); validation is not preemptible, so one operation
//! may walk up to all of a domain's frames (Xen restarts long validations with
//! hypercall continuations; rxen does not yet). Recursion is bounded: validation and
//! devalidation nest at most one level per page-table level, plus one for a linear
//! entry (which, as in Xen, can neither chain nor point at a table with linear
//! entries).
//!
//! Differences from Xen, on purpose: a not-present entry is stored as given (Xen's
//! L1TF shadowing is not done); `mmu_update` pointers must be 8-byte aligned (Xen
//! takes a 4-byte-aligned pointer as an entry, which straddles two entries); a frame
//! whose type count reaches 0 keeps its last type (as Xen does) but it is free to
//! change.

mod desc;
mod entries;
mod grant;
mod ops;
pub mod pte;
mod refs;

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;

use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use xen_abi::{DomId, Errno, Mfn};

pub use desc::{check_descriptor, FIRST_RESERVED_GDT_ENTRY};
pub use grant::{grant_pte, is_grant_entry, GrantUnmap};
pub use ops::Relinquished;

/// Entries per page-table page.
pub const ENTRIES: usize = 512;
/// First L4 slot owned by the hypervisor (`ROOT_PAGETABLE_FIRST_XEN_SLOT`).
pub const FIRST_XEN_L4_SLOT: usize = 256;
/// Last L4 slot owned by the hypervisor (`ROOT_PAGETABLE_LAST_XEN_SLOT`).
pub const LAST_XEN_L4_SLOT: usize = 271;
/// Most GDT frames a guest may give (`FIRST_RESERVED_GDT_PAGE`).
pub const MAX_GDT_FRAMES: usize = 14;
/// LDT pages per vCPU (64 KiB, 8192 descriptors).
pub const LDT_PAGES: usize = 16;

/// Largest general or type reference count; taking one more fails (Xen's counts are
/// bit fields that refuse to wrap).
pub const MAX_COUNT: u32 = u32::MAX - 1;

/// Access to page-table (and descriptor) pages by machine frame.
///
/// `index` is always below [`ENTRIES`]; `mfn` is always a frame the frame table
/// covers. The hypervisor implements this over its direct map with volatile or atomic
/// accesses (another CPU running the guest may set Accessed/Dirty bits concurrently,
/// which is what `cmpxchg` is for).
pub trait PageTableMemory {
    /// Reads 8-byte entry `index` of frame `mfn`.
    fn read(&self, mfn: Mfn, index: usize) -> u64;
    /// Writes 8-byte entry `index` of frame `mfn`.
    fn write(&mut self, mfn: Mfn, index: usize, value: u64);
    /// Atomically replaces entry `index` with `new` if it holds `old`; otherwise
    /// returns the value found.
    fn cmpxchg(&mut self, mfn: Mfn, index: usize, old: u64, new: u64) -> Result<(), u64>;
    /// Fills the hypervisor's L4 slots 256..=271 of the L4 in `l4` that domain `dom`
    /// has just had validated (Xen's `init_xen_l4_slots`: M2P, per-domain area,
    /// hypervisor mappings). Guest values there are overwritten.
    fn init_xen_l4_slots(&mut self, dom: DomId, l4: Mfn);
    /// Every CPU that may hold TLB entries of `dom` must flush its TLB (non-global
    /// entries suffice: guest mappings are never global in the hypervisor's sense)
    /// before this returns. Called when a frame changes type between writable and
    /// page-table/descriptor use while stale translations may exist (Xen's
    /// `tlbflush_filter` + `flush_mask` in `_get_page_type`).
    fn flush_domain_tlbs(&mut self, dom: DomId);
}

/// Who a frame belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Owner {
    /// On the hypervisor's free list.
    Free,
    /// Hypervisor-private memory (heap, its page tables, M2P): never mappable.
    Hypervisor,
    /// I/O memory (`DOMID_IO`): mappable uncounted by domains with permission.
    Io,
    /// A domain's frame; `DomId::XEN` for frames shared with privileged domains
    /// (`share_xen_page_with_guest(.., dom_xen, ..)`).
    Dom(DomId),
}

/// The type of a frame (Xen's `PGT_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum PageType {
    /// No special use (`PGT_none`).
    None,
    /// Level-1 page table.
    L1,
    /// Level-2 page table.
    L2,
    /// Level-3 page table.
    L3,
    /// Level-4 page table.
    L4,
    /// GDT/LDT page (`PGT_seg_desc_page`).
    SegDesc,
    /// Has writable mappings (`PGT_writable_page`).
    Writable,
}

impl PageType {
    /// The page-table level of this type (1..=4), if it is one.
    pub fn level(self) -> Option<u8> {
        match self {
            PageType::L1 => Some(1),
            PageType::L2 => Some(2),
            PageType::L3 => Some(3),
            PageType::L4 => Some(4),
            _ => None,
        }
    }

    /// The page-table type of `level` (1..=4).
    pub fn of_level(level: u8) -> Option<PageType> {
        match level {
            1 => Some(PageType::L1),
            2 => Some(PageType::L2),
            3 => Some(PageType::L3),
            4 => Some(PageType::L4),
            _ => None,
        }
    }

    /// Whether this is a page-table type.
    pub fn is_page_table(self) -> bool {
        self.level().is_some()
    }
}

/// Bookkeeping of one machine frame (Xen's `struct page_info`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageInfo {
    /// Owner.
    pub owner: Owner,
    /// General references (mappings, table references, pins, base pointers, GDT/LDT,
    /// the allocation reference).
    pub count: u32,
    /// The owner holds its allocation reference (Xen's `PGC_allocated`).
    pub allocated: bool,
    /// A hypervisor page shared with the owner (Xen's `PGC_xen_heap`, e.g. the
    /// shared_info page): not counted in `tot_pages`, not freed to the heap.
    pub special: bool,
    /// Current (or, at type count 0, last) type.
    pub ty: PageType,
    /// Type references.
    pub type_count: u32,
    /// Contents checked for `ty` (page tables lose this when devalidated).
    pub validated: bool,
    /// Pinned by the guest (holds one general and one type reference).
    pub pinned: bool,
    /// Xen's `linear_pt_count`: > 0 = linear entries this table holds, < 0 = linear
    /// entries that point at it.
    pub linear: i32,
    /// Flush stamp when the frame's last type use ended (see `flush_domain_tlbs`).
    pub stale: u64,
}

impl PageInfo {
    const FREE: PageInfo = PageInfo {
        owner: Owner::Free,
        count: 0,
        allocated: false,
        special: false,
        ty: PageType::None,
        type_count: 0,
        validated: false,
        pinned: false,
        linear: 0,
        stale: 0,
    };
}

/// Reference-holding state of one vCPU.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VcpuMm {
    /// Kernel page-table base (`guest_table`): holds an L4 type reference.
    pub kernel_base: Option<Mfn>,
    /// User page-table base (`guest_table_user`): holds an L4 type reference.
    pub user_base: Option<Mfn>,
    /// GDT frames (`gdt_frames`): each holds a SegDesc type reference.
    pub gdt: Vec<Mfn>,
    /// Mapped LDT pages by slot: each holds a SegDesc type reference.
    pub ldt: [Option<Mfn>; LDT_PAGES],
}

/// Per-domain memory accounting.
#[derive(Clone, Debug, Default)]
pub struct DomainMm {
    /// Frames the domain owns (Xen's `tot_pages`; special pages excluded).
    pub tot_pages: u64,
    /// Limit on `tot_pages`.
    pub max_pages: u64,
    /// I/O memory ranges (inclusive machine frame numbers) the domain may map.
    pub iomem: Vec<(u64, u64)>,
    /// Whether the domain may use cache attributes in L1 entries (Xen's
    /// `cache_flush_permitted`: it has I/O memory or ports).
    pub io_caps: bool,
    /// vCPUs.
    pub vcpus: Vec<VcpuMm>,
    /// Stamp of the last TLB flush of all the domain's CPUs.
    last_flush: u64,
}

/// What TLB maintenance the caller must do after a successful operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[must_use]
pub enum Flush {
    /// Nothing beyond what the guest asked for.
    None,
    /// Reload the vCPU's CR3 (a new base pointer; this also flushes the local TLB).
    LoadCr3,
    /// Flush the TLBs of every CPU the page-table owner's vCPUs may have run on,
    /// before returning to the guest (an L2-L4 entry changed: Xen's
    /// `flush_linear_pt`).
    DomainTlbs,
}

impl Flush {
    /// The stronger of two flush requests.
    pub fn merge(self, other: Flush) -> Flush {
        self.max(other)
    }
}

/// Whether the inclusive ranges `ranges` together cover `first..=last`.
pub fn covers(ranges: &[(u64, u64)], first: u64, last: u64) -> bool {
    let mut next = first;
    // Each pass moves `next` past one range, so this ends after at most `ranges.len()`.
    for _ in 0..=ranges.len() {
        match ranges.iter().find(|&&(s, e)| s <= next && next <= e) {
            Some(&(_, e)) if e >= last => return true,
            Some(&(_, e)) => next = e + 1,
            None => return false,
        }
    }
    false
}

/// The PV memory model state: frame table, domains, vCPU references.
pub struct PvMm {
    frames: Vec<PageInfo>,
    domains: BTreeMap<DomId, DomainMm>,
    /// Frames whose last reference went away during an operation: the caller must
    /// take them ([`PvMm::take_freed`]) and put them back on its free list, after a
    /// TLB flush of the CPUs their last owner ran on.
    freed: Vec<Mfn>,
    /// Monotonic stamp for stale-TLB tracking.
    stamp: u64,
    /// Internal inconsistencies detected (a reference dropped that was not held):
    /// always 0 unless rxen has a bug.
    bugs: u64,
    /// I/O memory no domain may map writable (Xen's `mmio_ro_ranges`: the MSI-X tables
    /// the hypervisor programs), as inclusive MFN ranges.
    mmio_ro: Vec<(u64, u64)>,
}

impl PvMm {
    /// A frame table for machine frames `0..nr_frames`, all hypervisor-owned until the
    /// caller hands them out ([`PvMm::set_free`], [`PvMm::assign`], ...).
    pub fn new(nr_frames: usize) -> PvMm {
        let mut frames = Vec::new();
        frames.resize(
            nr_frames,
            PageInfo {
                owner: Owner::Hypervisor,
                ..PageInfo::FREE
            },
        );
        PvMm {
            frames,
            domains: BTreeMap::new(),
            freed: Vec::new(),
            mmio_ro: Vec::new(),
            stamp: 1,
            bugs: 0,
        }
    }

    /// Number of frames in the table.
    pub fn nr_frames(&self) -> usize {
        self.frames.len()
    }

    /// Bookkeeping of `mfn`, if the frame table covers it.
    pub fn page(&self, mfn: Mfn) -> Option<&PageInfo> {
        self.frames.get(usize::try_from(mfn.raw()).ok()?)
    }

    fn page_mut(&mut self, mfn: Mfn) -> Option<&mut PageInfo> {
        self.frames.get_mut(usize::try_from(mfn.raw()).ok()?)
    }

    /// Internal inconsistencies detected so far (0 unless rxen has a bug).
    pub fn inconsistencies(&self) -> u64 {
        self.bugs
    }

    fn bug(&mut self) {
        self.bugs = self.bugs.saturating_add(1);
    }

    /// Frames that became free since the last call. The caller returns them to its
    /// allocator; before handing one to anyone else it must make sure no CPU still
    /// holds a TLB entry for it (flush the CPUs of the domain that owned it).
    pub fn take_freed(&mut self) -> Vec<Mfn> {
        core::mem::take(&mut self.freed)
    }

    // ------------------------------------------------------------------------------
    // Frame ownership hooks for the hypervisor's allocator.

    /// Marks a hypervisor-owned frame free (boot: usable RAM).
    pub fn set_free(&mut self, mfn: Mfn) -> Result<(), Errno> {
        let p = self.page_mut(mfn).ok_or(Errno::EINVAL)?;
        if p.owner != Owner::Hypervisor || p.count != 0 {
            return Err(Errno::EBUSY);
        }
        *p = PageInfo::FREE;
        Ok(())
    }

    /// Takes a free frame for the hypervisor's own use (the allocator hands it out).
    pub fn set_hypervisor(&mut self, mfn: Mfn) -> Result<(), Errno> {
        let p = self.page_mut(mfn).ok_or(Errno::EINVAL)?;
        if p.owner != Owner::Free {
            return Err(Errno::EBUSY);
        }
        p.owner = Owner::Hypervisor;
        Ok(())
    }

    /// Marks a hypervisor-owned frame as I/O memory (`assign_io_page`): firmware
    /// areas, MMIO holes inside the frame table's range.
    pub fn set_io(&mut self, mfn: Mfn) -> Result<(), Errno> {
        let p = self.page_mut(mfn).ok_or(Errno::EINVAL)?;
        if p.owner != Owner::Hypervisor || p.count != 0 {
            return Err(Errno::EBUSY);
        }
        p.owner = Owner::Io;
        Ok(())
    }

    /// Registers a domain with a `max_pages` limit and `nr_vcpus` vCPUs.
    pub fn create_domain(
        &mut self,
        dom: DomId,
        max_pages: u64,
        nr_vcpus: usize,
    ) -> Result<(), Errno> {
        if dom.is_reserved() && dom != DomId::XEN {
            return Err(Errno::EINVAL);
        }
        if self.domains.contains_key(&dom) {
            return Err(Errno::EEXIST);
        }
        let mut d = DomainMm {
            max_pages,
            ..DomainMm::default()
        };
        d.vcpus.resize(nr_vcpus, VcpuMm::default());
        self.domains.insert(dom, d);
        Ok(())
    }

    /// Forgets a domain after [`PvMm::relinquish`]; refused (-EBUSY) while it still
    /// owns frames.
    pub fn destroy_domain(&mut self, dom: DomId) -> Result<(), Errno> {
        let d = self.domains.get(&dom).ok_or(Errno::ESRCH)?;
        if d.tot_pages != 0 || self.frames.iter().any(|p| p.owner == Owner::Dom(dom)) {
            return Err(Errno::EBUSY);
        }
        self.domains.remove(&dom);
        Ok(())
    }

    /// Accounting and vCPU state of a domain.
    pub fn domain(&self, dom: DomId) -> Option<&DomainMm> {
        self.domains.get(&dom)
    }

    /// Sets a domain's page limit (`XEN_DOMCTL_max_mem`).
    pub fn set_max_pages(&mut self, dom: DomId, max_pages: u64) -> Result<(), Errno> {
        self.domains.get_mut(&dom).ok_or(Errno::ESRCH)?.max_pages = max_pages;
        Ok(())
    }

    /// Makes I/O frames `first..=last` read-only for every domain from now on (Xen's
    /// `mmio_ro_ranges`): a writable mapping of one is silently made read-only, as Xen's
    /// `get_page_from_l1e` does.
    pub fn set_mmio_read_only(&mut self, first: Mfn, last: Mfn) {
        if first <= last && !self.mmio_ro.contains(&(first.raw(), last.raw())) {
            self.mmio_ro.push((first.raw(), last.raw()));
        }
    }

    /// Whether `mfn` is read-only I/O memory.
    pub(super) fn mmio_read_only(&self, mfn: Mfn) -> bool {
        self.mmio_ro
            .iter()
            .any(|&(s, e)| (s..=e).contains(&mfn.raw()))
    }

    /// Lets a domain map machine frames `first..=last` as I/O memory
    /// (`XEN_DOMCTL_iomem_permission`); also allows cache attributes in its L1s.
    pub fn permit_iomem(&mut self, dom: DomId, first: Mfn, last: Mfn) -> Result<(), Errno> {
        if first > last {
            return Err(Errno::EINVAL);
        }
        let d = self.domains.get_mut(&dom).ok_or(Errno::ESRCH)?;
        d.iomem.push((first.raw(), last.raw()));
        d.io_caps = true;
        Ok(())
    }

    /// Whether `dom` may map every I/O frame in `first..=last` (Xen's
    /// `iomem_access_permitted` over a range): its permitted ranges must cover it.
    pub fn iomem_range_permitted(&self, dom: DomId, first: Mfn, last: Mfn) -> bool {
        let Some(d) = self.domains.get(&dom) else {
            return false;
        };
        covers(&d.iomem, first.raw(), last.raw())
    }

    /// Sets whether a domain may use cache attributes (it has I/O ports, say).
    pub fn set_io_caps(&mut self, dom: DomId, io_caps: bool) -> Result<(), Errno> {
        self.domains.get_mut(&dom).ok_or(Errno::ESRCH)?.io_caps = io_caps;
        Ok(())
    }

    /// Gives a free frame to `dom` (`assign_pages`): owner `dom`, one general
    /// reference (the allocation reference), type none. -ENOMEM when the domain is at
    /// `max_pages`, -EBUSY if the frame is not free, -ESRCH for an unknown domain.
    pub fn assign(&mut self, mfn: Mfn, dom: DomId) -> Result<(), Errno> {
        let d = self.domains.get(&dom).ok_or(Errno::ESRCH)?;
        if d.tot_pages >= d.max_pages {
            return Err(Errno::ENOMEM);
        }
        let p = self.page(mfn).ok_or(Errno::EINVAL)?;
        if p.owner != Owner::Free {
            return Err(Errno::EBUSY);
        }
        let stale = p.stale;
        if let Some(p) = self.page_mut(mfn) {
            *p = PageInfo {
                owner: Owner::Dom(dom),
                count: 1,
                allocated: true,
                stale,
                ..PageInfo::FREE
            };
        }
        if let Some(d) = self.domains.get_mut(&dom) {
            d.tot_pages += 1;
        }
        Ok(())
    }

    /// Shares a hypervisor frame with `dom` (`share_xen_page_with_guest`), e.g. its
    /// shared_info page, or with `DomId::XEN` for frames privileged domains may map.
    /// The frame keeps a permanent type reference: `Writable` if `writable` (so it can
    /// be mapped RW but never become a page table), otherwise `None` (read-only
    /// mappings only). Not counted in `tot_pages`.
    pub fn share_xen_page(&mut self, mfn: Mfn, dom: DomId, writable: bool) -> Result<(), Errno> {
        if dom != DomId::XEN && !self.domains.contains_key(&dom) {
            return Err(Errno::ESRCH);
        }
        let p = self.page_mut(mfn).ok_or(Errno::EINVAL)?;
        if p.owner != Owner::Hypervisor || p.count != 0 {
            return Err(Errno::EBUSY);
        }
        *p = PageInfo {
            owner: Owner::Dom(dom),
            count: 1,
            allocated: true,
            special: true,
            ty: if writable {
                PageType::Writable
            } else {
                PageType::None
            },
            type_count: 1,
            validated: true,
            ..PageInfo::FREE
        };
        Ok(())
    }

    /// The caller flushed the TLBs of every CPU `dom` may have run on (UVMF_ALL /
    /// MMUEXT_TLB_FLUSH_ALL / a full flush at context switch): later type changes of
    /// frames whose use ended before this need no flush of their own.
    pub fn note_domain_flushed(&mut self, dom: DomId) {
        self.stamp += 1;
        let stamp = self.stamp;
        if let Some(d) = self.domains.get_mut(&dom) {
            d.last_flush = stamp;
        }
    }

    fn vcpu_mut(&mut self, dom: DomId, vcpu: usize) -> Result<&mut VcpuMm, Errno> {
        self.domains
            .get_mut(&dom)
            .ok_or(Errno::ESRCH)?
            .vcpus
            .get_mut(vcpu)
            .ok_or(Errno::EINVAL)
    }

    /// Reference-holding state of a vCPU.
    pub fn vcpu(&self, dom: DomId, vcpu: usize) -> Option<&VcpuMm> {
        self.domains.get(&dom)?.vcpus.get(vcpu)
    }
}
