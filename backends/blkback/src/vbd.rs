//! One virtual block device: the xenbus handshake of `backend/vbd/<domid>/<devid>` with
//! its frontend (Linux `xen-blkback/xenbus.c`: `xen_blkbk_probe`, `frontend_changed`,
//! `connect_ring`, `connect`, `xen_blkif_disconnect`), driving an [`Engine`] once
//! connected.
//!
//! Backend keys read (toolstack): `frontend`, `frontend-id`, `params` (the dom0 disk),
//! `mode` (`w`/`r`), `online`, `state`. Written by us before `InitWait`: the features and
//! the disk geometry. Frontend keys read at connect: `ring-ref` or `ring-page-order` +
//! `ring-refN`, `event-channel`, `protocol`, `multi-queue-num-queues`,
//! `feature-persistent`.
//!
//! Closing: a frontend going `Closing`/`Closed` (or vanishing), the toolstack setting
//! `online` 0 or our `state` to 5, the backend directory disappearing, a fatal error, or a
//! frontend that broke the ring all stop the engine: requests not on the device are failed,
//! those on it are waited for (the device DMAs into the frontend's pages), then every
//! grant, the ring and the channel are released and the state goes `Closed`.

use alloc::boxed::Box;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

use ring::blkif::{BlkifBackRing, VDISK_READONLY};
use xen_abi::{DomId, EvtchnPort, GrantRef};

use crate::device::{BlockDevice, DiskInfo};
use crate::engine::{DeviceLimits, Engine, Stats};
use crate::request::Limits;
use crate::xenbus::{Platform, Store, XenbusState};

const EINVAL: u32 = 22;
const ENODEV: u32 = 19;
const ENOSYS: u32 = 38;
const ENOENT: u32 = 2;
const EPROTO: u32 = 71;

/// Backend tunables (Linux module parameters).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// `max-ring-page-order` offered (0..=3 here: up to 8 pages, 256 slots).
    pub max_ring_page_order: u32,
    /// `feature-max-indirect-segments` offered (0 disables indirect; at most 512*8).
    pub max_indirect_segments: u16,
    /// Persistent grants kept per device (0 disables `feature-persistent`).
    pub max_persistent_grants: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_ring_page_order: 3,
            max_indirect_segments: 256,
            max_persistent_grants: crate::grant::DEFAULT_MAX_PERSISTENT,
        }
    }
}

/// A connected ring.
struct Conn<R: ring::RingMemory> {
    engine: Engine<R>,
    ring: R,
    port: EvtchnPort,
}

/// What `xl block-list` shows about one device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VbdStatus {
    /// Frontend domain.
    pub domid: DomId,
    /// Virtual device number (`dev` / the directory name).
    pub devid: u32,
    /// The backend directory.
    pub backend: String,
    /// The dom0 disk (`params`).
    pub params: String,
    /// Writes refused.
    pub read_only: bool,
    /// Our state.
    pub state: XenbusState,
    /// The frontend's state, if readable.
    pub frontend_state: XenbusState,
    /// The frontend's event channel port while connected.
    pub evtchn: Option<u32>,
    /// The first ring grant while connected.
    pub ring_ref: Option<u32>,
    /// Ring pages while connected.
    pub ring_pages: u32,
    /// Requests accepted and not answered.
    pub in_flight: usize,
    /// Persistent grants held.
    pub persistent_grants: usize,
    /// Counters over every connection.
    pub stats: Stats,
    /// The last fatal error written.
    pub error: Option<String>,
}

/// One `backend/vbd/<domid>/<devid>`; see the module docs.
pub struct Vbd<P: Platform> {
    dom: DomId,
    devid: u32,
    be: String,
    error_dir: String,
    cfg: Config,
    fe: Option<String>,
    watched_fe: Option<String>,
    params: String,
    read_only: bool,
    disk: Option<Box<dyn BlockDevice>>,
    info: Option<DiskInfo>,
    /// What we last wrote to our `state` (Initialising: nothing yet).
    state: XenbusState,
    fe_state: XenbusState,
    conn: Option<Conn<P::Ring>>,
    online: bool,
    detach: bool,
    removed: bool,
    /// The disk exists but its previous user has not let go of it yet.
    waiting_for_disk: bool,
    error: Option<String>,
    ring_refs: Vec<GrantRef>,
    remote_port: Option<u32>,
    /// Counters of finished connections.
    past: Stats,
}

