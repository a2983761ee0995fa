//! `grant`: grant tables v1 (`grant_table_op`, hypercall 20) from dom0, with legal and
//! illegal requests answered with Xen's codes (xen-project/xen c447b7308b13, the function
//! named at each check), and a second domain whose grant stays mapped after it died.
//!
//! Xen sources of the expected values, `xen/common/grant_table.c`:
//! * `gnttab_set_version`: v2 when `max_version == 1` → -ENOSYS, the version in force
//!   written back; `gnttab_get_version`; `gnttab_query_size`; `gnttab_setup_table`
//!   (`nr_frames > max_grant_frames` → `GNTST_general_error`; PV gets MFNs).
//! * `map_grant_ref`: neither host nor device map → `GNTST_bad_gntref`; unknown domain,
//!   or `DOMID_SELF` (`rcu_lock_domain_by_id`, not `_by_any_id`) → `GNTST_bad_domain`;
//!   `ref >= nr_grant_entries` → `GNTST_bad_gntref`; entry not `GTF_permit_access`
//!   for the mapper, or a writable map of a `GTF_readonly` grant (`_set_status_v1`) →
//!   `GNTST_general_error`; on success `GTF_reading` (and
//!   `GTF_writing` unless `GNTMAP_readonly`) set in the shared entry, and only the
//!   hypervisor clears them (`reduce_status_for_pin` at unmap): a guest that clears
//!   `GTF_permit_access` while mapped leaves them set, which is how Linux's
//!   `gnttab_end_foreign_access_ref` sees that it cannot reuse the frame yet.
//! * `unmap_common`: handle beyond the maptrack or unused → `GNTST_bad_handle`;
//!   `replace_grant_va_mapping` of a PTE that does not map the frame →
//!   `GNTST_general_error`.
//! * `gnttab_copy_lock_domain` (frame side not `DOMID_SELF` → `GNTST_permission_denied`),
//!   `acquire_grant_for_copy` (writable use of a `GTF_readonly` grant →
//!   `GNTST_general_error`), `gnttab_copy_buf` (`offset + len > PAGE_SIZE` →
//!   `GNTST_bad_copy_arg`).
//! * A read-only grant mapping is a read-only PTE: a write faults and the #PF is bounced
//!   with error code present|write (3) and CR2 = the address (`xen/arch/x86/pv/traps.c`).
//! * A domain's pages hold the domain (`assign_pages` / `free_domheap_pages`): after
//!   destroydomain a frame another domain still maps stays allocated and readable, and
//!   goes back to the free pool at the unmap.

use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use pv_guest::arch::domctl::{domctl, reservation_for};
use pv_guest::arch::foreign::ForeignPage;
use pv_guest::arch::gnttab::{self, entry_flags, entry_v1};
use pv_guest::arch::mmu::{self, Mapping};
use pv_guest::arch::TrapFrame;
use pv_guest::hypercall as hc;
use pv_guest::mm::Pool;
use pv_guest::xen_abi::domctl::{
    Domctl, DomctlCreateDomain, DOMCTL_CREATEDOMAIN, DOMCTL_DESTROYDOMAIN,
};
use pv_guest::xen_abi::grant_table::{
    GnttabCopy, GnttabCopyPtr, GnttabMapGrantRef, GnttabUnmapGrantRef, GNTCOPY_DEST_GREF,
    GNTCOPY_SOURCE_GREF, GNTMAP_DEVICE_MAP, GNTMAP_HOST_MAP, GNTMAP_READONLY, GNTST_BAD_COPY_ARG,
    GNTST_BAD_DEV_ADDR, GNTST_BAD_DOMAIN, GNTST_BAD_GNTREF, GNTST_BAD_HANDLE, GNTST_GENERAL_ERROR,
    GNTST_OKAY, GNTST_PERMISSION_DENIED, GRANT_ENTRIES_V1_PER_FRAME, GTF_PERMIT_ACCESS,
    GTF_READING, GTF_READONLY, GTF_WRITING,
};
use pv_guest::xen_abi::memory::XENMEM_POPULATE_PHYSMAP;
use pv_guest::xen_abi::{DomId, Errno};
use pv_guest::{println, shared, start, traps};

use crate::report::{err, rc, Rc, Report};

const SELF: u16 = DomId::SELF.raw();
/// We are dom0.
const ME: u16 = 0;
/// A domain id nobody has.
const NO_DOMAIN: u16 = 0x3ff;
/// First grant reference free for us (0..8 are the toolstack's).
const FIRST_REF: u32 = 8;
const MAGIC_A: u64 = 0x4752_414e_5441_4141;
const MAGIC_B: u64 = 0x4752_414e_5442_4242;

