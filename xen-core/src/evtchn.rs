//! Event channels: Xen's per-domain port table and the 2-level ("classic") event ABI.
//!
//! This module implements the portable part of Xen's `xen/common/event_channel.c` and
//! `xen/common/event_2l.c` for 64-bit PV guests:
//!
//! * [`EventChannels`] is one domain's port table (Xen's `d->evtchn` buckets plus every
//!   vCPU's `virq_to_evtchn[]`). Its methods are the `EVTCHNOP_*` operations that touch a
//!   single domain and return Xen's exact error numbers, so a guest sees the same `-EINVAL`,
//!   `-ENOENT`, `-EEXIST`, `-EBUSY` or `-ENOSPC` it would see on Xen. Every argument that can
//!   come from a guest (port, vCPU, VIRQ and PIRQ numbers) is range-checked; nothing here
//!   panics or indexes out of bounds on hostile values.
//! * Operations that involve two domains are split so that the hypervisor, which owns the
//!   domains and their locks, stays in charge of lookup and lock order:
//!   [`bind_interdomain`] takes both tables (`&mut` each; lock the lower domain id first, as
//!   Xen does) and [`EventChannels::bind_interdomain_self`] covers the loopback case where
//!   both ends live in the same domain. [`EventChannels::close`] and
//!   [`EventChannels::reset`] report what has to happen to the peer domain as a
//!   [`PeerClosed`] value which the caller applies with [`EventChannels::peer_closed`] while
//!   still holding both domains' locks. [`EventChannels::send`] returns a [`SendTarget`]
//!   that says which domain's port to raise; the caller raises it with
//!   [`EventChannels::notify`] on that domain.
//! * The 2-level pending/mask/selector rules ([`raise`], [`unmask`]) work on the guest's
//!   `shared_info`/`vcpu_info` bits through the [`EventBits`] trait, so they can be tested on
//!   the host with [`MemEventBits`] and run in the hypervisor over the real (atomically
//!   accessed) guest page.
//!
//! # Port table model
//!
//! Xen grows a domain's table in buckets of `EVTCHNS_PER_BUCKET` ports (64 on x86_64,
//! where `struct evtchn` is 64 bytes) and never shrinks it; a port below the grown size is
//! *valid* even if it is free (`EVTCHNOP_status` then reports `EVTCHNSTAT_closed` instead of
//! `-EINVAL`). The table here grows the same way ([`PORTS_PER_BUCKET`]) up to
//! [`MAX_PORTS`] (4096 = 64 words of 64 bits, the 2-level limit for a 64-bit guest) or the
//! domain's configured maximum port ([`EventChannels::set_max_port`], Xen's
//! `max_evtchn_port`). Port 0 is reserved at creation, as in Xen's `evtchn_init`, and so is
//! never handed out. New ports are the lowest free ones, exactly as Xen's `get_free_port`.
//!
//! # Not modelled
//!
//! Xen-attached ("consumer is Xen") channels, XSM checks, the FIFO ABI (`EVTCHNOP_init_control`
//! is answered by the hypervisor's dispatcher), `VIRQ_DOM_EXC` state tracking and the
//! preemption of `EVTCHNOP_reset` (4096 ports are cheap enough to close in one go). Domain
//! lookup (`-ESRCH`, `DOMID_SELF`) and privilege checks (who may act on another domain,
//! `EVTCHNOP_reset` on a domain that is not paused, PIRQ access permissions) belong to the
//! caller.

use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use xen_abi::event_channel::{
    EVTCHNSTAT_CLOSED, EVTCHNSTAT_INTERDOMAIN, EVTCHNSTAT_IPI, EVTCHNSTAT_PIRQ, EVTCHNSTAT_UNBOUND,
    EVTCHNSTAT_VIRQ,
};
use xen_abi::xen::{
    NR_EVENT_CHANNELS, NR_VIRQS, VIRQ_ARGO, VIRQ_DEBUG, VIRQ_TIMER, VIRQ_XENOPROF, VIRQ_XENPMU,
};
use xen_abi::{DomId, Errno, EvtchnPort, VcpuId};

/// Number of ports of the 2-level ABI for a 64-bit guest: 64 selector bits × 64 bits per
/// `evtchn_pending` word (`EVTCHN_2L_NR_CHANNELS`).
pub const MAX_PORTS: u32 = 4096;
/// Bits per `evtchn_pending`/`evtchn_mask` word and per `evtchn_pending_sel` (64-bit guest).
pub const BITS_PER_WORD: u32 = 64;
/// Granularity in which the port table grows (Xen's `EVTCHNS_PER_BUCKET` on x86_64).
pub const PORTS_PER_BUCKET: u32 = 64;

const _: () = assert!(NR_EVENT_CHANNELS as u64 == MAX_PORTS as u64);
const _: () = assert!(BITS_PER_WORD * BITS_PER_WORD == MAX_PORTS);
const _: () = assert!(MAX_PORTS.is_multiple_of(PORTS_PER_BUCKET));

/// Number of VIRQs as an array length.
const NVIRQ: usize = NR_VIRQS as usize;
// The global-handler bitmask is a `u32`.
const _: () = assert!(NVIRQ <= 32);

// ---------------------------------------------------------------------------------------
// 2-level pending logic
// ---------------------------------------------------------------------------------------

