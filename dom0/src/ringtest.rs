//! `ringtest DOMID`: dom0 as the backend of [`ring::ringtest`], connected the way a xenbus
//! backend connects to its frontend (Linux's `xenbus_map_ring_valloc` +
//! `bind_interdomain_evtchn`):
//!
//! * read `data/ring-ref` and `data/port` (and the counts) from the domU's xenstore home,
//!   serving the store meanwhile (the domU is writing them through its ring to us);
//! * map the granted ring page with `GNTTABOP_map_grant_ref` (`GNTMAP_host_map`) into a
//!   map-area slot, bind the domU's unbound port with `EVTCHNOP_bind_interdomain`, and
//!   write `data/connected`;
//! * answer every request with [`ring::ringtest::respond`] through a [`BackRing`],
//!   notifying only when the ring says so, then bounce the event round trips;
//! * print the results (and `BENCH` lines for `cargo xtask bench`), unmap the grant and
//!   close the channel.
//!
//! Our port stays masked: waits are `SCHEDOP_poll` on it, so the upcall never consumes its
//! pending bit and a notification cannot be lost between a look at the ring and the sleep.
#![allow(unsafe_code)] // volatile access to the grant-mapped ring page

extern crate alloc;

use alloc::string::String;
use core::sync::atomic::{compiler_fence, fence, Ordering};

use dom0::{Host, Outcome};
use pv_guest::arch::gnttab;
use pv_guest::arch::mmu;
use pv_guest::xen_abi::grant_table::{
    GnttabMapGrantRef, GnttabUnmapGrantRef, GNTMAP_HOST_MAP, GNTST_OKAY,
};
use pv_guest::xen_abi::{DomId, PAGE_SIZE};
use pv_guest::{events, sched, shared, time};
use ring::ringtest::{
    respond, Digest, Request, Response, NODE_CONNECTED, NODE_COUNT, NODE_PINGPONG, NODE_PORT,
    NODE_RING_REF, NODE_RTT, OP_BULK, OP_PING, OP_RTT, RTT_PING_OFFSET, RTT_PONG_OFFSET,
};
use ring::{BackRing, Fence, RingError, RingIdx, RingMemory};
use xenstored::DOM0;

/// How long the domU may take to publish its ring (it may still be booting).
const PUBLISH_NS: u64 = 120_000_000_000;
/// How long one wait for the frontend may take.
const EVENT_NS: u64 = 10_000_000_000;

/// Handles `ringtest ...`; `None` if `line` is another command.
pub fn command(line: &str, h: &mut impl Host) -> Option<Outcome> {
    let mut words = line.split_ascii_whitespace();
    if words.next() != Some("ringtest") {
        return None;
    }
    let domid = match (words.next().map(str::parse::<u16>), words.next()) {
        (Some(Ok(d)), None) if d != 0 && d < DomId::FIRST_RESERVED.raw() => d,
        _ => {
            let _ = writeln!(
                h,
                "usage: ringtest DOMID  (a domU started with extra=\"ringtest\")"
            );
            return Some(Outcome::Continue);
        }
    };
    if let Err(e) = run(domid, h) {
        let _ = writeln!(h, "ringtest: FAILED: {e}");
    }
    Some(Outcome::Continue)
}

