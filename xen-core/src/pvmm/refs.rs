//! General and type references, validation and devalidation of page-table and
//! descriptor pages (Xen's `get_page`/`put_page`, `_get_page_type`/`_put_page_type`,
//! `promote_l*_table`/`demote_l*_table`, `validate_segdesc_page`, linear page tables).

use super::{
    check_descriptor, pte, Owner, PageTableMemory, PageType, PvMm, ENTRIES, FIRST_XEN_L4_SLOT,
    LAST_XEN_L4_SLOT, MAX_COUNT,
};
use xen_abi::{DomId, Errno, Mfn};

/// Nesting bound of validation/devalidation: one level per page-table level, one for a
/// linear entry, with margin. Reaching it means a bug, never a guest's doing.
const MAX_DEPTH: u32 = 8;

/// Whether L4 slot `i` belongs to the guest (`is_guest_l4_slot` for 64-bit guests).
pub(super) fn is_guest_l4_slot(i: usize) -> bool {
    !(FIRST_XEN_L4_SLOT..=LAST_XEN_L4_SLOT).contains(&i)
}

impl PvMm {
    /// Whether `mfn` is I/O memory: outside the frame table or owned by `DOMID_IO`
    /// (`is_iomem_page`). I/O mappings hold no references.
    pub(super) fn is_iomem(&self, mfn: Mfn) -> bool {
        self.page(mfn).is_none_or(|p| p.owner == Owner::Io)
    }

    /// Whether `dom` may map I/O frame `mfn` (`iomem_access_permitted`).
    pub(super) fn iomem_permitted(&self, dom: DomId, mfn: Mfn) -> bool {
        self.domains
            .get(&dom)
            .is_some_and(|d| d.iomem.iter().any(|&(s, e)| (s..=e).contains(&mfn.raw())))
    }

    /// Takes a general reference whatever the owner (`page_get_owner_and_reference`):
    /// fails for unallocated frames (count 0) and on overflow.
    pub(super) fn get_ref_any(&mut self, mfn: Mfn) -> Option<Owner> {
        let p = self.page_mut(mfn)?;
        if p.count == 0 || p.count >= MAX_COUNT {
            return None;
        }
        p.count += 1;
        Some(p.owner)
    }

    /// Takes a general reference on a frame `dom` owns (`get_page`).
    pub(super) fn get_page(&mut self, mfn: Mfn, dom: DomId) -> bool {
        match self.get_ref_any(mfn) {
            Some(Owner::Dom(d)) if d == dom => true,
            Some(_) => {
                self.put_page(mfn);
                false
            }
            None => false,
        }
    }

    /// Drops a general reference (`put_page`); the last one frees the frame.
    pub(super) fn put_page(&mut self, mfn: Mfn) {
        let stamp = self.stamp;
        let Some(p) = self.page_mut(mfn) else {
            self.bug();
            return;
        };
        if p.count == 0 {
            self.bug();
            return;
        }
        p.count -= 1;
        if p.count != 0 {
            return;
        }
        // The last reference: the frame leaves its owner. A writable type with count 0
        // is cleared (cleanup_page_mappings); any other type reference left is a bug.
        let (owner, special, type_count, allocated) =
            (p.owner, p.special, p.type_count, p.allocated);
        p.ty = PageType::None;
        p.validated = false;
        p.pinned = false;
        p.allocated = false;
        p.special = false;
        p.linear = 0;
        p.stale = stamp;
        if special {
            p.owner = Owner::Hypervisor;
        } else {
            p.owner = Owner::Free;
        }
        if type_count != 0 || allocated {
            self.bug();
        }
        if let Some(p) = self.page_mut(mfn) {
            p.type_count = 0;
        }
        if let Owner::Dom(d) = owner {
            if !special {
                self.freed.push(mfn);
                match self.domains.get_mut(&d) {
                    Some(dm) if dm.tot_pages > 0 => dm.tot_pages -= 1,
                    _ => self.bug(),
                }
            }
        } else {
            self.bug();
        }
    }

