//! `mmu`: the PV memory model (ABI.md §3.3) with legal and illegal requests. Every illegal
//! one must get Xen's exact -errno (xen-project/xen c447b7308b13, the file and function
//! named at each check) and the hypervisor must still answer afterwards.
//!
//! Xen sources of the expected values:
//! * `xen/arch/x86/mm.c`: `get_page_from_l1e` (foreign or free frame → `could_not_pin` →
//!   -EBUSY; writable mapping of a page-table frame: `get_page_type(PGT_writable_page)`
//!   fails → -EBUSY), `mod_l1_entry` (flags in `l1_disallow_mask`, e.g. bit 62
//!   `_PAGE_GNTTAB` → -EINVAL), `mod_l2_entry` (`L2_DISALLOW_MASK`: PSE, PCD → -EINVAL),
//!   `mod_l4_entry` (slot not `is_guest_l4_slot` → -EINVAL), `_get_page_type` (type
//!   conflict → -EINVAL), `do_mmuext_op` (already pinned / not pinned → -EINVAL),
//!   `new_guest_cr3` (rc of `get_page_and_type_from_mfn` → -EINVAL), `do_mmu_update`
//!   (MMU_MACHPHYS_UPDATE of a frame `get_page_from_mfn` refuses → -EINVAL; a batch stops
//!   at the first failure with `*done` = requests done), `arch_memory_op`
//!   (XENMEM_machphys_mapping for the hardware domain).
//! * `xen/arch/x86/pv/descriptor-tables.c`: `pv_set_gdt` (frame not of type
//!   seg_desc_page → -EINVAL), `do_update_descriptor` / `check_descriptor` (misaligned or
//!   bad descriptor → -EINVAL; DPL raised to 3).
//! * `xen/common/memory.c`: `do_memory_op` (maximum_ram_page = max_page, reservations,
//!   maximum_gpfn = `(shared_info.arch.max_pfn ?: 1) - 1`), `increase_reservation` /
//!   `populate_physmap` / `decrease_reservation` (extents done; PV gets MFNs back and the
//!   M2P entry set).
//! * `xen/arch/x86/pv/ro-page-fault.c` + `xen/arch/x86/pv/traps.c`: writable page tables
//!   (`ptwr_emulated_update` validates with `get_page_from_l1e`; a refused write is not
//!   emulated and the #PF is bounced with the hardware error code, U cleared for kernel
//!   mode: present|write = 3, CR2 = the address written).

use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use pv_guest::arch::mmu::{self, Frame, PtwrForm};
use pv_guest::arch::TrapFrame;
use pv_guest::hypercall::{self as hc};
use pv_guest::mm::{pte, pte_of, xen_adjusted_l1e, Pool};
use pv_guest::xen_abi::memory::{
    XENMEM_CURRENT_RESERVATION, XENMEM_DECREASE_RESERVATION, XENMEM_INCREASE_RESERVATION,
    XENMEM_MAXIMUM_GPFN, XENMEM_MAXIMUM_RESERVATION, XENMEM_POPULATE_PHYSMAP,
};
use pv_guest::xen_abi::xen::{
    MmuUpdate, MmuextOp, MACH2PHYS_VIRT_END, MACH2PHYS_VIRT_START, MMUEXT_PIN_L1_TABLE,
    MMUEXT_UNPIN_TABLE, MMU_MACHPHYS_UPDATE, MMU_PT_UPDATE_PRESERVE_AD, UVMF_INVLPG,
    VMASST_CMD_ENABLE, VMASST_TYPE_WRITABLE_PAGETABLES,
};
use pv_guest::xen_abi::{DomId, Errno};
use pv_guest::{println, shared, start, traps};

use crate::report::{err, rc, rc0, Rc, Report};

const SELF: u16 = DomId::SELF.raw();
const MAGIC_X: u64 = 0x5845_5858_5858_5858;
const MAGIC_Y: u64 = 0x5945_5959_5959_5959;
/// Bits the CPU may set in an entry behind our back.
const AD: u64 = pte::ACCESSED | pte::DIRTY;

static ARMED: AtomicBool = AtomicBool::new(false);
static SEEN: AtomicBool = AtomicBool::new(false);
static SKIP: AtomicU64 = AtomicU64::new(0);
static ERROR: AtomicU64 = AtomicU64::new(0);
static CR2: AtomicU64 = AtomicU64::new(0);
static RIP: AtomicU64 = AtomicU64::new(0);

/// #PF while a probe is armed: record it and skip the probe's instruction.
fn pf_hook(f: &mut TrapFrame) -> bool {
    if !ARMED.load(Ordering::SeqCst) {
        return false;
    }
    SEEN.store(true, Ordering::SeqCst);
    ERROR.store(f.error_code, Ordering::SeqCst);
    CR2.store(shared::cr2(), Ordering::SeqCst);
    RIP.store(f.rip, Ordering::SeqCst);
    f.rip = f.rip.wrapping_add(SKIP.load(Ordering::SeqCst));
    true
}

/// Run `probe` with the #PF hook armed to skip `len` bytes; returns (its result, whether a
/// #PF happened).
fn armed<T>(len: u64, probe: impl FnOnce() -> T) -> (T, bool) {
    SEEN.store(false, Ordering::SeqCst);
    SKIP.store(len, Ordering::SeqCst);
    ARMED.store(true, Ordering::SeqCst);
    let v = probe();
    ARMED.store(false, Ordering::SeqCst);
    (v, SEEN.load(Ordering::SeqCst))
}

