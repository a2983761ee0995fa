//! `event_channel_op` hypercall (`xen/include/public/event_channel.h`): allocating, binding,
//! signalling and closing event channels. "IN" fields are written by the guest, "OUT"
//! fields by the hypervisor.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// Bind to a remote domain's unbound port ([`EvtchnBindInterdomain`]).
pub const EVTCHNOP_BIND_INTERDOMAIN: u32 = 0;
/// Bind a VIRQ to a port ([`EvtchnBindVirq`]).
pub const EVTCHNOP_BIND_VIRQ: u32 = 1;
/// Bind a physical IRQ to a port ([`EvtchnBindPirq`]).
pub const EVTCHNOP_BIND_PIRQ: u32 = 2;
/// Close a port ([`EvtchnClose`]).
pub const EVTCHNOP_CLOSE: u32 = 3;
/// Signal a port ([`EvtchnSend`]).
pub const EVTCHNOP_SEND: u32 = 4;
/// Query a port ([`EvtchnStatus`]).
pub const EVTCHNOP_STATUS: u32 = 5;
/// Allocate an unbound port for a remote domain ([`EvtchnAllocUnbound`]).
pub const EVTCHNOP_ALLOC_UNBOUND: u32 = 6;
/// Allocate an inter-vCPU port ([`EvtchnBindIpi`]).
pub const EVTCHNOP_BIND_IPI: u32 = 7;
/// Change the notified vCPU of a port ([`EvtchnBindVcpu`]).
pub const EVTCHNOP_BIND_VCPU: u32 = 8;
/// Unmask a port and re-raise it if pending ([`EvtchnUnmask`]).
pub const EVTCHNOP_UNMASK: u32 = 9;
/// Close all ports of a domain ([`EvtchnReset`]).
pub const EVTCHNOP_RESET: u32 = 10;
/// FIFO ABI: initialise a vCPU's control block ([`EvtchnInitControl`]).
pub const EVTCHNOP_INIT_CONTROL: u32 = 11;
/// FIFO ABI: add an event array page ([`EvtchnExpandArray`]).
pub const EVTCHNOP_EXPAND_ARRAY: u32 = 12;
/// FIFO ABI: set a port's priority ([`EvtchnSetPriority`]).
pub const EVTCHNOP_SET_PRIORITY: u32 = 13;
/// Continuation of `EVTCHNOP_reset` (Xen-internal: only defined with `__XEN__`).
pub const EVTCHNOP_RESET_CONT: u32 = 14;

/// Port status: closed / free.
pub const EVTCHNSTAT_CLOSED: u32 = 0;
/// Port status: allocated, waiting for a remote domain to bind.
pub const EVTCHNSTAT_UNBOUND: u32 = 1;
/// Port status: connected to a remote domain's port.
pub const EVTCHNSTAT_INTERDOMAIN: u32 = 2;
/// Port status: bound to a physical IRQ.
pub const EVTCHNSTAT_PIRQ: u32 = 3;
/// Port status: bound to a VIRQ.
pub const EVTCHNSTAT_VIRQ: u32 = 4;
/// Port status: inter-vCPU port.
pub const EVTCHNSTAT_IPI: u32 = 5;

/// `struct evtchn_alloc_unbound` (8 bytes).
#[doc(alias = "evtchn_alloc_unbound")]
#[doc(alias = "evtchn_alloc_unbound_t")]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct EvtchnAllocUnbound {
    /// IN: domain to allocate in (usually `DOMID_SELF`).
    pub dom: u16,
    /// IN: domain allowed to bind.
    pub remote_dom: u16,
    /// OUT: the new port.
    pub port: u32,
}
assert_layout!(EvtchnAllocUnbound, 8, { dom: 0, remote_dom: 2, port: 4 });

/// `struct evtchn_bind_interdomain` (12 bytes).
#[doc(alias = "evtchn_bind_interdomain")]
#[doc(alias = "evtchn_bind_interdomain_t")]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct EvtchnBindInterdomain {
    /// IN: remote domain.
    pub remote_dom: u16,
    /// Padding.
    pub pad: u16,
    /// IN: remote domain's unbound port.
    pub remote_port: u32,
    /// OUT: the new local port.
    pub local_port: u32,
}
assert_layout!(EvtchnBindInterdomain, 12, { remote_dom: 0, pad: 2, remote_port: 4, local_port: 8 });

/// `struct evtchn_bind_virq` (12 bytes).
#[doc(alias = "evtchn_bind_virq")]
#[doc(alias = "evtchn_bind_virq_t")]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct EvtchnBindVirq {
    /// IN: `VIRQ_*`.
    pub virq: u32,
    /// IN: vCPU to notify.
    pub vcpu: u32,
    /// OUT: the new port.
    pub port: u32,
}
assert_layout!(EvtchnBindVirq, 12, { virq: 0, vcpu: 4, port: 8 });

/// `struct evtchn_bind_pirq` (12 bytes).
#[doc(alias = "evtchn_bind_pirq")]
#[doc(alias = "evtchn_bind_pirq_t")]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct EvtchnBindPirq {
    /// IN: the PIRQ (from `PHYSDEVOP_map_pirq`).
    pub pirq: u32,
    /// IN: `BIND_PIRQ__WILL_SHARE` (physdev.h).
    pub flags: u32,
    /// OUT: the new port.
    pub port: u32,
}
assert_layout!(EvtchnBindPirq, 12, { pirq: 0, flags: 4, port: 8 });