/// Why the backend gave up.
enum Error {
    Store(&'static str),
    Setup(&'static str, i64),
    Ring(RingError),
    Timeout(&'static str, u64),
    Protocol { served: u64, seq: u64, op: u32 },
}

impl core::fmt::Display for Error {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Error::Store(node) => write!(f, "no usable {node} in the domU's xenstore home"),
            Error::Setup(what, code) => write!(f, "{what} failed ({code})"),
            Error::Ring(e) => write!(f, "ring: {e:?}"),
            Error::Timeout(what, n) => write!(f, "timed out in {what} after {n}"),
            Error::Protocol { served, seq, op } => {
                write!(f, "request {served}: unexpected seq {seq} op {op}")
            }
        }
    }
}

impl From<RingError> for Error {
    fn from(e: RingError) -> Self {
        Error::Ring(e)
    }
}

/// The domU's ring page, grant-mapped at a map-area slot.
struct Granted {
    slot: usize,
    handle: u32,
}

impl Granted {
    fn map(domid: u16, gref: u32) -> Result<Granted, Error> {
        let slot = mmu::reserve_slots(1).map_err(|_| Error::Setup("reserving a map slot", 0))?;
        let mut op = [GnttabMapGrantRef {
            host_addr: mmu::slot_va(slot),
            flags: GNTMAP_HOST_MAP,
            gref,
            dom: domid,
            ..Default::default()
        }];
        let r = gnttab::map_grant_ref(&mut op);
        match r {
            Ok(_) if op[0].status == GNTST_OKAY => Ok(Granted {
                slot,
                handle: op[0].handle,
            }),
            Ok(_) => {
                mmu::release_slots(slot, 1);
                Err(Error::Setup(
                    "GNTTABOP_map_grant_ref",
                    i64::from(op[0].status),
                ))
            }
            Err(e) => {
                mmu::release_slots(slot, 1);
                Err(Error::Setup("GNTTABOP_map_grant_ref", e.raw()))
            }
        }
    }

    fn va(&self) -> u64 {
        mmu::slot_va(self.slot)
    }

    fn ptr(&self, offset: usize) -> u64 {
        // The ring only passes offsets inside the page (RingMemory's contract); mask anyway.
        self.va() + (offset as u64 & 0xfff)
    }

