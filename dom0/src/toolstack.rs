//! dom0's toolstack on the hypervisor (bare metal): the [`Hypervisor`] implementation of
//! the portable toolstack ([`dom0::xl`]) over domctl, foreign mappings and event channels,
//! dom0's heap, its ramdisk as a filesystem, and the hooks the shell loop calls (`xl`
//! commands, console attach, console and `VIRQ_DOM_EXC` events).
#![allow(unsafe_code)]

extern crate alloc;

use alloc::vec::Vec;
use core::alloc::{GlobalAlloc, Layout};
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use dom0::consback::RingMem;
use dom0::xl::platform::{DomInfo, Hypervisor};
use dom0::xl::xs::Shared;
use dom0::xl::Toolstack;
use dom0::{Host, HostError, Outcome};
use domain_builder::BuildMemory;
use linked_list_allocator::Heap;
use pv_guest::arch::domctl::{domctl, reservation_for};
use pv_guest::arch::foreign::{self, ForeignPage};
use pv_guest::arch::mmu::{self, MmError};
use pv_guest::xen_abi::domctl::*;
use pv_guest::xen_abi::memory::XENMEM_POPULATE_PHYSMAP;
use pv_guest::xen_abi::xen::{StartInfo, VcpuGuestContext, SIF_MOD_START_PFN, VIRQ_DOM_EXC};
use pv_guest::xen_abi::{DomId, Errno, Mfn, Pfn};
use pv_guest::{events, hypercall, println, time};
use spin::{Mutex, Once};
use zerocopy::{Immutable, IntoBytes};

// ---------------------------------------------------------------------------------------
// Heap (the toolstack, the domain builder and xenstored allocate).
//
// A small static heap serves boot and everyday allocations. Beyond it the heap grows into
// dom0's own free memory, as a Linux dom0's heap does (libxc unpacks a domU kernel in
// dom0's RAM): the grow area (`mmu::GROW_AREA_VA`) is backed by free frames on demand.
// Its first part is an arena for small allocations that grows 2 MiB at a time; an
// allocation of `BIG` bytes or more gets pages of its own further up (as glibc's
// malloc uses mmap), which go back to dom0's free frames when it is freed, so that the
// tens of MiB of an unpacked kernel are dom0's free memory again once the domain is built.
// The heap never takes the last `RESERVE_FRAMES` free frames: dom0's own page tables, the
// map area's users and DMA buffers need them.

/// The static heap.
const BASE_HEAP_SIZE: usize = 2 << 20;
/// Allocations of this size or more get grow-area pages of their own.
const BIG: usize = 256 << 10;
/// The arena grows by at least this much at a time.
const CHUNK: usize = 2 << 20;
/// Grow-area pages for the arena (256 MiB); big allocations get the rest.
const ARENA_PAGES: usize = 1 << 16;
/// Grow-area VA is given to big allocations in units of 2 MiB (one L1's worth), so that
/// any alignment up to 2 MiB is free and one can grow in place.
const UNIT_PAGES: usize = 512;
const UNITS: usize = (mmu::GROW_AREA_PAGES - ARENA_PAGES) / UNIT_PAGES;
/// Free frames (8 MiB) that heap growth always leaves to the rest of dom0.
pub const RESERVE_FRAMES: u64 = 2048;
const PAGE: usize = 4096;

#[repr(C, align(4096))]
struct HeapArea([u8; BASE_HEAP_SIZE]);

static mut HEAP_AREA: HeapArea = HeapArea([0; BASE_HEAP_SIZE]);

/// The growable part of the heap.
struct Grow {
    /// The grow area is hooked in ([`enable_heap_growth`] succeeded).
    ready: bool,
    /// Small allocations past the static heap, at the start of the grow area.
    arena: Heap,
    /// Pages mapped for the arena.
    arena_pages: usize,
    /// Big-allocation units in use.
    units: [u64; UNITS.div_ceil(64)],
    /// Pages mapped for big allocations.
    big_pages: usize,
}

/// dom0's allocator: the static heap, then the grow area.
struct DomHeap {
    base: Mutex<Heap>,
    grow: Mutex<Grow>,
}

#[global_allocator]
static HEAP: DomHeap = DomHeap {
    base: Mutex::new(Heap::empty()),
    grow: Mutex::new(Grow {
        ready: false,
        arena: Heap::empty(),
        arena_pages: 0,
        units: [0; UNITS.div_ceil(64)],
        big_pages: 0,
    }),
};

