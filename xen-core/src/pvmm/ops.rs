//! Operations on whole frames: pinning, base pointers, GDT/LDT frames, descriptor
//! updates, M2P update checks, giving frames back and domain teardown (Xen's
//! `do_mmuext_op` pin/unpin, `new_guest_cr3`, `MMUEXT_NEW_USER_BASEPTR`,
//! `pv_set_gdt`, `pv_map_ldt_shadow_page`, `do_update_descriptor`,
//! `guest_remove_page`, `domain_relinquish_resources`).

use super::{
    check_descriptor, Flush, Owner, PageTableMemory, PageType, PvMm, FIRST_RESERVED_GDT_ENTRY,
    LDT_PAGES,
};
use alloc::vec::Vec;
use xen_abi::{DomId, Errno, Mfn};

/// What [`PvMm::relinquish`] did with a domain's frames.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Relinquished {
    /// Frames that became free: return them to the allocator (after a TLB flush of the
    /// CPUs the domain ran on). They are not also queued for [`PvMm::take_freed`].
    pub freed: Vec<Mfn>,
    /// Hypervisor pages that had been shared with the domain (shared_info, ...): now
    /// hypervisor-owned again; their owner (the caller) frees them.
    pub unshared: Vec<Mfn>,
    /// Frames still referenced by someone else (another domain's mappings); they are
    /// freed, and queued for `take_freed`, when that reference goes.
    pub still_referenced: Vec<Mfn>,
}

impl PvMm {
    /// `MMUEXT_PIN_L{1,2,3,4}_TABLE` for the frames of `dom` (the caller or, for a
    /// privileged caller, `foreigndom`): takes and keeps a type reference of `level`
    /// (1..=4), validating the table if needed. Errors: the frame not `dom`'s, or
    /// already pinned → -EINVAL; otherwise the validation error (e.g. -EINVAL for a
    /// frame of another type, -EBUSY for an L1 entry mapping a foreign frame or a
    /// page table writable).
    pub fn pin<M: PageTableMemory>(
        &mut self,
        mem: &mut M,
        dom: DomId,
        mfn: Mfn,
        level: u8,
    ) -> Result<(), Errno> {
        let ty = PageType::of_level(level).ok_or(Errno::EINVAL)?;
        if !self.get_page(mfn, dom) {
            return Err(Errno::EINVAL);
        }
        if let Err(e) = self.get_page_type(mem, mfn, ty, 0) {
            self.put_page(mfn);
            return Err(e);
        }
        let already = self.page(mfn).is_some_and(|p| p.pinned);
        if already {
            self.put_page_and_type_inner(mem, mfn, 0);
            return Err(Errno::EINVAL);
        }
        if let Some(p) = self.page_mut(mfn) {
            p.pinned = true;
        }
        Ok(())
    }

    /// `MMUEXT_UNPIN_TABLE`: -EINVAL if the frame is not `dom`'s or not pinned.
    /// Dropping the pin may devalidate the table (and free frames: see
    /// [`PvMm::take_freed`]).
    pub fn unpin<M: PageTableMemory>(
        &mut self,
        mem: &mut M,
        dom: DomId,
        mfn: Mfn,
    ) -> Result<(), Errno> {
        if !self.get_page(mfn, dom) {
            return Err(Errno::EINVAL);
        }
        let pinned = self.page(mfn).is_some_and(|p| p.pinned);
        if !pinned {
            self.put_page(mfn);
            return Err(Errno::EINVAL);
        }
        if let Some(p) = self.page_mut(mfn) {
            p.pinned = false;
        }
        self.put_page_and_type_inner(mem, mfn, 0);
        self.put_page(mfn);
        Ok(())
    }

