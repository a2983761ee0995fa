//! Host tests: the frontend against a fake xenstore and a fake blkback that serves
//! requests from a `Vec` disk over `VecRingMemory`, reading segments through a fake grant
//! table that records who maps what.
#![allow(clippy::indexing_slicing, clippy::unwrap_used)]

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::format;
use std::rc::Rc;
use std::string::{String, ToString};
use std::vec;
use std::vec::Vec;

use ring::blkif::*;
use ring::{RingIdx, RingMemory, VecRingMemory};
use xen_abi::{DomId, GrantRef, Mfn};

use crate::xenbus::{
    self, Device, HandshakeError, Options, Store, StoreError, Tx, TxEnd, XenbusState,
};
use crate::*;

const PAGE: usize = 4096;
const BACKEND: DomId = DomId::new(0);

// ---------------------------------------------------------------------------------------
// The machine: pages and a grant table.

#[derive(Debug)]
struct Entry {
    frame: usize,
    domid: DomId,
    readonly: bool,
    /// Backend mappings of this grant.
    mapped: u32,
}

#[derive(Default)]
struct World {
    pages: Vec<Vec<u8>>,
    free_pages: Vec<usize>,
    grants: BTreeMap<u32, Entry>,
    next_ref: u32,
    notifies: u32,
    /// Refuse grants after this many more (exhaustion tests).
    grant_budget: Option<u32>,
}

impl World {
    fn new_page(&mut self) -> usize {
        if let Some(p) = self.free_pages.pop() {
            self.pages[p].fill(0);
            return p;
        }
        self.pages.push(vec![0; PAGE]);
        self.pages.len() - 1
    }
}

#[derive(Clone, Default)]
struct TestHost(Rc<RefCell<World>>);

impl GrantAccess for TestHost {
    fn grant(&mut self, domid: DomId, frame: Mfn, readonly: bool) -> Result<GrantRef, GrantError> {
        let mut w = self.0.borrow_mut();
        if let Some(b) = w.grant_budget.as_mut() {
            if *b == 0 {
                return Err(GrantError::Exhausted);
            }
            *b -= 1;
        }
        w.next_ref += 1;
        let r = w.next_ref + 8;
        w.grants.insert(
            r,
            Entry {
                frame: frame.raw() as usize,
                domid,
                readonly,
                mapped: 0,
            },
        );
        Ok(GrantRef::new(r))
    }

    fn end_access(&mut self, gref: GrantRef) -> Result<(), StillInUse> {
        let mut w = self.0.borrow_mut();
        match w.grants.get(&gref.raw()) {
            Some(e) if e.mapped > 0 => Err(StillInUse),
            Some(_) => {
                w.grants.remove(&gref.raw());
                Ok(())
            }
            None => panic!("end_access of unknown grant {gref:?}"),
        }
    }
}

impl PageMemory for TestHost {
    type Page = usize;
    fn alloc_page(&mut self) -> Option<usize> {
        Some(self.0.borrow_mut().new_page())
    }
    fn free_page(&mut self, page: usize) {
        let mut w = self.0.borrow_mut();
        assert!(
            !w.grants.values().any(|e| e.frame == page),
            "freed a granted page"
        );
        w.free_pages.push(page);
    }
    fn frame(&self, page: usize) -> Mfn {
        Mfn::new(page as u64)
    }
    fn read(&mut self, page: usize, offset: usize, dst: &mut [u8]) {
        dst.copy_from_slice(&self.0.borrow().pages[page][offset..offset + dst.len()]);
    }
    fn write(&mut self, page: usize, offset: usize, src: &[u8]) {
        self.0.borrow_mut().pages[page][offset..offset + src.len()].copy_from_slice(src);
    }
}

impl Notify for TestHost {
    fn notify(&mut self) {
        self.0.borrow_mut().notifies += 1;
    }
}

// ---------------------------------------------------------------------------------------
// The fake blkback.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Hostile {
    None,
    /// Answer with an id never issued.
    UnknownId,
    /// Answer every request of a batch with the first one's id.
    Duplicate,
    /// Publish a response producer far beyond the requests.
    BadRspProd,
    /// Answer with another operation.
    WrongOp,
    /// Keep every grant mapped after answering.
    HoldGrants,
}

struct Backend {
    ring: BlkifBackRing<VecRingMemory>,
    world: Rc<RefCell<World>>,
    disk: Vec<u8>,
    read_only: bool,
    persistent: bool,
    max_indirect: u16,
    hostile: Hostile,
    /// Answer a batch in reverse order.
    reverse: bool,
    /// Grants kept mapped across requests (persistent mode).
    persistent_maps: BTreeSet<u32>,
    flushes: u32,
    discards: Vec<(u64, u64)>,
    requests: u32,
}

impl Backend {
    fn new(ring: VecRingMemory, world: Rc<RefCell<World>>, sectors: u64) -> Backend {
        let disk = (0..sectors as usize * 512)
            .map(|i| (i * 7 % 251) as u8)
            .collect();
        Backend {
            ring: BlkifBackRing::new(ring).unwrap(),
            world,
            disk,
            read_only: false,
            persistent: false,
            max_indirect: 256,
            hostile: Hostile::None,
            reverse: false,
            persistent_maps: BTreeSet::new(),
            flushes: 0,
            discards: Vec::new(),
            requests: 0,
        }
    }

    fn sectors(&self) -> u64 {
        (self.disk.len() / 512) as u64
    }