/// Access to one domain's 2-level event bits: `shared_info.evtchn_pending[]`,
/// `shared_info.evtchn_mask[]` and, per vCPU, `vcpu_info.evtchn_pending_sel` and
/// `vcpu_info.evtchn_upcall_pending`.
///
/// The guest writes the same words concurrently, so an implementation over guest memory must
/// use atomic read-modify-write operations (`lock bts`/`btr` or `fetch_or`/`fetch_and` on the
/// containing word). The order of the calls made by [`raise`] and [`unmask`] is the order Xen
/// uses; on x86 the atomic operations are also full barriers, which that order relies on.
///
/// Callers in this module only pass `port < MAX_PORTS` and `word < BITS_PER_WORD`; `vcpu` is
/// a vCPU of the domain (its `vcpu_info` may live in `shared_info` or wherever the guest
/// registered it with `VCPUOP_register_vcpu_info` — that is the implementor's business).
pub trait EventBits {
    /// Atomically sets `evtchn_pending[port]`; returns its previous value.
    fn test_and_set_pending(&self, port: u32) -> bool;
    /// Atomically clears `evtchn_pending[port]`.
    fn clear_pending(&self, port: u32);
    /// Reads `evtchn_pending[port]`.
    fn is_pending(&self, port: u32) -> bool;
    /// Reads `evtchn_mask[port]`.
    fn is_masked(&self, port: u32) -> bool;
    /// Atomically clears `evtchn_mask[port]`; returns its previous value.
    fn test_and_clear_mask(&self, port: u32) -> bool;
    /// Atomically sets `evtchn_mask[port]`.
    fn set_mask(&self, port: u32);
    /// Atomically sets bit `word` of `vcpu`'s `evtchn_pending_sel`; returns its previous value.
    fn test_and_set_selector(&self, vcpu: u32, word: u32) -> bool;
    /// Atomically sets `vcpu`'s `evtchn_upcall_pending`; returns its previous value.
    fn set_upcall_pending(&self, vcpu: u32) -> bool;
}

/// What [`raise`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RaiseOutcome {
    /// Nothing was done: the port is outside the 2-level range or the channel is not in use.
    Dropped,
    /// The port was already pending; nothing changed (the edge is already recorded).
    AlreadyPending,
    /// The pending bit was newly set, but no new upcall is needed: the port is masked, its
    /// selector bit was already set, or `evtchn_upcall_pending` was already set.
    Pending,
    /// The pending bit was newly set and `evtchn_upcall_pending` went from 0 to 1: the vCPU
    /// must be kicked (woken if blocked, interrupted if running elsewhere) so it takes the
    /// upcall.
    Upcall,
}

impl RaiseOutcome {
    /// Whether the notified vCPU needs a kick (Xen's `vcpu_kick` in
    /// `vcpu_mark_events_pending`).
    pub const fn needs_kick(self) -> bool {
        matches!(self, RaiseOutcome::Upcall)
    }

    /// Whether the pending bit was newly set. Xen wakes `SCHEDOP_poll` pollers of the port in
    /// exactly this case (`evtchn_check_pollers`), whether or not the port is masked.
    pub const fn newly_pending(self) -> bool {
        matches!(self, RaiseOutcome::Pending | RaiseOutcome::Upcall)
    }
}

/// Raises `port` for `vcpu` (its notify vCPU) by the 2-level rule (Xen's
/// `evtchn_2l_set_pending`; ABI.md 1.6): set `pending[port]`; if it was already set, stop.
/// If `mask[port]` is clear and the port's selector bit in `vcpu`'s `evtchn_pending_sel` was
/// clear, set `evtchn_upcall_pending`; a 0→1 change of that byte means the vCPU must be
/// kicked ([`RaiseOutcome::needs_kick`]).
///
/// A port raised while masked stays pending without touching the selector; [`unmask`]
/// delivers that edge later.
pub fn raise(bits: &impl EventBits, port: u32, vcpu: u32) -> RaiseOutcome {
    if port >= MAX_PORTS {
        return RaiseOutcome::Dropped;
    }
    if bits.test_and_set_pending(port) {
        return RaiseOutcome::AlreadyPending;
    }
    if !bits.is_masked(port)
        && !bits.test_and_set_selector(vcpu, port / BITS_PER_WORD)
        && !bits.set_upcall_pending(vcpu)
    {
        return RaiseOutcome::Upcall;
    }
    RaiseOutcome::Pending
}

/// Unmasks `port` on behalf of the guest (`EVTCHNOP_unmask`, Xen's `evtchn_2l_unmask`):
/// clear `mask[port]`; if it was set, the port is pending and its selector bit for `vcpu` was
/// clear, set the selector bit and `evtchn_upcall_pending`. This is how an edge raised while
/// the port was masked reaches the guest.
///
/// Returns true if `evtchn_upcall_pending` went from 0 to 1, i.e. `vcpu` must be kicked.
pub fn unmask(bits: &impl EventBits, port: u32, vcpu: u32) -> bool {
    if port >= MAX_PORTS {
        return false;
    }
    bits.test_and_clear_mask(port)
        && bits.is_pending(port)
        && !bits.test_and_set_selector(vcpu, port / BITS_PER_WORD)
        && !bits.set_upcall_pending(vcpu)
}

/// An in-memory [`EventBits`] with the same layout as the guest's words (64 pending words,
/// 64 mask words, one selector word and one upcall flag per vCPU), for host tests and for
/// hypervisor code that wants a private copy. Out-of-range ports and vCPUs read as clear and
/// ignore writes.
#[derive(Debug)]
pub struct MemEventBits {
    pending: [AtomicU64; 64],
    mask: [AtomicU64; 64],
    sel: Vec<AtomicU64>,
    upcall: Vec<AtomicBool>,
}

impl MemEventBits {
    /// All bits clear, `nr_vcpus` selector words and upcall flags.
    pub fn new(nr_vcpus: u32) -> Self {
        Self {
            pending: [const { AtomicU64::new(0) }; 64],
            mask: [const { AtomicU64::new(0) }; 64],
            sel: (0..nr_vcpus).map(|_| AtomicU64::new(0)).collect(),
            upcall: (0..nr_vcpus).map(|_| AtomicBool::new(false)).collect(),
        }
    }

    fn word(arr: &[AtomicU64; 64], port: u32) -> Option<(&AtomicU64, u64)> {
        let w = arr.get(usize::try_from(port / BITS_PER_WORD).ok()?)?;
        Some((w, 1u64 << (port % BITS_PER_WORD)))
    }

    fn test(arr: &[AtomicU64; 64], port: u32) -> bool {
        Self::word(arr, port).is_some_and(|(w, b)| w.load(Ordering::SeqCst) & b != 0)
    }

