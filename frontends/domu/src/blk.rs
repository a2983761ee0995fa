//! blk: the domU's virtual block device — the [`blkfront`] crate wired to this kernel — and
//! the block exercisers the tests drive through the command line.
//!
//! When the toolstack gave us a `device/vbd/<devid>` (the first one, or `blkdev=DEVID`),
//! the kernel connects to its backend as Linux blkfront does (see `blkfront::xenbus`) and
//! prints `blk: vbd <devid> connected ...`. Then `blk=` picks an exerciser:
//!
//! * `blk=verify`: write [`blkfront::pattern_byte`] patterns (seed `blkseed=`, default 1)
//!   at several places from `blksector=` (default 0) on — one page, 64 pages in one
//!   (indirect) request, the middle of the disk and its last sector —, flush, read every
//!   place back and compare, discard a separate range; one line per step, then
//!   `blk: all ok` or `blk: FAIL <what>`.
//! * `blk=ro`: reads succeed, a write is refused with `BLKIF_RSP_ERROR`.
//! * `blk=bench`: `BENCH blk domu[-pgnt] <seq1m|rand4k> <read|write> qd<1|32> <bytes> <ns> <ops>`
//!   rows like dom0's `disk bench` (32 MiB sequential, 4 MiB random per row; `blkseq=N`
//!   MiB and `blkops=N` 4 KiB operations change that; `blkpersistent` offers persistent
//!   grants, which are off by default), then `blk: bench done`. Writes
//!   destroy the disk's contents.
//! * `blkclose`: after the exerciser, close the device (`blk: vbd closed, grants revoked`
//!   or `blk: close FAIL ...`).
//! * `blk=hostile`: hand-made bad requests (a grant never given, 200 segments in a direct
//!   request, `first_sect > last_sect`, a sector past the end, an unknown operation, a read
//!   into a read-only grant), each of which the backend must refuse, then a good request
//!   that must still succeed.
//!
//! The kernel has no heap of its own, so this module brings one (a `linked_list_allocator`
//! over a static area) for the crate's bookkeeping; data pages are frames from the
//! kernel's frame allocator, granted to the backend through our grant table (set up here
//! with `GNTTABOP_setup_table`, frames mapped in the map area). Events stay masked: every
//! wait is `SCHEDOP_poll` on the device's port.
#![allow(unsafe_code)] // the ring page and grant table frames are shared memory

extern crate alloc;

use alloc::string::String;
use alloc::vec::Vec;
use core::sync::atomic::{compiler_fence, fence, AtomicBool, AtomicU32, Ordering};

use blkfront::xenbus::{self as xb, Device, Options, Store, StoreError, Tx, TxEnd, XenbusState};
use blkfront::{
    BlkFront, Completion, Error, GrantAccess, GrantError, IoError, Notify, PageMemory, Request,
    Seg, StillInUse,
};
use grant::alloc::GrantAllocator;
use grant::{EntryAccess, GuestEntryAccess, Header};
use linked_list_allocator::LockedHeap;
use pv_guest::arch::gnttab;
use pv_guest::arch::mmu::{self, Frame, Mapping};
use pv_guest::mm::{Pool, PAGE_SIZE};
use pv_guest::xen_abi::grant_table::GNTST_OKAY;
use pv_guest::xen_abi::{DomId, GrantRef, Mfn};
use pv_guest::xenbus::{self, TxId, XsErrno, XsError};
use pv_guest::{events, sched, shared, start, time, StartInfo};
use ring::blkif::{BlkifRequest, BlkifRequestSegment, BLKIF_OP_READ, SECTOR_SIZE};
use ring::{Fence, RingMemory};

macro_rules! println {
    ($($arg:tt)*) => { pv_guest::ring_println!($($arg)*) };
}

// ---------------------------------------------------------------------------------------
// Heap.

const HEAP_SIZE: usize = 1 << 20;

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
    // SAFETY: runs once (guarded above), before any allocation (only this module
    // allocates); the static area is referenced by nothing else and handed to the
    // allocator for the kernel's lifetime.
    unsafe {
        let start = core::ptr::addr_of_mut!(HEAP_AREA) as *mut u8;
        HEAP.lock().init(start, HEAP_SIZE);
    }
}

// ---------------------------------------------------------------------------------------
// Command line.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    None,
    Verify,
    ReadOnly,
    Bench,
    Hostile,
}

#[derive(Clone, Copy, Debug)]
struct Params {
    mode: Mode,
    seed: u64,
    sector: u64,
    devid: Option<u32>,
    /// Random 4 KiB operations per bench row.
    rand_ops: u64,
    /// 1 MiB operations per sequential bench row.
    seq_ops: u64,
    /// `blkclose`: close the device after the exerciser.
    close: bool,
    /// `blkpersistent=1`: offer persistent grants (copy through a pool of pages granted
    /// once). Off by default: granting each request's own pages (copyless) measures faster
    /// here (`cargo xtask bench`).
    persistent: bool,
}