/// Read word 0 of a map-area slot, faults tolerated (u64::MAX then).
fn slot_word(slot: usize) -> (u64, bool) {
    let (v, pf) = armed(3, || mmu::probe_slot_read(slot, 0));
    (v.map_or(u64::MAX, |(v, _)| v), pf)
}

fn m2p(mfn: u64) -> Option<u64> {
    let (v, pf) = armed(3, || mmu::probe_m2p_read(mfn));
    if pf {
        return None;
    }
    v.map(|(v, _)| v)
}

fn alive(r: &mut Report, after: &str) {
    let v = hc::xen_version();
    r.check(
        v.is_ok(),
        &format_args_str(after),
        rc0(v),
        "xen_version answers",
    );
}

/// `"hypervisor alive after <what>"` without allocation.
fn format_args_str(after: &str) -> Label {
    let mut l = Label::new();
    l.push("hypervisor alive after ");
    l.push(after);
    l
}

/// A short fixed-capacity string for check names built at run time.
struct Label {
    buf: [u8; 96],
    len: usize,
}

impl Label {
    fn new() -> Label {
        Label {
            buf: [0; 96],
            len: 0,
        }
    }
    fn push(&mut self, s: &str) {
        let n = s.len().min(self.buf.len() - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
    }
}

impl core::ops::Deref for Label {
    type Target = str;
    fn deref(&self) -> &str {
        core::str::from_utf8(&self.buf[..self.len]).unwrap_or("?")
    }
}

/// A value shown in hex in check output.
#[derive(PartialEq, Eq)]
struct Hex(u64);

impl core::fmt::Debug for Hex {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}

fn one_update(ptr: u64, val: u64) -> hc::Batch {
    mmu::mmu_update(&[MmuUpdate { ptr, val }])
}

fn batch_rc(b: hc::Batch) -> (Rc, u32) {
    (rc0(b.result), b.done)
}

pub fn run(r: &mut Report) {
    super::setup(r);
    traps::set_hook(14, Some(pf_hook));
    let Some(si) = start::start_info() else {
        r.fail("start_info", "missing", "present");
        return;
    };
    let info = match mmu::init(si) {
        Ok(i) => {
            r.pass("mm init: layout from start_info, initial mapping walked");
            i
        }
        Err(e) => {
            println!("mmu: init failed: {e}");
            r.fail("mm init", "error", "layout");
            return;
        }
    };
    println!(
        "mmu: nr_pages {} pt_pfn {:#x} nr_pt_frames {} first free pfn {:#x} initial mapping ends at pfn {:#x}; {} free frames; L4 mfn {:#x}",
        info.layout.nr_pages,
        info.layout.pt_pfn,
        info.layout.nr_pt_frames,
        info.layout.first_free_pfn,
        info.layout.mapped_end_pfn,
        info.free_frames,
        info.l4_mfn
    );
    memory_queries(r, si.nr_pages);
    // Without the map area the checks that need it fail one by one (printed), the others
    // still run.
    match mmu::map_area_init() {
        Ok(_) => r.pass(
            "map area built: L1 and L2 zeroed, read-only, pinned, hooked into the L3 with mmu_update",
        ),
        Err(e) => {
            println!("mmu: map area: {e}");
            r.fail(
                "map area (L1+L2 pinned, hooked with mmu_update)",
                "error",
                "built",
            );
        }
    }
    map_unmap(r);
    illegal_mappings(r);
    pinning(r);
    table_entries(r);
    baseptr(r);
    machphys(r);
    batch(r);
    alive(r, "illegal mmu_update/mmuext_op requests");
    reservations(r);
    gdt(r);
    alive(r, "set_gdt/update_descriptor");
    writable_page_tables(r);
    alive(r, "writable page-table writes");
}

/// memory_op queries and the M2P.
fn memory_queries(r: &mut Report, nr_pages: u64) {
    let max_ram = hc::maximum_ram_page();
    let mut our_max = 0;
    for pfn in 0..nr_pages {
        if let Some(m) = mmu::pfn_to_mfn(pfn) {
            our_max = our_max.max(m);
        }
    }
    match max_ram {
        Ok(m) => {
            r.check(
                m > our_max,
                "XENMEM_maximum_ram_page above every frame we own (memory.c: max_page)",
                (m, our_max),
                "max_page > our highest mfn",
            );
        }
        Err(e) => r.fail(
            "XENMEM_maximum_ram_page",
            crate::report::rc_err(e),
            "max_page",
        ),
    }
    match hc::machphys_mapping() {
        Ok(mp) => {
            r.eq(
                "XENMEM_machphys_mapping v_start (MACH2PHYS_VIRT_START)",
                Hex(mp.v_start),
                Hex(MACH2PHYS_VIRT_START),
            );
            r.eq(
                "XENMEM_machphys_mapping v_end (MACH2PHYS_VIRT_END, mm.c arch_memory_op)",
                Hex(mp.v_end),
                Hex(MACH2PHYS_VIRT_END),
            );
            if let Ok(m) = max_ram {
                r.eq(
                    "XENMEM_machphys_mapping max_mfn = max_page - 1 for the hardware domain",
                    mp.max_mfn,
                    m.wrapping_sub(1),
                );
            }
        }
        Err(e) => r.fail("XENMEM_machphys_mapping", crate::report::rc_err(e), "0"),
    }
    let cur = hc::memory_op_domid(XENMEM_CURRENT_RESERVATION, SELF);
    r.eq(
        "XENMEM_current_reservation(DOMID_SELF) = start_info.nr_pages",
        rc(cur),
        Rc(nr_pages as i64),
    );
    let max = hc::memory_op_domid(XENMEM_MAXIMUM_RESERVATION, SELF);
    r.check(
        matches!(max, Ok(m) if m >= nr_pages),
        "XENMEM_maximum_reservation(DOMID_SELF) >= current",
        rc(max),
        "max_pages >= nr_pages",
    );
    // Xen answers (shared_info.arch.max_pfn ?: 1) - 1 for a PV guest, so tell it first as
    // Linux does.
    shared::set_arch_max_pfn(nr_pages);
    r.eq(
        "XENMEM_maximum_gpfn = arch.max_pfn - 1 (mm.c domain_get_maximum_gpfn)",
        rc(hc::memory_op_domid(XENMEM_MAXIMUM_GPFN, SELF)),
        Rc(nr_pages as i64 - 1),
    );
    let layout = mmu::layout();
    let mut ok = true;
    let mut seen = (0u64, 0u64, 0u64);
    for pfn in [
        0,
        layout.map_or(1, |l| l.first_free_pfn),
        nr_pages.saturating_sub(1),
    ] {
        let Some(mfn) = mmu::pfn_to_mfn(pfn) else {
            continue;
        };
        let got = m2p(mfn);
        if got != Some(pfn) {
            ok = false;
            seen = (pfn, mfn, got.unwrap_or(u64::MAX));
        }
    }
    r.check(
        ok,
        "M2P at 0xffff800000000000 readable, M2P[p2m[pfn]] = pfn",
        seen,
        "pfn",
    );
}

fn map_unmap(r: &mut Report) {
    let Ok(x) = mmu::alloc_frame(Pool::Unmapped) else {
        r.fail("allocate a free frame", "none", "frame");
        return;
    };
    let m = match mmu::map(x.mfn(), true) {
        Ok(m) => {
            r.pass("update_va_mapping maps an own frame RW in the map area");
            m
        }
        Err(e) => {
            println!("mmu: map: {e}");
            r.fail("update_va_mapping maps an own frame RW", "error", "0");
            return;
        }
    };
    let want = xen_adjusted_l1e(pte_of(x.mfn(), pte::KERNEL_RW));
    let got = mmu::slot_pte(m.slot()).unwrap_or(0);
    r.eq(
        "stored L1 entry = Xen's adjusted entry (USER | _PAGE_GUEST_KERNEL added)",
        got & !AD,
        want & !AD,
    );
    let _ = m.write(0, MAGIC_X);
    let _ = m.write(511, MAGIC_Y);
    let slot = m.slot();
    r.eq(
        "update_va_mapping(va, 0) unmaps",
        mmu::unmap(m).is_ok(),
        true,
    );
    r.eq("unmapped slot entry is 0", mmu::slot_pte(slot), Some(0));
    let (_, pf) = slot_word(slot);
    r.check(pf, "access to the unmapped slot faults (#PF)", pf, true);
    match mmu::map(x.mfn(), false) {
        Ok(m) => {
            r.eq(
                "the frame mapped again read-only keeps its contents",
                (m.read(0), m.read(511)),
                (MAGIC_X, MAGIC_Y),
            );
            let _ = mmu::unmap(m);
        }
        Err(_) => r.fail("map the frame again read-only", "error", "0"),
    }
    // Many entries in one mmu_update: 8 frames mapped, then unmapped, in one call each.
    let mut frames: [Option<Frame>; 8] = Default::default();
    for f in frames.iter_mut() {
        *f = mmu::alloc_frame(Pool::Unmapped).ok();
    }
    if let Ok(first) = mmu::reserve_slots(8) {
        let mut reqs = [MmuUpdate::default(); 8];
        for (i, (q, f)) in reqs.iter_mut().zip(&frames).enumerate() {
            q.ptr = mmu::slot_maddr(first + i).unwrap_or(0);
            q.val = f.as_ref().map_or(0, |f| pte_of(f.mfn(), pte::KERNEL_RO));
        }
        r.eq(
            "mmu_update: 8 L1 entries in one batch",
            batch_rc(mmu::mmu_update(&reqs)),
            (Rc(0), 8),
        );
        let _ = mmu::flush_tlb();
        let readable = (0..8).all(|i| !slot_word(first + i).1);
        r.check(readable, "all 8 new mappings readable", readable, true);
        for q in reqs.iter_mut() {
            q.val = 0;
        }
        r.eq(
            "mmu_update: 8 entries cleared in one batch",
            batch_rc(mmu::mmu_update(&reqs)),
            (Rc(0), 8),
        );
        let _ = mmu::flush_tlb();
        mmu::release_slots(first, 8);
    }
    for f in frames.into_iter().flatten() {
        mmu::free_frame(f);
    }
    // shared_info is a hypervisor page shared with us: mapping it again is allowed.
    if let Some(si) = start::start_info() {
        match mmu::map(si.shared_info >> 12, false) {
            Ok(m) => {
                r.pass("map the shared_info frame a second time (shared with us)");
                let _ = mmu::unmap(m);
            }
            Err(_) => r.fail("map the shared_info frame again", "error", "0"),
        }
    }
    mmu::free_frame(x);
}

/// A machine frame below max_page, above the low 1 MiB (which Xen gives to dom_io), that
/// is not in our p2m: hypervisor memory or free memory.
fn foreign_frame() -> Option<u64> {
    let max = hc::maximum_ram_page().ok()?;
    let nr = mmu::layout()?.nr_pages;
    let mut ours_min = u64::MAX;
    let mut ours_max = 0;
    for pfn in 0..nr {
        if let Some(m) = mmu::pfn_to_mfn(pfn) {
            ours_min = ours_min.min(m);
            ours_max = ours_max.max(m);
        }
    }
    if ours_max + 1 < max {
        return Some(max - 1);
    }
    if ours_min > 0x100 {
        return Some(ours_min - 1);
    }
    (0x100..max)
        .rev()
        .take(4096)
        .find(|&m| mmu::mfn_to_pfn_p2m(m).is_none())
}

fn illegal_mappings(r: &mut Report) {
    let Ok(slot) = mmu::reserve_slots(1) else {
        r.fail("map-area slot", "none", "slot");
        return;
    };
    let Some(maddr) = mmu::slot_maddr(slot) else {
        return;
    };
    match foreign_frame() {
        Some(f) => {
            println!("mmu: frame not ours: mfn {f:#x}");
            r.eq(
                "update_va_mapping of a frame we do not own → -EBUSY (get_page_from_l1e: could_not_pin)",
                rc(mmu::update_slot(slot, pte_of(f, pte::KERNEL_RO), UVMF_INVLPG)),
                err(Errno::EBUSY),
            );
            r.eq(
                "mmu_update of a frame we do not own → -EBUSY, done 0",
                batch_rc(one_update(maddr, pte_of(f, pte::KERNEL_RO))),
                (err(Errno::EBUSY), 0),
            );
        }
        None => r.fail("find a frame we do not own", "none", "mfn"),
    }
    if let Some((l1, _)) = mmu::map_area_tables() {
        r.eq(
            "writable mapping of our own L1 table → -EBUSY (get_page_type(PGT_writable_page) fails)",
            rc(mmu::update_slot(slot, pte_of(l1, pte::KERNEL_RW), UVMF_INVLPG)),
            err(Errno::EBUSY),
        );
        r.eq(
            "writable mapping of an L1 table via mmu_update → -EBUSY",
            batch_rc(one_update(maddr, pte_of(l1, pte::KERNEL_RW))),
            (err(Errno::EBUSY), 0),
        );
        r.eq(
            "read-only mapping of our own L1 table is allowed",
            rc(mmu::update_slot(
                slot,
                pte_of(l1, pte::KERNEL_RO),
                UVMF_INVLPG,
            )),
            Rc(0),
        );
        let _ = mmu::update_slot(slot, 0, UVMF_INVLPG);
    }
    if let Ok(x) = mmu::alloc_frame(Pool::Unmapped) {
        r.eq(
            "L1 entry with bit 62 (_PAGE_GNTTAB) → -EINVAL (mod_l1_entry: l1_disallow_mask)",
            batch_rc(one_update(
                maddr,
                pte_of(x.mfn(), pte::KERNEL_RO) | pte::GNTTAB,
            )),
            (err(Errno::EINVAL), 0),
        );
        r.eq(
            "MMU_PT_UPDATE_PRESERVE_AD of an own frame",
            batch_rc(one_update(
                maddr | MMU_PT_UPDATE_PRESERVE_AD,
                pte_of(x.mfn(), pte::KERNEL_RO),
            )),
            (Rc(0), 1),
        );
        let _ = mmu::update_slot(slot, 0, UVMF_INVLPG);
        mmu::free_frame(x);
    }
    mmu::release_slots(slot, 1);
}

fn pinning(r: &mut Report) {
    // A frame of ours still mapped RW (the initial mapping) cannot become a table.
    if let Ok(w) = mmu::alloc_frame(Pool::Mapped) {
        r.eq(
            "pin as L1 a frame mapped writable → -EINVAL (_get_page_type: type conflict)",
            rc(mmu::pin(1, w.mfn())),
            err(Errno::EINVAL),
        );
        mmu::free_frame(w);
    }
    match mmu::alloc_scratch_table(1, true) {
        Ok(t) => {
            r.pass("a zeroed, read-only frame pins as L1");
            r.eq(
                "pin an already pinned table → -EINVAL (do_mmuext_op: already pinned)",
                rc(mmu::pin(1, t.mfn())),
                err(Errno::EINVAL),
            );
            let ops = [
                MmuextOp {
                    cmd: MMUEXT_UNPIN_TABLE,
                    pad: 0,
                    arg1: t.mfn(),
                    arg2: 0,
                },
                MmuextOp {
                    cmd: MMUEXT_UNPIN_TABLE,
                    pad: 0,
                    arg1: t.mfn(),
                    arg2: 0,
                },
                MmuextOp {
                    cmd: MMUEXT_PIN_L1_TABLE,
                    pad: 0,
                    arg1: t.mfn(),
                    arg2: 0,
                },
            ];
            r.eq(
                "mmuext batch [unpin, unpin again, pin]: -EINVAL (not pinned), done 1",
                batch_rc(mmu::mmuext(&ops)),
                (err(Errno::EINVAL), 1),
            );
            r.eq("pin again after the unpin", rc(mmu::pin(1, t.mfn())), Rc(0));
            r.eq("unpin", rc(mmu::unpin(t.mfn())), Rc(0));
        }
        Err(e) => {
            println!("mmu: scratch L1: {e}");
            r.fail("pin a zeroed read-only frame as L1", "error", "0");
        }
    }
}

fn table_entries(r: &mut Report) {
    match mmu::alloc_scratch_table(4, true) {
        Ok(l4) => {
            r.pass("a zeroed, read-only frame pins as L4 (Xen fills its slots)");
            let base = l4.mfn() << 12;
            for slot in [256u64, 271] {
                let mut l = Label::new();
                l.push(if slot == 256 {
                    "mmu_update of L4 slot 256 (Xen's) → -EINVAL (mod_l4_entry)"
                } else {
                    "mmu_update of L4 slot 271 (Xen's) → -EINVAL (mod_l4_entry)"
                });
                r.eq(
                    &l,
                    batch_rc(one_update(base + slot * 8, 0)),
                    (err(Errno::EINVAL), 0),
                );
            }
            r.eq(
                "mmu_update of L4 slot 255 (guest's) with an empty entry",
                batch_rc(one_update(base + 255 * 8, 0)),
                (Rc(0), 1),
            );
            let _ = mmu::unpin(l4.mfn());
        }
        Err(e) => {
            println!("mmu: scratch L4: {e}");
            r.fail("pin a zeroed read-only frame as L4", "error", "0");
        }
    }
    if let Some((_, l2)) = mmu::map_area_tables() {
        let e = (l2 << 12) + 8;
        r.eq(
            "L2 entry with PSE (2 MiB page) → -EINVAL (mod_l2_entry: L2_DISALLOW_MASK)",
            batch_rc(one_update(e, 0x20_0000 | pte::PRESENT | pte::PSE)),
            (err(Errno::EINVAL), 0),
        );
        if let Ok(t) = mmu::alloc_scratch_table(1, false) {
            r.eq(
                "L2 entry with PCD → -EINVAL (mod_l2_entry: L2_DISALLOW_MASK)",
                batch_rc(one_update(e, pte_of(t.mfn(), pte::TABLE | pte::PCD))),
                (err(Errno::EINVAL), 0),
            );
            r.eq(
                "L2 entry to a zeroed read-only frame (validated as L1)",
                batch_rc(one_update(e, pte_of(t.mfn(), pte::TABLE))),
                (Rc(0), 1),
            );
            r.eq("L2 entry cleared", batch_rc(one_update(e, 0)), (Rc(0), 1));
        }
    }
}

fn baseptr(r: &mut Report) {
    if let Ok(w) = mmu::alloc_frame(Pool::Mapped) {
        r.eq(
            "NEW_BASEPTR to a frame mapped writable → -EINVAL (new_guest_cr3)",
            rc(mmu::probe_new_baseptr_writable(&w)),
            err(Errno::EINVAL),
        );
        mmu::free_frame(w);
    }
}

fn machphys(r: &mut Report) {
    if let Ok(x) = mmu::alloc_frame(Pool::Unmapped) {
        r.eq(
            "MMU_MACHPHYS_UPDATE of an own frame",
            batch_rc(one_update((x.mfn() << 12) | MMU_MACHPHYS_UPDATE, x.pfn())),
            (Rc(0), 1),
        );
        r.eq(
            "M2P entry after MMU_MACHPHYS_UPDATE",
            m2p(x.mfn()),
            Some(x.pfn()),
        );
        mmu::free_frame(x);
    }
    if let Some(f) = foreign_frame() {
        r.eq(
            "MMU_MACHPHYS_UPDATE of a frame we do not own → -EINVAL (get_page_from_mfn fails)",
            batch_rc(one_update((f << 12) | MMU_MACHPHYS_UPDATE, 0)),
            (err(Errno::EINVAL), 0),
        );
    }
}

fn batch(r: &mut Report) {
    let (Ok(first), Some((l1, _))) = (mmu::reserve_slots(4), mmu::map_area_tables()) else {
        r.fail("batch setup", "no slots", "4 slots");
        return;
    };
    let frames = [
        mmu::alloc_frame(Pool::Unmapped).ok(),
        mmu::alloc_frame(Pool::Unmapped).ok(),
        mmu::alloc_frame(Pool::Unmapped).ok(),
    ];
    let val = |i: usize| {
        frames[i]
            .as_ref()
            .map_or(0, |f| pte_of(f.mfn(), pte::KERNEL_RO))
    };
    let reqs = [
        MmuUpdate {
            ptr: mmu::slot_maddr(first).unwrap_or(0),
            val: val(0),
        },
        MmuUpdate {
            ptr: mmu::slot_maddr(first + 1).unwrap_or(0),
            val: val(1),
        },
        MmuUpdate {
            ptr: mmu::slot_maddr(first + 2).unwrap_or(0),
            val: pte_of(l1, pte::KERNEL_RW),
        },
        MmuUpdate {
            ptr: mmu::slot_maddr(first + 3).unwrap_or(0),
            val: val(2),
        },
    ];
    r.eq(
        "mmu_update batch with a bad third entry: -EBUSY, done 2 (stops at the failure)",
        batch_rc(mmu::mmu_update(&reqs)),
        (err(Errno::EBUSY), 2),
    );
    let applied = (
        mmu::slot_pte(first).unwrap_or(0) != 0,
        mmu::slot_pte(first + 1).unwrap_or(0) != 0,
        mmu::slot_pte(first + 2),
        mmu::slot_pte(first + 3),
    );
    r.eq(
        "the two entries before the failure applied, none after",
        applied,
        (true, true, Some(0), Some(0)),
    );
    for i in 0..4 {
        let _ = mmu::update_slot(first + i, 0, UVMF_INVLPG);
    }
    mmu::release_slots(first, 4);
    for f in frames.into_iter().flatten() {
        mmu::free_frame(f);
    }
}

/// XENMEM_exchange: a frame nothing references is traded for a new one at the same pfn;
/// a frame that is still mapped cannot be (Xen's steal_page refuses it: -EINVAL).
fn exchange(r: &mut Report) {
    let Ok(x) = mmu::alloc_frame(Pool::Unmapped) else {
        r.fail("exchange frame", "none", "frame");
        return;
    };
    let (old, pfn) = (x.mfn(), x.pfn());
    let (mut input, mut output) = ([old], [pfn]);
    let (res, n) = hc::memory_exchange(&mut input, &mut output);
    r.eq("exchange of an unreferenced frame → 0", rc(res), Rc(0));
    r.eq("... nr_exchanged 1", n, 1);
    if res != Ok(0) {
        mmu::free_frame(x);
        return;
    }
    let new = output[0];
    r.check(
        new != old,
        "... a different frame comes back",
        new,
        "not the old one",
    );
    r.eq("... M2P[new] = pfn", m2p(new), Some(pfn));
    mmu::set_p2m(pfn, new);
    let x = x.with_mfn(new);
    match mmu::map(x.mfn(), true) {
        Ok(m) => {
            let (res, n) = hc::memory_exchange(&mut [x.mfn()], &mut [pfn]);
            r.eq(
                "exchange of a mapped frame → -EINVAL",
                rc(res),
                err(Errno::EINVAL),
            );
            r.eq("... nr_exchanged 0", n, 0);
            let _ = mmu::unmap(m);
        }
        Err(_) => r.fail("map the exchanged frame", "error", "0"),
    }
    mmu::free_frame(x);
}

fn reservations(r: &mut Report) {
    // u64::MAX when the query fails (a failing check shows it).
    let cur = || hc::memory_op_domid(XENMEM_CURRENT_RESERVATION, SELF).unwrap_or(u64::MAX);
    let cur0 = cur();
    let Ok(x) = mmu::alloc_frame(Pool::Unmapped) else {
        r.fail("reservation frame", "none", "frame");
        return;
    };
    let mut list = [x.mfn()];
    let dec = hc::memory_reservation(XENMEM_DECREASE_RESERVATION, &mut list, 0);
    r.eq(
        "decrease_reservation of one frame (by MFN) → 1 extent",
        rc(dec),
        Rc(1),
    );
    if dec != Ok(1) {
        // The frame is still ours: nothing to undo.
        mmu::free_frame(x);
        return;
    }
    r.eq("current_reservation one lower", cur(), cur0.wrapping_sub(1));
    mmu::set_p2m(x.pfn(), u64::MAX);
    let mut list = [x.pfn()];
    let pop = hc::memory_reservation(XENMEM_POPULATE_PHYSMAP, &mut list, 0);
    r.eq("populate_physmap of that pfn → 1 extent", rc(pop), Rc(1));
    if pop != Ok(1) {
        // The pfn stays unpopulated (p2m entry invalid); the frame is not reused.
        return;
    }
    let new_mfn = list[0];
    r.eq("current_reservation back", cur(), cur0);
    r.eq(
        "populate_physmap set M2P[new mfn] = pfn",
        m2p(new_mfn),
        Some(x.pfn()),
    );
    mmu::set_p2m(x.pfn(), new_mfn);
    let x = x.with_mfn(new_mfn);
    match mmu::map(x.mfn(), true) {
        Ok(m) => {
            let _ = m.write(7, MAGIC_X);
            r.eq(
                "the populated frame maps and holds data",
                m.read(7),
                MAGIC_X,
            );
            let _ = mmu::unmap(m);
        }
        Err(_) => r.fail("map the populated frame", "error", "0"),
    }
    mmu::free_frame(x);
    exchange(r);
    // increase_reservation past max_pages: make room for two, ask for room + 2.
    let max = hc::memory_op_domid(XENMEM_MAXIMUM_RESERVATION, SELF).unwrap_or(0);
    let (Ok(b), Ok(c)) = (
        mmu::alloc_frame(Pool::Unmapped),
        mmu::alloc_frame(Pool::Unmapped),
    ) else {
        return;
    };
    let mut give = [b.mfn(), c.mfn()];
    if hc::memory_reservation(XENMEM_DECREASE_RESERVATION, &mut give, 0) != Ok(2) {
        r.fail("decrease_reservation of two frames", "error", "2");
        return;
    }
    mmu::set_p2m(b.pfn(), u64::MAX);
    mmu::set_p2m(c.pfn(), u64::MAX);
    let now = cur();
    let room = max.saturating_sub(now);
    const MAX_ROOM: u64 = 64;
    if room <= MAX_ROOM {
        let mut got = [0u64; MAX_ROOM as usize + 2];
        let want = (room + 2) as usize;
        let n = hc::memory_reservation(XENMEM_INCREASE_RESERVATION, &mut got[..want], 0);
        r.eq(
            "increase_reservation of room+2 extents → room (partial count, memory.c)",
            rc(n),
            Rc(room as i64),
        );
        let n = n.unwrap_or(0).min(want as u64) as usize;
        // Put two of the new frames back at b's and c's pfns, return the rest.
        let mut rest = [0u64; MAX_ROOM as usize + 2];
        let mut nr_rest = 0;
        for (i, &mfn) in got[..n].iter().enumerate() {
            let pfn = match i {
                0 => Some(b.pfn()),
                1 => Some(c.pfn()),
                _ => None,
            };
            match pfn {
                Some(pfn) => {
                    let _ = one_update((mfn << 12) | MMU_MACHPHYS_UPDATE, pfn);
                    mmu::set_p2m(pfn, mfn);
                }
                None => {
                    rest[nr_rest] = mfn;
                    nr_rest += 1;
                }
            }
        }
        if nr_rest > 0 {
            let _ = hc::memory_reservation(XENMEM_DECREASE_RESERVATION, &mut rest[..nr_rest], 0);
        }
        r.eq("current_reservation back after the round trip", cur(), cur0);
        if n >= 2 {
            mmu::free_frame(b.with_mfn(got[0]));
            mmu::free_frame(c.with_mfn(got[1]));
        }
    } else {
        println!(
            "mmu: max_pages - current = {room} (unlimited, as Xen's dom0): increase_reservation past the limit not applicable"
        );
        let mut back = [b.pfn(), c.pfn()];
        if hc::memory_reservation(XENMEM_POPULATE_PHYSMAP, &mut back, 0) == Ok(2) {
            mmu::set_p2m(b.pfn(), back[0]);
            mmu::set_p2m(c.pfn(), back[1]);
        }
        r.pass("increase_reservation past max_pages: n/a (max_pages unlimited)");
    }
}

fn gdt(r: &mut Report) {
    let Ok(g) = mmu::alloc_frame(Pool::Mapped) else {
        return;
    };
    let code64 = 0x00af_9a00_0000_ffff;
    let data = 0x00cf_9200_0000_ffff;
    let _ = mmu::frame_write(&g, 1, code64);
    let _ = mmu::frame_write(&g, 2, data);
    r.eq(
        "set_gdt with a frame still mapped writable → -EINVAL (pv_set_gdt)",
        rc(hc::set_gdt(&[g.mfn()], 16)),
        err(Errno::EINVAL),
    );
    r.eq(
        "update_descriptor into an ordinary writable page of ours",
        rc(mmu::update_descriptor(&g, 4, data)),
        Rc(0),
    );
    r.eq(
        "GDT frame made read-only (update_va_mapping)",
        rc(mmu::protect(&g, false)),
        Rc(0),
    );
    r.eq(
        "set_gdt with the read-only frame",
        rc(hc::set_gdt(&[g.mfn()], 16)),
        Rc(0),
    );
    r.eq(
        "update_descriptor with a TSS (system) descriptor → -EINVAL (check_descriptor)",
        rc(mmu::update_descriptor(&g, 3, 0x0000_8900_0000_0067)),
        err(Errno::EINVAL),
    );
    r.eq(
        "update_descriptor at a misaligned address → -EINVAL",
        rc(mmu::update_descriptor_raw(&g, 3 * 8 + 4, data)),
        err(Errno::EINVAL),
    );
    r.eq(
        "update_descriptor of a data descriptor in the live GDT",
        rc(mmu::update_descriptor(&g, 3, data)),
        Rc(0),
    );
    r.eq(
        "descriptor stored with DPL raised to 3 (check_descriptor)",
        mmu::frame_read(&g, 3).unwrap_or(0),
        0x00cf_f200_0000_ffff,
    );
    r.eq(
        "set_gdt(0 entries) drops the GDT",
        rc(hc::set_gdt(&[0], 0)),
        Rc(0),
    );
    r.eq(
        "GDT frame writable again once released",
        rc(mmu::protect(&g, true)),
        Rc(0),
    );
    mmu::free_frame(g);
}

/// One emulated write: run it, check there was no #PF, the stored entry, and what the
/// slot then reads.
struct Ptwr<'a> {
    r: &'a mut Report,
    slot: usize,
}

