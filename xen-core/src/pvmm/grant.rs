//! Grant mappings in L1 entries (Xen's `create_grant_pv_mapping` and
//! `replace_grant_pv_mapping` with a zero `new_addr`, `xen/arch/x86/pv/grant_table.c`).
//!
//! A grant mapping is an L1 entry of the mapper that points at another domain's frame and
//! carries bit 62 (`_PAGE_GNTTAB`). Only the hypervisor writes such entries: guests can
//! neither create them (bit 62 is in `L1_DISALLOW_MASK`, so `mmu_update`,
//! `update_va_mapping`, writable page tables and L1 validation refuse it) nor change or
//! clear them (see below). Like any L1 entry it holds a general reference on its frame and,
//! when writable, a `Writable` type reference, so the granter's frame can never become a
//! page table while mapped writable, and stays allocated while mapped even if its owner
//! dies (it is then in [`super::Relinquished::still_referenced`] and freed by the last
//! unmap). Devalidating an L1 that holds grant entries drops their references like any
//! other entry's (the grant table's pin stays until `unmap_grant_ref` or the mapper's
//! teardown).
//!
//! Difference from Xen, on purpose: Xen lets a guest's page-table update overwrite a grant
//! entry (debug builds then inject #GP: "Attempt to implicitly unmap a granted PTE");
//! rxen refuses such an update with -EINVAL and leaves the entry as it is, so a grant
//! mapping only ever goes away through `unmap_grant_ref` (or teardown). Xen's
//! `create_grant_pv_mapping` replaces whatever the slot held; rxen requires the slot to be
//! not present (-EBUSY otherwise).

use super::entries::CMPXCHG_TRIES;
use super::{pte, Owner, PageTableMemory, PageType, PvMm, ENTRIES, MAX_COUNT};
use xen_abi::grant_table::{GNTMAP_APPLICATION_MAP, GNTMAP_GUEST_AVAIL0_SHIFT, GNTMAP_READONLY};
use xen_abi::{DomId, Errno, Mfn};

/// The PTE of a grant mapping of `frame` with `GNTMAP_*` `flags` (Xen's
/// `grant_to_pte_flags` + `adjust_guest_l1e`): Present, Accessed, Dirty, NX and
/// `_PAGE_GNTTAB`; RW unless `GNTMAP_readonly`; User for `GNTMAP_application_map`; map
/// flag bits 16-18 in the available bits 9-11; then rule 7 (a kernel mapping gets User and
/// the guest-kernel bit, a user mapping Global).
pub fn grant_pte(frame: Mfn, flags: u32) -> u64 {
    let mut e = (frame.raw() << 12) & pte::ADDR_MASK;
    e |= pte::P | pte::A | pte::D | pte::NX | pte::GNTTAB;
    if flags & GNTMAP_READONLY == 0 {
        e |= pte::RW;
    }
    if flags & GNTMAP_APPLICATION_MAP != 0 {
        e |= pte::USER;
    }
    e |= (u64::from(flags >> GNTMAP_GUEST_AVAIL0_SHIFT) << 9) & pte::AVAIL;
    pte::adjust_l1(e)
}

/// Whether `e` is a grant mapping (present, with `_PAGE_GNTTAB`).
pub fn is_grant_entry(e: u64) -> bool {
    pte::is_grant_entry_bits(e)
}

/// The references of a grant entry just removed by [`PvMm::destroy_grant_mapping`],
/// still held: the mapper's TLBs may still translate to the frame, so they are dropped
/// only after the caller flushed them ([`PvMm::put_grant_refs`]). Dropping this value
/// without that leaks the references (never frees a frame early).
#[derive(Debug, PartialEq, Eq)]
#[must_use = "the grant mapping's references are dropped only by put_grant_refs"]
pub struct GrantUnmap {
    frame: Mfn,
    writable: bool,
}

impl GrantUnmap {
    /// The frame that was mapped.
    pub fn frame(&self) -> Mfn {
        self.frame
    }