fn params(cmdline: &str) -> Params {
    let mut p = Params {
        mode: Mode::None,
        seed: 1,
        sector: 0,
        devid: None,
        rand_ops: 1024,
        seq_ops: 32,
        close: false,
        persistent: false,
    };
    for tok in cmdline.split_ascii_whitespace() {
        let (key, value) = match tok.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (tok, None),
        };
        let num = value.and_then(|v| v.parse::<u64>().ok());
        match key {
            "blk" => {
                p.mode = match value {
                    Some("verify") => Mode::Verify,
                    Some("ro") => Mode::ReadOnly,
                    Some("bench") => Mode::Bench,
                    Some("hostile") => Mode::Hostile,
                    _ => Mode::None,
                }
            }
            "blkseed" => p.seed = num.unwrap_or(p.seed),
            "blksector" => p.sector = num.unwrap_or(p.sector),
            "blkdev" => p.devid = num.and_then(|n| u32::try_from(n).ok()),
            "blkops" => p.rand_ops = num.unwrap_or(p.rand_ops).max(1),
            "blkseq" => p.seq_ops = num.unwrap_or(p.seq_ops).max(1),
            "blkclose" => p.close = !matches!(value, Some("0" | "no" | "off")),
            "blkpersistent" => p.persistent = !matches!(value, Some("0" | "no" | "off")),
            _ => {}
        }
    }
    p
}

// ---------------------------------------------------------------------------------------
// xenstore.

/// How long the backend may take to reach each handshake state.
const HANDSHAKE_NS: u64 = 60_000_000_000;
/// How long the backend may take to close.
const CLOSE_NS: u64 = 5_000_000_000;
/// How long one request may take.
const IO_NS: u64 = 10_000_000_000;
/// Poll period while waiting for xenstore changes.
const STORE_POLL_NS: u64 = 10_000_000;

/// [`Store`] over the kernel's xenstore client; `wait` sleeps a little (or until the store
/// or device port fires) and gives up at `deadline`.
struct XsStore {
    deadline: u64,
    tx: Option<TxId>,
    port: Option<u32>,
}

impl XsStore {
    fn new(ns: u64) -> Self {
        XsStore {
            deadline: time::now_ns().saturating_add(ns),
            tx: None,
            port: None,
        }
    }

    fn tx(&self, tx: Tx) -> TxId {
        match self.tx {
            Some(t) if tx != Tx::NONE && t.raw() == tx.0 => t,
            _ => TxId::NONE,
        }
    }
}

fn xs_err(what: &'static str) -> impl Fn(XsError) -> StoreError {
    move |_| StoreError::Failed(what)
}

impl Store for XsStore {
    fn read(&mut self, tx: Tx, path: &str) -> Result<Option<String>, StoreError> {
        let t = self.tx(tx);
        xenbus::with(|x| {
            let mut buf = [0u8; 256];
            match x.read_str(t, path, &mut buf) {
                Ok(s) => Ok(Some(String::from(s))),
                Err(XsError::Server(XsErrno::ENOENT)) => Ok(None),
                Err(e) => Err(e),
            }
        })
        .map_err(xs_err("read"))
    }

    fn write(&mut self, tx: Tx, path: &str, value: &str) -> Result<(), StoreError> {
        let t = self.tx(tx);
        xenbus::with(|x| x.write(t, path, value.as_bytes())).map_err(xs_err("write"))
    }

    fn transaction_start(&mut self) -> Result<Tx, StoreError> {
        let t = xenbus::with(|x| x.transaction_start()).map_err(xs_err("transaction start"))?;
        self.tx = Some(t);
        Ok(Tx(t.raw()))
    }

    fn transaction_end(&mut self, tx: Tx, commit: bool) -> Result<TxEnd, StoreError> {
        let t = self.tx(tx);
        self.tx = None;
        match xenbus::with(|x| x.transaction_end(t, commit)) {
            Ok(()) => Ok(TxEnd::Done),
            Err(XsError::Server(XsErrno::EAGAIN)) => Ok(TxEnd::Retry),
            Err(_) => Err(StoreError::Failed("transaction end")),
        }
    }

