//! All of dom0's block backends: finds the devices the toolstack creates under
//! `<home>/backend/vbd/<domid>/<devid>`, runs each one's handshake and ring, and drops
//! the ones the toolstack removed once they have released everything (Linux's
//! `xenbus_backend` bus + `xen-blkback`).

use alloc::string::String;
use alloc::vec::Vec;

use xen_abi::DomId;

use crate::vbd::{Config, Vbd, VbdStatus};
use crate::xenbus::{Platform, Store};

/// Bound on the rounds one [`Blkback::poll`] spends on rings that keep refilling (a
/// frontend flooding requests must not keep dom0 from everything else).
pub const MAX_ROUNDS: usize = 64;

/// The set of block backends of one backend domain.
pub struct Blkback<P: Platform> {
    home: String,
    root: String,
    cfg: Config,
    vbds: Vec<Vbd<P>>,
    watching: bool,
    /// The last [`poll`](Self::poll) ran a xenbus step (which may have written the store).
    stepped: bool,
}

impl<P: Platform> Blkback<P> {
    /// Backends for the domain whose xenstore home is `home` (`/local/domain/0`).
    pub fn new(home: &str, cfg: Config) -> Self {
        Blkback {
            home: String::from(home),
            root: alloc::format!("{home}/backend/vbd"),
            cfg,
            vbds: Vec::new(),
            watching: false,
            stepped: false,
        }
    }

    /// Does everything that can be done now without waiting: picks up store changes,
    /// steps the handshakes, serves the rings and the devices' completions. Returns
    /// `true` if a ring still had requests after [`MAX_ROUNDS`] rounds (call again soon).
    pub fn poll(&mut self, store: &mut dyn Store, plat: &mut P) -> bool {
        let changed = if self.watching {
            store.changed()
        } else {
            store.watch(&self.root);
            self.watching = true;
            true
        };
        self.stepped = changed;
        if changed {
            self.scan(store);
        }
        for v in self.vbds.iter_mut() {
            if changed || v.attention() {
                self.stepped = true;
                v.xenbus(store, plat);
            }
        }
        let mut more = true;
        let mut rounds = 0;
        while more && rounds < MAX_ROUNDS {
            more = false;
            for v in self.vbds.iter_mut() {
                more |= v.io(plat);
            }
            rounds += 1;
        }
        // Closing devices whose last I/O just completed can finish now.
        for v in self.vbds.iter_mut() {
            if v.attention() {
                self.stepped = true;
                v.xenbus(store, plat);
            }
        }
        let mut i = 0;
        while i < self.vbds.len() {
            if self.vbds.get(i).is_some_and(Vbd::finished) {
                let mut v = self.vbds.swap_remove(i);
                v.release(store, plat);
            } else {
                i += 1;
            }
        }
        more
    }

    fn scan(&mut self, store: &mut dyn Store) {
        for d in store.directory(&self.root) {
            let Some(dom) = d
                .parse::<u16>()
                .ok()
                .map(DomId::new)
                .filter(|d| !d.is_reserved() && d.raw() != 0)
            else {
                continue;
            };
            let dir = alloc::format!("{}/{d}", self.root);
            for v in store.directory(&dir) {
                let Ok(devid) = v.parse::<u32>() else {
                    continue;
                };
                if !self
                    .vbds
                    .iter()
                    .any(|x| x.domid() == dom && x.devid() == devid)
                {
                    self.vbds.push(Vbd::new(dom, devid, &self.home, self.cfg));
                }
            }
        }
    }

    /// Every device, for `xl block-list`.
    pub fn list(&self) -> Vec<VbdStatus> {
        self.vbds.iter().map(Vbd::status).collect()
    }

    /// Whether the last [`poll`](Self::poll) stepped a handshake (and so may have written
    /// to the store, whose watchers should hear of it).
    pub fn stepped(&self) -> bool {
        self.stepped
    }

    /// Whether no device exists.
    pub fn is_empty(&self) -> bool {
        self.vbds.is_empty()
    }
}
