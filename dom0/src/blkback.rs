//! dom0's block backends (Linux's `xen-blkback` in a Xen dom0): the portable [`blkback`]
//! crate run on dom0's hypercalls.
//!
//! * xenstore: the in-process store ([`crate::xenstore::with`]) as caller dom0; changes are
//!   noticed through watches on `/local/domain/0/backend/vbd` and each frontend directory
//!   (token [`WATCH_TOKEN`]), so a wake-up without store changes only serves rings.
//! * ring pages: `GNTTABOP_map_grant_ref` with `GNTMAP_host_map` into consecutive map-area
//!   slots (one batch for all of a ring's pages), accessed only with volatile loads/stores.
//! * data pages: `GNTTABOP_map_grant_ref` with `GNTMAP_device_map` (+ `GNTMAP_readonly`
//!   when the device only reads), no host mapping at all: the virtio device DMAs to the
//!   returned `dev_bus_addr`; unmapped in batches with `GNTTABOP_unmap_grant_ref`.
//! * indirect segment pages: `GNTTABOP_copy` into one scratch frame of ours, then read.
//! * event channels: `EVTCHNOP_bind_interdomain`, a handler that only counts (it wakes the
//!   main loop from `SCHEDOP_block`), `EVTCHNOP_send` when the ring says so.
//! * disks: [`crate::disks::take`] / [`crate::disks::give_back`] by `params` name.
//!
//! [`poll`] never blocks: the main loop calls it on every wake-up.
#![allow(unsafe_code)] // volatile access to grant-mapped ring pages, one Send assertion

extern crate alloc;

use alloc::boxed::Box;
use alloc::string::String;
use alloc::vec::Vec;
use core::sync::atomic::{compiler_fence, fence, AtomicU64, Ordering};

use blkback::{
    Blkback, BlockDevice, Config, GrantError, GrantMapper, MapRequest, Mapping, Platform,
    PlatformError, Store, VbdStatus,
};
use pv_guest::arch::{gnttab, mmu};
use pv_guest::events;
use pv_guest::mm::Pool;
use pv_guest::println;
use pv_guest::xen_abi::grant_table::{
    GnttabCopy, GnttabCopyPtr, GnttabMapGrantRef, GnttabUnmapGrantRef, GNTCOPY_SOURCE_GREF,
    GNTMAP_DEVICE_MAP, GNTMAP_HOST_MAP, GNTMAP_READONLY, GNTST_OKAY,
};
use pv_guest::xen_abi::{DomId, EvtchnPort, GrantRef, PAGE_SIZE};
use ring::{Fence, RingMemory};
use spin::Mutex;
use xenstored::DOM0;

/// The token of blkback's xenstore watches.
pub const WATCH_TOKEN: &str = "blkback";
/// dom0's xenstore home.
const HOME: &str = "/local/domain/0";
/// Most ring pages (`max-ring-page-order` 3).
const MAX_RING_PAGES: usize = 8;
/// Rounds of [`Blkback::poll`] per [`poll`] when rings keep refilling.
const MAX_POLLS: usize = 4;

/// Events on blkback channels (the handler only has to wake the main loop).
static EVENTS: AtomicU64 = AtomicU64::new(0);

fn on_event(_port: u32) {
    EVENTS.fetch_add(1, Ordering::Relaxed);
}

/// The backends and the scratch state of their platform.
struct State {
    bb: Blkback<Dom0>,
    plat: Dom0,
    store: XsStore,
}

/// dom0 runs its kernel on one vCPU and touches [`STATE`] only from the main loop (never
/// from an event handler), so the non-`Send` disks inside never cross a thread.
struct Single(Option<State>);
// SAFETY: see `Single`: one vCPU, no threads, no access from interrupt context; the Mutex
// only guards against re-entrance.
unsafe impl Send for Single {}

static STATE: Mutex<Single> = Mutex::new(Single(None));

/// Serves every block backend: picks up new and changed devices in xenstore, steps their
/// handshakes, serves their rings and their disks' completions. Never blocks. Returns
/// whether a handshake step ran (it may have written the store, whose watchers should
/// then hear of it); serving rings and disks alone never touches the store.
pub fn poll() -> bool {
    let mut g = STATE.lock();
    let st = g.0.get_or_insert_with(|| State {
        bb: Blkback::new(HOME, Config::default()),
        plat: Dom0::default(),
        store: XsStore::default(),
    });
    let mut stepped = false;
    for _ in 0..MAX_POLLS {
        let more = st.bb.poll(&mut st.store, &mut st.plat);
        stepped |= st.bb.stepped();
        if !more {
            break;
        }
    }
    stepped
}

