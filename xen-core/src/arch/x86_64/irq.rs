//! Device interrupts for the hardware domain, as Xen hands them out: a function's MSI-X
//! entry is programmed by the hypervisor with one of its vectors (`PHYSDEVOP_map_pirq`),
//! the domain sees it as a PIRQ and binds an event channel to it (`EVTCHNOP_bind_pirq`),
//! and each interrupt on that vector raises the port (Xen's `do_IRQ` →
//! `__do_IRQ_guest` → `send_guest_pirq`). MSI is edge-triggered: the local APIC is
//! acknowledged at once and the guest's `PHYSDEVOP_eoi` has nothing left to do.
//!
//! The entry stays masked while no port is bound (Xen's `pirq_guest_bind` unmasks it in
//! the IRQ's `startup`, `pirq_guest_unbind` masks it), and is masked again when the PIRQ is
//! unmapped or its domain dies.
//!
//! Hardware access: PCI configuration space through [`super::pci::PortConfig`], and the
//! MSI-X table through an uncached mapping of its BAR page ([`ioremap`]).

use super::domain::{Domain, HV};
use super::mm::{self, pte};
use super::pci::PortConfig;
use crate::pirq::{
    self, bar_address, function_present, msix_capability, reg, Bdf, ConfigSpace, PirqInfo, Source,
    VectorOwners, VectorPool,
};
use alloc::vec::Vec;
use spin::Mutex;
use xen_abi::physdev::{PhysdevMapPirq, MAP_PIRQ_TYPE_MSI_SEG};
use xen_abi::{Errno, Mfn};

// ---------------------------------------------------------------------------------------
// ioremap: uncached mappings of device memory anywhere in the physical address space.

/// Start of the I/O mapping window: slot 262's second half (the direct map of RAM uses
/// the first 256 GiB at most), so every address space sees it through the shared L3.
const IOREMAP_START: u64 = mm::DIRECTMAP_START + (256 << 30);
/// Pages in the window (1 GiB: one L2 table).
const IOREMAP_PAGES: u64 = 512 * 512;

struct IoRemap {
    /// Next free page index in the window.
    next: u64,
    /// Machine page → window page, for pages already mapped (never unmapped: MSI-X
    /// tables live as long as the machine).
    pages: Vec<(u64, u64)>,
}

static IOREMAP: Mutex<IoRemap> = Mutex::new(IoRemap {
    next: 0,
    pages: Vec::new(),
});

/// A table of the hypervisor's page tables: the entry at `index` of `table`, allocating
/// a fresh zeroed table for it if it is not present.
fn table_at(table: Mfn, index: usize) -> Option<Mfn> {
    let e = mm::read_entry(table, index);
    if e & pte::P != 0 {
        if e & pte::PS != 0 {
            return None;
        }
        return Some(Mfn::new((e & pte::ADDR_MASK) >> 12));
    }
    let t = super::pv::alloc_xen_frame().ok()?;
    mm::write_entry(table, index, (t.raw() << 12) | pte::P | pte::RW | pte::A);
    Some(t)
}

/// The hypervisor's uncached virtual address of machine address `maddr` (device memory),
/// mapping its page if needed. `None` if the window is full, a table cannot be allocated,
/// or the direct map reaches into the window (more than 256 GiB of RAM).
pub fn ioremap(maddr: u64) -> Option<u64> {
    let page = maddr & !0xfff;
    let mut io = IOREMAP.lock();
    if let Some(&(_, idx)) = io.pages.iter().find(|&&(p, _)| p == page) {
        return Some(IOREMAP_START + idx * 4096 + (maddr & 0xfff));
    }
    if io.next >= IOREMAP_PAGES || mm::FRAMES.lock().max_mfn() >= (256 << 30) >> 12 {
        return None;
    }
    let idx = io.next;
    let l3e = mm::read_entry(mm::idle_l4(), 262);
    if l3e & pte::P == 0 {
        return None;
    }
    let l3 = Mfn::new((l3e & pte::ADDR_MASK) >> 12);
    let va = IOREMAP_START + idx * 4096;
    let l2 = table_at(l3, ((va >> 30) & 511) as usize)?;
    let l1 = table_at(l2, ((va >> 21) & 511) as usize)?;
    mm::write_entry(
        l1,
        ((va >> 12) & 511) as usize,
        page | pte::P | pte::RW | pte::PCD | pte::PWT | pte::A | pte::D | pte::G | pte::NX,
    );
    super::cpu::invlpg(va);
    io.next += 1;
    io.pages.push((page, idx));
    Some(va + (maddr & 0xfff))
}