static ARMED: AtomicBool = AtomicBool::new(false);
static SEEN: AtomicBool = AtomicBool::new(false);
static SKIP: AtomicU64 = AtomicU64::new(0);
static ERROR: AtomicU64 = AtomicU64::new(0);
static CR2: AtomicU64 = AtomicU64::new(0);

/// #PF while a probe is armed: record it and skip the probe's instruction.
fn pf_hook(f: &mut TrapFrame) -> bool {
    if !ARMED.load(Ordering::SeqCst) {
        return false;
    }
    SEEN.store(true, Ordering::SeqCst);
    ERROR.store(f.error_code, Ordering::SeqCst);
    CR2.store(shared::cr2(), Ordering::SeqCst);
    f.rip = f.rip.wrapping_add(SKIP.load(Ordering::SeqCst));
    true
}

/// Run `probe` with the #PF hook armed to skip 3 bytes; returns (its result, whether a
/// #PF happened).
fn armed<T>(probe: impl FnOnce() -> T) -> (T, bool) {
    SEEN.store(false, Ordering::SeqCst);
    SKIP.store(3, Ordering::SeqCst);
    ARMED.store(true, Ordering::SeqCst);
    let v = probe();
    ARMED.store(false, Ordering::SeqCst);
    (v, SEEN.load(Ordering::SeqCst))
}

/// Word `idx` of map-area slot `slot` and whether reading it faulted.
fn slot_read(slot: usize, idx: usize) -> (u64, bool) {
    let (v, pf) = armed(|| mmu::probe_slot_read(slot, idx));
    (v.map_or(u64::MAX, |(v, _)| v), pf)
}

/// Our grant table's first frame, mapped read-write.
struct Table(Mapping);

impl Table {
    fn set(&self, gref: u32, flags: u16, domid: u16, frame: u64) {
        // The frame and domid first, then the flags that make it valid (one 64-bit store
        // on x86 is atomic anyway).
        let _ = self
            .0
            .write(gref as usize, entry_v1(flags, domid, frame as u32));
    }
    fn word(&self, gref: u32) -> u64 {
        self.0.read(gref as usize)
    }
    fn flags(&self, gref: u32) -> u16 {
        entry_flags(self.word(gref))
    }
    /// The guest clearing `bits` in the entry's flags (the rest kept as found).
    fn clear(&self, gref: u32, bits: u16) {
        let w = self.word(gref);
        let _ = self.0.write(gref as usize, w & !u64::from(bits));
    }
}

/// A frame of ours mapped read-write in the map area.
struct Page {
    frame: mmu::Frame,
    map: Mapping,
}

impl Page {
    fn new() -> Option<Page> {
        let frame = mmu::alloc_frame(Pool::Unmapped).ok()?;
        match mmu::map(frame.mfn(), true) {
            Ok(map) => Some(Page { frame, map }),
            Err(_) => {
                mmu::free_frame(frame);
                None
            }
        }
    }
    fn mfn(&self) -> u64 {
        self.frame.mfn()
    }
    fn fill(&self, seed: u64) {
        for i in 0..512 {
            let _ = self
                .map
                .write(i, seed ^ (i as u64).wrapping_mul(0x9e37_79b9));
        }
    }
    fn checksum(&self) -> u64 {
        (0..512).fold(0u64, |a, i| a.rotate_left(7) ^ self.map.read(i))
    }
    fn release(self) {
        let _ = mmu::unmap(self.map);
        mmu::free_frame(self.frame);
    }
}

fn map_op(slot: usize, dom: u16, gref: u32, flags: u32) -> GnttabMapGrantRef {
    GnttabMapGrantRef {
        host_addr: mmu::slot_va(slot),
        flags,
        gref,
        dom,
        ..Default::default()
    }
}

/// One map_grant_ref: (hypercall rc, status, handle).
fn map1(slot: usize, dom: u16, gref: u32, flags: u32) -> (Rc, i16, u32) {
    let mut op = [map_op(slot, dom, gref, flags)];
    let r = gnttab::map_grant_ref(&mut op);
    (rc(r), op[0].status, op[0].handle)
}

/// One unmap_grant_ref of the host mapping at `slot`: (rc, status).
fn unmap1(slot: usize, handle: u32) -> (Rc, i16) {
    let mut op = [GnttabUnmapGrantRef {
        host_addr: mmu::slot_va(slot),
        handle,
        ..Default::default()
    }];
    let r = gnttab::unmap_grant_ref(&mut op);
    (rc(r), op[0].status)
}

fn gref_ptr(gref: u32, domid: u16, offset: u16) -> GnttabCopyPtr {
    GnttabCopyPtr {
        u: u64::from(gref),
        domid,
        offset,
        pad: 0,
    }
}

