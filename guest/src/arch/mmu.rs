//! The kernel side of Xen's PV memory model (ABI.md §1.3, §3.3; Xen `arch/x86/mm.c`,
//! Linux `arch/x86/xen/mmu_pv.c`): the domain's free frames, machine/pseudo-physical
//! translation (p2m list, M2P table), reading the live page tables, page-table page
//! allocation (zeroed, made read-only in our own mapping, pinned), a *map area* where any
//! frame can be mapped and unmapped with `update_va_mapping` / batched `mmu_update`, and
//! cloning the whole address space into fresh, pinned tables to switch CR3 to
//! (`MMUEXT_NEW_BASEPTR`), releasing the builder's tables afterwards, and a *grow area*
//! (`GROW_AREA_VA`, 1 GiB) that is backed by free frames on demand, for a heap that grows
//! into the domain's own memory and gives it back.
//!
//! Safety model: the kernel (image, stacks, p2m, start_info) lives in the builder's
//! initial mapping at `VIRT_BASE`, which this module never changes except to flip frames
//! it allocated between RW and RO. Every other change targets the map area
//! (`MAP_AREA_VA`, one L1 of 512 slots), the grow area (its own L2 and L1s, in an L3 slot
//! that is empty at boot), scratch tables that are not part of any live address space, or a
//! clone that maps the kernel identically. The public functions check
//! their targets against that, so they are safe to call with any arguments; a hypervisor
//! that accepted an update Xen refuses is what could still crash the kernel.

use core::sync::atomic::{AtomicBool, Ordering};

use spin::Mutex;
use xen_abi::hypercall::{self as nr, MulticallEntry};
use xen_abi::xen::{
    MmuUpdate, MmuextOp, StartInfo, MMUEXT_INVLPG_LOCAL, MMUEXT_NEW_BASEPTR, MMUEXT_PIN_L1_TABLE,
    MMUEXT_TLB_FLUSH_LOCAL, MMUEXT_UNPIN_TABLE, MMU_MACHPHYS_UPDATE, MMU_NORMAL_PT_UPDATE,
    MMU_PT_UPDATE_PRESERVE_AD, UVMF_INVLPG, UVMF_NONE,
};
use xen_abi::{DomId, Errno};

use super::cpu::FaultSite;
use super::hypercall::{self as hc, Batch, Error};
use crate::mm::{
    guest_view_l1e, is_xen_l4_slot, pte, pte_mfn, pte_of, table_index, BootLayout, FrameAllocator,
    Pool, ENTRIES, PAGE_SIZE,
};
use crate::start::VIRT_BASE;

/// Base of the map area: L4 slot 511, L3 slot 511 (`0xffffffffc0000000`), 2 MiB.
pub const MAP_AREA_VA: u64 = 0xffff_ffff_c000_0000;
/// Slots (pages) in the map area.
pub const MAP_AREA_SLOTS: usize = ENTRIES;
/// Where Xen maps the M2P table read-only in every PV address space.
pub const M2P_VA: u64 = xen_abi::xen::MACH2PHYS_VIRT_START;

/// Tables of our own (map area, scratch tables, clones) whose pseudo-physical frame we
/// remember for walking.
const MAX_OWN_TABLES: usize = 128;
/// Tables in one clone of the address space.
const MAX_CLONE_TABLES: usize = 48;

/// Why a memory operation could not be done.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MmError {
    /// [`init`] has not run (or failed).
    Uninit,
    /// start_info's layout is not the one ABI.md §1.3 describes.
    Layout,
    /// No free frame left (in the pool asked for).
    NoFrames,
    /// A page-table frame is not where we can read it, or a walk hit a hole.
    Walk,
    /// The target is not one this module lets a caller change.
    Refused,
    /// The map area is full, or a slot is not in use.
    Slot,
    /// The hypervisor refused `what`.
    Hypercall(&'static str, Error),
}

impl core::fmt::Display for MmError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            MmError::Uninit => f.write_str("memory manager not initialised"),
            MmError::Layout => f.write_str("unexpected start-of-day layout"),
            MmError::NoFrames => f.write_str("out of free frames"),
            MmError::Walk => f.write_str("page-table walk failed"),
            MmError::Refused => f.write_str("target refused locally"),
            MmError::Slot => f.write_str("no such map-area slot"),
            MmError::Hypercall(what, e) => write!(f, "{what}: {e}"),
        }
    }
}

/// Result of this module's operations.
pub type MmResult<T> = core::result::Result<T, MmError>;

#[derive(Clone, Copy)]
struct MapArea {
    l1: Table,
    l2: Table,
    used: [u64; MAP_AREA_SLOTS / 64],
}

/// A page-table frame of ours: PFN (so we can read it at its initial-mapping VA) and MFN.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
struct Table {
    pfn: u64,
    mfn: u64,
}

struct State {
    ready: bool,
    si_mfn_list: u64,
    layout: BootLayout,
    alloc: FrameAllocator,
    /// L4 the vCPU runs on (kernel mode).
    l4_mfn: u64,
    /// The builder's L4.
    boot_l4_mfn: u64,
    /// Boot tables were given back.
    boot_released: bool,
    /// M2P entries readable (`XENMEM_machphys_mapping`'s max_mfn + 1).
    m2p_entries: u64,
    own: [Table; MAX_OWN_TABLES],
    nr_own: usize,
    area: Option<MapArea>,
    /// The grow area (see [`grow_area_init`]).
    grow: Option<GrowArea>,
    /// Scratch tables: not in any live tree, so any update to them is harmless to us.
    scratch: [u64; 16],
    nr_scratch: usize,
}

static MM: Mutex<State> = Mutex::new(State {
    ready: false,
    si_mfn_list: 0,
    layout: BootLayout {
        nr_pages: 0,
        pt_pfn: 0,
        nr_pt_frames: 0,
        first_free_pfn: 0,
        mapped_end_pfn: 0,
    },
    alloc: FrameAllocator::empty(),
    l4_mfn: 0,
    boot_l4_mfn: 0,
    boot_released: false,
    m2p_entries: 0,
    own: [Table { pfn: 0, mfn: 0 }; MAX_OWN_TABLES],
    nr_own: 0,
    area: None,
    grow: None,
    scratch: [0; 16],
    nr_scratch: 0,
});

/// Set once [`init`] succeeded (lets the bench and tests check cheaply).
static READY: AtomicBool = AtomicBool::new(false);

// ---------------------------------------------------------------------------------------
// Raw memory access. Every address passed here is computed by this module from a PFN
// below `layout.mapped_end_pfn` (the builder's initial mapping, which stays mapped for
// the kernel's lifetime), from the map area's in-use slots, or from the M2P range.

fn pfn_va(layout: &BootLayout, pfn: u64) -> Option<u64> {
    (pfn < layout.mapped_end_pfn).then(|| VIRT_BASE + pfn * PAGE_SIZE)
}

/// Read word `idx` of the page at `va`.
///
/// # Safety
/// `va` must be a mapped, readable page.
unsafe fn read_word(va: u64, idx: usize) -> u64 {
    // SAFETY: per the contract; idx < 512 keeps the access inside the page.
    unsafe { core::ptr::read_volatile((va as *const u64).add(idx % ENTRIES)) }
}

/// Write word `idx` of the page at `va`.
///
/// # Safety
/// `va` must be a page mapped writable that no Rust reference points into.
unsafe fn write_word(va: u64, idx: usize, v: u64) {
    // SAFETY: per the contract.
    unsafe { core::ptr::write_volatile((va as *mut u64).add(idx % ENTRIES), v) }
}

/// # Safety
/// As [`write_word`].
unsafe fn zero_page(va: u64) {
    for i in 0..ENTRIES {
        // SAFETY: per the contract.
        unsafe { write_word(va, i, 0) };
    }
}

// ---------------------------------------------------------------------------------------
// Initialisation and translation.

impl State {
    fn p2m(&self, pfn: u64) -> Option<u64> {
        crate::shared::p2m_entry(self.si_mfn_list, self.layout.nr_pages, pfn)
    }