fn arena_va() -> u64 {
    mmu::GROW_AREA_VA
}

fn big_va() -> u64 {
    mmu::grow_area_va(ARENA_PAGES)
}

fn big_end() -> u64 {
    mmu::grow_area_va(mmu::GROW_AREA_PAGES)
}

impl Grow {
    fn unit_used(&self, u: usize) -> bool {
        self.units[u / 64] & (1 << (u % 64)) != 0
    }

    fn set_units(&mut self, from: usize, to: usize, used: bool) {
        for u in from..to.min(UNITS) {
            if used {
                self.units[u / 64] |= 1 << (u % 64);
            } else {
                self.units[u / 64] &= !(1 << (u % 64));
            }
        }
    }

    /// A small allocation from the arena, growing it by whole chunks if needed.
    fn arena_alloc(&mut self, layout: Layout) -> *mut u8 {
        if let Ok(p) = self.arena.allocate_first_fit(layout) {
            return p.as_ptr();
        }
        // Enough for the request at any alignment plus the allocator's bookkeeping.
        let want = layout.size() + layout.align() + 64;
        let grow = want.div_ceil(CHUNK) * CHUNK / PAGE;
        if self.arena_pages + grow > ARENA_PAGES
            || mmu::grow_area_map(self.arena_pages, grow, RESERVE_FRAMES).is_err()
        {
            return core::ptr::null_mut();
        }
        if self.arena_pages == 0 {
            // SAFETY: the pages just mapped at the start of the grow area are ours, RW,
            // referenced by nothing, and stay mapped while the arena exists (forever).
            unsafe { self.arena.init(arena_va() as *mut u8, grow * PAGE) };
        } else {
            // SAFETY: the pages just mapped follow the arena's top directly (the arena
            // covers exactly its `arena_pages` mapped pages) and stay mapped forever.
            unsafe { self.arena.extend(grow * PAGE) };
        }
        self.arena_pages += grow;
        self.arena
            .allocate_first_fit(layout)
            .map_or(core::ptr::null_mut(), |p| p.as_ptr())
    }

    /// A big allocation: whole pages of its own at the start of free units.
    fn big_alloc(&mut self, layout: Layout) -> *mut u8 {
        if layout.align() > UNIT_PAGES * PAGE {
            return core::ptr::null_mut();
        }
        let pages = layout.size().div_ceil(PAGE);
        let units = pages.div_ceil(UNIT_PAGES);
        let Some(u) =
            (0..=UNITS.saturating_sub(units)).find(|&u| (u..u + units).all(|i| !self.unit_used(i)))
        else {
            return core::ptr::null_mut();
        };
        let first = ARENA_PAGES + u * UNIT_PAGES;
        if mmu::grow_area_map(first, pages, RESERVE_FRAMES).is_err() {
            return core::ptr::null_mut();
        }
        self.set_units(u, u + units, true);
        self.big_pages += pages;
        mmu::grow_area_va(first) as *mut u8
    }

    fn big_unit_of(ptr: *mut u8) -> usize {
        (ptr as u64 - big_va()) as usize / PAGE / UNIT_PAGES
    }

    fn big_free(&mut self, ptr: *mut u8, size: usize) {
        let u = Self::big_unit_of(ptr);
        let first = ARENA_PAGES + u * UNIT_PAGES;
        let pages = size.div_ceil(PAGE);
        // A failure leaves frames mapped (lost to dom0) but never reused while mapped.
        let _ = mmu::grow_area_unmap(first, pages);
        self.set_units(u, u + pages.div_ceil(UNIT_PAGES), false);
        self.big_pages = self.big_pages.saturating_sub(pages);
    }