fn frame_ptr(mfn: u64, domid: u16, offset: u16) -> GnttabCopyPtr {
    GnttabCopyPtr {
        u: mfn,
        domid,
        offset,
        pad: 0,
    }
}

/// One copy: (rc, status).
fn copy1(source: GnttabCopyPtr, dest: GnttabCopyPtr, len: u16, flags: u16) -> (Rc, i16) {
    let mut op = [GnttabCopy {
        source,
        dest,
        len,
        flags,
        ..Default::default()
    }];
    let r = gnttab::copy(&mut op);
    (rc(r), op[0].status)
}

pub fn run(r: &mut Report) {
    super::setup(r);
    traps::set_hook(14, Some(pf_hook));
    let Some(si) = start::start_info() else {
        r.fail("start_info", "missing", "present");
        return;
    };
    if mmu::init(si).and_then(|_| mmu::map_area_init()).is_err() {
        r.fail("memory manager with a map area", "error", "ready");
        return;
    }
    versions(r);
    let Some(table) = own_table(r) else {
        return;
    };
    let Some(slot) = mmu::reserve_slots(1).ok() else {
        r.fail("map-area slot", "none", "slot");
        return;
    };
    self_grant(r, &table, slot);
    device_maps(r, &table);
    illegal(r, &table, slot);
    copies(r, &table);
    mmu::release_slots(slot, 1);
    two_domains(r);
    r.check(
        hc::xen_version().is_ok(),
        "hypervisor alive after the grant operations",
        "no answer",
        "xen_version answers",
    );
}

fn versions(r: &mut Report) {
    let (res, v) = gnttab::set_version(1);
    r.eq("set_version(1) → 0", (rc(res), v), (Rc(0), 1));
    let (res, v) = gnttab::set_version(2);
    r.eq(
        "set_version(2) → -ENOSYS, version 1 written back (v2 not offered)",
        (rc(res), v),
        (err(Errno::ENOSYS), 1),
    );
    r.eq(
        "get_version(DOMID_SELF) → 1",
        rc(gnttab::get_version(SELF)),
        Rc(1),
    );
    let q = gnttab::query_size(SELF);
    r.check(
        matches!(q, Ok(q) if q.status == GNTST_OKAY && q.max_nr_frames >= 1),
        "query_size(DOMID_SELF): okay, max_nr_frames >= 1",
        q.map(|q| (q.status, q.nr_frames, q.max_nr_frames)).ok(),
        "(0, n, max >= 1)",
    );
}

fn own_table(r: &mut Report) -> Option<Table> {
    let max = gnttab::query_size(SELF).map_or(0, |q| q.max_nr_frames) as usize;
    let mut too_many = [0u64; 256];
    if max < too_many.len() {
        r.eq(
            "setup_table(max_nr_frames + 1) → GNTST_general_error",
            gnttab::setup_table(SELF, &mut too_many[..max + 1]).ok(),
            Some(GNTST_GENERAL_ERROR),
        );
    }
    let mut frames = [0u64; 1];
    let s = gnttab::setup_table(SELF, &mut frames);
    r.eq(
        "setup_table(DOMID_SELF, 1) → GNTST_okay",
        s.ok(),
        Some(GNTST_OKAY),
    );
    r.check(
        frames[0] != 0,
        "... frame_list[0] filled",
        frames[0],
        "an MFN",
    );
    let q = gnttab::query_size(SELF);
    r.check(
        matches!(q, Ok(q) if q.nr_frames >= 1),
        "query_size after setup: nr_frames >= 1",
        q.map(|q| q.nr_frames).ok(),
        ">= 1",
    );
    match mmu::map(frames[0], true) {
        Ok(m) => {
            r.pass("the table frame maps read-write (update_va_mapping)");
            Some(Table(m))
        }
        Err(e) => {
            println!("grant: mapping the table frame: {e}");
            r.fail("map the table frame RW", "error", "mapped");
            None
        }
    }
}

