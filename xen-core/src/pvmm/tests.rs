//! Unit tests: each rule and rejection with Xen's error number, on a mock machine.

use super::*;
use crate::pvmm::pte::*;

/// Marker written into the hypervisor L4 slots by the mock.
pub(super) const XEN_SLOT: u64 = 0x8000_0000_0000_0ee1;

/// A small machine: page contents in a vector.
pub(super) struct MockMem {
    pub pages: Vec<[u64; ENTRIES]>,
    pub flushes: u64,
}

impl MockMem {
    pub fn new(n: usize) -> MockMem {
        MockMem {
            pages: vec![[0; ENTRIES]; n],
            flushes: 0,
        }
    }
}

impl PageTableMemory for MockMem {
    fn read(&self, mfn: Mfn, index: usize) -> u64 {
        self.pages[mfn.raw() as usize][index]
    }
    fn write(&mut self, mfn: Mfn, index: usize, value: u64) {
        self.pages[mfn.raw() as usize][index] = value;
    }
    fn cmpxchg(&mut self, mfn: Mfn, index: usize, old: u64, new: u64) -> Result<(), u64> {
        let slot = &mut self.pages[mfn.raw() as usize][index];
        if *slot == old {
            *slot = new;
            Ok(())
        } else {
            Err(*slot)
        }
    }
    fn init_xen_l4_slots(&mut self, _dom: DomId, l4: Mfn) {
        for i in FIRST_XEN_L4_SLOT..=LAST_XEN_L4_SLOT {
            self.pages[l4.raw() as usize][i] = XEN_SLOT | ((i as u64) << 12);
        }
    }
    fn flush_domain_tlbs(&mut self, _dom: DomId) {
        self.flushes += 1;
    }
}

pub(super) const A_DOM: DomId = DomId::new(1);
pub(super) const B_DOM: DomId = DomId::new(2);

fn m(n: u64) -> Mfn {
    Mfn::new(n)
}

/// 64 frames: 0..4 hypervisor, 4..32 domain A, 32..48 domain B, 48..60 free,
/// 60..64 I/O.
fn machine() -> (PvMm, MockMem) {
    let mut mm = PvMm::new(64);
    mm.create_domain(A_DOM, 40, 2).unwrap();
    mm.create_domain(B_DOM, 40, 1).unwrap();
    for i in 4..60 {
        mm.set_free(m(i)).unwrap();
    }
    for i in 60..64 {
        mm.set_io(m(i)).unwrap();
    }
    for i in 4..32 {
        mm.assign(m(i), A_DOM).unwrap();
    }
    for i in 32..48 {
        mm.assign(m(i), B_DOM).unwrap();
    }
    (mm, MockMem::new(64))
}

fn e(mfn: u64, flags: u64) -> u64 {
    (mfn << 12) | flags
}

fn ptr(mfn: u64, idx: u64) -> u64 {
    (mfn << 12) | (idx * 8)
}

/// Builds a 4-level tree for A: L4 4 -> L3 5 -> L2 6 -> L1 7 mapping frame 8 RW.
fn tree(mm: &mut PvMm, mem: &mut MockMem) {
    mem.write(m(4), 0, e(5, P | RW));
    mem.write(m(5), 0, e(6, P | RW));
    mem.write(m(6), 0, e(7, P | RW));
    mem.write(m(7), 0, e(8, P | RW));
    mm.pin(mem, A_DOM, m(4), 4).unwrap();
}

#[test]
fn accounting() {
    let (mut mm, _mem) = machine();
    assert_eq!(mm.domain(A_DOM).unwrap().tot_pages, 28);
    mm.set_max_pages(A_DOM, 28).unwrap();
    assert_eq!(mm.assign(m(50), A_DOM), Err(Errno::ENOMEM));
    assert_eq!(
        mm.assign(m(40), A_DOM.max(DomId::new(1))),
        Err(Errno::ENOMEM)
    );
    mm.set_max_pages(A_DOM, 40).unwrap();
    assert_eq!(mm.assign(m(40), A_DOM), Err(Errno::EBUSY));
    assert_eq!(mm.assign(m(50), DomId::new(9)), Err(Errno::ESRCH));
    mm.assign(m(50), A_DOM).unwrap();
    mm.release(A_DOM, m(50)).unwrap();
    assert_eq!(mm.take_freed(), vec![m(50)]);
    assert_eq!(mm.release(A_DOM, m(50)), Err(Errno::ENXIO));
    assert_eq!(mm.release(A_DOM, m(40)), Err(Errno::ENXIO));
    assert_eq!(mm.domain(A_DOM).unwrap().tot_pages, 28);
}