    /// Resize a big allocation in place: unmap its tail, or map more pages after it
    /// when the units they need are free. False if it must move.
    fn big_resize(&mut self, ptr: *mut u8, old: usize, new: usize) -> bool {
        let u = Self::big_unit_of(ptr);
        let first = ARENA_PAGES + u * UNIT_PAGES;
        let (old_pages, new_pages) = (old.div_ceil(PAGE), new.div_ceil(PAGE));
        let (old_units, new_units) = (
            old_pages.div_ceil(UNIT_PAGES),
            new_pages.div_ceil(UNIT_PAGES),
        );
        if new_pages <= old_pages {
            let _ = mmu::grow_area_unmap(first + new_pages, old_pages - new_pages);
            self.set_units(u + new_units.max(1), u + old_units, false);
            self.big_pages = self.big_pages.saturating_sub(old_pages - new_pages);
            return true;
        }
        if u + new_units > UNITS || (u + old_units..u + new_units).any(|i| self.unit_used(i)) {
            return false;
        }
        if mmu::grow_area_map(first + old_pages, new_pages - old_pages, RESERVE_FRAMES).is_err() {
            return false;
        }
        self.set_units(u + old_units, u + new_units, true);
        self.big_pages += new_pages - old_pages;
        true
    }
}

fn in_range(ptr: *mut u8, from: u64, to: u64) -> bool {
    (from..to).contains(&(ptr as u64))
}

fn in_base(ptr: *mut u8) -> bool {
    let base = core::ptr::addr_of!(HEAP_AREA) as u64;
    in_range(ptr, base, base + BASE_HEAP_SIZE as u64)
}

