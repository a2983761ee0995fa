//! The request engine: turns block I/O into `blkif` requests on the shared ring and
//! completions back into results (Linux blkfront's `blkif_queue_rw_req`,
//! `blkif_queue_discard_req`, `blkif_interrupt` and `blkif_completion`).
//!
//! Each request in flight has a *shadow* entry (as in Linux) that remembers what was
//! granted for it and what to copy back; the request's `id` names the shadow slot and a
//! generation number, so a response with an id that is not in flight — unknown, stale or
//! a duplicate — is recognised and reported instead of completing the wrong request.

use alloc::vec;
use alloc::vec::Vec;

use ring::blkif::{
    BlkifFrontRing, BlkifRequest, BlkifRequestDiscard, BlkifRequestIndirect, BlkifRequestSegment,
    BlkifResponse, BLKIF_DISCARD_SECURE, BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST,
    BLKIF_MAX_SEGMENTS_PER_REQUEST, BLKIF_OP_DISCARD, BLKIF_OP_FLUSH_DISKCACHE, BLKIF_OP_INDIRECT,
    BLKIF_OP_READ, BLKIF_OP_WRITE, BLKIF_OP_WRITE_BARRIER, BLKIF_RSP_EOPNOTSUPP, BLKIF_RSP_ERROR,
    BLKIF_RSP_OKAY, SECTORS_PER_PAGE, SECTOR_SIZE, SEGS_PER_INDIRECT_FRAME, VDISK_READONLY,
};
use ring::{RingError, RingMemory};
use xen_abi::{DomId, GrantRef};

use crate::host::{GrantError, Host, StillInUse};

/// Most segments this frontend puts in one indirect request (1 MiB of 4 KiB pages), like
/// Linux's `xen_blkif_max_segments` default raised to a megabyte; the backend's
/// `feature-max-indirect-segments` may lower it.
pub const MAX_INDIRECT_SEGMENTS: u32 = 256;

/// Default cap of the persistent-grant pool, in pages (4 MiB). When the pool is exhausted
/// [`BlkFront::submit`] answers [`Error::Busy`] until completions give pages back.
pub const DEFAULT_MAX_POOL_PAGES: usize = 1024;

/// Shadow generations are kept in the high half of the request id; the slot is the low half.
const SLOT_BITS: u32 = 32;

/// The disk as the backend describes it (its xenstore nodes, read at connect).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Disk {
    /// Capacity in 512-byte sectors (`sectors`).
    pub sectors: u64,
    /// Logical block size in bytes (`sector-size`, a power of two ≥ 512).
    pub sector_size: u32,
    /// `VDISK_*` bits (`info`).
    pub info: u32,
    /// `feature-flush-cache`: `BLKIF_OP_FLUSH_DISKCACHE` is served.
    pub flush: bool,
    /// `feature-barrier`: `BLKIF_OP_WRITE_BARRIER` is served.
    pub barrier: bool,
    /// `feature-discard`: `BLKIF_OP_DISCARD` is served.
    pub discard: bool,
    /// `discard-secure`: `BLKIF_DISCARD_SECURE` is honoured.
    pub discard_secure: bool,
    /// Both sides wrote `feature-persistent` = 1: data goes through the grant pool.
    pub persistent: bool,
    /// Segments per indirect request, 0 when indirect requests are not used (the smaller
    /// of the backend's `feature-max-indirect-segments` and [`MAX_INDIRECT_SEGMENTS`];
    /// only used when larger than 11, as Linux does).
    pub max_indirect_segments: u32,
}

impl Disk {
    /// Whether the backend says the disk is read-only (`VDISK_READONLY`).
    pub fn read_only(&self) -> bool {
        self.info & VDISK_READONLY != 0
    }

    /// Most segments one read or write may have.
    pub fn max_segments(&self) -> u32 {
        self.max_indirect_segments
            .max(BLKIF_MAX_SEGMENTS_PER_REQUEST as u32)
    }
}

/// A piece of a data buffer: 512-byte sectors `first_sect..=last_sect` (0..=7) of `page`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Seg<P> {
    /// The page.
    pub page: P,
    /// First sector within the page.
    pub first_sect: u8,
    /// Last sector within the page (inclusive).
    pub last_sect: u8,
}

impl<P> Seg<P> {
    /// The whole page (sectors 0..=7).
    pub fn page(page: P) -> Self {
        Seg {
            page,
            first_sect: 0,
            last_sect: SECTORS_PER_PAGE - 1,
        }
    }

