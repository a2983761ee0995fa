//! The per-vCPU view of the GDT (Xen's PV GDT area): a 16-page virtual window in the
//! hypervisor's per-domain slot whose first 14 pages show the running vCPU's guest GDT
//! frames (`set_gdt`) and whose last two pages are the hypervisor's own (flat ring-3
//! selectors, TSS). GDTR always points at the window; a context switch remaps pages
//! 0..13. Pages a guest has not given are backed by a zeroed frame, so a selector into
//! them is an ordinary "not present" fault, never a hypervisor fault.

use super::mm::{self, pte, FrameUse, FRAMES};
use spin::Mutex;
use xen_abi::{DomId, Mfn};

/// Start of the window (L4 slot 260, Xen's per-domain area).
pub const GDT_VIRT_START: u64 = 0xffff_8200_0000_0000;
/// Guest GDT frames at most (entries 0..7167).
pub const MAX_GUEST_FRAMES: usize = 14;

struct Window {
    /// The L1 table mapping the 16 window pages.
    l1: Mfn,
    /// Zeroed frame behind pages the guest did not give.
    zero: Mfn,
    /// What pages 0..13 show now.
    shown: [Option<Mfn>; MAX_GUEST_FRAMES],
}

static WINDOW: Mutex<Option<Window>> = Mutex::new(None);

#[repr(C, packed)]
struct DescriptorPointer {
    limit: u16,
    base: u64,
}

/// Builds the window over the static GDT's reserved pages and loads GDTR with it.
/// `static_gdt` is the hypervisor-image GDT (16 pages) used until now.
pub fn init(static_gdt: u64) {
    let mut frames = FRAMES.lock();
    let mut alloc = || match frames.alloc(DomId::XEN, FrameUse::Xen) {
        Some(m) => m,
        None => panic!("out of memory for the GDT window"),
    };
    let (l3, l2, l1, zero) = (alloc(), alloc(), alloc(), alloc());
    drop(frames);
    let idx = |shift: u32| ((GDT_VIRT_START >> shift) & 511) as usize;
    mm::write_entry(
        mm::idle_l4(),
        idx(39),
        (l3.raw() << 12) | pte::P | pte::RW | pte::A,
    );
    mm::write_entry(l3, idx(30), (l2.raw() << 12) | pte::P | pte::RW | pte::A);
    mm::write_entry(l2, idx(21), (l1.raw() << 12) | pte::P | pte::RW | pte::A);
    for page in 0..MAX_GUEST_FRAMES {
        mm::write_entry(l1, page, (zero.raw() << 12) | pte::P | pte::A | pte::NX);
    }
    for page in MAX_GUEST_FRAMES..16 {
        let phys = static_gdt - mm::XEN_VIRT_START + (page as u64) * 4096;
        mm::write_entry(
            l1,
            page,
            phys | pte::P | pte::RW | pte::A | pte::D | pte::NX,
        );
    }
    *WINDOW.lock() = Some(Window {
        l1,
        zero,
        shown: [None; MAX_GUEST_FRAMES],
    });
    mm::flush_all();
    let gdtr = DescriptorPointer {
        limit: 0xffff,
        base: GDT_VIRT_START,
    };
    // SAFETY: the window maps the same reserved entries (code/data selectors, TSS) the
    // static GDT had at the same offsets, so every loaded selector stays valid.
    unsafe { core::arch::asm!("lgdt [{}]", in(reg) &gdtr, options(nostack)) };
}

/// Shows `frames` (a vCPU's guest GDT) in pages 0..13 of the window.
pub fn show(frames: &[Mfn]) {
    let mut w = WINDOW.lock();
    let Some(w) = w.as_mut() else {
        return;
    };
    for page in 0..MAX_GUEST_FRAMES {
        let want = frames.get(page).copied();
        if w.shown[page] == want {
            continue;
        }
        // Writable for the CPU (it sets descriptors' accessed bits); the guest itself can
        // never write these frames, which carry the segment-descriptor type.
        let e = match want {
            Some(m) => (m.raw() << 12) | pte::P | pte::RW | pte::A | pte::D | pte::NX,
            None => (w.zero.raw() << 12) | pte::P | pte::A | pte::NX,
        };
        mm::write_entry(w.l1, page, e);
        super::cpu::invlpg(GDT_VIRT_START + page as u64 * 4096);
        w.shown[page] = want;
    }
}
