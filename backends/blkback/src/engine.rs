//! The request engine of one connected ring (Linux's `xen_blkif_schedule` /
//! `__do_block_io_op` / `dispatch_rw_block_io` / `xen_blkbk_map` / `make_response`),
//! single-threaded and poll driven:
//!
//! 1. collect the device's completions;
//! 2. resubmit requests the device was too busy to take;
//! 3. copy new requests out of the ring once each and validate them (a bad one is answered
//!    at once and takes no resources); read indirect segment pages with a grant copy;
//! 4. map every data grant of the whole batch in **one** `map_batch` call (reusing
//!    persistent grants), and hand each request to the device as DMA segments that point
//!    straight into the frontend's pages, splitting it if the device takes fewer segments
//!    or discard sectors per request; one `kick` for the batch;
//! 5. for finished requests: unmap their grants in one batch, *then* write the responses
//!    (the frontend may end its grants once it sees them) and publish them with one
//!    notification check.
//!
//! Per-request state lives in a table with one entry per ring slot: the ring never holds
//! more unanswered requests than slots, so the table cannot overflow, and the frontend's
//! `id` is only echoed. Device tags are table indices.

use alloc::collections::VecDeque;
use alloc::vec;
use alloc::vec::Vec;

use ring::blkif::{
    BlkifBackRing, BlkifRequestSegment, BlkifResponse, BLKIF_OP_DISCARD, BLKIF_OP_FLUSH_DISKCACHE,
    BLKIF_RSP_EOPNOTSUPP, BLKIF_RSP_ERROR, BLKIF_RSP_OKAY, SECTOR_SIZE,
};
use ring::{RingError, RingMemory};
use xen_abi::{DomId, GrantRef, PAGE_SIZE};
use zerocopy::FromBytes;

use crate::device::{BlockDevice, BlockOp, DeviceRequest, DeviceStatus, DmaSegment, SubmitError};
use crate::grant::{GrantError, GrantMapper, MapRequest, Mapping, PersistentGrants};
use crate::request::{check_segments, parse, Limits, Parsed, Segments, SEGS_PER_PAGE};

/// One data segment of a request in progress.
#[derive(Clone, Copy, Debug)]
struct Seg {
    gref: GrantRef,
    first: u8,
    last: u8,
    map: Option<Mapping>,
    persistent: bool,
}

impl Seg {
    fn sectors(&self) -> u64 {
        u64::from(self.last.saturating_sub(self.first)).saturating_add(1)
    }
}

/// What a request still has to do on the device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    /// Transfer `segs[next_seg..]`.
    Data,
    /// One flush (`remaining` 1 until issued).
    Flush,
    /// Discard `remaining` sectors from `sector`.
    Discard,
}

/// A request between consumption and response.
#[derive(Debug)]
struct Slot {
    busy: bool,
    /// In the `waiting` queue.
    queued: bool,
    id: u64,
    operation: u8,
    status: i16,
    write: bool,
    flush_after: bool,
    stage: Stage,
    /// Next sector to submit.
    sector: u64,
    /// Discard sectors / flushes not yet submitted.
    remaining: u64,
    segs: Vec<Seg>,
    next_seg: usize,
    /// Device requests submitted and not completed.
    in_flight: u32,
}

impl Slot {
    fn idle() -> Self {
        Slot {
            busy: false,
            queued: false,
            id: 0,
            operation: 0,
            status: BLKIF_RSP_OKAY,
            write: false,
            flush_after: false,
            stage: Stage::Flush,
            sector: 0,
            remaining: 0,
            segs: Vec::new(),
            next_seg: 0,
            in_flight: 0,
        }
    }

    fn all_submitted(&self) -> bool {
        match self.stage {
            Stage::Data => self.next_seg >= self.segs.len(),
            Stage::Flush | Stage::Discard => self.remaining == 0,
        }
    }