    /// `MMUEXT_NEW_BASEPTR` (`new_guest_cr3`) for `vcpu` of `dom`: takes an L4 type
    /// reference on `mfn` (validating it), drops the vCPU's mapped LDT pages, then the
    /// old base pointer's references. Same frame again: nothing changes. Errors: the
    /// frame not `dom`'s → -EINVAL; validation errors. On success the caller loads
    /// the new CR3 ([`Flush::LoadCr3`]) and clears its LDT mappings.
    pub fn new_baseptr<M: PageTableMemory>(
        &mut self,
        mem: &mut M,
        dom: DomId,
        vcpu: usize,
        mfn: Mfn,
    ) -> Result<Flush, Errno> {
        let old = self.vcpu_mut(dom, vcpu)?.kernel_base;
        if old == Some(mfn) {
            return Ok(Flush::LoadCr3);
        }
        self.get_page_and_type_from_mfn(mem, mfn, PageType::L4, dom, 0)?;
        self.destroy_ldt(mem, dom, vcpu)?;
        self.vcpu_mut(dom, vcpu)?.kernel_base = Some(mfn);
        if let Some(old) = old {
            self.put_page_and_type_inner(mem, old, 0);
        }
        Ok(Flush::LoadCr3)
    }

    /// `MMUEXT_NEW_USER_BASEPTR`: as [`PvMm::new_baseptr`] for the user page table;
    /// `None` (guest MFN 0) removes it.
    pub fn new_user_baseptr<M: PageTableMemory>(
        &mut self,
        mem: &mut M,
        dom: DomId,
        vcpu: usize,
        mfn: Option<Mfn>,
    ) -> Result<(), Errno> {
        let old = self.vcpu_mut(dom, vcpu)?.user_base;
        if old == mfn {
            return Ok(());
        }
        if let Some(m) = mfn {
            self.get_page_and_type_from_mfn(mem, m, PageType::L4, dom, 0)?;
        }
        self.vcpu_mut(dom, vcpu)?.user_base = mfn;
        if let Some(old) = old {
            self.put_page_and_type_inner(mem, old, 0);
        }
        Ok(())
    }

    /// `set_gdt` (`pv_set_gdt`): `entries` ≤ 7168 descriptors in the first
    /// `ceil(entries / 512)` of `frames`; each frame must be `dom`'s and take the
    /// segment-descriptor type (so it must have no writable mapping, and each
    /// descriptor passes [`check_descriptor`], fixed up in place). Any failure →
    /// -EINVAL with nothing changed. On success the old GDT frames are released; the
    /// caller maps the new ones into the vCPU's GDT area and flushes the local TLB.
    pub fn set_gdt<M: PageTableMemory>(
        &mut self,
        mem: &mut M,
        dom: DomId,
        vcpu: usize,
        frames: &[Mfn],
        entries: u32,
    ) -> Result<(), Errno> {
        if entries > FIRST_RESERVED_GDT_ENTRY {
            return Err(Errno::EINVAL);
        }
        self.vcpu_mut(dom, vcpu)?;
        let nr = entries.div_ceil(512) as usize;
        let frames = frames.get(..nr).ok_or(Errno::EINVAL)?;
        for (i, &f) in frames.iter().enumerate() {
            if self
                .get_page_and_type_from_mfn(mem, f, PageType::SegDesc, dom, 0)
                .is_err()
            {
                for &g in frames[..i].iter().rev() {
                    self.put_page_and_type_inner(mem, g, 0);
                }
                return Err(Errno::EINVAL);
            }
        }
        self.destroy_gdt(mem, dom, vcpu)?;
        self.vcpu_mut(dom, vcpu)?.gdt = frames.to_vec();
        Ok(())
    }

    /// Releases a vCPU's GDT frames (`pv_destroy_gdt`).
    pub fn destroy_gdt<M: PageTableMemory>(
        &mut self,
        mem: &mut M,
        dom: DomId,
        vcpu: usize,
    ) -> Result<(), Errno> {
        let old = core::mem::take(&mut self.vcpu_mut(dom, vcpu)?.gdt);
        for f in old {
            self.put_page_and_type_inner(mem, f, 0);
        }
        Ok(())
    }

    /// Maps LDT page `slot` (0..16) of a vCPU on demand (`pv_map_ldt_shadow_page`,
    /// after the caller found the guest's frame for the faulting LDT address): the
    /// frame must be `dom`'s and take the segment-descriptor type. A frame already in
    /// the slot is released. Failure means the fault goes to the guest.
    pub fn map_ldt_page<M: PageTableMemory>(
        &mut self,
        mem: &mut M,
        dom: DomId,
        vcpu: usize,
        slot: usize,
        mfn: Mfn,
    ) -> Result<(), Errno> {
        if slot >= LDT_PAGES {
            return Err(Errno::EINVAL);
        }
        self.vcpu_mut(dom, vcpu)?;
        self.get_page_and_type_from_mfn(mem, mfn, PageType::SegDesc, dom, 0)?;
        let old = self.vcpu_mut(dom, vcpu)?.ldt[slot].replace(mfn);
        if let Some(old) = old {
            self.put_page_and_type_inner(mem, old, 0);
        }
        Ok(())
    }