/// Every backend device, for `xl block-list`.
#[allow(dead_code)] // for the toolstack's `xl block-list`
pub fn list() -> Vec<VbdStatus> {
    STATE
        .lock()
        .0
        .as_ref()
        .map(|s| s.bb.list())
        .unwrap_or_default()
}

/// Events seen on blkback channels (the main loop tells block I/O wake-ups by them).
pub fn events() -> u64 {
    EVENTS.load(Ordering::Relaxed)
}

// ------------------------------------------------------------------------------- store

/// The in-process xenstore as seen by dom0.
#[derive(Default)]
struct XsStore {
    dropped: u64,
}

impl Store for XsStore {
    fn read(&mut self, path: &str) -> Option<String> {
        crate::xenstore::with(|s| s.read_string(DOM0, path).ok())
    }
    fn write(&mut self, path: &str, value: &str) -> bool {
        crate::xenstore::with(|s| s.write(DOM0, path, value.as_bytes()).is_ok())
    }
    fn directory(&mut self, path: &str) -> Vec<String> {
        crate::xenstore::with(|s| s.directory(DOM0, path).unwrap_or_default())
    }
    fn watch(&mut self, path: &str) {
        crate::xenstore::with(|s| {
            let _ = s.watch(DOM0, path, WATCH_TOKEN, None);
        });
    }
    fn unwatch(&mut self, path: &str) {
        crate::xenstore::with(|s| {
            let _ = s.unwatch(DOM0, path, WATCH_TOKEN);
        });
    }
    fn changed(&mut self) -> bool {
        crate::xenstore::with(|s| {
            // dom0's in-process watch queue; blkback is its only user for now.
            let fired = s.take_events(DOM0).iter().any(|e| e.token == WATCH_TOKEN);
            let dropped = s.dropped_events(DOM0);
            let lost = dropped != self.dropped;
            self.dropped = dropped;
            fired || lost
        })
    }
}

// ---------------------------------------------------------------------------- platform

/// dom0's hypercall side of the backends.
#[derive(Default)]
struct Dom0 {
    /// Scratch for batched map/unmap arguments.
    map_ops: Vec<GnttabMapGrantRef>,
    unmap_ops: Vec<GnttabUnmapGrantRef>,
    /// The frame indirect pages are copied into (allocated on first use).
    scratch: Option<mmu::Frame>,
}

/// A frontend's ring pages, grant-mapped at consecutive map-area slots. A plain handle:
/// clones share the one mapping, which [`Platform::unmap_ring`] ends.
#[derive(Clone, Copy)]
struct RingPages {
    slot: usize,
    pages: usize,
    handles: [u32; MAX_RING_PAGES],
}

impl RingPages {
    fn len_bytes(&self) -> usize {
        self.pages * PAGE_SIZE
    }

    /// The VA of byte `offset`, if `len` bytes from it are inside the mapping.
    fn at(&self, offset: usize, len: usize) -> Option<u64> {
        (offset.checked_add(len)? <= self.len_bytes())
            .then(|| mmu::slot_va(self.slot) + offset as u64)
    }
}

impl RingMemory for RingPages {
    fn len(&self) -> usize {
        self.len_bytes()
    }
    fn load_u32(&self, offset: usize) -> u32 {
        match self.at(offset & !3, 4) {
            // SAFETY: inside the ring's grant mappings (checked), which live while any
            // handle is in use; aligned; the frontend writes concurrently, hence volatile.
            Some(va) => unsafe { core::ptr::read_volatile(va as *const u32) },
            None => 0,
        }
    }
    fn store_u32(&self, offset: usize, value: u32) {
        if let Some(va) = self.at(offset & !3, 4) {
            // SAFETY: as `load_u32`; the ring is mapped writable.
            unsafe { core::ptr::write_volatile(va as *mut u32, value) }
        }
    }
    fn read_bytes(&self, offset: usize, dst: &mut [u8]) {
        let Some(base) = self.at(offset, dst.len()) else {
            return;
        };
        if base.is_multiple_of(8) && dst.len().is_multiple_of(8) {
            for (i, c) in dst.chunks_exact_mut(8).enumerate() {
                // SAFETY: inside the mapping (checked for the whole range), 8-byte aligned.
                let w = unsafe { core::ptr::read_volatile((base + 8 * i as u64) as *const u64) };
                c.copy_from_slice(&w.to_le_bytes());
            }
        } else {
            for (i, b) in dst.iter_mut().enumerate() {
                // SAFETY: inside the mapping (checked for the whole range).
                *b = unsafe { core::ptr::read_volatile((base + i as u64) as *const u8) };
            }
        }
    }
    fn write_bytes(&self, offset: usize, src: &[u8]) {
        let Some(base) = self.at(offset, src.len()) else {
            return;
        };
        if base.is_multiple_of(8) && src.len().is_multiple_of(8) {
            for (i, c) in src.chunks_exact(8).enumerate() {
                let mut w = [0u8; 8];
                w.copy_from_slice(c);
                // SAFETY: inside the writable mapping (checked), 8-byte aligned.
                unsafe {
                    core::ptr::write_volatile(
                        (base + 8 * i as u64) as *mut u64,
                        u64::from_le_bytes(w),
                    )
                };
            }
        } else {
            for (i, &b) in src.iter().enumerate() {
                // SAFETY: inside the writable mapping (checked).
                unsafe { core::ptr::write_volatile((base + i as u64) as *mut u8, b) };
            }
        }
    }
    fn fence(&self, f: Fence) {
        match f {
            // x86-TSO keeps loads with loads and stores with stores: compiler only.
            Fence::Read => compiler_fence(Ordering::Acquire),
            Fence::Write => compiler_fence(Ordering::Release),
            Fence::Full => fence(Ordering::SeqCst),
        }
    }
}