    fn set(arr: &[AtomicU64; 64], port: u32) -> bool {
        Self::word(arr, port).is_some_and(|(w, b)| w.fetch_or(b, Ordering::SeqCst) & b != 0)
    }

    fn clear(arr: &[AtomicU64; 64], port: u32) -> bool {
        Self::word(arr, port).is_some_and(|(w, b)| w.fetch_and(!b, Ordering::SeqCst) & b != 0)
    }

    /// Guest side: sets `evtchn_mask[port]`.
    pub fn guest_mask(&self, port: u32) {
        Self::set(&self.mask, port);
    }

    /// Guest side: clears `evtchn_pending[port]` (what a guest does when it handles a port).
    pub fn guest_clear_pending(&self, port: u32) {
        Self::clear(&self.pending, port);
    }

    /// Guest side: reads and clears `vcpu`'s `evtchn_pending_sel` (the guest's `xchg`).
    pub fn guest_take_selector(&self, vcpu: u32) -> u64 {
        self.sel_word(vcpu)
            .map_or(0, |w| w.swap(0, Ordering::SeqCst))
    }

    /// Guest side: clears `vcpu`'s `evtchn_upcall_pending`; returns the previous value.
    pub fn guest_clear_upcall(&self, vcpu: u32) -> bool {
        self.upcall_flag(vcpu)
            .is_some_and(|f| f.swap(false, Ordering::SeqCst))
    }

    /// `vcpu`'s `evtchn_pending_sel`.
    pub fn selector(&self, vcpu: u32) -> u64 {
        self.sel_word(vcpu).map_or(0, |w| w.load(Ordering::SeqCst))
    }

    /// `vcpu`'s `evtchn_upcall_pending`.
    pub fn upcall_pending(&self, vcpu: u32) -> bool {
        self.upcall_flag(vcpu)
            .is_some_and(|f| f.load(Ordering::SeqCst))
    }

    fn sel_word(&self, vcpu: u32) -> Option<&AtomicU64> {
        self.sel.get(usize::try_from(vcpu).ok()?)
    }

    fn upcall_flag(&self, vcpu: u32) -> Option<&AtomicBool> {
        self.upcall.get(usize::try_from(vcpu).ok()?)
    }
}

impl EventBits for MemEventBits {
    fn test_and_set_pending(&self, port: u32) -> bool {
        Self::set(&self.pending, port)
    }
    fn clear_pending(&self, port: u32) {
        Self::clear(&self.pending, port);
    }
    fn is_pending(&self, port: u32) -> bool {
        Self::test(&self.pending, port)
    }
    fn is_masked(&self, port: u32) -> bool {
        Self::test(&self.mask, port)
    }
    fn test_and_clear_mask(&self, port: u32) -> bool {
        Self::clear(&self.mask, port)
    }
    fn set_mask(&self, port: u32) {
        Self::set(&self.mask, port);
    }
    fn test_and_set_selector(&self, vcpu: u32, word: u32) -> bool {
        if word >= BITS_PER_WORD {
            return false;
        }
        let b = 1u64 << word;
        self.sel_word(vcpu)
            .is_some_and(|w| w.fetch_or(b, Ordering::SeqCst) & b != 0)
    }
    fn set_upcall_pending(&self, vcpu: u32) -> bool {
        self.upcall_flag(vcpu)
            .is_some_and(|f| f.swap(true, Ordering::SeqCst))
    }
}

// ---------------------------------------------------------------------------------------
// VIRQ classification
// ---------------------------------------------------------------------------------------

/// How a VIRQ is routed (Xen's `enum virq_type`, `get_virq_type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VirqKind {
    /// Per-vCPU VIRQ (`VIRQ_TIMER`, `VIRQ_DEBUG`, `VIRQ_XENOPROF`, `VIRQ_XENPMU`): bound
    /// separately on each vCPU, always delivered to that vCPU, cannot be moved.
    PerVcpu,
    /// Per-domain VIRQ (`VIRQ_ARGO`): bound on vCPU 0 by any domain, movable with
    /// `EVTCHNOP_bind_vcpu`.
    PerDomain,
    /// Global VIRQ (all others, including the unassigned numbers and `VIRQ_ARCH_*` on x86):
    /// only the domain that handles it (by default the hardware domain) may bind it, on vCPU
    /// 0; movable with `EVTCHNOP_bind_vcpu`.
    Global,
}

/// Classifies `virq`; `None` if `virq >= NR_VIRQS`.
pub fn virq_kind(virq: u32) -> Option<VirqKind> {
    if virq >= NR_VIRQS {
        return None;
    }
    Some(match virq {
        VIRQ_TIMER | VIRQ_DEBUG | VIRQ_XENOPROF | VIRQ_XENPMU => VirqKind::PerVcpu,
        VIRQ_ARGO => VirqKind::PerDomain,
        _ => VirqKind::Global,
    })
}

// ---------------------------------------------------------------------------------------
// Port table
// ---------------------------------------------------------------------------------------

/// State of one port (Xen's `ECS_*` plus the per-state union of `struct evtchn`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Channel {
    /// Available for allocation (`ECS_FREE`).
    Free,
    /// Never allocated; only port 0 (`ECS_RESERVED`). Reads as closed.
    Reserved,
    /// Allocated, waiting for `remote` to bind to it (`ECS_UNBOUND`).
    Unbound {
        /// The only domain allowed to bind (`u.unbound.remote_domid`).
        remote: DomId,
    },
    /// Connected to `remote_port` of `remote` (`ECS_INTERDOMAIN`); `remote` may be this
    /// domain itself (loopback).
    Interdomain {
        /// Peer domain.
        remote: DomId,
        /// Peer port in `remote`'s table.
        remote_port: EvtchnPort,
    },
    /// Bound to a virtual IRQ (`ECS_VIRQ`).
    Virq {
        /// The VIRQ number (< `NR_VIRQS`).
        virq: u32,
    },
    /// Bound for inter-vCPU notification within the domain (`ECS_IPI`).
    Ipi,
    /// Bound to a physical IRQ (`ECS_PIRQ`).
    Pirq {
        /// The domain's PIRQ number.
        pirq: u32,
    },
}