    /// Releases a vCPU's mapped LDT pages (`pv_destroy_ldt`; SET_LDT with a new base,
    /// NEW_BASEPTR). Returns how many were mapped; if any, the caller clears its LDT
    /// mappings and flushes the local TLB.
    pub fn destroy_ldt<M: PageTableMemory>(
        &mut self,
        mem: &mut M,
        dom: DomId,
        vcpu: usize,
    ) -> Result<usize, Errno> {
        let old = core::mem::take(&mut self.vcpu_mut(dom, vcpu)?.ldt);
        let mut n = 0;
        for f in old.into_iter().flatten() {
            self.put_page_and_type_inner(mem, f, 0);
            n += 1;
        }
        Ok(n)
    }

    /// `update_descriptor`: writes descriptor `desc` (checked and fixed up by
    /// [`check_descriptor`]) at machine address `maddr` in a frame of `dom` that is a
    /// descriptor page or can be an ordinary writable page. -EINVAL for a misaligned
    /// address, a refused descriptor, a frame not `dom`'s, or a page-table frame.
    pub fn update_descriptor<M: PageTableMemory>(
        &mut self,
        mem: &mut M,
        dom: DomId,
        maddr: u64,
        desc: u64,
    ) -> Result<(), Errno> {
        if maddr & 7 != 0 {
            return Err(Errno::EINVAL);
        }
        let desc = check_descriptor(desc).ok_or(Errno::EINVAL)?;
        let mfn = Mfn::new(maddr >> 12);
        if !self.get_page(mfn, dom) {
            return Err(Errno::EINVAL);
        }
        let ty = match self.page(mfn).map(|p| p.ty) {
            Some(PageType::SegDesc) => PageType::SegDesc,
            _ => PageType::Writable,
        };
        let r = match self.get_page_type(mem, mfn, ty, 0) {
            Ok(()) => {
                mem.write(mfn, ((maddr & 0xfff) >> 3) as usize, desc);
                self.put_page_type(mem, mfn, None, 0);
                Ok(())
            }
            Err(_) => Err(Errno::EINVAL),
        };
        self.put_page(mfn);
        r
    }

    /// The check of `MMU_MACHPHYS_UPDATE`: `mfn` must be a frame of `pg_dom` (-EINVAL
    /// otherwise). The caller then sets M2P[mfn]. (A foreign page-table owner is
    /// refused with -EPERM by the caller, as Xen.)
    pub fn check_machphys_update(&mut self, pg_dom: DomId, mfn: Mfn) -> Result<(), Errno> {
        if !self.get_page(mfn, pg_dom) {
            return Err(Errno::EINVAL);
        }
        self.put_page(mfn);
        Ok(())
    }

    /// A general and a type reference on a frame of `dom` for the hypervisor's own use
    /// (e.g. `Writable` for a registered vcpu_info or runstate area, so the frame can
    /// never become a page table). -EINVAL if the frame is not `dom`'s, else the
    /// type's error. Release with [`PvMm::put_page_and_type`].
    pub fn get_page_and_type<M: PageTableMemory>(
        &mut self,
        mem: &mut M,
        mfn: Mfn,
        dom: DomId,
        ty: PageType,
    ) -> Result<(), Errno> {
        self.get_page_and_type_from_mfn(mem, mfn, ty, dom, 0)
    }

    /// Drops what [`PvMm::get_page_and_type`] took.
    pub fn put_page_and_type<M: PageTableMemory>(&mut self, mem: &mut M, mfn: Mfn) {
        self.put_page_and_type_inner(mem, mfn, 0);
    }

    /// A general reference on a frame of `dom` (`get_page`), e.g. for a grant map.
    pub fn get_page_ref(&mut self, mfn: Mfn, dom: DomId) -> Result<(), Errno> {
        if self.get_page(mfn, dom) {
            Ok(())
        } else {
            Err(Errno::EINVAL)
        }
    }