    fn fail(&mut self, status: i16) {
        if self.status == BLKIF_RSP_OKAY {
            self.status = status;
        }
    }
}

/// What the device takes per request, from its [`DiskInfo`](crate::DiskInfo).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceLimits {
    /// Most segments per device request (≥ 1).
    pub max_segments: usize,
    /// The device has a volatile cache to flush (otherwise a flush is a no-op).
    pub flush: bool,
    /// Most sectors per discard (0: no limit).
    pub max_discard_sectors: u64,
}

/// What one [`Engine::process`] call did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    /// Send the frontend an event (the ring's notification rule said so).
    pub notify: bool,
    /// Requests are still waiting on the ring: call again before sleeping.
    pub more: bool,
}

/// Counters for `xl block-list` and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Requests consumed from the ring.
    pub requests: u64,
    /// Responses with a status other than `BLKIF_RSP_OKAY`.
    pub errors: u64,
    /// Grants mapped (not counting persistent reuse).
    pub maps: u64,
    /// Segments served from a persistent mapping.
    pub persistent_hits: u64,
}

/// The request engine of one ring; see the module docs.
pub struct Engine<R: RingMemory> {
    ring: BlkifBackRing<R>,
    dom: DomId,
    limits: Limits,
    dev: DeviceLimits,
    slots: Vec<Slot>,
    free: Vec<u16>,
    waiting: VecDeque<u16>,
    persistent: Option<PersistentGrants>,
    stopping: bool,
    broken: Option<RingError>,
    stats: Stats,
    // Scratch space, kept to avoid allocating per batch.
    done: Vec<(u64, DeviceStatus)>,
    fresh: Vec<u16>,
    map_reqs: Vec<MapRequest>,
    map_out: Vec<Result<Mapping, GrantError>>,
    map_owner: Vec<(u16, u16)>,
    unmaps: Vec<Mapping>,
    responses: Vec<BlkifResponse>,
    dma: Vec<DmaSegment>,
    page: Vec<u8>,
}

impl<R: RingMemory> Engine<R> {
    /// An engine for `ring`, shared with domain `dom`. `persistent` is the bound on kept
    /// mappings if both sides offered `feature-persistent`, `None` otherwise.
    pub fn new(
        ring: BlkifBackRing<R>,
        dom: DomId,
        limits: Limits,
        dev: DeviceLimits,
        persistent: Option<usize>,
    ) -> Self {
        let size = ring.size() as usize;
        let slots = (0..size).map(|_| Slot::idle()).collect();
        // Pop order: slot 0 first (only for readable traces).
        let free = (0..size).rev().map(|s| s as u16).collect();
        Engine {
            ring,
            dom,
            limits,
            dev: DeviceLimits {
                max_segments: dev.max_segments.max(1),
                ..dev
            },
            slots,
            free,
            waiting: VecDeque::with_capacity(size),
            persistent: persistent.map(PersistentGrants::new),
            stopping: false,
            broken: None,
            stats: Stats::default(),
            done: Vec::new(),
            fresh: Vec::with_capacity(size),
            map_reqs: Vec::new(),
            map_out: Vec::new(),
            map_owner: Vec::new(),
            unmaps: Vec::new(),
            responses: Vec::with_capacity(size),
            dma: Vec::new(),
            page: vec![0; PAGE_SIZE],
        }
    }

    /// Counters.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Requests accepted and not yet answered.
    pub fn in_flight(&self) -> usize {
        self.slots.len().saturating_sub(self.free.len())
    }

    /// Persistent mappings kept.
    pub fn persistent_grants(&self) -> usize {
        self.persistent.as_ref().map_or(0, PersistentGrants::len)
    }

    /// The ring's slot count.
    pub fn ring_size(&self) -> u32 {
        self.ring.size()
    }

    /// Why the ring was abandoned, if the frontend broke its index rules.
    pub fn broken(&self) -> Option<RingError> {
        self.broken
    }