    /// Takes a type reference of type `ty` (`_get_page_type`), validating the frame
    /// when its type count goes from 0 to 1 and the type needs it. The caller holds a
    /// general reference.
    pub(super) fn get_page_type<M: PageTableMemory>(
        &mut self,
        mem: &mut M,
        mfn: Mfn,
        ty: PageType,
        depth: u32,
    ) -> Result<(), Errno> {
        if depth > MAX_DEPTH {
            self.bug();
            return Err(Errno::EINVAL);
        }
        let p = *self.page(mfn).ok_or(Errno::EINVAL)?;
        if p.type_count >= MAX_COUNT {
            return Err(Errno::EINVAL);
        }
        if p.type_count != 0 {
            // A reference of another type is what the type system exists to refuse;
            // a frame being validated (count 1, not validated) cannot be re-entered
            // because validation only descends levels.
            if p.ty != ty || !p.validated {
                return Err(Errno::EINVAL);
            }
            if let Some(p) = self.page_mut(mfn) {
                p.type_count += 1;
            }
            return Ok(());
        }
        // Type count 0 -> 1: the type may change.
        if p.ty != ty {
            if let Owner::Dom(d) = p.owner {
                self.flush_if_stale(mem, d, p.stale);
            }
        }
        if p.linear != 0 {
            self.bug();
        }
        let needs_validation = {
            let Some(p) = self.page_mut(mfn) else {
                return Err(Errno::EINVAL);
            };
            if p.ty != ty {
                p.ty = ty;
                p.validated = false;
            }
            p.type_count = 1;
            p.linear = 0;
            if !p.validated && matches!(ty, PageType::Writable | PageType::None) {
                p.validated = true;
            }
            !p.validated
        };
        if !needs_validation {
            return Ok(());
        }
        let owner = match p.owner {
            Owner::Dom(d) => d,
            _ => {
                self.reset_type(mfn);
                return Err(Errno::EINVAL);
            }
        };
        match self.validate(mem, mfn, ty, owner, depth) {
            Ok(()) => {
                if let Some(p) = self.page_mut(mfn) {
                    p.validated = true;
                }
                Ok(())
            }
            Err(e) => {
                // Xen: a failed validation leaves the frame untyped.
                self.reset_type(mfn);
                Err(e)
            }
        }
    }

    fn reset_type(&mut self, mfn: Mfn) {
        let stamp = self.stamp;
        if let Some(p) = self.page_mut(mfn) {
            p.ty = PageType::None;
            p.type_count = 0;
            p.validated = false;
            p.linear = 0;
            p.stale = stamp;
        }
    }

    /// Flushes `dom`'s TLBs if a frame whose previous use ended at `stale` may still be
    /// cached in them.
    fn flush_if_stale<M: PageTableMemory>(&mut self, mem: &mut M, dom: DomId, stale: u64) {
        let Some(d) = self.domains.get(&dom) else {
            return;
        };
        if stale > d.last_flush {
            mem.flush_domain_tlbs(dom);
            self.note_domain_flushed(dom);
        }
    }

    /// Drops a type reference (`_put_page_type`). `ptpg` is the page table whose entry
    /// held it, for linear-entry accounting. The last reference to a validated page
    /// table devalidates it.
    pub(super) fn put_page_type<M: PageTableMemory>(
        &mut self,
        mem: &mut M,
        mfn: Mfn,
        ptpg: Option<Mfn>,
        depth: u32,
    ) {
        let Some(p) = self.page(mfn).copied() else {
            self.bug();
            return;
        };
        if p.type_count == 0 || depth > MAX_DEPTH {
            self.bug();
            return;
        }
        if let Some(t) = ptpg {
            let t_ty = self.page(t).map(|tp| tp.ty);
            if t_ty == Some(p.ty) {
                // A linear entry of `t` goes away.
                let ok_use = p.linear < 0;
                let ok_entry = self.page(t).is_some_and(|tp| tp.linear > 0);
                if !ok_use || !ok_entry {
                    self.bug();
                } else {
                    if let Some(pm) = self.page_mut(mfn) {
                        pm.linear += 1;
                    }
                    if let Some(tm) = self.page_mut(t) {
                        tm.linear -= 1;
                    }
                }
            }
        }
        let stamp = self.stamp;
        if p.type_count == 1 && p.ty.is_page_table() && p.validated {
            if let Some(pm) = self.page_mut(mfn) {
                pm.validated = false;
            }
            self.devalidate(mem, mfn, p.ty, depth);
        }
        if let Some(pm) = self.page_mut(mfn) {
            pm.type_count -= 1;
            if pm.type_count == 0 {
                pm.stale = stamp;
            }
        }
    }

    /// `get_page_and_type_from_mfn`: a general and a type reference on a frame `dom`
    /// owns; -EINVAL if it does not own it, the type's error otherwise.
    pub(super) fn get_page_and_type_from_mfn<M: PageTableMemory>(
        &mut self,
        mem: &mut M,
        mfn: Mfn,
        ty: PageType,
        dom: DomId,
        depth: u32,
    ) -> Result<(), Errno> {
        if !self.get_page(mfn, dom) {
            return Err(Errno::EINVAL);
        }
        if let Err(e) = self.get_page_type(mem, mfn, ty, depth) {
            self.put_page(mfn);
            return Err(e);
        }
        Ok(())
    }

