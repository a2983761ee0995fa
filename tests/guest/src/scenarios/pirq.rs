//! `pirq`: physical IRQs of the hardware domain (`physdev_op` map_pirq / unmap_pirq /
//! irq_status_query / eoi, `EVTCHNOP_bind_pirq`) with Xen's answers
//! (xen-project/xen c447b7308b13, the function named at each check):
//!
//! * `do_physdev_op` / `physdev_map_pirq`: an unknown domain → -ESRCH
//!   (`rcu_lock_domain_by_any_id`); an unknown map type → -EINVAL;
//!   `allocate_and_map_msi_pirq`: an MSI `index` other than -1 names an IRQ below
//!   `nr_irqs_gsi` → -EINVAL; `map_domain_pirq`: a PIRQ beyond `nr_pirqs` → -EINVAL, no
//!   such PCI function (`pci_get_pdev`) → -ENODEV.
//! * `unmap_domain_pirq`: PIRQ out of range or not mapped → -EINVAL.
//! * `PHYSDEVOP_irq_status_query`: PIRQ beyond `nr_pirqs` → -EINVAL; otherwise
//!   `XENIRQSTAT_needs_eoi` (a PV guest without a PIRQ EOI map must always EOI).
//! * `PHYSDEVOP_eoi`: no `pirq_info` → -EINVAL.
//! * `evtchn_bind_pirq`: PIRQ out of range → -EINVAL; not mapped to the domain
//!   (`pirq_access_permitted`) → -EPERM; already bound → -EEXIST.
//!
//! With a virtio-blk disk on the machine (the harness adds one), the positive path too:
//! each function on bus 0 is asked for an MSI-X PIRQ; functions without MSI-X answer
//! -ENODEV, the disk gets a PIRQ (the hypervisor finds the table through the BAR, so the
//! `table_base` hint may be anything non-zero; Xen only warns on a mismatch). Then the
//! PIRQ binds to a port once (the second bind is -EEXIST), the port reports
//! `EVTCHNSTAT_pirq`, eoi succeeds, and after close + unmap everything is refused again.

use pv_guest::hypercall as hc;
use pv_guest::xen_abi::event_channel::EVTCHNSTAT_PIRQ;
use pv_guest::xen_abi::physdev::{
    PhysdevMapPirq, MAP_PIRQ_TYPE_MSI, MAP_PIRQ_TYPE_MSI_SEG, XENIRQSTAT_NEEDS_EOI,
};
use pv_guest::xen_abi::{DomId, Errno};
use pv_guest::{events, println};

use crate::report::{err, rc, rc0, Rc, Report};

const SELF: u16 = DomId::SELF.raw();
/// A domain id nobody has.
const NO_DOMAIN: u16 = 0x3ff;
/// A PIRQ beyond any domain's `nr_pirqs`.
const HUGE_PIRQ: i32 = 0x7fff_ffff;
/// A PIRQ in range that nothing maps here (the top ones are the first MSI PIRQs handed
/// out, so pick one low above the GSIs).
const UNMAPPED: u32 = 40;
/// Bus 0x80: no such bus on QEMU's q35 machine.
const NO_BUS: i32 = 0x80;

fn msi(bus: i32, devfn: i32, entry: i32, table_base: u64) -> PhysdevMapPirq {
    PhysdevMapPirq {
        domid: SELF,
        kind: MAP_PIRQ_TYPE_MSI,
        index: -1,
        pirq: -1,
        bus,
        devfn,
        entry_nr: entry,
        table_base,
        ..Default::default()
    }
}

fn map(mut m: PhysdevMapPirq) -> (Rc, i32) {
    let r = hc::physdev_map_pirq(&mut m);
    (rc0(r), m.pirq)
}

fn on_pirq(_port: u32) {}

pub fn run(r: &mut Report) {
    super::setup(r);
    events::disable();
    rejections(r);
    positive(r);
}