    fn wait(&mut self) -> Result<(), StoreError> {
        let now = time::now_ns();
        if now >= self.deadline {
            return Err(StoreError::Timeout);
        }
        let until = now.saturating_add(STORE_POLL_NS).min(self.deadline);
        let mut ports = [0u32; 2];
        let mut n = 0;
        for p in [xenbus::port(), self.port].into_iter().flatten() {
            ports[n] = p;
            n += 1;
        }
        if sched::poll(&ports[..n], until).is_err() {
            sched::yield_now();
        }
        for &p in &ports[..n] {
            shared::test_and_clear_pending(p);
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// Shared pages.

/// A page mapped in the map area (the ring page): the ring crate reaches it only through
/// volatile accesses.
#[derive(Clone, Copy, Debug)]
struct RingPage {
    va: u64,
}

impl RingPage {
    fn ptr(&self, offset: usize) -> u64 {
        self.va + (offset as u64 & (PAGE_SIZE - 1))
    }
}

impl RingMemory for RingPage {
    fn len(&self) -> usize {
        PAGE_SIZE as usize
    }
    fn load_u32(&self, offset: usize) -> u32 {
        // SAFETY: `va` maps our ring frame for the kernel's lifetime (the Mapping is never
        // released while the device may use it); aligned, inside the page (masked);
        // volatile because the backend writes it concurrently.
        unsafe { core::ptr::read_volatile(self.ptr(offset & !3) as *const u32) }
    }
    fn store_u32(&self, offset: usize, value: u32) {
        // SAFETY: as `load_u32`; mapped writable.
        unsafe { core::ptr::write_volatile(self.ptr(offset & !3) as *mut u32, value) }
    }
    fn read_bytes(&self, offset: usize, dst: &mut [u8]) {
        crate::ringtest::copy_in(self.va, offset, dst);
    }
    fn write_bytes(&self, offset: usize, src: &[u8]) {
        crate::ringtest::copy_out(self.va, offset, src);
    }
    fn fence(&self, f: Fence) {
        match f {
            // x86-TSO: only the compiler may reorder loads with loads, stores with stores.
            Fence::Read => compiler_fence(Ordering::Acquire),
            Fence::Write => compiler_fence(Ordering::Release),
            Fence::Full => fence(Ordering::SeqCst),
        }
    }
}

/// A data page: its frame, and its VA when it is mapped for good (frames of the mapped
/// pool); other frames are mapped only while the CPU copies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DPage {
    mfn: u64,
    va: u64,
}

/// Our grant table: its frames mapped in the map area, entries reached with atomic and
/// volatile accesses (the hypervisor sets `GTF_reading`/`GTF_writing` concurrently).
struct Table {
    vas: Vec<u64>,
}

impl Table {
    /// The address of entry `gref`'s first byte, if it is in the table.
    fn entry(&self, gref: GrantRef) -> Option<u64> {
        let r = gref.raw() as usize;
        let va = *self.vas.get(r / 512)?;
        Some(va + (r % 512) as u64 * 8)
    }

    fn header_atomic(&self, gref: GrantRef) -> Option<&AtomicU32> {
        let a = self.entry(gref)?;
        // SAFETY: `a` is the 8-byte aligned start of an entry inside a table frame mapped
        // for the kernel's lifetime; AtomicU32 has u32's layout, and every access to the
        // word (ours and the hypervisor's locked ops) is atomic.
        Some(unsafe { &*(a as *const AtomicU32) })
    }
}

impl EntryAccess for Table {
    fn read_header(&mut self, gref: GrantRef) -> Header {
        Header(
            self.header_atomic(gref)
                .map_or(0, |w| w.load(Ordering::Acquire)),
        )
    }
    fn read_frame(&mut self, gref: GrantRef) -> u32 {
        match self.entry(gref) {
            // SAFETY: inside a mapped table frame (see `entry`), 4-byte aligned.
            Some(a) => unsafe { core::ptr::read_volatile((a + 4) as *const u32) },
            None => 0,
        }
    }
    fn cmpxchg_header(&mut self, gref: GrantRef, old: Header, new: Header) -> Result<(), Header> {
        let Some(w) = self.header_atomic(gref) else {
            return Err(Header(0));
        };
        w.compare_exchange(old.0, new.0, Ordering::AcqRel, Ordering::Acquire)
            .map(|_| ())
            .map_err(Header)
    }
    fn clear_flags(&mut self, gref: GrantRef, bits: u16) {
        if let Some(w) = self.header_atomic(gref) {
            w.fetch_and(!u32::from(bits), Ordering::AcqRel);
        }
    }
}

impl GuestEntryAccess for Table {
    fn write_domid_frame(&mut self, gref: GrantRef, domid: DomId, frame: u32) {
        if let Some(a) = self.entry(gref) {
            // SAFETY: inside a mapped table frame; the entry's flags are 0 (not granted),
            // so the hypervisor does not use these fields now.
            unsafe {
                core::ptr::write_volatile((a + 2) as *mut u16, domid.raw());
                core::ptr::write_volatile((a + 4) as *mut u32, frame);
            }
        }
    }
    fn write_flags_release(&mut self, gref: GrantRef, flags: u16) {
        if let Some(a) = self.entry(gref) {
            // domid and frame before the flags that make them valid.
            fence(Ordering::Release);
            // SAFETY: inside a mapped table frame, 2-byte aligned.
            unsafe { core::ptr::write_volatile(a as *mut u16, flags) };
        }
    }
}

/// Grant-table frames this module asks for (512 references each): enough for a full ring
/// of 256-segment requests granted one by one.
const TABLE_FRAMES: usize = 20;

/// The kernel services blkfront runs on.
pub struct DomuHost {
    table: Table,
    refs: GrantAllocator,
    frames: Vec<Frame>,
    port: u32,
}

impl DomuHost {
    fn new(port: u32) -> Result<DomuHost, &'static str> {
        let mut frames = [0u64; TABLE_FRAMES];
        // Fewer frames if the hypervisor's limit is lower.
        let n = [TABLE_FRAMES, 8, 1]
            .into_iter()
            .find(|&n| {
                matches!(
                    gnttab::setup_table(DomId::SELF.raw(), &mut frames[..n]),
                    Ok(GNTST_OKAY)
                )
            })
            .ok_or("GNTTABOP_setup_table")?;
        let mut vas = Vec::with_capacity(n);
        for &f in &frames[..n] {
            let m = mmu::map(f, true).map_err(|_| "mapping the grant table")?;
            vas.push(m.va());
            // The table stays mapped for the kernel's lifetime (a Mapping has no Drop:
            // letting the handle go leaves the slot mapped).
            let _ = m;
        }
        let mut refs = GrantAllocator::new(n as u32).map_err(|_| "grant reference allocator")?;
        // Reference 8 is the ring test's (src/ringtest.rs writes it by hand): never hand it out.
        let _ = refs.claim();
        Ok(DomuHost {
            table: Table { vas },
            refs,
            frames: Vec::new(),
            port,
        })
    }

    fn with_page<R>(&mut self, page: DPage, f: impl FnOnce(u64) -> R) -> Option<R> {
        if page.va != 0 {
            return Some(f(page.va));
        }
        let m: Mapping = mmu::map(page.mfn, true).ok()?;
        let r = f(m.va());
        let _ = mmu::unmap(m);
        Some(r)
    }
}

impl GrantAccess for DomuHost {
    fn grant(&mut self, domid: DomId, frame: Mfn, readonly: bool) -> Result<GrantRef, GrantError> {
        let f = u32::try_from(frame.raw()).map_err(|_| GrantError::BadFrame)?;
        let r = self.refs.claim().map_err(|_| GrantError::Exhausted)?;
        grant::alloc::grant_access(&mut self.table, r, domid, f, readonly);
        Ok(r)
    }