    /// Stops taking requests (disconnect): requests not yet on the device are failed, the
    /// ones on it are waited for by further [`process`](Self::process) calls until
    /// [`idle`](Self::idle).
    pub fn stop(&mut self) {
        self.stopping = true;
        for &s in &self.waiting {
            if let Some(slot) = self.slots.get_mut(usize::from(s)) {
                slot.fail(BLKIF_RSP_ERROR);
            }
        }
    }

    /// Nothing in flight and every response written: safe to unmap the ring and grants.
    pub fn idle(&self) -> bool {
        self.free.len() == self.slots.len() && self.responses.is_empty()
    }

    /// Releases the persistent mappings (call once [`idle`](Self::idle)); the ring memory
    /// is dropped with the engine.
    pub fn teardown(mut self, gm: &mut impl GrantMapper) {
        let mut maps = self
            .persistent
            .as_mut()
            .map(PersistentGrants::drain)
            .unwrap_or_default();
        // Not idle (a caller bug or a device that never completes): keep the other
        // mappings rather than pull pages from under DMA.
        if self.idle() && !maps.is_empty() {
            gm.unmap_batch(&maps);
        }
        maps.clear();
    }

    /// One round of work; see the module docs.
    pub fn process(&mut self, dev: &mut dyn BlockDevice, gm: &mut impl GrantMapper) -> Progress {
        let mut submitted = false;
        let mut more = false;

        let mut done = core::mem::take(&mut self.done);
        done.clear();
        dev.complete(&mut |tag, st| done.push((tag, st)));
        for &(tag, st) in &done {
            self.on_complete(tag, st);
        }
        self.done = done;

        submitted |= self.submit_waiting(dev);

        if !self.stopping && self.broken.is_none() && self.waiting.is_empty() {
            more = self.consume(gm);
            self.map_fresh(gm);
            submitted |= self.submit_waiting(dev);
        }
        if submitted {
            dev.kick();
        }

        let notify = self.publish(gm);

        if !more
            && !self.stopping
            && self.broken.is_none()
            && self.waiting.is_empty()
            && !self.free.is_empty()
        {
            more = self.ring.final_check_for_requests();
        }
        Progress { notify, more }
    }

    fn on_complete(&mut self, tag: u64, st: DeviceStatus) {
        let Some(slot) = usize::try_from(tag)
            .ok()
            .and_then(|t| self.slots.get_mut(t))
        else {
            return;
        };
        if !slot.busy || slot.in_flight == 0 {
            return; // not ours: a device bug, ignore
        }
        slot.in_flight -= 1;
        match st {
            DeviceStatus::Ok => {}
            DeviceStatus::IoError => slot.fail(BLKIF_RSP_ERROR),
            DeviceStatus::Unsupported => slot.fail(BLKIF_RSP_EOPNOTSUPP),
        }
        if !slot.queued {
            self.check_done(tag as u16);
        }
    }

    /// Finishes slot `s` if nothing of it is left on the device, or moves a data write
    /// that asked for a flush to its flush stage.
    fn check_done(&mut self, s: u16) {
        let Some(slot) = self.slots.get_mut(usize::from(s)) else {
            return;
        };
        if !slot.busy || slot.queued || slot.in_flight != 0 {
            return;
        }
        if slot.status == BLKIF_RSP_OKAY && !slot.all_submitted() {
            return;
        }
        if slot.status == BLKIF_RSP_OKAY && slot.stage == Stage::Data && slot.flush_after {
            slot.stage = Stage::Flush;
            slot.remaining = 1;
            slot.queued = true;
            self.waiting.push_back(s);
            return;
        }
        self.finish(s);
    }

    /// Answers slot `s` with its status and frees it; its temporary grant mappings go to
    /// the unmap batch.
    fn finish(&mut self, s: u16) {
        let Some(slot) = self.slots.get_mut(usize::from(s)) else {
            return;
        };
        for seg in slot.segs.iter_mut() {
            if let Some(m) = seg.map.take() {
                if !seg.persistent {
                    self.unmaps.push(m);
                }
            }
        }
        slot.busy = false;
        slot.queued = false;
        let (id, operation, status) = (slot.id, slot.operation, slot.status);
        self.free.push(s);
        self.respond(id, operation, status);
    }