fn self_grant(r: &mut Report, t: &Table, slot: usize) {
    let Some(data) = Page::new() else {
        r.fail("data frame", "none", "frame");
        return;
    };
    let _ = data.map.write(0, MAGIC_A);
    let _ = data.map.write(511, MAGIC_B);
    let g = FIRST_REF;
    t.set(g, GTF_PERMIT_ACCESS, ME, data.mfn());
    let (res, status, handle) = map1(slot, ME, g, GNTMAP_HOST_MAP);
    r.eq(
        "map_grant_ref of our own grant (dom 0, host_map at a map-area VA) → GNTST_okay",
        (res, status),
        (Rc(0), GNTST_OKAY),
    );
    if status != GNTST_OKAY {
        data.release();
        return;
    }
    r.eq(
        "... the VA shows the frame's data",
        (slot_read(slot, 0), slot_read(slot, 511)),
        ((MAGIC_A, false), (MAGIC_B, false)),
    );
    r.eq(
        "... entry flags permit|reading|writing while mapped",
        t.flags(g),
        GTF_PERMIT_ACCESS | GTF_READING | GTF_WRITING,
    );
    let (_, pf) = armed(|| gnttab::probe_slot_write(slot, 1, MAGIC_B));
    r.eq(
        "... a write through the writable grant mapping lands in the frame",
        (pf, data.map.read(1)),
        (false, MAGIC_B),
    );
    t.clear(g, GTF_PERMIT_ACCESS);
    r.eq(
        "revoke while mapped (guest clears GTF_permit_access): reading|writing stay set",
        t.flags(g),
        GTF_READING | GTF_WRITING,
    );
    r.eq(
        "... the mapping still works",
        slot_read(slot, 0),
        (MAGIC_A, false),
    );
    r.eq(
        "unmap_grant_ref → GNTST_okay",
        unmap1(slot, handle),
        (Rc(0), GNTST_OKAY),
    );
    r.eq("... reading|writing cleared", t.flags(g), 0);
    let (_, pf) = slot_read(slot, 0);
    r.check(pf, "... the VA no longer maps it (#PF)", pf, true);
    r.eq(
        "map of the revoked entry → GNTST_general_error",
        map1(slot, ME, g, GNTMAP_HOST_MAP).1,
        GNTST_GENERAL_ERROR,
    );

    // GNTMAP_readonly: only GTF_reading, and the PTE is read-only.
    t.set(g, GTF_PERMIT_ACCESS, ME, data.mfn());
    let (res, status, handle) = map1(slot, ME, g, GNTMAP_HOST_MAP | GNTMAP_READONLY);
    r.eq(
        "map_grant_ref with GNTMAP_readonly → GNTST_okay",
        (res, status),
        (Rc(0), GNTST_OKAY),
    );
    if status == GNTST_OKAY {
        r.eq(
            "... entry flags permit|reading (no writing)",
            t.flags(g),
            GTF_PERMIT_ACCESS | GTF_READING,
        );
        r.eq("... readable", slot_read(slot, 0), (MAGIC_A, false));
        let (site, pf) = armed(|| gnttab::probe_slot_write(slot, 0, 0xbad));
        r.check(pf, "... a write through it faults (#PF bounced)", pf, true);
        r.eq(
            "... error code present|write (3), CR2 = the address",
            (ERROR.load(Ordering::SeqCst), CR2.load(Ordering::SeqCst)),
            (3, site.map_or(0, |_| mmu::slot_va(slot))),
        );
        r.eq("... the frame unchanged", data.map.read(0), MAGIC_A);
        r.eq(
            "... unmap → GNTST_okay, flags back to permit",
            (unmap1(slot, handle), t.flags(g)),
            ((Rc(0), GNTST_OKAY), GTF_PERMIT_ACCESS),
        );
    }

    // Two mappings of one grant: the bits go with the last one.
    let Ok(slot2) = mmu::reserve_slots(1) else {
        data.release();
        return;
    };
    let a = map1(slot, ME, g, GNTMAP_HOST_MAP);
    let b = map1(slot2, ME, g, GNTMAP_HOST_MAP | GNTMAP_READONLY);
    r.eq(
        "two mappings of one grant (rw + ro) → both okay",
        (a.1, b.1),
        (GNTST_OKAY, GNTST_OKAY),
    );
    r.eq(
        "... unmapping the writable one clears GTF_writing only",
        (unmap1(slot, a.2).1, t.flags(g)),
        (GNTST_OKAY, GTF_PERMIT_ACCESS | GTF_READING),
    );
    r.eq(
        "... unmapping the last clears GTF_reading",
        (unmap1(slot2, b.2).1, t.flags(g)),
        (GNTST_OKAY, GTF_PERMIT_ACCESS),
    );
    mmu::release_slots(slot2, 1);
    t.set(g, 0, 0, 0);
    data.release();
}

/// One device-only map (no host_addr): (status, handle, dev_bus_addr).
fn dev_map1(gref: u32, flags: u32) -> (i16, u32, u64) {
    let mut op = [GnttabMapGrantRef {
        flags: GNTMAP_DEVICE_MAP | flags,
        gref,
        dom: ME,
        ..Default::default()
    }];
    let r = gnttab::map_grant_ref(&mut op);
    if r.is_err() {
        return (i16::MIN, 0, 0);
    }
    (op[0].status, op[0].handle, op[0].dev_bus_addr)
}

/// One device unmap by bus address: status.
fn dev_unmap1(handle: u32, dev_bus_addr: u64) -> i16 {
    let mut op = [GnttabUnmapGrantRef {
        dev_bus_addr,
        handle,
        ..Default::default()
    }];
    match gnttab::unmap_grant_ref(&mut op) {
        Ok(_) => op[0].status,
        Err(_) => i16::MIN,
    }
}