fn errno(e: pv_guest::hypercall::Error) -> PlatformError {
    PlatformError {
        errno: u32::try_from(-e.raw()).unwrap_or(22),
    }
}

impl GrantMapper for Dom0 {
    fn map_batch(
        &mut self,
        dom: DomId,
        reqs: &[MapRequest],
        out: &mut [Result<Mapping, GrantError>],
    ) {
        for (reqs, out) in reqs
            .chunks(gnttab::MAX_BATCH)
            .zip(out.chunks_mut(gnttab::MAX_BATCH))
        {
            self.map_ops.clear();
            self.map_ops.extend(reqs.iter().map(|r| GnttabMapGrantRef {
                host_addr: 0,
                flags: GNTMAP_DEVICE_MAP | if r.readonly { GNTMAP_READONLY } else { 0 },
                gref: r.gref.raw(),
                dom: dom.raw(),
                ..Default::default()
            }));
            match gnttab::map_grant_ref(&mut self.map_ops) {
                Ok(_) => {
                    for (op, o) in self.map_ops.iter().zip(out.iter_mut()) {
                        *o = if op.status == GNTST_OKAY {
                            Ok(Mapping {
                                handle: op.handle,
                                bus_addr: op.dev_bus_addr,
                            })
                        } else {
                            Err(GrantError(op.status))
                        };
                    }
                }
                Err(e) => {
                    println!("blkback: GNTTABOP_map_grant_ref failed: {e}");
                    out.fill(Err(GrantError::GENERAL));
                }
            }
        }
    }

    fn unmap_batch(&mut self, maps: &[Mapping]) {
        for maps in maps.chunks(gnttab::MAX_BATCH) {
            self.unmap_ops.clear();
            self.unmap_ops
                .extend(maps.iter().map(|m| GnttabUnmapGrantRef {
                    host_addr: 0,
                    dev_bus_addr: m.bus_addr,
                    handle: m.handle,
                    ..Default::default()
                }));
            match gnttab::unmap_grant_ref(&mut self.unmap_ops) {
                Ok(_) => {
                    let bad = self
                        .unmap_ops
                        .iter()
                        .filter(|o| o.status != GNTST_OKAY)
                        .count();
                    if bad != 0 {
                        println!("blkback: {bad} grant unmaps failed");
                    }
                }
                Err(e) => println!("blkback: GNTTABOP_unmap_grant_ref failed: {e}"),
            }
        }
    }

    fn copy_in(&mut self, dom: DomId, gref: GrantRef, dst: &mut [u8]) -> Result<(), GrantError> {
        if dst.len() > PAGE_SIZE {
            return Err(GrantError::GENERAL);
        }
        if self.scratch.is_none() {
            self.scratch = mmu::alloc_frame(Pool::Mapped).ok();
        }
        let Some(frame) = self.scratch.as_ref() else {
            return Err(GrantError::GENERAL);
        };
        let mut op = [GnttabCopy {
            source: GnttabCopyPtr {
                u: u64::from(gref.raw()),
                domid: dom.raw(),
                offset: 0,
                pad: 0,
            },
            dest: GnttabCopyPtr {
                u: frame.mfn(),
                domid: DomId::SELF.raw(),
                offset: 0,
                pad: 0,
            },
            len: dst.len() as u16,
            flags: GNTCOPY_SOURCE_GREF,
            ..Default::default()
        }];
        match gnttab::copy(&mut op) {
            Ok(_) if op[0].status == GNTST_OKAY => {}
            Ok(_) => return Err(GrantError(op[0].status)),
            Err(_) => return Err(GrantError::GENERAL),
        }
        for (i, c) in dst.chunks_mut(8).enumerate() {
            let w = mmu::frame_read(frame, i).map_err(|_| GrantError::GENERAL)?;
            let b = w.to_le_bytes();
            c.copy_from_slice(b.get(..c.len()).unwrap_or(&[]));
        }
        Ok(())
    }
}