impl Channel {
    /// Whether the guest can use the channel (Xen's `evtchn_usable`: not free, not reserved).
    pub const fn is_usable(&self) -> bool {
        !matches!(self, Channel::Free | Channel::Reserved)
    }
}

/// Result of [`EventChannels::status`] (`EVTCHNOP_status`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortStatus {
    /// The port's state.
    pub channel: Channel,
    /// The port's notify vCPU (`evtchn_status.vcpu`).
    pub vcpu: VcpuId,
}

impl PortStatus {
    /// `evtchn_status.status` (`EVTCHNSTAT_*`).
    pub fn status_code(&self) -> u32 {
        match self.channel {
            Channel::Free | Channel::Reserved => EVTCHNSTAT_CLOSED,
            Channel::Unbound { .. } => EVTCHNSTAT_UNBOUND,
            Channel::Interdomain { .. } => EVTCHNSTAT_INTERDOMAIN,
            Channel::Pirq { .. } => EVTCHNSTAT_PIRQ,
            Channel::Virq { .. } => EVTCHNSTAT_VIRQ,
            Channel::Ipi => EVTCHNSTAT_IPI,
        }
    }

    /// Writes the state-specific part of `evtchn_status.u` (two little-endian `u32` words)
    /// the way Xen does: Xen copies the guest's structure in and out and stores only the
    /// fields of the current state, so the other bytes keep the guest's input (closed and IPI
    /// ports write nothing; unbound writes only the low 16 bits of word 0; interdomain leaves
    /// the 16-bit pad after `dom`).
    pub fn fill_union(&self, u: &mut [u32; 2]) {
        match self.channel {
            Channel::Free | Channel::Reserved | Channel::Ipi => {}
            Channel::Unbound { remote } => {
                u[0] = (u[0] & 0xFFFF_0000) | u32::from(remote.raw());
            }
            Channel::Interdomain {
                remote,
                remote_port,
            } => {
                u[0] = (u[0] & 0xFFFF_0000) | u32::from(remote.raw());
                u[1] = remote_port.raw();
            }
            Channel::Pirq { pirq } => u[0] = pirq,
            Channel::Virq { virq } => u[0] = virq,
        }
    }
}

/// The outcome of raising a port on its notify vCPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Delivery {
    /// The port that was raised.
    pub port: EvtchnPort,
    /// Its notify vCPU.
    pub vcpu: VcpuId,
    /// What the 2-level logic did.
    pub outcome: RaiseOutcome,
}

impl Delivery {
    /// The vCPU to kick, if any.
    pub const fn kick(&self) -> Option<VcpuId> {
        if self.outcome.needs_kick() {
            Some(self.vcpu)
        } else {
            None
        }
    }
}

/// Where an `EVTCHNOP_send` goes ([`EventChannels::send`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SendTarget {
    /// Raise `port` of the sending domain itself (IPI, or loopback interdomain) on `vcpu`;
    /// [`EventChannels::notify`] on the same table does it.
    Local {
        /// Port to raise.
        port: EvtchnPort,
        /// Its notify vCPU.
        vcpu: VcpuId,
    },
    /// Raise `port` of domain `dom`: look the domain up and call
    /// [`EventChannels::notify`]`(port, ..)` on its table (which uses that port's notify
    /// vCPU).
    Remote {
        /// Peer domain.
        dom: DomId,
        /// Peer port.
        port: EvtchnPort,
    },
    /// Unbound port: Xen silently drops the notification and returns 0.
    Ignore,
}

/// The peer side of a closed interdomain channel, which must become unbound again
/// (`EVTCHNOP_close` on either end puts the other end back to `ECS_UNBOUND`, accepting a new
/// bind from the closing domain). Apply with [`EventChannels::peer_closed`] on `dom`'s table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerClosed {
    /// Peer domain whose table must be updated.
    pub dom: DomId,
    /// Peer port.
    pub port: EvtchnPort,
    /// The domain that closed its end.
    pub closer: DomId,
    /// The port it closed.
    pub closer_port: EvtchnPort,
}

/// What the caller must do after a successful [`EventChannels::close`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseEffect {
    /// Nothing (unbound, VIRQ, IPI, or a loopback channel whose other end was already updated
    /// in the same table).
    None,
    /// Apply the [`PeerClosed`] on the peer domain's table.
    PeerBecomesUnbound(PeerClosed),
    /// A PIRQ binding was removed: the caller must unbind physical IRQ `pirq` from the domain
    /// (Xen's `pirq_guest_unbind`).
    PirqUnbound {
        /// The PIRQ that was bound to the port.
        pirq: u32,
    },
}

#[derive(Clone, Copy, Debug)]
struct Slot {
    chan: Channel,
    notify: VcpuId,
}

impl Slot {
    const FREE: Slot = Slot {
        chan: Channel::Free,
        notify: VcpuId::new(0),
    };
}

/// One domain's event channels (see the module docs).
#[derive(Debug)]
pub struct EventChannels {
    domid: DomId,
    nr_vcpus: u32,
    /// Highest port number that may be allocated (Xen's `d->max_evtchn_port`, capped).
    max_port: u32,
    /// Port table; its length is Xen's `valid_evtchns` (a multiple of the bucket size).
    slots: Vec<Slot>,
    /// Per vCPU, the port bound to each VIRQ (Xen's `v->virq_to_evtchn`). Per-domain and
    /// global VIRQs live in vCPU 0's table whatever their notify vCPU.
    virq_ports: Vec<[Option<EvtchnPort>; NVIRQ]>,
    /// Bit `v` set: this domain handles global VIRQ `v` (Xen's `global_virq_handlers[v]`,
    /// which defaults to the hardware domain).
    global_virqs: u32,
}

