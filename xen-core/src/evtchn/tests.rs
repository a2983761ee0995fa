//! Host tests of the event-channel core: every operation, every rejection with Xen's errno,
//! the 2-level edge rules, and property tests of random operation sequences on three domains
//! against an independent model.

use super::*;
use xen_abi::xen::{VIRQ_CONSOLE, VIRQ_DOM_EXC};

fn p(n: u32) -> EvtchnPort {
    EvtchnPort::new(n)
}
fn v(n: u32) -> VcpuId {
    VcpuId::new(n)
}
fn d(n: u16) -> DomId {
    DomId::new(n)
}

fn dom(id: u16, vcpus: u32) -> (EventChannels, MemEventBits) {
    (
        EventChannels::new(d(id), vcpus).expect("alloc"),
        MemEventBits::new(vcpus),
    )
}

#[test]
fn new_table_reserves_port_0() {
    let (mut c, b) = dom(1, 2);
    assert_eq!(c.valid_ports(), 64);
    assert_eq!(c.channel(p(0)), Some(Channel::Reserved));
    let st = c.status(p(0)).unwrap();
    assert_eq!(st.status_code(), EVTCHNSTAT_CLOSED);
    assert_eq!(st.vcpu, v(0));
    assert_eq!(c.close(p(0), &b), Err(Errno::EINVAL));
    assert_eq!(c.send(p(0)), Err(Errno::EINVAL));
    assert_eq!(c.bind_vcpu(p(0), v(0)), Err(Errno::EINVAL));
    assert_eq!(c.active_ports(), 0);
    // First allocation is port 1.
    assert_eq!(c.alloc_unbound(d(0), d(1)), Ok(p(1)));
}

#[test]
fn invalid_ports_are_einval_everywhere() {
    let (mut c, b) = dom(1, 2);
    for port in [64, 65, 4095, 4096, 0x8000_0000, u32::MAX, (-1i32) as u32] {
        let port = p(port);
        assert_eq!(c.status(port), Err(Errno::EINVAL));
        assert_eq!(c.close(port, &b), Err(Errno::EINVAL));
        assert_eq!(c.send(port), Err(Errno::EINVAL));
        assert_eq!(c.bind_vcpu(port, v(1)), Err(Errno::EINVAL));
        assert_eq!(c.unmask(port, &b), Err(Errno::EINVAL));
        assert_eq!(c.poll(port, &b), Err(Errno::EINVAL));
        assert_eq!(c.notify(port, &b).outcome, RaiseOutcome::Dropped);
        assert_eq!(c.channel(port), None);
        assert_eq!(c.notify_vcpu(port), None);
    }
    // Free ports inside the table are "closed", not invalid.
    assert_eq!(
        c.status(p(63)).map(|s| s.status_code()),
        Ok(EVTCHNSTAT_CLOSED)
    );
    assert_eq!(c.close(p(63), &b), Err(Errno::EINVAL));
    assert_eq!(c.send(p(63)), Err(Errno::EINVAL));
    assert_eq!(c.unmask(p(63), &b), Ok(None));
    assert_eq!(c.poll(p(63), &b), Ok(false));
}

#[test]
fn alloc_unbound_and_status() {
    let (mut c, _b) = dom(3, 1);
    assert_eq!(c.alloc_unbound(d(0), d(3)), Ok(p(1)));
    // DOMID_SELF means the caller, which may be another (privileged) domain.
    assert_eq!(c.alloc_unbound(DomId::SELF, d(0)), Ok(p(2)));
    assert_eq!(c.alloc_unbound(DomId::SELF, d(3)), Ok(p(3)));
    // Nonexistent remote domains are accepted, as in Xen.
    assert_eq!(c.alloc_unbound(DomId::INVALID, d(3)), Ok(p(4)));
    assert_eq!(c.channel(p(2)), Some(Channel::Unbound { remote: d(0) }));
    assert_eq!(c.channel(p(3)), Some(Channel::Unbound { remote: d(3) }));
    let st = c.status(p(1)).unwrap();
    assert_eq!(st.status_code(), EVTCHNSTAT_UNBOUND);
    let mut u = [0xAAAA_BBBB, 0xCCCC_DDDD];
    st.fill_union(&mut u);
    assert_eq!(u, [0xAAAA_0000, 0xCCCC_DDDD]);
    assert_eq!(c.active_ports(), 4);
}

#[test]
fn status_union_per_state() {
    let (mut a, ab) = dom(1, 2);
    let (mut b, bb) = dom(2, 2);
    a.set_hardware_domain();
    let ub = b.alloc_unbound(d(1), d(2)).unwrap();
    let (lp, _) = bind_interdomain(&mut a, &ab, &mut b, ub).unwrap();
    let st = a.status(lp).unwrap();
    assert_eq!(st.status_code(), EVTCHNSTAT_INTERDOMAIN);
    let mut u = [0xFFFF_FFFF; 2];
    st.fill_union(&mut u);
    assert_eq!(u, [0xFFFF_0002, ub.raw()]);

    let vp = a.bind_virq(VIRQ_CONSOLE, v(0)).unwrap();
    let st = a.status(vp).unwrap();
    assert_eq!(st.status_code(), EVTCHNSTAT_VIRQ);
    let mut u = [7, 8];
    st.fill_union(&mut u);
    assert_eq!(u, [VIRQ_CONSOLE, 8]);

    let ip = a.bind_ipi(v(1)).unwrap();
    let st = a.status(ip).unwrap();
    assert_eq!((st.status_code(), st.vcpu), (EVTCHNSTAT_IPI, v(1)));
    let mut u = [7, 8];
    st.fill_union(&mut u);
    assert_eq!(u, [7, 8]);

    let pp = a.bind_pirq(9, 16).unwrap();
    let st = a.status(pp).unwrap();
    assert_eq!(st.status_code(), EVTCHNSTAT_PIRQ);
    let mut u = [7, 8];
    st.fill_union(&mut u);
    assert_eq!(u, [9, 8]);
    let _ = bb;
}

