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
//!
//! Then what the hardware domain may touch (rxen gives it only what its devices decode,
//! see `xen-core/src/pci.rs`; the filters are Xen's):
//! * configuration space through 0xcf8/0xcfc works, with a virtual address register that
//!   reads back what was written; writes into the MSI-X capability other than a 16-bit
//!   write of its message control are dropped (`pci_msi_conf_write_intercept`);
//! * a port no device of ours decodes (QEMU's fw_cfg at 0x510) reads all-ones;
//! * a memory BAR maps writable, except the page holding the MSI-X table, which maps
//!   read-only (`mmio_ro_ranges`); the HPET page (not ours) is refused with -EPERM; the
//!   ECAM window (E820 reserved) maps read-only;
//! * `DOMCTL_iomem_permission` / `ioport_permission` hand on only what the caller has
//!   (-EPERM otherwise).

use pv_guest::arch::domctl::domctl;
use pv_guest::arch::mmu;
use pv_guest::hypercall as hc;
use pv_guest::xen_abi::domctl::{
    Domctl, DomctlCreateDomain, DomctlIomemPermission, DomctlIoportPermission, DOMCTL_CREATEDOMAIN,
    DOMCTL_DESTROYDOMAIN, DOMCTL_IOMEM_PERMISSION, DOMCTL_IOPORT_PERMISSION,
};
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
    hardware_domain(r);
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

// ---------------------------------------------------------------------------------------
// What the hardware domain may touch.

/// Port I/O (trapped and emulated by the hypervisor: the virtual IOPL lets the kernel
/// issue `in`/`out`, the domain's port permissions decide whether they reach a device).
#[allow(unsafe_code)]
mod ports {
    pub fn outl(port: u16, v: u32) {
        // SAFETY: with the virtual IOPL raised the hypervisor emulates the access; the ports
        // used here are PCI configuration and fw_cfg, which touch no memory.
        unsafe {
            core::arch::asm!("out dx, eax", in("dx") port, in("eax") v, options(nostack, nomem))
        }
    }

    pub fn outw(port: u16, v: u16) {
        // SAFETY: as `outl`.
        unsafe {
            core::arch::asm!("out dx, ax", in("dx") port, in("ax") v, options(nostack, nomem))
        }
    }

    pub fn inl(port: u16) -> u32 {
        let v: u32;
        // SAFETY: as `outl`.
        unsafe {
            core::arch::asm!("in eax, dx", in("dx") port, out("eax") v, options(nostack, nomem))
        }
        v
    }

    pub fn inw(port: u16) -> u16 {
        let v: u16;
        // SAFETY: as `outl`.
        unsafe {
            core::arch::asm!("in ax, dx", in("dx") port, out("ax") v, options(nostack, nomem))
        }
        v
    }

    pub fn inb(port: u16) -> u8 {
        let v: u8;
        // SAFETY: as `outl`.
        unsafe {
            core::arch::asm!("in al, dx", in("dx") port, out("al") v, options(nostack, nomem))
        }
        v
    }
}

use ports::{inb, inl, inw, outl, outw};

fn cf8(devfn: u32, reg: u32) -> u32 {
    0x8000_0000 | (devfn << 8) | (reg & 0xfc)
}

fn cfg_read32(devfn: u32, reg: u32) -> u32 {
    outl(0xcf8, cf8(devfn, reg));
    inl(0xcfc)
}

fn cfg_read16(devfn: u32, reg: u32) -> u16 {
    outl(0xcf8, cf8(devfn, reg));
    inw(0xcfc + (reg & 2) as u16)
}

fn cfg_write16(devfn: u32, reg: u32, v: u16) {
    outl(0xcf8, cf8(devfn, reg));
    outw(0xcfc + (reg & 2) as u16, v);
}

fn cfg_write32(devfn: u32, reg: u32, v: u32) {
    outl(0xcf8, cf8(devfn, reg));
    outl(0xcfc, v);
}