/// `GNTMAP_device_map` without `GNTMAP_host_map` (blkback's copyless path: the frame is
/// pinned and referenced, its machine address returned in `dev_bus_addr`, no PTE written;
/// Xen's `map_grant_ref`), the unmap by `dev_bus_addr` (`unmap_common`: a wrong address →
/// `GNTST_bad_dev_addr`), read-only device maps, and batches of them.
fn device_maps(r: &mut Report, t: &Table) {
    let Some(data) = Page::new() else {
        r.fail("data frame", "none", "frame");
        return;
    };
    let g = FIRST_REF + 8;
    let maddr = data.mfn() << 12;
    t.set(g, GTF_PERMIT_ACCESS, ME, data.mfn());
    let (status, handle, bus) = dev_map1(g, 0);
    r.eq(
        "device_map only (no host_addr) → GNTST_okay, dev_bus_addr = the frame's address",
        (status, bus),
        (GNTST_OKAY, maddr),
    );
    if status == GNTST_OKAY {
        r.eq(
            "... entry flags permit|reading|writing",
            t.flags(g),
            GTF_PERMIT_ACCESS | GTF_READING | GTF_WRITING,
        );
        r.eq(
            "unmap with a wrong dev_bus_addr → GNTST_bad_dev_addr, still mapped",
            (dev_unmap1(handle, maddr + 4096), t.flags(g)),
            (
                GNTST_BAD_DEV_ADDR,
                GTF_PERMIT_ACCESS | GTF_READING | GTF_WRITING,
            ),
        );
        r.eq(
            "unmap by dev_bus_addr → GNTST_okay, flags back to permit",
            (dev_unmap1(handle, maddr), t.flags(g)),
            (GNTST_OKAY, GTF_PERMIT_ACCESS),
        );
        r.eq(
            "unmap of the same handle again → GNTST_bad_handle",
            dev_unmap1(handle, maddr),
            GNTST_BAD_HANDLE,
        );
    }
    let (status, handle, bus) = dev_map1(g, GNTMAP_READONLY);
    r.eq(
        "device_map|readonly → GNTST_okay, flags permit|reading",
        (status, bus, t.flags(g)),
        (GNTST_OKAY, maddr, GTF_PERMIT_ACCESS | GTF_READING),
    );
    if status == GNTST_OKAY {
        r.eq(
            "... unmap → GNTST_okay, flags back to permit",
            (dev_unmap1(handle, maddr), t.flags(g)),
            (GNTST_OKAY, GTF_PERMIT_ACCESS),
        );
    }
    // A batch the way blkback maps a request's segments: one hypercall for all, one for
    // the unmap.
    const N: usize = 64;
    let mut ops = [GnttabMapGrantRef::default(); N];
    for (i, op) in ops.iter_mut().enumerate() {
        op.flags = GNTMAP_DEVICE_MAP | if i % 2 == 1 { GNTMAP_READONLY } else { 0 };
        op.gref = g;
        op.dom = ME;
    }
    let res = gnttab::map_grant_ref(&mut ops);
    let all_ok = ops
        .iter()
        .all(|o| o.status == GNTST_OKAY && o.dev_bus_addr == maddr);
    r.eq(
        "a batch of 64 device maps of one grant (rw and ro) → all okay",
        (rc(res), all_ok),
        (Rc(0), true),
    );
    let mut unmaps = [GnttabUnmapGrantRef::default(); N];
    for (u, m) in unmaps.iter_mut().zip(ops.iter()) {
        u.handle = m.handle;
        u.dev_bus_addr = maddr;
    }
    let res = gnttab::unmap_grant_ref(&mut unmaps);
    r.eq(
        "... unmapped in one batch → all okay, flags back to permit",
        (
            rc(res),
            unmaps.iter().all(|u| u.status == GNTST_OKAY),
            t.flags(g),
        ),
        (Rc(0), true, GTF_PERMIT_ACCESS),
    );
    r.eq(
        "device unmap of a handle never given → GNTST_bad_handle",
        dev_unmap1(0xffff, maddr),
        GNTST_BAD_HANDLE,
    );
    t.set(g, 0, 0, 0);
    data.release();
}