    /// Whether the mapping was writable (holds a `Writable` type reference).
    pub fn writable(&self) -> bool {
        self.writable
    }
}

impl PvMm {
    /// Checks that `l1` is a validated L1 of `dom` and `index` a slot of it. Xen takes a
    /// general reference on the L1 for the duration of the update because it holds no
    /// lock over the frame table; here the caller holds the PV MMU for the whole update,
    /// nothing in it drops a reference on `l1`, so checking what [`PvMm::get_page`] would
    /// check (allocated, owned by `dom`, count not saturated) is the same rule.
    fn check_l1(&self, dom: DomId, l1: Mfn, index: usize) -> Result<(), Errno> {
        if index >= ENTRIES || !self.owns_frame(l1, dom) {
            return Err(Errno::EINVAL);
        }
        let ok = self
            .page(l1)
            .is_some_and(|p| p.ty == PageType::L1 && p.type_count > 0 && p.validated);
        if ok {
            Ok(())
        } else {
            Err(Errno::EINVAL)
        }
    }

    /// Whether [`PvMm::get_page`] of `mfn` for `dom` would succeed (the frame is
    /// allocated, `dom`'s, and its count can take one more reference), without taking
    /// the reference: for a check whose reference would be dropped again at once, under
    /// the same hold of the PV MMU (a host-only grant map, Xen's `get_paged_frame` +
    /// `put_page`).
    pub fn owns_frame(&self, mfn: Mfn, dom: DomId) -> bool {
        self.page(mfn)
            .is_some_and(|p| p.count != 0 && p.count < MAX_COUNT && p.owner == Owner::Dom(dom))
    }

    /// A `Writable` type reference on a domain's frame on which the caller holds a
    /// general reference (Xen's `get_page_type(pg, PGT_writable_page)` in
    /// `map_grant_ref` for a writable device mapping, and in `acquire_grant_for_copy`).
    /// -EINVAL if the frame is not a domain's or cannot be writable (a page table, a
    /// descriptor page, ...). Release with [`PvMm::put_writable_type`].
    pub fn get_writable_type<M: PageTableMemory>(
        &mut self,
        mem: &mut M,
        mfn: Mfn,
    ) -> Result<(), Errno> {
        if !matches!(self.page(mfn).map(|p| p.owner), Some(Owner::Dom(_))) {
            return Err(Errno::EINVAL);
        }
        self.get_page_type(mem, mfn, PageType::Writable, 0)
    }

    /// Drops a type reference taken with [`PvMm::get_writable_type`].
    pub fn put_writable_type<M: PageTableMemory>(&mut self, mem: &mut M, mfn: Mfn) {
        self.put_page_type(mem, mfn, None, 0);
    }

    /// Installs a grant mapping of `frame`, a frame of `granter`, in slot `index` of
    /// `mapper`'s L1 `l1` (`map_grant_ref` with `GNTMAP_host_map`, after the grant table
    /// pinned the grant; `flags` are the request's `GNTMAP_*`). The entry is
    /// [`grant_pte`]`(frame, flags)`; it takes a general reference on `frame` and, unless
    /// `GNTMAP_readonly`, a `Writable` type reference.
    ///
    /// Errors: `l1` not a validated L1 of `mapper` or `index` out of range → -EINVAL; the
    /// slot already present → -EBUSY; `frame` not `granter`'s (free, hypervisor, I/O,
    /// another domain's) → -EINVAL; a writable mapping of a frame that cannot be writable
    /// (a page table, a descriptor page, a read-only shared page) → -EBUSY. The grant
    /// table layer reports all of them as `GNTST_general_error`. Nothing changes on error.
    /// No TLB flush is needed (the slot was not present).
    #[allow(clippy::too_many_arguments)]
    pub fn create_grant_mapping<M: PageTableMemory>(
        &mut self,
        mem: &mut M,
        mapper: DomId,
        l1: Mfn,
        index: usize,
        frame: Mfn,
        granter: DomId,
        flags: u32,
    ) -> Result<(), Errno> {
        self.check_l1(mapper, l1, index)?;
        self.install_grant(mem, l1, index, frame, granter, flags)
    }