/// The MSI-X capability offset of bus 0 function `devfn`.
fn msix_pos(devfn: u32) -> Option<u32> {
    if cfg_read16(devfn, 6) & (1 << 4) == 0 {
        return None;
    }
    let mut pos = u32::from(cfg_read16(devfn, 0x34) as u8 & 0xfc);
    for _ in 0..48 {
        if pos < 0x40 {
            return None;
        }
        let hdr = cfg_read16(devfn, pos);
        if hdr as u8 == 0x11 {
            return Some(pos);
        }
        pos = u32::from((hdr >> 8) as u8 & 0xfc);
    }
    None
}

/// The memory address of BAR `bir` (32- or 64-bit) of bus 0 function `devfn`.
fn bar(devfn: u32, bir: u32) -> u64 {
    let lo = cfg_read32(devfn, 0x10 + 4 * bir);
    let hi = if (lo >> 1) & 3 == 2 {
        cfg_read32(devfn, 0x14 + 4 * bir)
    } else {
        0
    };
    (u64::from(hi) << 32) | u64::from(lo & !0xf)
}

const PTE_P: u64 = 1;
const PTE_RW: u64 = 2;
const PTE_PWT: u64 = 1 << 3;
const PTE_PCD: u64 = 1 << 4;

/// Maps machine address `maddr` writable and uncached in a map-area slot: the resulting
/// PTE, or the error.
fn map_io(slot: usize, maddr: u64) -> Result<u64, Rc> {
    let val = (maddr & !0xfff) | PTE_P | PTE_RW | PTE_PCD | PTE_PWT;
    mmu::update_slot(slot, val, 0).map_err(|e| rc0::<u64>(Err(e)))?;
    let pte = mmu::slot_pte(slot).unwrap_or(0);
    let _ = mmu::update_slot(slot, 0, 0);
    Ok(pte)
}

/// A domain to hand permissions to (domctls may not target dom0 itself).
fn create_domain() -> Option<u16> {
    let mut d = Domctl::new(DOMCTL_CREATEDOMAIN, 0);
    d.set_payload(&DomctlCreateDomain {
        max_vcpus: 1,
        flags: 0,
        max_memkb: 1024,
    });
    domctl(&mut d).ok().map(|_| d.domain)
}

fn iomem_permission(dom: u16, first_mfn: u64, nr_mfns: u64) -> Rc {
    let mut d = Domctl::new(DOMCTL_IOMEM_PERMISSION, dom);
    d.set_payload(&DomctlIomemPermission {
        first_mfn,
        nr_mfns,
        allow: 1,
        pad: 0,
    });
    rc(domctl(&mut d))
}

fn ioport_permission(dom: u16, first_port: u32, nr_ports: u32) -> Rc {
    let mut d = Domctl::new(DOMCTL_IOPORT_PERMISSION, dom);
    d.set_payload(&DomctlIoportPermission {
        first_port,
        nr_ports,
        allow: 1,
        pad: 0,
    });
    rc(domctl(&mut d))
}