#[test]
fn bind_virq_errors_in_xen_order() {
    let (mut c, _b) = dom(1, 2);
    // virq out of range first, whatever the vCPU.
    assert_eq!(c.bind_virq(NR_VIRQS, v(0)), Err(Errno::EINVAL));
    assert_eq!(c.bind_virq(u32::MAX, v(u32::MAX)), Err(Errno::EINVAL));
    // Non-per-vCPU VIRQ on vCPU != 0: EINVAL even for a nonexistent vCPU.
    assert_eq!(c.bind_virq(VIRQ_CONSOLE, v(1)), Err(Errno::EINVAL));
    assert_eq!(c.bind_virq(VIRQ_ARGO, v(99)), Err(Errno::EINVAL));
    // Bad vCPU.
    assert_eq!(c.bind_virq(VIRQ_TIMER, v(2)), Err(Errno::ENOENT));
    assert_eq!(c.bind_virq(VIRQ_TIMER, v(u32::MAX)), Err(Errno::ENOENT));
    // Global VIRQs (incl. unassigned numbers and VIRQ_ARCH_*) need the handler role.
    for virq in [VIRQ_CONSOLE, VIRQ_DOM_EXC, 5, 14, 16, 23] {
        assert_eq!(c.bind_virq(virq, v(0)), Err(Errno::EBUSY), "virq {virq}");
    }
    // Per-vCPU VIRQs bind on every vCPU separately.
    let t0 = c.bind_virq(VIRQ_TIMER, v(0)).unwrap();
    let t1 = c.bind_virq(VIRQ_TIMER, v(1)).unwrap();
    assert_ne!(t0, t1);
    assert_eq!(c.bind_virq(VIRQ_TIMER, v(1)), Err(Errno::EEXIST));
    assert_eq!(c.notify_vcpu(t1), Some(v(1)));
    assert_eq!(c.virq_port(VIRQ_TIMER, v(0)), Some(t0));
    assert_eq!(c.virq_port(VIRQ_TIMER, v(1)), Some(t1));
    // Per-domain VIRQ: any domain, vCPU 0.
    let a = c.bind_virq(VIRQ_ARGO, v(0)).unwrap();
    assert_eq!(c.bind_virq(VIRQ_ARGO, v(0)), Err(Errno::EEXIST));
    assert_eq!(c.virq_port(VIRQ_ARGO, v(1)), Some(a));
    // Handler role.
    assert_eq!(
        c.set_global_virq_handler(VIRQ_TIMER, true),
        Err(Errno::EINVAL)
    );
    assert_eq!(
        c.set_global_virq_handler(VIRQ_ARGO, true),
        Err(Errno::EINVAL)
    );
    assert_eq!(
        c.set_global_virq_handler(NR_VIRQS, true),
        Err(Errno::EINVAL)
    );
    assert_eq!(
        c.set_global_virq_handler(u32::MAX, true),
        Err(Errno::EINVAL)
    );
    c.set_global_virq_handler(VIRQ_CONSOLE, true).unwrap();
    let con = c.bind_virq(VIRQ_CONSOLE, v(0)).unwrap();
    assert_eq!(c.bind_virq(VIRQ_CONSOLE, v(0)), Err(Errno::EEXIST));
    assert_eq!(c.bind_virq(VIRQ_DOM_EXC, v(0)), Err(Errno::EBUSY));
    assert_eq!(c.virq_port(VIRQ_CONSOLE, v(1)), Some(con));
    assert_eq!(c.virq_port(NR_VIRQS, v(0)), None);
    assert_eq!(c.virq_port(VIRQ_TIMER, v(7)), None);
    // EEXIST is checked before port exhaustion.
    c.set_max_port(con.raw());
    assert_eq!(c.bind_virq(VIRQ_CONSOLE, v(0)), Err(Errno::EEXIST));
    assert_eq!(c.bind_virq(VIRQ_DEBUG, v(0)), Err(Errno::ENOSPC));
}

#[test]
fn virq_kinds() {
    assert_eq!(virq_kind(VIRQ_TIMER), Some(VirqKind::PerVcpu));
    assert_eq!(virq_kind(VIRQ_DEBUG), Some(VirqKind::PerVcpu));
    assert_eq!(virq_kind(VIRQ_XENOPROF), Some(VirqKind::PerVcpu));
    assert_eq!(virq_kind(VIRQ_XENPMU), Some(VirqKind::PerVcpu));
    assert_eq!(virq_kind(VIRQ_ARGO), Some(VirqKind::PerDomain));
    assert_eq!(virq_kind(VIRQ_CONSOLE), Some(VirqKind::Global));
    assert_eq!(virq_kind(23), Some(VirqKind::Global));
    assert_eq!(virq_kind(24), None);
    let (mut c, _) = dom(0, 1);
    c.set_hardware_domain();
    assert!(c.handles_global_virq(VIRQ_DOM_EXC));
    assert!(!c.handles_global_virq(VIRQ_TIMER));
    c.set_global_virq_handler(VIRQ_DOM_EXC, false).unwrap();
    assert!(!c.handles_global_virq(VIRQ_DOM_EXC));
}

#[test]
fn bind_ipi_and_send() {
    let (mut c, b) = dom(1, 2);
    assert_eq!(c.bind_ipi(v(2)), Err(Errno::ENOENT));
    assert_eq!(c.bind_ipi(v(u32::MAX)), Err(Errno::ENOENT));
    let ip = c.bind_ipi(v(1)).unwrap();
    assert_eq!(
        c.send(ip),
        Ok(SendTarget::Local {
            port: ip,
            vcpu: v(1)
        })
    );
    let dl = c.notify(ip, &b);
    assert_eq!(dl.kick(), Some(v(1)));
    assert!(b.is_pending(ip.raw()));
    assert_eq!(b.selector(1), 1 << (ip.raw() / BITS_PER_WORD));
    assert_eq!(b.selector(0), 0);
    // IPIs cannot move.
    assert_eq!(c.bind_vcpu(ip, v(0)), Err(Errno::EINVAL));
    // Unbound ports swallow sends; VIRQ ports refuse them.
    let ub = c.alloc_unbound(d(5), d(1)).unwrap();
    assert_eq!(c.send(ub), Ok(SendTarget::Ignore));
    let t = c.bind_virq(VIRQ_TIMER, v(0)).unwrap();
    assert_eq!(c.send(t), Err(Errno::EINVAL));
    let pq = c.bind_pirq(3, 4).unwrap();
    assert_eq!(c.send(pq), Err(Errno::EINVAL));
}

