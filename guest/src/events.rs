//! Xen's 2-level event channels on the guest side (ABI.md §1.6; Xen `event_2l.c`, Linux
//! `events_2l.c`): the upcall demultiplexer, per-port handlers, the virtual interrupt flag
//! (`evtchn_upcall_mask`) and wrappers for the `event_channel_op` sub-ops.

use core::sync::atomic::{AtomicU64, Ordering};

use spin::Mutex;
use xen_abi::callback::{CALLBACKF_MASK_EVENTS, CALLBACKTYPE_EVENT, CALLBACKTYPE_FAILSAFE};
use xen_abi::xen::NR_EVENT_CHANNELS;
use xen_abi::DomId;

use crate::arch::{self, hypercall, TrapFrame};
use crate::shared;

pub use hypercall::Result;

/// A per-port event handler; runs in upcall context with events masked.
pub type Handler = fn(port: u32);

static HANDLERS: Mutex<[Option<Handler>; NR_EVENT_CHANNELS]> =
    Mutex::new([None; NR_EVENT_CHANNELS]);
static UPCALLS: AtomicU64 = AtomicU64::new(0);
static DISPATCHED: AtomicU64 = AtomicU64::new(0);
static UNHANDLED: AtomicU64 = AtomicU64::new(0);

/// Counters since boot.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Upcalls entered.
    pub upcalls: u64,
    /// Ports dispatched (handled or not).
    pub dispatched: u64,
    /// Pending ports without a handler.
    pub unhandled: u64,
}

/// Counters since boot.
pub fn stats() -> Stats {
    Stats {
        upcalls: UPCALLS.load(Ordering::Relaxed),
        dispatched: DISPATCHED.load(Ordering::Relaxed),
        unhandled: UNHANDLED.load(Ordering::Relaxed),
    }
}

/// The bitmaps the demultiplexer works on: shared_info/vcpu_info in a kernel, a plain
/// array in host tests.
pub trait EventBitmaps {
    /// Clear `evtchn_upcall_pending`.
    fn clear_upcall_pending(&self);
    /// Atomically take and zero `evtchn_pending_sel`.
    fn take_pending_sel(&self) -> u64;
    /// Word `w` of `evtchn_pending`.
    fn pending(&self, w: usize) -> u64;
    /// Word `w` of `evtchn_mask`.
    fn mask(&self, w: usize) -> u64;
    /// Atomically clear `pending[port]`; true if it was set.
    fn test_and_clear_pending(&self, port: u32) -> bool;
}

/// How many selector rounds one upcall scans before returning; anything left stays pending
/// and the hypervisor delivers another upcall when we re-enable events.
pub const MAX_ROUNDS: usize = 64;

/// Demultiplex pending, unmasked ports, lowest word and bit first, calling `f` for each
/// port whose pending bit this call cleared. Returns the number of ports dispatched.
///
/// The order follows Xen's protocol: clear `upcall_pending` first, then take the selector,
/// so an event raised meanwhile re-sets both and is found in the next round.
pub fn demux(b: &impl EventBitmaps, mut f: impl FnMut(u32)) -> usize {
    let mut n = 0;
    for _ in 0..MAX_ROUNDS {
        b.clear_upcall_pending();
        let mut sel = b.take_pending_sel();
        if sel == 0 {
            break;
        }
        while sel != 0 {
            let w = sel.trailing_zeros() as usize;
            sel &= sel - 1;
            let mut bits = b.pending(w) & !b.mask(w);
            while bits != 0 {
                let i = bits.trailing_zeros();
                bits &= bits - 1;
                let port = (w as u32) * 64 + i;
                if b.test_and_clear_pending(port) {
                    f(port);
                    n += 1;
                }
            }
        }
    }
    n
}

struct Shared;

impl EventBitmaps for Shared {
    fn clear_upcall_pending(&self) {
        shared::clear_upcall_pending();
    }
    fn take_pending_sel(&self) -> u64 {
        shared::take_pending_sel()
    }
    fn pending(&self, w: usize) -> u64 {
        shared::pending_word(w)
    }
    fn mask(&self, w: usize) -> u64 {
        shared::mask_word(w)
    }
    fn test_and_clear_pending(&self, port: u32) -> bool {
        shared::test_and_clear_pending(port)
    }
}