impl<P: Platform> Vbd<P> {
    /// A device found at `be` (`<home>/backend/vbd/<domid>/<devid>`); errors go to
    /// `<home>/error/backend/vbd/<domid>/<devid>/error` as `xenbus_dev_fatal` writes them.
    pub fn new(dom: DomId, devid: u32, home: &str, cfg: Config) -> Self {
        let rel = format!("backend/vbd/{}/{devid}", dom.raw());
        Vbd {
            dom,
            devid,
            be: format!("{home}/{rel}"),
            error_dir: format!("{home}/error/{rel}"),
            cfg,
            fe: None,
            watched_fe: None,
            params: String::new(),
            read_only: false,
            disk: None,
            info: None,
            state: XenbusState::Initialising,
            fe_state: XenbusState::Unknown,
            conn: None,
            online: true,
            detach: false,
            removed: false,
            waiting_for_disk: false,
            error: None,
            ring_refs: Vec::new(),
            remote_port: None,
            past: Stats::default(),
        }
    }

    /// Frontend domain.
    pub fn domid(&self) -> DomId {
        self.dom
    }

    /// Device number.
    pub fn devid(&self) -> u32 {
        self.devid
    }

    /// Our state.
    pub fn state(&self) -> XenbusState {
        self.state
    }

    /// Needs a xenbus step even if the store did not change (closing, or a broken ring
    /// to report).
    pub fn attention(&self) -> bool {
        self.state == XenbusState::Closing
            || self.removed
            || self.waiting_for_disk
            || self
                .conn
                .as_ref()
                .is_some_and(|c| c.engine.broken().is_some())
    }

    /// Gone from the store and fully released: the owner may drop it (after
    /// [`release`](Self::release)).
    pub fn finished(&self) -> bool {
        self.removed && self.conn.is_none()
    }

    /// Hands the disk back and stops watching; call before dropping a finished device.
    pub fn release(&mut self, store: &mut dyn Store, plat: &mut P) {
        if let Some(d) = self.disk.take() {
            plat.give_back_disk(&self.params, d);
        }
        if let Some(fe) = self.watched_fe.take() {
            store.unwatch(&fe);
        }
    }

    /// Status for `xl block-list`.
    pub fn status(&self) -> VbdStatus {
        let (in_flight, pg, stats, pages) = match &self.conn {
            Some(c) => {
                let s = c.engine.stats();
                (
                    c.engine.in_flight(),
                    c.engine.persistent_grants(),
                    add_stats(self.past, s),
                    self.ring_refs.len() as u32,
                )
            }
            None => (0, 0, self.past, 0),
        };
        VbdStatus {
            domid: self.dom,
            devid: self.devid,
            backend: self.be.clone(),
            params: self.params.clone(),
            read_only: self.read_only,
            state: self.state,
            frontend_state: self.fe_state,
            evtchn: self.conn.as_ref().and(self.remote_port),
            ring_ref: self
                .conn
                .as_ref()
                .and_then(|_| self.ring_refs.first().map(|g| g.raw())),
            ring_pages: pages,
            in_flight,
            persistent_grants: pg,
            stats,
            error: self.error.clone(),
        }
    }

    fn node(&self, key: &str) -> String {
        format!("{}/{key}", self.be)
    }

    fn set_state(&mut self, store: &mut dyn Store, s: XenbusState) {
        self.state = s;
        if !self.removed {
            store.write(&self.node("state"), s.as_str());
        }
    }

    /// `xenbus_dev_fatal`: writes `"<errno> <message>"` to the error node and closes.
    fn fatal(&mut self, store: &mut dyn Store, errno: u32, msg: &str) {
        let text = format!("{errno} {msg}");
        if !self.removed {
            store.write(&format!("{}/error", self.error_dir), &text);
        }
        self.error = Some(text);
        self.begin_close(store);
    }

    fn begin_close(&mut self, store: &mut dyn Store) {
        if let Some(c) = self.conn.as_mut() {
            c.engine.stop();
        }
        if self.state != XenbusState::Closing && self.state != XenbusState::Closed {
            self.set_state(store, XenbusState::Closing);
        }
    }