impl EventChannels {
    /// A new table for domain `domid` with `nr_vcpus` vCPUs (ids `0..nr_vcpus`): one bucket of
    /// ports, port 0 reserved, no global VIRQs handled, maximum port `MAX_PORTS - 1`.
    ///
    /// Fails with `-ENOMEM` if the tables cannot be allocated.
    pub fn new(domid: DomId, nr_vcpus: u32) -> Result<Self, Errno> {
        let mut slots = Vec::new();
        slots
            .try_reserve_exact(PORTS_PER_BUCKET as usize)
            .map_err(|_| Errno::ENOMEM)?;
        slots.resize(PORTS_PER_BUCKET as usize, Slot::FREE);
        if let Some(s) = slots.first_mut() {
            s.chan = Channel::Reserved;
        }
        let n = usize::try_from(nr_vcpus).map_err(|_| Errno::ENOMEM)?;
        let mut virq_ports = Vec::new();
        virq_ports.try_reserve_exact(n).map_err(|_| Errno::ENOMEM)?;
        virq_ports.resize(n, [None; NVIRQ]);
        Ok(Self {
            domid,
            nr_vcpus,
            max_port: MAX_PORTS - 1,
            slots,
            virq_ports,
            global_virqs: 0,
        })
    }

    /// The domain this table belongs to.
    pub fn domid(&self) -> DomId {
        self.domid
    }

    /// Number of vCPUs the table was created for.
    pub fn nr_vcpus(&self) -> u32 {
        self.nr_vcpus
    }

    /// Sets the highest port number later allocations may use (Xen's `max_evtchn_port`
    /// from `XEN_DOMCTL_createdomain`; capped at `MAX_PORTS - 1`). Ports already allocated
    /// above it stay.
    pub fn set_max_port(&mut self, max_port: u32) {
        self.max_port = max_port.min(MAX_PORTS - 1);
    }

    /// Highest allocatable port.
    pub fn max_port(&self) -> u32 {
        self.max_port
    }

    /// Makes this domain the handler (or not) of global VIRQ `virq`; without it
    /// `EVTCHNOP_bind_virq` of that VIRQ fails with `-EBUSY`. Xen's default handler of every
    /// global VIRQ is the hardware domain, see [`EventChannels::set_hardware_domain`].
    /// Checking that no other domain still has the VIRQ bound (Xen's `-EBUSY` in
    /// `set_global_virq_handler`) is the caller's job ([`EventChannels::virq_port`]).
    ///
    /// `-EINVAL` if `virq` is not a global VIRQ.
    pub fn set_global_virq_handler(&mut self, virq: u32, handler: bool) -> Result<(), Errno> {
        if virq_kind(virq) != Some(VirqKind::Global) {
            return Err(Errno::EINVAL);
        }
        let bit = 1u32 << virq;
        if handler {
            self.global_virqs |= bit;
        } else {
            self.global_virqs &= !bit;
        }
        Ok(())
    }

    /// Makes this domain the handler of every global VIRQ (what Xen's hardware domain is by
    /// default).
    pub fn set_hardware_domain(&mut self) {
        for virq in 0..NR_VIRQS {
            if virq_kind(virq) == Some(VirqKind::Global) {
                self.global_virqs |= 1u32 << virq;
            }
        }
    }

    /// Whether this domain handles global VIRQ `virq`.
    pub fn handles_global_virq(&self, virq: u32) -> bool {
        virq_kind(virq) == Some(VirqKind::Global) && self.global_virqs & (1u32 << virq) != 0
    }

    /// Number of ports that are in use (not free, not reserved).
    pub fn active_ports(&self) -> usize {
        self.slots.iter().filter(|s| s.chan.is_usable()).count()
    }

    /// Number of valid port numbers (Xen's `valid_evtchns`): ports below it have a slot (and
    /// `EVTCHNOP_status` answers for them), ports at or above it are `-EINVAL`.
    pub fn valid_ports(&self) -> u32 {
        // Never more than MAX_PORTS, so the conversion cannot fail.
        u32::try_from(self.slots.len()).unwrap_or(MAX_PORTS)
    }

    /// The state of `port`, or `None` if `port` is not valid.
    pub fn channel(&self, port: EvtchnPort) -> Option<Channel> {
        self.slot(port).map(|s| s.chan)
    }

    /// The notify vCPU of `port`, or `None` if `port` is not valid.
    pub fn notify_vcpu(&self, port: EvtchnPort) -> Option<VcpuId> {
        self.slot(port).map(|s| s.notify)
    }

    fn slot(&self, port: EvtchnPort) -> Option<&Slot> {
        self.slots.get(usize::try_from(port.raw()).ok()?)
    }

    fn slot_mut(&mut self, port: EvtchnPort) -> Option<&mut Slot> {
        self.slots.get_mut(usize::try_from(port.raw()).ok()?)
    }

    fn vcpu_ok(&self, vcpu: VcpuId) -> bool {
        vcpu.raw() < self.nr_vcpus
    }

    /// Xen's `get_free_port`: the lowest free port up to `max_port`, growing the table by
    /// whole buckets when needed (the growth stays even if the caller then fails, as in Xen).
    /// The port is still `Free` when returned; the caller sets its state.
    fn alloc_port(&mut self) -> Result<EvtchnPort, Errno> {
        let limit = self.max_port.min(MAX_PORTS - 1);
        for port in 0..=limit {
            let idx = port as usize;
            if let Some(slot) = self.slots.get(idx) {
                if matches!(slot.chan, Channel::Free) {
                    return Ok(EvtchnPort::new(port));
                }
                continue;
            }
            // Beyond the table: grow it to cover `port` (the first port past the end, so it
            // is free).
            // `idx < MAX_PORTS`, so this cannot overflow.
            let new_len = idx
                .saturating_add(1)
                .next_multiple_of(PORTS_PER_BUCKET as usize);
            let extra = new_len.saturating_sub(self.slots.len());
            self.slots
                .try_reserve_exact(extra)
                .map_err(|_| Errno::ENOMEM)?;
            self.slots.resize(new_len, Slot::FREE);
            return Ok(EvtchnPort::new(port));
        }
        Err(Errno::ENOSPC)
    }