    fn install_grant<M: PageTableMemory>(
        &mut self,
        mem: &mut M,
        l1: Mfn,
        index: usize,
        frame: Mfn,
        granter: DomId,
        flags: u32,
    ) -> Result<(), Errno> {
        let old = mem.read(l1, index);
        if pte::present(old) {
            return Err(Errno::EBUSY);
        }
        if self.is_iomem(frame) {
            return Err(Errno::EINVAL);
        }
        match self.get_ref_any(frame) {
            Some(Owner::Dom(d)) if d == granter => {}
            Some(_) => {
                self.put_page(frame);
                return Err(Errno::EINVAL);
            }
            None => return Err(Errno::EINVAL),
        }
        let new = grant_pte(frame, flags);
        let writable = new & pte::RW != 0;
        if writable
            && self
                .get_page_type(mem, frame, PageType::Writable, 1)
                .is_err()
        {
            self.put_page(frame);
            return Err(Errno::EBUSY);
        }
        if mem.cmpxchg(l1, index, old, new).is_err() {
            // Cannot happen while the caller serialises page-table updates.
            if writable {
                self.put_page_type(mem, frame, None, 1);
            }
            self.put_page(frame);
            return Err(Errno::EBUSY);
        }
        Ok(())
    }

    /// Removes the grant mapping of `frame` from slot `index` of `mapper`'s L1 `l1`
    /// (`unmap_grant_ref` with a host address; `flags` are the mapping's `GNTMAP_*`). The
    /// slot must hold a grant entry for `frame` whose RW bit matches `GNTMAP_readonly`
    /// (Accessed/Dirty and other bits set by the CPU are ignored, as in Xen's
    /// `replace_grant_pv_mapping`). The slot is cleared; its references are returned in a
    /// [`GrantUnmap`]: flush the mapper's TLBs (once for a batch), then
    /// [`PvMm::put_grant_refs`].
    ///
    /// Errors: `l1` not a validated L1 of `mapper` (e.g. devalidated since: its grant
    /// entries' references were dropped then) or `index` out of range → -EINVAL; the slot
    /// not such a grant entry → -EINVAL. The grant table layer reports them as
    /// `GNTST_general_error` and keeps the handle (as Xen).
    pub fn destroy_grant_mapping<M: PageTableMemory>(
        &mut self,
        mem: &mut M,
        mapper: DomId,
        l1: Mfn,
        index: usize,
        frame: Mfn,
        flags: u32,
    ) -> Result<GrantUnmap, Errno> {
        self.check_l1(mapper, l1, index)?;
        let want = grant_pte(frame, flags);
        let mut old = mem.read(l1, index);
        let mut r = Err(Errno::EINVAL);
        for _ in 0..CMPXCHG_TRIES {
            let matches = is_grant_entry(old)
                && pte::frame(old) == frame.raw()
                && (old ^ want) & (pte::P | pte::RW) == 0;
            if !matches {
                break;
            }
            match mem.cmpxchg(l1, index, old, 0) {
                Ok(()) => {
                    r = Ok(GrantUnmap {
                        frame,
                        writable: old & pte::RW != 0,
                    });
                    break;
                }
                Err(found) => old = found,
            }
        }
        r
    }

    /// Drops the references of a removed grant mapping, after the mapper's TLBs were
    /// flushed. The last reference of a dead granter's frame frees it (see
    /// [`PvMm::take_freed`]).
    pub fn put_grant_refs<M: PageTableMemory>(&mut self, mem: &mut M, u: GrantUnmap) {
        if u.writable {
            self.put_page_type(mem, u.frame, None, 1);
        }
        self.put_page(u.frame);
    }
}