    fn valid(&self) -> bool {
        self.first_sect <= self.last_sect && self.last_sect < SECTORS_PER_PAGE
    }

    fn sectors(&self) -> u64 {
        u64::from(self.last_sect.saturating_sub(self.first_sect)).saturating_add(1)
    }

    fn byte_range(&self) -> (usize, usize) {
        let start = usize::from(self.first_sect).saturating_mul(SECTOR_SIZE as usize);
        let len = (self.sectors() as usize).saturating_mul(SECTOR_SIZE as usize);
        (start, len)
    }
}

/// One block operation.
#[derive(Clone, Copy, Debug)]
pub enum Request<'a, P> {
    /// Read into `segs` (in disk order) from `sector` on.
    Read {
        /// First 512-byte sector.
        sector: u64,
        /// The buffers.
        segs: &'a [Seg<P>],
    },
    /// Write `segs` (in disk order) from `sector` on.
    Write {
        /// First 512-byte sector.
        sector: u64,
        /// The buffers.
        segs: &'a [Seg<P>],
    },
    /// Make completed writes durable (`BLKIF_OP_FLUSH_DISKCACHE`, or
    /// `BLKIF_OP_WRITE_BARRIER` if the backend offers only barriers), no data.
    Flush,
    /// Discard `nr_sectors` from `sector` on (`BLKIF_OP_DISCARD`).
    Discard {
        /// First 512-byte sector.
        sector: u64,
        /// Number of 512-byte sectors.
        nr_sectors: u64,
        /// Ask for a secure erase (`BLKIF_DISCARD_SECURE`).
        secure: bool,
    },
}

/// How the backend answered a request (`BLKIF_RSP_*` other than `OKAY`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IoError {
    /// `BLKIF_RSP_ERROR`: the request failed (I/O error, refused write, bad request).
    Error,
    /// `BLKIF_RSP_EOPNOTSUPP`: the operation is not supported (the feature is turned off).
    NotSupported,
    /// Any other status value.
    Status(i16),
}

/// A finished request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Completion {
    /// The caller's tag given to [`BlkFront::submit`].
    pub tag: u64,
    /// The operation the backend echoed.
    pub operation: u8,
    /// The outcome.
    pub result: Result<(), IoError>,
}

/// Why the frontend refused or failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    /// No room now (ring slots, request ids or persistent-grant pages): complete some
    /// requests and submit again.
    Busy,
    /// A read or write with no segment, or a segment with `first_sect > last_sect` or
    /// `last_sect > 7`.
    BadSegment,
    /// More segments than the backend accepts in one request.
    TooManySegments {
        /// Segments asked for.
        got: usize,
        /// Most allowed.
        max: u32,
    },
    /// The range is not inside the disk, or not aligned to its `sector-size`.
    OutOfRange {
        /// First sector.
        sector: u64,
        /// Number of sectors.
        sectors: u64,
    },
    /// The backend did not offer the operation (flush, discard, secure discard).
    NotSupported,
    /// A frame could not be granted.
    Grant(GrantError),
    /// No page for the pool or for indirect segments.
    NoMemory,
    /// The backend broke the ring's index rules.
    Ring(RingError),
    /// A response's id names no request in flight (never issued, or already completed).
    UnknownId(u64),
    /// A second response for a request that already completed.
    DuplicateId(u64),
    /// A response's operation is not its request's.
    WrongOperation {
        /// The response's id.
        id: u64,
        /// The operation in the response.
        got: u8,
        /// The request's operation.
        want: u8,
    },
    /// A grant used by a completed request is still mapped by the backend (XSA-396: the
    /// frame is not reused; the device is unusable).
    GrantStillInUse(GrantRef),
    /// An earlier fatal error (the payload) made the device unusable.
    Broken,
}

/// Counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Requests put on the ring.
    pub requests: u64,
    /// Batches published ([`BlkFront::kick`] with something to publish).
    pub batches: u64,
    /// Events sent to the backend.
    pub notifies: u64,
    /// Indirect requests.
    pub indirect: u64,
    /// Pages in the persistent-grant pool.
    pub pool_pages: u64,
}

/// A pool page: a page granted read-write to the backend for as long as the device lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct PoolPage<P> {
    page: P,
    gref: GrantRef,
}

/// A copy to do when a read completes (persistent grants): bytes of a pool page to the
/// caller's page, at the same offset.
#[derive(Clone, Copy, Debug)]
struct CopyBack<P> {
    from: P,
    to: P,
    offset: usize,
    len: usize,
}

