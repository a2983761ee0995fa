//! The bare-metal side of the PV memory model: the portable type system
//! ([`crate::pvmm`]) bound to real page-table memory (the direct map), the frame
//! allocator kept in step with it, and the TLB maintenance it asks for.
//!
//! Lock order: `HV` → `PVMM` → `FRAMES`.

use super::mm::{self, FrameUse, FRAMES};
use crate::pvmm::{PageTableMemory, PvMm};
use spin::Mutex;
use xen_abi::{DomId, Errno, Mfn};

/// The PV MMU state of the machine.
pub static PVMM: Mutex<Option<PvMm>> = Mutex::new(None);

/// Page-table memory as the hypervisor sees it: every frame through the direct map.
pub struct DirectMap;

fn slot(mfn: Mfn, index: usize) -> *mut u64 {
    mm::maddr_to_virt((mfn.raw() << 12) + (index as u64 & 511) * 8) as *mut u64
}

impl PageTableMemory for DirectMap {
    fn read(&self, mfn: Mfn, index: usize) -> u64 {
        mm::read_entry(mfn, index)
    }

    fn write(&mut self, mfn: Mfn, index: usize, value: u64) {
        mm::write_entry(mfn, index, value);
    }

    fn cmpxchg(&mut self, mfn: Mfn, index: usize, old: u64, new: u64) -> Result<(), u64> {
        // SAFETY: the slot is an aligned u64 inside a direct-mapped RAM frame (pvmm only
        // passes frames of its table, index < 512); the CPU may update A/D bits in it
        // concurrently, which is exactly why the exchange is atomic.
        let atomic = unsafe { &*(slot(mfn, index) as *const core::sync::atomic::AtomicU64) };
        atomic
            .compare_exchange(
                old,
                new,
                core::sync::atomic::Ordering::SeqCst,
                core::sync::atomic::Ordering::SeqCst,
            )
            .map(|_| ())
    }

    fn init_xen_l4_slots(&mut self, _dom: DomId, l4: Mfn) {
        for s in 256..272 {
            mm::write_entry(l4, s, mm::read_entry(mm::idle_l4(), s));
        }
    }

    fn flush_domain_tlbs(&mut self, _dom: DomId) {
        // One CPU: every domain's stale entries can only be in this TLB.
        flush_tlb_all();
    }
}

/// Flushes the whole TLB, global entries included (guest user pages are global). The
/// type system is not told (`note_domain_flushed`): that only saves it flushes.
pub fn flush_tlb_all() {
    // SAFETY: toggling CR4.PGE flushes every TLB entry and changes nothing else.
    unsafe {
        core::arch::asm!(
            "mov {t}, cr4",
            "xor {t}, 0x80",
            "mov cr4, {t}",
            "xor {t}, 0x80",
            "mov cr4, {t}",
            t = out(reg) _,
            options(nostack)
        );
    }
}

/// Builds the PV MMU state once the allocator knows the free frames: frames on the free
/// list become free in the type system, everything else stays the hypervisor's.
pub fn init() {
    let frames = FRAMES.lock();
    let n = frames.max_mfn() as usize;
    let mut pv = PvMm::new(n);
    let ram = mm::machine_memory_map();
    for mfn in 0..n as u64 {
        let m = Mfn::new(mfn);
        let addr = mfn << 12;
        let in_ram = ram
            .iter()
            .any(|e| addr >= e.addr && addr + 4096 <= e.addr + e.size);
        if frames.info(m).is_some_and(|i| i.kind == FrameUse::Free) {
            let _ = pv.set_free(m);
        } else if mfn < 0x100 || !in_ram {
            // The first MiB (BIOS, VGA, option ROMs) and holes are I/O memory, as in Xen:
            // mappable by domains with I/O-memory permission, never allocated.
            let _ = pv.set_io(m);
        }
    }
    drop(frames);
    *PVMM.lock() = Some(pv);
}

/// Runs `f` on the PV MMU state and the direct map.
pub fn with<R>(f: impl FnOnce(&mut PvMm, &mut DirectMap) -> R) -> R {
    let mut guard = PVMM.lock();
    let Some(pv) = guard.as_mut() else {
        panic!("PV MMU used before pv::init");
    };
    let r = f(pv, &mut DirectMap);
    let freed = pv.take_freed();
    drop(guard);
    if !freed.is_empty() {
        give_back(&freed);
    }
    r
}

/// Returns frames the type system freed to the allocator (after the TLB flush Xen does
/// before reusing a frame).
fn give_back(freed: &[Mfn]) {
    flush_tlb_all();
    let mut frames = FRAMES.lock();
    for &m in freed {
        frames.free(m);
    }
}

/// A hypervisor frame (zeroed), owned by the hypervisor in the type system.
pub fn alloc_xen_frame() -> Result<Mfn, Errno> {
    let m = FRAMES
        .lock()
        .alloc(DomId::XEN, FrameUse::Xen)
        .ok_or(Errno::ENOMEM)?;
    with(|pv, _| pv.set_hypervisor(m)).inspect_err(|_| FRAMES.lock().free(m))?;
    Ok(m)
}

/// A zeroed frame given to domain `dom` (within its max_pages).
pub fn alloc_domain_frame(dom: DomId) -> Result<Mfn, Errno> {
    let m = FRAMES
        .lock()
        .alloc(dom, FrameUse::Guest)
        .ok_or(Errno::ENOMEM)?;
    if let Err(e) = with(|pv, _| pv.assign(m, dom)) {
        FRAMES.lock().free(m);
        return Err(e);
    }
    Ok(m)
}