    fn respond(&mut self, id: u64, operation: u8, status: i16) {
        if status != BLKIF_RSP_OKAY {
            self.stats.errors = self.stats.errors.wrapping_add(1);
        }
        self.responses.push(BlkifResponse {
            id,
            operation,
            status,
            ..Default::default()
        });
    }

    /// Takes up to a ring's worth of requests; `true` if it stopped at that cap.
    fn consume(&mut self, gm: &mut impl GrantMapper) -> bool {
        let cap = self.ring.size();
        let mut n = 0u32;
        while !self.free.is_empty() {
            if n >= cap {
                return true;
            }
            let req = match self.ring.get_request() {
                Ok(Some(r)) => r,
                Ok(None) => break,
                Err(e) => {
                    self.broken = Some(e);
                    break;
                }
            };
            n += 1;
            self.stats.requests = self.stats.requests.wrapping_add(1);
            match parse(&req, &self.limits) {
                Err(r) => self.respond(r.id, r.operation, r.status),
                Ok(p) => self.start(p, gm),
            }
        }
        false
    }

    /// Sets up a slot for a parsed request; it joins `fresh` to be mapped and submitted.
    fn start(&mut self, p: Parsed, gm: &mut impl GrantMapper) {
        let Some(s) = self.free.pop() else {
            return; // cannot happen: consume checks first
        };
        let Some(slot) = self.slots.get_mut(usize::from(s)) else {
            return;
        };
        slot.busy = true;
        slot.queued = false;
        slot.status = BLKIF_RSP_OKAY;
        slot.in_flight = 0;
        slot.segs.clear();
        slot.next_seg = 0;
        slot.flush_after = false;
        slot.write = false;
        match p {
            Parsed::Flush { id } => {
                slot.id = id;
                slot.operation = BLKIF_OP_FLUSH_DISKCACHE;
                slot.stage = Stage::Flush;
                slot.remaining = 1;
            }
            Parsed::Discard {
                id,
                sector,
                nr_sectors,
            } => {
                slot.id = id;
                slot.operation = BLKIF_OP_DISCARD;
                slot.stage = Stage::Discard;
                slot.sector = sector;
                slot.remaining = nr_sectors;
            }
            Parsed::Rw {
                id,
                operation,
                write,
                flush,
                sector,
                segs,
            } => {
                slot.id = id;
                slot.operation = operation;
                slot.write = write;
                slot.flush_after = flush;
                slot.stage = Stage::Data;
                slot.sector = sector;
                slot.remaining = 0;
                if !self.load_segments(s, &segs, gm) {
                    if let Some(slot) = self.slots.get_mut(usize::from(s)) {
                        slot.fail(BLKIF_RSP_ERROR);
                    }
                    self.finish(s);
                    return;
                }
            }
        }
        self.fresh.push(s);
    }