    fn end_access(&mut self, gref: GrantRef) -> Result<(), StillInUse> {
        grant::alloc::end_access(&mut self.table, gref).map_err(|_| StillInUse)?;
        let _ = self.refs.release(gref);
        Ok(())
    }
}

impl PageMemory for DomuHost {
    type Page = DPage;

    fn alloc_page(&mut self) -> Option<DPage> {
        let f = mmu::alloc_frame(Pool::Mapped)
            .or_else(|_| mmu::alloc_frame(Pool::Unmapped))
            .ok()?;
        let page = DPage {
            mfn: f.mfn(),
            va: f.va().unwrap_or(0),
        };
        self.frames.push(f);
        Some(page)
    }

    fn free_page(&mut self, page: DPage) {
        if let Some(i) = self.frames.iter().position(|f| f.mfn() == page.mfn) {
            mmu::free_frame(self.frames.swap_remove(i));
        }
    }

    fn frame(&self, page: DPage) -> Mfn {
        Mfn::new(page.mfn)
    }

    fn read(&mut self, page: DPage, offset: usize, dst: &mut [u8]) {
        self.with_page(page, |va| crate::ringtest::copy_in(va, offset, dst));
    }

    fn write(&mut self, page: DPage, offset: usize, src: &[u8]) {
        self.with_page(page, |va| crate::ringtest::copy_out(va, offset, src));
    }
}

impl Notify for DomuHost {
    fn notify(&mut self) {
        let _ = events::send(self.port);
    }
}

type Blk = BlkFront<RingPage, DomuHost>;

// ---------------------------------------------------------------------------------------
// Connecting.

fn first_vbd() -> Option<u32> {
    xenbus::with(|x| {
        let mut buf = [0u8; 512];
        let r = x.directory(TxId::NONE, "device/vbd", &mut buf);
        Ok(match r {
            Ok(mut e) => e.find_map(|n| n.parse::<u32>().ok()),
            Err(_) => None,
        })
    })
    .ok()
    .flatten()
}

fn connect(devid: u32, persistent: bool) -> Result<(Device, Blk, u32), String> {
    use alloc::format;
    let mut store = XsStore::new(HANDSHAKE_NS);
    let dev = xb::probe(&mut store, devid).map_err(|e| format!("{e}"))?;
    xb::wait_backend(&mut store, &dev, XenbusState::InitWait).map_err(|e| format!("{e}"))?;
    if !mmu::is_ready() {
        return Err("memory manager not ready".into());
    }
    mmu::map_area_init().map_err(|_| String::from("map area"))?;
    let port = events::alloc_unbound(dev.backend_id)
        .map_err(|_| String::from("EVTCHNOP_alloc_unbound"))?;
    store.port = Some(port);
    let host = DomuHost::new(port).map_err(String::from)?;
    let frame =
        mmu::alloc_frame(Pool::Unmapped).map_err(|_| String::from("no frame for the ring"))?;
    let mapping = mmu::map(frame.mfn(), true).map_err(|_| String::from("mapping the ring"))?;
    let ring = RingPage { va: mapping.va() };
    // The ring stays mapped (and its frame ours) for the kernel's lifetime: neither handle
    // has a Drop, letting them go keeps the slot mapped and the frame allocated.
    let mfn = Mfn::new(frame.mfn());
    let _ = (mapping, frame);
    let blk = xb::connect(
        &mut store,
        &dev,
        host,
        ring,
        &[mfn],
        port,
        &Options {
            persistent,
            ..Options::default()
        },
    )
    .map_err(|e| format!("{e}"))?;
    Ok((dev, blk, port))
}

/// Connects the first virtual block device (or `blkdev=`), if the toolstack gave us one,
/// and runs the exerciser the command line asks for. Returns to the heartbeat loop.
pub fn maybe_run(si: &StartInfo) {
    let p = params(start::cmdline(si));
    let Some(devid) = p.devid.or_else(first_vbd) else {
        if p.mode != Mode::None {
            println!("blk: FAIL no device/vbd");
        }
        return;
    };
    init_heap();
    if !mmu::is_ready() && mmu::init(si).is_err() {
        println!("blk: FAIL memory manager");
        return;
    }
    let (dev, mut blk, port) = match connect(devid, p.persistent) {
        Ok(c) => c,
        Err(e) => {
            println!("blk: FAIL connecting vbd {devid}: {e}");
            return;
        }
    };
    let d = *blk.disk();
    println!(
        "blk: vbd {devid} connected: {} sectors, sector-size {}, info {}, flush {}, discard {}, \
         persistent {}, indirect {}, ring {}",
        d.sectors,
        d.sector_size,
        d.info,
        d.flush,
        d.discard,
        d.persistent,
        d.max_indirect_segments,
        blk.ring_size()
    );
    let mut io = Io {
        blk: &mut blk,
        port,
    };
    let r = match p.mode {
        Mode::None => Ok(()),
        Mode::Verify => verify(&mut io, &p),
        Mode::ReadOnly => read_only(&mut io, &p),
        Mode::Bench => bench(&mut io, &p),
        Mode::Hostile => hostile(&mut io, &p),
    };
    match r {
        Ok(()) if p.mode == Mode::None => {}
        Ok(()) => println!("blk: all ok"),
        Err(what) => println!("blk: FAIL {what}"),
    }
    if p.close {
        close(&dev, blk, port);
    }
}

/// `blkclose`: the XenBus close, then revoking every grant.
fn close(dev: &Device, blk: Blk, port: u32) {
    let mut store = XsStore::new(CLOSE_NS);
    store.port = Some(port);
    let closed = xb::close(&mut store, dev, blk);
    match closed.result {
        Ok(()) => println!("blk: vbd closed, grants revoked"),
        Err(e) => println!("blk: close FAIL {e}"),
    }
    // A ring page the backend still maps stays ours and mapped (kept on purpose).
    let _ = events::close(port);
}

// ---------------------------------------------------------------------------------------
// Doing I/O.

struct Io<'a> {
    blk: &'a mut Blk,
    port: u32,
}