fn hardware_domain(r: &mut Report) {
    r.eq("set_iopl(1)", rc0(hc::physdev_set_iopl(1)), Rc(0));
    // Configuration space with a virtual address register.
    let disk = (0..256u32).find(|&devfn| cfg_read32(devfn, 0) == 0x1042_1af4);
    outl(0xcf8, 0x8000_1234);
    r.eq("0xcf8 reads back what was written", inl(0xcf8), 0x8000_1234);
    outl(0xcf8, 0);
    r.eq(
        "0xcfc with the enable bit clear reads all-ones",
        inl(0xcfc),
        u32::MAX,
    );
    let Some(disk) = disk else {
        r.fail(
            "a virtio-blk function on bus 0 through 0xcf8/0xcfc",
            "none",
            "found",
        );
        return;
    };
    let Some(pos) = msix_pos(disk) else {
        r.fail("the disk's MSI-X capability", "none", "found");
        return;
    };
    let table = cfg_read32(disk, pos + 4);
    cfg_write32(disk, pos + 4, table ^ 0x1000);
    r.eq(
        "writing the MSI-X table offset register → dropped",
        cfg_read32(disk, pos + 4),
        table,
    );
    let control = cfg_read16(disk, pos + 2);
    cfg_write32(disk, pos, cfg_read32(disk, pos) ^ (1 << 30));
    r.eq(
        "a dword write over the MSI-X control word → dropped",
        cfg_read16(disk, pos + 2),
        control,
    );
    cfg_write16(disk, pos + 2, control | (1 << 14));
    let masked = cfg_read16(disk, pos + 2);
    cfg_write16(disk, pos + 2, control);
    r.eq(
        "a 16-bit write of the MSI-X control word (function mask) → done, and undone",
        (masked, cfg_read16(disk, pos + 2)),
        (control | (1 << 14), control),
    );
    // A port no device of ours decodes.
    outw(0x510, 0);
    r.eq(
        "fw_cfg's data port (not the hardware domain's) reads all-ones",
        inb(0x511),
        0xff,
    );
    // I/O memory.
    let si = pv_guest::start::start_info();
    if si.map(mmu::init).is_none_or(|m| m.is_err()) || mmu::map_area_init().is_err() {
        r.fail("memory manager with a map area", "error", "ready");
        return;
    }
    let Ok(slot) = mmu::reserve_slots(1) else {
        r.fail("a map-area slot", "none", "reserved");
        return;
    };
    let table_page = bar(disk, table & 7) + u64::from(table & !7);
    let Some(domu) = create_domain() else {
        r.fail("createdomain (to hand permissions to)", "error", "a domain");
        return;
    };
    let other_bar = (0..6)
        .filter(|&b| b != table & 7)
        .map(|b| (b, cfg_read32(disk, 0x10 + 4 * b)))
        .find(|&(_, v)| v & 1 == 0 && (v >> 1) & 3 == 2)
        .map(|(b, _)| bar(disk, b));
    r.eq(
        "the MSI-X table's page maps, read-only",
        map_io(slot, table_page).map(|pte| pte & (PTE_P | PTE_RW)),
        Ok(PTE_P),
    );
    match other_bar {
        Some(b) => {
            r.eq(
                "the disk's 64-bit BAR maps writable",
                map_io(slot, b).map(|pte| pte & (PTE_P | PTE_RW)),
                Ok(PTE_P | PTE_RW),
            );
            r.eq(
                "iomem_permission for a frame of our BAR → 0",
                iomem_permission(domu, b >> 12, 1),
                Rc(0),
            );
        }
        None => r.fail("a 64-bit memory BAR on the disk", "none", "found"),
    }
    r.eq(
        "the HPET page (not ours) → -EPERM",
        map_io(slot, 0xfed0_0000),
        Err(err(Errno::EPERM)),
    );
    r.eq(
        "the ECAM window (E820 reserved) maps, read-only",
        map_io(slot, 0xb000_0000).map(|pte| pte & (PTE_P | PTE_RW)),
        Ok(PTE_P),
    );
    mmu::release_slots(slot, 1);
    r.eq(
        "iomem_permission for the HPET page → -EPERM",
        iomem_permission(domu, 0xfed00, 1),
        err(Errno::EPERM),
    );
    r.eq(
        "iomem_permission straddling our BAR's end → -EPERM",
        iomem_permission(domu, table_page >> 12, 1 << 20),
        err(Errno::EPERM),
    );
    r.eq(
        "ioport_permission for fw_cfg's ports → -EPERM",
        ioport_permission(domu, 0x510, 2),
        err(Errno::EPERM),
    );
    r.eq(
        "ioport_permission for the configuration data port → 0",
        ioport_permission(domu, 0xcfc, 4),
        Rc(0),
    );
    r.eq(
        "destroy the domain",
        rc0(domctl(&mut Domctl::new(DOMCTL_DESTROYDOMAIN, domu))),
        Rc(0),
    );
}
