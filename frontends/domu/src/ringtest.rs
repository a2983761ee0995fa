//! `ringtest` mode of the domU kernel (`extra="ringtest [count=N] [pingpong=K] [rtt=K]"`):
//! the frontend of [`ring::ringtest`], set up the way a xenbus split-driver frontend sets
//! up its ring (Linux's `xenbus_grant_ring` + `xenbus_alloc_evtchn`):
//!
//! * the grant table: `GNTTABOP_setup_table` for ourselves, its frame mapped in the map
//!   area, and a v1 entry `GTF_permit_access` for dom0 on the ring page (reference 8, the
//!   first one after `GNTTAB_NR_RESERVED_ENTRIES`; this kernel has no heap, so the `grant`
//!   crate's allocator is not used);
//! * an unbound event channel for dom0 (`EVTCHNOP_alloc_unbound`);
//! * `data/ring-ref`, `data/port` and the counts in our xenstore home, then a wait for
//!   dom0's `data/connected`;
//! * the three phases of the protocol (streamed requests notifying only when the ring asks,
//!   ping-pong, event round trips) with every response checked against its request.
//!
//! Events stay masked as in the rest of this kernel: every wait is `SCHEDOP_poll` on the
//! channel, and a pending bit is cleared before the ring is looked at again, so a
//! notification is never lost and a stale one only costs one more look.
#![allow(unsafe_code)] // the shared ring page is accessed with volatile loads and stores

use core::fmt::Write as _;
use core::sync::atomic::{compiler_fence, fence, Ordering};

use domu::Buf;
use pv_guest::arch::gnttab::{self, entry_v1};
use pv_guest::arch::mmu::{self, Mapping};
use pv_guest::mm::Pool;
use pv_guest::xen_abi::grant_table::{GNTST_OKAY, GNTTAB_NR_RESERVED_ENTRIES, GTF_PERMIT_ACCESS};
use pv_guest::xen_abi::{DomId, PAGE_SIZE};
use pv_guest::xenbus::{self, TxId, XsError};
use pv_guest::{events, sched, start, time, StartInfo};
use ring::ringtest::{
    checksum, request, Digest, Request, Response, DEFAULT_COUNT, DEFAULT_PINGPONG, DEFAULT_RTT,
    NODE_CONNECTED, NODE_COUNT, NODE_PINGPONG, NODE_PORT, NODE_RING_REF, NODE_RTT, OP_BULK,
    OP_PING, OP_RTT, RTT_PING_OFFSET, RTT_PONG_OFFSET,
};
use ring::{Fence, FrontRing, RingError, RingMemory};

macro_rules! println {
    ($($arg:tt)*) => { pv_guest::ring_println!($($arg)*) };
}

/// The backend domain.
const BACKEND: u16 = 0;
/// The grant reference of the ring page.
const RING_REF: u32 = GNTTAB_NR_RESERVED_ENTRIES;
/// How long dom0 may take to connect (`ringtest DOMID` is typed after `xl create`).
const CONNECT_NS: u64 = 300_000_000_000;
/// How long one wait for the backend may take.
const EVENT_NS: u64 = 10_000_000_000;

/// What the command line asks for.
#[derive(Clone, Copy, Debug)]
struct Params {
    count: u32,
    pingpong: u32,
    rtt: u32,
}

fn params(cmdline: &str) -> Option<Params> {
    let mut on = false;
    let mut p = Params {
        count: DEFAULT_COUNT,
        pingpong: DEFAULT_PINGPONG,
        rtt: DEFAULT_RTT,
    };
    for tok in cmdline.split_ascii_whitespace() {
        let (key, value) = match tok.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (tok, None),
        };
        let num = value.and_then(|v| v.parse().ok());
        match key {
            "ringtest" => on = !matches!(value, Some("0" | "no" | "off")),
            "count" => p.count = num.unwrap_or(p.count),
            "pingpong" => p.pingpong = num.unwrap_or(p.pingpong),
            "rtt" => p.rtt = num.unwrap_or(p.rtt),
            _ => {}
        }
    }
    on.then_some(p)
}

