//! dom0's toolstack on the hypervisor (bare metal): the [`Hypervisor`] implementation of
//! the portable toolstack ([`dom0::xl`]) over domctl, foreign mappings and event channels,
//! dom0's heap, its ramdisk as a filesystem, and the hooks the shell loop calls (`xl`
//! commands, console attach, console and `VIRQ_DOM_EXC` events).
#![allow(unsafe_code)]

extern crate alloc;

use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use dom0::consback::RingMem;
use dom0::xl::platform::{DomInfo, Hypervisor};
use dom0::xl::xs::Shared;
use dom0::xl::Toolstack;
use dom0::{Host, HostError, Outcome};
use domain_builder::BuildMemory;
use linked_list_allocator::LockedHeap;
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

const HEAP_SIZE: usize = 8 << 20;

#[repr(C, align(4096))]
struct HeapArea([u8; HEAP_SIZE]);

static mut HEAP_AREA: HeapArea = HeapArea([0; HEAP_SIZE]);

#[global_allocator]
static HEAP: LockedHeap = LockedHeap::empty();

fn init_heap() {
    static DONE: AtomicBool = AtomicBool::new(false);
    if DONE.swap(true, Ordering::AcqRel) {
        return;
    }
    // SAFETY: runs once (guarded above), before any allocation; the area is a static that
    // nothing else references, handed to the allocator for the kernel's lifetime.
    unsafe {
        let start = core::ptr::addr_of_mut!(HEAP_AREA) as *mut u8;
        HEAP.lock().init(start, HEAP_SIZE);
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

/// Sets up the toolstack: heap, map area, ramdisk, VIRQ_DOM_EXC. Call after the kernel
/// runs on its own page tables and events are initialised.
pub fn init(si: &'static StartInfo) {
    init_heap();
    if let Err(e) = mmu::map_area_init() {
        println!("dom0: toolstack: no map area ({e}); domUs cannot be built");
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
}