/// What one request in flight holds.
#[derive(Debug)]
struct Shadow<P> {
    tag: u64,
    /// Operations the response may carry; empty for raw requests (not checked).
    ops: [Option<u8>; 2],
    /// Grants of the caller's pages, revoked at completion.
    transient: Vec<GrantRef>,
    /// Our indirect pages granted for this request: revoke, then keep for reuse.
    indirect: Vec<PoolPage<P>>,
    /// Pool pages to give back.
    pool: Vec<PoolPage<P>>,
    /// Copies to make for a read.
    copies: Vec<CopyBack<P>>,
}

/// The frontend of one virtual block device, connected (see [`crate::xenbus`]).
pub struct BlkFront<M: RingMemory, H: Host> {
    ring: BlkifFrontRing<M>,
    host: H,
    backend: DomId,
    handle: u16,
    disk: Disk,
    shadow: Vec<Option<Shadow<H::Page>>>,
    generation: Vec<u32>,
    free_ids: Vec<u32>,
    pool_free: Vec<PoolPage<H::Page>>,
    pool_total: usize,
    max_pool: usize,
    /// Ungranted pages kept for indirect segment lists.
    spare: Vec<H::Page>,
    /// Shadows of completed requests, their lists emptied but their capacity kept, so
    /// that a request in steady state allocates nothing.
    spare_shadows: Vec<Shadow<H::Page>>,
    /// Scratch list of a request's wire segments (kept for its capacity).
    wire: Vec<BlkifRequestSegment>,
    /// Grants the backend would not give back (their pages are never reused).
    leaked: Vec<GrantRef>,
    /// Grants of the ring pages (revoked by [`teardown`](Self::teardown)).
    ring_refs: Vec<GrantRef>,
    unpublished: u32,
    broken: Option<Error>,
    stats: Stats,
}

/// Outstanding-request bookkeeping result for an id from a response.
enum Lookup {
    Found(usize),
    Unknown,
    Duplicate,
}

impl<M: RingMemory, H: Host> BlkFront<M, H> {
    /// The engine on an initialised front ring (`FrontRing::init` on the page the backend
    /// will map) for the device `handle` (`virtual-device`) served by `backend`.
    pub fn new(ring: BlkifFrontRing<M>, host: H, backend: DomId, handle: u16, disk: Disk) -> Self {
        let n = ring.size();
        BlkFront {
            ring,
            host,
            backend,
            handle,
            disk,
            shadow: (0..n).map(|_| None).collect(),
            generation: vec![0; n as usize],
            // Pop from the end: lowest slot first.
            free_ids: (0..n).rev().collect(),
            pool_free: Vec::new(),
            pool_total: 0,
            max_pool: DEFAULT_MAX_POOL_PAGES,
            spare: Vec::new(),
            spare_shadows: Vec::new(),
            wire: Vec::new(),
            leaked: Vec::new(),
            ring_refs: Vec::new(),
            unpublished: 0,
            broken: None,
            stats: Stats::default(),
        }
    }

    /// Records the grants of the ring pages, revoked by [`teardown`](Self::teardown).
    pub fn set_ring_refs(&mut self, refs: Vec<GrantRef>) {
        self.ring_refs = refs;
    }

    /// The grants of the ring pages.
    pub fn ring_refs(&self) -> &[GrantRef] {
        &self.ring_refs
    }

    /// Sets the cap of the persistent-grant pool (pages).
    pub fn set_max_pool_pages(&mut self, pages: usize) {
        self.max_pool = pages;
    }

    /// The disk.
    pub fn disk(&self) -> &Disk {
        &self.disk
    }

    /// The device handle (`virtual-device`) put in every request.
    pub fn handle(&self) -> u16 {
        self.handle
    }

    /// The backend domain.
    pub fn backend(&self) -> DomId {
        self.backend
    }

    /// Counters.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// The kernel services (e.g. to grant pages for hand-made requests).
    pub fn host_mut(&mut self) -> &mut H {
        &mut self.host
    }

    /// Requests in flight (submitted and not completed).
    pub fn in_flight(&self) -> usize {
        self.shadow.len().saturating_sub(self.free_ids.len())
    }

    /// Ring slots (the most requests that can be in flight).
    pub fn ring_size(&self) -> u32 {
        self.ring.size()
    }

    /// The fatal error that made the device unusable, if any.
    pub fn broken(&self) -> Option<Error> {
        self.broken
    }