// SAFETY: every block handed out is owned by exactly one of the three parts (static heap,
// arena, big pages), each behind its lock; `dealloc`/`realloc` route by address to the
// part that handed the block out (their ranges are disjoint), and big blocks are mapped
// pages of their own until freed.
unsafe impl GlobalAlloc for DomHeap {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.size() >= BIG {
            let mut g = self.grow.lock();
            if g.ready {
                let p = g.big_alloc(layout);
                if !p.is_null() {
                    return p;
                }
            }
        }
        if let Ok(p) = self.base.lock().allocate_first_fit(layout) {
            return p.as_ptr();
        }
        let mut g = self.grow.lock();
        if g.ready {
            g.arena_alloc(layout)
        } else {
            core::ptr::null_mut()
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let Some(nn) = core::ptr::NonNull::new(ptr) else {
            return;
        };
        if in_base(ptr) {
            // SAFETY: handed out by the static heap with this layout (caller's contract).
            unsafe { self.base.lock().deallocate(nn, layout) };
        } else if in_range(ptr, big_va(), big_end()) {
            self.grow.lock().big_free(ptr, layout.size());
        } else {
            // SAFETY: handed out by the arena with this layout (caller's contract).
            unsafe { self.grow.lock().arena.deallocate(nn, layout) };
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if in_range(ptr, big_va(), big_end())
            && new_size > 0
            && self.grow.lock().big_resize(ptr, layout.size(), new_size)
        {
            return ptr;
        }
        let Ok(new_layout) = Layout::from_size_align(new_size, layout.align()) else {
            return core::ptr::null_mut();
        };
        // SAFETY: a valid layout (checked above).
        let new = unsafe { self.alloc(new_layout) };
        if !new.is_null() {
            // SAFETY: both blocks are valid for the smaller size and do not overlap (the
            // old one is still allocated); then the old one is freed as the caller allows.
            unsafe {
                core::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
        }
        new
    }
}

fn init_heap() {
    static DONE: AtomicBool = AtomicBool::new(false);
    if DONE.swap(true, Ordering::AcqRel) {
        return;
    }
    // SAFETY: runs once (guarded above), before any allocation; the area is a static that
    // nothing else references, handed to the allocator for the kernel's lifetime.
    unsafe {
        let start = core::ptr::addr_of_mut!(HEAP_AREA) as *mut u8;
        HEAP.base.lock().init(start, BASE_HEAP_SIZE);
    }
}

/// Let the heap grow into dom0's free memory (needs the map area).
fn enable_heap_growth() -> Result<(), MmError> {
    mmu::grow_area_init()?;
    HEAP.grow.lock().ready = true;
    Ok(())
}

/// The heap's use of dom0's memory.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HeapStats {
    /// Bytes of the static heap in use.
    pub base_used: usize,
    /// Size of the static heap.
    pub base_size: usize,
    /// Bytes of the arena in use.
    pub arena_used: usize,
    /// Bytes mapped for the arena (dom0 frames it holds).
    pub arena_size: usize,
    /// Bytes mapped for big allocations (dom0 frames they hold).
    pub big_bytes: usize,
    /// dom0's free frames.
    pub free_frames: u64,
}

/// What the heap uses now.
pub fn heap_stats() -> HeapStats {
    let (base_used, base_size) = {
        let b = HEAP.base.lock();
        (b.used(), b.size())
    };
    let g = HEAP.grow.lock();
    HeapStats {
        base_used,
        base_size,
        arena_used: if g.arena_pages > 0 { g.arena.used() } else { 0 },
        arena_size: g.arena_pages * PAGE,
        big_bytes: g.big_pages * PAGE,
        free_frames: mmu::free_frames(),
    }
}

// ---------------------------------------------------------------------------------------
// The hypervisor side.

fn err(e: hypercall::Error) -> HostError {
    HostError(e.raw())
}

fn mm_err(e: MmError) -> HostError {
    match e {
        MmError::Hypercall(_, e) => err(e),
        MmError::NoFrames | MmError::Slot => HostError(Errno::ENOMEM.to_ret()),
        _ => HostError(Errno::EINVAL.to_ret()),
    }
}

fn dctl<T: IntoBytes + Immutable>(cmd: u32, domid: u16, payload: &T) -> Result<Domctl, HostError> {
    let mut d = Domctl::new(cmd, domid);
    d.set_payload(payload);
    domctl(&mut d).map_err(err)?;
    Ok(d)
}

/// A domain's frames while it is built: one map-area slot, re-pointed at each frame the
/// builder touches (it writes frame by frame, so this stays cheap).
struct ForeignMem {
    domid: u16,
    p2m: Vec<Mfn>,
    page: Option<ForeignPage>,
    error: Option<MmError>,
}

impl ForeignMem {
    fn page_for(&mut self, pfn: Pfn) -> Option<&mut ForeignPage> {
        if self.error.is_some() {
            return None;
        }
        let mfn = self.p2m.get(pfn.raw() as usize)?.raw();
        let page = match self.page.take() {
            Some(p) if p.mfn() == mfn => Ok(p),
            Some(p) => p.remap(self.domid, mfn).map_err(|(p, e)| {
                p.unmap();
                e
            }),
            None => ForeignPage::map(self.domid, mfn),
        };
        match page {
            Ok(p) => self.page = Some(p),
            Err(e) => self.error = Some(e),
        }
        self.page.as_mut()
    }
}

impl BuildMemory for ForeignMem {
    fn mfn(&self, pfn: Pfn) -> Mfn {
        self.p2m
            .get(pfn.raw() as usize)
            .copied()
            .unwrap_or(Mfn::new(0))
    }
    fn write(&mut self, pfn: Pfn, offset: usize, bytes: &[u8]) {
        if let Some(p) = self.page_for(pfn) {
            p.write(offset, bytes);
        }
    }
    fn zero(&mut self, pfn: Pfn) {
        if let Some(p) = self.page_for(pfn) {
            p.zero();
        }
    }
}

/// A domain's console page, mapped.
struct Ring(ForeignPage);

impl RingMem for Ring {
    fn load32(&self, off: usize) -> u32 {
        self.0.load32(off)
    }
    fn store32(&mut self, off: usize, v: u32) {
        self.0.store32(off, v)
    }
    fn load8(&self, off: usize) -> u8 {
        self.0.load8(off)
    }
    fn store8(&mut self, off: usize, v: u8) {
        self.0.store8(off, v)
    }
}

/// The hypervisor, through hypercalls.
struct Xen;

impl Hypervisor for Xen {
    type Mem = ForeignMem;
    type Ring = Ring;

