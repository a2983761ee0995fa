//! Accessors for memory shared with the hypervisor: the `shared_info` page (event-channel
//! bitmaps, wall clock), this vCPU's `vcpu_info` (upcall pending/mask, pending selector,
//! cr2, `vcpu_time_info`), and the builder's p2m list. ABI.md §1.5-1.6.
//!
//! The hypervisor writes these concurrently with us, so every access is an atomic or
//! volatile operation on a raw address; no Rust reference to the shared memory is held.
//! This is one of the two modules of `pv-guest` allowed to use `unsafe` (with
//! [`crate::arch`]); all addresses come from [`init`]/[`relocate_vcpu_info`], which are
//! only given the page mapped by [`crate::arch`] or our own spare page.

use core::sync::atomic::{AtomicPtr, AtomicU32, AtomicU64, AtomicU8, Ordering};

use xen_abi::xen::VcpuTimeInfo;

/// Offsets inside shared_info / vcpu_info (ABI.md §1.6, checked by xen-abi's asserts).
const EVTCHN_PENDING: usize = 2048;
const EVTCHN_MASK: usize = 2560;
const WC_VERSION: usize = 3072;
const WC_SEC: usize = 3076;
const WC_NSEC: usize = 3080;
const WC_SEC_HI: usize = 3084;
const VI_PENDING: usize = 0;
const VI_MASK: usize = 1;
const VI_SEL: usize = 8;
const VI_CR2: usize = 16;
const VI_TIME: usize = 32;

/// Number of 64-bit words in each event bitmap.
pub const EVTCHN_WORDS: usize = 64;

static SHARED: AtomicPtr<u8> = AtomicPtr::new(core::ptr::null_mut());
static VCPU: AtomicPtr<u8> = AtomicPtr::new(core::ptr::null_mut());

/// Record where shared_info is mapped; vCPU 0's `vcpu_info` is its first slot.
pub(crate) fn init(shared_info_va: u64) {
    let p = shared_info_va as *mut u8;
    SHARED.store(p, Ordering::Release);
    VCPU.store(p, Ordering::Release);
}

/// After a successful `VCPUOP_register_vcpu_info`: the hypervisor uses only the new area.
pub(crate) fn relocate_vcpu_info(va: u64) {
    VCPU.store(va as *mut u8, Ordering::Release);
}

/// Whether shared_info has been mapped.
pub fn is_mapped() -> bool {
    !SHARED.load(Ordering::Acquire).is_null()
}

/// Current VA of this vCPU's `vcpu_info` (0 if not mapped).
pub fn vcpu_info_va() -> u64 {
    VCPU.load(Ordering::Acquire) as u64
}

fn shared_u64(off: usize) -> Option<&'static AtomicU64> {
    let base = SHARED.load(Ordering::Acquire);
    if base.is_null() {
        return None;
    }
    // SAFETY: `base` is the 4 KiB shared_info mapping (see `init`), `off` is one of the
    // 8-aligned offsets above (< 4096), and the page stays mapped for the kernel's lifetime;
    // atomics are the right way to share it with the hypervisor.
    Some(unsafe { AtomicU64::from_ptr(base.add(off).cast::<u64>()) })
}

fn shared_u32(off: usize) -> Option<&'static AtomicU32> {
    let base = SHARED.load(Ordering::Acquire);
    if base.is_null() {
        return None;
    }
    // SAFETY: as in `shared_u64`, with a 4-aligned offset.
    Some(unsafe { AtomicU32::from_ptr(base.add(off).cast::<u32>()) })
}

fn vcpu_u8(off: usize) -> Option<&'static AtomicU8> {
    let base = VCPU.load(Ordering::Acquire);
    if base.is_null() {
        return None;
    }
    // SAFETY: `base` is a 64-byte vcpu_info inside a mapped page (shared_info slot 0 or the
    // area registered with VCPUOP_register_vcpu_info), `off` < 64.
    Some(unsafe { AtomicU8::from_ptr(base.add(off)) })
}