    /// Maps `gref` (for write access if `write`); the frame, or None if not allowed.
    fn map(&mut self, gref: GrantRef, write: bool) -> Option<usize> {
        let mut w = self.world.borrow_mut();
        let e = w.grants.get_mut(&gref.raw())?;
        if e.domid != BACKEND || (write && e.readonly) {
            return None;
        }
        if self.persistent {
            if self.persistent_maps.insert(gref.raw()) {
                e.mapped += 1;
            }
        } else {
            e.mapped += 1;
        }
        Some(e.frame)
    }

    fn unmap(&mut self, gref: GrantRef) {
        if self.persistent || self.hostile == Hostile::HoldGrants {
            return;
        }
        if let Some(e) = self.world.borrow_mut().grants.get_mut(&gref.raw()) {
            e.mapped -= 1;
        }
    }

    fn unmap_all(&mut self) {
        let mut w = self.world.borrow_mut();
        for g in std::mem::take(&mut self.persistent_maps) {
            if let Some(e) = w.grants.get_mut(&g) {
                e.mapped -= 1;
            }
        }
    }

    fn rw(&mut self, write: bool, sector: u64, segs: &[BlkifRequestSegment]) -> i16 {
        let total: u64 = segs
            .iter()
            .map(|s| u64::from(s.last_sect.wrapping_sub(s.first_sect)) + 1)
            .sum();
        if segs
            .iter()
            .any(|s| s.first_sect > s.last_sect || s.last_sect > 7)
            || sector.checked_add(total).is_none_or(|e| e > self.sectors())
        {
            return BLKIF_RSP_ERROR;
        }
        if write && self.read_only {
            return BLKIF_RSP_ERROR;
        }
        let mut at = sector as usize * 512;
        let mut status = BLKIF_RSP_OKAY;
        for s in segs {
            let Some(frame) = self.map(s.gref, !write) else {
                status = BLKIF_RSP_ERROR;
                break;
            };
            let off = usize::from(s.first_sect) * 512;
            let len = (usize::from(s.last_sect - s.first_sect) + 1) * 512;
            {
                let mut w = self.world.borrow_mut();
                if write {
                    self.disk[at..at + len].copy_from_slice(&w.pages[frame][off..off + len]);
                } else {
                    w.pages[frame][off..off + len].copy_from_slice(&self.disk[at..at + len]);
                }
            }
            self.unmap(s.gref);
            at += len;
        }
        status
    }

    fn indirect(&mut self, r: &BlkifRequestIndirect) -> i16 {
        let n = usize::from(r.nr_segments);
        if n == 0 || n > usize::from(self.max_indirect) || r.indirect_op > BLKIF_OP_WRITE {
            return BLKIF_RSP_ERROR;
        }
        let mut segs = Vec::new();
        for (i, &g) in r.indirect_grefs.iter().take(n.div_ceil(512)).enumerate() {
            let Some(frame) = self.map(g, false) else {
                return BLKIF_RSP_ERROR;
            };
            let here = (n - i * 512).min(512);
            let page = self.world.borrow().pages[frame].clone();
            for k in 0..here {
                let b = &page[k * 8..k * 8 + 8];
                segs.push(BlkifRequestSegment {
                    gref: GrantRef::new(u32::from_le_bytes([b[0], b[1], b[2], b[3]])),
                    first_sect: b[4],
                    last_sect: b[5],
                    pad: [0; 2],
                });
            }
            self.unmap(g);
        }
        self.rw(r.indirect_op == BLKIF_OP_WRITE, r.sector_number, &segs)
    }

    fn handle(&mut self, req: &BlkifRequest) -> BlkifResponse {
        self.requests += 1;
        let (op, status) = match req.operation {
            BLKIF_OP_READ | BLKIF_OP_WRITE => match req.segments() {
                Some(segs) if !segs.is_empty() => {
                    let segs = segs.to_vec();
                    (
                        req.operation,
                        self.rw(req.operation == BLKIF_OP_WRITE, req.sector_number, &segs),
                    )
                }
                _ => (req.operation, BLKIF_RSP_ERROR),
            },
            BLKIF_OP_INDIRECT => {
                let ind = req.as_indirect();
                (ind.indirect_op, self.indirect(&ind))
            }
            BLKIF_OP_FLUSH_DISKCACHE => {
                self.flushes += 1;
                (req.operation, BLKIF_RSP_OKAY)
            }
            BLKIF_OP_DISCARD => {
                let d = req.as_discard();
                if d.sector_number
                    .checked_add(d.nr_sectors)
                    .is_none_or(|e| e > self.sectors())
                {
                    (req.operation, BLKIF_RSP_ERROR)
                } else {
                    self.discards.push((d.sector_number, d.nr_sectors));
                    let a = d.sector_number as usize * 512;
                    self.disk[a..a + d.nr_sectors as usize * 512].fill(0);
                    (req.operation, BLKIF_RSP_OKAY)
                }
            }
            op => (op, BLKIF_RSP_EOPNOTSUPP),
        };
        let mut rsp = BlkifResponse {
            id: req.id,
            operation: op,
            status,
            ..Default::default()
        };
        match self.hostile {
            Hostile::UnknownId => rsp.id ^= 0x5555_0000_0000,
            Hostile::WrongOp => rsp.operation = 99,
            _ => {}
        }
        rsp
    }

    /// Serves everything queued; returns the number of requests answered.
    fn serve(&mut self) -> usize {
        let mut rsps = Vec::new();
        loop {
            while let Some(req) = self.ring.get_request().unwrap() {
                rsps.push(self.handle(&req));
            }
            if !self.ring.final_check_for_requests() {
                break;
            }
        }
        let n = rsps.len();
        if self.reverse {
            rsps.reverse();
        }
        if self.hostile == Hostile::Duplicate {
            // Every response of the batch names the first request.
            let first = rsps.first().map(|r| r.id);
            for r in &mut rsps {
                r.id = first.unwrap();
            }
        }
        for r in &rsps {
            self.ring.push_response(r).unwrap();
        }
        let _ = self.ring.push_responses_and_check_notify();
        if self.hostile == Hostile::BadRspProd {
            let mem = self.ring.memory().clone();
            mem.store_u32(8, mem.load_u32(8).wrapping_add(1000));
        }
        n
    }
}