fn mmio_read32(va: u64) -> u32 {
    // SAFETY: `va` comes from ioremap (an uncached mapping of a device page that stays
    // mapped) and is 4-byte aligned (MSI-X entry fields).
    unsafe { core::ptr::read_volatile(va as *const u32) }
}

fn mmio_write32(va: u64, value: u32) {
    // SAFETY: as for mmio_read32; the hypervisor owns the MSI-X entries it programs.
    unsafe { core::ptr::write_volatile(va as *mut u32, value) }
}

// ---------------------------------------------------------------------------------------
// Vectors and PIRQs

struct IrqState {
    vectors: VectorPool,
    owners: VectorOwners,
}

static IRQ: Mutex<IrqState> = Mutex::new(IrqState {
    vectors: VectorPool::new(),
    owners: VectorOwners::new(),
});

/// The local APIC id of this (the only) CPU.
fn apic_id() -> u8 {
    // SAFETY: the local APIC page is mapped uncached in the direct map; the ID register
    // (offset 0x20) is read-only here.
    let id = unsafe { core::ptr::read_volatile(mm::maddr_to_virt(0xfee0_0020) as *const u32) };
    (id >> 24) as u8
}

/// Sets or clears the mask bit of a mapped PIRQ's MSI-X entry.
fn set_masked(info: &PirqInfo, masked: bool) {
    let Source::MsiX { entry_maddr, .. } = info.source;
    if let Some(va) = ioremap(entry_maddr + reg::MSIX_ENTRY_CTRL) {
        let ctrl = mmio_read32(va);
        mmio_write32(va, if masked { ctrl | 1 } else { ctrl & !1 });
        // Read back so the write has reached the device before we go on (posted writes).
        let _ = mmio_read32(va);
    }
}