/// Runs the ring test if the command line asks for it (then returns, the kernel carries on
/// with its heartbeat loop).
pub fn maybe_run(si: &StartInfo) {
    let Some(p) = params(start::cmdline(si)) else {
        return;
    };
    match run(si, p) {
        Ok(()) => println!("ringtest: OK"),
        Err(e) => println!("ringtest: FAILED: {e}"),
    }
}

/// Why the test failed.
enum Error {
    Setup(&'static str),
    Store(&'static str, XsError),
    Ring(RingError),
    Timeout(&'static str, u64),
    Mismatch {
        seq: u64,
        got_seq: u64,
        got: u64,
        want: u64,
    },
}

impl core::fmt::Display for Error {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Error::Setup(what) => write!(f, "{what}"),
            Error::Store(what, e) => write!(f, "xenstore {what}: {e}"),
            Error::Ring(e) => write!(f, "ring: {e:?}"),
            Error::Timeout(what, n) => write!(f, "timed out in {what} after {n}"),
            Error::Mismatch {
                seq,
                got_seq,
                got,
                want,
            } => write!(
                f,
                "response {seq}: seq {got_seq} checksum {got:#x}, expected {want:#x}"
            ),
        }
    }
}

impl From<RingError> for Error {
    fn from(e: RingError) -> Self {
        Error::Ring(e)
    }
}

/// The ring page, mapped read-write in the map area.
struct Page(Mapping);

impl Page {
    fn ptr(&self, offset: usize) -> *mut u8 {
        // The ring only passes offsets inside the page (RingMemory's contract); mask anyway.
        (self.0.va() + (offset as u64 & 0xfff)) as *mut u8
    }
}

impl RingMemory for Page {
    fn len(&self) -> usize {
        PAGE_SIZE
    }
    fn load_u32(&self, offset: usize) -> u32 {
        // SAFETY: the slot maps our ring frame (the Mapping exists); 4-byte aligned and
        // inside the page (masked); dom0 writes it concurrently, hence volatile.
        unsafe { core::ptr::read_volatile(self.ptr(offset & !3) as *const u32) }
    }
    fn store_u32(&self, offset: usize, value: u32) {
        // SAFETY: as `load_u32`, mapped writable.
        unsafe { core::ptr::write_volatile(self.ptr(offset & !3) as *mut u32, value) }
    }
    fn read_bytes(&self, offset: usize, dst: &mut [u8]) {
        copy_in(self.0.va(), offset, dst);
    }
    fn write_bytes(&self, offset: usize, src: &[u8]) {
        copy_out(self.0.va(), offset, src);
    }
    fn fence(&self, f: Fence) {
        match f {
            // x86-TSO keeps loads after loads and stores after stores: only the compiler
            // must not reorder.
            Fence::Read => compiler_fence(Ordering::Acquire),
            Fence::Write => compiler_fence(Ordering::Release),
            // Store→load ordering needs `mfence` (a SeqCst fence on x86_64).
            Fence::Full => fence(Ordering::SeqCst),
        }
    }
}

/// Volatile copy out of the page at `va` (whole words when aligned; bytes otherwise).
pub(crate) fn copy_in(va: u64, offset: usize, dst: &mut [u8]) {
    let end = offset.saturating_add(dst.len());
    if end > PAGE_SIZE {
        return;
    }
    if offset.is_multiple_of(8) && dst.len().is_multiple_of(8) {
        for (i, chunk) in dst.chunks_exact_mut(8).enumerate() {
            // SAFETY: inside the mapped page (checked), 8-byte aligned; volatile because the
            // peer may write it.
            let w =
                unsafe { core::ptr::read_volatile((va + (offset + 8 * i) as u64) as *const u64) };
            chunk.copy_from_slice(&w.to_le_bytes());
        }
    } else {
        for (i, b) in dst.iter_mut().enumerate() {
            // SAFETY: inside the mapped page (checked).
            *b = unsafe { core::ptr::read_volatile((va + (offset + i) as u64) as *const u8) };
        }
    }
}

/// Volatile copy into the page at `va` (whole words when aligned; bytes otherwise).
pub(crate) fn copy_out(va: u64, offset: usize, src: &[u8]) {
    let end = offset.saturating_add(src.len());
    if end > PAGE_SIZE {
        return;
    }
    if offset.is_multiple_of(8) && src.len().is_multiple_of(8) {
        for (i, chunk) in src.chunks_exact(8).enumerate() {
            let mut w = [0u8; 8];
            w.copy_from_slice(chunk);
            // SAFETY: inside the mapped, writable page (checked), 8-byte aligned.
            unsafe {
                core::ptr::write_volatile(
                    (va + (offset + 8 * i) as u64) as *mut u64,
                    u64::from_le_bytes(w),
                )
            };
        }
    } else {
        for (i, &b) in src.iter().enumerate() {
            // SAFETY: inside the mapped, writable page (checked).
            unsafe { core::ptr::write_volatile((va + (offset + i) as u64) as *mut u8, b) };
        }
    }
}

fn store_write(node: &'static str, value: u64) -> Result<(), Error> {
    let mut v = Buf::<24>::new();
    let _ = write!(v, "{value}");
    xenbus::with(|xb| xb.write(TxId::NONE, node, v.as_bytes())).map_err(|e| Error::Store(node, e))
}

/// The grant table's first frame, mapped, with our ring page granted to dom0.
fn grant_ring(ring_mfn: u64) -> Result<Mapping, Error> {
    let mut frames = [0u64; 1];
    match gnttab::setup_table(DomId::SELF.raw(), &mut frames) {
        Ok(GNTST_OKAY) => {}
        Ok(_) | Err(_) => return Err(Error::Setup("GNTTABOP_setup_table")),
    }
    let table = mmu::map(frames[0], true).map_err(|_| Error::Setup("mapping the grant table"))?;
    let frame = u32::try_from(ring_mfn).map_err(|_| Error::Setup("ring frame above 2^32"))?;
    // One 64-bit store: frame, domid and flags become visible together.
    table
        .write(
            RING_REF as usize,
            entry_v1(GTF_PERMIT_ACCESS, BACKEND, frame),
        )
        .map_err(|_| Error::Setup("writing the grant entry"))?;
    Ok(table)
}

fn run(si: &StartInfo, p: Params) -> Result<(), Error> {
    if !mmu::is_ready() {
        mmu::init(si).map_err(|_| Error::Setup("memory manager"))?;
    }
    mmu::map_area_init().map_err(|_| Error::Setup("map area"))?;
    let frame = mmu::alloc_frame(Pool::Unmapped).map_err(|_| Error::Setup("no free frame"))?;
    let page = mmu::map(frame.mfn(), true).map_err(|_| Error::Setup("mapping the ring page"))?;
    let page = Page(page);
    copy_out(page.0.va(), 0, &[0u8; PAGE_SIZE]);
    let mut front: FrontRing<Request, Response, _> = FrontRing::init(&page)?;
    // The table and the ring stay mapped and granted: dom0 unmaps when it is done, and
    // this kernel never reuses the frame.
    let _table = grant_ring(frame.mfn())?;
    let port = events::alloc_unbound(DomId::new(BACKEND))
        .map_err(|_| Error::Setup("EVTCHNOP_alloc_unbound"))?;
    store_write(NODE_CONNECTED, 0)?;
    store_write(NODE_COUNT, u64::from(p.count))?;
    store_write(NODE_PINGPONG, u64::from(p.pingpong))?;
    store_write(NODE_RTT, u64::from(p.rtt))?;
    store_write(NODE_PORT, u64::from(port))?;
    store_write(NODE_RING_REF, u64::from(RING_REF))?;
    println!(
        "ringtest: ring-ref {RING_REF} port {port} ({} slots); waiting for dom0",
        front.size()
    );

    let deadline = time::now_ns().saturating_add(CONNECT_NS);
    loop {
        let mut buf = [0u8; 8];
        let v = xenbus::with(|xb| Ok(xb.read_str(TxId::NONE, NODE_CONNECTED, &mut buf) == Ok("1")));
        if v == Ok(true) {
            break;
        }
        if time::now_ns() >= deadline {
            return Err(Error::Timeout("waiting for dom0", 0));
        }
        sched::wait_port(port, 20_000_000);
    }
    println!("ringtest: connected");

    // Phase 1: stream.
    let t0 = time::now_ns();
    let mut digest = Digest::default();
    let mut sent = 0u64;
    let mut received = 0u64;
    let mut notifies = 0u64;
    let mut sleeps = 0u64;
    let count = u64::from(p.count);
    while received < count {
        let mut pushed = false;
        while sent < count && !front.is_full() {
            front.push_request(&request(sent, OP_BULK))?;
            sent += 1;
            pushed = true;
        }
        if pushed && front.push_requests_and_check_notify() {
            let _ = events::send(port);
            notifies += 1;
        }
        let mut got = false;
        while let Some(rsp) = front.get_response()? {
            check(&rsp, received, OP_BULK)?;
            digest.add(rsp.checksum);
            received += 1;
            got = true;
        }
        if got || (sent < count && !front.is_full()) || front.final_check_for_responses() {
            continue;
        }
        sleeps += 1;
        if !sched::wait_port(port, EVENT_NS) {
            return Err(Error::Timeout("streaming", received));
        }
    }
    let ns = time::now_ns().saturating_sub(t0).max(1);
    println!(
        "ringtest: {count} messages, checksum {:#018x}, {notifies} notifications",
        digest.0
    );
    println!(
        "ringtest: frontend {} ms ({} msg/s), slept {sleeps} times",
        ns / 1_000_000,
        count * 1_000_000_000 / ns
    );

    // Phase 2: ping-pong, then the OP_RTT request that starts phase 3.
    let mut seq = count;
    let t1 = time::now_ns();
    for _ in 0..p.pingpong {
        exchange(&mut front, port, seq, OP_PING)?;
        seq += 1;
    }
    let ns = time::now_ns().saturating_sub(t1).max(1);
    if p.pingpong > 0 {
        println!(
            "ringtest: ping-pong {} messages, {} msg/s",
            p.pingpong,
            u64::from(p.pingpong) * 1_000_000_000 / ns
        );
    }
    exchange(&mut front, port, seq, OP_RTT)?;

    // Phase 3: event round trips, numbered through the counters past the slots.
    let t2 = time::now_ns();
    for i in 1..=p.rtt {
        page.store_u32(RTT_PING_OFFSET, i);
        page.fence(Fence::Full);
        let _ = events::send(port);
        while page.load_u32(RTT_PONG_OFFSET) != i {
            if !sched::wait_port(port, EVENT_NS) {
                return Err(Error::Timeout("event round trips", u64::from(i)));
            }
        }
    }
    if p.rtt > 0 {
        let ns = time::now_ns().saturating_sub(t2) / u64::from(p.rtt);
        println!(
            "ringtest: event channel round trip {ns} ns ({} rounds)",
            p.rtt
        );
    }
    Ok(())
}

/// Checks a response against the request with sequence number `seq`.
fn check(rsp: &Response, seq: u64, op: u32) -> Result<(), Error> {
    let want = checksum(&request(seq, op));
    if rsp.seq != seq || rsp.checksum != want {
        return Err(Error::Mismatch {
            seq,
            got_seq: rsp.seq,
            got: rsp.checksum,
            want,
        });
    }
    Ok(())
}

/// One request, then wait for its response.
fn exchange(
    front: &mut FrontRing<Request, Response, &Page>,
    port: u32,
    seq: u64,
    op: u32,
) -> Result<(), Error> {
    front.push_request(&request(seq, op))?;
    if front.push_requests_and_check_notify() {
        let _ = events::send(port);
    }
    loop {
        if let Some(rsp) = front.get_response()? {
            return check(&rsp, seq, op);
        }
        if front.final_check_for_responses() {
            continue;
        }
        if !sched::wait_port(port, EVENT_NS) {
            return Err(Error::Timeout("ping-pong", seq));
        }
    }
}