// ---------------------------------------------------------------------------------------
// Direct construction (engine tests).

struct Rig {
    front: BlkFront<VecRingMemory, TestHost>,
    back: Backend,
    host: TestHost,
}

fn disk(sectors: u64) -> Disk {
    Disk {
        sectors,
        sector_size: 512,
        info: 0,
        flush: true,
        barrier: false,
        discard: true,
        discard_secure: false,
        persistent: false,
        max_indirect_segments: 256,
    }
}

fn rig_with(d: Disk) -> Rig {
    let host = TestHost::default();
    let mem = VecRingMemory::pages(0);
    let ring = BlkifFrontRing::init(mem.clone()).unwrap();
    let mut back = Backend::new(mem, host.0.clone(), d.sectors);
    back.persistent = d.persistent;
    let front = BlkFront::new(ring, host.clone(), BACKEND, 51712, d);
    Rig { front, back, host }
}

fn rig() -> Rig {
    rig_with(disk(2048))
}

impl Rig {
    fn pages(&mut self, n: usize) -> Vec<usize> {
        (0..n)
            .map(|_| self.host.0.borrow_mut().new_page())
            .collect()
    }

    fn fill(&mut self, pages: &[usize], seed: u64, sector: u64) {
        for (i, &p) in pages.iter().enumerate() {
            let mut buf = vec![0u8; PAGE];
            fill_pattern(seed, sector + 8 * i as u64, &mut buf);
            self.host.0.borrow_mut().pages[p].copy_from_slice(&buf);
        }
    }

    fn check(&self, pages: &[usize], seed: u64, sector: u64) -> bool {
        pages.iter().enumerate().all(|(i, &p)| {
            check_pattern(seed, sector + 8 * i as u64, &self.host.0.borrow().pages[p]).is_none()
        })
    }

    /// Submit + kick + serve + collect one completion.
    fn io(&mut self, tag: u64, req: Request<'_, usize>) -> Result<Result<(), IoError>, Error> {
        self.front.submit(tag, req)?;
        self.front.kick();
        self.back.serve();
        let c = self.front.poll()?.expect("a completion");
        assert_eq!(c.tag, tag);
        Ok(c.result)
    }

    fn grants_outstanding(&self) -> usize {
        self.host.0.borrow().grants.len()
    }
}

fn segs(pages: &[usize]) -> Vec<Seg<usize>> {
    pages.iter().map(|&p| Seg::page(p)).collect()
}

#[test]
fn pattern_is_the_documented_function() {
    // The formula from the brief, computed independently.
    let f = |seed: u64, sector: u64, offset: u32| -> u8 {
        ((seed.wrapping_mul(0x9e3779b97f4a7c15)
            ^ sector.wrapping_mul(0xff51afd7ed558ccd)
            ^ offset as u64)
            .wrapping_mul(0x2545f4914f6cdd1d)
            >> 56) as u8
    };
    for (s, sec, o) in [
        (0, 0, 0),
        (7, 0, 511),
        (7, 12345, 3),
        (u64::MAX, u64::MAX, 511),
    ] {
        assert_eq!(pattern_byte(s, sec, o), f(s, sec, o));
    }
    let mut b = vec![0; 1024];
    fill_pattern(3, 10, &mut b);
    assert_eq!(check_pattern(3, 10, &b), None);
    assert!(check_pattern(3, 11, &b).is_some());
    b[700] ^= 1;
    assert_eq!(check_pattern(3, 10, &b), Some(700));
}

#[test]
fn write_then_read_back_direct_copyless() {
    let mut r = rig();
    let w = r.pages(4);
    r.fill(&w, 7, 100);
    assert_eq!(
        r.io(
            1,
            Request::Write {
                sector: 100,
                segs: &segs(&w)
            }
        ),
        Ok(Ok(()))
    );
    let rd = r.pages(4);
    assert_eq!(
        r.io(
            2,
            Request::Read {
                sector: 100,
                segs: &segs(&rd)
            }
        ),
        Ok(Ok(()))
    );
    assert!(r.check(&rd, 7, 100));
    // Copyless: every grant was revoked at completion.
    assert_eq!(r.grants_outstanding(), 0);
    assert_eq!(r.front.stats().indirect, 0);
}

#[test]
fn write_grants_are_read_only_and_read_grants_writable() {
    let mut r = rig();
    let p = r.pages(1);
    r.front
        .submit(
            1,
            Request::Write {
                sector: 0,
                segs: &segs(&p),
            },
        )
        .unwrap();
    r.front
        .submit(
            2,
            Request::Read {
                sector: 0,
                segs: &segs(&p),
            },
        )
        .unwrap();
    let ro: Vec<bool> = r
        .host
        .0
        .borrow()
        .grants
        .values()
        .map(|e| e.readonly)
        .collect();
    assert_eq!(ro, vec![true, false]);
}