    /// `put_page_and_type`.
    pub(super) fn put_page_and_type_inner<M: PageTableMemory>(
        &mut self,
        mem: &mut M,
        mfn: Mfn,
        depth: u32,
    ) {
        self.put_page_type(mem, mfn, None, depth);
        self.put_page(mfn);
    }

    /// Checks and references every entry of a frame taking type `ty`
    /// (`validate_page`). On failure every reference taken is dropped again.
    fn validate<M: PageTableMemory>(
        &mut self,
        mem: &mut M,
        mfn: Mfn,
        ty: PageType,
        dom: DomId,
        depth: u32,
    ) -> Result<(), Errno> {
        match ty {
            PageType::SegDesc => {
                for i in 0..ENTRIES {
                    let d = check_descriptor(mem.read(mfn, i)).ok_or(Errno::EINVAL)?;
                    mem.write(mfn, i, d);
                }
                Ok(())
            }
            PageType::L1 => {
                for i in 0..ENTRIES {
                    let e = mem.read(mfn, i);
                    if !pte::present(e) {
                        continue;
                    }
                    match self.get_page_from_l1e(mem, e, dom, dom, depth) {
                        Ok(flip) => mem.write(mfn, i, pte::adjust_l1(e ^ flip)),
                        Err(err) => {
                            for j in (0..i).rev() {
                                let e = mem.read(mfn, j);
                                self.put_page_from_l1e(mem, e, depth);
                            }
                            return Err(err);
                        }
                    }
                }
                Ok(())
            }
            PageType::L2 | PageType::L3 | PageType::L4 => {
                let level = ty.level().unwrap_or(2);
                for i in 0..ENTRIES {
                    if level == 4 && !is_guest_l4_slot(i) {
                        continue;
                    }
                    let e = mem.read(mfn, i);
                    if !pte::present(e) {
                        continue;
                    }
                    if let Err(err) = self.get_page_from_lne(mem, level, e, mfn, dom, depth) {
                        for j in (0..i).rev() {
                            if level == 4 && !is_guest_l4_slot(j) {
                                continue;
                            }
                            let e = mem.read(mfn, j);
                            self.put_page_from_lne(mem, e, mfn, depth);
                        }
                        return Err(err);
                    }
                    let adj = if level == 4 {
                        pte::adjust_l4(e)
                    } else {
                        pte::adjust_l2_l3(e)
                    };
                    mem.write(mfn, i, adj);
                }
                if level == 4 {
                    mem.init_xen_l4_slots(dom, mfn);
                }
                Ok(())
            }
            PageType::None | PageType::Writable => Ok(()),
        }
    }

    /// Drops the references the entries of a page table hold (`devalidate_page`).
    pub(super) fn devalidate<M: PageTableMemory>(
        &mut self,
        mem: &mut M,
        mfn: Mfn,
        ty: PageType,
        depth: u32,
    ) {
        match ty {
            PageType::L1 => {
                for i in 0..ENTRIES {
                    let e = mem.read(mfn, i);
                    self.put_page_from_l1e(mem, e, depth);
                }
            }
            PageType::L2 | PageType::L3 | PageType::L4 => {
                for i in (0..ENTRIES).rev() {
                    if ty == PageType::L4 && !is_guest_l4_slot(i) {
                        continue;
                    }
                    let e = mem.read(mfn, i);
                    self.put_page_from_lne(mem, e, mfn, depth);
                }
            }
            _ => self.bug(),
        }
    }

    /// A linear (recursive) entry of `table` (level `level`) to another table of the
    /// same level (`get_lN_linear_pagetable`): read-only; an entry to the table itself
    /// takes no reference; otherwise the target must be an already validated table of
    /// this level that has no linear entries itself, and `table` must not be the target
    /// of linear entries (so linear references never chain).
    fn get_linear(&mut self, level: u8, e: u64, table: Mfn, dom: DomId) -> bool {
        if e & pte::RW != 0 {
            return false;
        }
        let target = Mfn::new(pte::frame(e));
        if target == table {
            return true;
        }
        if self.page(table).map(|p| p.owner) != Some(Owner::Dom(dom)) {
            return false;
        }
        if !self.get_page(target, dom) {
            return false;
        }
        let Some(ty) = PageType::of_level(level) else {
            self.put_page(target);
            return false;
        };
        let t = self.page(table).map(|p| p.linear).unwrap_or(-1);
        let g = self.page(target).copied();
        let ok = match g {
            Some(g) => {
                (0..i32::MAX).contains(&t)
                    && g.linear <= 0
                    && g.linear > i32::MIN
                    && g.ty == ty
                    && g.validated
                    && g.type_count > 0
                    && g.type_count < MAX_COUNT
            }
            None => false,
        };
        if !ok {
            self.put_page(target);
            return false;
        }
        if let Some(p) = self.page_mut(table) {
            p.linear += 1;
        }
        if let Some(p) = self.page_mut(target) {
            p.linear -= 1;
            p.type_count += 1;
        }
        true
    }