    /// One step of the handshake: reads both ends' nodes and acts on them.
    pub fn xenbus(&mut self, store: &mut dyn Store, plat: &mut P) {
        let be_state = store
            .read(&self.node("state"))
            .map(|s| XenbusState::parse(&s).unwrap_or(XenbusState::Unknown));
        if be_state.is_none() {
            // The toolstack removed the device (detach done, or domain destroyed).
            self.removed = true;
        }
        if self.removed {
            self.begin_close(store);
            self.try_disconnect(plat);
            return;
        }
        self.online = store
            .read(&self.node("online"))
            .is_none_or(|v| v.trim() != "0");
        // Someone else (the toolstack) wrote Closing into our state node.
        if be_state == Some(XenbusState::Closing)
            && self.state != XenbusState::Closing
            && self.state != XenbusState::Initialising
        {
            self.detach = true;
        }
        if let Some(fe) = self.fe.clone() {
            self.fe_state = store
                .read(&format!("{fe}/state"))
                .and_then(|s| XenbusState::parse(&s))
                .unwrap_or(XenbusState::Unknown);
        }
        if let Some(c) = self.conn.as_ref() {
            if let Some(e) = c.engine.broken() {
                if self.error.is_none() {
                    self.fatal(store, EPROTO, &format!("frontend broke the ring: {e:?}"));
                }
            }
        }
        let want_close = !self.online || self.detach;
        let fe = self.fe_state;
        match self.state {
            XenbusState::Initialising => {
                if want_close {
                    self.set_state(store, XenbusState::Closed);
                } else {
                    self.probe(store, plat);
                }
            }
            XenbusState::InitWait => {
                if want_close || fe == XenbusState::Closing {
                    self.begin_close(store);
                } else if fe == XenbusState::Closed {
                    self.set_state(store, XenbusState::Closed);
                } else if fe == XenbusState::Initialised || fe == XenbusState::Connected {
                    self.connect(store, plat);
                }
            }
            XenbusState::Connected
                if want_close
                    || !matches!(fe, XenbusState::Initialised | XenbusState::Connected) =>
            {
                self.begin_close(store);
            }
            XenbusState::Closing => {}
            XenbusState::Closed => {
                if self.online
                    && !self.detach
                    && self.error.is_none()
                    && matches!(fe, XenbusState::Initialising | XenbusState::InitWait)
                {
                    // The frontend starts over (reconnect): offer the device again. After
                    // a fatal error the device stays closed until the toolstack
                    // recreates it (no error/retry loop).
                    if self.disk.is_some() {
                        self.advertise(store);
                    } else {
                        self.state = XenbusState::Initialising;
                        self.probe(store, plat);
                    }
                } else if !self.online {
                    // Detached: the disk goes back to dom0 right away.
                    if let Some(d) = self.disk.take() {
                        plat.give_back_disk(&self.params, d);
                    }
                }
            }
            _ => {}
        }
        if self.state == XenbusState::Closing {
            self.try_disconnect(plat);
            let fe_gone = !matches!(fe, XenbusState::Initialised | XenbusState::Connected);
            if self.conn.is_none() && (want_close || fe_gone) {
                self.set_state(store, XenbusState::Closed);
                if !self.online {
                    if let Some(d) = self.disk.take() {
                        plat.give_back_disk(&self.params, d);
                    }
                }
            }
        }
    }

    /// Releases the connection once the engine has nothing on the device.
    fn try_disconnect(&mut self, plat: &mut P) {
        let idle = match self.conn.as_mut() {
            Some(c) => {
                c.engine.stop();
                c.engine.idle()
            }
            None => return,
        };
        if !idle {
            return;
        }
        if let Some(c) = self.conn.take() {
            self.past = add_stats(self.past, c.engine.stats());
            c.engine.teardown(plat);
            plat.unbind_evtchn(c.port);
            plat.unmap_ring(c.ring);
        }
    }