/// `PHYSDEVOP_map_pirq` with `MAP_PIRQ_TYPE_MSI`/`MSI_SEG` and a table base (MSI-X) for
/// domain `d`: finds the function's MSI-X capability and table, takes a vector and a
/// PIRQ, programs entry `entry_nr` (masked until a port is bound) and enables MSI-X on
/// the function. Returns the PIRQ.
///
/// Errors, as Xen's `allocate_and_map_msi_pirq` / `map_domain_pirq` /
/// `msix_capability_init`: `-EINVAL` (index other than -1, requested PIRQ out of range,
/// entry beyond the table, no vector left — Xen's "can't create irq for msi"),
/// `-EEXIST` (requested PIRQ in use, or the entry already mapped), `-ENOSPC` (no free
/// PIRQ), `-ENODEV` (no such function, no MSI-X capability, or plain MSI — not offered),
/// `-ENXIO` (memory decoding off, or the table's BAR unassigned), `-ENOMEM`.
pub fn map_msi(d: &mut Domain, m: &PhysdevMapPirq) -> Result<u32, Errno> {
    if m.index != -1 {
        return Err(Errno::EINVAL);
    }
    let pirq = d.pirqs.choose(m.pirq)?;
    let bdf =
        Bdf::from_guest(m.bus, m.devfn, m.kind == MAP_PIRQ_TYPE_MSI_SEG).ok_or(Errno::ENODEV)?;
    let mut cfg = PortConfig;
    if !function_present(&mut cfg, bdf) {
        return Err(Errno::ENODEV);
    }
    if m.table_base == 0 {
        // Plain MSI (capability 0x05) is not offered: the devices rxen drives use MSI-X.
        return Err(Errno::ENODEV);
    }
    let cap = msix_capability(&mut cfg, bdf).ok_or(Errno::ENODEV)?;
    let entry = u16::try_from(m.entry_nr)
        .ok()
        .filter(|&e| e < cap.table_size)
        .ok_or(Errno::EINVAL)?;
    if d.pirqs.find_msix(bdf, entry).is_some() {
        return Err(Errno::EEXIST);
    }
    if cfg.read16(bdf, reg::COMMAND) & reg::COMMAND_MEMORY == 0 {
        return Err(Errno::ENXIO);
    }
    let bar = bar_address(&mut cfg, bdf, cap.bir).map_err(|_| Errno::ENXIO)?;
    let table = bar.wrapping_add(u64::from(cap.offset));
    if table != m.table_base {
        crate::xdebug!(
            "d{} map_pirq {:02x}:{:02x}.{}: table_base {:#x}, the BAR says {:#x}\n",
            d.id.raw(),
            bdf.bus,
            bdf.devfn >> 3,
            bdf.devfn & 7,
            m.table_base,
            table
        );
    }
    let entry_maddr = table.wrapping_add(u64::from(entry) * reg::MSIX_ENTRY_SIZE);
    let va = ioremap(entry_maddr).ok_or(Errno::ENOMEM)?;
    // From now on the table is the hypervisor's: no domain maps it writable (Xen adds
    // MSI-X tables to mmio_ro_ranges), so dom0 cannot redirect the interrupt.
    let table_end = table.wrapping_add(u64::from(cap.table_size) * reg::MSIX_ENTRY_SIZE - 1);
    super::pv::with(|pm, _| {
        pm.set_mmio_read_only(Mfn::new(table >> 12), Mfn::new(table_end >> 12))
    });
    let vector = {
        let mut irq = IRQ.lock();
        let v = irq.vectors.alloc().ok_or(Errno::EINVAL)?;
        irq.owners.set(v, Some((d.id, pirq)));
        v
    };

    // The table is only accessible with MSI-X enabled; mask the whole function while the
    // entry is written (Xen's msix_capability_init).
    let ctl_off = cap.pos.wrapping_add(reg::MSIX_CONTROL);
    let control = cfg.read16(bdf, ctl_off);
    cfg.write16(bdf, ctl_off, control | reg::MSIX_ENABLE | reg::MSIX_MASKALL);
    let ctrl_va = va + reg::MSIX_ENTRY_CTRL;
    mmio_write32(ctrl_va, mmio_read32(ctrl_va) | 1);
    let addr = pirq::msi_address(apic_id());
    mmio_write32(va + reg::MSIX_ENTRY_ADDR_LO, addr as u32);
    mmio_write32(va + reg::MSIX_ENTRY_ADDR_HI, (addr >> 32) as u32);
    let data = pirq::msi_data(vector);
    mmio_write32(va + reg::MSIX_ENTRY_DATA, data);
    // Read the entry back from the device: proof that the table is where the BAR says
    // and that the writes reached it (the tests look for "verified").
    let back = (
        mmio_read32(va + reg::MSIX_ENTRY_ADDR_LO),
        mmio_read32(va + reg::MSIX_ENTRY_ADDR_HI),
        mmio_read32(va + reg::MSIX_ENTRY_DATA),
    );
    let verified = back == (addr as u32, (addr >> 32) as u32, data);
    cfg.write16(
        bdf,
        ctl_off,
        (control | reg::MSIX_ENABLE) & !reg::MSIX_MASKALL,
    );
    d.pirqs.insert(
        pirq,
        PirqInfo {
            vector,
            source: Source::MsiX {
                bdf,
                cap_pos: cap.pos,
                entry,
                entry_maddr,
            },
        },
    );
    crate::xinfo!(
        "d{}: pirq {} = MSI-X {:02x}:{:02x}.{} entry {} vector {:#x}: entry {}\n",
        d.id.raw(),
        pirq,
        bdf.bus,
        bdf.devfn >> 3,
        bdf.devfn & 7,
        entry,
        vector,
        if verified {
            "verified"
        } else {
            "reads back wrong"
        }
    );
    Ok(pirq)
}