fn illegal(r: &mut Report, t: &Table, slot: usize) {
    let Some(data) = Page::new() else {
        r.fail("data frame", "none", "frame");
        return;
    };
    let g = FIRST_REF + 1;
    t.set(g, GTF_PERMIT_ACCESS, ME, data.mfn());
    let nr = gnttab::query_size(SELF).map_or(0, |q| q.nr_frames) * GRANT_ENTRIES_V1_PER_FRAME;
    let (res, status, _) = map1(slot, ME, nr, GNTMAP_HOST_MAP);
    r.eq(
        "map of a ref beyond the table → GNTST_bad_gntref",
        (res, status),
        (Rc(0), GNTST_BAD_GNTREF),
    );
    r.eq(
        "map of an unknown domain's grant → GNTST_bad_domain",
        map1(slot, NO_DOMAIN, g, GNTMAP_HOST_MAP).1,
        GNTST_BAD_DOMAIN,
    );
    r.eq(
        "map with dom = DOMID_SELF → GNTST_bad_domain (looked up by id only)",
        map1(slot, SELF, g, GNTMAP_HOST_MAP).1,
        GNTST_BAD_DOMAIN,
    );
    r.eq(
        "map with neither host_map nor device_map → GNTST_bad_gntref",
        map1(slot, ME, g, 0).1,
        GNTST_BAD_GNTREF,
    );
    let other = FIRST_REF + 2;
    t.set(other, GTF_PERMIT_ACCESS, 5, data.mfn());
    r.eq(
        "map of a grant given to another domain → GNTST_general_error",
        map1(slot, ME, other, GNTMAP_HOST_MAP).1,
        GNTST_GENERAL_ERROR,
    );
    r.eq("... the entry untouched", t.flags(other), GTF_PERMIT_ACCESS);
    let invalid = FIRST_REF + 3;
    t.set(invalid, 0, ME, data.mfn());
    r.eq(
        "map of a GTF_invalid entry → GNTST_general_error",
        map1(slot, ME, invalid, GNTMAP_HOST_MAP).1,
        GNTST_GENERAL_ERROR,
    );
    let ro = FIRST_REF + 4;
    t.set(ro, GTF_PERMIT_ACCESS | GTF_READONLY, ME, data.mfn());
    r.eq(
        "writable map of a GTF_readonly grant → GNTST_general_error",
        map1(slot, ME, ro, GNTMAP_HOST_MAP).1,
        GNTST_GENERAL_ERROR,
    );
    r.eq(
        "... no status bit left behind",
        t.flags(ro),
        GTF_PERMIT_ACCESS | GTF_READONLY,
    );
    let (_, status, h) = map1(slot, ME, ro, GNTMAP_HOST_MAP | GNTMAP_READONLY);
    r.eq(
        "read-only map of a GTF_readonly grant → GNTST_okay",
        status,
        GNTST_OKAY,
    );
    if status == GNTST_OKAY {
        let (_, pf) = armed(|| gnttab::probe_slot_write(slot, 0, 1));
        r.check(pf, "... writing through it faults", pf, true);
        let _ = unmap1(slot, h);
    }
    r.eq(
        "unmap with a bad handle → GNTST_bad_handle",
        unmap1(slot, 0x7fff_fff0).1,
        GNTST_BAD_HANDLE,
    );
    // A live handle, but the VA given does not map its frame.
    let (_, status, h) = map1(slot, ME, g, GNTMAP_HOST_MAP);
    if status == GNTST_OKAY {
        if let Ok(wrong) = mmu::reserve_slots(1) {
            r.eq(
                "unmap at a VA that does not map the grant → GNTST_general_error",
                unmap1(wrong, h).1,
                GNTST_GENERAL_ERROR,
            );
            mmu::release_slots(wrong, 1);
        }
        r.eq(
            "... the right VA then → GNTST_okay",
            unmap1(slot, h).1,
            GNTST_OKAY,
        );
        r.eq(
            "... a second unmap of the handle → GNTST_bad_handle",
            unmap1(slot, h).1,
            GNTST_BAD_HANDLE,
        );
    }
    for e in [g, other, invalid, ro] {
        t.set(e, 0, 0, 0);
    }
    data.release();
}