#[test]
fn pin_validates_tree_and_unpin_devalidates() {
    let (mut mm, mut mem) = machine();
    tree(&mut mm, &mut mem);
    assert_eq!(mm.page(m(4)).unwrap().ty, PageType::L4);
    assert_eq!(mm.page(m(7)).unwrap().ty, PageType::L1);
    assert_eq!(mm.page(m(8)).unwrap().ty, PageType::Writable);
    assert_eq!(mm.page(m(8)).unwrap().count, 2);
    // Rule 7 adjustments, Xen slots filled.
    assert_eq!(mem.read(m(7), 0), e(8, P | RW | USER | GUEST_KERNEL));
    assert_eq!(mem.read(m(6), 0), e(7, P | RW | USER));
    assert_eq!(mem.read(m(4), 0), e(5, P | RW | USER | A));
    assert_eq!(mem.read(m(4), 256), XEN_SLOT | (256 << 12));
    // Pinning twice, unpinning twice.
    assert_eq!(mm.pin(&mut mem, A_DOM, m(4), 4), Err(Errno::EINVAL));
    assert_eq!(mm.page(m(4)).unwrap().type_count, 1);
    mm.unpin(&mut mem, A_DOM, m(4)).unwrap();
    assert_eq!(mm.unpin(&mut mem, A_DOM, m(4)), Err(Errno::EINVAL));
    for f in 4..8 {
        let p = mm.page(m(f)).unwrap();
        assert_eq!(
            (p.type_count, p.count, p.validated),
            (0, 1, false),
            "frame {f}"
        );
    }
    assert_eq!(
        (
            mm.page(m(8)).unwrap().type_count,
            mm.page(m(8)).unwrap().count
        ),
        (0, 1)
    );
    assert_eq!(mm.inconsistencies(), 0);
}

#[test]
fn type_conflicts() {
    let (mut mm, mut mem) = machine();
    tree(&mut mm, &mut mem);
    // Frame 8 is writable: cannot become a page table.
    assert_eq!(mm.pin(&mut mem, A_DOM, m(8), 1), Err(Errno::EINVAL));
    // An L1 cannot be pinned as L2.
    assert_eq!(mm.pin(&mut mem, A_DOM, m(7), 2), Err(Errno::EINVAL));
    // Mapping a page table writable: -EBUSY; read-only is fine.
    assert_eq!(
        mu(
            &mut mm,
            &mut mem,
            A_DOM,
            A_DOM,
            ptr(7, 1),
            e(6, P | RW),
            false
        ),
        Err(Errno::EBUSY)
    );
    mu(&mut mm, &mut mem, A_DOM, A_DOM, ptr(7, 1), e(6, P), false).unwrap();
    // L2 entry to a writable frame: -EINVAL.
    assert_eq!(
        mu(&mut mm, &mut mem, A_DOM, A_DOM, ptr(6, 1), e(8, P), false),
        Err(Errno::EINVAL)
    );
    // Another domain's frames / the hypervisor's / free ones / I/O without permission.
    assert_eq!(
        mu(&mut mm, &mut mem, A_DOM, A_DOM, ptr(7, 2), e(33, P), false),
        Err(Errno::EBUSY)
    );
    assert_eq!(
        mu(&mut mm, &mut mem, A_DOM, A_DOM, ptr(7, 2), e(1, P), false),
        Err(Errno::EBUSY)
    );
    assert_eq!(
        mu(&mut mm, &mut mem, A_DOM, A_DOM, ptr(7, 2), e(50, P), false),
        Err(Errno::EBUSY)
    );
    assert_eq!(
        mu(&mut mm, &mut mem, A_DOM, A_DOM, ptr(7, 2), e(61, P), false),
        Err(Errno::EPERM)
    );
    assert_eq!(
        mu(
            &mut mm,
            &mut mem,
            A_DOM,
            A_DOM,
            ptr(7, 2),
            e(1000, P),
            false
        ),
        Err(Errno::EPERM)
    );
    assert_eq!(
        mu(&mut mm, &mut mem, A_DOM, A_DOM, ptr(6, 2), e(33, P), false),
        Err(Errno::EINVAL)
    );
    // Updating B's table as A: -EINVAL.
    assert_eq!(
        mu(&mut mm, &mut mem, A_DOM, A_DOM, ptr(33, 0), 0, false),
        Err(Errno::EINVAL)
    );
    assert_eq!(mm.inconsistencies(), 0);
}