    /// `xen_blkbk_probe` + `backend_changed`: reads the toolstack's keys, takes the disk,
    /// advertises the features, goes `InitWait`.
    fn probe(&mut self, store: &mut dyn Store, plat: &mut P) {
        let (Some(fe), Some(fe_id), Some(params)) = (
            store.read(&self.node("frontend")),
            store.read(&self.node("frontend-id")),
            store.read(&self.node("params")),
        ) else {
            return; // the toolstack has not written everything yet
        };
        if fe_id.trim().parse::<u16>().ok() != Some(self.dom.raw()) {
            self.fatal(store, EINVAL, "frontend-id does not match the backend path");
            return;
        }
        let fe = fe.trim().to_string();
        if !fe.starts_with(&format!("/local/domain/{}/", self.dom.raw())) {
            self.fatal(store, EINVAL, "frontend path outside the domain's home");
            return;
        }
        let mode = store
            .read(&self.node("mode"))
            .unwrap_or_else(|| "w".to_string());
        self.params = params.trim().to_string();
        if self.disk.is_none() {
            match plat.take_disk(&self.params) {
                Some(d) => {
                    self.waiting_for_disk = false;
                    self.info = Some(d.info());
                    self.disk = Some(d);
                }
                None if plat.disk_exists(&self.params) => {
                    // A destroyed or detached domain's device may still be draining
                    // requests on it: try again on the next step.
                    self.waiting_for_disk = true;
                    return;
                }
                None => {
                    self.waiting_for_disk = false;
                    let msg = format!("no disk {} (or in use)", self.params);
                    self.fatal(store, ENODEV, &msg);
                    return;
                }
            }
        }
        let Some(info) = self.info else {
            return;
        };
        if info.sector_size < 512
            || !info.sector_size.is_power_of_two()
            || info.physical_sector_size < info.sector_size
        {
            self.fatal(store, EINVAL, "disk has an unusable sector size");
            return;
        }
        self.read_only = !mode.contains('w') || info.read_only;
        if self.watched_fe.as_deref() != Some(fe.as_str()) {
            if let Some(old) = self.watched_fe.take() {
                store.unwatch(&old);
            }
            store.watch(&fe);
            self.watched_fe = Some(fe.clone());
        }
        self.fe = Some(fe);
        self.advertise(store);
    }

    /// Writes the features and geometry, then `InitWait`.
    fn advertise(&mut self, store: &mut dyn Store) {
        let Some(info) = self.info else {
            return;
        };
        let discard = info.discard && !self.read_only;
        let mut w = |k: &str, v: &str| {
            store.write(&format!("{}/{k}", self.be), v);
        };
        w(
            "feature-max-indirect-segments",
            &format!("{}", self.cfg.max_indirect_segments),
        );
        w(
            "max-ring-page-order",
            &format!("{}", self.cfg.max_ring_page_order),
        );
        w("multi-queue-max-queues", "1");
        w("feature-flush-cache", "1");
        w("feature-barrier", "0");
        w("feature-discard", if discard { "1" } else { "0" });
        if discard {
            let gran = info.discard_granularity.max(info.sector_size);
            w("discard-granularity", &format!("{gran}"));
            w("discard-alignment", "0");
            w("discard-secure", "0");
        }
        w(
            "feature-persistent",
            if self.cfg.max_persistent_grants > 0 {
                "1"
            } else {
                "0"
            },
        );
        w("sectors", &format!("{}", info.sectors));
        w(
            "info",
            &format!("{}", if self.read_only { VDISK_READONLY } else { 0 }),
        );
        w("sector-size", &format!("{}", info.sector_size));
        w(
            "physical-sector-size",
            &format!("{}", info.physical_sector_size),
        );
        self.set_state(store, XenbusState::InitWait);
    }