    /// References for an L2/L3/L4 entry (`get_page_from_l{2,3,4}e`): flags within the
    /// allowed set (no PSE, no cache bits), and the target takes the next-lower type,
    /// or is a linear entry.
    pub(super) fn get_page_from_lne<M: PageTableMemory>(
        &mut self,
        mem: &mut M,
        level: u8,
        e: u64,
        table: Mfn,
        dom: DomId,
        depth: u32,
    ) -> Result<(), Errno> {
        if e & pte::LN_DISALLOW != 0 {
            return Err(Errno::EINVAL);
        }
        let lower = PageType::of_level(level.wrapping_sub(1)).ok_or(Errno::EINVAL)?;
        let target = Mfn::new(pte::frame(e));
        match self.get_page_and_type_from_mfn(mem, target, lower, dom, depth + 1) {
            Err(Errno::EINVAL) if self.get_linear(level, e, table, dom) => Ok(()),
            r => r,
        }
    }

    /// Drops what an L2/L3/L4 entry of `table` holds (`put_page_from_l{2,3,4}e`).
    pub(super) fn put_page_from_lne<M: PageTableMemory>(
        &mut self,
        mem: &mut M,
        e: u64,
        table: Mfn,
        depth: u32,
    ) {
        let target = Mfn::new(pte::frame(e));
        if !pte::present(e) || target == table {
            return;
        }
        self.put_page_type(mem, target, Some(table), depth + 1);
        self.put_page(target);
    }

    /// References for an L1 entry (`get_page_from_l1e`) of a table owned by
    /// `l1e_owner`, mapping a frame of `pg_owner` (the same domain unless a privileged
    /// caller names a foreign one). Returns the cache bits to flip (MMIO is forced
    /// uncacheable).
    ///
    /// Errors as Xen: disallowed flags -EINVAL; I/O memory without permission -EPERM;
    /// a frame not owned by `pg_owner` (free, hypervisor, other domain) or that cannot
    /// take the writable type (page table, descriptor page, read-only shared page)
    /// -EBUSY; non-WB cache attributes on a hypervisor-shared page -EACCES.
    pub(super) fn get_page_from_l1e<M: PageTableMemory>(
        &mut self,
        mem: &mut M,
        e: u64,
        l1e_owner: DomId,
        pg_owner: DomId,
        depth: u32,
    ) -> Result<u64, Errno> {
        let io_caps = self.domains.get(&l1e_owner).is_some_and(|d| d.io_caps);
        if e & pte::l1_disallow(io_caps) != 0 {
            return Err(Errno::EINVAL);
        }
        let mfn = Mfn::new(pte::frame(e));
        if self.is_iomem(mfn) {
            let pg = if pg_owner == DomId::IO {
                l1e_owner
            } else {
                pg_owner
            };
            let invalid = mfn.raw() == pte::ADDR_MASK >> 12;
            let denied = !self.iomem_permitted(pg, mfn)
                || (pg != l1e_owner && !self.iomem_permitted(l1e_owner, mfn));
            if denied {
                return Err(if invalid { Errno::EINVAL } else { Errno::EPERM });
            }
            let mut flip = pte::mmio_cache_flip(e);
            if e & pte::RW != 0 && self.mmio_read_only(mfn) {
                flip |= pte::RW;
            }
            return Ok(flip);
        }
        match self.get_ref_any(mfn) {
            Some(Owner::Dom(d)) if d == pg_owner => {}
            Some(_) => {
                self.put_page(mfn);
                return Err(Errno::EBUSY);
            }
            None => return Err(Errno::EBUSY),
        }
        let write = e & pte::RW != 0;
        if write
            && self
                .get_page_type(mem, mfn, PageType::Writable, depth + 1)
                .is_err()
        {
            self.put_page(mfn);
            return Err(Errno::EBUSY);
        }
        if e & pte::CACHE_ATTRS != 0 && self.page(mfn).is_some_and(|p| p.special) {
            if write {
                self.put_page_type(mem, mfn, None, depth + 1);
            }
            self.put_page(mfn);
            return Err(Errno::EACCES);
        }
        Ok(0)
    }

    /// Drops what an L1 entry holds (`put_page_from_l1e`).
    pub(super) fn put_page_from_l1e<M: PageTableMemory>(
        &mut self,
        mem: &mut M,
        e: u64,
        depth: u32,
    ) {
        let mfn = Mfn::new(pte::frame(e));
        if !pte::present(e) || self.is_iomem(mfn) {
            return;
        }
        if e & pte::RW != 0 {
            self.put_page_type(mem, mfn, None, depth + 1);
        }
        self.put_page(mfn);
    }
}