#[test]
fn flag_rules() {
    let (mut mm, mut mem) = machine();
    tree(&mut mm, &mut mem);
    let l1 = |f| ptr(7, 3 + f % 8);
    for bad in [PCD, PWT, PAT, GNTTAB] {
        assert_eq!(
            mu(
                &mut mm,
                &mut mem,
                A_DOM,
                A_DOM,
                l1(bad),
                e(9, P | bad),
                false
            ),
            Err(Errno::EINVAL)
        );
    }
    for ok in [G, GUEST_KERNEL, NX, AVAIL, 1 << 61, A | D] {
        mu(
            &mut mm,
            &mut mem,
            A_DOM,
            A_DOM,
            ptr(7, 3),
            e(9, P | ok),
            false,
        )
        .unwrap();
    }
    for bad in [PSE, PCD, PWT, G] {
        assert_eq!(
            mu(
                &mut mm,
                &mut mem,
                A_DOM,
                A_DOM,
                ptr(6, 3),
                e(10, P | bad),
                false
            ),
            Err(Errno::EINVAL)
        );
        assert_eq!(
            mu(
                &mut mm,
                &mut mem,
                A_DOM,
                A_DOM,
                ptr(5, 3),
                e(10, P | bad),
                false
            ),
            Err(Errno::EINVAL)
        );
        assert_eq!(
            mu(
                &mut mm,
                &mut mem,
                A_DOM,
                A_DOM,
                ptr(4, 3),
                e(10, P | bad),
                false
            ),
            Err(Errno::EINVAL)
        );
    }
    // Not-present entries are stored as they are.
    mu(
        &mut mm,
        &mut mem,
        A_DOM,
        A_DOM,
        ptr(6, 4),
        0xdead_0000 | PSE,
        false,
    )
    .unwrap();
    assert_eq!(mem.read(m(6), 4), 0xdead_0000 | PSE);
    // Hypervisor L4 slots.
    for slot in [256, 271] {
        assert_eq!(
            mu(&mut mm, &mut mem, A_DOM, A_DOM, ptr(4, slot), 0, false),
            Err(Errno::EINVAL)
        );
    }
    mu(&mut mm, &mut mem, A_DOM, A_DOM, ptr(4, 272), 0, false).unwrap();
    // Misaligned pointer.
    assert_eq!(
        mu(&mut mm, &mut mem, A_DOM, A_DOM, ptr(7, 3) + 4, 0, false),
        Err(Errno::EINVAL)
    );
    // With I/O permission: cache bits allowed, MMIO forced UC.
    mm.permit_iomem(A_DOM, m(60), m(61)).unwrap();
    mu(
        &mut mm,
        &mut mem,
        A_DOM,
        A_DOM,
        ptr(7, 5),
        e(9, P | PCD),
        false,
    )
    .unwrap();
    mu(
        &mut mm,
        &mut mem,
        A_DOM,
        A_DOM,
        ptr(7, 6),
        e(60, P | RW),
        false,
    )
    .unwrap();
    assert_eq!(
        mem.read(m(7), 6),
        e(60, P | RW | PCD | PWT | USER | GUEST_KERNEL)
    );
    assert_eq!(
        mu(&mut mm, &mut mem, A_DOM, A_DOM, ptr(7, 6), e(62, P), false),
        Err(Errno::EPERM)
    );
    // An MSI-X table page: a writable mapping becomes read-only (Xen's mmio_ro_ranges).
    mm.set_mmio_read_only(m(61), m(61));
    mu(
        &mut mm,
        &mut mem,
        A_DOM,
        A_DOM,
        ptr(7, 7),
        e(61, P | RW),
        false,
    )
    .unwrap();
    assert_eq!(
        mem.read(m(7), 7),
        e(61, P | PCD | PWT | USER | GUEST_KERNEL)
    );
    assert_eq!(mm.inconsistencies(), 0);
}

#[test]
fn preserve_ad_and_fast_path() {
    let (mut mm, mut mem) = machine();
    tree(&mut mm, &mut mem);
    mem.pages[7][0] |= A | D;
    mu(
        &mut mm,
        &mut mem,
        A_DOM,
        A_DOM,
        ptr(7, 0),
        e(8, P | RW | NX),
        true,
    )
    .unwrap();
    assert_eq!(
        mem.read(m(7), 0),
        e(8, P | RW | NX | A | D | USER | GUEST_KERNEL)
    );
    assert_eq!(mm.page(m(8)).unwrap().type_count, 1);
    // Read-only now: the writable reference goes.
    mu(&mut mm, &mut mem, A_DOM, A_DOM, ptr(7, 0), e(8, P), false).unwrap();
    assert_eq!(mm.page(m(8)).unwrap().type_count, 0);
    assert_eq!(mm.page(m(8)).unwrap().count, 2);
    assert_eq!(mm.inconsistencies(), 0);
}

#[test]
fn writable_page_updates_and_update_va_mapping() {
    let (mut mm, mut mem) = machine();
    tree(&mut mm, &mut mem);
    // Frame 9 is an ordinary page: the value is stored raw.
    mu(
        &mut mm,
        &mut mem,
        A_DOM,
        A_DOM,
        ptr(9, 0),
        0x1234_5007,
        false,
    )
    .unwrap();
    assert_eq!(mem.read(m(9), 0), 0x1234_5007);
    assert_eq!(mm.page(m(9)).unwrap().type_count, 0);
    mm.update_va_mapping(&mut mem, A_DOM, A_DOM, m(7), 9, e(10, P | RW))
        .unwrap();
    assert_eq!(mm.page(m(10)).unwrap().ty, PageType::Writable);
    assert_eq!(
        mm.update_va_mapping(&mut mem, A_DOM, A_DOM, m(6), 9, e(10, P)),
        Err(Errno::EINVAL)
    );
    assert_eq!(
        mm.update_va_mapping(&mut mem, A_DOM, A_DOM, m(9), 9, e(10, P)),
        Err(Errno::EINVAL)
    );
    assert_eq!(
        mm.update_va_mapping(&mut mem, B_DOM, B_DOM, m(7), 9, e(10, P)),
        Err(Errno::EINVAL)
    );
    // L2/L3/L4 changes ask for a TLB flush.
    let f = mm
        .mmu_update_pt(&mut mem, A_DOM, A_DOM, ptr(6, 0), 0, false)
        .unwrap();
    assert_eq!(f, Flush::DomainTlbs);
    assert_eq!(mm.page(m(7)).unwrap().type_count, 0);
    assert_eq!(mm.page(m(8)).unwrap().type_count, 0);
    assert_eq!(mm.inconsistencies(), 0);
}

