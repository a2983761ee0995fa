//! Test doubles: an in-memory xenstore, a "hypervisor" with guest pages, grant table,
//! device mappings and event channels, a Vec-backed disk that completes asynchronously and
//! out of order (and checks that every DMA hits a live mapping of the right kind), and a
//! frontend built on the ring crate's `FrontRing` over `VecRingMemory`.
#![allow(dead_code)]

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;

use blkback::*;
use ring::blkif::*;
use ring::{FrontRing, RingMemory, VecRingMemory};
use xen_abi::{DomId, EvtchnPort, GrantRef};

pub const BUS_BASE: u64 = 0x10_0000_0000;
pub const PAGE: usize = 4096;

/// A granted page: guest page index, read-only grant.
#[derive(Clone, Copy, Debug)]
pub struct Grant {
    pub page: usize,
    pub readonly: bool,
}

#[derive(Default)]
pub struct World {
    pub pages: Vec<[u8; PAGE]>,
    pub grants: HashMap<u32, Grant>,
    pub next_gref: u32,
    /// handle -> (gref, bus, readonly)
    pub live: HashMap<u32, (u32, u64, bool)>,
    pub next_handle: u32,
    pub map_calls: usize,
    pub mapped_total: usize,
    pub unmap_calls: usize,
    pub copies: usize,
    pub rings: HashMap<u32, VecRingMemory>,
    pub rings_mapped: usize,
    pub ports_bound: Vec<u32>,
    pub notifies: usize,
    /// Disks dom0 has (name -> disk).
    pub disks: HashMap<String, FakeDisk>,
    pub disks_given_back: Vec<String>,
    /// Names of disks ever taken.
    pub taken: Vec<String>,
    /// Disks given back, available to the next `take_disk`.
    pub returned: HashMap<String, Box<dyn BlockDevice>>,
    /// Completions are held back while set.
    pub hold: bool,
    /// Log of device operations (op, sector, nr_sectors, segments).
    pub dev_log: Vec<(BlockOp, u64, u64, usize)>,
    pub dma_violations: Vec<String>,
}

pub type W = Rc<RefCell<World>>;

impl World {
    pub fn new_page(&mut self) -> usize {
        self.pages.push([0; PAGE]);
        self.pages.len() - 1
    }

    pub fn grant(&mut self, page: usize, readonly: bool) -> GrantRef {
        self.next_gref += 1;
        let g = self.next_gref + 100;
        self.grants.insert(g, Grant { page, readonly });
        GrantRef::new(g)
    }

    fn page_of_bus(&self, bus: u64) -> Option<usize> {
        let p = bus.checked_sub(BUS_BASE)? / PAGE as u64;
        Some(p as usize)
    }
}

// ---------------------------------------------------------------- store

#[derive(Default)]
pub struct FakeStore {
    pub nodes: BTreeMap<String, String>,
    pub writes: usize,
    /// Answer `changed` as a store with watches does (only after a change); otherwise
    /// every poll rescans.
    pub track_changes: bool,
    pub dirty: bool,
}

impl FakeStore {
    pub fn set(&mut self, path: &str, v: &str) {
        self.dirty = true;
        self.nodes.insert(path.to_string(), v.to_string());
    }
    pub fn get(&self, path: &str) -> Option<&str> {
        self.nodes.get(path).map(String::as_str)
    }
    pub fn rm_tree(&mut self, path: &str) {
        self.dirty = true;
        let pre = format!("{path}/");
        self.nodes.retain(|k, _| k != path && !k.starts_with(&pre));
    }
}

impl Store for FakeStore {
    fn read(&mut self, path: &str) -> Option<String> {
        self.nodes.get(path).cloned()
    }
    fn write(&mut self, path: &str, value: &str) -> bool {
        self.writes += 1;
        self.dirty = true;
        self.nodes.insert(path.to_string(), value.to_string());
        true
    }
    fn directory(&mut self, path: &str) -> Vec<String> {
        let pre = format!("{path}/");
        let mut out: Vec<String> = Vec::new();
        for k in self.nodes.keys() {
            if let Some(rest) = k.strip_prefix(&pre) {
                let child = rest.split('/').next().unwrap_or("").to_string();
                if !child.is_empty() && !out.contains(&child) {
                    out.push(child);
                }
            }
        }
        out
    }
    fn changed(&mut self) -> bool {
        !self.track_changes || core::mem::take(&mut self.dirty)
    }
}