    /// PFN of one of our page-table frames (own tables, then the builder's, then a scan of
    /// the whole p2m).
    fn table_pfn(&self, mfn: u64) -> Option<u64> {
        if let Some(t) = self.own[..self.nr_own].iter().find(|t| t.mfn == mfn) {
            return Some(t.pfn);
        }
        let l = &self.layout;
        (l.pt_pfn..l.pt_pfn + l.nr_pt_frames)
            .chain(0..l.mapped_end_pfn)
            .find(|&p| self.p2m(p) == Some(mfn))
    }

    /// Whether `mfn` is the L2 of the map area or of the grow area: a clone of the
    /// address space shares these instead of copying them.
    fn is_shared_l2(&self, mfn: u64) -> bool {
        self.area.is_some_and(|a| a.l2.mfn == mfn) || self.grow.is_some_and(|g| g.l2 == mfn)
    }

    fn table_va(&self, mfn: u64) -> Option<u64> {
        pfn_va(&self.layout, self.table_pfn(mfn)?)
    }

    /// Entry `idx` of the table in frame `mfn`.
    fn entry(&self, mfn: u64, idx: usize) -> Option<u64> {
        let va = self.table_va(mfn)?;
        // SAFETY: `va` is inside the initial mapping (pfn_va), which is always mapped and
        // readable (page tables are mapped read-only, never unmapped).
        Some(unsafe { read_word(va, idx) })
    }

    /// The L1 that maps `va` in the tree rooted at `l4` and the entry's index.
    fn l1_of(&self, l4: u64, va: u64) -> Option<(u64, usize)> {
        let mut table = l4;
        for level in (2..=4).rev() {
            let e = self.entry(table, table_index(va, level))?;
            if e & pte::PRESENT == 0 || e & pte::PSE != 0 {
                return None;
            }
            table = pte_mfn(e);
        }
        Some((table, table_index(va, 1)))
    }

    fn remember(&mut self, t: Table) {
        if self.nr_own < MAX_OWN_TABLES && !self.own[..self.nr_own].contains(&t) {
            self.own[self.nr_own] = t;
            self.nr_own += 1;
        }
    }

    fn forget(&mut self, mfn: u64) {
        if let Some(i) = self.own[..self.nr_own].iter().position(|t| t.mfn == mfn) {
            self.own[i] = self.own[self.nr_own - 1];
            self.nr_own -= 1;
        }
    }

    /// Take a frame of the mapped pool and zero it through its RW initial mapping.
    fn alloc_zeroed(&mut self) -> MmResult<Table> {
        let pfn = self.alloc.alloc(Pool::Mapped).ok_or(MmError::NoFrames)?;
        let (Some(mfn), Some(va)) = (self.p2m(pfn), pfn_va(&self.layout, pfn)) else {
            return Err(MmError::Layout);
        };
        // SAFETY: a free frame of the mapped pool: mapped RW at `va` by the builder and
        // used by nothing else (just allocated).
        unsafe { zero_page(va) };
        Ok(Table { pfn, mfn })
    }
}

/// What [`init`] found.
#[derive(Clone, Copy, Debug)]
pub struct InitInfo {
    /// The start-of-day layout.
    pub layout: BootLayout,
    /// Free frames.
    pub free_frames: u64,
    /// MFN of the L4 we run on.
    pub l4_mfn: u64,
}

/// Learn the layout from start_info, walk the initial mapping to find where it ends, and
/// give every frame past the boot region to the allocator.
pub fn init(si: &StartInfo) -> MmResult<InitInfo> {
    let mut st = MM.lock();
    if st.ready {
        return Ok(InitInfo {
            layout: st.layout,
            free_frames: st.alloc.nr_free(),
            l4_mfn: st.l4_mfn,
        });
    }
    let mut layout = BootLayout::new(si.nr_pages, si.pt_base, si.nr_pt_frames, VIRT_BASE)
        .ok_or(MmError::Layout)?;
    st.si_mfn_list = si.mfn_list;
    st.layout = layout;
    // The initial mapping covers at least the boot region; walk on to its end.
    layout.mapped_end_pfn = layout.first_free_pfn;
    st.layout = layout;
    let l4 = st.p2m(layout.pt_pfn).ok_or(MmError::Layout)?;
    st.l4_mfn = l4;
    st.boot_l4_mfn = l4;
    // While walking, treat the whole boot region as mapped (it is: ABI.md §1.3).
    let mut end = layout.first_free_pfn;
    while end < layout.nr_pages {
        let va = VIRT_BASE + end * PAGE_SIZE;
        let mapped = st.l1_of(l4, va).and_then(|(l1, i)| st.entry(l1, i));
        match mapped {
            Some(e) if e & pte::PRESENT != 0 && Some(pte_mfn(e)) == st.p2m(end) => end += 1,
            _ => break,
        }
    }
    layout.mapped_end_pfn = end;
    st.layout = layout;
    let l = layout;
    st.alloc.init(&l);
    st.m2p_entries = hc::machphys_mapping().map_or(0, |m| m.max_mfn.saturating_add(1));
    st.ready = true;
    READY.store(true, Ordering::Release);
    Ok(InitInfo {
        layout,
        free_frames: st.alloc.nr_free(),
        l4_mfn: l4,
    })
}

/// Whether [`init`] succeeded.
pub fn is_ready() -> bool {
    READY.load(Ordering::Acquire)
}

fn ready() -> MmResult<spin::MutexGuard<'static, State>> {
    let st = MM.lock();
    if st.ready {
        Ok(st)
    } else {
        Err(MmError::Uninit)
    }
}

/// MFN of pseudo-physical frame `pfn` (our p2m list).
pub fn pfn_to_mfn(pfn: u64) -> Option<u64> {
    ready().ok()?.p2m(pfn)
}

/// Record `pfn → mfn` in our p2m list (after `populate_physmap`, for instance).
pub fn set_p2m(pfn: u64, mfn: u64) -> bool {
    match ready() {
        Ok(st) => crate::shared::set_p2m_entry(st.si_mfn_list, st.layout.nr_pages, pfn, mfn),
        Err(_) => false,
    }
}

/// PFN of `mfn` by searching our p2m list (never faults; slow).
pub fn mfn_to_pfn_p2m(mfn: u64) -> Option<u64> {
    let st = ready().ok()?;
    (0..st.layout.nr_pages).find(|&p| st.p2m(p) == Some(mfn))
}

/// Number of M2P entries `XENMEM_machphys_mapping` announced (0 if it failed).
pub fn m2p_entries() -> u64 {
    ready().map_or(0, |st| st.m2p_entries)
}

/// Read M2P[mfn] at [`M2P_VA`] with `mov rax, [rdi]` (48 8b 07). RAX is preset to all-ones,
/// so a #PF skipped by the kernel's handler (3 bytes) reads as `u64::MAX`. `None` (no
/// access) when `mfn` is past what `XENMEM_machphys_mapping` announced.
pub fn probe_m2p_read(mfn: u64) -> Option<(u64, FaultSite)> {
    if mfn >= m2p_entries() {
        return None;
    }
    // SAFETY: a read of the hypervisor's read-only M2P range, inside the size it announced;
    // no Rust object lives there.
    Some(unsafe { probe_read(M2P_VA + mfn * 8) })
}

/// Reads the quadword at `addr` with one `mov rax, [rdi]` (3 bytes) whose address it
/// reports, so a #PF hook can skip it: a skipped read leaves `u64::MAX`.
///
/// # Safety
/// `addr` must hold no Rust object, and a fault there must be handled by the kernel's
/// #PF hook (which skips [`FaultSite`]).
unsafe fn probe_read(addr: u64) -> (u64, FaultSite) {
    let site: u64;
    let v: u64;
    // SAFETY: as the caller guarantees; the instruction only reads.
    unsafe {
        core::arch::asm!(
            "lea {s}, [rip + 2f]",
            "2: .byte 0x48, 0x8b, 0x07",
            s = out(reg) site,
            in("rdi") addr,
            inlateout("rax") u64::MAX => v,
            options(nostack, readonly),
        );
    }
    (v, FaultSite { rip: site, len: 3 })
}

/// The start-of-day layout ([`init`] must have run).
pub fn layout() -> Option<BootLayout> {
    ready().ok().map(|st| st.layout)
}

/// MFN of the L4 we run on.
pub fn current_l4() -> Option<u64> {
    ready().ok().map(|st| st.l4_mfn)
}