#[test]
fn foreign_pg_owner() {
    let (mut mm, mut mem) = machine();
    tree(&mut mm, &mut mem);
    // A privileged A maps B's frame 40 through foreigndom = B.
    mu(
        &mut mm,
        &mut mem,
        A_DOM,
        B_DOM,
        ptr(7, 1),
        e(40, P | RW),
        false,
    )
    .unwrap();
    assert_eq!(mm.page(m(40)).unwrap().count, 2);
    // but not its own frame under foreigndom = B, nor L2 updates with a foreign owner.
    assert_eq!(
        mu(&mut mm, &mut mem, A_DOM, B_DOM, ptr(7, 2), e(9, P), false),
        Err(Errno::EBUSY)
    );
    assert_eq!(
        mu(&mut mm, &mut mem, A_DOM, B_DOM, ptr(6, 2), 0, false),
        Err(Errno::EINVAL)
    );
    // B goes away: frame 40 stays until A drops its mapping.
    let r = mm.relinquish(&mut mem, B_DOM).unwrap();
    assert_eq!(r.still_referenced, vec![m(40)]);
    assert_eq!(r.freed.len(), 15);
    assert_eq!(mm.destroy_domain(B_DOM), Err(Errno::EBUSY));
    mu(&mut mm, &mut mem, A_DOM, A_DOM, ptr(7, 1), 0, false).unwrap();
    assert_eq!(mm.take_freed(), vec![m(40)]);
    mm.destroy_domain(B_DOM).unwrap();
    assert_eq!(mm.inconsistencies(), 0);
}

#[test]
fn linear_page_tables() {
    let (mut mm, mut mem) = machine();
    tree(&mut mm, &mut mem);
    // Self-reference read-only: allowed, no references; writable: refused.
    mu(&mut mm, &mut mem, A_DOM, A_DOM, ptr(4, 1), e(4, P), false).unwrap();
    assert_eq!(mm.page(m(4)).unwrap().type_count, 1);
    assert_eq!(
        mu(
            &mut mm,
            &mut mem,
            A_DOM,
            A_DOM,
            ptr(4, 2),
            e(4, P | RW),
            false
        ),
        Err(Errno::EINVAL)
    );
    // Another validated L4 (frame 11), linked read-only from 4.
    mm.pin(&mut mem, A_DOM, m(11), 4).unwrap();
    mu(&mut mm, &mut mem, A_DOM, A_DOM, ptr(4, 2), e(11, P), false).unwrap();
    assert_eq!(
        (
            mm.page(m(4)).unwrap().linear,
            mm.page(m(11)).unwrap().linear
        ),
        (1, -1)
    );
    // 11 is a linear target: it cannot get linear entries (no chains).
    mm.pin(&mut mem, A_DOM, m(12), 4).unwrap();
    assert_eq!(
        mu(&mut mm, &mut mem, A_DOM, A_DOM, ptr(11, 2), e(12, P), false),
        Err(Errno::EINVAL)
    );
    // and 4 (which has linear entries) cannot be a target.
    assert_eq!(
        mu(&mut mm, &mut mem, A_DOM, A_DOM, ptr(12, 2), e(4, P), false),
        Err(Errno::EINVAL)
    );
    mu(&mut mm, &mut mem, A_DOM, A_DOM, ptr(4, 2), 0, false).unwrap();
    assert_eq!(
        (
            mm.page(m(4)).unwrap().linear,
            mm.page(m(11)).unwrap().linear
        ),
        (0, 0)
    );
    // Circular linear references are broken by relinquish.
    mu(&mut mm, &mut mem, A_DOM, A_DOM, ptr(11, 2), e(12, P), false).unwrap();
    assert_eq!(mm.inconsistencies(), 0);
    let r = mm.relinquish(&mut mem, A_DOM).unwrap();
    assert_eq!(r.freed.len(), 28);
    assert!(r.still_referenced.is_empty());
    assert_eq!(mm.inconsistencies(), 0);
}

#[test]
fn baseptrs_and_teardown() {
    let (mut mm, mut mem) = machine();
    tree(&mut mm, &mut mem);
    assert_eq!(mm.new_baseptr(&mut mem, A_DOM, 0, m(4)), Ok(Flush::LoadCr3));
    assert_eq!(mm.page(m(4)).unwrap().type_count, 2);
    assert_eq!(mm.new_baseptr(&mut mem, A_DOM, 0, m(4)), Ok(Flush::LoadCr3));
    assert_eq!(mm.page(m(4)).unwrap().type_count, 2);
    assert_eq!(
        mm.new_baseptr(&mut mem, A_DOM, 0, m(33)),
        Err(Errno::EINVAL)
    );
    assert_eq!(mm.new_baseptr(&mut mem, A_DOM, 0, m(8)), Err(Errno::EINVAL));
    assert_eq!(mm.new_baseptr(&mut mem, A_DOM, 5, m(4)), Err(Errno::EINVAL));
    mm.new_user_baseptr(&mut mem, A_DOM, 0, Some(m(13)))
        .unwrap();
    assert_eq!(mm.page(m(13)).unwrap().ty, PageType::L4);
    mm.new_user_baseptr(&mut mem, A_DOM, 0, None).unwrap();
    assert_eq!(mm.page(m(13)).unwrap().type_count, 0);
    mm.unpin(&mut mem, A_DOM, m(4)).unwrap();
    // The base pointer keeps the tree validated.
    assert!(mm.page(m(7)).unwrap().validated);
    // A page released while mapped stays until unmapped.
    mm.release(A_DOM, m(8)).unwrap();
    assert!(mm.take_freed().is_empty());
    let r = mm.relinquish(&mut mem, A_DOM).unwrap();
    assert_eq!(r.freed.len(), 28);
    assert!(mm.take_freed().is_empty());
    assert_eq!(mm.domain(A_DOM).unwrap().tot_pages, 0);
    mm.destroy_domain(A_DOM).unwrap();
    assert_eq!(mm.inconsistencies(), 0);
}

