//! dom0's xenstored service (Xen's `tools/xenstored` running in the control domain): the
//! one xenstore database ([`xenstored::Store`]) of the machine, the in-process API dom0's
//! toolstack uses ([`with`]), and [`poll`], which the shell loop calls before it blocks to
//! serve every introduced domain's ring.
//!
//! For each domain the toolstack introduced (`INTRODUCE domid mfn port`), [`poll`] maps the
//! ring page by foreign `mmu_update` of a map-area L1 entry with `foreigndom = domid`
//! ([`ForeignPage`]), binds the domain's unbound port with `EVTCHNOP_bind_interdomain`, and
//! then services the ring ([`xenstored::Store::service_ring`]), signalling the domain with
//! `EVTCHNOP_send` whenever an index moved. A released domain's page is unmapped and its
//! channel closed on the next call. The only memory access to the guest page is through
//! `ForeignPage`'s volatile accessors; the portable crate copies every byte out once and
//! checks every index.

extern crate alloc;

use alloc::vec::Vec;
use core::sync::atomic::{fence, AtomicU64, Ordering};

use pv_guest::arch::foreign::ForeignPage;
use pv_guest::{events, println};
use spin::{Mutex, Once};
use xenstored::{DomId, RingInfo, RingMemory, Store, DOM0};

/// The machine's xenstore. The instance currently lives in the toolstack
/// (`toolstack::xenstore`, which created it first); everything reaches it through here or
/// there, so there is exactly one.
pub fn store() -> &'static Mutex<Store> {
    crate::toolstack::xenstore()
}

/// Run `f` on the store, as dom0 would through libxenstore (use [`DOM0`] as the caller for
/// full rights). Do not call [`poll`] from inside `f`.
#[allow(dead_code)] // API for the toolstack and backends
pub fn with<R>(f: impl FnOnce(&mut Store) -> R) -> R {
    f(&mut store().lock())
}

/// A domU's ring page, mapped in dom0.
struct Page(ForeignPage);

impl RingMemory for Page {
    fn read(&self, offset: usize, buf: &mut [u8]) {
        for (i, b) in buf.iter_mut().enumerate() {
            *b = self.0.load8(offset.saturating_add(i));
        }
    }
    fn write(&mut self, offset: usize, data: &[u8]) {
        self.0.write(offset, data);
    }
    fn load_u32(&self, offset: usize) -> u32 {
        let v = self.0.load32(offset);
        // x86 keeps loads in order; stop the compiler moving later data reads above this.
        fence(Ordering::Acquire);
        v
    }
    fn store_u32(&mut self, offset: usize, value: u32) {
        // x86 keeps stores in order; stop the compiler sinking data writes below this.
        fence(Ordering::Release);
        self.0.store32(offset, value);
    }
}

/// One served domain.
struct Link {
    dom: DomId,
    info: RingInfo,
    page: Page,
    /// Our end of the interdomain channel.
    port: u32,
}

static LINKS: Mutex<Vec<Link>> = Mutex::new(Vec::new());
/// Introductions we could not act on (mapping or binding failed), so that [`poll`] does
/// not retry (and log) on every wake-up; cleared when the domain is released.
static FAILED: Mutex<Vec<(DomId, RingInfo)>> = Mutex::new(Vec::new());
/// Store-channel notifications (the handler only has to wake the loop).
static EVENTS: AtomicU64 = AtomicU64::new(0);

fn on_store_event(_port: u32) {
    EVENTS.fetch_add(1, Ordering::Relaxed);
}

/// dom0's own nodes, as Xen's init scripts write them (`xencommons`).
fn init_store(s: &mut Store) {
    let _ = s.write(DOM0, "/local/domain/0/name", b"Domain-0");
    let _ = s.write(DOM0, "/local/domain/0/domid", b"0");
}

fn connect(dom: DomId, info: RingInfo) -> Result<Link, &'static str> {
    let page = ForeignPage::map(dom.raw(), info.mfn).map_err(|_| "mapping the ring page")?;
    let port = match events::bind_interdomain(dom, info.port) {
        Ok(p) => p,
        Err(_) => {
            page.unmap();
            return Err("binding the store event channel");
        }
    };
    let _ = events::set_handler(port, Some(on_store_event));
    let _ = events::unmask(port);
    Ok(Link {
        dom,
        info,
        page: Page(page),
        port,
    })
}

fn disconnect(l: Link) {
    let _ = events::close(l.port);
    l.page.0.unmap();
}

/// Serve the xenstore: connect newly introduced domains, disconnect released ones, and
/// service every ring. Cheap when nothing changed; call it before blocking.
pub fn poll() {
    static INIT: Once<()> = Once::new();
    let mut store = store().lock();
    INIT.call_once(|| init_store(&mut store));
    let wanted = store.introduced();
    let mut links = LINKS.lock();
    let mut failed = FAILED.lock();

    // Released (or re-introduced with another ring): let go of the old mapping.
    let mut i = 0;
    while i < links.len() {
        let keep = links
            .get(i)
            .is_some_and(|l| wanted.iter().any(|&(d, r)| d == l.dom && r == l.info));
        if keep {
            i += 1;
        } else {
            disconnect(links.swap_remove(i));
        }
    }
    failed.retain(|f| wanted.contains(f));

    for &(dom, info) in &wanted {
        if links.iter().any(|l| l.dom == dom) || failed.contains(&(dom, info)) {
            continue;
        }
        match connect(dom, info) {
            Ok(l) => links.push(l),
            Err(what) => {
                println!("xenstored: domain {}: {what} failed", dom.raw());
                failed.push((dom, info));
            }
        }
    }

    for l in links.iter_mut() {
        // A broken connection answers at once, without notifying, until re-introduced.
        if let Ok(s) = store.service_ring(l.dom, &mut l.page) {
            if s.notify {
                let _ = events::send(l.port);
            }
            if let (Some(e), true) = (s.broken, s.notify) {
                println!(
                    "xenstored: domain {}: connection broken ({e:?})",
                    l.dom.raw()
                );
            }
        }
    }
}

/// Domains served and store-channel events seen (for diagnostics).
#[allow(dead_code)] // for `xl info`-style diagnostics
pub fn stats() -> (usize, u64) {
    (LINKS.lock().len(), EVENTS.load(Ordering::Relaxed))
}