    fn create_domain(&mut self, max_vcpus: u32, max_memkb: u64) -> Result<u16, HostError> {
        let p = DomctlCreateDomain {
            max_vcpus,
            flags: 0,
            max_memkb,
        };
        Ok(dctl(DOMCTL_CREATEDOMAIN, 0, &p)?.domain)
    }
    fn destroy_domain(&mut self, domid: u16) -> Result<(), HostError> {
        // The toolstack released the domain from xenstored just before: let the ring
        // service drop its mapping of the store page now, so that the hypervisor can free
        // every frame at once.
        crate::xenstore::poll();
        dctl(DOMCTL_DESTROYDOMAIN, domid, &0u64).map(|_| ())
    }
    fn pause_domain(&mut self, domid: u16) -> Result<(), HostError> {
        dctl(DOMCTL_PAUSEDOMAIN, domid, &0u64).map(|_| ())
    }
    fn unpause_domain(&mut self, domid: u16) -> Result<(), HostError> {
        dctl(DOMCTL_UNPAUSEDOMAIN, domid, &0u64).map(|_| ())
    }
    fn domain_info(&mut self, first: u16) -> Result<Option<DomInfo>, HostError> {
        let d = match dctl(DOMCTL_GETDOMAININFO, first, &0u64) {
            Ok(d) => d,
            Err(HostError(e)) if e == Errno::ESRCH.to_ret() => return Ok(None),
            Err(e) => return Err(e),
        };
        let i: DomctlGetDomainInfo = d.payload().ok_or(HostError(Errno::EINVAL.to_ret()))?;
        Ok(Some(DomInfo {
            domid: d.domain,
            flags: i.flags,
            tot_pages: i.tot_pages,
            max_pages: i.max_pages,
            shared_info_frame: i.shared_info_frame,
            cpu_time_ns: i.cpu_time,
            nr_online_vcpus: i.nr_online_vcpus,
            max_vcpu_id: i.max_vcpu_id,
        }))
    }
    fn set_max_mem(&mut self, domid: u16, max_memkb: u64) -> Result<(), HostError> {
        dctl(DOMCTL_MAX_MEM, domid, &DomctlMaxMem { max_memkb }).map(|_| ())
    }
    fn set_max_vcpus(&mut self, domid: u16, max: u32) -> Result<(), HostError> {
        dctl(DOMCTL_MAX_VCPUS, domid, &DomctlMaxVcpus { max, pad: 0 }).map(|_| ())
    }
    fn populate_physmap(&mut self, domid: u16, frames: &mut [u64]) -> Result<usize, HostError> {
        reservation_for(XENMEM_POPULATE_PHYSMAP, domid, frames)
            .map(|n| n as usize)
            .map_err(err)
    }
    fn map_foreign(&mut self, domid: u16, p2m: Vec<Mfn>) -> Result<ForeignMem, HostError> {
        Ok(ForeignMem {
            domid,
            p2m,
            page: None,
            error: None,
        })
    }
    fn unmap_foreign(&mut self, mem: ForeignMem) -> Result<(), HostError> {
        if let Some(p) = mem.page {
            p.unmap();
        }
        match mem.error {
            Some(e) => Err(mm_err(e)),
            None => Ok(()),
        }
    }
    fn pin_l4(&mut self, domid: u16, mfn: Mfn) -> Result<(), HostError> {
        foreign::pin_l4_foreign(domid, mfn.raw())
            .map(|_| ())
            .map_err(err)
    }
    fn alloc_unbound(&mut self, domid: u16, remote_dom: u16) -> Result<u32, HostError> {
        hypercall::evtchn_alloc_unbound(domid, remote_dom).map_err(err)
    }
    fn set_vcpu_context(
        &mut self,
        domid: u16,
        vcpu: u32,
        ctx: &VcpuGuestContext,
    ) -> Result<(), HostError> {
        foreign::set_vcpu_context(domid, vcpu, ctx).map_err(err)
    }
    fn hypercall_init(&mut self, domid: u16, gmfn: Mfn) -> Result<(), HostError> {
        dctl(
            DOMCTL_HYPERCALL_INIT,
            domid,
            &DomctlHypercallInit { gmfn: gmfn.raw() },
        )
        .map(|_| ())
    }
    fn shutdown_domain(&mut self, domid: u16, reason: u32) -> Result<(), HostError> {
        dctl(DOMCTL_SHUTDOWN, domid, &DomctlShutdown { reason, pad: 0 }).map(|_| ())
    }
    fn offered_features(&mut self) -> u32 {
        // What the hypervisor offers us is what it offers a PV domU; like its dom0
        // builder, accept kernels that require writable page tables (it emulates them).
        hypercall::xen_get_features(0).unwrap_or(0)
            | (1 << pv_guest::xen_abi::features::XENFEAT_WRITABLE_PAGE_TABLES)
    }
    fn map_ring(&mut self, domid: u16, mfn: Mfn) -> Result<Ring, HostError> {
        ForeignPage::map(domid, mfn.raw()).map(Ring).map_err(mm_err)
    }
    fn unmap_ring(&mut self, ring: Ring) {
        ring.0.unmap();
    }
    fn bind_interdomain(&mut self, domid: u16, remote_port: u32) -> Result<u32, HostError> {
        let port = events::bind_interdomain(DomId::new(domid), remote_port).map_err(err)?;
        let bound = events::set_handler(port, Some(on_console_event))
            .and_then(|_| events::unmask(port).map(|_| ()));
        if let Err(e) = bound {
            let _ = events::close(port);
            return Err(err(e));
        }
        Ok(port)
    }
    fn notify(&mut self, local_port: u32) {
        let _ = events::send(local_port);
    }
    fn unbind(&mut self, local_port: u32) {
        let _ = events::close(local_port);
    }
    fn now_ns(&mut self) -> u64 {
        time::now_ns()
    }
    fn block_devices(&mut self) -> Vec<alloc::string::String> {
        crate::disks::names()
    }
}

// ---------------------------------------------------------------------------------------
// State and hooks for the shell.

/// The xenstore database dom0 serves. Until dom0's xenstored service owns the instance,
/// the toolstack keeps it here; the ring service must use [`xenstore`] too.
static XENSTORE: Once<Mutex<xenstored::Store>> = Once::new();

/// dom0's xenstore database.
pub fn xenstore() -> &'static Mutex<xenstored::Store> {
    XENSTORE.call_once(|| Mutex::new(xenstored::Store::new()))
}