#[test]
fn descriptor_pages() {
    let (mut mm, mut mem) = machine();
    tree(&mut mm, &mut mem);
    mem.write(m(14), 1, 0x00af_9a00_0000_ffff);
    // A writable frame cannot become a GDT frame; others can, with fixups in place.
    assert_eq!(
        mm.set_gdt(&mut mem, A_DOM, 0, &[m(8)], 16),
        Err(Errno::EINVAL)
    );
    assert_eq!(
        mm.set_gdt(&mut mem, A_DOM, 0, &[m(14)], 7169),
        Err(Errno::EINVAL)
    );
    assert_eq!(
        mm.set_gdt(&mut mem, A_DOM, 0, &[m(14)], 513),
        Err(Errno::EINVAL)
    );
    assert_eq!(
        mm.set_gdt(&mut mem, A_DOM, 0, &[m(14), m(33)], 1024),
        Err(Errno::EINVAL)
    );
    assert_eq!(mm.page(m(14)).unwrap().type_count, 0);
    mm.set_gdt(&mut mem, A_DOM, 0, &[m(14)], 16).unwrap();
    assert_eq!(mem.read(m(14), 1), 0x00af_fa00_0000_ffff);
    // A descriptor page cannot be mapped writable.
    assert_eq!(
        mm.update_va_mapping(&mut mem, A_DOM, A_DOM, m(7), 5, e(14, P | RW)),
        Err(Errno::EBUSY)
    );
    // Bad descriptor contents cannot be validated.
    mem.write(m(15), 0, 0x0000_8900_0000_0067);
    assert_eq!(
        mm.set_gdt(&mut mem, A_DOM, 0, &[m(15)], 16),
        Err(Errno::EINVAL)
    );
    assert_eq!(
        mm.map_ldt_page(&mut mem, A_DOM, 0, 0, m(15)),
        Err(Errno::EINVAL)
    );
    mm.map_ldt_page(&mut mem, A_DOM, 0, 0, m(16)).unwrap();
    assert_eq!(
        mm.map_ldt_page(&mut mem, A_DOM, 0, 16, m(16)),
        Err(Errno::EINVAL)
    );
    // update_descriptor.
    mm.update_descriptor(&mut mem, A_DOM, ptr(14, 2), 0x00cf_9200_0000_ffff)
        .unwrap();
    assert_eq!(mem.read(m(14), 2), 0x00cf_f200_0000_ffff);
    mm.update_descriptor(&mut mem, A_DOM, ptr(9, 2), 0).unwrap();
    assert_eq!(
        mm.update_descriptor(&mut mem, A_DOM, ptr(9, 2) + 4, 0),
        Err(Errno::EINVAL)
    );
    assert_eq!(
        mm.update_descriptor(&mut mem, A_DOM, ptr(7, 2), 0),
        Err(Errno::EINVAL)
    );
    assert_eq!(
        mm.update_descriptor(&mut mem, A_DOM, ptr(33, 2), 0),
        Err(Errno::EINVAL)
    );
    assert_eq!(
        mm.update_descriptor(&mut mem, A_DOM, ptr(9, 2), 0x0000_8900_0000_0067),
        Err(Errno::EINVAL)
    );
    // New base pointer drops the LDT.
    assert_eq!(mm.new_baseptr(&mut mem, A_DOM, 0, m(4)), Ok(Flush::LoadCr3));
    assert_eq!(mm.page(m(16)).unwrap().type_count, 0);
    mm.set_gdt(&mut mem, A_DOM, 0, &[], 0).unwrap();
    assert_eq!(mm.page(m(14)).unwrap().type_count, 0);
    assert_eq!(mm.inconsistencies(), 0);
}