fn vcpu_u64(off: usize) -> Option<&'static AtomicU64> {
    let base = VCPU.load(Ordering::Acquire);
    if base.is_null() {
        return None;
    }
    // SAFETY: as in `vcpu_u8`; vcpu_info areas are 8-aligned (Xen requires it) and `off` is
    // 8-aligned.
    Some(unsafe { AtomicU64::from_ptr(base.add(off).cast::<u64>()) })
}

/// `evtchn_upcall_pending` of this vCPU.
pub fn upcall_pending() -> bool {
    vcpu_u8(VI_PENDING).is_some_and(|a| a.load(Ordering::Acquire) != 0)
}

/// Clear `evtchn_upcall_pending` (done before scanning the bitmaps).
pub fn clear_upcall_pending() {
    if let Some(a) = vcpu_u8(VI_PENDING) {
        a.store(0, Ordering::SeqCst);
    }
}

/// `evtchn_upcall_mask` of this vCPU (true = upcalls disabled).
pub fn upcall_mask() -> bool {
    vcpu_u8(VI_MASK).is_none_or(|a| a.load(Ordering::Acquire) != 0)
}

/// Write `evtchn_upcall_mask`; returns the previous value.
pub fn set_upcall_mask(masked: bool) -> bool {
    match vcpu_u8(VI_MASK) {
        Some(a) => a.swap(u8::from(masked), Ordering::SeqCst) != 0,
        None => true,
    }
}

/// Atomically take (and zero) `evtchn_pending_sel`.
pub fn take_pending_sel() -> u64 {
    vcpu_u64(VI_SEL).map_or(0, |a| a.swap(0, Ordering::SeqCst))
}

/// `arch.cr2`: faulting address of the last #PF bounced to this vCPU.
pub fn cr2() -> u64 {
    vcpu_u64(VI_CR2).map_or(0, |a| a.load(Ordering::Acquire))
}

/// Word `w` of `evtchn_pending`.
pub fn pending_word(w: usize) -> u64 {
    if w >= EVTCHN_WORDS {
        return 0;
    }
    shared_u64(EVTCHN_PENDING + 8 * w).map_or(0, |a| a.load(Ordering::Acquire))
}

/// Word `w` of `evtchn_mask`.
pub fn mask_word(w: usize) -> u64 {
    if w >= EVTCHN_WORDS {
        return u64::MAX;
    }
    shared_u64(EVTCHN_MASK + 8 * w).map_or(u64::MAX, |a| a.load(Ordering::Acquire))
}

fn bit(port: u32) -> Option<(usize, u64)> {
    let w = (port / 64) as usize;
    (w < EVTCHN_WORDS).then(|| (w, 1u64 << (port % 64)))
}

/// Atomically clear `pending[port]`; returns whether it was set.
pub fn test_and_clear_pending(port: u32) -> bool {
    let Some((w, b)) = bit(port) else {
        return false;
    };
    shared_u64(EVTCHN_PENDING + 8 * w).is_some_and(|a| a.fetch_and(!b, Ordering::SeqCst) & b != 0)
}

/// Whether `pending[port]` is set.
pub fn test_pending(port: u32) -> bool {
    bit(port).is_some_and(|(w, b)| pending_word(w) & b != 0)
}

/// Whether `mask[port]` is set.
pub fn test_mask(port: u32) -> bool {
    bit(port).is_some_and(|(w, b)| mask_word(w) & b != 0)
}

/// Atomically set `mask[port]` (guests mask ports themselves; ABI.md §1.6).
pub fn set_mask(port: u32) {
    if let Some((w, b)) = bit(port) {
        if let Some(a) = shared_u64(EVTCHN_MASK + 8 * w) {
            a.fetch_or(b, Ordering::SeqCst);
        }
    }
}

/// Atomically clear `mask[port]` without the hypervisor's re-raise (see
/// [`crate::events::unmask`] for the full protocol).
pub fn clear_mask(port: u32) {
    if let Some((w, b)) = bit(port) {
        if let Some(a) = shared_u64(EVTCHN_MASK + 8 * w) {
            a.fetch_and(!b, Ordering::SeqCst);
        }
    }
}