    /// Puts `port` into state `chan` with notify vCPU `vcpu`. The port comes from
    /// `alloc_port`, so it exists.
    fn occupy(&mut self, port: EvtchnPort, chan: Channel, vcpu: VcpuId) {
        if let Some(s) = self.slot_mut(port) {
            s.chan = chan;
            s.notify = vcpu;
        }
    }

    /// Xen's `evtchn_free`: clears the pending bit (so a later re-bind does not see a stale
    /// event), marks the port free and resets its notify vCPU to 0. The mask bit is left
    /// alone, as in Xen.
    fn free(&mut self, port: EvtchnPort, bits: &impl EventBits) {
        if let Some(s) = self.slot_mut(port) {
            if s.chan.is_usable() {
                bits.clear_pending(port.raw());
            }
            *s = Slot::FREE;
        }
    }

    /// `EVTCHNOP_alloc_unbound`: allocates a port that `remote_dom` may later bind with
    /// `EVTCHNOP_bind_interdomain`. `DOMID_SELF` as `remote_dom` means `current`, the calling
    /// domain (which need not be this domain: a privileged domain may allocate on behalf of
    /// another). Like Xen, `remote_dom` is not checked for existence.
    ///
    /// Errors: `-ENOSPC` (no free port), `-ENOMEM`.
    pub fn alloc_unbound(
        &mut self,
        remote_dom: DomId,
        current: DomId,
    ) -> Result<EvtchnPort, Errno> {
        let remote = if remote_dom == DomId::SELF {
            current
        } else {
            remote_dom
        };
        let port = self.alloc_port()?;
        self.occupy(port, Channel::Unbound { remote }, VcpuId::new(0));
        Ok(port)
    }

    /// Loopback `EVTCHNOP_bind_interdomain` (`remote_dom` is this domain): binds a new port to
    /// this domain's own unbound `remote_port`, which must have been allocated for this
    /// domain. As in Xen, the new port is raised right away on its notify vCPU (vCPU 0)
    /// because notifications sent to the unbound end were dropped.
    ///
    /// Errors (in Xen's order): `-ENOSPC`/`-ENOMEM` (no local port), `-EINVAL` (`remote_port`
    /// invalid, not unbound, or not for this domain).
    pub fn bind_interdomain_self(
        &mut self,
        bits: &impl EventBits,
        remote_port: EvtchnPort,
    ) -> Result<(EvtchnPort, Delivery), Errno> {
        let lport = self.alloc_port()?;
        let me = self.domid;
        match self.channel(remote_port) {
            Some(Channel::Unbound { remote }) if remote == me => {}
            _ => return Err(Errno::EINVAL),
        }
        self.occupy(
            lport,
            Channel::Interdomain {
                remote: me,
                remote_port,
            },
            VcpuId::new(0),
        );
        if let Some(s) = self.slot_mut(remote_port) {
            s.chan = Channel::Interdomain {
                remote: me,
                remote_port: lport,
            };
        }
        Ok((lport, self.notify(lport, bits)))
    }

    /// `EVTCHNOP_bind_virq`: binds `virq` on `vcpu` to a new port.
    ///
    /// Errors (in Xen's order): `-EINVAL` (`virq >= NR_VIRQS`, or a non-per-vCPU VIRQ with
    /// `vcpu != 0`), `-ENOENT` (no such vCPU), `-EBUSY` (global VIRQ this domain does not
    /// handle), `-EEXIST` (already bound on that vCPU), `-ENOSPC`/`-ENOMEM`.
    pub fn bind_virq(&mut self, virq: u32, vcpu: VcpuId) -> Result<EvtchnPort, Errno> {
        let kind = virq_kind(virq).ok_or(Errno::EINVAL)?;
        if kind != VirqKind::PerVcpu && vcpu.raw() != 0 {
            return Err(Errno::EINVAL);
        }
        if !self.vcpu_ok(vcpu) {
            return Err(Errno::ENOENT);
        }
        if kind == VirqKind::Global && !self.handles_global_virq(virq) {
            return Err(Errno::EBUSY);
        }
        let vidx = virq as usize;
        let entry = self
            .virq_ports
            .get(vcpu.raw() as usize)
            .and_then(|t| t.get(vidx))
            .ok_or(Errno::ENOENT)?;
        if entry.is_some() {
            return Err(Errno::EEXIST);
        }
        let port = self.alloc_port()?;
        self.occupy(port, Channel::Virq { virq }, vcpu);
        if let Some(e) = self
            .virq_ports
            .get_mut(vcpu.raw() as usize)
            .and_then(|t| t.get_mut(vidx))
        {
            *e = Some(port);
        }
        Ok(port)
    }

    /// `EVTCHNOP_bind_ipi`: a new port for notifications between this domain's vCPUs,
    /// delivered to `vcpu`.
    ///
    /// Errors: `-ENOENT` (no such vCPU), `-ENOSPC`/`-ENOMEM`.
    pub fn bind_ipi(&mut self, vcpu: VcpuId) -> Result<EvtchnPort, Errno> {
        if !self.vcpu_ok(vcpu) {
            return Err(Errno::ENOENT);
        }
        let port = self.alloc_port()?;
        self.occupy(port, Channel::Ipi, vcpu);
        Ok(port)
    }

    /// `EVTCHNOP_bind_pirq` (table part): binds PIRQ `pirq` of a domain with `nr_pirqs` PIRQs
    /// to a new port, notify vCPU 0. The caller checks access (`-EPERM`) and binds the
    /// physical IRQ afterwards (undoing with [`EventChannels::close`] if that fails).
    ///
    /// Errors: `-EINVAL` (`pirq >= nr_pirqs`), `-EEXIST` (already bound),
    /// `-ENOSPC`/`-ENOMEM`.
    pub fn bind_pirq(&mut self, pirq: u32, nr_pirqs: u32) -> Result<EvtchnPort, Errno> {
        if pirq >= nr_pirqs {
            return Err(Errno::EINVAL);
        }
        if self.pirq_port(pirq).is_some() {
            return Err(Errno::EEXIST);
        }
        let port = self.alloc_port()?;
        self.occupy(port, Channel::Pirq { pirq }, VcpuId::new(0));
        Ok(port)
    }