#[test]
fn partial_segments_and_last_sector() {
    let mut r = rig();
    let p = r.pages(2);
    r.fill(&p, 9, 0);
    // Sectors 2..=7 of page 0, then 0..=1 of page 1: 8 sectors ending at the disk's end.
    let s = [
        Seg {
            page: p[0],
            first_sect: 2,
            last_sect: 7,
        },
        Seg {
            page: p[1],
            first_sect: 0,
            last_sect: 1,
        },
    ];
    assert_eq!(
        r.io(
            1,
            Request::Write {
                sector: 2040,
                segs: &s
            }
        ),
        Ok(Ok(()))
    );
    assert_eq!(
        &r.back.disk[2040 * 512..2041 * 512],
        &r.host.0.borrow().pages[p[0]][1024..1536]
    );
    assert_eq!(
        &r.back.disk[2047 * 512..2048 * 512],
        &r.host.0.borrow().pages[p[1]][512..1024]
    );
    // One past the end is refused locally.
    assert_eq!(
        r.front.submit(
            2,
            Request::Write {
                sector: 2041,
                segs: &s
            }
        ),
        Err(Error::OutOfRange {
            sector: 2041,
            sectors: 8
        })
    );
    let bad = [Seg {
        page: p[0],
        first_sect: 5,
        last_sect: 4,
    }];
    assert_eq!(
        r.front.submit(
            3,
            Request::Read {
                sector: 0,
                segs: &bad
            }
        ),
        Err(Error::BadSegment)
    );
    let bad = [Seg {
        page: p[0],
        first_sect: 0,
        last_sect: 8,
    }];
    assert_eq!(
        r.front.submit(
            3,
            Request::Read {
                sector: 0,
                segs: &bad
            }
        ),
        Err(Error::BadSegment)
    );
    assert_eq!(
        r.front.submit(
            3,
            Request::Read {
                sector: 0,
                segs: &[]
            }
        ),
        Err(Error::BadSegment)
    );
    assert_eq!(r.grants_outstanding(), 0);
}

#[test]
fn indirect_requests_carry_many_segments() {
    let mut r = rig();
    let w = r.pages(200);
    r.fill(&w, 1, 0);
    assert_eq!(
        r.io(
            1,
            Request::Write {
                sector: 0,
                segs: &segs(&w)
            }
        ),
        Ok(Ok(()))
    );
    assert_eq!(r.front.stats().indirect, 1);
    let rd = r.pages(200);
    assert_eq!(
        r.io(
            2,
            Request::Read {
                sector: 0,
                segs: &segs(&rd)
            }
        ),
        Ok(Ok(()))
    );
    assert!(r.check(&rd, 1, 0));
    assert_eq!(r.grants_outstanding(), 0);
    // The limit is the negotiated one.
    let many = r.pages(257);
    assert_eq!(
        r.front.submit(
            3,
            Request::Read {
                sector: 0,
                segs: &segs(&many)
            }
        ),
        Err(Error::TooManySegments { got: 257, max: 256 })
    );
}

#[test]
fn without_indirect_at_most_11_segments() {
    let mut d = disk(2048);
    d.max_indirect_segments = 0;
    let mut r = rig_with(d);
    let p = r.pages(12);
    assert_eq!(
        r.front.submit(
            1,
            Request::Read {
                sector: 0,
                segs: &segs(&p)
            }
        ),
        Err(Error::TooManySegments { got: 12, max: 11 })
    );
    assert_eq!(
        r.io(
            2,
            Request::Read {
                sector: 0,
                segs: &segs(&p[..11])
            }
        ),
        Ok(Ok(()))
    );
}

#[test]
fn many_in_flight_one_notify_per_batch_out_of_order() {
    let mut r = rig();
    r.back.reverse = true;
    let n = r.front.ring_size() as usize;
    let pages = r.pages(n);
    r.fill(&pages, 5, 0);
    for (i, &p) in pages.iter().enumerate() {
        r.front
            .submit(
                i as u64,
                Request::Write {
                    sector: 8 * i as u64,
                    segs: &[Seg::page(p)],
                },
            )
            .unwrap();
    }
    assert_eq!(r.front.in_flight(), n);
    // The ring is full now.
    assert_eq!(r.front.submit(99, Request::Flush), Err(Error::Busy));
    r.front.kick();
    assert_eq!(r.host.0.borrow().notifies, 1);
    assert_eq!(r.back.serve(), n);
    let mut tags = Vec::new();
    while let Some(c) = r.front.poll().unwrap() {
        assert_eq!(c.result, Ok(()));
        tags.push(c.tag);
    }
    assert_eq!(tags, (0..n as u64).rev().collect::<Vec<_>>());
    assert_eq!(r.front.in_flight(), 0);
    assert!(!r.front.final_check());
    // The backend re-armed req_event when it went idle: the next batch notifies once more.
    r.front.submit(100, Request::Flush).unwrap();
    r.front.submit(101, Request::Flush).unwrap();
    r.front.kick();
    assert_eq!(r.host.0.borrow().notifies, 2);
    assert_eq!(r.front.stats().batches, 2);
}

#[test]
fn flush_discard_and_their_absence() {
    let mut r = rig();
    assert_eq!(r.io(1, Request::Flush), Ok(Ok(())));
    assert_eq!(r.back.flushes, 1);
    assert_eq!(
        r.io(
            2,
            Request::Discard {
                sector: 8,
                nr_sectors: 16,
                secure: false
            }
        ),
        Ok(Ok(()))
    );
    assert_eq!(r.back.discards, vec![(8, 16)]);
    assert_eq!(
        r.front.submit(
            3,
            Request::Discard {
                sector: 0,
                nr_sectors: 8,
                secure: true
            }
        ),
        Err(Error::NotSupported)
    );
    assert_eq!(
        r.front.submit(
            3,
            Request::Discard {
                sector: 2047,
                nr_sectors: 2,
                secure: false
            }
        ),
        Err(Error::OutOfRange {
            sector: 2047,
            sectors: 2
        })
    );
    let mut d = disk(64);
    d.flush = false;
    d.discard = false;
    let mut r = rig_with(d);
    assert_eq!(r.front.submit(1, Request::Flush), Err(Error::NotSupported));
    assert_eq!(
        r.front.submit(
            1,
            Request::Discard {
                sector: 0,
                nr_sectors: 1,
                secure: false
            }
        ),
        Err(Error::NotSupported)
    );
}