#[test]
fn shared_pages_and_machphys() {
    let (mut mm, mut mem) = machine();
    tree(&mut mm, &mut mem);
    mm.share_xen_page(m(2), A_DOM, true).unwrap();
    mm.share_xen_page(m(3), DomId::XEN, false).unwrap();
    mu(
        &mut mm,
        &mut mem,
        A_DOM,
        A_DOM,
        ptr(7, 1),
        e(2, P | RW),
        false,
    )
    .unwrap();
    assert_eq!(mm.pin(&mut mem, A_DOM, m(2), 1), Err(Errno::EINVAL));
    assert_eq!(
        mu(
            &mut mm,
            &mut mem,
            A_DOM,
            A_DOM,
            ptr(7, 2),
            e(2, P | PCD),
            false
        ),
        Err(Errno::EINVAL)
    );
    assert_eq!(
        mu(
            &mut mm,
            &mut mem,
            A_DOM,
            DomId::XEN,
            ptr(7, 2),
            e(3, P | RW),
            false
        ),
        Err(Errno::EBUSY)
    );
    mu(
        &mut mm,
        &mut mem,
        A_DOM,
        DomId::XEN,
        ptr(7, 2),
        e(3, P),
        false,
    )
    .unwrap();
    assert_eq!(mm.release(A_DOM, m(2)), Err(Errno::EINVAL));
    assert_eq!(mm.check_machphys_update(A_DOM, m(9)), Ok(()));
    assert_eq!(mm.check_machphys_update(A_DOM, m(33)), Err(Errno::EINVAL));
    assert_eq!(mm.check_machphys_update(A_DOM, m(2)), Ok(()));
    let r = mm.relinquish(&mut mem, A_DOM).unwrap();
    assert_eq!(r.unshared, vec![m(2)]);
    assert_eq!(mm.page(m(2)).unwrap().owner, Owner::Hypervisor);
    assert_eq!(mm.page(m(3)).unwrap().count, 1);
    assert_eq!(mm.inconsistencies(), 0);
}

#[test]
fn stale_tlb_flush_on_type_change() {
    let (mut mm, mut mem) = machine();
    tree(&mut mm, &mut mem);
    let before = mem.flushes;
    // Frame 8 was mapped writable; the mapping goes; it becomes an L1: flush first.
    mu(&mut mm, &mut mem, A_DOM, A_DOM, ptr(7, 0), 0, false).unwrap();
    mm.pin(&mut mem, A_DOM, m(8), 1).unwrap();
    assert_eq!(mem.flushes, before + 1);
    // A frame never used since the last flush: no flush.
    mm.note_domain_flushed(A_DOM);
    mm.pin(&mut mem, A_DOM, m(17), 1).unwrap();
    assert_eq!(mem.flushes, before + 1);
}

#[test]
fn validation_failure_undoes_everything() {
    let (mut mm, mut mem) = machine();
    // L2 9 with two L1s; the second maps B's frame.
    mem.write(m(9), 0, e(10, P));
    mem.write(m(9), 1, e(11, P));
    mem.write(m(10), 0, e(12, P | RW));
    mem.write(m(11), 0, e(13, P | RW));
    mem.write(m(11), 1, e(33, P));
    assert_eq!(mm.pin(&mut mem, A_DOM, m(9), 2), Err(Errno::EBUSY));
    for f in 9..14 {
        let p = mm.page(m(f)).unwrap();
        assert_eq!((p.count, p.type_count), (1, 0), "frame {f}");
    }
    assert_eq!(mm.page(m(33)).unwrap().count, 1);
    assert_eq!(mm.inconsistencies(), 0);
}

/// `mmu_update_pt` with the flush request dropped.
fn mu(
    mm: &mut PvMm,
    mem: &mut MockMem,
    pt: DomId,
    pg: DomId,
    ptr: u64,
    val: u64,
    ad: bool,
) -> Result<(), Errno> {
    mm.mmu_update_pt(mem, pt, pg, ptr, val, ad).map(|_| ())
}

mod grant_mappings {
    use super::*;
    use xen_abi::grant_table::{GNTMAP_APPLICATION_MAP, GNTMAP_HOST_MAP, GNTMAP_READONLY};

    const RW_MAP: u32 = GNTMAP_HOST_MAP;
    const RO_MAP: u32 = GNTMAP_HOST_MAP | GNTMAP_READONLY;

    /// A's tree (L1 7), plus B's validated L1 40 (pinned).
    fn setup() -> (PvMm, MockMem) {
        let (mut mm, mut mem) = machine();
        tree(&mut mm, &mut mem);
        mm.pin(&mut mem, B_DOM, m(40), 1).unwrap();
        (mm, mem)
    }

    fn counts(mm: &PvMm, f: u64) -> (u32, u32, PageType) {
        let p = mm.page(m(f)).unwrap();
        (p.count, p.type_count, p.ty)
    }

    #[test]
    fn pte_layout() {
        let e = grant_pte(m(0x1234), RW_MAP | (5 << 16));
        assert_eq!(
            e,
            (0x1234 << 12) | P | RW | A | D | NX | GNTTAB | USER | GUEST_KERNEL | (5 << 9)
        );
        let e = grant_pte(m(0x1234), RO_MAP | GNTMAP_APPLICATION_MAP);
        assert_eq!(e, (0x1234 << 12) | P | A | D | NX | GNTTAB | USER | G);
        assert!(is_grant_entry(e) && !is_grant_entry(e & !P) && !is_grant_entry(e & !GNTTAB));
    }