    /// Fills slot `s`'s segment list (reading indirect pages) and checks it.
    fn load_segments(&mut self, s: u16, segs: &Segments, gm: &mut impl GrantMapper) -> bool {
        let Some(slot) = self.slots.get_mut(usize::from(s)) else {
            return false;
        };
        let seg = |r: &BlkifRequestSegment| Seg {
            gref: r.gref,
            first: r.first_sect,
            last: r.last_sect,
            map: None,
            persistent: false,
        };
        match segs {
            Segments::Direct { nr, seg: array } => {
                let Some(used) = array.get(..usize::from(*nr)) else {
                    return false;
                };
                slot.segs.extend(used.iter().map(seg));
            }
            Segments::Indirect { nr, grefs, pages } => {
                let mut left = usize::from(*nr);
                for &g in grefs.iter().take(usize::from(*pages)) {
                    let here = left.min(SEGS_PER_PAGE);
                    let bytes = here.saturating_mul(core::mem::size_of::<BlkifRequestSegment>());
                    let Some(buf) = self.page.get_mut(..bytes) else {
                        return false;
                    };
                    if gm.copy_in(self.dom, g, buf).is_err() {
                        return false;
                    }
                    let Ok(list) = <[BlkifRequestSegment]>::ref_from_bytes(buf) else {
                        return false;
                    };
                    slot.segs.extend(list.iter().map(seg));
                    left = left.saturating_sub(here);
                }
                if left != 0 {
                    return false;
                }
            }
        }
        check_segments(
            slot.segs.iter().map(|g| (g.first, g.last)),
            slot.sector,
            &self.limits,
        )
        .is_some()
    }

    /// Maps the grants of every request taken this round in one batch; requests with a
    /// bad grant are answered with an error, the others queued for the device.
    fn map_fresh(&mut self, gm: &mut impl GrantMapper) {
        self.map_reqs.clear();
        self.map_owner.clear();
        // Persistent mappings are reused for reads and writes, so they are writable.
        let persistent = self.persistent.is_some();
        for &s in &self.fresh {
            let Some(slot) = self.slots.get_mut(usize::from(s)) else {
                continue;
            };
            if slot.stage != Stage::Data {
                continue;
            }
            let readonly = slot.write && !persistent;
            for (i, seg) in slot.segs.iter_mut().enumerate() {
                if let Some(m) = self.persistent.as_ref().and_then(|p| p.get(seg.gref)) {
                    seg.map = Some(m);
                    seg.persistent = true;
                    self.stats.persistent_hits = self.stats.persistent_hits.wrapping_add(1);
                } else {
                    self.map_reqs.push(MapRequest {
                        gref: seg.gref,
                        readonly,
                    });
                    self.map_owner.push((s, i as u16));
                }
            }
        }
        if !self.map_reqs.is_empty() {
            self.map_out.clear();
            self.map_out
                .resize(self.map_reqs.len(), Err(GrantError::GENERAL));
            gm.map_batch(self.dom, &self.map_reqs, &mut self.map_out);
            self.stats.maps = self.stats.maps.wrapping_add(self.map_reqs.len() as u64);
            for (&(s, i), r) in self.map_owner.iter().zip(self.map_out.iter()) {
                let Some(slot) = self.slots.get_mut(usize::from(s)) else {
                    continue;
                };
                match r {
                    Ok(m) => {
                        if let Some(seg) = slot.segs.get_mut(usize::from(i)) {
                            seg.map = Some(*m);
                            seg.persistent = self
                                .persistent
                                .as_mut()
                                .is_some_and(|p| p.insert(seg.gref, *m));
                        }
                    }
                    Err(_) => slot.fail(BLKIF_RSP_ERROR),
                }
            }
        }
        let mut fresh = core::mem::take(&mut self.fresh);
        for &s in &fresh {
            let ok = self
                .slots
                .get(usize::from(s))
                .is_some_and(|slot| slot.status == BLKIF_RSP_OKAY);
            if ok {
                if let Some(slot) = self.slots.get_mut(usize::from(s)) {
                    slot.queued = true;
                }
                self.waiting.push_back(s);
            } else {
                self.finish(s);
            }
        }
        fresh.clear();
        self.fresh = fresh;
    }

    /// Submits queued requests in order until the device is busy; `true` if anything
    /// reached the device.
    fn submit_waiting(&mut self, dev: &mut dyn BlockDevice) -> bool {
        let mut any = false;
        while let Some(&s) = self.waiting.front() {
            let (busy, sent) = self.submit_slot(s, dev);
            any |= sent;
            if busy {
                break;
            }
            self.waiting.pop_front();
            if let Some(slot) = self.slots.get_mut(usize::from(s)) {
                slot.queued = false;
            }
            self.check_done(s);
        }
        any
    }