fn copies(r: &mut Report, t: &Table) {
    let (Some(a), Some(b), Some(c), Some(d)) = (Page::new(), Page::new(), Page::new(), Page::new())
    else {
        r.fail("copy frames", "none", "4 frames");
        return;
    };
    let (ga, gd, gro) = (FIRST_REF + 16, FIRST_REF + 17, FIRST_REF + 18);
    t.set(ga, GTF_PERMIT_ACCESS, ME, a.mfn());
    t.set(gd, GTF_PERMIT_ACCESS, ME, d.mfn());
    t.set(gro, GTF_PERMIT_ACCESS | GTF_READONLY, ME, d.mfn());
    a.fill(0x1111);
    b.fill(0);
    r.eq(
        "copy gref → gmfn of 4 KiB → GNTST_okay",
        copy1(
            gref_ptr(ga, SELF, 0),
            frame_ptr(b.mfn(), SELF, 0),
            4096,
            GNTCOPY_SOURCE_GREF,
        ),
        (Rc(0), GNTST_OKAY),
    );
    r.eq("... equal data", b.checksum(), a.checksum());
    r.eq(
        "... the source entry's status bits released",
        t.flags(ga),
        GTF_PERMIT_ACCESS,
    );
    c.fill(0x2222);
    d.fill(0);
    r.eq(
        "copy gmfn → gref of 4 KiB → GNTST_okay",
        copy1(
            frame_ptr(c.mfn(), SELF, 0),
            gref_ptr(gd, ME, 0),
            4096,
            GNTCOPY_DEST_GREF,
        ),
        (Rc(0), GNTST_OKAY),
    );
    r.eq("... equal data", d.checksum(), c.checksum());
    r.eq(
        "... the destination entry's status bits released",
        t.flags(gd),
        GTF_PERMIT_ACCESS,
    );
    r.eq(
        "copy at offset 100, 200 bytes gref → gref",
        copy1(
            gref_ptr(ga, SELF, 100),
            gref_ptr(gd, SELF, 100),
            200,
            GNTCOPY_SOURCE_GREF | GNTCOPY_DEST_GREF,
        ),
        (Rc(0), GNTST_OKAY),
    );
    // Words 13..37 lie inside bytes 100..300; word 12 and 38 straddle the edges.
    let inside = (13..37).all(|i| d.map.read(i) == a.map.read(i));
    let outside = d.map.read(40) == c.map.read(40) && d.map.read(5) == c.map.read(5);
    r.eq(
        "... only those bytes copied",
        (inside, outside),
        (true, true),
    );
    r.eq(
        "copy with offset + len > 4096 → GNTST_bad_copy_arg",
        copy1(
            gref_ptr(ga, SELF, 1),
            frame_ptr(b.mfn(), SELF, 0),
            4096,
            GNTCOPY_SOURCE_GREF,
        ),
        (Rc(0), GNTST_BAD_COPY_ARG),
    );
    r.eq(
        "... dest offset + len > 4096 → GNTST_bad_copy_arg",
        copy1(
            gref_ptr(ga, SELF, 0),
            frame_ptr(b.mfn(), SELF, 2048),
            4096,
            GNTCOPY_SOURCE_GREF,
        ),
        (Rc(0), GNTST_BAD_COPY_ARG),
    );
    r.eq(
        "... no status bits left behind by the failed copies",
        t.flags(ga),
        GTF_PERMIT_ACCESS,
    );
    r.eq(
        "copy to a frame side naming domain 0, not DOMID_SELF → GNTST_permission_denied",
        copy1(
            gref_ptr(ga, SELF, 0),
            frame_ptr(b.mfn(), ME, 0),
            8,
            GNTCOPY_SOURCE_GREF,
        ),
        (Rc(0), GNTST_PERMISSION_DENIED),
    );
    r.eq(
        "copy into a GTF_readonly grant → GNTST_general_error",
        copy1(
            frame_ptr(c.mfn(), SELF, 0),
            gref_ptr(gro, SELF, 0),
            8,
            GNTCOPY_DEST_GREF,
        ),
        (Rc(0), GNTST_GENERAL_ERROR),
    );
    r.eq(
        "copy from a GTF_readonly grant → GNTST_okay",
        copy1(
            gref_ptr(gro, SELF, 0),
            frame_ptr(b.mfn(), SELF, 0),
            8,
            GNTCOPY_SOURCE_GREF,
        ),
        (Rc(0), GNTST_OKAY),
    );
    r.eq(
        "copy from an unknown domain's grant → GNTST_bad_domain",
        copy1(
            gref_ptr(ga, NO_DOMAIN, 0),
            frame_ptr(b.mfn(), SELF, 0),
            8,
            GNTCOPY_SOURCE_GREF,
        ),
        (Rc(0), GNTST_BAD_DOMAIN),
    );
    r.eq(
        "copy from a ref beyond the table → GNTST_bad_gntref",
        copy1(
            gref_ptr(0xffff, SELF, 0),
            frame_ptr(b.mfn(), SELF, 0),
            8,
            GNTCOPY_SOURCE_GREF,
        ),
        (Rc(0), GNTST_BAD_GNTREF),
    );
    for e in [ga, gd, gro] {
        t.set(e, 0, 0, 0);
    }
    for p in [a, b, c, d] {
        p.release();
    }
}

fn free_pages() -> u64 {
    hc::sysctl_physinfo().map_or(0, |p| p.free_pages)
}

fn create_domain() -> hc::Result<u16> {
    let mut d = Domctl::new(DOMCTL_CREATEDOMAIN, 0);
    d.set_payload(&DomctlCreateDomain {
        max_vcpus: 1,
        flags: 0,
        max_memkb: 4096,
    });
    domctl(&mut d).map(|_| d.domain)
}