    #[test]
    fn map_and_unmap_take_and_drop_exactly_the_refs() {
        let (mut mm, mut mem) = setup();
        // B maps A's frame 20 writable, and 21 read-only, into its L1 40.
        mm.create_grant_mapping(&mut mem, B_DOM, m(40), 3, m(20), A_DOM, RW_MAP)
            .unwrap();
        mm.create_grant_mapping(&mut mem, B_DOM, m(40), 4, m(21), A_DOM, RO_MAP)
            .unwrap();
        assert_eq!(mem.read(m(40), 3), grant_pte(m(20), RW_MAP));
        assert_eq!(counts(&mm, 20), (2, 1, PageType::Writable));
        assert_eq!(counts(&mm, 21), (2, 0, PageType::None));
        // A cannot make the writably mapped frame a page table now.
        assert_eq!(mm.pin(&mut mem, A_DOM, m(20), 1), Err(Errno::EINVAL));
        // The CPU sets Accessed/Dirty: still recognised.
        let v = mem.read(m(40), 3);
        mem.write(m(40), 3, v & !(A | D));
        let u = mm
            .destroy_grant_mapping(&mut mem, B_DOM, m(40), 3, m(20), RW_MAP)
            .unwrap();
        assert_eq!((u.frame(), u.writable()), (m(20), true));
        assert_eq!(mem.read(m(40), 3), 0);
        // References held until the caller flushed and released them.
        assert_eq!(counts(&mm, 20), (2, 1, PageType::Writable));
        mm.put_grant_refs(&mut mem, u);
        assert_eq!(counts(&mm, 20), (1, 0, PageType::Writable));
        let u = mm
            .destroy_grant_mapping(&mut mem, B_DOM, m(40), 4, m(21), RO_MAP)
            .unwrap();
        mm.put_grant_refs(&mut mem, u);
        assert_eq!(counts(&mm, 21), (1, 0, PageType::None));
        mm.pin(&mut mem, A_DOM, m(20), 1).unwrap();
        assert_eq!(mm.inconsistencies(), 0);
    }

    #[test]
    fn create_rejections() {
        let (mut mm, mut mem) = setup();
        let mut c = |mm: &mut PvMm, l1: u64, idx: usize, f: u64, g: DomId, fl: u32| {
            mm.create_grant_mapping(&mut mem, B_DOM, m(l1), idx, m(f), g, fl)
        };
        // Not a validated L1 of the mapper: A's L1, B's unvalidated frame, bad index.
        assert_eq!(c(&mut mm, 7, 3, 20, A_DOM, RW_MAP), Err(Errno::EINVAL));
        assert_eq!(c(&mut mm, 41, 3, 20, A_DOM, RW_MAP), Err(Errno::EINVAL));
        assert_eq!(
            c(&mut mm, 40, ENTRIES, 20, A_DOM, RW_MAP),
            Err(Errno::EINVAL)
        );
        // Frame not the granter's: B's own frame named as A's, free, hypervisor, I/O.
        for f in [41, 50, 1, 61, 1000] {
            assert_eq!(
                c(&mut mm, 40, 3, f, A_DOM, RO_MAP),
                Err(Errno::EINVAL),
                "frame {f}"
            );
        }
        // A writable mapping of A's page table.
        assert_eq!(c(&mut mm, 40, 3, 7, A_DOM, RW_MAP), Err(Errno::EBUSY));
        // Read-only works (Xen allows it).
        c(&mut mm, 40, 3, 7, A_DOM, RO_MAP).unwrap();
        // Slot present.
        assert_eq!(c(&mut mm, 40, 3, 20, A_DOM, RO_MAP), Err(Errno::EBUSY));
        mem.write(m(40), 5, 0);
        mu(&mut mm, &mut mem, B_DOM, B_DOM, ptr(40, 5), e(42, P), false).unwrap();
        let mut c = |mm: &mut PvMm, idx: usize| {
            mm.create_grant_mapping(&mut mem, B_DOM, m(40), idx, m(20), A_DOM, RO_MAP)
        };
        assert_eq!(c(&mut mm, 5), Err(Errno::EBUSY));
        assert_eq!(counts(&mm, 20), (1, 0, PageType::None));
        assert_eq!(mm.inconsistencies(), 0);
    }

    #[test]
    fn guests_cannot_create_change_or_clear_grant_entries() {
        let (mut mm, mut mem) = setup();
        mm.create_grant_mapping(&mut mem, B_DOM, m(40), 3, m(20), A_DOM, RW_MAP)
            .unwrap();
        let g = mem.read(m(40), 3);
        // Create: bit 62 refused in mmu_update, update_va_mapping and validation.
        assert_eq!(
            mu(
                &mut mm,
                &mut mem,
                B_DOM,
                B_DOM,
                ptr(40, 6),
                e(42, P | GNTTAB),
                false
            ),
            Err(Errno::EINVAL)
        );
        assert_eq!(
            mm.update_va_mapping(&mut mem, B_DOM, B_DOM, m(40), 6, e(42, P | GNTTAB)),
            Err(Errno::EINVAL)
        );
        mem.write(m(41), 0, g);
        assert_eq!(mm.pin(&mut mem, B_DOM, m(41), 1), Err(Errno::EINVAL));
        // Change or clear: refused whatever the new value (fast path, other frame, 0,
        // preserve-AD), and the entry and counts stay.
        for (val, ad) in [
            (0, false),
            (0, true),
            (g & !GNTTAB, false),
            (g ^ A, true),
            (e(42, P), false),
            (g & !P, false),
        ] {
            assert_eq!(
                mu(&mut mm, &mut mem, B_DOM, B_DOM, ptr(40, 3), val, ad),
                Err(Errno::EINVAL),
                "{val:#x}"
            );
            assert_eq!(
                mm.update_va_mapping(&mut mem, B_DOM, B_DOM, m(40), 3, val),
                Err(Errno::EINVAL)
            );
        }
        assert_eq!(mem.read(m(40), 3), g);
        assert_eq!(counts(&mm, 20), (2, 1, PageType::Writable));
        // Destroy checks the frame and the RW bit.
        assert_eq!(
            mm.destroy_grant_mapping(&mut mem, B_DOM, m(40), 3, m(21), RW_MAP),
            Err(Errno::EINVAL)
        );
        assert_eq!(
            mm.destroy_grant_mapping(&mut mem, B_DOM, m(40), 3, m(20), RO_MAP),
            Err(Errno::EINVAL)
        );
        assert_eq!(
            mm.destroy_grant_mapping(&mut mem, A_DOM, m(40), 3, m(20), RW_MAP),
            Err(Errno::EINVAL)
        );
        // An ordinary entry is not a grant entry.
        mu(
            &mut mm,
            &mut mem,
            B_DOM,
            B_DOM,
            ptr(40, 6),
            e(42, P | RW),
            false,
        )
        .unwrap();
        assert_eq!(
            mm.destroy_grant_mapping(&mut mem, B_DOM, m(40), 6, m(42), RW_MAP),
            Err(Errno::EINVAL)
        );
        let u = mm
            .destroy_grant_mapping(&mut mem, B_DOM, m(40), 3, m(20), RW_MAP)
            .unwrap();
        mm.put_grant_refs(&mut mem, u);
        // The slot is ordinary again.
        mu(&mut mm, &mut mem, B_DOM, B_DOM, ptr(40, 3), e(43, P), false).unwrap();
        assert_eq!(mm.inconsistencies(), 0);
    }