/// Machine address of the L1 entry mapping `va` in the current tables.
pub fn l1e_maddr(va: u64) -> Option<u64> {
    let st = ready().ok()?;
    let (l1, i) = st.l1_of(st.l4_mfn, va)?;
    Some((l1 << 12) + 8 * i as u64)
}

/// The L1 entry mapping `va` in the current tables (as stored, i.e. Xen-adjusted).
pub fn l1e_of(va: u64) -> Option<u64> {
    let st = ready().ok()?;
    let (l1, i) = st.l1_of(st.l4_mfn, va)?;
    st.entry(l1, i)
}

// ---------------------------------------------------------------------------------------
// Frames handed to callers.

/// A free frame taken from the allocator: a token that the caller owns it.
#[derive(Debug, PartialEq, Eq)]
pub struct Frame {
    pfn: u64,
    mfn: u64,
    pool: Pool,
}

impl Frame {
    /// Its pseudo-physical frame number.
    pub fn pfn(&self) -> u64 {
        self.pfn
    }
    /// Its machine frame number.
    pub fn mfn(&self) -> u64 {
        self.mfn
    }
    /// Which pool it came from.
    pub fn pool(&self) -> Pool {
        self.pool
    }
    /// Its VA in the initial mapping (mapped-pool frames only).
    pub fn va(&self) -> Option<u64> {
        (self.pool == Pool::Mapped).then(|| VIRT_BASE + self.pfn * PAGE_SIZE)
    }
    /// A frame whose MFN changed (after `decrease_reservation` + `populate_physmap`).
    pub fn with_mfn(self, mfn: u64) -> Frame {
        Frame { mfn, ..self }
    }
}

/// Take a free frame from `pool`. Mapped-pool frames come zeroed.
pub fn alloc_frame(pool: Pool) -> MmResult<Frame> {
    let mut st = ready()?;
    match pool {
        Pool::Mapped => {
            let t = st.alloc_zeroed()?;
            Ok(Frame {
                pfn: t.pfn,
                mfn: t.mfn,
                pool,
            })
        }
        Pool::Unmapped => {
            let pfn = st.alloc.alloc(pool).ok_or(MmError::NoFrames)?;
            let mfn = st.p2m(pfn).ok_or(MmError::Layout)?;
            Ok(Frame { pfn, mfn, pool })
        }
    }
}

/// Give a frame back. A mapped-pool frame must be RW in our mapping again (see
/// [`protect`]); an unmapped-pool frame must not be mapped in the map area.
pub fn free_frame(f: Frame) {
    if let Ok(mut st) = ready() {
        st.alloc.free(f.pfn);
    }
}

/// Free frames left in each pool: (mapped, unmapped).
pub fn free_frames() -> u64 {
    ready().map_or(0, |st| st.alloc.nr_free())
}

/// Write word `idx` of a mapped-pool frame through its initial mapping (must be RW).
pub fn frame_write(f: &Frame, idx: usize, v: u64) -> MmResult<()> {
    let va = f.va().ok_or(MmError::Refused)?;
    let e = l1e_of(va).ok_or(MmError::Walk)?;
    if e & pte::RW == 0 {
        return Err(MmError::Refused);
    }
    // SAFETY: the frame is owned by the caller (token), mapped RW at `va` (checked), and
    // no Rust reference points into it.
    unsafe { write_word(va, idx, v) };
    Ok(())
}

/// Read word `idx` of a mapped-pool frame.
pub fn frame_read(f: &Frame, idx: usize) -> MmResult<u64> {
    let va = f.va().ok_or(MmError::Refused)?;
    // SAFETY: inside the initial mapping, which is always readable.
    Ok(unsafe { read_word(va, idx) })
}

/// Map a mapped-pool frame read-only (`writable` false) or RW again at its initial VA with
/// `update_va_mapping` (the caller owns it, so nothing else depends on its mapping).
pub fn protect(f: &Frame, writable: bool) -> hc::Result<u64> {
    let va = f.va().ok_or(Error::local(Errno::EINVAL))?;
    let flags = if writable {
        pte::KERNEL_RW
    } else {
        pte::KERNEL_RO
    };
    // SAFETY: the caller owns the frame (token); only its own mapping changes, to the same
    // frame with RW or RO rights; no Rust reference points into it.
    unsafe { hc::update_va_mapping(va, pte_of(f.mfn, flags), UVMF_INVLPG) }
}

/// Remap mapped-pool frames RO or RW with one multicall of `update_va_mapping`s (at most
/// 32 at a time). Returns how many succeeded (they are done in order, the results are
/// per entry).
fn remap_batch(frames: &[Table], writable: bool) -> usize {
    let flags = if writable {
        pte::KERNEL_RW
    } else {
        pte::KERNEL_RO
    };
    let mut ok = 0;
    for chunk in frames.chunks(32) {
        let mut calls = [MulticallEntry::default(); 32];
        for (c, t) in calls.iter_mut().zip(chunk) {
            c.op = nr::UPDATE_VA_MAPPING;
            c.args[0] = VIRT_BASE + t.pfn * PAGE_SIZE;
            c.args[1] = pte_of(t.mfn, flags);
            c.args[2] = UVMF_INVLPG;
        }
        let calls = &mut calls[..chunk.len()];
        // SAFETY: each entry remaps one frame this module allocated (or the builder's
        // tables being released) at its own initial-mapping VA, to the same frame.
        if unsafe { hc::multicall(calls) }.is_ok() {
            ok += calls.iter().filter(|c| c.result == 0).count();
        }
    }
    ok
}

// ---------------------------------------------------------------------------------------
// Pinning and page-table pages.

/// `MMUEXT_PIN_L<level>_TABLE` of `mfn`. Pinning changes no mapping.
pub fn pin(level: u32, mfn: u64) -> hc::Result<u64> {
    if !(1..=4).contains(&level) {
        return Err(Error::local(Errno::EINVAL));
    }
    // SAFETY: pinning only takes a type reference; it changes no mapping of ours.
    unsafe { hc::mmuext_one(MMUEXT_PIN_L1_TABLE + level - 1, mfn, 0) }
}

/// `MMUEXT_UNPIN_TABLE` of `mfn`. The hypervisor keeps every table that is still
/// referenced (by CR3 or a higher table) validated, so unpinning changes no mapping.
pub fn unpin(mfn: u64) -> hc::Result<u64> {
    // SAFETY: see above.
    unsafe { hc::mmuext_one(MMUEXT_UNPIN_TABLE, mfn, 0) }
}

/// `MMUEXT_TLB_FLUSH_LOCAL`.
pub fn flush_tlb() -> hc::Result<u64> {
    // SAFETY: a flush changes no mapping.
    unsafe { hc::mmuext_one(MMUEXT_TLB_FLUSH_LOCAL, 0, 0) }
}

/// `MMUEXT_INVLPG_LOCAL` of `va`.
pub fn invlpg(va: u64) -> hc::Result<u64> {
    // SAFETY: a flush changes no mapping.
    unsafe { hc::mmuext_one(MMUEXT_INVLPG_LOCAL, va, 0) }
}

/// A page-table page of ours, not hooked into any live tree: zeroed, made read-only in
/// our mapping, and (for `pin`) pinned as L`level`. Updates to it cannot affect us, so
/// [`mmu_update`] accepts it as a target.
pub fn alloc_scratch_table(level: u32, pin_it: bool) -> MmResult<Frame> {
    let f = alloc_frame(Pool::Mapped)?;
    protect(&f, false).map_err(|e| MmError::Hypercall("update_va_mapping (RO)", e))?;
    {
        let mut st = ready()?;
        st.remember(Table {
            pfn: f.pfn,
            mfn: f.mfn,
        });
        if st.nr_scratch < st.scratch.len() {
            let n = st.nr_scratch;
            st.scratch[n] = f.mfn;
            st.nr_scratch += 1;
        }
    }
    if pin_it {
        pin(level, f.mfn).map_err(|e| MmError::Hypercall("pin", e))?;
    }
    Ok(f)
}

// ---------------------------------------------------------------------------------------
// The map area.