#[test]
fn bind_vcpu_rules() {
    let (mut c, b) = dom(0, 3);
    c.set_hardware_domain();
    // Bad vCPU is reported before a bad port.
    assert_eq!(c.bind_vcpu(p(4000), v(3)), Err(Errno::ENOENT));
    assert_eq!(c.bind_vcpu(p(4000), v(2)), Err(Errno::EINVAL));
    assert_eq!(c.bind_vcpu(p(5), v(2)), Err(Errno::EINVAL)); // free
    let t = c.bind_virq(VIRQ_TIMER, v(1)).unwrap();
    assert_eq!(c.bind_vcpu(t, v(2)), Err(Errno::EINVAL));
    let con = c.bind_virq(VIRQ_CONSOLE, v(0)).unwrap();
    assert_eq!(c.bind_vcpu(con, v(2)), Ok(()));
    assert_eq!(c.notify_vcpu(con), Some(v(2)));
    // Global VIRQ delivery follows the notify vCPU; the binding stays on vCPU 0's table.
    let dl = c.send_virq(VIRQ_CONSOLE, v(0), &b).unwrap();
    assert_eq!((dl.port, dl.vcpu, dl.kick()), (con, v(2), Some(v(2))));
    // Per-vCPU VIRQ delivery goes to its own vCPU.
    let dl = c.send_virq(VIRQ_TIMER, v(1), &b).unwrap();
    assert_eq!((dl.port, dl.kick()), (t, Some(v(1))));
    assert_eq!(c.send_virq(VIRQ_TIMER, v(0), &b), None);
    // Closing the moved global VIRQ unbinds it, so it can be bound again.
    assert_eq!(c.close(con, &b), Ok(CloseEffect::None));
    assert_eq!(c.virq_port(VIRQ_CONSOLE, v(0)), None);
    assert_eq!(c.bind_virq(VIRQ_CONSOLE, v(0)), Ok(con));
    assert_eq!(c.notify_vcpu(con), Some(v(0)));
    // Closing the per-vCPU VIRQ unbinds it on its vCPU.
    assert_eq!(c.close(t, &b), Ok(CloseEffect::None));
    assert_eq!(c.virq_port(VIRQ_TIMER, v(1)), None);
    // Unbound and PIRQ ports can move.
    let ub = c.alloc_unbound(d(1), d(0)).unwrap();
    assert_eq!(c.bind_vcpu(ub, v(1)), Ok(()));
    let pq = c.bind_pirq(1, 2).unwrap();
    assert_eq!(c.bind_vcpu(pq, v(1)), Ok(()));
}

#[test]
fn pirq_binding() {
    let (mut c, b) = dom(0, 1);
    assert_eq!(c.bind_pirq(16, 16), Err(Errno::EINVAL));
    assert_eq!(c.bind_pirq(u32::MAX, 16), Err(Errno::EINVAL));
    let pp = c.bind_pirq(15, 16).unwrap();
    assert_eq!(c.bind_pirq(15, 16), Err(Errno::EEXIST));
    assert_eq!(c.pirq_port(15), Some(pp));
    assert_eq!(c.pirq_port(14), None);
    assert_eq!(c.notify(pp, &b).kick(), Some(v(0)));
    assert_eq!(c.close(pp, &b), Ok(CloseEffect::PirqUnbound { pirq: 15 }));
    assert_eq!(c.pirq_port(15), None);
    assert!(!b.is_pending(pp.raw()));
}

#[test]
fn interdomain_bind_send_close() {
    let (mut front, fb) = dom(5, 2);
    let (mut back, bb) = dom(0, 2);
    // Frontend offers a port to the backend.
    let fp = front.alloc_unbound(d(0), d(5)).unwrap();
    // Notifications on the unbound end are dropped.
    assert_eq!(front.send(fp), Ok(SendTarget::Ignore));
    front.bind_vcpu(fp, v(1)).unwrap();
    // The backend binds; its new port is raised at once.
    let (bp, dl) = bind_interdomain(&mut back, &bb, &mut front, fp).unwrap();
    assert_eq!(dl.port, bp);
    assert_eq!(dl.kick(), Some(v(0)));
    assert!(bb.is_pending(bp.raw()));
    assert_eq!(
        back.channel(bp),
        Some(Channel::Interdomain {
            remote: d(5),
            remote_port: fp
        })
    );
    assert_eq!(
        front.channel(fp),
        Some(Channel::Interdomain {
            remote: d(0),
            remote_port: bp
        })
    );
    // bind_vcpu done while unbound is kept.
    assert_eq!(front.notify_vcpu(fp), Some(v(1)));
    // Send in both directions.
    assert_eq!(
        back.send(bp),
        Ok(SendTarget::Remote {
            dom: d(5),
            port: fp
        })
    );
    assert_eq!(front.notify(fp, &fb).kick(), Some(v(1)));
    assert_eq!(
        front.send(fp),
        Ok(SendTarget::Remote {
            dom: d(0),
            port: bp
        })
    );
    // The port is already pending from the bind: no second upcall.
    assert_eq!(back.notify(bp, &bb).outcome, RaiseOutcome::AlreadyPending);
    // The frontend closes: backend's port becomes unbound (for the frontend).
    let eff = front.close(fp, &fb).unwrap();
    let pc = PeerClosed {
        dom: d(0),
        port: bp,
        closer: d(5),
        closer_port: fp,
    };
    assert_eq!(eff, CloseEffect::PeerBecomesUnbound(pc));
    assert!(
        !fb.is_pending(fp.raw()),
        "close clears the closed port's pending bit"
    );
    assert_eq!(
        front.notify_vcpu(fp),
        Some(v(0)),
        "close resets the notify vCPU"
    );
    // Applying on the wrong domain or twice fails without changes.
    assert_eq!(front.peer_closed(&pc), Err(Errno::EINVAL));
    back.peer_closed(&pc).unwrap();
    assert_eq!(back.peer_closed(&pc), Err(Errno::EINVAL));
    assert_eq!(back.channel(bp), Some(Channel::Unbound { remote: d(5) }));
    assert!(bb.is_pending(bp.raw()), "the peer's bits are untouched");
    assert_eq!(back.send(bp), Ok(SendTarget::Ignore));
    // The frontend can bind again to the backend's (now unbound) port.
    let (fp2, _) = bind_interdomain(&mut front, &fb, &mut back, bp).unwrap();
    assert_eq!(fp2, fp);
}

#[test]
fn bind_interdomain_rejections() {
    let (mut a, ab) = dom(1, 1);
    let (mut b, bb) = dom(2, 1);
    // Invalid / free / reserved remote port.
    for rp in [0, 5, 64, u32::MAX] {
        assert_eq!(
            bind_interdomain(&mut a, &ab, &mut b, p(rp)).map(|x| x.0),
            Err(Errno::EINVAL)
        );
    }
    // Unbound for another domain.
    let other = b.alloc_unbound(d(3), d(2)).unwrap();
    assert_eq!(
        bind_interdomain(&mut a, &ab, &mut b, other).map(|x| x.0),
        Err(Errno::EINVAL)
    );
    // Not unbound.
    let ipi = b.bind_ipi(v(0)).unwrap();
    assert_eq!(
        bind_interdomain(&mut a, &ab, &mut b, ipi).map(|x| x.0),
        Err(Errno::EINVAL)
    );
    let ok = b.alloc_unbound(d(1), d(2)).unwrap();
    let (lp, _) = bind_interdomain(&mut a, &ab, &mut b, ok).unwrap();
    // Already connected.
    assert_eq!(
        bind_interdomain(&mut a, &ab, &mut b, ok).map(|x| x.0),
        Err(Errno::EINVAL)
    );
    // Failed attempts did not leak local ports.
    assert_eq!(lp, p(1));
    assert_eq!(a.active_ports(), 1);
    // Local exhaustion is reported before the remote port is looked at.
    a.set_max_port(1);
    assert_eq!(
        bind_interdomain(&mut a, &ab, &mut b, p(u32::MAX)).map(|x| x.0),
        Err(Errno::ENOSPC)
    );
    assert_eq!(
        a.bind_interdomain_self(&ab, p(u32::MAX)).map(|x| x.0),
        Err(Errno::ENOSPC)
    );
    let _ = bb;
}