// ---------------------------------------------------------------- platform

pub struct FakePlatform {
    pub w: W,
    pub dom: u16,
}

impl GrantMapper for FakePlatform {
    fn map_batch(
        &mut self,
        dom: DomId,
        reqs: &[MapRequest],
        out: &mut [Result<Mapping, GrantError>],
    ) {
        let mut w = self.w.borrow_mut();
        assert_eq!(reqs.len(), out.len());
        assert_eq!(dom.raw(), self.dom);
        w.map_calls += 1;
        w.mapped_total += reqs.len();
        for (r, o) in reqs.iter().zip(out.iter_mut()) {
            *o = match w.grants.get(&r.gref.raw()).copied() {
                None => Err(GrantError::BAD_GNTREF),
                // Xen refuses a writable mapping of a read-only grant (GNTST_general_error).
                Some(g) if g.readonly && !r.readonly => Err(GrantError::GENERAL),
                Some(g) => {
                    w.next_handle += 1;
                    let h = w.next_handle;
                    let bus = BUS_BASE + (g.page * PAGE) as u64;
                    w.live.insert(h, (r.gref.raw(), bus, r.readonly));
                    Ok(Mapping {
                        handle: h,
                        bus_addr: bus,
                    })
                }
            };
        }
    }

    fn unmap_batch(&mut self, maps: &[Mapping]) {
        let mut w = self.w.borrow_mut();
        w.unmap_calls += 1;
        for m in maps {
            let (_, bus, _) = w
                .live
                .remove(&m.handle)
                .expect("unmap of a handle not mapped");
            assert_eq!(bus, m.bus_addr);
        }
    }

    fn copy_in(&mut self, _dom: DomId, gref: GrantRef, dst: &mut [u8]) -> Result<(), GrantError> {
        let mut w = self.w.borrow_mut();
        w.copies += 1;
        let g = w
            .grants
            .get(&gref.raw())
            .copied()
            .ok_or(GrantError::BAD_GNTREF)?;
        dst.copy_from_slice(&w.pages[g.page][..dst.len()]);
        Ok(())
    }
}

impl Platform for FakePlatform {
    type Ring = VecRingMemory;

    fn map_ring(
        &mut self,
        _dom: DomId,
        grefs: &[GrantRef],
    ) -> Result<VecRingMemory, PlatformError> {
        let mut w = self.w.borrow_mut();
        let r = w
            .rings
            .get(&grefs[0].raw())
            .cloned()
            .ok_or(PlatformError { errno: 22 })?;
        assert_eq!(
            r.len(),
            grefs.len() * PAGE,
            "ring size and ring-ref count disagree"
        );
        w.rings_mapped += 1;
        Ok(r)
    }
    fn unmap_ring(&mut self, _ring: VecRingMemory) {
        self.w.borrow_mut().rings_mapped -= 1;
    }
    fn bind_evtchn(
        &mut self,
        _dom: DomId,
        remote: EvtchnPort,
    ) -> Result<EvtchnPort, PlatformError> {
        if remote.raw() == 0 {
            return Err(PlatformError { errno: 22 });
        }
        let mut w = self.w.borrow_mut();
        let p = 1000 + remote.raw();
        w.ports_bound.push(p);
        Ok(EvtchnPort::new(p))
    }
    fn unbind_evtchn(&mut self, port: EvtchnPort) {
        let mut w = self.w.borrow_mut();
        let i = w
            .ports_bound
            .iter()
            .position(|&p| p == port.raw())
            .expect("unbind of unbound");
        w.ports_bound.remove(i);
    }
    fn notify(&mut self, _port: EvtchnPort) {
        self.w.borrow_mut().notifies += 1;
    }
    fn take_disk(&mut self, name: &str) -> Option<Box<dyn BlockDevice>> {
        let mut w = self.w.borrow_mut();
        match w.disks.remove(name) {
            Some(d) => {
                w.taken.push(name.to_string());
                Some(Box::new(d))
            }
            None => w.returned.remove(name),
        }
    }
    fn give_back_disk(&mut self, name: &str, disk: Box<dyn BlockDevice>) {
        assert_eq!(disk.in_flight(), 0, "disk given back with I/O in flight");
        let mut w = self.w.borrow_mut();
        w.disks_given_back.push(name.to_string());
        w.returned.insert(name.to_string(), disk);
    }
    fn disk_exists(&mut self, name: &str) -> bool {
        let w = self.w.borrow();
        w.disks_given_back.iter().any(|n| n == name)
            || w.disks.contains_key(name)
            || w.returned.contains_key(name)
            || w.taken.iter().any(|n| n == name)
    }
}