/// Build the map area: an L1 and an L2 of ours (zeroed, read-only, pinned) hooked into the
/// current L3 of slot 511 at index 511 with `mmu_update`. Returns the L1's MFN.
pub fn map_area_init() -> MmResult<u64> {
    let mut st = ready()?;
    if let Some(a) = st.area {
        return Ok(a.l1.mfn);
    }
    let l4 = st.l4_mfn;
    let l3e = st
        .entry(l4, table_index(MAP_AREA_VA, 4))
        .ok_or(MmError::Walk)?;
    if l3e & pte::PRESENT == 0 {
        return Err(MmError::Walk);
    }
    let l3 = pte_mfn(l3e);
    let i3 = table_index(MAP_AREA_VA, 3);
    if st.entry(l3, i3).ok_or(MmError::Walk)? & pte::PRESENT != 0 {
        return Err(MmError::Refused);
    }
    let l1 = st.alloc_zeroed()?;
    let l2 = st.alloc_zeroed()?;
    // The L2 is still an ordinary RW page: fill it directly, as Linux does before pinning.
    let l2va = pfn_va(&st.layout, l2.pfn).ok_or(MmError::Layout)?;
    // SAFETY: `l2` was just allocated and zeroed through its RW mapping.
    unsafe { write_word(l2va, 0, pte_of(l1.mfn, pte::TABLE)) };
    st.remember(l1);
    st.remember(l2);
    drop(st);
    if remap_batch(&[l1, l2], false) != 2 {
        return Err(MmError::Hypercall(
            "update_va_mapping (tables RO)",
            Error::local(Errno::EINVAL),
        ));
    }
    pin(1, l1.mfn).map_err(|e| MmError::Hypercall("MMUEXT_PIN_L1_TABLE", e))?;
    pin(2, l2.mfn).map_err(|e| MmError::Hypercall("MMUEXT_PIN_L2_TABLE", e))?;
    let req = [MmuUpdate {
        ptr: (l3 << 12) + 8 * i3 as u64,
        val: pte_of(l2.mfn, pte::TABLE),
    }];
    // SAFETY: fills the empty L3 slot 511 of the kernel's slot-511 L3 (checked empty
    // above) with our new L2: it adds the map area and changes nothing that exists.
    let b = unsafe { hc::mmu_update(&req, u32::from(DomId::SELF.raw())) };
    b.result
        .map_err(|e| MmError::Hypercall("mmu_update (hook map area)", e))?;
    let mut st = ready()?;
    st.area = Some(MapArea {
        l1,
        l2,
        used: [0; MAP_AREA_SLOTS / 64],
    });
    Ok(l1.mfn)
}

/// The map area's L1 and L2 MFNs.
pub fn map_area_tables() -> Option<(u64, u64)> {
    ready().ok()?.area.map(|a| (a.l1.mfn, a.l2.mfn))
}

/// VA of map-area slot `slot`.
pub const fn slot_va(slot: usize) -> u64 {
    MAP_AREA_VA + (slot as u64) * PAGE_SIZE
}

/// Machine address of the L1 entry of map-area slot `slot`.
pub fn slot_maddr(slot: usize) -> Option<u64> {
    let a = ready().ok()?.area?;
    (slot < MAP_AREA_SLOTS).then(|| (a.l1.mfn << 12) + 8 * slot as u64)
}

/// The L1 entry of map-area slot `slot`, as stored.
pub fn slot_pte(slot: usize) -> Option<u64> {
    let st = ready().ok()?;
    let a = st.area?;
    if slot >= MAP_AREA_SLOTS {
        return None;
    }
    let va = pfn_va(&st.layout, a.l1.pfn)?;
    // SAFETY: the map area's L1 is in the initial mapping (read-only, always readable).
    Some(unsafe { read_word(va, slot) })
}

/// Read word `idx` of map-area slot `slot` with `mov rax, [rdi]` (48 8b 07), RAX preset to
/// all-ones: a #PF (slot not mapped) skipped by the kernel's hook (3 bytes) reads as
/// `u64::MAX`.
pub fn probe_slot_read(slot: usize, idx: usize) -> Option<(u64, FaultSite)> {
    if slot >= MAP_AREA_SLOTS || idx >= ENTRIES {
        return None;
    }
    // SAFETY: a read inside the map area, where no Rust object lives.
    Some(unsafe { probe_read(slot_va(slot) + 8 * idx as u64) })
}

/// VA of the map area's L1 in our (read-only) mapping, for writable-page-table writes.
fn area_l1_va() -> Option<u64> {
    let st = ready().ok()?;
    pfn_va(&st.layout, st.area?.l1.pfn)
}

/// Reserve `n` consecutive free slots; returns the first.
pub fn reserve_slots(n: usize) -> MmResult<usize> {
    let mut st = ready()?;
    let a = st.area.as_mut().ok_or(MmError::Uninit)?;
    let used = |a: &MapArea, s: usize| a.used[s / 64] & (1 << (s % 64)) != 0;
    let first = (0..=MAP_AREA_SLOTS.saturating_sub(n))
        .find(|&s| (s..s + n).all(|i| !used(a, i)))
        .ok_or(MmError::Slot)?;
    for s in first..first + n {
        a.used[s / 64] |= 1 << (s % 64);
    }
    Ok(first)
}

/// Release slots reserved with [`reserve_slots`] (their entries should be empty again).
pub fn release_slots(first: usize, n: usize) {
    if let Ok(mut st) = ready() {
        if let Some(a) = st.area.as_mut() {
            for s in first..(first + n).min(MAP_AREA_SLOTS) {
                a.used[s / 64] &= !(1 << (s % 64));
            }
        }
    }
}

/// A frame mapped in the map area.
#[derive(Debug)]
pub struct Mapping {
    slot: usize,
    writable: bool,
}

impl Mapping {
    /// Its VA.
    pub fn va(&self) -> u64 {
        slot_va(self.slot)
    }
    /// Its slot.
    pub fn slot(&self) -> usize {
        self.slot
    }
    /// Read word `idx` (0..512).
    pub fn read(&self, idx: usize) -> u64 {
        // SAFETY: the slot is mapped (this handle exists only after a successful map);
        // volatile access, no reference.
        unsafe { read_word(self.va(), idx) }
    }
    /// Write word `idx` (0..512); refused for a read-only mapping.
    pub fn write(&self, idx: usize, v: u64) -> MmResult<()> {
        if !self.writable {
            return Err(MmError::Refused);
        }
        // SAFETY: mapped writable by `map` (checked flag); the frame is the caller's and
        // no Rust reference points into the map area.
        unsafe { write_word(self.va(), idx, v) };
        Ok(())
    }
}

/// Map `mfn` at a free map-area slot with `update_va_mapping(UVMF_INVLPG)`.
pub fn map(mfn: u64, writable: bool) -> MmResult<Mapping> {
    let slot = reserve_slots(1)?;
    let flags = if writable {
        pte::KERNEL_RW
    } else {
        pte::KERNEL_RO
    };
    // SAFETY: the slot was free: nothing of ours lives at its VA.
    match unsafe { hc::update_va_mapping(slot_va(slot), pte_of(mfn, flags), UVMF_INVLPG) } {
        Ok(_) => Ok(Mapping { slot, writable }),
        Err(e) => {
            release_slots(slot, 1);
            Err(MmError::Hypercall("update_va_mapping", e))
        }
    }
}

/// Unmap a [`Mapping`] (`update_va_mapping(va, 0, UVMF_INVLPG)`).
pub fn unmap(m: Mapping) -> MmResult<()> {
    // SAFETY: the handle is consumed: nothing refers to the slot any more.
    unsafe { hc::update_va_mapping(m.va(), 0, UVMF_INVLPG) }
        .map_err(|e| MmError::Hypercall("update_va_mapping (unmap)", e))?;
    release_slots(m.slot, 1);
    Ok(())
}

/// `update_va_mapping` of a map-area slot with any value and flags (the slot must be
/// reserved by the caller and not held by a [`Mapping`]).
pub fn update_slot(slot: usize, val: u64, flags: u64) -> hc::Result<u64> {
    if slot >= MAP_AREA_SLOTS || flags & !0x7 != 0 {
        return Err(Error::local(Errno::EINVAL));
    }
    // SAFETY: only the map area's slot changes; no Rust reference lives there.
    unsafe { hc::update_va_mapping(slot_va(slot), val, flags) }
}