/// Read `vcpu_time_info` once (no version check; see [`crate::time`] for the protocol).
pub fn time_info_raw() -> Option<VcpuTimeInfo> {
    let base = VCPU.load(Ordering::Acquire);
    if base.is_null() {
        return None;
    }
    // SAFETY: the 32-byte vcpu_time_info lies at offset 32 of a mapped vcpu_info; a volatile
    // copy of plain data (torn reads are detected by the caller's version check).
    Some(unsafe { core::ptr::read_volatile(base.add(VI_TIME).cast::<VcpuTimeInfo>()) })
}

/// `vcpu_time_info.version` (read separately for the seqlock protocol).
pub fn time_version() -> u32 {
    let base = VCPU.load(Ordering::Acquire);
    if base.is_null() {
        return 0;
    }
    // SAFETY: 4-aligned u32 at offset 32 of a mapped vcpu_info.
    unsafe { AtomicU32::from_ptr(base.add(VI_TIME).cast::<u32>()) }.load(Ordering::Acquire)
}

/// Wall-clock fields `(wc_version, wc_sec | wc_sec_hi << 32, wc_nsec)`.
pub fn wallclock_raw() -> (u32, u64, u32) {
    let v = shared_u32(WC_VERSION).map_or(0, |a| a.load(Ordering::Acquire));
    let lo = shared_u32(WC_SEC).map_or(0, |a| a.load(Ordering::Acquire));
    let hi = shared_u32(WC_SEC_HI).map_or(0, |a| a.load(Ordering::Acquire));
    let ns = shared_u32(WC_NSEC).map_or(0, |a| a.load(Ordering::Acquire));
    (v, u64::from(lo) | (u64::from(hi) << 32), ns)
}

/// `wc_version` alone.
pub fn wallclock_version() -> u32 {
    shared_u32(WC_VERSION).map_or(0, |a| a.load(Ordering::Acquire))
}

/// Entry `pfn` of the builder's p2m list at `mfn_list_va` holding `nr_pages` entries.
pub(crate) fn p2m_entry(mfn_list_va: u64, nr_pages: u64, pfn: u64) -> Option<u64> {
    if mfn_list_va == 0 || !mfn_list_va.is_multiple_of(8) || pfn >= nr_pages {
        return None;
    }
    let addr = mfn_list_va.checked_add(pfn.checked_mul(8)?)?;
    // SAFETY: start_info.mfn_list is the VA of the builder's p2m array of nr_pages u64s,
    // mapped in our initial address space (ABI.md §1.3); `pfn` is in range.
    let v = unsafe { core::ptr::read_volatile(addr as *const u64) };
    (v != u64::MAX).then_some(v)
}

/// Store `mfn` in entry `pfn` of the builder's p2m list (the guest owns its p2m: Xen never
/// writes a PV guest's list). Returns false if `pfn` is out of range.
pub(crate) fn set_p2m_entry(mfn_list_va: u64, nr_pages: u64, pfn: u64, mfn: u64) -> bool {
    if mfn_list_va == 0 || !mfn_list_va.is_multiple_of(8) || pfn >= nr_pages {
        return false;
    }
    let Some(addr) = pfn.checked_mul(8).and_then(|o| mfn_list_va.checked_add(o)) else {
        return false;
    };
    // SAFETY: as in `p2m_entry`: the builder's p2m array is ordinary RAM mapped writable in
    // our initial address space; `pfn` is in range and the slot is 8-aligned.
    unsafe { core::ptr::write_volatile(addr as *mut u64, mfn) };
    true
}

/// Offset of `arch.max_pfn` in shared_info (ABI.md §1.6).
const ARCH_MAX_PFN: usize = 3088;

/// Write `shared_info.arch.max_pfn` (the size of our p2m, for tools; Xen's
/// `XENMEM_maximum_gpfn` answers `max_pfn - 1` for a PV guest). Linux does this at boot.
pub fn set_arch_max_pfn(max_pfn: u64) {
    if let Some(a) = shared_u64(ARCH_MAX_PFN) {
        a.store(max_pfn, Ordering::SeqCst);
    }
}