fn two_domains(r: &mut Report) {
    let free0 = free_pages();
    let Ok(id) = create_domain() else {
        r.fail("createdomain for the grant test", "error", "a domain");
        return;
    };
    r.pass("createdomain (the granter)");
    let mut frames = [0u64, 1, 2, 3];
    r.eq(
        "populate_physmap of 4 frames for it",
        rc(reservation_for(XENMEM_POPULATE_PHYSMAP, id, &mut frames)),
        Rc(4),
    );
    let mut table = [0u64; 1];
    r.eq(
        "setup_table(dom = new domain, 1) from dom0 → GNTST_okay",
        gnttab::setup_table(id, &mut table).ok(),
        Some(GNTST_OKAY),
    );
    r.eq(
        "... query_size(new domain) nr_frames 1",
        gnttab::query_size(id).map(|q| (q.status, q.nr_frames)).ok(),
        Some((GNTST_OKAY, 1)),
    );
    let gref = FIRST_REF;
    let granted = frames[2];
    // Its data, then its grant entry, written through foreign mappings as a builder does.
    let Ok(mut page) = ForeignPage::map(id, granted) else {
        r.fail(
            "map the new domain's frame (foreign mmu_update)",
            "error",
            "mapped",
        );
        let _ = domctl(&mut Domctl::new(DOMCTL_DESTROYDOMAIN, id));
        return;
    };
    page.store32(0, 0xfeed_0001);
    page.store32(4092, 0xfeed_0fff);
    page.unmap();
    let tpage = match ForeignPage::map(id, table[0]) {
        Ok(p) => {
            r.pass("its grant-table frame maps in dom0 (foreign mmu_update)");
            Some(p)
        }
        Err(e) => {
            println!("grant: foreign map of the table frame: {e}");
            r.fail("foreign map of its grant-table frame", "error", "mapped");
            None
        }
    };
    let Some(mut tpage) = tpage else {
        let _ = domctl(&mut Domctl::new(DOMCTL_DESTROYDOMAIN, id));
        return;
    };
    let off = gref as usize * 8;
    tpage.store32(off + 4, granted as u32);
    tpage.store32(off, u32::from(GTF_PERMIT_ACCESS) | (u32::from(ME) << 16));
    let Ok(slot) = mmu::reserve_slots(1) else {
        tpage.unmap();
        return;
    };
    r.eq(
        "map of an empty entry of its table → GNTST_general_error",
        map1(slot, id, gref + 1, GNTMAP_HOST_MAP).1,
        GNTST_GENERAL_ERROR,
    );
    let (res, status, handle) = map1(slot, id, gref, GNTMAP_HOST_MAP);
    r.eq(
        "dom0 maps the new domain's grant → GNTST_okay",
        (res, status),
        (Rc(0), GNTST_OKAY),
    );
    if status != GNTST_OKAY {
        tpage.unmap();
        mmu::release_slots(slot, 1);
        let _ = domctl(&mut Domctl::new(DOMCTL_DESTROYDOMAIN, id));
        return;
    }
    r.eq(
        "... its data visible",
        (
            slot_read(slot, 0).0 as u32,
            (slot_read(slot, 511).0 >> 32) as u32,
        ),
        (0xfeed_0001, 0xfeed_0fff),
    );
    r.eq(
        "... its entry shows reading|writing",
        tpage.load32(off) as u16,
        GTF_PERMIT_ACCESS | GTF_READING | GTF_WRITING,
    );
    tpage.unmap();

    let before = free_pages();
    r.eq(
        "destroydomain of the granter while dom0 maps its grant → 0",
        rc(domctl(&mut Domctl::new(DOMCTL_DESTROYDOMAIN, id))),
        Rc(0),
    );
    let after = free_pages();
    println!("grant: free pages: {free0} at start, {before} before destroy, {after} after destroy");
    r.check(
        after < free0,
        "... the free page count does not return fully (the mapped frame stays allocated)",
        (after, free0),
        "after < start",
    );
    r.check(
        after > before,
        "... its other frames are freed",
        (after, before),
        "after > before",
    );
    r.eq(
        "... the mapped data stays readable",
        slot_read(slot, 0).0 as u32,
        0xfeed_0001,
    );
    r.eq(
        "unmap after the granter died → GNTST_okay",
        unmap1(slot, handle),
        (Rc(0), GNTST_OKAY),
    );
    let (_, pf) = slot_read(slot, 0);
    r.check(pf, "... the VA no longer maps it", pf, true);
    r.eq(
        "... the free page count back to its starting value (nothing leaked)",
        free_pages(),
        free0,
    );
    mmu::release_slots(slot, 1);
}