/// `struct evtchn_bind_ipi` (8 bytes).
#[doc(alias = "evtchn_bind_ipi")]
#[doc(alias = "evtchn_bind_ipi_t")]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct EvtchnBindIpi {
    /// IN: vCPU to notify.
    pub vcpu: u32,
    /// OUT: the new port.
    pub port: u32,
}
assert_layout!(EvtchnBindIpi, 8, { vcpu: 0, port: 4 });

/// `struct evtchn_close` (4 bytes).
#[doc(alias = "evtchn_close")]
#[doc(alias = "evtchn_close_t")]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct EvtchnClose {
    /// IN: port to close.
    pub port: u32,
}
assert_layout!(EvtchnClose, 4, { port: 0 });

/// `struct evtchn_send` (4 bytes).
#[doc(alias = "evtchn_send")]
#[doc(alias = "evtchn_send_t")]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct EvtchnSend {
    /// IN: local port to signal.
    pub port: u32,
}
assert_layout!(EvtchnSend, 4, { port: 0 });

/// `struct evtchn_status` (24 bytes).
#[doc(alias = "evtchn_status")]
#[doc(alias = "evtchn_status_t")]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct EvtchnStatus {
    /// IN: domain owning the port.
    pub dom: u16,
    /// Padding.
    pub pad: u16,
    /// IN: port to query.
    pub port: u32,
    /// OUT: `EVTCHNSTAT_*`.
    pub status: u32,
    /// OUT: vCPU notified by the port.
    pub vcpu: u32,
    /// OUT: union by status: unbound `{dom u16}` / interdomain `{dom u16, pad, port u32}` /
    /// pirq u32 / virq u32. Use the helpers.
    pub u: [u32; 2],
}
assert_layout!(EvtchnStatus, 24, { dom: 0, pad: 2, port: 4, status: 8, vcpu: 12, u: 16 });

impl EvtchnStatus {
    /// Sets the `unbound` view of the union: the domain allowed to bind.
    pub fn set_unbound(&mut self, dom: u16) {
        self.u = [u32::from(dom), 0];
    }

    /// Sets the `interdomain` view of the union: the connected remote domain and port.
    pub fn set_interdomain(&mut self, dom: u16, port: u32) {
        self.u = [u32::from(dom), port];
    }

    /// Sets the `pirq`/`virq` view of the union.
    pub fn set_irq(&mut self, irq: u32) {
        self.u = [irq, 0];
    }

    /// The domain of the `unbound`/`interdomain` views.
    pub fn union_dom(&self) -> u16 {
        // The domid_t is the first two (little-endian) bytes of the union.
        (self.u[0] & 0xffff) as u16
    }
}

/// `struct evtchn_bind_vcpu` (8 bytes).
#[doc(alias = "evtchn_bind_vcpu")]
#[doc(alias = "evtchn_bind_vcpu_t")]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct EvtchnBindVcpu {
    /// IN: port.
    pub port: u32,
    /// IN: vCPU to notify from now on.
    pub vcpu: u32,
}
assert_layout!(EvtchnBindVcpu, 8, { port: 0, vcpu: 4 });

/// `struct evtchn_unmask` (4 bytes).
#[doc(alias = "evtchn_unmask")]
#[doc(alias = "evtchn_unmask_t")]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct EvtchnUnmask {
    /// IN: port to unmask.
    pub port: u32,
}
assert_layout!(EvtchnUnmask, 4, { port: 0 });

/// `struct evtchn_reset` (2 bytes).
#[doc(alias = "evtchn_reset")]
#[doc(alias = "evtchn_reset_t")]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct EvtchnReset {
    /// IN: domain whose ports are closed (usually `DOMID_SELF`).
    pub dom: u16,
}
assert_layout!(EvtchnReset, 2, { dom: 0 });

/// `struct evtchn_init_control` (24 bytes), FIFO ABI.
#[doc(alias = "evtchn_init_control")]
#[doc(alias = "evtchn_init_control_t")]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct EvtchnInitControl {
    /// IN: frame of the control block.
    pub control_gfn: u64,
    /// IN: offset of the control block in that frame.
    pub offset: u32,
    /// IN: vCPU.
    pub vcpu: u32,
    /// OUT: number of link bits of the event words.
    pub link_bits: u8,
    /// Padding.
    pub pad: [u8; 7],
}
assert_layout!(EvtchnInitControl, 24, { control_gfn: 0, offset: 8, vcpu: 12, link_bits: 16, pad: 17 });

/// `struct evtchn_expand_array` (8 bytes), FIFO ABI.
#[doc(alias = "evtchn_expand_array")]
#[doc(alias = "evtchn_expand_array_t")]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct EvtchnExpandArray {
    /// IN: frame of the new event array page.
    pub array_gfn: u64,
}
assert_layout!(EvtchnExpandArray, 8, { array_gfn: 0 });

/// `struct evtchn_set_priority` (8 bytes), FIFO ABI.
#[doc(alias = "evtchn_set_priority")]
#[doc(alias = "evtchn_set_priority_t")]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct EvtchnSetPriority {
    /// IN: port.
    pub port: u32,
    /// IN: priority.
    pub priority: u32,
}
assert_layout!(EvtchnSetPriority, 8, { port: 0, priority: 4 });

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_union() {
        let mut s = EvtchnStatus::default();
        s.set_interdomain(5, 9);
        assert_eq!(s.union_dom(), 5);
        assert_eq!(&s.as_bytes()[16..18], &5u16.to_le_bytes());
        assert_eq!(&s.as_bytes()[20..24], &9u32.to_le_bytes());
        s.set_irq(3);
        assert_eq!(s.u, [3, 0]);
    }
}