fn handler_of(port: u32) -> Option<Handler> {
    // try_lock: registration masks events while holding the lock, so this only fails if a
    // handler itself is registering; such an event counts as unhandled.
    HANDLERS
        .try_lock()
        .and_then(|h| h.get(port as usize).copied().flatten())
}

/// Called from the upcall entry (events masked by the hypervisor).
pub(crate) fn upcall(_frame: &mut TrapFrame) {
    UPCALLS.fetch_add(1, Ordering::Relaxed);
    demux(&Shared, |port| {
        DISPATCHED.fetch_add(1, Ordering::Relaxed);
        match handler_of(port) {
            Some(h) => h(port),
            None => {
                UNHANDLED.fetch_add(1, Ordering::Relaxed);
            }
        }
    });
}

/// Register the event upcall (`CALLBACKTYPE_event`, entered with events masked) and the
/// failsafe callback. Events stay disabled until [`enable`].
pub fn init() -> Result<()> {
    let ep = arch::entry_points();
    hypercall::callback_register(CALLBACKTYPE_EVENT, CALLBACKF_MASK_EVENTS, ep.upcall)?;
    hypercall::callback_register(CALLBACKTYPE_FAILSAFE, CALLBACKF_MASK_EVENTS, ep.failsafe)?;
    Ok(())
}

/// Enable event delivery (clear the virtual interrupt flag); if an upcall is already
/// pending, make a no-op hypercall so the hypervisor delivers it now (Linux
/// `xen_force_evtchn_callback`).
pub fn enable() {
    shared::set_upcall_mask(false);
    core::sync::atomic::compiler_fence(Ordering::SeqCst);
    if shared::upcall_pending() {
        hypercall::force_event_callback();
    }
}

/// Disable event delivery; returns whether events were enabled before.
pub fn disable() -> bool {
    let was_masked = shared::set_upcall_mask(true);
    core::sync::atomic::compiler_fence(Ordering::SeqCst);
    !was_masked
}

/// Restore the state returned by [`disable`].
pub fn restore(was_enabled: bool) {
    if was_enabled {
        enable();
    }
}

/// Whether event delivery is enabled.
pub fn enabled() -> bool {
    !shared::upcall_mask()
}

/// Set (or clear) the handler of `port`.
pub fn set_handler(port: u32, h: Option<Handler>) -> Result<()> {
    let was = disable();
    let r = match HANDLERS.lock().get_mut(port as usize) {
        Some(slot) => {
            *slot = h;
            Ok(())
        }
        None => Err(hypercall::Error::local(xen_abi::Errno::EINVAL)),
    };
    restore(was);
    r
}

/// Bind `virq` on vCPU `vcpu`, install `h`, and unmask the port. Returns the port.
pub fn bind_virq(virq: u32, vcpu: u32, h: Handler) -> Result<u32> {
    let port = hypercall::evtchn_bind_virq(virq, vcpu)?;
    set_handler(port, Some(h))?;
    unmask(port)?;
    Ok(port)
}

/// Bind physical IRQ `pirq` (from `physdev_map_pirq_msix`) to a new port, install `h`, and
/// unmask the port. Returns the port. The hypervisor lets the device interrupt from here
/// on; closing the port ([`close`]) masks it again.
pub fn bind_pirq(pirq: u32, h: Handler) -> Result<u32> {
    let port = hypercall::evtchn_bind_pirq(pirq, 0)?;
    if let Err(e) = set_handler(port, Some(h)).and_then(|()| unmask(port).map(|_| ())) {
        let _ = hypercall::evtchn_close(port);
        return Err(e);
    }
    Ok(port)
}

/// A new port of ours that `remote` may bind (`DomId::SELF` for loopback).
pub fn alloc_unbound(remote: DomId) -> Result<u32> {
    hypercall::evtchn_alloc_unbound(DomId::SELF.raw(), remote.raw())
}

/// Connect a new local port to `remote`'s unbound `remote_port`.
pub fn bind_interdomain(remote: DomId, remote_port: u32) -> Result<u32> {
    hypercall::evtchn_bind_interdomain(remote.raw(), remote_port)
}