    /// Drops a reference taken with [`PvMm::get_page_ref`].
    pub fn put_page_ref(&mut self, mfn: Mfn) {
        self.put_page(mfn);
    }

    /// `dom` gives frame `mfn` back (`guest_remove_page`, decrease_reservation): its
    /// allocation reference is dropped; the frame is freed (queued for
    /// [`PvMm::take_freed`]) once nothing else references it (mappings, pins, page
    /// tables). -ENXIO if it is not `dom`'s; -EINVAL for a hypervisor-shared page.
    /// The caller removes the P2M entry and invalidates M2P[mfn].
    pub fn release(&mut self, dom: DomId, mfn: Mfn) -> Result<(), Errno> {
        if !self.get_page(mfn, dom) {
            return Err(Errno::ENXIO);
        }
        let special = self.page(mfn).is_some_and(|p| p.special);
        if special {
            self.put_page(mfn);
            return Err(Errno::EINVAL);
        }
        let allocated = self.page(mfn).is_some_and(|p| p.allocated);
        if allocated {
            if let Some(p) = self.page_mut(mfn) {
                p.allocated = false;
            }
            self.put_page(mfn);
        }
        self.put_page(mfn);
        Ok(())
    }

    /// Domain teardown (`domain_relinquish_resources`): drops every reference the
    /// domain holds — its vCPUs' base pointers, GDT and LDT frames, pins — then
    /// devalidates its remaining page tables top-down (which breaks circular linear
    /// references) and drops the allocation references. The domain must not run
    /// anymore (the caller has paused it and flushed its CPUs' TLBs, or does so before
    /// reusing the freed frames). Afterwards the domain owns only frames that other
    /// domains still reference.
    pub fn relinquish<M: PageTableMemory>(
        &mut self,
        mem: &mut M,
        dom: DomId,
    ) -> Result<Relinquished, Errno> {
        let nr_vcpus = self.domains.get(&dom).ok_or(Errno::ESRCH)?.vcpus.len();
        let first_freed = self.freed.len();
        for v in 0..nr_vcpus {
            self.destroy_ldt(mem, dom, v)?;
            self.destroy_gdt(mem, dom, v)?;
            self.new_user_baseptr(mem, dom, v, None)?;
            if let Some(k) = self.vcpu_mut(dom, v)?.kernel_base.take() {
                self.put_page_and_type_inner(mem, k, 0);
            }
        }
        let owned = |s: &PvMm| -> Vec<Mfn> {
            (0..s.frames.len())
                .filter(|&i| s.frames[i].owner == Owner::Dom(dom))
                .map(|i| Mfn::new(i as u64))
                .collect()
        };
        for mfn in owned(self) {
            let pinned = self.page(mfn).is_some_and(|p| p.pinned);
            if pinned {
                if let Some(p) = self.page_mut(mfn) {
                    p.pinned = false;
                }
                self.put_page_and_type_inner(mem, mfn, 0);
            }
        }
        // Tables still validated now are held only by other tables of the domain (or
        // circular linear entries): devalidate top-down, keeping a reference so that
        // nothing is freed under our feet.
        for ty in [PageType::L4, PageType::L3, PageType::L2, PageType::L1] {
            for mfn in owned(self) {
                let hit = self
                    .page(mfn)
                    .is_some_and(|p| p.ty == ty && p.validated && p.type_count > 0);
                if hit && self.get_page(mfn, dom) {
                    if let Some(p) = self.page_mut(mfn) {
                        p.validated = false;
                    }
                    self.devalidate(mem, mfn, ty, 0);
                    self.put_page(mfn);
                }
            }
        }
        let mut unshared = Vec::new();
        for mfn in owned(self) {
            let Some(p) = self.page(mfn).copied() else {
                continue;
            };
            if p.special {
                if p.type_count > 0 {
                    self.put_page_type(mem, mfn, None, 0);
                }
                unshared.push(mfn);
            }
            if p.allocated {
                if let Some(p) = self.page_mut(mfn) {
                    p.allocated = false;
                }
                self.put_page(mfn);
            }
        }
        unshared.retain(|&m| self.page(m).is_some_and(|p| p.owner == Owner::Hypervisor));
        let freed = self.freed.split_off(first_freed);
        Ok(Relinquished {
            freed,
            unshared,
            still_referenced: owned(self),
        })
    }
}
