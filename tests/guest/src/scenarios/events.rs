//! `events`: a loopback interdomain channel (alloc_unbound + bind_interdomain to ourselves),
//! 1000 sends each delivered by an upcall, masking (per port and with the vCPU's upcall
//! mask) with delivery after unmask, and EVTCHNOP_status of each port kind.

use core::sync::atomic::{AtomicU64, Ordering};

use pv_guest::xen_abi::event_channel::{
    EVTCHNSTAT_CLOSED, EVTCHNSTAT_INTERDOMAIN, EVTCHNSTAT_UNBOUND, EVTCHNSTAT_VIRQ,
};
use pv_guest::xen_abi::xen::VIRQ_TIMER;
use pv_guest::xen_abi::DomId;
use pv_guest::{events, hypercall as hc, println, shared};

use crate::report::{rc, Rc, Report};

static P_COUNT: AtomicU64 = AtomicU64::new(0);
static Q_COUNT: AtomicU64 = AtomicU64::new(0);

fn on_p(_port: u32) {
    P_COUNT.fetch_add(1, Ordering::SeqCst);
}

fn on_q(_port: u32) {
    Q_COUNT.fetch_add(1, Ordering::SeqCst);
}

fn on_virq(_port: u32) {}

const SELF: u16 = DomId::SELF.raw();
const SENDS: u64 = 1000;

fn status(r: &mut Report, what: &str, port: u32, expected: u32) {
    r.eq(
        what,
        hc::evtchn_status(SELF, port).map(|s| s.status).ok(),
        Some(expected),
    );
}

pub fn run(r: &mut Report) {
    super::setup(r);
    events::disable();
    let Some(p) = super::ok(r, "alloc_unbound(self)", events::alloc_unbound(DomId::SELF)) else {
        return;
    };
    status(r, "status(unbound) = unbound", p, EVTCHNSTAT_UNBOUND);
    let Some(q) = super::ok(
        r,
        "bind_interdomain(self, p)",
        events::bind_interdomain(DomId::SELF, p),
    ) else {
        return;
    };
    let _ = events::set_handler(p, Some(on_p));
    let _ = events::set_handler(q, Some(on_q));
    events::enable();
    // Xen conservatively notifies a freshly bound local port; informational only.
    println!(
        "info: notifications on the new local port after bind: {}",
        Q_COUNT.load(Ordering::SeqCst)
    );

    // 1000 sends, each delivered on the return from the send hypercall.
    let before = events::stats();
    let c0 = P_COUNT.load(Ordering::SeqCst);
    let mut failed = 0u32;
    for _ in 0..SENDS {
        if hc::evtchn_send(q).is_err() {
            failed += 1;
        }
    }
    let after = events::stats();
    r.eq("1000 sends accepted", failed, 0);
    r.eq(
        "1000 events delivered to the other end",
        P_COUNT.load(Ordering::SeqCst) - c0,
        SENDS,
    );
    let upcalls = after.upcalls - before.upcalls;
    r.check(upcalls >= SENDS, "one upcall per send", upcalls, SENDS);

    // Port mask: the event stays pending until EVTCHNOP_unmask re-raises it.
    let c = P_COUNT.load(Ordering::SeqCst);
    events::mask(p);
    r.eq("send while port masked", rc(events::send(q)), Rc(0));
    r.eq(
        "masked port: not delivered",
        P_COUNT.load(Ordering::SeqCst) - c,
        0,
    );
    r.check(
        shared::test_pending(p),
        "masked port: pending bit set",
        false,
        true,
    );
    r.eq("EVTCHNOP_unmask", rc(events::unmask(p)), Rc(0));
    r.eq(
        "delivered after unmask",
        P_COUNT.load(Ordering::SeqCst) - c,
        1,
    );
    r.check(
        !shared::test_mask(p),
        "unmask cleared the mask bit",
        true,
        false,
    );

    // vCPU upcall mask: delivered when events are enabled again.
    let c = P_COUNT.load(Ordering::SeqCst);
    events::disable();
    r.eq("send with events disabled", rc(events::send(q)), Rc(0));
    r.eq(
        "events disabled: not delivered",
        P_COUNT.load(Ordering::SeqCst) - c,
        0,
    );
    r.check(
        shared::upcall_pending(),
        "events disabled: upcall pending set",
        false,
        true,
    );
    events::enable();
    r.eq(
        "delivered after enabling events",
        P_COUNT.load(Ordering::SeqCst) - c,
        1,
    );

    // Status of each kind of port.
    match hc::evtchn_status(SELF, p) {
        Ok(s) => {
            r.eq("status(p) = interdomain", s.status, EVTCHNSTAT_INTERDOMAIN);
            r.eq("status(p) remote port = q", s.u[1], q);
            r.eq("status(p) vcpu", s.vcpu, 0);
        }
        Err(e) => r.fail("status(p)", e, "interdomain"),
    }
    status(r, "status(q) = interdomain", q, EVTCHNSTAT_INTERDOMAIN);
    if let Some(v) = super::ok(
        r,
        "bind_virq(VIRQ_TIMER)",
        events::bind_virq(VIRQ_TIMER, 0, on_virq),
    ) {
        status(r, "status(virq) = virq", v, EVTCHNSTAT_VIRQ);
        let _ = events::close(v);
        status(r, "status(closed virq port) = closed", v, EVTCHNSTAT_CLOSED);
    }
    status(r, "status(port 0) = closed", 0, EVTCHNSTAT_CLOSED);

    // Closing one end leaves the other unbound; sending there is silently dropped.
    r.eq("close(p)", rc(events::close(p)), Rc(0));
    status(
        r,
        "status(q) after closing p = unbound",
        q,
        EVTCHNSTAT_UNBOUND,
    );
    r.eq("send on unbound q", rc(events::send(q)), Rc(0));
    r.eq("close(q)", rc(events::close(q)), Rc(0));
    status(r, "status(q) = closed", q, EVTCHNSTAT_CLOSED);
    let s = events::stats();
    println!(
        "info: upcalls {} dispatched {} unhandled {}",
        s.upcalls, s.dispatched, s.unhandled
    );
}