// ---------------------------------------------------------------- disk

pub struct FakeDisk {
    pub w: W,
    pub data: Rc<RefCell<Vec<u8>>>,
    pub info: DiskInfo,
    pending: Vec<(u64, BlockOp, u64, u64, Vec<DmaSegment>)>,
    pub flushes: Rc<RefCell<usize>>,
}

impl FakeDisk {
    pub fn new(w: &W, sectors: u64, read_only: bool) -> FakeDisk {
        FakeDisk {
            w: w.clone(),
            data: Rc::new(RefCell::new(vec![0; sectors as usize * 512])),
            info: DiskInfo {
                sectors,
                sector_size: 512,
                physical_sector_size: 4096,
                read_only,
                flush: true,
                discard: true,
                discard_granularity: 4096,
                max_discard_sectors: 64,
                max_segments: 16,
                queue_depth: 4,
            },
            pending: Vec::new(),
            flushes: Rc::new(RefCell::new(0)),
        }
    }

    /// Checks the DMA buffer is inside a live mapping of the right kind; returns the page.
    fn check(w: &mut World, s: &DmaSegment, device_writes: bool) -> Option<usize> {
        let page_bus = s.maddr & !0xfff;
        let ok = w
            .live
            .values()
            .any(|&(_, b, ro)| b == page_bus && !(ro && device_writes));
        if !ok || (s.maddr & 0xfff) as usize + s.len as usize > PAGE || !s.len.is_multiple_of(512) {
            w.dma_violations
                .push(format!("{s:?} writes={device_writes}"));
            return None;
        }
        w.page_of_bus(page_bus)
    }
}

impl BlockDevice for FakeDisk {
    fn info(&self) -> DiskInfo {
        self.info
    }

    fn submit(&mut self, req: &DeviceRequest<'_>) -> Result<(), SubmitError> {
        if self.pending.len() >= self.info.queue_depth as usize {
            return Err(SubmitError::Busy);
        }
        if req.segments.len() > self.info.max_segments as usize {
            return Err(SubmitError::Invalid);
        }
        let end = req.sector + req.nr_sectors;
        if end > self.info.sectors {
            return Err(SubmitError::Invalid);
        }
        if req.op == BlockOp::Discard && req.nr_sectors > u64::from(self.info.max_discard_sectors) {
            return Err(SubmitError::Invalid);
        }
        let segsum: u64 = req.segments.iter().map(|s| u64::from(s.len) / 512).sum();
        if matches!(req.op, BlockOp::Read | BlockOp::Write) && segsum != req.nr_sectors {
            return Err(SubmitError::Invalid);
        }
        self.w
            .borrow_mut()
            .dev_log
            .push((req.op, req.sector, req.nr_sectors, req.segments.len()));
        self.pending.push((
            req.tag,
            req.op,
            req.sector,
            req.nr_sectors,
            req.segments.to_vec(),
        ));
        Ok(())
    }

    fn kick(&mut self) {}