#[test]
fn eopnotsupp_turns_the_feature_off() {
    let mut r = rig();
    let mut req = BlkifRequest {
        operation: BLKIF_OP_FLUSH_DISKCACHE,
        ..Default::default()
    };
    // A raw flush is answered; then pretend the backend refuses discards.
    r.front.submit_raw(1, req).unwrap();
    r.front.kick();
    r.back.serve();
    assert_eq!(r.front.poll().unwrap().unwrap().result, Ok(()));
    req.operation = 77;
    r.front.submit_raw(2, req).unwrap();
    r.front.kick();
    r.back.serve();
    let c = r.front.poll().unwrap().unwrap();
    assert_eq!(
        (c.tag, c.operation, c.result),
        (2, 77, Err(IoError::NotSupported))
    );
}

#[test]
fn read_only_disk_refuses_writes() {
    let mut r = rig();
    r.back.read_only = true;
    let p = r.pages(1);
    assert_eq!(
        r.io(
            1,
            Request::Write {
                sector: 0,
                segs: &segs(&p)
            }
        ),
        Ok(Err(IoError::Error))
    );
    assert_eq!(
        r.io(
            2,
            Request::Read {
                sector: 0,
                segs: &segs(&p)
            }
        ),
        Ok(Ok(()))
    );
    assert_eq!(r.grants_outstanding(), 0);
}

#[test]
fn persistent_grants_copy_through_a_pool() {
    let mut d = disk(2048);
    d.persistent = true;
    let mut r = rig_with(d);
    let w = r.pages(20);
    r.fill(&w, 11, 64);
    assert_eq!(
        r.io(
            1,
            Request::Write {
                sector: 64,
                segs: &segs(&w)
            }
        ),
        Ok(Ok(()))
    );
    // 20 data pages + 1 indirect page, all still granted and mapped by the backend.
    assert_eq!(r.front.stats().pool_pages, 21);
    assert_eq!(r.grants_outstanding(), 21);
    // The caller's pages were never granted.
    assert!(!r
        .host
        .0
        .borrow()
        .grants
        .values()
        .any(|e| w.contains(&e.frame)));
    let rd = r.pages(20);
    assert_eq!(
        r.io(
            2,
            Request::Read {
                sector: 64,
                segs: &segs(&rd)
            }
        ),
        Ok(Ok(()))
    );
    assert!(r.check(&rd, 11, 64));
    // The pool was reused, not grown.
    assert_eq!(r.front.stats().pool_pages, 21);
    // A small pool makes big requests wait.
    r.front.set_max_pool_pages(21);
    let big = r.pages(30);
    assert_eq!(
        r.front.submit(
            3,
            Request::Read {
                sector: 0,
                segs: &segs(&big)
            }
        ),
        Err(Error::Busy)
    );
}

#[test]
fn hostile_unknown_id_breaks_the_device() {
    let mut r = rig();
    r.back.hostile = Hostile::UnknownId;
    let p = r.pages(1);
    r.front
        .submit(
            1,
            Request::Read {
                sector: 0,
                segs: &segs(&p),
            },
        )
        .unwrap();
    r.front.kick();
    r.back.serve();
    assert!(matches!(r.front.poll(), Err(Error::UnknownId(_))));
    assert!(r.front.broken().is_some());
    assert_eq!(r.front.poll(), Err(Error::Broken));
    assert_eq!(r.front.submit(2, Request::Flush), Err(Error::Broken));
}

#[test]
fn hostile_duplicate_id() {
    let mut r = rig();
    r.back.hostile = Hostile::Duplicate;
    r.front.submit(1, Request::Flush).unwrap();
    r.front.submit(2, Request::Flush).unwrap();
    r.front.kick();
    r.back.serve();
    assert_eq!(r.front.poll().unwrap().unwrap().tag, 1);
    assert!(matches!(r.front.poll(), Err(Error::DuplicateId(_))));
}

#[test]
fn hostile_rsp_prod_and_wrong_op() {
    let mut r = rig();
    r.back.hostile = Hostile::BadRspProd;
    r.front.submit(1, Request::Flush).unwrap();
    r.front.kick();
    r.back.serve();
    assert!(matches!(r.front.poll(), Err(Error::Ring(_))));
    let mut r = rig();
    r.back.hostile = Hostile::WrongOp;
    r.front.submit(1, Request::Flush).unwrap();
    r.front.kick();
    r.back.serve();
    assert!(matches!(
        r.front.poll(),
        Err(Error::WrongOperation { got: 99, .. })
    ));
}

#[test]
fn hostile_backend_keeping_grants_mapped() {
    let mut r = rig();
    r.back.hostile = Hostile::HoldGrants;
    let p = r.pages(2);
    r.front
        .submit(
            1,
            Request::Read {
                sector: 0,
                segs: &segs(&p),
            },
        )
        .unwrap();
    r.front.kick();
    r.back.serve();
    assert!(matches!(r.front.poll(), Err(Error::GrantStillInUse(_))));
    assert_eq!(r.front.leaked_grants().len(), 2);
}

#[test]
fn hostile_garbage_in_every_slot_never_panics() {
    // Whatever the backend writes into the response slots and indices, poll() returns.
    for seed in 0..200u64 {
        let mut r = rig();
        r.front.submit(1, Request::Flush).unwrap();
        r.front.submit(2, Request::Flush).unwrap();
        r.front.kick();
        let mem = r.back.ring.memory().clone();
        let mut x = seed.wrapping_mul(0x9e3779b97f4a7c15) | 1;
        for off in (64..PAGE).step_by(4) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            mem.store_u32(off, x as u32);
        }
        mem.store_u32(8, (x >> 32) as u32 % 4);
        for _ in 0..5 {
            let _ = r.front.poll();
        }
    }
}