#[test]
fn loopback_interdomain() {
    let (mut c, b) = dom(7, 2);
    // Unbound for another domain, or not unbound: EINVAL.
    let foreign = c.alloc_unbound(d(1), d(7)).unwrap();
    assert_eq!(
        c.bind_interdomain_self(&b, foreign).map(|x| x.0),
        Err(Errno::EINVAL)
    );
    assert_eq!(
        c.bind_interdomain_self(&b, p(0)).map(|x| x.0),
        Err(Errno::EINVAL)
    );
    assert_eq!(
        c.bind_interdomain_self(&b, p(99)).map(|x| x.0),
        Err(Errno::EINVAL)
    );
    let a = c.alloc_unbound(DomId::SELF, d(7)).unwrap();
    c.bind_vcpu(a, v(1)).unwrap();
    let (l, dl) = c.bind_interdomain_self(&b, a).unwrap();
    assert_ne!(l, a);
    assert_eq!(dl.kick(), Some(v(0)));
    assert_eq!(
        c.channel(l),
        Some(Channel::Interdomain {
            remote: d(7),
            remote_port: a
        })
    );
    assert_eq!(
        c.channel(a),
        Some(Channel::Interdomain {
            remote: d(7),
            remote_port: l
        })
    );
    assert_eq!(
        c.send(l),
        Ok(SendTarget::Local {
            port: a,
            vcpu: v(1)
        })
    );
    assert_eq!(
        c.send(a),
        Ok(SendTarget::Local {
            port: l,
            vcpu: v(0)
        })
    );
    assert_eq!(c.notify(a, &b).kick(), Some(v(1)));
    // Closing one end puts the other back to unbound-for-self, in the same table.
    assert_eq!(c.close(a, &b), Ok(CloseEffect::None));
    assert_eq!(c.channel(l), Some(Channel::Unbound { remote: d(7) }));
    assert_eq!(c.channel(a), Some(Channel::Free));
    let (a2, _) = c.bind_interdomain_self(&b, l).unwrap();
    assert_eq!(a2, a);
}

#[test]
fn port_exhaustion_and_growth() {
    let (mut c, b) = dom(1, 1);
    for i in 1..64 {
        assert_eq!(c.bind_ipi(v(0)), Ok(p(i)));
    }
    assert_eq!(c.valid_ports(), 64);
    assert_eq!(c.bind_ipi(v(0)), Ok(p(64)));
    assert_eq!(c.valid_ports(), 128);
    for i in 65..MAX_PORTS {
        assert_eq!(c.alloc_unbound(d(0), d(1)), Ok(p(i)));
    }
    assert_eq!(c.valid_ports(), MAX_PORTS);
    assert_eq!(c.active_ports(), (MAX_PORTS - 1) as usize);
    assert_eq!(c.alloc_unbound(d(0), d(1)), Err(Errno::ENOSPC));
    assert_eq!(c.bind_ipi(v(0)), Err(Errno::ENOSPC));
    assert_eq!(c.bind_virq(VIRQ_TIMER, v(0)), Err(Errno::ENOSPC));
    assert_eq!(c.bind_pirq(0, 1), Err(Errno::ENOSPC));
    assert_eq!(
        c.status(p(4095)).map(|s| s.status_code()),
        Ok(EVTCHNSTAT_UNBOUND)
    );
    assert_eq!(c.status(p(4096)), Err(Errno::EINVAL));
    // A hole is reused, lowest first.
    c.close(p(77), &b).unwrap();
    c.close(p(33), &b).unwrap();
    assert_eq!(c.bind_ipi(v(0)), Ok(p(33)));
    assert_eq!(c.bind_ipi(v(0)), Ok(p(77)));
    // Reset frees everything; the table keeps its size.
    c.reset(&b, |_| panic!("no peers"), |_| panic!("no pirqs"));
    assert_eq!(c.active_ports(), 0);
    assert_eq!(c.valid_ports(), MAX_PORTS);
    assert_eq!(c.channel(p(0)), Some(Channel::Reserved));
    assert_eq!(c.bind_ipi(v(0)), Ok(p(1)));
}

#[test]
fn max_port_limit() {
    let (mut c, _b) = dom(1, 1);
    c.set_max_port(3);
    assert_eq!(c.max_port(), 3);
    assert_eq!(c.bind_ipi(v(0)), Ok(p(1)));
    assert_eq!(c.bind_ipi(v(0)), Ok(p(2)));
    assert_eq!(c.bind_ipi(v(0)), Ok(p(3)));
    assert_eq!(c.bind_ipi(v(0)), Err(Errno::ENOSPC));
    c.set_max_port(u32::MAX);
    assert_eq!(c.max_port(), MAX_PORTS - 1);
    assert_eq!(c.bind_ipi(v(0)), Ok(p(4)));
    c.set_max_port(0);
    assert_eq!(c.bind_ipi(v(0)), Err(Errno::ENOSPC));
}

#[test]
fn zero_vcpu_domain_is_harmless() {
    let (mut c, b) = dom(1, 0);
    c.set_hardware_domain();
    assert_eq!(c.bind_virq(VIRQ_TIMER, v(0)), Err(Errno::ENOENT));
    assert_eq!(c.bind_virq(VIRQ_CONSOLE, v(0)), Err(Errno::ENOENT));
    assert_eq!(c.bind_ipi(v(0)), Err(Errno::ENOENT));
    let ub = c.alloc_unbound(d(0), d(1)).unwrap();
    assert_eq!(c.bind_vcpu(ub, v(0)), Err(Errno::ENOENT));
    assert_eq!(c.send_virq(VIRQ_TIMER, v(0), &b), None);
    // Raising a port for a vCPU the bits do not have must not panic.
    let _ = c.notify(ub, &b);
}