/// `mmu_update` restricted to targets that cannot break the kernel: normal and
/// preserve-A/D updates of entries in the map area's L1 (any slot), of the map area's L2
/// except its slot 0 (which holds the area's L1), or of a scratch table
/// ([`alloc_scratch_table`]); machine-to-phys updates of any frame. A request outside that
/// is refused locally with -EPERM before anything is issued.
pub fn mmu_update(reqs: &[MmuUpdate]) -> Batch {
    let allowed = {
        let Ok(st) = ready() else {
            return Batch {
                result: Err(Error::local(Errno::EPERM)),
                done: 0,
            };
        };
        reqs.iter().all(|r| match r.ptr & 3 {
            MMU_MACHPHYS_UPDATE => true,
            MMU_NORMAL_PT_UPDATE | MMU_PT_UPDATE_PRESERVE_AD => {
                let frame = r.ptr >> 12;
                let in_area = st.area.is_some_and(|a| {
                    frame == a.l1.mfn || (frame == a.l2.mfn && (r.ptr & 0xfff) >= 8)
                });
                in_area || st.scratch[..st.nr_scratch].contains(&frame)
            }
            _ => false,
        })
    };
    if !allowed {
        return Batch {
            result: Err(Error::local(Errno::EPERM)),
            done: 0,
        };
    }
    // SAFETY: every normal update targets the map area or a scratch table (checked).
    unsafe { hc::mmu_update(reqs, u32::from(DomId::SELF.raw())) }
}

/// `mmuext_op` restricted to commands that change no mapping of ours: pins, unpins,
/// flushes. Anything else is refused locally with -EPERM.
pub fn mmuext(ops: &[MmuextOp]) -> Batch {
    use xen_abi::xen as x;
    let ok = ops.iter().all(|o| {
        matches!(
            o.cmd,
            x::MMUEXT_PIN_L1_TABLE
                | x::MMUEXT_PIN_L2_TABLE
                | x::MMUEXT_PIN_L3_TABLE
                | x::MMUEXT_PIN_L4_TABLE
                | x::MMUEXT_UNPIN_TABLE
                | x::MMUEXT_TLB_FLUSH_LOCAL
                | x::MMUEXT_TLB_FLUSH_ALL
                | x::MMUEXT_INVLPG_LOCAL
                | x::MMUEXT_INVLPG_ALL
        )
    });
    if !ok {
        return Batch {
            result: Err(Error::local(Errno::EPERM)),
            done: 0,
        };
    }
    // SAFETY: pins, unpins and flushes change no mapping.
    unsafe { hc::mmuext_op(ops, u32::from(DomId::SELF.raw())) }
}

/// `MMUEXT_NEW_BASEPTR` to a frame that is mapped writable in our own mapping (`f`), which
/// Xen must refuse (a frame cannot be writable and an L4). If a hypervisor accepted it the
/// kernel would lose its mappings: this exists to test exactly that refusal.
pub fn probe_new_baseptr_writable(f: &Frame) -> hc::Result<u64> {
    let va = f.va().ok_or(Error::local(Errno::EINVAL))?;
    let e = l1e_of(va).ok_or(Error::local(Errno::EINVAL))?;
    if e & pte::RW == 0 || pte_mfn(e) != f.mfn {
        return Err(Error::local(Errno::EINVAL));
    }
    // SAFETY: see the function's docs: Xen's type rules refuse this.
    unsafe { hc::mmuext_one(MMUEXT_NEW_BASEPTR, f.mfn, 0) }
}

/// `update_descriptor` into a frame we own: a mapped-pool [`Frame`] (an ordinary page of
/// ours or one given to `set_gdt`), entry `idx` (0..512).
pub fn update_descriptor(f: &Frame, idx: usize, desc: u64) -> hc::Result<u64> {
    update_descriptor_raw(f, idx as u64 * 8, desc)
}

/// [`update_descriptor`] at any byte offset below 4096 (a misaligned one must be refused).
pub fn update_descriptor_raw(f: &Frame, offset: u64, desc: u64) -> hc::Result<u64> {
    if offset >= PAGE_SIZE {
        return Err(Error::local(Errno::EINVAL));
    }
    // SAFETY: the 8 bytes are inside a frame the caller owns (token), which holds no Rust
    // object.
    unsafe { hc::update_descriptor((f.mfn << 12) + offset, desc) }
}

// ---------------------------------------------------------------------------------------
// Writable page tables: direct writes to the map area's (read-only) L1, in the forms
// Linux uses (ABI.md §3.3).

/// An instruction form for [`ptwr_write`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PtwrForm {
    /// `mov [rdi], rsi` (48 89 37).
    MovR64,
    /// `mov qword [rdi], 0` (48 c7 07 00000000): `mov $imm32 → m64` with 0.
    MovImm32Zero,
    /// `xchg [rdi], rsi` (48 87 37); the old entry comes back.
    Xchg,
    /// `lock and byte [rdi], 0xfd` (f0 80 27 fd): clear `_PAGE_RW` (`ptep_set_wrprotect`).
    LockAndbClearRw,
    /// `lock btr qword [rdi], 5` (f0 48 0f ba 37 05): clear `_PAGE_ACCESSED`
    /// (`ptep_test_and_clear_young`).
    LockBtrImmAccessed,
    /// `lock btr [rdi], rsi` (f0 48 0f b3 37) with RSI = the bit number.
    LockBtrReg,
    /// `lock cmpxchg [rdi], rsi` (f0 48 0f b1 37) with RAX = the expected old entry.
    LockCmpxchg,
}

impl PtwrForm {
    /// Instruction length (what a #PF handler skips).
    pub const fn insn_len(self) -> u64 {
        match self {
            PtwrForm::MovR64 | PtwrForm::Xchg => 3,
            PtwrForm::MovImm32Zero => 7,
            PtwrForm::LockAndbClearRw => 4,
            PtwrForm::LockBtrImmAccessed => 6,
            PtwrForm::LockBtrReg | PtwrForm::LockCmpxchg => 5,
        }
    }
}

/// What a [`ptwr_write`] left in the registers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PtwrOutcome {
    /// The instruction.
    pub site: FaultSite,
    /// RSI after `xchg` (the old entry), else the value passed.
    pub rsi: u64,
    /// RAX after `cmpxchg` (the old entry on failure), else the expected value passed.
    pub rax: u64,
    /// ZF after `cmpxchg` (true = exchanged).
    pub zf: bool,
    /// Address written (the entry's VA in our read-only mapping of the L1): the CR2 of a
    /// bounced #PF.
    pub addr: u64,
}

/// Write map-area L1 entry `slot` directly, through the read-only mapping of the L1, with
/// instruction `form`: the hypervisor must emulate it when writable page tables are on
/// (`vm_assist`), else (or for an entry it refuses) a #PF (error code 3) reaches the
/// kernel's handler, which must skip [`PtwrForm::insn_len`] bytes. `value` is RSI (the new
/// entry, or the bit number for [`PtwrForm::LockBtrReg`]); `expected` is RAX for
/// `cmpxchg`.
pub fn ptwr_write(form: PtwrForm, slot: usize, value: u64, expected: u64) -> MmResult<PtwrOutcome> {
    if slot >= MAP_AREA_SLOTS {
        return Err(MmError::Slot);
    }
    let addr = area_l1_va().ok_or(MmError::Uninit)? + 8 * slot as u64;
    let site: u64;
    let rsi: u64;
    let rax: u64;
    let zf: u8;
    macro_rules! emit {
        ($bytes:literal) => {
            // SAFETY: a store to an entry of the map area's L1 through its read-only
            // mapping: the hypervisor validates and emulates it (it can only change what a
            // map-area slot maps, where no Rust object lives) or bounces a #PF that the
            // kernel's hook skips.
            unsafe {
                core::arch::asm!(
                    "lea {s}, [rip + 2f]",
                    concat!("2: .byte ", $bytes),
                    "sete {z}",
                    s = out(reg) site,
                    z = out(reg_byte) zf,
                    in("rdi") addr,
                    inlateout("rsi") value => rsi,
                    inlateout("rax") expected => rax,
                    options(nostack),
                );
            }
        };
    }
    match form {
        PtwrForm::MovR64 => emit!("0x48, 0x89, 0x37"),
        PtwrForm::MovImm32Zero => emit!("0x48, 0xc7, 0x07, 0, 0, 0, 0"),
        PtwrForm::Xchg => emit!("0x48, 0x87, 0x37"),
        PtwrForm::LockAndbClearRw => emit!("0xf0, 0x80, 0x27, 0xfd"),
        PtwrForm::LockBtrImmAccessed => emit!("0xf0, 0x48, 0x0f, 0xba, 0x37, 0x05"),
        PtwrForm::LockBtrReg => emit!("0xf0, 0x48, 0x0f, 0xb3, 0x37"),
        PtwrForm::LockCmpxchg => emit!("0xf0, 0x48, 0x0f, 0xb1, 0x37"),
    }
    Ok(PtwrOutcome {
        site: FaultSite {
            rip: site,
            len: form.insn_len(),
        },
        rsi,
        rax,
        zf: zf != 0,
        addr,
    })
}