#[test]
fn grant_exhaustion_rolls_back() {
    let mut r = rig();
    let p = r.pages(5);
    r.host.0.borrow_mut().grant_budget = Some(3);
    assert_eq!(
        r.front.submit(
            1,
            Request::Read {
                sector: 0,
                segs: &segs(&p)
            }
        ),
        Err(Error::Grant(GrantError::Exhausted))
    );
    assert_eq!(r.grants_outstanding(), 0);
    assert_eq!(r.front.in_flight(), 0);
    r.host.0.borrow_mut().grant_budget = None;
    assert_eq!(
        r.io(
            2,
            Request::Read {
                sector: 0,
                segs: &segs(&p)
            }
        ),
        Ok(Ok(()))
    );
}

#[test]
fn hand_made_requests_for_backend_tests() {
    let mut r = rig();
    let p = r.pages(1)[0];
    let gref = r
        .front
        .host_mut()
        .grant(BACKEND, Mfn::new(p as u64), false)
        .unwrap();
    // nr_segments 200 in a direct request, first_sect > last_sect, past the end, bad gref.
    let mut req = BlkifRequest {
        operation: BLKIF_OP_READ,
        nr_segments: 200,
        ..Default::default()
    };
    req.seg[0] = BlkifRequestSegment {
        gref,
        first_sect: 0,
        last_sect: 7,
        pad: [0; 2],
    };
    let mut reqs = vec![req];
    req.nr_segments = 1;
    req.seg[0].first_sect = 5;
    req.seg[0].last_sect = 2;
    reqs.push(req);
    req.seg[0].first_sect = 0;
    req.seg[0].last_sect = 7;
    req.sector_number = 2048;
    reqs.push(req);
    req.sector_number = 0;
    req.seg[0].gref = GrantRef::new(4000);
    reqs.push(req);
    for (i, q) in reqs.iter().enumerate() {
        r.front.submit_raw(i as u64, *q).unwrap();
    }
    r.front.kick();
    r.back.serve();
    for _ in 0..reqs.len() {
        assert_eq!(r.front.poll().unwrap().unwrap().result, Err(IoError::Error));
    }
    assert_eq!(r.front.host_mut().end_access(gref), Ok(()));
}

#[test]
fn ids_survive_many_rounds() {
    let mut r = rig();
    let p = r.pages(1);
    for i in 0..500u64 {
        let sector = (i * 8) % 2048;
        r.fill(&p, i, sector);
        assert_eq!(
            r.io(
                i,
                Request::Write {
                    sector,
                    segs: &segs(&p)
                }
            ),
            Ok(Ok(()))
        );
    }
    // The ring indices wrapped around the 32 slots many times.
    assert!(r.front.stats().requests == 500);
}

#[test]
fn ring_indices_wrap() {
    let host = TestHost::default();
    let mem = VecRingMemory::pages(0);
    let start = RingIdx::new(u32::MAX - 5);
    let ring = BlkifFrontRing::init_at(mem.clone(), start).unwrap();
    let mut back = Backend::new(mem, host.0.clone(), 64);
    back.ring = BlkifBackRing::attach(back.ring.memory().clone(), start).unwrap();
    let mut front = BlkFront::new(ring, host.clone(), BACKEND, 1, disk(64));
    for i in 0..20 {
        front.submit(i, Request::Flush).unwrap();
        front.kick();
        back.serve();
        assert_eq!(front.poll().unwrap().unwrap().tag, i);
    }
}

// ---------------------------------------------------------------------------------------
// The XenBus handshake against a fake xenstore whose `wait` runs the fake backend's
// state machine.

const FE: &str = "device/vbd/51712";
const BE: &str = "/local/domain/0/backend/vbd/1/51712";

struct FakeStore {
    nodes: BTreeMap<String, String>,
    pending: Option<BTreeMap<String, String>>,
    conflicts: u32,
    waits: u32,
    /// The backend's ring memory once it attached.
    ring_mem: Option<VecRingMemory>,
    world: Rc<RefCell<World>>,
    backend: Option<Backend>,
    backend_persistent: bool,
    /// Linux-style close (Closing answered with Closing) vs. straight to Closed.
    linux_close: bool,
    /// Never release grants.
    stubborn: bool,
    /// Give up after this many waits.
    patience: u32,
    connect_backend: bool,
}

impl FakeStore {
    fn new(world: Rc<RefCell<World>>) -> FakeStore {
        let mut nodes = BTreeMap::new();
        for (k, v) in [
            (format!("{FE}/backend"), BE.to_string()),
            (format!("{FE}/backend-id"), "0".into()),
            (format!("{FE}/state"), "1".into()),
            (format!("{FE}/virtual-device"), "51712".into()),
            (format!("{FE}/device-type"), "disk".into()),
            (format!("{BE}/state"), "1".into()),
        ] {
            nodes.insert(k, v);
        }
        FakeStore {
            nodes,
            pending: None,
            conflicts: 0,
            waits: 0,
            ring_mem: None,
            world,
            backend: None,
            backend_persistent: true,
            linux_close: true,
            stubborn: false,
            patience: 100,
            connect_backend: true,
        }
    }

    fn get(&self, k: &str) -> Option<&str> {
        self.nodes.get(k).map(String::as_str)
    }

    fn set(&mut self, k: &str, v: &str) {
        self.nodes.insert(k.into(), v.into());
    }