impl Platform for Dom0 {
    type Ring = RingPages;

    fn map_ring(&mut self, dom: DomId, grefs: &[GrantRef]) -> Result<RingPages, PlatformError> {
        let pages = grefs.len();
        if pages == 0 || pages > MAX_RING_PAGES {
            return Err(PlatformError { errno: 22 });
        }
        let slot = mmu::reserve_slots(pages).map_err(|_| PlatformError { errno: 12 })?;
        let mut ops = [GnttabMapGrantRef::default(); MAX_RING_PAGES];
        for (i, (op, g)) in ops.iter_mut().zip(grefs).enumerate() {
            *op = GnttabMapGrantRef {
                host_addr: mmu::slot_va(slot + i),
                flags: GNTMAP_HOST_MAP,
                gref: g.raw(),
                dom: dom.raw(),
                ..Default::default()
            };
        }
        let ops = &mut ops[..pages];
        let r = gnttab::map_grant_ref(ops);
        let mut ring = RingPages {
            slot,
            pages,
            handles: [0; MAX_RING_PAGES],
        };
        let ok = r.is_ok() && ops.iter().all(|o| o.status == GNTST_OKAY);
        if ok {
            for (h, o) in ring.handles.iter_mut().zip(ops.iter()) {
                *h = o.handle;
            }
            return Ok(ring);
        }
        // Undo the pages that did map.
        let mut undo: Vec<GnttabUnmapGrantRef> = ops
            .iter()
            .enumerate()
            .filter(|(_, o)| r.is_ok() && o.status == GNTST_OKAY)
            .map(|(i, o)| GnttabUnmapGrantRef {
                host_addr: mmu::slot_va(slot + i),
                handle: o.handle,
                ..Default::default()
            })
            .collect();
        let undone = undo.is_empty()
            || (gnttab::unmap_grant_ref(&mut undo).is_ok()
                && undo.iter().all(|o| o.status == GNTST_OKAY));
        if undone {
            mmu::release_slots(slot, pages);
        }
        Err(match r {
            Err(e) => errno(e),
            // GNTST_* of the first failure, as an errno-ish positive number.
            Ok(_) => PlatformError {
                errno: ops
                    .iter()
                    .find(|o| o.status != GNTST_OKAY)
                    .map_or(22, |o| u32::from(o.status.unsigned_abs())),
            },
        })
    }

    fn unmap_ring(&mut self, ring: RingPages) {
        let mut ops = [GnttabUnmapGrantRef::default(); MAX_RING_PAGES];
        for (i, (op, h)) in ops.iter_mut().zip(ring.handles.iter()).enumerate() {
            *op = GnttabUnmapGrantRef {
                host_addr: mmu::slot_va(ring.slot + i),
                handle: *h,
                ..Default::default()
            };
        }
        let ops = &mut ops[..ring.pages.min(MAX_RING_PAGES)];
        match gnttab::unmap_grant_ref(ops) {
            Ok(_) if ops.iter().all(|o| o.status == GNTST_OKAY) => {
                mmu::release_slots(ring.slot, ring.pages);
            }
            // Keep the slots reserved: something may still be mapped there.
            _ => println!(
                "blkback: unmapping a ring failed; {} slots kept",
                ring.pages
            ),
        }
    }

    fn bind_evtchn(&mut self, dom: DomId, remote: EvtchnPort) -> Result<EvtchnPort, PlatformError> {
        let port = events::bind_interdomain(dom, remote.raw()).map_err(errno)?;
        let _ = events::set_handler(port, Some(on_event));
        let _ = events::unmask(port);
        Ok(EvtchnPort::new(port))
    }

    fn unbind_evtchn(&mut self, port: EvtchnPort) {
        let _ = events::close(port.raw());
    }

    fn notify(&mut self, port: EvtchnPort) {
        let _ = events::send(port.raw());
    }

    fn take_disk(&mut self, name: &str) -> Option<Box<dyn BlockDevice>> {
        crate::disks::take(name)
    }

    fn give_back_disk(&mut self, name: &str, disk: Box<dyn BlockDevice>) {
        crate::disks::give_back(name, disk);
    }

    fn disk_exists(&mut self, name: &str) -> bool {
        crate::disks::names().iter().any(|n| n == name)
    }
}