    fn complete(&mut self, done: &mut dyn FnMut(u64, DeviceStatus)) -> usize {
        if self.w.borrow().hold {
            return 0;
        }
        let mut n = 0;
        // Out of order: newest first.
        while let Some((tag, op, sector, nr, segs)) = self.pending.pop() {
            let mut w = self.w.borrow_mut();
            let mut data = self.data.borrow_mut();
            let mut st = DeviceStatus::Ok;
            let mut at = sector as usize * 512;
            match op {
                BlockOp::Read | BlockOp::Write => {
                    for s in &segs {
                        let Some(page) = Self::check(&mut w, s, op == BlockOp::Read) else {
                            st = DeviceStatus::IoError;
                            break;
                        };
                        let off = (s.maddr & 0xfff) as usize;
                        let len = s.len as usize;
                        if op == BlockOp::Read {
                            w.pages[page][off..off + len].copy_from_slice(&data[at..at + len]);
                        } else {
                            data[at..at + len].copy_from_slice(&w.pages[page][off..off + len]);
                        }
                        at += len;
                    }
                }
                BlockOp::Flush => *self.flushes.borrow_mut() += 1,
                BlockOp::Discard => data[at..at + nr as usize * 512].fill(0),
            }
            drop(w);
            drop(data);
            done(tag, st);
            n += 1;
        }
        n
    }

    fn in_flight(&self) -> usize {
        self.pending.len()
    }
}

// ---------------------------------------------------------------- frontend

pub type Front = FrontRing<BlkifRequest, BlkifResponse, VecRingMemory>;

pub struct Harness {
    pub w: W,
    pub store: FakeStore,
    pub plat: FakePlatform,
    pub bb: Blkback<FakePlatform>,
}

pub fn be_path(dom: u16, dev: u32) -> String {
    format!("/local/domain/0/backend/vbd/{dom}/{dev}")
}
pub fn fe_path(dom: u16, dev: u32) -> String {
    format!("/local/domain/{dom}/device/vbd/{dev}")
}

impl Harness {
    pub fn new(dom: u16) -> Harness {
        Self::with_config(dom, Config::default())
    }

    pub fn with_config(dom: u16, cfg: Config) -> Harness {
        let w: W = Rc::new(RefCell::new(World::default()));
        Harness {
            w: w.clone(),
            store: FakeStore::default(),
            plat: FakePlatform { w, dom },
            bb: Blkback::new("/local/domain/0", cfg),
        }
    }

    pub fn add_disk(
        &mut self,
        name: &str,
        sectors: u64,
        ro: bool,
    ) -> (Rc<RefCell<Vec<u8>>>, Rc<RefCell<usize>>) {
        let d = FakeDisk::new(&self.w, sectors, ro);
        let h = (d.data.clone(), d.flushes.clone());
        self.w.borrow_mut().disks.insert(name.to_string(), d);
        h
    }

    pub fn add_disk_with(
        &mut self,
        name: &str,
        f: impl FnOnce(&mut DiskInfo),
        sectors: u64,
    ) -> Rc<RefCell<Vec<u8>>> {
        let mut d = FakeDisk::new(&self.w, sectors, false);
        f(&mut d.info);
        let h = d.data.clone();
        self.w.borrow_mut().disks.insert(name.to_string(), d);
        h
    }

    /// The toolstack's part of `xl block-attach`.
    pub fn toolstack_attach(&mut self, dom: u16, dev: u32, params: &str, mode: &str) {
        let be = be_path(dom, dev);
        let fe = fe_path(dom, dev);
        for (k, v) in [
            ("frontend", fe.as_str()),
            ("frontend-id", &dom.to_string()),
            ("params", params),
            ("mode", mode),
            ("type", "phy"),
            ("dev", "xvda"),
            ("online", "1"),
            ("state", "1"),
        ] {
            self.store.set(&format!("{be}/{k}"), v);
        }
        for (k, v) in [
            ("backend", be.as_str()),
            ("backend-id", "0"),
            ("state", "1"),
            ("virtual-device", &dev.to_string()),
        ] {
            self.store.set(&format!("{fe}/{k}"), v);
        }
    }

    pub fn poll(&mut self) -> bool {
        self.bb.poll(&mut self.store, &mut self.plat)
    }

    pub fn be_state(&self, dom: u16, dev: u32) -> Option<String> {
        self.store
            .get(&format!("{}/state", be_path(dom, dev)))
            .map(str::to_string)
    }