impl Io<'_> {
    /// One request, waited for.
    fn run(&mut self, req: Request<'_, DPage>) -> Result<Result<(), IoError>, String> {
        let port = self.port;
        self.blk
            .run(0, req, || sched::wait_port(port, IO_NS), |_| {})
            .map_err(|e| alloc::format!("{e:?}"))
    }

    /// The next completion, waiting for it.
    fn next(&mut self) -> Result<Completion, String> {
        loop {
            if let Some(c) = self.blk.poll().map_err(|e| alloc::format!("{e:?}"))? {
                return Ok(c);
            }
            if self.blk.final_check() {
                continue;
            }
            if !sched::wait_port(self.port, IO_NS) {
                return Err("timed out waiting for the backend".into());
            }
        }
    }

    fn pages(&mut self, n: usize) -> Result<Vec<DPage>, String> {
        let mut v = Vec::with_capacity(n);
        for _ in 0..n {
            v.push(self.blk.host_mut().alloc_page().ok_or("out of frames")?);
        }
        Ok(v)
    }

    fn free(&mut self, pages: Vec<DPage>) {
        for p in pages {
            self.blk.host_mut().free_page(p);
        }
    }

    /// Fills `sectors` sectors of `pages` (8 per page) with the pattern for `sector`.
    fn fill(&mut self, pages: &[DPage], seed: u64, sector: u64, sectors: u64) {
        let mut buf = [0u8; 4096];
        for (i, &p) in pages.iter().enumerate() {
            let first = sector + 8 * i as u64;
            let n = (sectors - 8 * i as u64).min(8) as usize;
            blkfront::fill_pattern(seed, first, &mut buf[..n * 512]);
            self.blk.host_mut().write(p, 0, &buf[..n * 512]);
        }
    }

    fn check(&mut self, pages: &[DPage], seed: u64, sector: u64, sectors: u64) -> Option<u64> {
        let mut buf = [0u8; 4096];
        for (i, &p) in pages.iter().enumerate() {
            let first = sector + 8 * i as u64;
            let n = (sectors - 8 * i as u64).min(8) as usize;
            self.blk.host_mut().read(p, 0, &mut buf[..n * 512]);
            if let Some(off) = blkfront::check_pattern(seed, first, &buf[..n * 512]) {
                return Some(first * 512 + off as u64);
            }
        }
        None
    }
}