// ---------------------------------------------------------------------------------------
// Address spaces: clone the current tree into fresh pinned tables and switch to it.

/// A complete copy of the kernel's address space in page tables of ours, pinned as an L4.
#[derive(Clone, Copy, Debug)]
pub struct AddressSpace {
    l4: u64,
    tables: [Table; MAX_CLONE_TABLES],
    n: usize,
}

impl AddressSpace {
    /// MFN of its L4.
    pub fn l4_mfn(&self) -> u64 {
        self.l4
    }
    /// Page-table frames it consists of.
    pub fn nr_tables(&self) -> usize {
        self.n
    }
}

/// Tables a copy of the tree below `mfn` (level `level`) needs; the map area's L2 is
/// shared, not copied.
fn count_tables(st: &State, level: u32, mfn: u64) -> Option<usize> {
    let mut n = 1;
    if level == 1 {
        return Some(n);
    }
    for i in 0..ENTRIES {
        if level == 4 && is_xen_l4_slot(i) {
            continue;
        }
        let e = st.entry(mfn, i)?;
        if e & pte::PRESENT == 0 || (level < 4 && e & pte::PSE != 0) {
            continue;
        }
        if st.is_shared_l2(pte_mfn(e)) {
            continue;
        }
        n += count_tables(st, level - 1, pte_mfn(e))?;
    }
    Some(n)
}

/// Copy the table `src` (level `level`) into the next frame of `new`, recursively.
fn copy_table(st: &State, level: u32, src: u64, new: &[Table], next: &mut usize) -> Option<u64> {
    let dst = *new.get(*next)?;
    *next += 1;
    let dst_va = pfn_va(&st.layout, dst.pfn)?;
    for i in 0..ENTRIES {
        let e = st.entry(src, i)?;
        let v = if level == 4 && is_xen_l4_slot(i) {
            // The hypervisor fills its own slots when it validates the L4.
            0
        } else if e & pte::PRESENT == 0 {
            e
        } else if level == 1 {
            let v = guest_view_l1e(e);
            // No page-table frame may stay writable: the new tables themselves.
            if new.iter().any(|t| t.mfn == pte_mfn(v)) {
                v & !pte::RW
            } else {
                v
            }
        } else if (level < 4 && e & pte::PSE != 0) || st.is_shared_l2(pte_mfn(e)) {
            e
        } else {
            let child = copy_table(st, level - 1, pte_mfn(e), new, next)?;
            pte_of(child, e & !pte::ADDR_MASK)
        };
        // SAFETY: `dst` is a frame we just allocated from the mapped pool, still RW in our
        // mapping and referenced by nothing else.
        unsafe { write_word(dst_va, i, v) };
    }
    Some(dst.mfn)
}

/// Build a copy of the current address space in fresh tables: count the tables, take and
/// zero that many frames, copy every level (the new tables mapped read-only in the copy),
/// make them read-only in the current mapping, and pin the new L4 (which validates it).
pub fn clone_current() -> MmResult<AddressSpace> {
    let mut st = ready()?;
    let l4 = st.l4_mfn;
    let n = count_tables(&st, 4, l4).ok_or(MmError::Walk)?;
    if n > MAX_CLONE_TABLES {
        return Err(MmError::NoFrames);
    }
    let mut tables = [Table::default(); MAX_CLONE_TABLES];
    for i in 0..n {
        match st.alloc_zeroed() {
            Ok(t) => tables[i] = t,
            Err(e) => {
                for t in &tables[..i] {
                    st.alloc.free(t.pfn);
                }
                return Err(e);
            }
        }
    }
    let mut next = 0;
    let new_l4 = copy_table(&st, 4, l4, &tables[..n], &mut next).ok_or(MmError::Walk)?;
    for t in &tables[..n] {
        st.remember(*t);
    }
    drop(st);
    let undo = |tables: &[Table]| {
        remap_batch(tables, true);
        if let Ok(mut st) = ready() {
            for t in tables {
                st.forget(t.mfn);
                st.alloc.free(t.pfn);
            }
        }
    };
    if remap_batch(&tables[..n], false) != n {
        undo(&tables[..n]);
        return Err(MmError::Hypercall(
            "update_va_mapping (new tables RO)",
            Error::local(Errno::EINVAL),
        ));
    }
    if let Err(e) = pin(4, new_l4) {
        undo(&tables[..n]);
        return Err(MmError::Hypercall("MMUEXT_PIN_L4_TABLE", e));
    }
    Ok(AddressSpace {
        l4: new_l4,
        tables,
        n,
    })
}

/// `MMUEXT_NEW_BASEPTR` to `space`'s L4.
pub fn switch_to(space: &AddressSpace) -> MmResult<()> {
    switch_l4(space.l4)
}

/// Switch back to the builder's L4 (while it is still pinned and not released).
pub fn switch_to_boot() -> MmResult<()> {
    let l4 = {
        let st = ready()?;
        if st.boot_released {
            return Err(MmError::Refused);
        }
        st.boot_l4_mfn
    };
    switch_l4(l4)
}

fn switch_l4(l4: u64) -> MmResult<()> {
    // SAFETY: `l4` is the builder's L4 or a clone of the address space (same mappings of
    // everything the kernel uses, map area shared), both pinned.
    unsafe { hc::mmuext_one(MMUEXT_NEW_BASEPTR, l4, 0) }
        .map_err(|e| MmError::Hypercall("MMUEXT_NEW_BASEPTR", e))?;
    ready()?.l4_mfn = l4;
    Ok(())
}

/// Undo [`clone_current`] for a space we do not run on: unpin it and give its frames back
/// (RW again).
pub fn destroy(space: AddressSpace) -> MmResult<()> {
    if current_l4() == Some(space.l4) {
        return Err(MmError::Refused);
    }
    unpin(space.l4).map_err(|e| MmError::Hypercall("MMUEXT_UNPIN_TABLE", e))?;
    let tables = &space.tables[..space.n];
    let ok = remap_batch(tables, true);
    let mut st = ready()?;
    for t in tables {
        st.forget(t.mfn);
    }
    if ok == tables.len() {
        for t in tables {
            st.alloc.free(t.pfn);
        }
        Ok(())
    } else {
        Err(MmError::Hypercall(
            "update_va_mapping (tables RW)",
            Error::local(Errno::EBUSY),
        ))
    }
}

/// What [`release_boot_tables`] did.
#[derive(Clone, Copy, Debug)]
pub struct Released {
    /// Result of unpinning the builder's L4.
    pub unpin: hc::Result<u64>,
    /// Builder table frames made RW again and given to the allocator.
    pub freed: usize,
    /// Builder table frames.
    pub total: usize,
}