    #[test]
    fn devalidation_drops_grant_refs() {
        let (mut mm, mut mem) = setup();
        mm.create_grant_mapping(&mut mem, B_DOM, m(40), 3, m(20), A_DOM, RW_MAP)
            .unwrap();
        mm.unpin(&mut mem, B_DOM, m(40)).unwrap();
        assert_eq!(counts(&mm, 20), (1, 0, PageType::Writable));
        // The stale entry cannot be unmapped any more (the grant layer keeps its handle).
        assert_eq!(
            mm.destroy_grant_mapping(&mut mem, B_DOM, m(40), 3, m(20), RW_MAP),
            Err(Errno::EINVAL)
        );
        // Nor can the L1 be validated again with it.
        assert_eq!(mm.pin(&mut mem, B_DOM, m(40), 1), Err(Errno::EINVAL));
        assert_eq!(mm.inconsistencies(), 0);
    }

    #[test]
    fn granter_death_keeps_mapped_frames_until_unmap() {
        let (mut mm, mut mem) = setup();
        mm.create_grant_mapping(&mut mem, B_DOM, m(40), 3, m(20), A_DOM, RW_MAP)
            .unwrap();
        mm.create_grant_mapping(&mut mem, B_DOM, m(40), 4, m(21), A_DOM, RO_MAP)
            .unwrap();
        let r = mm.relinquish(&mut mem, A_DOM).unwrap();
        assert_eq!(r.still_referenced, vec![m(20), m(21)]);
        assert!(!r.freed.contains(&m(20)) && !r.freed.contains(&m(21)));
        assert_eq!(mm.destroy_domain(A_DOM), Err(Errno::EBUSY));
        assert_eq!(counts(&mm, 20), (1, 1, PageType::Writable));
        // Unmapping frees each frame, after the caller's flush.
        let u = mm
            .destroy_grant_mapping(&mut mem, B_DOM, m(40), 3, m(20), RW_MAP)
            .unwrap();
        assert!(mm.take_freed().is_empty());
        mm.put_grant_refs(&mut mem, u);
        assert_eq!(mm.take_freed(), vec![m(20)]);
        assert_eq!(mm.page(m(20)).unwrap().owner, Owner::Free);
        // The mapper's own teardown drops the other one.
        mm.relinquish(&mut mem, B_DOM).unwrap();
        assert_eq!(mm.page(m(21)).unwrap().owner, Owner::Free);
        mm.destroy_domain(A_DOM).unwrap();
        mm.destroy_domain(B_DOM).unwrap();
        assert_eq!(mm.inconsistencies(), 0);
    }

    #[test]
    fn self_grant() {
        let (mut mm, mut mem) = setup();
        mm.create_grant_mapping(&mut mem, A_DOM, m(7), 9, m(20), A_DOM, RW_MAP)
            .unwrap();
        assert_eq!(counts(&mm, 20), (2, 1, PageType::Writable));
        let u = mm
            .destroy_grant_mapping(&mut mem, A_DOM, m(7), 9, m(20), RW_MAP)
            .unwrap();
        mm.put_grant_refs(&mut mem, u);
        assert_eq!(counts(&mm, 20), (1, 0, PageType::Writable));
    }
}

#[test]
fn covers_needs_every_frame_of_the_range() {
    let r = [(10, 19), (20, 29), (40, 49)];
    assert!(covers(&r, 10, 29));
    assert!(covers(&r, 12, 25));
    assert!(covers(&r, 45, 45));
    assert!(!covers(&r, 25, 41));
    assert!(!covers(&r, 5, 12));
    assert!(!covers(&[], 0, 0));
    assert!(covers(&[(0, u64::MAX)], 7, u64::MAX));
}