static TS: Mutex<Option<Toolstack<Xen, Shared>>> = Mutex::new(None);
/// VIRQ_DOM_EXC notifications not yet handled.
static DOM_EXC: AtomicBool = AtomicBool::new(false);
/// Console channel notifications (statistics; the loop polls every ring when woken).
static CONSOLE_EVENTS: AtomicU64 = AtomicU64::new(0);

fn on_dom_exc(_port: u32) {
    DOM_EXC.store(true, Ordering::Release);
}

fn on_console_event(_port: u32) {
    CONSOLE_EVENTS.fetch_add(1, Ordering::Relaxed);
}

/// dom0's ramdisk (the `newc` archive the xtask packs) as bytes.
fn ramdisk(si: &StartInfo) -> &'static [u8] {
    if si.mod_start == 0 || si.mod_len == 0 {
        return &[];
    }
    if si.flags & SIF_MOD_START_PFN != 0 {
        // Not mapped by the builder: dom0's notes do not ask for this.
        println!("dom0: ramdisk passed by PFN; not supported, no files available");
        return &[];
    }
    // SAFETY: the builder mapped the initrd read-write at mod_start..+mod_len inside our
    // initial mapping (ABI.md §1.3, element 3); nothing else of ours lives there and
    // nothing writes it.
    unsafe { core::slice::from_raw_parts(si.mod_start as *const u8, si.mod_len as usize) }
}

/// Sets up the toolstack: heap, map area, heap growth, ramdisk, VIRQ_DOM_EXC. Call after the kernel
/// runs on its own page tables and events are initialised.
pub fn init(si: &'static StartInfo) {
    init_heap();
    match mmu::map_area_init() {
        Ok(_) => {
            if let Err(e) = enable_heap_growth() {
                println!("dom0: heap cannot grow ({e}): {BASE_HEAP_SIZE} bytes only");
            }
        }
        Err(e) => println!("dom0: toolstack: no map area ({e}); domUs cannot be built"),
    }
    let files = ramdisk(si);
    match dom0::cpio::Archive::new(files).validate() {
        Ok(n) => println!("dom0: ramdisk: {} bytes, {n} files", files.len()),
        Err(e) => println!("dom0: ramdisk: {e}"),
    }
    if let Err(e) = events::bind_virq(VIRQ_DOM_EXC, 0, on_dom_exc) {
        println!("dom0: bind VIRQ_DOM_EXC failed ({e}); domain exits are not handled");
    }
    *TS.lock() = Some(Toolstack::new(Xen, Shared(xenstore()), files));
}

/// Runs an `xl` command line; None if `line` is not one.
pub fn command(line: &str, h: &mut impl Host) -> Option<Outcome> {
    match line.trim() {
        "free" => {
            free(h);
            return Some(Outcome::Continue);
        }
        "free -t" => {
            heap_selftest(h);
            return Some(Outcome::Continue);
        }
        _ => {}
    }
    let mut words = line.split_ascii_whitespace();
    if words.next() != Some("xl") {
        return None;
    }
    let args: Vec<&str> = words.collect();
    let mut ts = TS.lock();
    match ts.as_mut() {
        Some(t) => Some(t.command(&args, h)),
        None => {
            let _ = writeln!(h, "xl: toolstack not initialised");
            Some(Outcome::Continue)
        }
    }
}