    /// Frontend: allocates and grants a ring of 2^order pages, writes its keys and
    /// `Initialised`.
    pub fn connect_frontend(&mut self, dom: u16, dev: u32, order: u32, persistent: bool) -> Front {
        let mem = VecRingMemory::pages(order);
        let front = Front::init(mem.clone()).unwrap();
        let fe = fe_path(dom, dev);
        let mut refs = Vec::new();
        for _ in 0..(1 << order) {
            let p = self.w.borrow_mut().new_page();
            refs.push(self.w.borrow_mut().grant(p, false));
        }
        self.w.borrow_mut().rings.insert(refs[0].raw(), mem);
        if order == 0 {
            self.store
                .set(&format!("{fe}/ring-ref"), &refs[0].raw().to_string());
        } else {
            self.store
                .set(&format!("{fe}/ring-page-order"), &order.to_string());
            for (i, r) in refs.iter().enumerate() {
                self.store
                    .set(&format!("{fe}/ring-ref{i}"), &r.raw().to_string());
            }
        }
        self.store.set(&format!("{fe}/event-channel"), "7");
        self.store.set(&format!("{fe}/protocol"), "x86_64-abi");
        self.store.set(
            &format!("{fe}/feature-persistent"),
            if persistent { "1" } else { "0" },
        );
        self.store.set(&format!("{fe}/state"), "3");
        front
    }

    /// Attach + handshake to Connected.
    pub fn setup(
        &mut self,
        dom: u16,
        dev: u32,
        disk: &str,
        mode: &str,
        order: u32,
        persistent: bool,
    ) -> Front {
        self.toolstack_attach(dom, dev, disk, mode);
        self.poll();
        assert_eq!(self.be_state(dom, dev).as_deref(), Some("2"));
        let f = self.connect_frontend(dom, dev, order, persistent);
        self.poll();
        assert_eq!(self.be_state(dom, dev).as_deref(), Some("4"));
        self.store.set(&format!("{}/state", fe_path(dom, dev)), "4");
        f
    }

    /// A granted data page filled with `fill`.
    pub fn data_page(&mut self, fill: u8, readonly: bool) -> (usize, GrantRef) {
        let mut w = self.w.borrow_mut();
        let p = w.new_page();
        w.pages[p] = [fill; PAGE];
        let g = w.grant(p, readonly);
        (p, g)
    }

    pub fn page(&self, p: usize) -> [u8; PAGE] {
        self.w.borrow().pages[p]
    }

    /// Polls until `n` responses arrived (at most 50 polls).
    pub fn responses(&mut self, f: &mut Front, n: usize) -> Vec<BlkifResponse> {
        let mut out = Vec::new();
        for _ in 0..50 {
            self.poll();
            while let Some(r) = f.get_response().unwrap() {
                out.push(r);
            }
            // Re-arm rsp_event as a real frontend does before it sleeps.
            while f.final_check_for_responses() {
                while let Some(r) = f.get_response().unwrap() {
                    out.push(r);
                }
            }
            if out.len() >= n {
                break;
            }
        }
        out
    }
}

pub fn seg(g: GrantRef, first: u8, last: u8) -> BlkifRequestSegment {
    BlkifRequestSegment {
        gref: g,
        first_sect: first,
        last_sect: last,
        pad: [0; 2],
    }
}

pub fn rw(op: u8, id: u64, sector: u64, segs: &[BlkifRequestSegment]) -> BlkifRequest {
    let mut r = BlkifRequest {
        operation: op,
        nr_segments: segs.len() as u8,
        id,
        sector_number: sector,
        ..Default::default()
    };
    r.seg[..segs.len()].copy_from_slice(segs);
    r
}

pub fn send(f: &mut Front, reqs: &[BlkifRequest]) {
    for r in reqs {
        f.push_request(r).unwrap();
    }
    let _ = f.push_requests_and_check_notify();
}

pub fn status_of(rsps: &[BlkifResponse], id: u64) -> i16 {
    let r: Vec<_> = rsps.iter().filter(|r| r.id == id).collect();
    assert_eq!(r.len(), 1, "exactly one response for id {id}: {rsps:?}");
    r[0].status
}
