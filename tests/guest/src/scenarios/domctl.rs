//! `domctl` from the control domain: creating, querying, pausing and destroying domains,
//! with Xen's errors for bad requests, and every frame coming back when a domain goes —
//! also over 100 create/destroy cycles. Event channels to a domain that dies fall back
//! to unbound.

use pv_guest::arch::domctl::{domctl, reservation_for};
use pv_guest::hypercall as hc;
use pv_guest::xen_abi::domctl::*;
use pv_guest::xen_abi::event_channel::{EVTCHNSTAT_INTERDOMAIN, EVTCHNSTAT_UNBOUND};
use pv_guest::xen_abi::memory::XENMEM_POPULATE_PHYSMAP;
use pv_guest::xen_abi::Errno;

use crate::report::{err, rc, rc0, Rc, Report};

fn create(vcpus: u32, kib: u64) -> Result<u16, hc::Error> {
    let mut d = Domctl::new(DOMCTL_CREATEDOMAIN, 0);
    d.set_payload(&DomctlCreateDomain {
        max_vcpus: vcpus,
        flags: 0,
        max_memkb: kib,
    });
    domctl(&mut d).map(|_| d.domain)
}

fn simple(cmd: u32, dom: u16) -> hc::Result<u64> {
    domctl(&mut Domctl::new(cmd, dom))
}

fn info(dom: u16) -> hc::Result<DomctlGetDomainInfo> {
    let mut d = Domctl::new(DOMCTL_GETDOMAININFO, dom);
    domctl(&mut d)?;
    Ok(d.payload::<DomctlGetDomainInfo>().unwrap_or_default())
}

fn free_pages() -> u64 {
    hc::sysctl_physinfo().map(|p| p.free_pages).unwrap_or(0)
}

fn populate(dom: u16, n: usize) -> hc::Result<u64> {
    let mut frames = [0u64; 64];
    let n = n.min(frames.len());
    for (i, f) in frames.iter_mut().enumerate().take(n) {
        *f = i as u64;
    }
    reservation_for(XENMEM_POPULATE_PHYSMAP, dom, &mut frames[..n])
}

pub fn run(r: &mut Report) {
    let mut bad = Domctl::new(DOMCTL_GETDOMAININFO, 0);
    bad.interface_version = 1;
    r.eq(
        "domctl with a wrong interface version → -EACCES",
        rc(domctl(&mut bad)),
        err(Errno::EACCES),
    );
    r.eq(
        "createdomain with 0 vCPUs → -EINVAL",
        rc0(create(0, 4096)),
        err(Errno::EINVAL),
    );
    r.eq(
        "createdomain with 33 vCPUs → -EINVAL",
        rc0(create(33, 4096)),
        err(Errno::EINVAL),
    );
    r.eq(
        "destroydomain of dom0 → -EINVAL",
        rc(simple(DOMCTL_DESTROYDOMAIN, 0)),
        err(Errno::EINVAL),
    );
    r.eq(
        "pausedomain of a missing domain → -ESRCH",
        rc(simple(DOMCTL_PAUSEDOMAIN, 0x3ff)),
        err(Errno::ESRCH),
    );
    // Xen looks the domain up first: a missing one is -ESRCH whatever the command.
    r.eq(
        "unknown domctl on a missing domain → -ESRCH",
        rc(simple(0x7fff, 0x3ff)),
        err(Errno::ESRCH),
    );
    let i0 = info(0);
    r.eq(
        "getdomaininfo(0) finds dom0",
        i0.map(|i| i.domain).ok(),
        Some(0),
    );
    r.check(
        i0.is_ok_and(|i| i.flags & DOMINF_PRIVILEGED != 0),
        "... privileged",
        i0.map(|i| i.flags).ok(),
        "DOMINF_PRIVILEGED",
    );

    let free0 = free_pages();
    let Ok(id) = create(1, 4096) else {
        r.fail("createdomain(1 vCPU, 4 MiB)", "error", "a domain id");
        return;
    };
    r.check(id >= 1, "createdomain gives a domain id >= 1", id, ">= 1");
    let inf = info(id);
    r.eq(
        "getdomaininfo(new) finds it",
        inf.map(|i| i.domain).ok(),
        Some(id),
    );
    r.eq(
        "... starts paused",
        inf.map(|i| i.flags & DOMINF_PAUSED != 0).ok(),
        Some(true),
    );
    r.eq(
        "... max_pages from max_memkb",
        inf.map(|i| i.max_pages).ok(),
        Some(1024),
    );
    r.eq("... no memory yet", inf.map(|i| i.tot_pages).ok(), Some(0));
    r.eq(
        "populate_physmap of 64 frames for it → 64",
        rc(populate(id, 64)),
        Rc(64),
    );
    r.eq(
        "... tot_pages 64",
        info(id).map(|i| i.tot_pages).ok(),
        Some(64),
    );
    r.check(
        free_pages() + 64 <= free0,
        "... taken from the free pool",
        free_pages(),
        free0 - 64,
    );
    r.eq(
        "unpausedomain → 0",
        rc(simple(DOMCTL_UNPAUSEDOMAIN, id)),
        Rc(0),
    );
    r.eq(
        "... not paused",
        info(id).map(|i| i.flags & DOMINF_PAUSED).ok(),
        Some(0),
    );
    r.eq("pausedomain → 0", rc(simple(DOMCTL_PAUSEDOMAIN, id)), Rc(0));
    r.eq(
        "unknown domctl on it → -ENOSYS",
        rc(simple(0x7fff, id)),
        err(Errno::ENOSYS),
    );

    // An interdomain channel dom0 <-> new domain, as the toolstack sets up the store.
    let port = hc::evtchn_alloc_unbound(id, 0);
    r.check(
        port.is_ok(),
        "alloc_unbound in the new domain for dom0",
        rc(port),
        "a port",
    );
    let local = port.and_then(|p| hc::evtchn_bind_interdomain(id, p));
    r.check(
        local.is_ok(),
        "bind_interdomain to it from dom0",
        rc(local),
        "a port",
    );
    if let Ok(l) = local {
        r.eq(
            "... status interdomain",
            hc::evtchn_status(0x7ff0, l).map(|s| s.status).ok(),
            Some(EVTCHNSTAT_INTERDOMAIN),
        );
    }

    r.eq(
        "destroydomain → 0",
        rc(simple(DOMCTL_DESTROYDOMAIN, id)),
        Rc(0),
    );
    r.eq(
        "getdomaininfo(destroyed) → -ESRCH",
        rc0(info(id)),
        err(Errno::ESRCH),
    );
    r.eq("every frame it held is free again", free_pages(), free0);
    if let Ok(l) = local {
        r.eq(
            "dom0's end of the channel is unbound after the peer died",
            hc::evtchn_status(0x7ff0, l).map(|s| s.status).ok(),
            Some(EVTCHNSTAT_UNBOUND),
        );
        let _ = hc::evtchn_close(l);
    }

    // 100 create/populate/destroy cycles leave the free pool where it was.
    let mut ok = 0;
    for _ in 0..100 {
        if let Ok(id) = create(1, 1024) {
            if populate(id, 16) == Ok(16) && simple(DOMCTL_DESTROYDOMAIN, id).is_ok() {
                ok += 1;
            }
        }
    }
    r.eq("100 create/populate/destroy cycles", ok, 100);
    r.eq(
        "... free memory back to its starting value",
        free_pages(),
        free0,
    );
}