    /// Grants the backend kept mapped after their request completed.
    pub fn leaked_grants(&self) -> &[GrantRef] {
        &self.leaked
    }

    fn usable(&self) -> Result<(), Error> {
        match self.broken {
            Some(_) => Err(Error::Broken),
            None => Ok(()),
        }
    }

    fn fail(&mut self, e: Error) -> Error {
        if self.broken.is_none() {
            self.broken = Some(e);
        }
        e
    }

    fn make_id(&self, slot: u32) -> u64 {
        let g = self.generation.get(slot as usize).copied().unwrap_or(0);
        (u64::from(g) << SLOT_BITS) | u64::from(slot)
    }

    fn lookup(&self, id: u64) -> Lookup {
        let slot = (id & 0xffff_ffff) as usize;
        let generation = (id >> SLOT_BITS) as u32;
        let (Some(entry), Some(&g)) = (self.shadow.get(slot), self.generation.get(slot)) else {
            return Lookup::Unknown;
        };
        match entry {
            Some(_) if g == generation => Lookup::Found(slot),
            // Completed (generation bumped on completion) and not reissued since.
            None if g == generation.wrapping_add(1) => Lookup::Duplicate,
            _ => Lookup::Unknown,
        }
    }

    /// Checks a read/write range.
    fn check_range(&self, sector: u64, sectors: u64) -> Result<(), Error> {
        let bad = Error::OutOfRange { sector, sectors };
        let end = sector.checked_add(sectors).ok_or(bad)?;
        if sectors == 0 || end > self.disk.sectors {
            return Err(bad);
        }
        let per_block = u64::from(self.disk.sector_size / SECTOR_SIZE as u32).max(1);
        if !sector.is_multiple_of(per_block) || !sectors.is_multiple_of(per_block) {
            return Err(bad);
        }
        Ok(())
    }

    /// Pages a pool-backed request needs that the pool does not have and cannot grow by.
    fn pool_can_supply(&self, pages: usize) -> bool {
        let room = self.max_pool.saturating_sub(self.pool_total);
        self.pool_free.len().saturating_add(room) >= pages
    }

    fn pool_take(&mut self) -> Result<PoolPage<H::Page>, Error> {
        if let Some(p) = self.pool_free.pop() {
            return Ok(p);
        }
        if self.pool_total >= self.max_pool {
            return Err(Error::Busy);
        }
        let page = self.host.alloc_page().ok_or(Error::NoMemory)?;
        let frame = self.host.frame(page);
        match self.host.grant(self.backend, frame, false) {
            Ok(gref) => {
                self.pool_total = self.pool_total.saturating_add(1);
                self.stats.pool_pages = self.pool_total as u64;
                Ok(PoolPage { page, gref })
            }
            Err(e) => {
                self.host.free_page(page);
                Err(Error::Grant(e))
            }
        }
    }

    /// A page for an indirect segment list, granted read-only (transient mode) or taken
    /// from the pool (persistent mode, where the backend keeps every grant mapped).
    fn indirect_page(&mut self) -> Result<PoolPage<H::Page>, Error> {
        if self.disk.persistent {
            return self.pool_take();
        }
        let page = match self.spare.pop() {
            Some(p) => p,
            None => self.host.alloc_page().ok_or(Error::NoMemory)?,
        };
        let frame = self.host.frame(page);
        match self.host.grant(self.backend, frame, true) {
            Ok(gref) => Ok(PoolPage { page, gref }),
            Err(e) => {
                self.spare.push(page);
                Err(Error::Grant(e))
            }
        }
    }

    /// An empty shadow for a request tagged `tag`, reusing a completed one's lists.
    fn new_shadow(&mut self, tag: u64) -> Shadow<H::Page> {
        match self.spare_shadows.pop() {
            Some(mut sh) => {
                sh.tag = tag;
                sh.ops = [None, None];
                sh
            }
            None => empty_shadow_with_tag(tag),
        }
    }