#[test]
fn close_clears_pending_not_mask() {
    let (mut c, b) = dom(1, 1);
    let ip = c.bind_ipi(v(0)).unwrap();
    b.guest_mask(ip.raw());
    assert_eq!(c.notify(ip, &b).outcome, RaiseOutcome::Pending);
    assert!(b.is_pending(ip.raw()));
    c.close(ip, &b).unwrap();
    assert!(!b.is_pending(ip.raw()));
    assert!(b.is_masked(ip.raw()));
    // A free port is not raised.
    assert_eq!(c.notify(ip, &b).outcome, RaiseOutcome::Dropped);
    assert!(!b.is_pending(ip.raw()));
}

#[test]
fn reset_reports_peers_and_pirqs() {
    let (mut a, ab) = dom(1, 1);
    let (mut b, bb) = dom(2, 1);
    a.set_hardware_domain();
    let u1 = b.alloc_unbound(d(1), d(2)).unwrap();
    let u2 = b.alloc_unbound(d(1), d(2)).unwrap();
    let (l1, _) = bind_interdomain(&mut a, &ab, &mut b, u1).unwrap();
    let (l2, _) = bind_interdomain(&mut a, &ab, &mut b, u2).unwrap();
    let con = a.bind_virq(VIRQ_CONSOLE, v(0)).unwrap();
    let self_u = a.alloc_unbound(DomId::SELF, d(1)).unwrap();
    a.bind_interdomain_self(&ab, self_u).unwrap();
    a.bind_pirq(4, 8).unwrap();
    a.bind_virq(VIRQ_TIMER, v(0)).unwrap();
    let mut peers = Vec::new();
    let mut pirqs = Vec::new();
    a.reset(&ab, |pc| peers.push(pc), |pq| pirqs.push(pq));
    assert_eq!(
        peers,
        [
            PeerClosed {
                dom: d(2),
                port: u1,
                closer: d(1),
                closer_port: l1
            },
            PeerClosed {
                dom: d(2),
                port: u2,
                closer: d(1),
                closer_port: l2
            },
        ]
    );
    assert_eq!(pirqs, [4]);
    for pc in &peers {
        b.peer_closed(pc).unwrap();
    }
    assert_eq!(a.active_ports(), 0);
    assert_eq!(b.channel(u1), Some(Channel::Unbound { remote: d(1) }));
    // VIRQs can be bound again, and the handler role survived.
    assert_eq!(a.bind_virq(VIRQ_CONSOLE, v(0)), Ok(p(1)));
    assert_eq!(a.bind_virq(VIRQ_TIMER, v(0)), Ok(p(2)));
    let _ = (con, bb);
}

// ---------------------------------------------------------------------------------------
// 2-level edge rules
// ---------------------------------------------------------------------------------------

#[test]
fn raise_sets_selector_and_upcall_once() {
    let b = MemEventBits::new(2);
    assert_eq!(raise(&b, 3, 0), RaiseOutcome::Upcall);
    assert_eq!(raise(&b, 3, 0), RaiseOutcome::AlreadyPending);
    // Same word, upcall already pending: no second kick.
    assert_eq!(raise(&b, 5, 0), RaiseOutcome::Pending);
    // Other word: selector bit set, but upcall still pending: no kick.
    assert_eq!(raise(&b, 64 + 1, 0), RaiseOutcome::Pending);
    assert_eq!(b.selector(0), 0b11);
    assert!(b.upcall_pending(0));
    // Another vCPU has its own selector and upcall flag.
    assert_eq!(raise(&b, 200, 1), RaiseOutcome::Upcall);
    assert_eq!(b.selector(1), 1 << 3);
    // Guest consumes vCPU 0's upcall but not the selector: the selector bit suppresses a new
    // upcall for that word (the guest will scan it anyway).
    assert!(b.guest_clear_upcall(0));
    b.guest_clear_pending(3);
    assert_eq!(raise(&b, 3, 0), RaiseOutcome::Pending);
    assert!(!b.upcall_pending(0));
    // After taking the selector, a new raise upcalls again.
    assert_eq!(b.guest_take_selector(0), 0b11);
    b.guest_clear_pending(3);
    assert_eq!(raise(&b, 3, 0), RaiseOutcome::Upcall);
    // Out-of-range ports are dropped.
    assert_eq!(raise(&b, MAX_PORTS, 0), RaiseOutcome::Dropped);
    assert_eq!(raise(&b, u32::MAX, 0), RaiseOutcome::Dropped);
    assert!(!unmask(&b, u32::MAX, 0));
}

#[test]
fn masked_edge_is_delivered_by_unmask() {
    let b = MemEventBits::new(1);
    b.guest_mask(10);
    assert_eq!(raise(&b, 10, 0), RaiseOutcome::Pending);
    assert_eq!(b.selector(0), 0);
    assert!(!b.upcall_pending(0));
    // Raising again while masked changes nothing.
    assert_eq!(raise(&b, 10, 0), RaiseOutcome::AlreadyPending);
    assert!(
        unmask(&b, 10, 0),
        "edge raised while masked must upcall on unmask"
    );
    assert_eq!(b.selector(0), 1);
    assert!(b.upcall_pending(0));
    // Unmasking an unmasked port does nothing.
    assert!(!unmask(&b, 10, 0));
    // Unmask of a masked but not pending port: nothing.
    b.guest_mask(11);
    assert!(!unmask(&b, 11, 0));
    assert!(!b.is_masked(11));
    // Unmask with the upcall already pending: no second kick.
    b.guest_mask(12);
    raise(&b, 12, 0);
    assert!(!unmask(&b, 12, 0));
}

#[test]
fn unmask_via_table_uses_notify_vcpu() {
    let (mut c, b) = dom(1, 2);
    let ip = c.bind_ipi(v(1)).unwrap();
    b.guest_mask(ip.raw());
    assert_eq!(c.notify(ip, &b).outcome, RaiseOutcome::Pending);
    assert_eq!(c.poll(ip, &b), Ok(true));
    assert_eq!(c.unmask(ip, &b), Ok(Some(v(1))));
    assert_eq!(b.selector(1), 1);
    assert_eq!(b.selector(0), 0);
    // Masked free port: unmask clears nothing (Xen skips unusable channels).
    b.guest_mask(40);
    assert_eq!(c.unmask(p(40), &b), Ok(None));
    assert!(b.is_masked(40));
}

// ---------------------------------------------------------------------------------------
// Property tests
// ---------------------------------------------------------------------------------------

mod prop {
    use super::*;
    use proptest::prelude::*;
    use std::collections::{BTreeMap, BTreeSet};