/// Segments covering `sectors` sectors from the start of `pages`.
fn segs(pages: &[DPage], sectors: u64) -> Vec<Seg<DPage>> {
    pages
        .iter()
        .enumerate()
        .map(|(i, &p)| {
            let n = (sectors - 8 * i as u64).min(8) as u8;
            Seg {
                page: p,
                first_sect: 0,
                last_sect: n - 1,
            }
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// Exercisers.

fn verify(io: &mut Io, p: &Params) -> Result<(), String> {
    use alloc::format;
    let d = *io.blk.disk();
    let block = u64::from(d.sector_size) / SECTOR_SIZE;
    let align = |s: u64| s / block * block;
    let base = align(p.sector);
    let big = 64u64 * 8;
    // (sector, sectors): one page, 64 pages in one request (indirect if the backend
    // offers it, else as many direct-sized requests), the middle, the last block.
    let mut places = Vec::new();
    if base + 8 <= d.sectors {
        places.push((base, 8u64));
    }
    if base + 8 + big <= d.sectors / 2 {
        places.push((base + 8, big));
    }
    let mid = align(d.sectors / 2);
    let last = d.sectors.saturating_sub(block);
    if mid >= base + 8 + big && mid + 8 <= last {
        places.push((mid, 8));
    }
    if d.sectors >= block && last >= base + 8 {
        places.push((last, block));
    }
    if places.is_empty() {
        return Err(format!(
            "disk of {} sectors too small from sector {base}",
            d.sectors
        ));
    }
    let max_segs = d.max_segments() as u64;
    for &(sector, n) in &places {
        let pages = io.pages(n.div_ceil(8) as usize)?;
        io.fill(&pages, p.seed, sector, n);
        for (k, chunk) in pages.chunks(max_segs as usize).enumerate() {
            let s = sector + k as u64 * max_segs * 8;
            let left = n - k as u64 * max_segs * 8;
            let r = io.run(Request::Write {
                sector: s,
                segs: &segs(chunk, left),
            })?;
            if r != Ok(()) {
                return Err(format!("write {s}+{left}: {r:?}"));
            }
        }
        io.free(pages);
        println!("blk: write {sector}+{n} ok");
    }
    if d.flush || d.barrier {
        match io.run(Request::Flush)? {
            Ok(()) => println!("blk: flush ok"),
            Err(e) => return Err(format!("flush: {e:?}")),
        }
    } else {
        println!("blk: flush not offered");
    }
    for &(sector, n) in &places {
        let pages = io.pages(n.div_ceil(8) as usize)?;
        for (k, chunk) in pages.chunks(max_segs as usize).enumerate() {
            let s = sector + k as u64 * max_segs * 8;
            let left = n - k as u64 * max_segs * 8;
            let r = io.run(Request::Read {
                sector: s,
                segs: &segs(chunk, left),
            })?;
            if r != Ok(()) {
                return Err(format!("read {s}+{left}: {r:?}"));
            }
        }
        let bad = io.check(&pages, p.seed, sector, n);
        io.free(pages);
        if let Some(at) = bad {
            return Err(format!("read {sector}+{n}: mismatch at byte {at}"));
        }
        println!("blk: read {sector}+{n} ok");
    }
    // Discard a range none of the patterns live in.
    let ds = (base + 8 + big).div_ceil(block) * block;
    let dn = 8u64.max(block);
    if d.discard && ds + dn <= mid {
        match io.run(Request::Discard {
            sector: ds,
            nr_sectors: dn,
            secure: false,
        })? {
            Ok(()) => println!("blk: discard {ds}+{dn} ok"),
            Err(IoError::NotSupported) => println!("blk: discard not supported"),
            Err(e) => return Err(format!("discard: {e:?}")),
        }
    } else {
        println!("blk: discard not offered");
    }
    Ok(())
}

fn read_only(io: &mut Io, p: &Params) -> Result<(), String> {
    use alloc::format;
    let d = *io.blk.disk();
    println!("blk: read-only flag {}", d.read_only());
    let block = u64::from(d.sector_size) / SECTOR_SIZE;
    let sector = p.sector / block * block;
    let pages = io.pages(1)?;
    let n = 8u64;
    let r = io.run(Request::Read {
        sector,
        segs: &segs(&pages, n),
    })?;
    if r != Ok(()) {
        return Err(format!("read {sector}: {r:?}"));
    }
    println!("blk: read {sector}+{n} ok");
    io.fill(&pages, p.seed, sector, n);
    match io.run(Request::Write {
        sector,
        segs: &segs(&pages, n),
    })? {
        Err(IoError::Error) => println!("blk: write {sector}+{n} refused ok"),
        r => return Err(format!("write to a read-only disk: {r:?}")),
    }
    // Still usable afterwards.
    let r = io.run(Request::Read {
        sector,
        segs: &segs(&pages, n),
    })?;
    io.free(pages);
    if r != Ok(()) {
        return Err(format!("read after the refused write: {r:?}"));
    }
    println!("blk: read after refusal ok");
    Ok(())
}

fn hostile(io: &mut Io, _p: &Params) -> Result<(), String> {
    use alloc::format;
    let d = *io.blk.disk();
    let backend = io.blk.backend();
    let pages = io.pages(2)?;
    let frame = io.blk.host_mut().frame(pages[0]);
    let rw = io
        .blk
        .host_mut()
        .grant(backend, frame, false)
        .map_err(|e| format!("grant: {e:?}"))?;
    let frame_ro = io.blk.host_mut().frame(pages[1]);
    let ro = io
        .blk
        .host_mut()
        .grant(backend, frame_ro, true)
        .map_err(|e| format!("grant: {e:?}"))?;
    let seg = |gref: GrantRef, first: u8, last: u8| BlkifRequestSegment {
        gref,
        first_sect: first,
        last_sect: last,
        pad: [0; 2],
    };
    let read = |s: BlkifRequestSegment, nr: u8, sector: u64| {
        let mut r = BlkifRequest {
            operation: BLKIF_OP_READ,
            nr_segments: nr,
            handle: 0,
            sector_number: sector,
            ..BlkifRequest::default()
        };
        r.seg[0] = s;
        r
    };
    let never_granted = GrantRef::new(8 * 512 - 1);
    let mut unknown = read(seg(rw, 0, 7), 1, 0);
    unknown.operation = 0xee;
    let cases: [(&str, BlkifRequest); 6] = [
        ("bad grant ref", read(seg(never_granted, 0, 7), 1, 0)),
        ("nr_segments 200 direct", read(seg(rw, 0, 7), 200, 0)),
        ("first_sect > last_sect", read(seg(rw, 5, 2), 1, 0)),
        ("sector past the end", read(seg(rw, 0, 7), 1, d.sectors)),
        ("unknown operation", unknown),
        ("read into a read-only grant", read(seg(ro, 0, 7), 1, 0)),
    ];
    // The raw path sends what it is given: put the device's handle in.
    let handle = io.blk.handle();
    let mut failed = None;
    for (i, (what, mut req)) in cases.into_iter().enumerate() {
        req.handle = handle;
        io.blk
            .submit_raw(i as u64, req)
            .map_err(|e| format!("{what}: {e:?}"))?;
        io.blk.kick();
        let c = io.next()?;
        let verdict = match c.result {
            Ok(()) => {
                failed.get_or_insert(what);
                "ACCEPTED"
            }
            Err(IoError::Error) => "refused (BLKIF_RSP_ERROR)",
            Err(IoError::NotSupported) => "refused (BLKIF_RSP_EOPNOTSUPP)",
            Err(IoError::Status(_)) => "refused (other status)",
        };
        println!("blk: hostile {what}: {verdict}");
    }
    for g in [rw, ro] {
        if io.blk.host_mut().end_access(g).is_err() {
            println!("blk: hostile: backend still maps grant {}", g.raw());
        }
    }
    // A good request must still work.
    let good = io.pages(1)?;
    let r = io.run(Request::Read {
        sector: 0,
        segs: &[Seg::page(good[0])],
    })?;
    io.free(good);
    match r {
        Ok(()) => println!("blk: hostile good request after them: ok"),
        Err(e) => return Err(format!("good request after the bad ones: {e:?}")),
    }
    if let Some(what) = failed {
        return Err(format!("backend accepted '{what}'"));
    }
    // Last, a ring index out of range: a req_prod far beyond what the ring holds. The
    // backend must not read past the ring; it gives up on this device (Linux's blkback
    // reports "Frontend provided bogus ring requests" and closes it).
    let size = io.blk.ring_size();
    let be = backend_dir(io.blk.handle())?;
    io.blk
        .publish_bogus_req_prod(size.saturating_mul(4).saturating_add(3));
    let deadline = time::now_ns().saturating_add(20_000_000_000);
    loop {
        let state = read_node(&format!("{be}/state"));
        if matches!(state.as_deref(), Some("5") | Some("6")) {
            println!("blk: hostile ring index out of range: backend closed the device ok");
            return Ok(());
        }
        if time::now_ns() >= deadline {
            return Err(format!(
                "ring index out of range: backend state {state:?}, expected Closing"
            ));
        }
        sched::yield_now();
    }
}

/// The backend directory of our device `devid`.
fn backend_dir(devid: u16) -> Result<String, String> {
    read_node(&alloc::format!("device/vbd/{devid}/backend"))
        .ok_or_else(|| alloc::format!("device/vbd/{devid}/backend unreadable"))
}

/// A xenstore node's value, None if absent or unreadable.
fn read_node(path: &str) -> Option<String> {
    xenbus::with(|x| {
        let mut buf = [0u8; 256];
        Ok(x.read_str(TxId::NONE, path, &mut buf)
            .ok()
            .map(String::from))
    })
    .ok()
    .flatten()
}

/// Benchmark rows.
fn bench(io: &mut Io, p: &Params) -> Result<(), String> {
    let d = *io.blk.disk();
    let block = u64::from(d.sector_size) / SECTOR_SIZE;
    let base = p.sector / block * block;
    let seq_max = d.max_segments().min(256) as usize;
    // One 1 MiB buffer shared by all requests in flight (the data is not looked at).
    let buf = io.pages(256)?;
    // The rows in the order dom0's `disk bench` prints them.
    for (pattern, op, qd) in [
        ("seq1m", false, 1usize),
        ("seq1m", false, 32),
        ("seq1m", true, 1),
        ("seq1m", true, 32),
        ("rand4k", false, 1),
        ("rand4k", false, 32),
        ("rand4k", true, 1),
        ("rand4k", true, 32),
    ] {
        if op && d.read_only() {
            continue;
        }
        let seq = pattern == "seq1m";
        let unit = if seq { 2048u64 } else { 8u64 };
        let span = d.sectors.saturating_sub(base) / unit;
        if span == 0 {
            return Err(alloc::format!("disk too small for {pattern}"));
        }
        let ops = if seq { p.seq_ops } else { p.rand_ops };
        let mut rng = p.seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        // Requests: a 1 MiB op is split into requests of at most `seq_max` pages.
        let mut reqs: Vec<(u64, usize)> = Vec::new();
        for i in 0..ops {
            let k = if seq {
                i % span
            } else {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                rng % span
            };
            let sector = base + k * unit;
            let pages = (unit / 8) as usize;
            let mut done = 0;
            while done < pages {
                let n = (pages - done).min(seq_max);
                reqs.push((sector + done as u64 * 8, n));
                done += n;
            }
        }
        let t0 = time::now_ns();
        run_stream(io, &buf, &reqs, op, qd)?;
        let ns = time::now_ns().saturating_sub(t0).max(1);
        println!(
            "BENCH blk {} {pattern} {} qd{qd} {} {ns} {ops}",
            // Copyless (each request's pages granted), or through persistent grants.
            if d.persistent { "domu-pgnt" } else { "domu" },
            if op { "write" } else { "read" },
            ops * unit * SECTOR_SIZE
        );
    }
    io.free(buf);
    println!("blk: bench done");
    Ok(())
}

/// Runs `reqs` keeping up to `qd` in flight, one kick per batch.
fn run_stream(
    io: &mut Io,
    buf: &[DPage],
    reqs: &[(u64, usize)],
    write: bool,
    qd: usize,
) -> Result<(), String> {
    let mut next = 0;
    let mut inflight = 0usize;
    let mut done = 0;
    // One segment list for every request (whole pages), as dom0's `disk bench` keeps one.
    let mut s: Vec<Seg<DPage>> = Vec::with_capacity(buf.len());
    while done < reqs.len() {
        while next < reqs.len() && inflight < qd {
            let (sector, n) = reqs[next];
            s.clear();
            s.extend(buf.iter().take(n).map(|&p| Seg::page(p)));
            let req = if write {
                Request::Write { sector, segs: &s }
            } else {
                Request::Read { sector, segs: &s }
            };
            match io.blk.submit(next as u64, req) {
                Ok(()) => {
                    next += 1;
                    inflight += 1;
                }
                Err(Error::Busy) if inflight > 0 => break,
                Err(e) => return Err(alloc::format!("submit: {e:?}")),
            }
        }
        io.blk.kick();
        let c = io.next()?;
        if let Err(e) = c.result {
            return Err(alloc::format!("request {}: {e:?}", c.tag));
        }
        inflight -= 1;
        done += 1;
        // Take everything else that is ready before refilling.
        while let Some(c) = io.blk.poll().map_err(|e| alloc::format!("{e:?}"))? {
            if let Err(e) = c.result {
                return Err(alloc::format!("request {}: {e:?}", c.tag));
            }
            inflight -= 1;
            done += 1;
        }
    }
    Ok(())
}