    /// `connect_ring` + `connect`: reads the frontend's ring details, maps the ring,
    /// binds the channel, goes `Connected`.
    fn connect(&mut self, store: &mut dyn Store, plat: &mut P) {
        let Some(fe) = self.fe.clone() else {
            return;
        };
        let (Some(info), true) = (self.info, self.disk.is_some()) else {
            return;
        };
        let read = |store: &mut dyn Store, k: &str| store.read(&format!("{fe}/{k}"));
        let num = |v: Option<String>| v.and_then(|v| v.trim().parse::<u64>().ok());

        if let Some(p) = read(store, "protocol") {
            let p = p.trim().trim_end_matches('\0');
            if !p.is_empty() && p != "x86_64-abi" {
                let msg = format!("unknown fe protocol {p}");
                self.fatal(store, ENOSYS, &msg);
                return;
            }
        }
        if let Some(q) = read(store, "multi-queue-num-queues") {
            if num(Some(q)) != Some(1) {
                self.fatal(store, EINVAL, "only one queue is supported");
                return;
            }
        }
        let mut refs = Vec::new();
        match read(store, "ring-page-order") {
            None => match num(read(store, "ring-ref")).and_then(|g| u32::try_from(g).ok()) {
                Some(g) => refs.push(GrantRef::new(g)),
                None => {
                    self.fatal(store, ENOENT, "reading ring-ref");
                    return;
                }
            },
            Some(o) => {
                let order = match num(Some(o)) {
                    Some(o) if o <= u64::from(self.cfg.max_ring_page_order) => o as u32,
                    _ => {
                        let msg = format!(
                            "requested ring page order exceeds max:{}",
                            self.cfg.max_ring_page_order
                        );
                        self.fatal(store, EINVAL, &msg);
                        return;
                    }
                };
                for i in 0..(1u32 << order) {
                    match num(read(store, &format!("ring-ref{i}")))
                        .and_then(|g| u32::try_from(g).ok())
                    {
                        Some(g) => refs.push(GrantRef::new(g)),
                        None => {
                            let msg = format!("reading ring-ref{i}");
                            self.fatal(store, ENOENT, &msg);
                            return;
                        }
                    }
                }
            }
        }
        let Some(remote) = num(read(store, "event-channel")).and_then(|p| u32::try_from(p).ok())
        else {
            self.fatal(store, ENOENT, "reading event-channel");
            return;
        };
        let fe_persistent = num(read(store, "feature-persistent")).is_some_and(|v| v != 0);
        let persistent = (fe_persistent && self.cfg.max_persistent_grants > 0)
            .then_some(self.cfg.max_persistent_grants);

        let ring = match plat.map_ring(self.dom, &refs) {
            Ok(r) => r,
            Err(e) => {
                self.fatal(store, e.errno, "mapping ring-ref");
                return;
            }
        };
        let back = match BlkifBackRing::new(ring.clone()) {
            Ok(b) => b,
            Err(_) => {
                plat.unmap_ring(ring);
                self.fatal(store, EINVAL, "ring has an unusable size");
                return;
            }
        };
        let port = match plat.bind_evtchn(self.dom, EvtchnPort::new(remote)) {
            Ok(p) => p,
            Err(e) => {
                drop(back);
                plat.unmap_ring(ring);
                let msg = format!("binding event-channel {remote}");
                self.fatal(store, e.errno, &msg);
                return;
            }
        };
        let limits = Limits {
            sectors: info.sectors,
            block_sectors: u64::from(info.sector_size / 512).max(1),
            read_only: self.read_only,
            discard: info.discard && !self.read_only,
            max_indirect_segments: self.cfg.max_indirect_segments,
        };
        let dev = DeviceLimits {
            max_segments: info.max_segments as usize,
            flush: info.flush,
            max_discard_sectors: u64::from(info.max_discard_sectors),
        };
        self.ring_refs = refs;
        self.remote_port = Some(remote);
        self.conn = Some(Conn {
            engine: Engine::new(back, self.dom, limits, dev, persistent),
            ring,
            port,
        });
        self.set_state(store, XenbusState::Connected);
    }

    /// Serves the ring (and, while closing, the device's last completions); `true` if
    /// requests are still waiting.
    pub fn io(&mut self, plat: &mut P) -> bool {
        let (Some(c), Some(d)) = (self.conn.as_mut(), self.disk.as_mut()) else {
            return false;
        };
        let p = c.engine.process(d.as_mut(), plat);
        if p.notify {
            plat.notify(c.port);
        }
        p.more
    }
}

fn add_stats(a: Stats, b: Stats) -> Stats {
    Stats {
        requests: a.requests.wrapping_add(b.requests),
        errors: a.errors.wrapping_add(b.errors),
        maps: a.maps.wrapping_add(b.maps),
        persistent_hits: a.persistent_hits.wrapping_add(b.persistent_hits),
    }
}