    const NDOM: usize = 3;
    const NVCPU: u32 = 2;
    /// Per-domain maximum port: small for domain 1 (exhaustion), across a bucket for 2.
    const MAX_PORT: [u32; NDOM] = [MAX_PORTS - 1, 5, 100];

    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    enum M {
        Unbound(u16),
        Inter(u16, u32),
        Virq(u32),
        Ipi,
    }

    #[derive(Clone, Debug, Default)]
    struct MDom {
        ports: BTreeMap<u32, (M, u32)>,
        valid: u32,
        pending: BTreeSet<u32>,
    }

    /// An independent, deliberately naive model of Xen's rules.
    struct Model {
        doms: Vec<MDom>,
    }

    fn kind(virq: u32) -> Option<VirqKind> {
        match virq {
            0 | 1 | 7 | 13 => Some(VirqKind::PerVcpu),
            11 => Some(VirqKind::PerDomain),
            x if x < 24 => Some(VirqKind::Global),
            _ => None,
        }
    }

    impl Model {
        fn new() -> Self {
            Model {
                doms: (0..NDOM)
                    .map(|_| MDom {
                        valid: 64,
                        ..Default::default()
                    })
                    .collect(),
            }
        }

        fn alloc(&mut self, di: usize) -> Result<u32, Errno> {
            let dm = &mut self.doms[di];
            let port = (1..=MAX_PORT[di])
                .find(|q| !dm.ports.contains_key(q))
                .ok_or(Errno::ENOSPC)?;
            while port >= dm.valid {
                dm.valid += 64;
            }
            Ok(port)
        }

        fn alloc_unbound(&mut self, di: usize, remote: u16) -> Result<u32, Errno> {
            let port = self.alloc(di)?;
            self.doms[di].ports.insert(port, (M::Unbound(remote), 0));
            Ok(port)
        }

        fn bind_interdomain(&mut self, di: usize, ri: usize, rport: u32) -> Result<u32, Errno> {
            let lport = self.alloc(di)?;
            match self.doms[ri].ports.get(&rport) {
                Some((M::Unbound(x), _)) if usize::from(*x) == di => {}
                _ => return Err(Errno::EINVAL),
            }
            self.doms[ri].ports.get_mut(&rport).unwrap().0 = M::Inter(di as u16, lport);
            self.doms[di]
                .ports
                .insert(lport, (M::Inter(ri as u16, rport), 0));
            self.doms[di].pending.insert(lport);
            Ok(lport)
        }

        fn bind_virq(&mut self, di: usize, virq: u32, vcpu: u32) -> Result<u32, Errno> {
            let k = kind(virq).ok_or(Errno::EINVAL)?;
            if k != VirqKind::PerVcpu && vcpu != 0 {
                return Err(Errno::EINVAL);
            }
            if vcpu >= NVCPU {
                return Err(Errno::ENOENT);
            }
            if k == VirqKind::Global && di != 0 {
                return Err(Errno::EBUSY);
            }
            let exists = self.doms[di]
                .ports
                .values()
                .any(|(m, nv)| *m == M::Virq(virq) && (k != VirqKind::PerVcpu || *nv == vcpu));
            if exists {
                return Err(Errno::EEXIST);
            }
            let port = self.alloc(di)?;
            self.doms[di].ports.insert(port, (M::Virq(virq), vcpu));
            Ok(port)
        }

        fn bind_ipi(&mut self, di: usize, vcpu: u32) -> Result<u32, Errno> {
            if vcpu >= NVCPU {
                return Err(Errno::ENOENT);
            }
            let port = self.alloc(di)?;
            self.doms[di].ports.insert(port, (M::Ipi, vcpu));
            Ok(port)
        }

        fn close(&mut self, di: usize, port: u32) -> Result<(), Errno> {
            let (m, _) = self.doms[di].ports.remove(&port).ok_or(Errno::EINVAL)?;
            self.doms[di].pending.remove(&port);
            if let M::Inter(r, rp) = m {
                self.doms[usize::from(r)].ports.get_mut(&rp).unwrap().0 = M::Unbound(di as u16);
            }
            Ok(())
        }

        fn bind_vcpu(&mut self, di: usize, port: u32, vcpu: u32) -> Result<(), Errno> {
            if vcpu >= NVCPU {
                return Err(Errno::ENOENT);
            }
            let e = self.doms[di].ports.get_mut(&port).ok_or(Errno::EINVAL)?;
            match e.0 {
                M::Ipi => return Err(Errno::EINVAL),
                M::Virq(x) if kind(x) == Some(VirqKind::PerVcpu) => return Err(Errno::EINVAL),
                _ => {}
            }
            e.1 = vcpu;
            Ok(())
        }

        /// Returns (domain, port) raised, None for a dropped send.
        fn send(&mut self, di: usize, port: u32) -> Result<Option<(usize, u32)>, Errno> {
            let (m, _) = *self.doms[di].ports.get(&port).ok_or(Errno::EINVAL)?;
            let target = match m {
                M::Ipi => Some((di, port)),
                M::Inter(r, rp) => Some((usize::from(r), rp)),
                M::Unbound(_) => None,
                M::Virq(_) => return Err(Errno::EINVAL),
            };
            if let Some((td, tp)) = target {
                self.doms[td].pending.insert(tp);
            }
            Ok(target)
        }

        fn reset(&mut self, di: usize) {
            let ports: Vec<u32> = self.doms[di].ports.keys().copied().collect();
            for port in ports {
                // A loopback peer may already have been turned unbound; close it anyway.
                let _ = self.close(di, port);
            }
        }
    }

    #[derive(Clone, Debug)]
    enum Op {
        AllocUnbound { d: usize, remote: u16 },
        BindInter { d: usize, remote: u16, rport: u32 },
        BindVirq { d: usize, virq: u32, vcpu: u32 },
        BindIpi { d: usize, vcpu: u32 },
        Close { d: usize, port: u32 },
        BindVcpu { d: usize, port: u32, vcpu: u32 },
        Send { d: usize, port: u32 },
        Status { d: usize, port: u32 },
        GuestClearPending { d: usize, port: u32 },
        Reset { d: usize },
    }

    fn port_s() -> impl Strategy<Value = u32> {
        prop_oneof![
            8 => 0u32..8,
            1 => 8u32..110,
            1 => prop_oneof![Just(4095u32), Just(4096), Just(u32::MAX), any::<u32>()],
        ]
    }
    fn vcpu_s() -> impl Strategy<Value = u32> {
        prop_oneof![6 => 0u32..3, 1 => any::<u32>()]
    }
    fn dom_s() -> impl Strategy<Value = usize> {
        0..NDOM
    }
    fn remote_s() -> impl Strategy<Value = u16> {
        prop_oneof![4 => 0u16..3, 1 => Just(DomId::SELF.raw()), 1 => Just(9u16)]
    }