    /// Undoes the grants of a request that could not be queued (the backend never saw
    /// them, so revoking cannot fail unless it guessed the reference).
    fn release(&mut self, mut sh: Shadow<H::Page>) -> Result<(), Error> {
        let mut first_err = None;
        for gref in sh.transient.drain(..) {
            if self.host.end_access(gref) == Err(StillInUse) {
                self.leaked.push(gref);
                first_err.get_or_insert(Error::GrantStillInUse(gref));
            }
        }
        for p in sh.indirect.drain(..) {
            if self.disk.persistent {
                self.pool_free.push(p);
            } else if self.host.end_access(p.gref) == Err(StillInUse) {
                self.leaked.push(p.gref);
                first_err.get_or_insert(Error::GrantStillInUse(p.gref));
            } else {
                self.spare.push(p.page);
            }
        }
        self.pool_free.append(&mut sh.pool);
        sh.copies.clear();
        // At most one spare per ring slot: what a full ring of requests can use again.
        if self.spare_shadows.len() < self.shadow.len() {
            self.spare_shadows.push(sh);
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Queues one request (not yet visible to the backend: [`kick`](Self::kick) publishes
    /// a batch). `tag` comes back in its [`Completion`].
    ///
    /// Read buffers must not be touched until the completion; without persistent grants
    /// the backend writes straight into them.
    pub fn submit(&mut self, tag: u64, req: Request<'_, H::Page>) -> Result<(), Error> {
        self.usable()?;
        let slot = *self.free_ids.last().ok_or(Error::Busy)?;
        if self.ring.is_full() {
            return Err(Error::Busy);
        }
        let id = self.make_id(slot);
        let mut sh = self.new_shadow(tag);
        let wire = match req {
            Request::Flush => {
                let op = if self.disk.flush {
                    BLKIF_OP_FLUSH_DISKCACHE
                } else if self.disk.barrier {
                    BLKIF_OP_WRITE_BARRIER
                } else {
                    return Err(Error::NotSupported);
                };
                sh.ops[0] = Some(op);
                BlkifRequest {
                    operation: op,
                    nr_segments: 0,
                    handle: self.handle,
                    id,
                    ..BlkifRequest::default()
                }
            }
            Request::Discard {
                sector,
                nr_sectors,
                secure,
            } => {
                if !self.disk.discard || (secure && !self.disk.discard_secure) {
                    return Err(Error::NotSupported);
                }
                let end = sector.checked_add(nr_sectors);
                if nr_sectors == 0 || end.is_none_or(|e| e > self.disk.sectors) {
                    return Err(Error::OutOfRange {
                        sector,
                        sectors: nr_sectors,
                    });
                }
                sh.ops[0] = Some(BLKIF_OP_DISCARD);
                BlkifRequestDiscard {
                    operation: BLKIF_OP_DISCARD,
                    flag: if secure { BLKIF_DISCARD_SECURE } else { 0 },
                    handle: self.handle,
                    pad: 0,
                    id,
                    sector_number: sector,
                    nr_sectors,
                    rest: [0; 80],
                }
                .into()
            }
            Request::Read { sector, segs } => self.build_rw(false, sector, segs, id, &mut sh)?,
            Request::Write { sector, segs } => self.build_rw(true, sector, segs, id, &mut sh)?,
        };
        self.enqueue(slot, wire, sh)
    }

    fn enqueue(&mut self, slot: u32, wire: BlkifRequest, sh: Shadow<H::Page>) -> Result<(), Error> {
        if let Err(e) = self.ring.push_request(&wire) {
            // Checked not full above; keep the books straight anyway.
            self.release(sh)?;
            return Err(Error::Ring(e));
        }
        self.free_ids.pop();
        if let Some(s) = self.shadow.get_mut(slot as usize) {
            *s = Some(sh);
        }
        self.unpublished = self.unpublished.saturating_add(1);
        self.stats.requests = self.stats.requests.saturating_add(1);
        Ok(())
    }

    fn build_rw(
        &mut self,
        write: bool,
        sector: u64,
        segs: &[Seg<H::Page>],
        id: u64,
        sh: &mut Shadow<H::Page>,
    ) -> Result<BlkifRequest, Error> {
        if segs.is_empty() || !segs.iter().all(Seg::valid) {
            return Err(Error::BadSegment);
        }
        let max = self.disk.max_segments();
        if segs.len() > max as usize {
            return Err(Error::TooManySegments {
                got: segs.len(),
                max,
            });
        }
        let sectors = segs.iter().map(Seg::sectors).sum::<u64>();
        self.check_range(sector, sectors)?;
        let indirect = segs.len() > BLKIF_MAX_SEGMENTS_PER_REQUEST;
        let indirect_pages = if indirect {
            segs.len().div_ceil(SEGS_PER_INDIRECT_FRAME)
        } else {
            0
        };
        if self.disk.persistent && !self.pool_can_supply(segs.len().saturating_add(indirect_pages))
        {
            return Err(Error::Busy);
        }
        let op = if write { BLKIF_OP_WRITE } else { BLKIF_OP_READ };
        let mut wire = core::mem::take(&mut self.wire);
        wire.clear();
        let r = self.build_granted(op, indirect, sector, segs, id, sh, &mut wire);
        self.wire = wire;
        r
    }

    /// [`build_rw`](Self::build_rw) once the request is checked: grants the segments
    /// (listing them in `wire`) and builds the wire request.
    #[allow(clippy::too_many_arguments)]
    fn build_granted(
        &mut self,
        op: u8,
        indirect: bool,
        sector: u64,
        segs: &[Seg<H::Page>],
        id: u64,
        sh: &mut Shadow<H::Page>,
        wire: &mut Vec<BlkifRequestSegment>,
    ) -> Result<BlkifRequest, Error> {
        let write = op == BLKIF_OP_WRITE;
        match self.grant_segments(write, segs, sh, wire) {
            Ok(()) => {
                let wire_segs: &[BlkifRequestSegment] = wire;
                if !indirect {
                    let mut seg = [BlkifRequestSegment::default(); BLKIF_MAX_SEGMENTS_PER_REQUEST];
                    for (d, s) in seg.iter_mut().zip(wire_segs.iter()) {
                        *d = *s;
                    }
                    sh.ops[0] = Some(op);
                    return Ok(BlkifRequest {
                        operation: op,
                        nr_segments: wire_segs.len() as u8,
                        handle: self.handle,
                        pad: 0,
                        id,
                        sector_number: sector,
                        seg,
                    });
                }
                match self.indirect_request(op, sector, wire_segs, id, sh) {
                    Ok(r) => Ok(r),
                    Err(e) => {
                        let taken = core::mem::replace(sh, empty_shadow());
                        self.release(taken)?;
                        Err(e)
                    }
                }
            }
            Err(e) => {
                let taken = core::mem::replace(sh, empty_shadow());
                self.release(taken)?;
                Err(e)
            }
        }
    }

    /// Grants (or takes pool pages for) each segment; fills the shadow as it goes so that
    /// a failure can be undone with [`release`](Self::release).
    fn grant_segments(
        &mut self,
        write: bool,
        segs: &[Seg<H::Page>],
        sh: &mut Shadow<H::Page>,
        out: &mut Vec<BlkifRequestSegment>,
    ) -> Result<(), Error> {
        out.reserve(segs.len());
        let wire = |s: &Seg<H::Page>, gref| BlkifRequestSegment {
            gref,
            first_sect: s.first_sect,
            last_sect: s.last_sect,
            pad: [0; 2],
        };
        if !self.disk.persistent {
            for s in segs {
                // The backend only reads the page of a write: grant it read-only.
                let frame = self.host.frame(s.page);
                let gref = self
                    .host
                    .grant(self.backend, frame, write)
                    .map_err(Error::Grant)?;
                sh.transient.push(gref);
                out.push(wire(s, gref));
            }
            return Ok(());
        }
        let mut bounce = [0u8; 4096];
        for s in segs {
            let p = self.pool_take()?;
            sh.pool.push(p);
            let (offset, len) = s.byte_range();
            if write {
                if let Some(buf) = bounce.get_mut(..len) {
                    self.host.read(s.page, offset, buf);
                    self.host.write(p.page, offset, buf);
                }
            } else {
                sh.copies.push(CopyBack {
                    from: p.page,
                    to: s.page,
                    offset,
                    len,
                });
            }
            let gref = p.gref;
            out.push(wire(s, gref));
        }
        Ok(())
    }

    fn indirect_request(
        &mut self,
        op: u8,
        sector: u64,
        wire_segs: &[BlkifRequestSegment],
        id: u64,
        sh: &mut Shadow<H::Page>,
    ) -> Result<BlkifRequest, Error> {
        let mut grefs = [GrantRef::new(0); BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST];
        let mut bytes = [0u8; 4096];
        for (chunk, g) in wire_segs
            .chunks(SEGS_PER_INDIRECT_FRAME)
            .zip(grefs.iter_mut())
        {
            let p = self.indirect_page()?;
            sh.indirect.push(p);
            for (s, b) in chunk.iter().zip(bytes.chunks_exact_mut(8)) {
                b.copy_from_slice(&segment_bytes(s));
            }
            let used = chunk.len().saturating_mul(8);
            if let Some(b) = bytes.get(..used) {
                self.host.write(p.page, 0, b);
            }
            *g = p.gref;
        }
        sh.ops = [Some(op), Some(BLKIF_OP_INDIRECT)];
        self.stats.indirect = self.stats.indirect.saturating_add(1);
        Ok(BlkifRequestIndirect {
            operation: BLKIF_OP_INDIRECT,
            indirect_op: op,
            nr_segments: wire_segs.len() as u16,
            pad: 0,
            id,
            sector_number: sector,
            handle: self.handle,
            pad2: 0,
            indirect_grefs: grefs,
            rest: [0; 52],
        }
        .into())
    }

    /// Queues a request exactly as given, except for its `id` (set to a fresh one): no
    /// validation, nothing granted, the response's operation not checked. For exercising
    /// a backend's checks (grant pages yourself through [`host_mut`](Self::host_mut)).
    pub fn submit_raw(&mut self, tag: u64, mut req: BlkifRequest) -> Result<(), Error> {
        self.usable()?;
        let slot = *self.free_ids.last().ok_or(Error::Busy)?;
        if self.ring.is_full() {
            return Err(Error::Busy);
        }
        req.id = self.make_id(slot);
        let sh = self.new_shadow(tag);
        self.enqueue(slot, req, sh)
    }

    /// Publishes a `req_prod` `ahead` entries beyond the responses consumed so far (more
    /// than the ring holds when `ahead` exceeds its size), as a hostile frontend would, and
    /// notifies. The device is unusable afterwards; only for exercising the backend.
    pub fn publish_bogus_req_prod(&mut self, ahead: u32) {
        let idx = self.ring.rsp_cons().wrapping_add(ahead);
        self.ring.publish_bogus_req_prod(idx);
        self.host.notify();
        self.broken = Some(Error::Broken);
    }

    /// Publishes every request queued since the last kick and notifies the backend if it
    /// asked for it (`RING_PUSH_REQUESTS_AND_CHECK_NOTIFY`): one event per batch at most.
    pub fn kick(&mut self) {
        if self.unpublished == 0 {
            return;
        }
        self.unpublished = 0;
        self.stats.batches = self.stats.batches.saturating_add(1);
        if self.ring.push_requests_and_check_notify() {
            self.stats.notifies = self.stats.notifies.saturating_add(1);
            self.host.notify();
        }
    }

    /// Before sleeping on the event channel: `true` if responses are waiting (poll again),
    /// `false` once the backend has been asked to notify the next one
    /// (`RING_FINAL_CHECK_FOR_RESPONSES`).
    #[must_use = "sleep only when this returns false"]
    pub fn final_check(&mut self) -> bool {
        self.ring.final_check_for_responses()
    }

    /// Takes the next completion, or `None` if the backend has answered nothing new.
    ///
    /// An `Err` is the backend's fault (bad index, unknown or duplicate id, wrong
    /// operation, a grant kept mapped); the device is then broken and every later call
    /// fails with [`Error::Broken`].
    pub fn poll(&mut self) -> Result<Option<Completion>, Error> {
        self.usable()?;
        let rsp: BlkifResponse = match self.ring.get_response() {
            Ok(Some(r)) => r,
            Ok(None) => return Ok(None),
            Err(e) => return Err(self.fail(Error::Ring(e))),
        };
        let slot = match self.lookup(rsp.id) {
            Lookup::Found(s) => s,
            Lookup::Unknown => return Err(self.fail(Error::UnknownId(rsp.id))),
            Lookup::Duplicate => return Err(self.fail(Error::DuplicateId(rsp.id))),
        };
        let Some(sh) = self.shadow.get_mut(slot).and_then(Option::take) else {
            return Err(self.fail(Error::UnknownId(rsp.id)));
        };
        if let Some(g) = self.generation.get_mut(slot) {
            *g = g.wrapping_add(1);
        }
        self.free_ids.push(slot as u32);
        let expected = sh.ops;
        let tag = sh.tag;
        let ok_op = expected[0].is_none() || expected.contains(&Some(rsp.operation));
        let result = match rsp.status {
            BLKIF_RSP_OKAY => Ok(()),
            BLKIF_RSP_ERROR => Err(IoError::Error),
            BLKIF_RSP_EOPNOTSUPP => Err(IoError::NotSupported),
            s => Err(IoError::Status(s)),
        };
        // Copy read data out of the pool before its pages go back.
        if result.is_ok() && ok_op && !sh.copies.is_empty() {
            let mut bounce = [0u8; 4096];
            for c in &sh.copies {
                if let Some(buf) = bounce.get_mut(..c.len) {
                    self.host.read(c.from, c.offset, buf);
                    self.host.write(c.to, c.offset, buf);
                }
            }
        }
        let released = self.release(sh);
        if !ok_op {
            return Err(self.fail(Error::WrongOperation {
                id: rsp.id,
                got: rsp.operation,
                want: expected[0].unwrap_or(0),
            }));
        }
        if let Err(e) = released {
            return Err(self.fail(e));
        }
        if result == Err(IoError::NotSupported) {
            // As Linux: the backend does not do this after all; stop asking.
            match expected[0] {
                Some(BLKIF_OP_FLUSH_DISKCACHE) => self.disk.flush = false,
                Some(BLKIF_OP_WRITE_BARRIER) => self.disk.barrier = false,
                Some(BLKIF_OP_DISCARD) => self.disk.discard = false,
                _ => {}
            }
        }
        Ok(Some(Completion {
            tag,
            operation: rsp.operation,
            result,
        }))
    }

    /// Submits `req`, publishes it, and waits for its completion, calling `wait` whenever
    /// there is nothing to do (it should sleep until the event channel fires or a timeout
    /// passes, and return `false` to give up). Other completions that arrive meanwhile
    /// are handed to `other`.
    pub fn run(
        &mut self,
        tag: u64,
        req: Request<'_, H::Page>,
        mut wait: impl FnMut() -> bool,
        mut other: impl FnMut(Completion),
    ) -> Result<Result<(), IoError>, RunError> {
        self.submit(tag, req).map_err(RunError::Frontend)?;
        self.kick();
        self.wait_for(tag, &mut wait, &mut other)
    }

    /// Waits until the request tagged `tag` completes (see [`run`](Self::run)).
    pub fn wait_for(
        &mut self,
        tag: u64,
        wait: &mut impl FnMut() -> bool,
        other: &mut impl FnMut(Completion),
    ) -> Result<Result<(), IoError>, RunError> {
        loop {
            while let Some(c) = self.poll().map_err(RunError::Frontend)? {
                if c.tag == tag {
                    return Ok(c.result);
                }
                other(c);
            }
            if self.final_check() {
                continue;
            }
            if !wait() {
                return Err(RunError::Timeout);
            }
        }
    }

    /// Takes the device apart after the XenBus close: revokes every grant the frontend
    /// still holds — the ring's, the pool's, those of requests still in flight (which are
    /// abandoned) — and frees its own pages whose grants were revoked. Returns the host
    /// and the grants that could not be revoked because the backend still maps them: their
    /// frames must never be reused (a ring page among them must not be freed).
    pub fn teardown(mut self) -> (H, Vec<GrantRef>) {
        for gref in core::mem::take(&mut self.ring_refs) {
            if self.host.end_access(gref).is_err() {
                self.leaked.push(gref);
            }
        }
        let shadows: Vec<_> = self.shadow.iter_mut().filter_map(Option::take).collect();
        for sh in shadows {
            let _ = self.release(sh);
        }
        for p in core::mem::take(&mut self.pool_free) {
            if self.host.end_access(p.gref).is_ok() {
                self.host.free_page(p.page);
            } else {
                self.leaked.push(p.gref);
            }
        }
        for p in core::mem::take(&mut self.spare) {
            self.host.free_page(p);
        }
        let leaked = core::mem::take(&mut self.leaked);
        let BlkFront { host, .. } = self;
        (host, leaked)
    }
}

/// Why [`BlkFront::run`] gave up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunError {
    /// The frontend refused or the backend broke the protocol.
    Frontend(Error),
    /// `wait` returned `false`.
    Timeout,
}

fn empty_shadow<P>() -> Shadow<P> {
    empty_shadow_with_tag(0)
}

fn empty_shadow_with_tag<P>(tag: u64) -> Shadow<P> {
    Shadow {
        tag,
        ops: [None, None],
        transient: Vec::new(),
        indirect: Vec::new(),
        pool: Vec::new(),
        copies: Vec::new(),
    }
}

/// The 8 bytes of a segment in an indirect page (`blkif_request_segment`, little endian).
fn segment_bytes(s: &BlkifRequestSegment) -> [u8; 8] {
    let g = s.gref.raw().to_le_bytes();
    [g[0], g[1], g[2], g[3], s.first_sect, s.last_sect, 0, 0]
}
