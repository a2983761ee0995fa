//! Guest updates of page-table entries (Xen's `mod_l{1,2,3,4}_entry`, the
//! `MMU_NORMAL_PT_UPDATE`/`MMU_PT_UPDATE_PRESERVE_AD` part of `do_mmu_update`, and
//! `__do_update_va_mapping`).

use super::refs::is_guest_l4_slot;
use super::{pte, Flush, PageTableMemory, PageType, PvMm, ENTRIES};
use xen_abi::{DomId, Errno, Mfn};

/// Compare-exchange attempts while other CPUs set Accessed/Dirty bits (bounded: a
/// guest cannot keep us here; Xen loops until it wins).
pub(super) const CMPXCHG_TRIES: usize = 64;

/// Stores `new` over `old` (Xen's `update_intpte`); with `preserve_ad` the Accessed and
/// Dirty bits already in the entry are kept, atomically. Returns false if the entry
/// changed in other bits meanwhile (cannot happen while the caller serialises updates).
fn update_entry<M: PageTableMemory>(
    mem: &mut M,
    table: Mfn,
    index: usize,
    mut old: u64,
    new: u64,
    preserve_ad: bool,
) -> bool {
    if !preserve_ad {
        mem.write(table, index, new);
        return true;
    }
    for _ in 0..CMPXCHG_TRIES {
        let n = new | (old & (pte::A | pte::D));
        match mem.cmpxchg(table, index, old, n) {
            Ok(()) => return true,
            Err(found) if (found ^ old) & !(pte::A | pte::D) == 0 => old = found,
            Err(_) => return false,
        }
    }
    false
}

impl PvMm {
    /// `mod_l1_entry`: replaces entry `index` of validated L1 `l1` (owned by `pt_dom`)
    /// with `new`, which may map frames of `pg_dom`. The new entry is checked and
    /// referenced first, stored adjusted (rule 7), then the old entry's references are
    /// dropped. Changes only in Accessed/Dirty/User/Global/NX/available bits of an
    /// entry to the same frame take no new references (Xen's fast path).
    ///
    /// An entry holding a grant mapping (bit 62) cannot be changed or cleared this way:
    /// -EINVAL, nothing changes (only `unmap_grant_ref` removes it; see `grant.rs`).
    pub(super) fn mod_l1_entry<M: PageTableMemory>(
        &mut self,
        mem: &mut M,
        pt_dom: DomId,
        pg_dom: DomId,
        (l1, index): (Mfn, usize),
        new: u64,
        preserve_ad: bool,
    ) -> Result<(), Errno> {
        let old = mem.read(l1, index);
        if super::grant::is_grant_entry(old) {
            return Err(Errno::EINVAL);
        }
        let mut new = new;
        if pte::present(new) {
            let io_caps = self.domains.get(&pt_dom).is_some_and(|d| d.io_caps);
            if new & pte::l1_disallow(io_caps) != 0 {
                return Err(Errno::EINVAL);
            }
            new = pte::adjust_l1(new);
            if pte::present(old) && !pte::needs_revalidation(old, new) {
                return if update_entry(mem, l1, index, old, new, preserve_ad) {
                    Ok(())
                } else {
                    Err(Errno::EBUSY)
                };
            }
            let flip = self.get_page_from_l1e(mem, new, pt_dom, pg_dom, 0)?;
            new ^= flip;
            if !update_entry(mem, l1, index, old, new, preserve_ad) {
                self.put_page_from_l1e(mem, new, 0);
                return Err(Errno::EBUSY);
            }
        } else if !update_entry(mem, l1, index, old, new, preserve_ad) {
            return Err(Errno::EBUSY);
        }
        self.put_page_from_l1e(mem, old, 0);
        Ok(())
    }

    /// `mod_l{2,3,4}_entry` on validated table `table` of `level` owned by `dom`.
    /// L4 slots 256..=271 are the hypervisor's: -EINVAL.
    pub(super) fn mod_ln_entry<M: PageTableMemory>(
        &mut self,
        mem: &mut M,
        dom: DomId,
        level: u8,
        (table, index): (Mfn, usize),
        new: u64,
        preserve_ad: bool,
    ) -> Result<(), Errno> {
        if level == 4 && !is_guest_l4_slot(index) {
            return Err(Errno::EINVAL);
        }
        // Xen answers a lost race with -EBUSY for L2 and -EFAULT for L3/L4.
        let busy = if level == 2 {
            Errno::EBUSY
        } else {
            Errno::EFAULT
        };
        let old = mem.read(table, index);
        let mut new = new;
        if pte::present(new) {
            if new & pte::LN_DISALLOW != 0 {
                return Err(Errno::EINVAL);
            }
            new = if level == 4 {
                pte::adjust_l4(new)
            } else {
                pte::adjust_l2_l3(new)
            };
            if pte::present(old) && !pte::needs_revalidation(old, new) {
                return if update_entry(mem, table, index, old, new, preserve_ad) {
                    Ok(())
                } else {
                    Err(busy)
                };
            }
            self.get_page_from_lne(mem, level, new, table, dom, 0)?;
            if !update_entry(mem, table, index, old, new, preserve_ad) {
                self.put_page_from_lne(mem, new, table, 0);
                return Err(busy);
            }
        } else if !update_entry(mem, table, index, old, new, preserve_ad) {
            return Err(busy);
        }
        self.put_page_from_lne(mem, old, table, 0);
        Ok(())
    }