impl Ptwr<'_> {
    fn write(
        &mut self,
        name: &str,
        form: PtwrForm,
        value: u64,
        expected: u64,
    ) -> Option<mmu::PtwrOutcome> {
        let (out, pf) = armed(form.insn_len(), || {
            mmu::ptwr_write(form, self.slot, value, expected)
        });
        let mut l = Label::new();
        l.push(name);
        l.push(": emulated, no #PF");
        self.r.check(
            !pf,
            &l,
            (ERROR.load(Ordering::SeqCst), CR2.load(Ordering::SeqCst)),
            "no fault",
        );
        let _ = mmu::invlpg(mmu::slot_va(self.slot));
        out.ok()
    }

    fn entry(&mut self, name: &str, want: u64, mask: u64) {
        let mut l = Label::new();
        l.push(name);
        l.push(": entry value");
        let got = mmu::slot_pte(self.slot).unwrap_or(u64::MAX);
        self.r.eq(&l, got & !mask, want & !mask);
    }

    fn reads(&mut self, name: &str, want: u64) {
        let mut l = Label::new();
        l.push(name);
        l.push(": new mapping works");
        self.r.eq(&l, slot_word(self.slot), (want, false));
    }
}

fn writable_page_tables(r: &mut Report) {
    r.eq(
        "vm_assist(enable, writable_pagetables)",
        rc(hc::vm_assist(
            VMASST_CMD_ENABLE,
            VMASST_TYPE_WRITABLE_PAGETABLES,
        )),
        Rc(0),
    );
    let (Ok(x), Ok(y), Ok(slot)) = (
        mmu::alloc_frame(Pool::Unmapped),
        mmu::alloc_frame(Pool::Unmapped),
        mmu::reserve_slots(1),
    ) else {
        r.fail("writable page tables setup", "no frames", "frames");
        return;
    };
    for (f, magic) in [(&x, MAGIC_X), (&y, MAGIC_Y)] {
        if let Ok(m) = mmu::map(f.mfn(), true) {
            let _ = m.write(0, magic);
            let _ = mmu::unmap(m);
        }
    }
    let ex = pte_of(x.mfn(), pte::KERNEL_RO);
    let ey = pte_of(y.mfn(), pte::KERNEL_RO);
    let mut p = Ptwr { r, slot };

    p.write("mov r64 → m64 (48 89 37)", PtwrForm::MovR64, ex, 0);
    p.entry("mov r64 → m64", xen_adjusted_l1e(ex), AD);
    p.reads("mov r64 → m64", MAGIC_X);

    let before = mmu::slot_pte(slot).unwrap_or(0);
    let out = p.write("xchg r64, m64 (48 87 37)", PtwrForm::Xchg, ey, 0);
    p.entry("xchg r64, m64", xen_adjusted_l1e(ey), AD);
    p.r.eq(
        "xchg r64, m64: old entry returned in the register",
        out.map(|o| o.rsi),
        Some(before),
    );
    p.reads("xchg r64, m64", MAGIC_Y);

    let cur = mmu::slot_pte(slot).unwrap_or(0);
    let ew = pte_of(x.mfn(), pte::KERNEL_RW);
    let out = p.write(
        "lock cmpxchg r64, m64 (f0 48 0f b1 37)",
        PtwrForm::LockCmpxchg,
        ew,
        cur,
    );
    p.r.eq(
        "lock cmpxchg: exchanged (ZF set)",
        out.map(|o| o.zf),
        Some(true),
    );
    p.entry("lock cmpxchg", xen_adjusted_l1e(ew), AD);
    p.reads("lock cmpxchg", MAGIC_X);
    let cur = mmu::slot_pte(slot).unwrap_or(0);
    let out = p.write(
        "lock cmpxchg with a stale expected value",
        PtwrForm::LockCmpxchg,
        ey,
        cur ^ 0x1000,
    );
    p.r.eq(
        "lock cmpxchg with a stale value: not exchanged, current entry in RAX",
        out.map(|o| (o.zf, o.rax)),
        Some((false, cur)),
    );
    p.entry("lock cmpxchg (stale)", cur, 0);

    let cur = mmu::slot_pte(slot).unwrap_or(0);
    p.write(
        "lock andb $0xfd, m8 (f0 80 27 fd)",
        PtwrForm::LockAndbClearRw,
        0,
        0,
    );
    p.entry("lock andb clears _PAGE_RW", cur & !pte::RW, 0);
    p.reads("lock andb", MAGIC_X);

    // The read above set Accessed; clear it with btr imm8, then Dirty with btr r64.
    let cur = mmu::slot_pte(slot).unwrap_or(0) | pte::ACCESSED;
    p.write(
        "lock btr $5, m64 (f0 48 0f ba 37 05)",
        PtwrForm::LockBtrImmAccessed,
        0,
        0,
    );
    p.entry(
        "lock btr imm8 clears _PAGE_ACCESSED",
        cur & !pte::ACCESSED,
        pte::DIRTY,
    );
    let cur = mmu::slot_pte(slot).unwrap_or(0);
    p.write(
        "lock btr r64, m64 (f0 48 0f b3 37)",
        PtwrForm::LockBtrReg,
        6,
        0,
    );
    p.entry(
        "lock btr r64 clears _PAGE_DIRTY",
        cur & !pte::DIRTY,
        pte::ACCESSED,
    );
    p.reads("lock btr", MAGIC_X);

    p.write(
        "mov $imm32 → m64 (48 c7 07 00000000)",
        PtwrForm::MovImm32Zero,
        0,
        0,
    );
    p.entry("mov $0 → m64 clears the entry", 0, 0);
    let (_, pf) = slot_word(slot);
    p.r.check(pf, "mov $0 → m64: the page is gone (#PF)", pf, true);

    // An entry Xen refuses is not emulated: the #PF reaches us, error code present|write.
    if let Some((l1, _)) = mmu::map_area_tables() {
        let bad = pte_of(l1, pte::KERNEL_RW);
        let (out, pf) = armed(PtwrForm::MovR64.insn_len(), || {
            mmu::ptwr_write(PtwrForm::MovR64, slot, bad, 0)
        });
        let out = out.ok();
        p.r.check(
            pf,
            "emulated write of an L1 entry mapping a page table RW: #PF bounced",
            pf,
            true,
        );
        p.r.eq(
            "  ... with error code 3 (present|write, kernel mode) and CR2 = the entry's address",
            (
                ERROR.load(Ordering::SeqCst),
                CR2.load(Ordering::SeqCst),
                RIP.load(Ordering::SeqCst),
            ),
            (3, out.map_or(0, |o| o.addr), out.map_or(0, |o| o.site.rip)),
        );
        p.entry("refused emulated write left the entry", 0, 0);
    }
    let _ = mmu::update_slot(slot, 0, UVMF_INVLPG);
    mmu::release_slots(slot, 1);
    mmu::free_frame(x);
    mmu::free_frame(y);
}