    /// `EVTCHNOP_close`: frees `port` and clears its pending bit. For an interdomain port
    /// whose peer is another domain, the caller must apply the returned
    /// [`CloseEffect::PeerBecomesUnbound`] to the peer's table before releasing its locks
    /// (hold both domains' event locks, lower domain id first — find the peer beforehand with
    /// [`EventChannels::channel`]). A loopback peer is updated here.
    ///
    /// Errors: `-EINVAL` (invalid, free or reserved port).
    pub fn close(&mut self, port: EvtchnPort, bits: &impl EventBits) -> Result<CloseEffect, Errno> {
        let slot = *self.slot(port).ok_or(Errno::EINVAL)?;
        let effect = match slot.chan {
            Channel::Free | Channel::Reserved => return Err(Errno::EINVAL),
            Channel::Unbound { .. } | Channel::Ipi => CloseEffect::None,
            Channel::Pirq { pirq } => CloseEffect::PirqUnbound { pirq },
            Channel::Virq { virq } => {
                // Per-domain and global VIRQs are recorded in vCPU 0's table even after
                // EVTCHNOP_bind_vcpu moved their notify vCPU.
                let table_vcpu = if virq_kind(virq) == Some(VirqKind::PerVcpu) {
                    slot.notify.raw()
                } else {
                    0
                };
                if let Some(e) = self
                    .virq_ports
                    .get_mut(table_vcpu as usize)
                    .and_then(|t| t.get_mut(virq as usize))
                {
                    if *e == Some(port) {
                        *e = None;
                    }
                }
                CloseEffect::None
            }
            Channel::Interdomain {
                remote,
                remote_port,
            } => {
                if remote == self.domid {
                    let me = self.domid;
                    if let Some(peer) = self.slot_mut(remote_port) {
                        peer.chan = Channel::Unbound { remote: me };
                    }
                    CloseEffect::None
                } else {
                    CloseEffect::PeerBecomesUnbound(PeerClosed {
                        dom: remote,
                        port: remote_port,
                        closer: self.domid,
                        closer_port: port,
                    })
                }
            }
        };
        self.free(port, bits);
        Ok(effect)
    }

    /// Applies the peer side of a close done in another domain: `closed.port` (in this
    /// domain) goes back to unbound, accepting a new bind from `closed.closer`; its notify
    /// vCPU and event bits are kept, as in Xen.
    ///
    /// `-EINVAL` if `closed.port` is not the interdomain peer of (`closer`, `closer_port`)
    /// (the table is left unchanged; in Xen this is a `BUG_ON`, i.e. a hypervisor bug).
    pub fn peer_closed(&mut self, closed: &PeerClosed) -> Result<(), Errno> {
        if closed.dom != self.domid {
            return Err(Errno::EINVAL);
        }
        let slot = self.slot_mut(closed.port).ok_or(Errno::EINVAL)?;
        match slot.chan {
            Channel::Interdomain {
                remote,
                remote_port,
            } if remote == closed.closer && remote_port == closed.closer_port => {
                slot.chan = Channel::Unbound {
                    remote: closed.closer,
                };
                Ok(())
            }
            _ => Err(Errno::EINVAL),
        }
    }

    /// `EVTCHNOP_reset` (and domain destruction): closes every port in increasing order.
    /// `on_peer` receives every [`PeerClosed`] for another domain, which the caller must
    /// apply ([`EventChannels::peer_closed`]); `on_pirq` every PIRQ that was unbound. Global
    /// VIRQ handler assignments stay, as in Xen.
    pub fn reset(
        &mut self,
        bits: &impl EventBits,
        mut on_peer: impl FnMut(PeerClosed),
        mut on_pirq: impl FnMut(u32),
    ) {
        for port in 1..self.valid_ports() {
            match self.close(EvtchnPort::new(port), bits) {
                Ok(CloseEffect::PeerBecomesUnbound(p)) => on_peer(p),
                Ok(CloseEffect::PirqUnbound { pirq }) => on_pirq(pirq),
                Ok(CloseEffect::None) | Err(_) => {}
            }
        }
    }

    /// `EVTCHNOP_status` for a port of this domain (looking up `evtchn_status.dom` is the
    /// caller's job).
    ///
    /// Errors: `-EINVAL` (port beyond the table). Free ports below it are
    /// `EVTCHNSTAT_closed`.
    pub fn status(&self, port: EvtchnPort) -> Result<PortStatus, Errno> {
        let s = self.slot(port).ok_or(Errno::EINVAL)?;
        Ok(PortStatus {
            channel: s.chan,
            vcpu: s.notify,
        })
    }

    /// `EVTCHNOP_bind_vcpu`: changes the vCPU that `port` notifies. Allowed for unbound,
    /// interdomain and PIRQ ports and for per-domain/global VIRQs (the caller re-targets the
    /// physical IRQ affinity for a PIRQ).
    ///
    /// Errors (in Xen's order): `-ENOENT` (no such vCPU), `-EINVAL` (invalid port, free,
    /// reserved, IPI or per-vCPU VIRQ port).
    pub fn bind_vcpu(&mut self, port: EvtchnPort, vcpu: VcpuId) -> Result<(), Errno> {
        if !self.vcpu_ok(vcpu) {
            return Err(Errno::ENOENT);
        }
        let slot = self.slot_mut(port).ok_or(Errno::EINVAL)?;
        match slot.chan {
            Channel::Virq { virq } if virq_kind(virq) != Some(VirqKind::PerVcpu) => {}
            Channel::Unbound { .. } | Channel::Interdomain { .. } | Channel::Pirq { .. } => {}
            _ => return Err(Errno::EINVAL),
        }
        slot.notify = vcpu;
        Ok(())
    }