fn rejections(r: &mut Report) {
    let mut m = msi(NO_BUS, 0, 0, 0x1000);
    m.domid = NO_DOMAIN;
    r.eq(
        "map_pirq for an unknown domain → -ESRCH",
        map(m).0,
        err(Errno::ESRCH),
    );
    let mut m = msi(NO_BUS, 0, 0, 0x1000);
    m.kind = 7;
    r.eq("map_pirq type 7 → -EINVAL", map(m).0, err(Errno::EINVAL));
    let mut m = msi(NO_BUS, 0, 0, 0x1000);
    m.index = 5;
    r.eq(
        "map_pirq MSI with index 5 (an IRQ below nr_irqs_gsi) → -EINVAL",
        map(m).0,
        err(Errno::EINVAL),
    );
    let mut m = msi(NO_BUS, 0, 0, 0x1000);
    m.pirq = HUGE_PIRQ;
    r.eq(
        "map_pirq MSI asking for a PIRQ beyond nr_pirqs → -EINVAL",
        map(m).0,
        err(Errno::EINVAL),
    );
    let (res, pirq) = map(msi(NO_BUS, 0, 0, 0x1000));
    r.eq(
        "map_pirq MSI-X of a function that does not exist → -ENODEV, pirq unchanged",
        (res, pirq),
        (err(Errno::ENODEV), -1),
    );
    let mut m = msi(NO_BUS, 0, 0, 0x1000);
    m.kind = MAP_PIRQ_TYPE_MSI_SEG;
    r.eq(
        "map_pirq MSI_SEG (segment 0) of a function that does not exist → -ENODEV",
        map(m).0,
        err(Errno::ENODEV),
    );
    r.eq(
        "unmap_pirq of a PIRQ nothing maps → -EINVAL",
        rc(hc::physdev_unmap_pirq(UNMAPPED)),
        err(Errno::EINVAL),
    );
    r.eq(
        "unmap_pirq -1 → -EINVAL",
        rc(hc::physdev_unmap_pirq_of(SELF, -1)),
        err(Errno::EINVAL),
    );
    r.eq(
        "unmap_pirq for an unknown domain → -ESRCH",
        rc(hc::physdev_unmap_pirq_of(NO_DOMAIN, UNMAPPED as i32)),
        err(Errno::ESRCH),
    );
    r.eq(
        "irq_status_query beyond nr_pirqs → -EINVAL",
        rc(hc::physdev_irq_status_query(HUGE_PIRQ as u32)),
        err(Errno::EINVAL),
    );
    r.eq(
        "irq_status_query of a PIRQ in range → needs_eoi",
        rc(hc::physdev_irq_status_query(UNMAPPED)),
        Rc(i64::from(XENIRQSTAT_NEEDS_EOI)),
    );
    r.eq(
        "eoi of a PIRQ nothing maps → -EINVAL",
        rc(hc::physdev_eoi(UNMAPPED)),
        err(Errno::EINVAL),
    );
    r.eq(
        "eoi beyond nr_pirqs → -EINVAL",
        rc(hc::physdev_eoi(HUGE_PIRQ as u32)),
        err(Errno::EINVAL),
    );
    r.eq(
        "bind_pirq beyond nr_pirqs → -EINVAL",
        rc(hc::evtchn_bind_pirq(HUGE_PIRQ as u32, 0)),
        err(Errno::EINVAL),
    );
    r.eq(
        "bind_pirq of a PIRQ not mapped to us → -EPERM",
        rc(hc::evtchn_bind_pirq(UNMAPPED, 0)),
        err(Errno::EPERM),
    );
}

fn positive(r: &mut Report) {
    // Every function on bus 0: those without MSI-X (or absent) answer -ENODEV.
    let mut found = None;
    let mut unexpected = 0;
    for devfn in 0..256 {
        let (res, pirq) = map(msi(0, devfn, 0, 0x1000));
        match res {
            Rc(0) if found.is_none() => found = Some((devfn, pirq)),
            Rc(0) => {
                // A second MSI-X function: give its PIRQ back, we test one.
                let _ = hc::physdev_unmap_pirq_of(SELF, pirq);
            }
            e if e == err(Errno::ENODEV) => {}
            other => {
                unexpected += 1;
                println!(
                    "pirq: map_pirq 00:{:02x}.{} → {other:?}",
                    devfn >> 3,
                    devfn & 7
                );
            }
        }
    }
    r.eq(
        "map_pirq over bus 0: every function without MSI-X → -ENODEV",
        unexpected,
        0,
    );
    let Some((devfn, pirq)) = found else {
        println!("pirq: no MSI-X function on bus 0: positive checks skipped");
        return;
    };
    println!(
        "pirq: MSI-X function 00:{:02x}.{} mapped to pirq {pirq}",
        devfn >> 3,
        devfn & 7
    );
    let Ok(pirq) = u32::try_from(pirq) else {
        r.fail("map_pirq returned a PIRQ", pirq, ">= 0");
        return;
    };
    r.eq(
        "map_pirq MSI-X entry 0x7ff (beyond the table) → -EINVAL",
        map(msi(0, devfn, 0x7ff, 0x1000)).0,
        err(Errno::EINVAL),
    );
    let Some(port) = super::ok(
        r,
        "bind_pirq of the mapped PIRQ",
        events::bind_pirq(pirq, on_pirq),
    ) else {
        let _ = hc::physdev_unmap_pirq(pirq);
        return;
    };
    r.eq(
        "... status of the port: EVTCHNSTAT_pirq with the PIRQ",
        hc::evtchn_status(SELF, port)
            .map(|s| (s.status, s.u[0]))
            .ok(),
        Some((EVTCHNSTAT_PIRQ, pirq)),
    );
    r.eq(
        "bind_pirq of the same PIRQ again → -EEXIST",
        rc(hc::evtchn_bind_pirq(pirq, 0)),
        err(Errno::EEXIST),
    );
    r.eq(
        "irq_status_query of it → needs_eoi",
        rc(hc::physdev_irq_status_query(pirq)),
        Rc(i64::from(XENIRQSTAT_NEEDS_EOI)),
    );
    r.eq("eoi of it → 0", rc(hc::physdev_eoi(pirq)), Rc(0));
    r.eq("close the port → 0", rc(events::close(port)), Rc(0));
    r.eq(
        "bind again after close → a port",
        hc::evtchn_bind_pirq(pirq, 0)
            .and_then(events::close)
            .is_ok(),
        true,
    );
    r.eq("unmap_pirq → 0", rc(hc::physdev_unmap_pirq(pirq)), Rc(0));
    r.eq(
        "unmap_pirq again → -EINVAL",
        rc(hc::physdev_unmap_pirq(pirq)),
        err(Errno::EINVAL),
    );
    r.eq(
        "bind_pirq after unmap → -EPERM",
        rc(hc::evtchn_bind_pirq(pirq, 0)),
        err(Errno::EPERM),
    );
    let (res, again) = map(msi(0, devfn, 0, 0x1000));
    r.eq(
        "map the entry again after unmap → the same PIRQ (highest free)",
        (res, again),
        (Rc(0), pirq as i32),
    );
    let _ = hc::physdev_unmap_pirq_of(SELF, again);
}