/// After switching away from the builder's tables: unpin its L4 (the builder pinned it, as
/// Xen's do) and make every builder table frame RW again, as Linux does with its initial
/// tables (`xen_pagetable_init`); those that become RW go to the allocator, along with the
/// boot stack page. Must not run while the builder's L4 is the current one.
pub fn release_boot_tables() -> MmResult<Released> {
    let (boot, layout) = {
        let st = ready()?;
        if st.l4_mfn == st.boot_l4_mfn || st.boot_released {
            return Err(MmError::Refused);
        }
        (st.boot_l4_mfn, st.layout)
    };
    let unpin_r = unpin(boot);
    let mut freed = 0;
    let total = layout.nr_pt_frames as usize;
    for chunk_start in (0..layout.nr_pt_frames).step_by(32) {
        let mut tables = [Table::default(); 32];
        let mut n = 0;
        for pfn in layout.pt_pfn + chunk_start
            ..(layout.pt_pfn + layout.nr_pt_frames).min(layout.pt_pfn + chunk_start + 32)
        {
            if let Some(mfn) = pfn_to_mfn(pfn) {
                tables[n] = Table { pfn, mfn };
                n += 1;
            }
        }
        // One multicall per chunk; each frame that turned RW is ours again.
        let flags = pte::KERNEL_RW;
        let mut calls = [MulticallEntry::default(); 32];
        for (c, t) in calls.iter_mut().zip(&tables[..n]) {
            c.op = nr::UPDATE_VA_MAPPING;
            c.args[0] = VIRT_BASE + t.pfn * PAGE_SIZE;
            c.args[1] = pte_of(t.mfn, flags);
            c.args[2] = UVMF_NONE;
        }
        // SAFETY: remaps the builder's table frames at their own initial-mapping VAs, RW,
        // to the same frames; we no longer run on them and nothing reads them.
        if unsafe { hc::multicall(&mut calls[..n]) }.is_ok() {
            let mut st = ready()?;
            for (c, t) in calls[..n].iter().zip(&tables[..n]) {
                if c.result == 0 {
                    st.alloc.free(t.pfn);
                    freed += 1;
                }
            }
        }
    }
    let _ = flush_tlb();
    let mut st = ready()?;
    st.boot_released = true;
    // The boot stack page after the tables: our kernels run on their own stack.
    let stack = layout.pt_pfn + layout.nr_pt_frames;
    st.alloc.free(stack);
    Ok(Released {
        unpin: unpin_r,
        freed,
        total,
    })
}

// ---------------------------------------------------------------------------------------
// The grow area: kernel VA backed by the domain's own free frames on demand. A kernel's
// heap grows here (dom0's toolstack unpacks a domU kernel in its own RAM, as Xen's libxc
// does in a Linux dom0's memory), and gives the frames back when it shrinks.

/// Base of the grow area: L4 slot 511, L3 slot 509 (`0xffffffff40000000`), below the
/// kernel's initial mapping at `VIRT_BASE` (L3 slot 510).
pub const GROW_AREA_VA: u64 = 0xffff_ffff_4000_0000;
/// Pages in the grow area: one L2 of 512 L1s, 1 GiB.
pub const GROW_AREA_PAGES: usize = ENTRIES * ENTRIES;
/// `mmu_update` requests issued per hypercall while (un)mapping grow-area pages.
const GROW_BATCH: usize = 64;

/// The grow area's tables. Its L1s are not in the initial mapping (most come from the
/// unmapped pool), so they are read through a read-only map-area slot when needed.
#[derive(Clone, Copy)]
struct GrowArea {
    /// MFN of its L2 (hooked into the kernel's slot-511 L3).
    l2: u64,
    /// MFN of the L1 for each 2 MiB, 0 until it is first needed.
    l1: [u64; ENTRIES],
}

/// Zero machine frame `mfn` (owned by the caller, mapped nowhere) through a map-area slot.
fn zero_through_slot(mfn: u64) -> MmResult<()> {
    let m = map(mfn, true)?;
    // SAFETY: the slot maps `mfn` RW (just mapped); the frame is the caller's and no Rust
    // reference points into the map area.
    unsafe { zero_page(m.va()) };
    unmap(m)
}

/// Takes a free frame for the grow area unless that would leave `keep_free` or fewer:
/// from the unmapped pool first (the mapped pool is what page tables of ours and
/// initial-mapping users need), else from the mapped pool.
fn grow_take_frame(keep_free: u64) -> MmResult<Table> {
    let mut st = ready()?;
    if st.alloc.nr_free() <= keep_free {
        return Err(MmError::NoFrames);
    }
    let pfn = st
        .alloc
        .alloc(Pool::Unmapped)
        .or_else(|| st.alloc.alloc(Pool::Mapped))
        .ok_or(MmError::NoFrames)?;
    match st.p2m(pfn) {
        Some(mfn) => Ok(Table { pfn, mfn }),
        None => {
            st.alloc.free(pfn);
            Err(MmError::Layout)
        }
    }
}

/// Gives back a page-table frame of the grow area that is no longer referenced: unpinned,
/// made RW again in the initial mapping if it lives there, then freed.
fn grow_drop_table(t: Table) {
    let _ = unpin(t.mfn);
    let mapped = ready().is_ok_and(|st| st.alloc.pool_of(t.pfn) == Pool::Mapped);
    if mapped && remap_batch(&[t], true) != 1 {
        return; // Still read-only somewhere: keep it out of the allocator.
    }
    if let Ok(mut st) = ready() {
        st.alloc.free(t.pfn);
    }
}

/// A fresh page-table frame for the grow area: zeroed, never mapped writable (an
/// unmapped-pool frame zeroed through a map-area slot, or a mapped-pool frame made
/// read-only), pinned as L`level`.
fn grow_table(level: u32, keep_free: u64) -> MmResult<Table> {
    let t = grow_take_frame(keep_free)?;
    let mapped = ready()?.alloc.pool_of(t.pfn) == Pool::Mapped;
    let prepared = if mapped {
        let va = pfn_va(&ready()?.layout, t.pfn).ok_or(MmError::Layout)?;
        // SAFETY: a mapped-pool frame just taken from the allocator: mapped RW at `va` by
        // the builder, used by nothing else.
        unsafe { zero_page(va) };
        if remap_batch(&[t], false) == 1 {
            Ok(())
        } else {
            Err(MmError::Hypercall(
                "update_va_mapping (table RO)",
                Error::local(Errno::EINVAL),
            ))
        }
    } else {
        zero_through_slot(t.mfn)
    };
    if let Err(e) = prepared.and_then(|()| {
        pin(level, t.mfn)
            .map(|_| ())
            .map_err(|e| MmError::Hypercall("pin", e))
    }) {
        grow_drop_table(t);
        return Err(e);
    }
    Ok(t)
}

/// Hook the grow area into the address space: a fresh L2 in the empty slot 509 of the
/// kernel's slot-511 L3. Needs the map area ([`map_area_init`]).
pub fn grow_area_init() -> MmResult<()> {
    let (l3, i3) = {
        let st = ready()?;
        if st.grow.is_some() {
            return Ok(());
        }
        if st.area.is_none() {
            return Err(MmError::Uninit);
        }
        let l3e = st
            .entry(st.l4_mfn, table_index(GROW_AREA_VA, 4))
            .ok_or(MmError::Walk)?;
        if l3e & pte::PRESENT == 0 {
            return Err(MmError::Walk);
        }
        let l3 = pte_mfn(l3e);
        let i3 = table_index(GROW_AREA_VA, 3);
        if st.entry(l3, i3).ok_or(MmError::Walk)? & pte::PRESENT != 0 {
            return Err(MmError::Refused);
        }
        (l3, i3)
    };
    let l2 = grow_table(2, 0)?;
    let req = [MmuUpdate {
        ptr: (l3 << 12) + 8 * i3 as u64,
        val: pte_of(l2.mfn, pte::TABLE),
    }];
    // SAFETY: fills the empty L3 slot 509 of the kernel's slot-511 L3 (checked empty
    // above) with our new, empty L2: it adds the grow area and changes nothing that exists.
    let b = unsafe { hc::mmu_update(&req, u32::from(DomId::SELF.raw())) };
    if let Err(e) = b.result {
        grow_drop_table(l2);
        return Err(MmError::Hypercall("mmu_update (hook grow area)", e));
    }
    ready()?.grow = Some(GrowArea {
        l2: l2.mfn,
        l1: [0; ENTRIES],
    });
    Ok(())
}

/// VA of page `page` of the grow area.
pub const fn grow_area_va(page: usize) -> u64 {
    GROW_AREA_VA + (page as u64) * PAGE_SIZE
}