    /// Submits what slot `s` still has for the device: `(device busy, anything sent)`.
    fn submit_slot(&mut self, s: u16, dev: &mut dyn BlockDevice) -> (bool, bool) {
        let mut sent = false;
        loop {
            let Some(slot) = self.slots.get_mut(usize::from(s)) else {
                return (false, sent);
            };
            if slot.status != BLKIF_RSP_OKAY || slot.all_submitted() {
                return (false, sent);
            }
            let tag = u64::from(s);
            // (request, segments consumed, sectors consumed)
            let (op, sector, nr_sectors, nsegs) = match slot.stage {
                Stage::Data => {
                    let end = slot
                        .next_seg
                        .saturating_add(self.dev.max_segments)
                        .min(slot.segs.len());
                    self.dma.clear();
                    let mut sectors = 0u64;
                    for seg in slot.segs.get(slot.next_seg..end).unwrap_or(&[]) {
                        let Some(m) = seg.map else {
                            slot.fail(BLKIF_RSP_ERROR);
                            return (false, sent);
                        };
                        self.dma.push(DmaSegment {
                            maddr: m
                                .bus_addr
                                .wrapping_add(u64::from(seg.first).wrapping_mul(SECTOR_SIZE)),
                            len: (seg.sectors() * SECTOR_SIZE) as u32,
                        });
                        sectors = sectors.saturating_add(seg.sectors());
                    }
                    let op = if slot.write {
                        BlockOp::Write
                    } else {
                        BlockOp::Read
                    };
                    (op, slot.sector, sectors, end.saturating_sub(slot.next_seg))
                }
                Stage::Flush => {
                    if !self.dev.flush {
                        // No volatile cache: every completed write is already durable.
                        slot.remaining = 0;
                        return (false, sent);
                    }
                    self.dma.clear();
                    (BlockOp::Flush, 0, 0, 0)
                }
                Stage::Discard => {
                    let chunk = match self.dev.max_discard_sectors {
                        0 => slot.remaining,
                        m => slot.remaining.min(m),
                    };
                    self.dma.clear();
                    (BlockOp::Discard, slot.sector, chunk, 0)
                }
            };
            let req = DeviceRequest {
                tag,
                op,
                sector,
                nr_sectors,
                segments: &self.dma,
            };
            match dev.submit(&req) {
                Ok(()) => {
                    sent = true;
                    slot.in_flight = slot.in_flight.saturating_add(1);
                    match slot.stage {
                        Stage::Data => {
                            slot.next_seg = slot.next_seg.saturating_add(nsegs);
                            slot.sector = slot.sector.saturating_add(nr_sectors);
                        }
                        Stage::Flush => slot.remaining = 0,
                        Stage::Discard => {
                            slot.remaining = slot.remaining.saturating_sub(nr_sectors);
                            slot.sector = slot.sector.saturating_add(nr_sectors);
                        }
                    }
                }
                Err(SubmitError::Busy) => return (true, sent),
                Err(SubmitError::Invalid) => {
                    slot.fail(if op == BlockOp::Discard || op == BlockOp::Flush {
                        BLKIF_RSP_EOPNOTSUPP
                    } else {
                        BLKIF_RSP_ERROR
                    });
                    return (false, sent);
                }
            }
        }
    }

    /// Unmaps finished requests' grants (one batch), then writes and publishes their
    /// responses; `true` if the frontend wants an event.
    fn publish(&mut self, gm: &mut impl GrantMapper) -> bool {
        if !self.unmaps.is_empty() {
            gm.unmap_batch(&self.unmaps);
            self.unmaps.clear();
        }
        if self.responses.is_empty() {
            return false;
        }
        for r in self.responses.drain(..) {
            // Cannot fail: every response answers a consumed request.
            let _ = self.ring.push_response(&r);
        }
        self.ring.push_responses_and_check_notify()
    }
}