    /// One step of the backend's xenbus state machine (Linux blkback's order).
    fn backend_step(&mut self) {
        let fe = self.get(&format!("{FE}/state")).unwrap_or("0").to_string();
        let be = self.get(&format!("{BE}/state")).unwrap_or("0").to_string();
        match (be.as_str(), fe.as_str()) {
            ("1", _) => {
                self.set(&format!("{BE}/feature-max-indirect-segments"), "256");
                self.set(&format!("{BE}/max-ring-page-order"), "4");
                self.set(&format!("{BE}/state"), "2");
            }
            ("2", "3") if self.connect_backend => {
                let rr: u32 = self
                    .get(&format!("{FE}/ring-ref"))
                    .unwrap()
                    .parse()
                    .unwrap();
                assert_eq!(self.get(&format!("{FE}/protocol")), Some("x86_64-abi"));
                assert!(self.get(&format!("{FE}/event-channel")).is_some());
                let fe_persistent = self.get(&format!("{FE}/feature-persistent")) == Some("1");
                {
                    let mut w = self.world.borrow_mut();
                    let e = w.grants.get_mut(&rr).expect("ring-ref is a grant");
                    assert!(!e.readonly);
                    e.mapped += 1;
                }
                let mut b = Backend::new(self.ring_mem.clone().unwrap(), self.world.clone(), 4096);
                b.persistent = fe_persistent && self.backend_persistent;
                self.backend = Some(b);
                self.set(&format!("{BE}/sectors"), "4096");
                self.set(&format!("{BE}/info"), "0");
                self.set(&format!("{BE}/sector-size"), "512");
                self.set(&format!("{BE}/feature-flush-cache"), "1");
                self.set(&format!("{BE}/feature-discard"), "1");
                self.set(
                    &format!("{BE}/feature-persistent"),
                    if self.backend_persistent { "1" } else { "0" },
                );
                self.set(&format!("{BE}/state"), "4");
            }
            ("4", "5") if self.linux_close => self.set(&format!("{BE}/state"), "5"),
            ("4" | "5", "5" | "6") if fe == "6" || !self.linux_close => {
                if !self.stubborn {
                    if let Some(b) = self.backend.as_mut() {
                        b.unmap_all();
                    }
                    let rr: u32 = self
                        .get(&format!("{FE}/ring-ref"))
                        .unwrap()
                        .parse()
                        .unwrap();
                    if let Some(e) = self.world.borrow_mut().grants.get_mut(&rr) {
                        e.mapped = 0;
                    }
                }
                self.set(&format!("{BE}/state"), "6");
            }
            _ => {}
        }
    }
}

impl Store for FakeStore {
    fn read(&mut self, _tx: Tx, path: &str) -> Result<Option<String>, StoreError> {
        Ok(self.nodes.get(path).cloned())
    }
    fn write(&mut self, tx: Tx, path: &str, value: &str) -> Result<(), StoreError> {
        match (tx, self.pending.as_mut()) {
            (Tx::NONE, _) => {
                self.nodes.insert(path.into(), value.into());
            }
            (_, Some(p)) => {
                p.insert(path.into(), value.into());
            }
            (_, None) => return Err(StoreError::Failed("no transaction")),
        }
        Ok(())
    }
    fn transaction_start(&mut self) -> Result<Tx, StoreError> {
        self.pending = Some(BTreeMap::new());
        Ok(Tx(1))
    }
    fn transaction_end(&mut self, _tx: Tx, commit: bool) -> Result<TxEnd, StoreError> {
        let p = self.pending.take().unwrap_or_default();
        if commit && self.conflicts > 0 {
            self.conflicts -= 1;
            return Ok(TxEnd::Retry);
        }
        if commit {
            self.nodes.extend(p);
        }
        Ok(TxEnd::Done)
    }
    fn wait(&mut self) -> Result<(), StoreError> {
        self.waits += 1;
        if self.waits > self.patience {
            return Err(StoreError::Timeout);
        }
        self.backend_step();
        Ok(())
    }
}

fn handshake(
    store: &mut FakeStore,
    host: &TestHost,
    opts: &Options,
) -> Result<(Device, BlkFront<VecRingMemory, TestHost>), HandshakeError> {
    let dev = xenbus::probe(store, 51712)?;
    assert_eq!(dev.backend, BE);
    assert_eq!(dev.handle, 51712);
    xenbus::wait_backend(store, &dev, XenbusState::InitWait)?;
    let offer = xenbus::read_offer(store, &dev)?;
    assert_eq!(offer.ring_order(0), 0);
    let mut h = host.clone();
    let ring_page = h.alloc_page().unwrap();
    // The test ring lives in VecRingMemory; its "frame" is the page we allocated.
    let mem = VecRingMemory::pages(0);
    store.ring_mem = Some(mem.clone());
    let blk = xenbus::connect(store, &dev, h, mem, &[Mfn::new(ring_page as u64)], 17, opts)?;
    Ok((dev, blk))
}