    /// `EVTCHNOP_unmask`: clears the mask bit of `port` and delivers an edge that was raised
    /// while it was masked ([`unmask`]), on the port's notify vCPU. Returns the vCPU to kick,
    /// if any. A valid but unused port is accepted and left alone (Xen returns 0).
    ///
    /// Errors: `-EINVAL` (port beyond the table).
    pub fn unmask(&self, port: EvtchnPort, bits: &impl EventBits) -> Result<Option<VcpuId>, Errno> {
        let s = self.slot(port).ok_or(Errno::EINVAL)?;
        if s.chan.is_usable() && unmask(bits, port.raw(), s.notify.raw()) {
            return Ok(Some(s.notify));
        }
        Ok(None)
    }

    /// `EVTCHNOP_send`: where the notification for `port` goes. IPI ports raise themselves,
    /// interdomain ports raise their peer (in this domain for loopback), unbound ports drop
    /// it.
    ///
    /// Errors: `-EINVAL` (invalid, free, reserved, VIRQ or PIRQ port).
    pub fn send(&self, port: EvtchnPort) -> Result<SendTarget, Errno> {
        let s = self.slot(port).ok_or(Errno::EINVAL)?;
        match s.chan {
            Channel::Ipi => Ok(SendTarget::Local {
                port,
                vcpu: s.notify,
            }),
            Channel::Interdomain {
                remote,
                remote_port,
            } => {
                if remote == self.domid {
                    let vcpu = self.notify_vcpu(remote_port).ok_or(Errno::EINVAL)?;
                    Ok(SendTarget::Local {
                        port: remote_port,
                        vcpu,
                    })
                } else {
                    Ok(SendTarget::Remote {
                        dom: remote,
                        port: remote_port,
                    })
                }
            }
            Channel::Unbound { .. } => Ok(SendTarget::Ignore),
            Channel::Free | Channel::Reserved | Channel::Virq { .. } | Channel::Pirq { .. } => {
                Err(Errno::EINVAL)
            }
        }
    }

    /// Raises `port` on its notify vCPU (Xen's `evtchn_port_set_pending`), if the port is in
    /// use; otherwise (invalid, free, reserved) nothing happens and the outcome is
    /// [`RaiseOutcome::Dropped`].
    pub fn notify(&self, port: EvtchnPort, bits: &impl EventBits) -> Delivery {
        match self.slot(port) {
            Some(s) if s.chan.is_usable() => Delivery {
                port,
                vcpu: s.notify,
                outcome: raise(bits, port.raw(), s.notify.raw()),
            },
            _ => Delivery {
                port,
                vcpu: VcpuId::new(0),
                outcome: RaiseOutcome::Dropped,
            },
        }
    }

    /// The port bound to `virq` for `vcpu` (for per-domain and global VIRQs the binding on
    /// vCPU 0, whatever `vcpu` is), if any.
    pub fn virq_port(&self, virq: u32, vcpu: VcpuId) -> Option<EvtchnPort> {
        let table_vcpu = match virq_kind(virq)? {
            VirqKind::PerVcpu => vcpu.raw(),
            VirqKind::PerDomain | VirqKind::Global => 0,
        };
        *self
            .virq_ports
            .get(usize::try_from(table_vcpu).ok()?)?
            .get(virq as usize)?
    }

    /// Sends `virq` (Xen's `send_guest_vcpu_virq` for per-vCPU VIRQs on `vcpu`, and
    /// `send_guest_domain_virq`/`send_global_virq` otherwise, where `vcpu` is ignored and the
    /// port's notify vCPU is used). `None` if the VIRQ is not bound.
    pub fn send_virq(&self, virq: u32, vcpu: VcpuId, bits: &impl EventBits) -> Option<Delivery> {
        let port = self.virq_port(virq, vcpu)?;
        Some(self.notify(port, bits))
    }

    /// The port bound to PIRQ `pirq`, if any (deliver with [`EventChannels::notify`]).
    pub fn pirq_port(&self, pirq: u32) -> Option<EvtchnPort> {
        self.slots
            .iter()
            .position(|s| s.chan == Channel::Pirq { pirq })
            .and_then(|i| u32::try_from(i).ok())
            .map(EvtchnPort::new)
    }

    /// `SCHEDOP_poll` check of one port (Xen's `evtchn_port_poll`): whether it is pending.
    /// Unused ports are never pending.
    ///
    /// Errors: `-EINVAL` (port beyond the table).
    pub fn poll(&self, port: EvtchnPort, bits: &impl EventBits) -> Result<bool, Errno> {
        let s = self.slot(port).ok_or(Errno::EINVAL)?;
        Ok(s.chan.is_usable() && port.raw() < MAX_PORTS && bits.is_pending(port.raw()))
    }
}

/// `EVTCHNOP_bind_interdomain` between two different domains: binds a new port of `local`
/// to `remote_port` of `remote`, which must be unbound and allocated for `local`'s domain.
/// The caller resolves `remote_dom` (`-ESRCH`, `DOMID_SELF`), uses
/// [`EventChannels::bind_interdomain_self`] when it names the local domain, and holds both
/// domains' locks (lower domain id first). As in Xen, the new local port is raised at once
/// (on `local_bits`) because notifications sent to the unbound end were dropped.
///
/// Errors (in Xen's order): `-ENOSPC`/`-ENOMEM` (no local port), `-EINVAL` (`remote_port`
/// invalid, not unbound, or allocated for another domain).
pub fn bind_interdomain(
    local: &mut EventChannels,
    local_bits: &impl EventBits,
    remote: &mut EventChannels,
    remote_port: EvtchnPort,
) -> Result<(EvtchnPort, Delivery), Errno> {
    let lport = local.alloc_port()?;
    let ldom = local.domid;
    let rdom = remote.domid;
    let rslot = remote.slot_mut(remote_port).ok_or(Errno::EINVAL)?;
    match rslot.chan {
        Channel::Unbound { remote: allowed } if allowed == ldom => {}
        _ => return Err(Errno::EINVAL),
    }
    rslot.chan = Channel::Interdomain {
        remote: ldom,
        remote_port: lport,
    };
    local.occupy(
        lport,
        Channel::Interdomain {
            remote: rdom,
            remote_port,
        },
        VcpuId::new(0),
    );
    Ok((lport, local.notify(lport, local_bits)))
}

#[cfg(test)]
mod tests;