    /// `GNTTABOP_unmap_grant_ref`; the slot is freed only if the mapping went.
    fn unmap(self) -> Result<(), Error> {
        let mut op = [GnttabUnmapGrantRef {
            host_addr: self.va(),
            handle: self.handle,
            ..Default::default()
        }];
        match gnttab::unmap_grant_ref(&mut op) {
            Ok(_) if op[0].status == GNTST_OKAY => {
                mmu::release_slots(self.slot, 1);
                Ok(())
            }
            Ok(_) => Err(Error::Setup(
                "GNTTABOP_unmap_grant_ref",
                i64::from(op[0].status),
            )),
            Err(e) => Err(Error::Setup("GNTTABOP_unmap_grant_ref", e.raw())),
        }
    }
}

impl RingMemory for Granted {
    fn len(&self) -> usize {
        PAGE_SIZE
    }
    fn load_u32(&self, offset: usize) -> u32 {
        // SAFETY: the slot holds the grant mapping while `self` exists; aligned, inside the
        // page (masked); the domU writes it concurrently, hence volatile, no reference.
        unsafe { core::ptr::read_volatile(self.ptr(offset & !3) as *const u32) }
    }
    fn store_u32(&self, offset: usize, value: u32) {
        // SAFETY: as `load_u32`; the grant is mapped writable (no GNTMAP_readonly).
        unsafe { core::ptr::write_volatile(self.ptr(offset & !3) as *mut u32, value) }
    }
    fn read_bytes(&self, offset: usize, dst: &mut [u8]) {
        if offset.saturating_add(dst.len()) > PAGE_SIZE {
            return;
        }
        if offset.is_multiple_of(8) && dst.len().is_multiple_of(8) {
            for (i, c) in dst.chunks_exact_mut(8).enumerate() {
                // SAFETY: inside the mapped page (checked above), 8-byte aligned.
                let w = unsafe { core::ptr::read_volatile(self.ptr(offset + 8 * i) as *const u64) };
                c.copy_from_slice(&w.to_le_bytes());
            }
        } else {
            for (i, b) in dst.iter_mut().enumerate() {
                // SAFETY: inside the mapped page (checked above).
                *b = unsafe { core::ptr::read_volatile(self.ptr(offset + i) as *const u8) };
            }
        }
    }
    fn write_bytes(&self, offset: usize, src: &[u8]) {
        if offset.saturating_add(src.len()) > PAGE_SIZE {
            return;
        }
        if offset.is_multiple_of(8) && src.len().is_multiple_of(8) {
            for (i, c) in src.chunks_exact(8).enumerate() {
                let mut w = [0u8; 8];
                w.copy_from_slice(c);
                let v = u64::from_le_bytes(w);
                // SAFETY: inside the mapped, writable page (checked above), 8-byte aligned.
                unsafe { core::ptr::write_volatile(self.ptr(offset + 8 * i) as *mut u64, v) };
            }
        } else {
            for (i, &b) in src.iter().enumerate() {
                // SAFETY: inside the mapped, writable page (checked above).
                unsafe { core::ptr::write_volatile(self.ptr(offset + i) as *mut u8, b) };
            }
        }
    }
    fn fence(&self, f: Fence) {
        match f {
            // x86-TSO: loads stay ordered with loads, stores with stores; only the
            // compiler must be kept from reordering.
            Fence::Read => compiler_fence(Ordering::Acquire),
            Fence::Write => compiler_fence(Ordering::Release),
            // Store→load ordering: `mfence` (a SeqCst fence on x86_64).
            Fence::Full => fence(Ordering::SeqCst),
        }
    }
}

/// `/local/domain/<domid>/<node>` as a number, if present and numeric.
fn read_num(domid: u16, node: &str) -> Option<u64> {
    let path = alloc::format!("/local/domain/{domid}/{node}");
    let v: Option<String> = crate::xenstore::with(|s| s.read_string(DOM0, &path).ok());
    v?.trim().parse().ok()
}

fn write_node(domid: u16, node: &str, value: &[u8]) -> Result<(), Error> {
    let path = alloc::format!("/local/domain/{domid}/{node}");
    crate::xenstore::with(|s| s.write(DOM0, &path, value)).map_err(|_| Error::Store(NODE_CONNECTED))
}

/// What the domU published.
struct Published {
    gref: u32,
    port: u32,
    count: u64,
    pingpong: u64,
    rtt: u64,
}

fn read_published(domid: u16) -> Option<Published> {
    Some(Published {
        gref: u32::try_from(read_num(domid, NODE_RING_REF)?).ok()?,
        port: u32::try_from(read_num(domid, NODE_PORT)?).ok()?,
        count: read_num(domid, NODE_COUNT)?,
        pingpong: read_num(domid, NODE_PINGPONG)?,
        rtt: read_num(domid, NODE_RTT)?,
    })
}

/// Serves the store and the consoles until the domU published its ring.
fn wait_published(domid: u16, h: &mut impl Host) -> Result<Published, Error> {
    let deadline = time::now_ns().saturating_add(PUBLISH_NS);
    loop {
        // As the shell loop: look with events disabled, then block (which re-enables them
        // atomically), so a store event in between still wakes us.
        events::disable();
        crate::xenstore::poll();
        if let Some(p) = read_published(domid) {
            events::enable();
            return Ok(p);
        }
        if time::now_ns() >= deadline {
            events::enable();
            return Err(Error::Store(NODE_RING_REF));
        }
        sched::block();
        crate::toolstack::poll(h);
    }
}

fn run(domid: u16, h: &mut impl Host) -> Result<(), Error> {
    let p = wait_published(domid, h)?;
    let _ = writeln!(
        h,
        "ringtest: domain {domid}: ring-ref {} port {}, {} + {} + {} messages",
        p.gref, p.port, p.count, p.pingpong, p.rtt
    );
    let page = Granted::map(domid, p.gref)?;
    let port = match events::bind_interdomain(DomId::new(domid), p.port) {
        Ok(port) => port,
        Err(e) => {
            let _ = page.unmap();
            return Err(Error::Setup("EVTCHNOP_bind_interdomain", e.raw()));
        }
    };
    // Masked: we poll it; the upcall must not take its pending bit.
    events::mask(port);
    let r = serve(domid, &page, port, &p, h);
    let _ = events::close(port);
    let u = page.unmap();
    r.and(u)
}

fn serve(
    domid: u16,
    page: &Granted,
    port: u32,
    p: &Published,
    h: &mut impl Host,
) -> Result<(), Error> {
    // The frontend initialised the ring (indices 0) before granting it.
    let mut back: BackRing<Request, Response, _> = BackRing::attach(page, RingIdx::new(0))?;
    write_node(domid, NODE_CONNECTED, b"1")?;
    // Let the domU's read of data/connected through.
    crate::xenstore::poll();

    let connect_deadline = time::now_ns().saturating_add(EVENT_NS);
    let total = p.count + p.pingpong + 1;
    let mut served = 0u64;
    let mut notifies = 0u64;
    let mut sleeps = 0u64;
    let mut digest = Digest::default();
    let (mut t_bulk0, mut t_bulk1) = (0u64, 0u64);
    let (mut t_ping0, mut t_ping1) = (0u64, 0u64);
    while served < total {
        let mut any = false;
        while let Some(req) = back.get_request()? {
            let op = if served < p.count {
                OP_BULK
            } else if served < p.count + p.pingpong {
                OP_PING
            } else {
                OP_RTT
            };
            if req.seq != served || req.op != op {
                return Err(Error::Protocol {
                    served,
                    seq: req.seq,
                    op: req.op,
                });
            }
            let now = time::now_ns();
            if served == 0 {
                t_bulk0 = now;
            }
            if op == OP_PING {
                if served == p.count {
                    t_ping0 = now;
                }
                t_ping1 = now;
            }
            if op == OP_RTT {
                // Phase 3 starts clean: events before this point are the ring's.
                shared::test_and_clear_pending(port);
            }
            let rsp = respond(&req);
            if op == OP_BULK {
                digest.add(rsp.checksum);
            }
            back.push_response(&rsp)?;
            served += 1;
            if served == p.count {
                t_bulk1 = time::now_ns();
            }
            any = true;
        }
        if any {
            if back.push_responses_and_check_notify() {
                let _ = events::send(port);
                notifies += 1;
            }
            continue;
        }
        if back.final_check_for_requests() {
            continue;
        }
        sleeps += 1;
        if served == 0 {
            // Until the first request the domU is still reading data/connected through its
            // store ring, which only we serve: keep serving it while we wait.
            crate::xenstore::poll();
            if !sched::wait_port(port, 10_000_000) && time::now_ns() >= connect_deadline {
                return Err(Error::Timeout("waiting for the first request", 0));
            }
            continue;
        }
        if !sched::wait_port(port, EVENT_NS) {
            return Err(Error::Timeout("serving requests", served));
        }
    }
    // Phase 3: bounce events, numbered through the counters past the slots.
    let (mut t_rtt0, mut t_rtt1) = (0u64, 0u64);
    for i in 1..=p.rtt {
        while u64::from(page.load_u32(RTT_PING_OFFSET)) != i {
            if !sched::wait_port(port, EVENT_NS) {
                return Err(Error::Timeout("event round trips", i));
            }
        }
        let now = time::now_ns();
        if i == 1 {
            t_rtt0 = now;
        }
        t_rtt1 = now;
        page.store_u32(RTT_PONG_OFFSET, i as u32);
        page.fence(Fence::Full);
        let _ = events::send(port);
    }

    let bulk_ns = t_bulk1.saturating_sub(t_bulk0).max(1);
    let _ = writeln!(
        h,
        "ringtest: backend served {} messages in {} ms ({} msg/s), {notifies} notifications",
        p.count,
        bulk_ns / 1_000_000,
        u128::from(p.count) * 1_000_000_000 / u128::from(bulk_ns)
    );
    let _ = writeln!(
        h,
        "ringtest: backend checksum {:#018x}, slept {sleeps} times",
        digest.0
    );
    let _ = writeln!(
        h,
        "BENCH ring_stream_2dom {} msg/s",
        u128::from(p.count) * 1_000_000_000 / u128::from(bulk_ns)
    );
    // Intervals between the first and the last arrival: (n - 1) round trips each.
    if p.pingpong > 1 {
        let ns = t_ping1.saturating_sub(t_ping0).max(1);
        let rate = u128::from(p.pingpong - 1) * 1_000_000_000 / u128::from(ns);
        let _ = writeln!(h, "BENCH ring_pingpong_2dom {rate} msg/s");
    }
    if p.rtt > 1 {
        let ns = t_rtt1.saturating_sub(t_rtt0) / (p.rtt - 1);
        let _ = writeln!(h, "BENCH evtchn_rtt_2dom {ns} ns");
    }
    Ok(())
}