/// Notify the other end of `port`.
pub fn send(port: u32) -> Result<u64> {
    hypercall::evtchn_send(port)
}

/// Close `port` and forget its handler.
pub fn close(port: u32) -> Result<u64> {
    let r = hypercall::evtchn_close(port)?;
    let _ = set_handler(port, None);
    Ok(r)
}

/// Mask `port` locally.
pub fn mask(port: u32) {
    shared::set_mask(port);
}

/// Unmask `port` with `EVTCHNOP_unmask`, which also re-raises an event that arrived while it
/// was masked.
pub fn unmask(port: u32) -> Result<u64> {
    hypercall::evtchn_unmask(port)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::{Cell, RefCell};

    /// Plain-array model of shared_info + vcpu_info, raising events like Xen's event_2l.c.
    struct Model {
        pending: RefCell<[u64; 64]>,
        mask: RefCell<[u64; 64]>,
        sel: Cell<u64>,
        upcall_pending: Cell<bool>,
    }

    impl Model {
        fn new() -> Model {
            Model {
                pending: RefCell::new([0; 64]),
                mask: RefCell::new([0; 64]),
                sel: Cell::new(0),
                upcall_pending: Cell::new(false),
            }
        }
        fn raise(&self, port: u32) {
            let (w, b) = ((port / 64) as usize, 1u64 << (port % 64));
            let mut p = self.pending.borrow_mut();
            if p[w] & b != 0 {
                return;
            }
            p[w] |= b;
            if self.mask.borrow()[w] & b == 0 && self.sel.get() & (1 << w) == 0 {
                self.sel.set(self.sel.get() | (1 << w));
                self.upcall_pending.set(true);
            }
        }
    }

    impl EventBitmaps for Model {
        fn clear_upcall_pending(&self) {
            self.upcall_pending.set(false);
        }
        fn take_pending_sel(&self) -> u64 {
            self.sel.replace(0)
        }
        fn pending(&self, w: usize) -> u64 {
            self.pending.borrow()[w]
        }
        fn mask(&self, w: usize) -> u64 {
            self.mask.borrow()[w]
        }
        fn test_and_clear_pending(&self, port: u32) -> bool {
            let (w, b) = ((port / 64) as usize, 1u64 << (port % 64));
            let mut p = self.pending.borrow_mut();
            let was = p[w] & b != 0;
            p[w] &= !b;
            was
        }
    }

    #[test]
    fn dispatches_in_order_and_clears() {
        let m = Model::new();
        for p in [4095, 1, 64, 63, 700] {
            m.raise(p);
        }
        let mut seen = Vec::new();
        assert_eq!(demux(&m, |p| seen.push(p)), 5);
        assert_eq!(seen, vec![1, 63, 64, 700, 4095]);
        assert!(m.pending.borrow().iter().all(|&w| w == 0));
        assert!(!m.upcall_pending.get());
        assert_eq!(demux(&m, |_| panic!("nothing pending")), 0);
    }

    #[test]
    fn masked_ports_stay_pending() {
        let m = Model::new();
        m.mask.borrow_mut()[0] = 1 << 5;
        m.raise(5);
        m.raise(6);
        let mut seen = Vec::new();
        demux(&m, |p| seen.push(p));
        assert_eq!(seen, vec![6]);
        assert_eq!(m.pending.borrow()[0], 1 << 5);
    }

    #[test]
    fn events_raised_during_dispatch_are_found() {
        let m = Model::new();
        m.raise(3);
        let mut seen = Vec::new();
        let once = Cell::new(true);
        demux(&m, |p| {
            seen.push(p);
            if p == 3 && once.replace(false) {
                m.raise(3); // re-raised while handling
                m.raise(200);
            }
        });
        assert_eq!(seen, vec![3, 3, 200]);
    }

    #[test]
    fn rounds_are_bounded() {
        let m = Model::new();
        m.raise(9);
        let n = demux(&m, |p| m.raise(p)); // a storm: every dispatch re-raises
        assert_eq!(n, MAX_ROUNDS);
        assert!(m.upcall_pending.get());
    }
}