/// Takes the hardware side of a PIRQ down: entry masked, vector freed, MSI-X disabled on
/// the function once none of its entries is mapped.
fn teardown(d: &Domain, info: &PirqInfo) {
    set_masked(info, true);
    {
        let mut irq = IRQ.lock();
        irq.owners.set(info.vector, None);
        irq.vectors.free(info.vector);
    }
    let Source::MsiX { bdf, cap_pos, .. } = info.source;
    if !d.pirqs.function_in_use(bdf) {
        let mut cfg = PortConfig;
        let off = cap_pos.wrapping_add(reg::MSIX_CONTROL);
        let control = cfg.read16(bdf, off);
        cfg.write16(bdf, off, control & !(reg::MSIX_ENABLE | reg::MSIX_MASKALL));
    }
}

/// `PHYSDEVOP_unmap_pirq` for domain `d`. An event channel still bound to the PIRQ stays
/// (Xen's forced unbind): it simply receives nothing more.
///
/// `-EINVAL` if `pirq` is out of range or not mapped.
pub fn unmap(d: &mut Domain, pirq: i32) -> Result<(), Errno> {
    let p = d.pirqs.in_range(i64::from(pirq)).ok_or(Errno::EINVAL)?;
    let info = d.pirqs.remove(p).ok_or(Errno::EINVAL)?;
    teardown(d, &info);
    Ok(())
}

/// A port was bound to `pirq` of `d` (Xen's `pirq_guest_bind`): let the device interrupt.
pub fn bound(d: &Domain, pirq: u32) {
    if let Some(info) = d.pirqs.get(pirq) {
        set_masked(info, false);
    }
}

/// The port bound to `pirq` of `d` was closed (Xen's `pirq_guest_unbind`): mask the
/// source again.
pub fn unbound(d: &Domain, pirq: u32) {
    if let Some(info) = d.pirqs.get(pirq) {
        set_masked(info, true);
    }
}

/// Frees every PIRQ of a dying domain.
pub fn release_domain(d: &mut Domain) {
    for (_, info) in d.pirqs.drain() {
        teardown(d, &info);
    }
}

/// An interrupt on device vector `vector` (from guest or hypervisor context): acknowledge
/// the local APIC, then raise the event channel bound to the owning PIRQ, waking the vCPU
/// it notifies. An interrupt for a PIRQ without a port is dropped (its entry is masked,
/// so only one that was already in flight can get here).
pub fn device_interrupt(vector: u64) {
    super::time::eoi();
    let Ok(v) = u8::try_from(vector) else {
        return;
    };
    let Some((dom, pirq)) = IRQ.lock().owners.get(v) else {
        return;
    };
    let mut hv = HV.lock();
    let Some(di) = hv.find(dom) else {
        return;
    };
    let d = &mut hv.domains[di];
    if d.shutdown.is_some() {
        return;
    }
    let Some(port) = d.evtchn.pirq_port(pirq) else {
        return;
    };
    let delivery = d.evtchn.notify(port, &d.bits());
    d.after_raise(
        delivery.port.raw(),
        delivery.vcpu.raw(),
        delivery.outcome.newly_pending(),
    );
}

/// Number of device vectors in use (diagnostics and tests).
pub fn vectors_in_use() -> u32 {
    IRQ.lock().vectors.in_use()
}

/// `PHYSDEVOP_map_pirq` entry: which map types are offered.
pub fn map_pirq(d: &mut Domain, m: &PhysdevMapPirq) -> Result<u32, Errno> {
    use xen_abi::physdev as pd;
    match m.kind {
        pd::MAP_PIRQ_TYPE_MSI | pd::MAP_PIRQ_TYPE_MSI_SEG => map_msi(d, m),
        // IO-APIC pins and multi-vector MSI are not offered (yet).
        pd::MAP_PIRQ_TYPE_GSI | pd::MAP_PIRQ_TYPE_MULTI_MSI => Err(Errno::EOPNOTSUPP),
        _ => Err(Errno::EINVAL),
    }
}