#[test]
fn handshake_connect_io_close() {
    let host = TestHost::default();
    let mut store = FakeStore::new(host.0.clone());
    store.conflicts = 2;
    let (dev, mut blk) = handshake(&mut store, &host, &Options::default()).unwrap();
    assert_eq!(store.get(&format!("{FE}/state")), Some("4"));
    assert_eq!(store.get(&format!("{FE}/event-channel")), Some("17"));
    assert_eq!(store.get(&format!("{FE}/feature-persistent")), Some("1"));
    assert_eq!(blk.disk().sectors, 4096);
    assert!(blk.disk().persistent && blk.disk().flush && blk.disk().discard);
    assert_eq!(blk.disk().max_indirect_segments, 256);
    // Some I/O through the connected ring.
    let pages: Vec<usize> = (0..16).map(|_| host.0.borrow_mut().new_page()).collect();
    for (i, &p) in pages.iter().enumerate() {
        let mut b = vec![0; PAGE];
        fill_pattern(1, 8 * i as u64, &mut b);
        host.0.borrow_mut().pages[p].copy_from_slice(&b);
    }
    blk.submit(
        1,
        Request::Write {
            sector: 0,
            segs: &segs(&pages),
        },
    )
    .unwrap();
    blk.kick();
    store.backend.as_mut().unwrap().serve();
    assert_eq!(blk.poll().unwrap().unwrap().result, Ok(()));
    let closed = xenbus::close(&mut store, &dev, blk);
    assert_eq!(closed.result, Ok(()));
    assert!(closed.ring_revoked);
    assert_eq!(store.get(&format!("{FE}/state")), Some("6"));
    assert_eq!(host.0.borrow().grants.len(), 0);
}

#[test]
fn handshake_without_persistent_backend_is_copyless() {
    let host = TestHost::default();
    let mut store = FakeStore::new(host.0.clone());
    store.backend_persistent = false;
    store.linux_close = false;
    let (dev, blk) = handshake(&mut store, &host, &Options::default()).unwrap();
    assert!(!blk.disk().persistent);
    let closed = xenbus::close(&mut store, &dev, blk);
    assert_eq!(closed.result, Ok(()));
}

#[test]
fn close_fails_cleanly_when_the_backend_keeps_grants() {
    let host = TestHost::default();
    let mut store = FakeStore::new(host.0.clone());
    store.stubborn = true;
    let (dev, mut blk) = handshake(&mut store, &host, &Options::default()).unwrap();
    let p = host.0.borrow_mut().new_page();
    blk.submit(
        1,
        Request::Read {
            sector: 0,
            segs: &[Seg::page(p)],
        },
    )
    .unwrap();
    blk.kick();
    store.backend.as_mut().unwrap().serve();
    assert_eq!(blk.poll().unwrap().unwrap().result, Ok(()));
    let ring_ref = blk.ring_refs()[0];
    let closed = xenbus::close(&mut store, &dev, blk);
    match closed.result {
        Err(HandshakeError::StillMapped(g)) => assert!(g.contains(&ring_ref) && g.len() == 2),
        r => panic!("unexpected {r:?}"),
    }
    assert!(!closed.ring_revoked);
}

#[test]
fn handshake_times_out_and_revokes_the_ring() {
    let host = TestHost::default();
    let mut store = FakeStore::new(host.0.clone());
    store.connect_backend = false;
    store.patience = 10;
    let r = handshake(&mut store, &host, &Options::default());
    assert!(matches!(
        r,
        Err(HandshakeError::Store(_, StoreError::Timeout))
    ));
    assert_eq!(host.0.borrow().grants.len(), 0);
}

#[test]
fn handshake_refuses_a_closed_backend_and_missing_nodes() {
    let host = TestHost::default();
    let mut store = FakeStore::new(host.0.clone());
    store.set(&format!("{BE}/state"), "6");
    let dev = xenbus::probe(&mut store, 51712).unwrap();
    assert_eq!(
        xenbus::wait_backend(&mut store, &dev, XenbusState::InitWait),
        Err(HandshakeError::BackendClosed(XenbusState::Closed))
    );
    store.nodes.remove(&format!("{FE}/virtual-device"));
    assert!(matches!(
        xenbus::probe(&mut store, 51712),
        Err(HandshakeError::Missing(_))
    ));
    assert!(matches!(
        xenbus::probe(&mut store, 5),
        Err(HandshakeError::Missing(_))
    ));
}

#[test]
fn read_disk_checks_mandatory_nodes() {
    let host = TestHost::default();
    let mut store = FakeStore::new(host.0.clone());
    let dev = xenbus::probe(&mut store, 51712).unwrap();
    assert!(matches!(
        xenbus::read_disk(&mut store, &dev, &Options::default()),
        Err(HandshakeError::Missing(_))
    ));
    store.set(&format!("{BE}/sectors"), "100");
    store.set(&format!("{BE}/info"), "4");
    store.set(&format!("{BE}/sector-size"), "1000");
    assert!(matches!(
        xenbus::read_disk(&mut store, &dev, &Options::default()),
        Err(HandshakeError::Bad(_))
    ));
    store.set(&format!("{BE}/sector-size"), "4096");
    store.set(&format!("{BE}/feature-max-indirect-segments"), "8");
    let d = xenbus::read_disk(&mut store, &dev, &Options::default()).unwrap();
    assert!(d.read_only());
    assert_eq!(
        (
            d.sector_size,
            d.max_indirect_segments,
            d.persistent,
            d.flush
        ),
        (4096, 0, false, false)
    );
}

#[test]
fn sector_size_alignment() {
    let mut d = disk(64);
    d.sector_size = 4096;
    let mut r = rig_with(d);
    let p = r.pages(1);
    let half = [Seg {
        page: p[0],
        first_sect: 0,
        last_sect: 3,
    }];
    assert!(matches!(
        r.front.submit(
            1,
            Request::Read {
                sector: 0,
                segs: &half
            }
        ),
        Err(Error::OutOfRange { .. })
    ));
    assert!(matches!(
        r.front.submit(
            1,
            Request::Read {
                sector: 4,
                segs: &segs(&p)
            }
        ),
        Err(Error::OutOfRange { .. })
    ));
    assert_eq!(
        r.io(
            2,
            Request::Read {
                sector: 8,
                segs: &segs(&p)
            }
        ),
        Ok(Ok(()))
    );
}