/// The L1 for grow-area L2 slot `idx`, created (empty, pinned) and hooked in if needed.
fn grow_l1(idx: usize, keep_free: u64) -> MmResult<u64> {
    let l2 = {
        let st = ready()?;
        let g = st.grow.as_ref().ok_or(MmError::Uninit)?;
        match g.l1.get(idx) {
            Some(0) => g.l2,
            Some(&l1) => return Ok(l1),
            None => return Err(MmError::Refused),
        }
    };
    let l1 = grow_table(1, keep_free)?;
    let req = [MmuUpdate {
        ptr: (l2 << 12) + 8 * idx as u64,
        val: pte_of(l1.mfn, pte::TABLE),
    }];
    // SAFETY: fills an empty slot of the grow area's L2 (its L1 is recorded as absent) with
    // a new, empty L1: it only adds unmapped VA to the grow area.
    let b = unsafe { hc::mmu_update(&req, u32::from(DomId::SELF.raw())) };
    if let Err(e) = b.result {
        grow_drop_table(l1);
        return Err(MmError::Hypercall("mmu_update (grow-area L1)", e));
    }
    let mut st = ready()?;
    let g = st.grow.as_mut().ok_or(MmError::Uninit)?;
    g.l1[idx] = l1.mfn;
    Ok(l1.mfn)
}

/// Calls `f(j, entry)` for the entries `first + j` (`j < n`) of L1 `l1`, read through a
/// read-only map-area slot.
fn for_l1_entries(l1: u64, first: usize, n: usize, mut f: impl FnMut(usize, u64)) -> MmResult<()> {
    let m = map(l1, false)?;
    for j in 0..n.min(ENTRIES.saturating_sub(first)) {
        f(j, m.read(first + j));
    }
    unmap(m)
}

/// Map `n` fresh frames of ours read-write at grow-area pages `first..first + n`, which
/// must be unmapped, keeping more than `keep_free` frames free for everything else. On
/// failure nothing stays mapped and every frame is back in the allocator. The frames are
/// not zeroed.
pub fn grow_area_map(first: usize, n: usize, keep_free: u64) -> MmResult<()> {
    if first.checked_add(n).is_none_or(|end| end > GROW_AREA_PAGES) {
        return Err(MmError::Refused);
    }
    let mut done = 0;
    while done < n {
        let page = first + done;
        let (idx, i0) = (page / ENTRIES, page % ENTRIES);
        let cnt = (ENTRIES - i0).min(n - done);
        let r = grow_l1(idx, keep_free).and_then(|l1| {
            let mut present = 0;
            for_l1_entries(l1, i0, cnt, |_, e| {
                present += usize::from(e & pte::PRESENT != 0)
            })?;
            if present != 0 {
                return Err(MmError::Refused);
            }
            Ok(l1)
        });
        let r = r
            .map_err(|e| (0, e))
            .and_then(|l1| grow_fill_l1(l1, i0, cnt, keep_free));
        match r {
            Ok(()) => done += cnt,
            Err((applied, e)) => {
                let _ = grow_area_unmap(first, done + applied);
                return Err(e);
            }
        }
    }
    Ok(())
}

/// Map fresh frames at entries `i0..i0 + cnt` of the grow-area L1 `l1`. On failure,
/// returns how many entries were set (from `i0` on) so that the caller can undo them.
fn grow_fill_l1(l1: u64, i0: usize, cnt: usize, keep_free: u64) -> Result<(), (usize, MmError)> {
    let mut set = 0;
    while set < cnt {
        let k = (cnt - set).min(GROW_BATCH);
        let mut reqs = [MmuUpdate { ptr: 0, val: 0 }; GROW_BATCH];
        let mut frames = [Table::default(); GROW_BATCH];
        for j in 0..k {
            match grow_take_frame(keep_free) {
                Ok(t) => frames[j] = t,
                Err(e) => {
                    give_back(&frames[..j]);
                    return Err((set, e));
                }
            }
            reqs[j] = MmuUpdate {
                ptr: (l1 << 12) + 8 * (i0 + set + j) as u64,
                val: pte_of(frames[j].mfn, pte::KERNEL_RW),
            };
        }
        // SAFETY: sets entries of a grow-area L1 that were checked not present (so nothing
        // of ours lives at their VAs) to frames just taken from our allocator, which no
        // other mapping of ours uses for anything else.
        let b = unsafe { hc::mmu_update(&reqs[..k], u32::from(DomId::SELF.raw())) };
        let applied = (b.done as usize).min(k);
        if let Err(e) = b.result {
            give_back(&frames[applied..k]);
            return Err((
                set + applied,
                MmError::Hypercall("mmu_update (grow area)", e),
            ));
        }
        set += k;
    }
    Ok(())
}

/// Return ordinary (data) frames to the allocator.
fn give_back(frames: &[Table]) {
    if let Ok(mut st) = ready() {
        for t in frames {
            st.alloc.free(t.pfn);
        }
    }
}

/// Our PFN of `mfn`: the M2P entry, checked against our p2m list (as Linux's
/// `mfn_to_pfn` does), else a search of the p2m list.
fn own_pfn_of(mfn: u64) -> Option<u64> {
    if let Some((pfn, _)) = probe_m2p_read(mfn) {
        if pfn_to_mfn(pfn) == Some(mfn) {
            return Some(pfn);
        }
    }
    mfn_to_pfn_p2m(mfn)
}

/// Unmap grow-area pages `first..first + n` (those mapped; holes are skipped) and give
/// their frames back to the allocator. Returns how many frames were freed. The L1s stay
/// (one frame per 2 MiB ever used).
pub fn grow_area_unmap(first: usize, n: usize) -> MmResult<usize> {
    if first.checked_add(n).is_none_or(|end| end > GROW_AREA_PAGES) {
        return Err(MmError::Refused);
    }
    let mut freed = 0;
    let mut done = 0;
    let mut result = Ok(());
    while done < n {
        let page = first + done;
        let (idx, i0) = (page / ENTRIES, page % ENTRIES);
        let cnt = (ENTRIES - i0).min(n - done);
        done += cnt;
        let l1 = match ready()?.grow.as_ref().ok_or(MmError::Uninit)?.l1[idx] {
            0 => continue,
            l1 => l1,
        };
        // MFN of each present entry (0 = hole); bit 0 marks an entry cleared below.
        let mut mfns = [0u64; ENTRIES];
        let mut present = 0;
        for_l1_entries(l1, i0, cnt, |j, e| {
            if e & pte::PRESENT != 0 {
                mfns[j] = pte_mfn(e) << 1;
                present += 1;
            }
        })?;
        if present == 0 {
            continue;
        }
        for start in (0..cnt).step_by(GROW_BATCH) {
            let mut reqs = [MmuUpdate { ptr: 0, val: 0 }; GROW_BATCH];
            let mut idxs = [0usize; GROW_BATCH];
            let mut k = 0;
            for j in (start..cnt.min(start + GROW_BATCH)).filter(|&j| mfns[j] != 0) {
                reqs[k] = MmuUpdate {
                    ptr: (l1 << 12) + 8 * (i0 + j) as u64,
                    val: 0,
                };
                idxs[k] = j;
                k += 1;
            }
            // SAFETY: clears grow-area entries; the caller no longer uses those pages.
            let b = unsafe { hc::mmu_update(&reqs[..k], u32::from(DomId::SELF.raw())) };
            for &j in &idxs[..(b.done as usize).min(k)] {
                mfns[j] |= 1;
            }
            if let Err(e) = b.result {
                result = Err(MmError::Hypercall("mmu_update (grow area unmap)", e));
            }
        }
        // No stale TLB entry may reach a frame that is about to be reused.
        let _ = flush_tlb();
        for m in mfns[..cnt].iter().filter(|&&m| m & 1 != 0) {
            // A frame whose PFN cannot be found stays out of the allocator (leaked, not
            // double-used).
            if let Some(pfn) = own_pfn_of(m >> 1) {
                if let Ok(mut st) = ready() {
                    st.alloc.free(pfn);
                    freed += 1;
                }
            }
        }
    }
    result.map(|()| freed)
}

/// Page-table frames the grow area uses (its L2 and L1s), 0 before [`grow_area_init`].
pub fn grow_area_tables() -> usize {
    ready().map_or(0, |st| {
        st.grow
            .as_ref()
            .map_or(0, |g| 1 + g.l1.iter().filter(|&&m| m != 0).count())
    })
}