    fn op_s() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => (dom_s(), remote_s()).prop_map(|(d, remote)| Op::AllocUnbound { d, remote }),
            3 => (dom_s(), remote_s(), port_s())
                .prop_map(|(d, remote, rport)| Op::BindInter { d, remote, rport }),
            2 => (dom_s(), prop_oneof![0u32..26, any::<u32>()], vcpu_s())
                .prop_map(|(d, virq, vcpu)| Op::BindVirq { d, virq, vcpu }),
            1 => (dom_s(), vcpu_s()).prop_map(|(d, vcpu)| Op::BindIpi { d, vcpu }),
            3 => (dom_s(), port_s()).prop_map(|(d, port)| Op::Close { d, port }),
            1 => (dom_s(), port_s(), vcpu_s())
                .prop_map(|(d, port, vcpu)| Op::BindVcpu { d, port, vcpu }),
            3 => (dom_s(), port_s()).prop_map(|(d, port)| Op::Send { d, port }),
            1 => (dom_s(), port_s()).prop_map(|(d, port)| Op::Status { d, port }),
            1 => (dom_s(), port_s()).prop_map(|(d, port)| Op::GuestClearPending { d, port }),
            1 => dom_s().prop_map(|d| Op::Reset { d }),
        ]
    }

    struct World {
        chans: Vec<EventChannels>,
        bits: Vec<MemEventBits>,
    }

    impl World {
        fn new() -> Self {
            let mut chans: Vec<EventChannels> = (0..NDOM)
                .map(|i| EventChannels::new(d(i as u16), NVCPU).unwrap())
                .collect();
            chans[0].set_hardware_domain();
            for (i, c) in chans.iter_mut().enumerate() {
                c.set_max_port(MAX_PORT[i]);
            }
            World {
                chans,
                bits: (0..NDOM).map(|_| MemEventBits::new(NVCPU)).collect(),
            }
        }

        fn apply_peer(&mut self, pc: PeerClosed) {
            let t = usize::from(pc.dom.raw());
            self.chans[t]
                .peer_closed(&pc)
                .expect("peer side must match");
        }
    }

    /// Two distinct `&mut` elements of a slice.
    fn two_mut<T>(v: &mut [T], i: usize, j: usize) -> (&mut T, &mut T) {
        assert_ne!(i, j);
        if i < j {
            let (a, b) = v.split_at_mut(j);
            (&mut a[i], &mut b[0])
        } else {
            let (a, b) = v.split_at_mut(i);
            (&mut b[0], &mut a[j])
        }
    }

    fn to_m(c: Channel) -> Option<M> {
        match c {
            Channel::Free | Channel::Reserved => None,
            Channel::Unbound { remote } => Some(M::Unbound(remote.raw())),
            Channel::Interdomain {
                remote,
                remote_port,
            } => Some(M::Inter(remote.raw(), remote_port.raw())),
            Channel::Virq { virq } => Some(M::Virq(virq)),
            Channel::Ipi => Some(M::Ipi),
            Channel::Pirq { .. } => panic!("no pirqs in this test"),
        }
    }

    fn check(world: &World, model: &Model) -> Result<(), TestCaseError> {
        for di in 0..NDOM {
            let c = &world.chans[di];
            let m = &model.doms[di];
            prop_assert_eq!(c.valid_ports(), m.valid);
            prop_assert_eq!(c.channel(p(0)), Some(Channel::Reserved));
            prop_assert_eq!(c.active_ports(), m.ports.len());
            for port in 0..MAX_PORTS {
                let real = c.channel(p(port));
                if port >= m.valid {
                    prop_assert_eq!(real, None);
                    continue;
                }
                let real = real.unwrap();
                let nv = c.notify_vcpu(p(port)).unwrap();
                match m.ports.get(&port) {
                    None => {
                        prop_assert!(!real.is_usable());
                        prop_assert_eq!(nv, v(0));
                    }
                    Some(&(mm, mv)) => {
                        prop_assert_eq!(to_m(real), Some(mm), "dom {} port {}", di, port);
                        prop_assert_eq!(nv, v(mv));
                    }
                }
                prop_assert_eq!(
                    world.bits[di].is_pending(port),
                    m.pending.contains(&port),
                    "pending dom {} port {}",
                    di,
                    port
                );
                // Symmetry of interdomain pairs.
                if let Channel::Interdomain {
                    remote,
                    remote_port,
                } = real
                {
                    let peer = world.chans[usize::from(remote.raw())].channel(remote_port);
                    prop_assert_eq!(
                        peer,
                        Some(Channel::Interdomain {
                            remote: d(di as u16),
                            remote_port: p(port)
                        })
                    );
                }
                // VIRQ table consistency: a VIRQ port is found under its binding.
                if let Channel::Virq { virq } = real {
                    prop_assert_eq!(c.virq_port(virq, nv), Some(p(port)));
                }
            }
            for virq in 0..NR_VIRQS {
                for vc in 0..NVCPU {
                    if let Some(vp) = c.virq_port(virq, v(vc)) {
                        prop_assert_eq!(c.channel(vp), Some(Channel::Virq { virq }));
                    }
                }
            }
        }
        Ok(())
    }

    fn step(world: &mut World, model: &mut Model, op: &Op) -> Result<(), TestCaseError> {
        match *op {
            Op::AllocUnbound { d: di, remote } => {
                let r = world.chans[di].alloc_unbound(DomId::new(remote), d(di as u16));
                let remote = if remote == DomId::SELF.raw() {
                    di as u16
                } else {
                    remote
                };
                let e = model.alloc_unbound(di, remote);
                prop_assert_eq!(r.map(|x| x.raw()), e);
            }
            Op::BindInter {
                d: di,
                remote,
                rport,
            } => {
                let ri = if remote == DomId::SELF.raw() {
                    di
                } else {
                    usize::from(remote)
                };
                if ri >= NDOM {
                    return Ok(()); // -ESRCH, the caller's business
                }
                let r = if ri == di {
                    let bits = &world.bits[di];
                    world.chans[di].bind_interdomain_self(bits, p(rport))
                } else {
                    let (l, rm) = two_mut(&mut world.chans, di, ri);
                    bind_interdomain(l, &world.bits[di], rm, p(rport))
                };
                let e = model.bind_interdomain(di, ri, rport);
                if let Ok((lp, dl)) = r {
                    prop_assert_eq!(dl.port, lp);
                    prop_assert!(dl.outcome != RaiseOutcome::Dropped);
                }
                prop_assert_eq!(r.map(|x| x.0.raw()), e);
            }
            Op::BindVirq { d: di, virq, vcpu } => {
                let r = world.chans[di].bind_virq(virq, v(vcpu));
                prop_assert_eq!(r.map(|x| x.raw()), model.bind_virq(di, virq, vcpu));
            }
            Op::BindIpi { d: di, vcpu } => {
                let r = world.chans[di].bind_ipi(v(vcpu));
                prop_assert_eq!(r.map(|x| x.raw()), model.bind_ipi(di, vcpu));
            }
            Op::Close { d: di, port } => {
                let r = world.chans[di].close(p(port), &world.bits[di]);
                let e = model.close(di, port);
                match r {
                    Ok(CloseEffect::PeerBecomesUnbound(pc)) => {
                        prop_assert_eq!(pc.closer, d(di as u16));
                        prop_assert_eq!(pc.closer_port, p(port));
                        prop_assert!(usize::from(pc.dom.raw()) != di);
                        world.apply_peer(pc);
                    }
                    Ok(CloseEffect::PirqUnbound { .. }) => prop_assert!(false, "no pirqs"),
                    Ok(CloseEffect::None) | Err(_) => {}
                }
                prop_assert_eq!(r.map(|_| ()), e);
            }
            Op::BindVcpu { d: di, port, vcpu } => {
                let r = world.chans[di].bind_vcpu(p(port), v(vcpu));
                prop_assert_eq!(r, model.bind_vcpu(di, port, vcpu));
            }
            Op::Send { d: di, port } => {
                let r = world.chans[di].send(p(port));
                let e = model.send(di, port);
                let got = match r {
                    Ok(SendTarget::Local { port: tp, vcpu }) => {
                        prop_assert_eq!(world.chans[di].notify_vcpu(tp), Some(vcpu));
                        let dl = world.chans[di].notify(tp, &world.bits[di]);
                        prop_assert_eq!(dl.vcpu, vcpu);
                        Ok(Some((di, tp.raw())))
                    }
                    Ok(SendTarget::Remote { dom: td, port: tp }) => {
                        let ti = usize::from(td.raw());
                        prop_assert!(ti != di);
                        world.chans[ti].notify(tp, &world.bits[ti]);
                        Ok(Some((ti, tp.raw())))
                    }
                    Ok(SendTarget::Ignore) => Ok(None),
                    Err(e) => Err(e),
                };
                prop_assert_eq!(got, e);
            }
            Op::Status { d: di, port } => {
                let r = world.chans[di].status(p(port));
                let m = &model.doms[di];
                if port >= m.valid {
                    prop_assert_eq!(r, Err(Errno::EINVAL));
                } else {
                    let st = r.unwrap();
                    let (code, vc) = match m.ports.get(&port) {
                        None => (EVTCHNSTAT_CLOSED, 0),
                        Some((M::Unbound(_), vc)) => (EVTCHNSTAT_UNBOUND, *vc),
                        Some((M::Inter(..), vc)) => (EVTCHNSTAT_INTERDOMAIN, *vc),
                        Some((M::Virq(_), vc)) => (EVTCHNSTAT_VIRQ, *vc),
                        Some((M::Ipi, vc)) => (EVTCHNSTAT_IPI, *vc),
                    };
                    prop_assert_eq!((st.status_code(), st.vcpu), (code, v(vc)));
                }
            }
            Op::GuestClearPending { d: di, port } => {
                world.bits[di].guest_clear_pending(port);
                model.doms[di].pending.remove(&port);
            }
            Op::Reset { d: di } => {
                let mut peers = Vec::new();
                world.chans[di].reset(&world.bits[di], |pc| peers.push(pc), |_| {});
                for pc in peers {
                    world.apply_peer(pc);
                }
                model.reset(di);
            }
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        /// Random operation sequences on three domains agree with the model, keep
        /// interdomain pairs symmetric and the VIRQ tables consistent, and never panic.
        #[test]
        fn ops_match_model(ops in proptest::collection::vec(op_s(), 1..160)) {
            let mut world = World::new();
            let mut model = Model::new();
            for op in &ops {
                step(&mut world, &mut model, op)?;
                check(&world, &model)?;
            }
        }

        /// 2-level rules under random raise/mask/unmask/guest-scan sequences: a pending,
        /// unmasked port always has its selector bit and the upcall flag set on its notify
        /// vCPU (no lost edge), and a kick is requested exactly when the upcall flag goes
        /// from 0 to 1 (no second upcall while one is pending).
        #[test]
        fn two_level_never_loses_an_edge(
            ops in proptest::collection::vec((0u8..4, 0u32..200, 0u32..2), 1..300)
        ) {
            let b = MemEventBits::new(2);
            // Port p is bound to vCPU p % 2.
            let vc = |port: u32| port % 2;
            for (kind, port, scan_vcpu) in ops {
                match kind {
                    0 => {
                        let before = b.upcall_pending(vc(port));
                        let was_pending = b.is_pending(port);
                        let out = raise(&b, port, vc(port));
                        prop_assert_eq!(out == RaiseOutcome::AlreadyPending, was_pending);
                        prop_assert_eq!(out.needs_kick(), !before && b.upcall_pending(vc(port)));
                        prop_assert!(out != RaiseOutcome::Dropped);
                    }
                    1 => b.guest_mask(port),
                    2 => {
                        let before = b.upcall_pending(vc(port));
                        let kick = unmask(&b, port, vc(port));
                        prop_assert!(!b.is_masked(port));
                        prop_assert_eq!(kick, !before && b.upcall_pending(vc(port)));
                    }
                    _ => {
                        // Guest upcall handler on `scan_vcpu`: clear the upcall flag, take
                        // the selector, handle its pending unmasked ports.
                        let gv = scan_vcpu;
                        b.guest_clear_upcall(gv);
                        let sel = b.guest_take_selector(gv);
                        for w in 0..BITS_PER_WORD {
                            if sel & (1 << w) == 0 {
                                continue;
                            }
                            for port in w * BITS_PER_WORD..(w + 1) * BITS_PER_WORD {
                                if vc(port) == gv && b.is_pending(port) && !b.is_masked(port) {
                                    b.guest_clear_pending(port);
                                }
                            }
                        }
                    }
                }
                for port in 0..200 {
                    if b.is_pending(port) && !b.is_masked(port) {
                        let nv = vc(port);
                        prop_assert!(b.selector(nv) & (1 << (port / BITS_PER_WORD)) != 0,
                            "port {} lost its selector bit", port);
                        prop_assert!(b.upcall_pending(nv), "port {} lost its upcall", port);
                    }
                }
            }
        }
    }
}