/// `free`: dom0's memory and what its heap holds (frames the heap gave back count as
/// free again).
fn free(h: &mut impl Host) {
    let st = heap_stats();
    let total = mmu::layout().map_or(0, |l| l.nr_pages);
    let kib = |bytes: usize| bytes / 1024;
    let _ = writeln!(
        h,
        "dom0 memory: {} KiB, free {} KiB (the heap leaves {} KiB free)",
        total * 4,
        st.free_frames * 4,
        RESERVE_FRAMES * 4
    );
    let _ = writeln!(
        h,
        "heap: static {}/{} KiB, arena {}/{} KiB, big allocations {} KiB",
        kib(st.base_used),
        kib(st.base_size),
        kib(st.arena_used),
        kib(st.arena_size),
        kib(st.big_bytes)
    );
}

/// `free -t`: exercise heap growth and shrinking (the arena past the static heap, a big
/// allocation grown and shrunk in place, then everything freed) and report dom0's free
/// frames before and after, which must match up to the grow area's page tables.
fn heap_selftest(h: &mut impl Host) {
    let before = mmu::free_frames();
    let tables_before = mmu::grow_area_tables();
    // Small blocks: more than the static heap holds, so the arena grows.
    let mut small: Vec<Vec<u8>> = Vec::new();
    let mut ok = true;
    for i in 0..(BASE_HEAP_SIZE / (64 << 10) + 16) {
        let mut v = Vec::new();
        if v.try_reserve_exact((64 << 10) - 64).is_err() {
            ok = false;
            break;
        }
        v.resize((64 << 10) - 64, i as u8);
        small.push(v);
    }
    let arena = heap_stats().arena_size;
    // A big block grown by doubling (in place while the next units are free), then shrunk.
    let mut big: Vec<u8> = Vec::new();
    for step in 0..5 {
        let want = (1usize << 20) << step;
        if big.try_reserve_exact(want - big.len()).is_err() {
            ok = false;
            break;
        }
        big.resize(want, step as u8);
    }
    ok &= big.iter().enumerate().all(|(i, &b)| {
        let step = (i >> 20).checked_ilog2().map_or(0, |l| l + 1) as u8;
        b == step
    });
    let peak = heap_stats().big_bytes;
    big.truncate(3 << 20);
    big.shrink_to_fit();
    ok &= heap_stats().big_bytes == 3 << 20;
    ok &= small
        .iter()
        .enumerate()
        .all(|(i, v)| v.iter().all(|&b| b == i as u8));
    drop(big);
    drop(small);
    let after = mmu::free_frames();
    let tables = (mmu::grow_area_tables() - tables_before) as u64;
    // The arena keeps its pages (it never shrinks); big blocks give theirs back.
    let arena_frames = (heap_stats().arena_size / PAGE) as u64;
    ok &= after + tables + arena_frames >= before;
    let _ = writeln!(
        h,
        "heap self-test: {}: arena {} KiB, big peak {} KiB, free frames {before} -> {after} \
         ({tables} new page tables, {arena_frames} arena pages)",
        if ok { "ok" } else { "FAILED" },
        arena / 1024,
        peak / 1024,
    );
}

/// Whether a console is attached (input goes to [`input`], not the line editor).
pub fn attached() -> bool {
    TS.lock().as_ref().is_some_and(|t| t.attached().is_some())
}

/// Input while attached; true when Ctrl-] detached (print the prompt again).
pub fn input(bytes: &[u8], h: &mut impl Host) -> bool {
    match TS.lock().as_mut() {
        Some(t) => t.console_input(bytes, h),
        None => true,
    }
}

/// Work after any wake-up: domain exits, console output.
pub fn poll(h: &mut impl Host) {
    let mut ts = TS.lock();
    let Some(t) = ts.as_mut() else {
        return;
    };
    if DOM_EXC.swap(false, Ordering::AcqRel) {
        t.handle_dom_exc(h);
    }
    t.poll_consoles(h);
    t.poll_devices();
}