    /// One `MMU_NORMAL_PT_UPDATE` (or, with `preserve_ad`, `MMU_PT_UPDATE_PRESERVE_AD`)
    /// request: `ptr` is the machine address of the entry with the command bits
    /// cleared, `val` the new entry. The tables belong to `pt_dom`, mapped frames to
    /// `pg_dom` (both the caller unless a privileged caller passed `foreigndom`; the
    /// caller resolves and checks those ids, and translates `DOMID_SELF`).
    ///
    /// If the frame holding `ptr` is a validated page table, the entry is validated for
    /// its level; if it is (or can become) an ordinary writable page the value is
    /// stored as is. Errors: `ptr` not 8-byte aligned, the frame not `pt_dom`'s, a
    /// descriptor or read-only page, an L2-L4 update with `pg_dom != pt_dom` →
    /// -EINVAL; otherwise the entry's own error (see `mod_l1_entry`,
    /// `get_page_from_l1e`).
    ///
    /// Returns [`Flush::DomainTlbs`] after an L2-L4 change (the caller flushes every
    /// CPU `pt_dom` is dirty on before returning to the guest; once per batch is
    /// enough), [`Flush::None`] otherwise.
    pub fn mmu_update_pt<M: PageTableMemory>(
        &mut self,
        mem: &mut M,
        pt_dom: DomId,
        pg_dom: DomId,
        ptr: u64,
        val: u64,
        preserve_ad: bool,
    ) -> Result<Flush, Errno> {
        if ptr & 7 != 0 {
            return Err(Errno::EINVAL);
        }
        let mfn = Mfn::new(ptr >> 12);
        let index = ((ptr & 0xfff) >> 3) as usize;
        if index >= ENTRIES || !self.get_page(mfn, pt_dom) {
            return Err(Errno::EINVAL);
        }
        let p = self.page(mfn).copied();
        let r = match p {
            Some(p) if p.type_count > 0 && p.validated => match p.ty {
                PageType::L1 => self
                    .mod_l1_entry(mem, pt_dom, pg_dom, (mfn, index), val, preserve_ad)
                    .map(|()| Flush::None),
                PageType::L2 | PageType::L3 | PageType::L4 => {
                    if pg_dom != pt_dom {
                        Err(Errno::EINVAL)
                    } else {
                        let level = p.ty.level().unwrap_or(2);
                        self.mod_ln_entry(mem, pt_dom, level, (mfn, index), val, preserve_ad)
                            .map(|()| Flush::DomainTlbs)
                    }
                }
                PageType::Writable => {
                    mem.write(mfn, index, val);
                    Ok(Flush::None)
                }
                PageType::None | PageType::SegDesc => Err(Errno::EINVAL),
            },
            _ => match self.get_page_type(mem, mfn, PageType::Writable, 0) {
                Ok(()) => {
                    mem.write(mfn, index, val);
                    self.put_page_type(mem, mfn, None, 0);
                    Ok(Flush::None)
                }
                Err(_) => Err(Errno::EINVAL),
            },
        };
        self.put_page(mfn);
        r
    }

    /// The validation half of `update_va_mapping` (and, with a foreign `pg_dom`,
    /// `update_va_mapping_otherdomain`): the caller has walked `dom`'s current kernel
    /// page tables to the L1 `l1` and slot `index` that map the address. -EINVAL if
    /// `l1` is not a validated L1 of `dom`; otherwise the entry's own error. The caller
    /// then does the flush the UVMF flags ask for (only on success, as Xen).
    pub fn update_va_mapping<M: PageTableMemory>(
        &mut self,
        mem: &mut M,
        dom: DomId,
        pg_dom: DomId,
        l1: Mfn,
        index: usize,
        val: u64,
    ) -> Result<(), Errno> {
        if index >= ENTRIES || !self.get_page(l1, dom) {
            return Err(Errno::EINVAL);
        }
        let ok = self
            .page(l1)
            .is_some_and(|p| p.ty == PageType::L1 && p.type_count > 0 && p.validated);
        let r = if ok {
            self.mod_l1_entry(mem, dom, pg_dom, (l1, index), val, false)
        } else {
            Err(Errno::EINVAL)
        };
        self.put_page(l1);
        r
    }
}
