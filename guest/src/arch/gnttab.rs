//! Grant tables from the kernel side (Xen `common/grant_table.c`, public
//! `grant_table.h`; ABI.md): `grant_table_op` (hypercall 20) with `setup_table`,
//! `query_size`, `set_version`, `get_version`, `map_grant_ref`, `unmap_grant_ref` and
//! `copy`, v1 entry encoding, and a probe that writes through a map-area slot expecting
//! a #PF (a read-only grant mapping).
//!
//! Safety model (as [`super::mmu`]): every address-space change these wrappers let a
//! caller ask for targets the map area, where no Rust object lives — a host mapping's
//! `host_addr` must be a map-area slot's VA (or, with `GNTMAP_contains_pte`, the machine
//! address of a map-area slot's L1 entry). A copy's frame destination (`gmfn`) must be
//! one of our frames past the boot region (allocator territory, never the kernel image,
//! its stacks, the p2m list or start_info). A grant-reference destination writes the
//! frame its granter chose to grant: the granter's kernel must only grant frames it is
//! willing to have written.

use xen_abi::grant_table::{
    GnttabCopy, GnttabGetVersion, GnttabMapGrantRef, GnttabQuerySize, GnttabSetVersion,
    GnttabSetupTable, GnttabUnmapGrantRef, GNTCOPY_DEST_GREF, GNTMAP_CONTAINS_PTE, GNTMAP_HOST_MAP,
    GNTTABOP_COPY, GNTTABOP_GET_VERSION, GNTTABOP_MAP_GRANT_REF, GNTTABOP_QUERY_SIZE,
    GNTTABOP_SETUP_TABLE, GNTTABOP_SET_VERSION, GNTTABOP_UNMAP_GRANT_REF,
};
use xen_abi::hypercall as nr;
use xen_abi::Errno;
use zerocopy::FromZeros;

use super::cpu::FaultSite;
use super::hypercall::{call, check, Error, Result};
use super::mmu::{self, MAP_AREA_SLOTS, MAP_AREA_VA};
use crate::mm::PAGE_SIZE;

/// Most elements one wrapper call passes (Xen preempts long batches; we never need it).
pub const MAX_BATCH: usize = 512;

/// A v1 grant entry (`grant_entry_v1`: flags u16, domid u16, frame u32) as the one
/// little-endian word it occupies in the table frame.
pub const fn entry_v1(flags: u16, domid: u16, frame: u32) -> u64 {
    (flags as u64) | ((domid as u64) << 16) | ((frame as u64) << 32)
}

/// The `flags` half-word of a v1 entry word.
pub const fn entry_flags(word: u64) -> u16 {
    word as u16
}

/// `grant_table_op(cmd, arg, count)`.
///
/// # Safety
/// `arg` must point to `count` live elements of the type `cmd` transfers, and whatever
/// the elements ask for must respect the module's safety model.
unsafe fn op(cmd: u32, arg: u64, count: u32) -> Result<u64> {
    // SAFETY: per the caller.
    check(unsafe {
        call(
            nr::GRANT_TABLE_OP,
            [u64::from(cmd), arg, u64::from(count), 0, 0],
        )
    })
}

/// `grant_table_op(cmd, &mut one, 1)` for the sub-ops that change no memory of ours but
/// the argument (and `setup_table`'s frame list, passed separately).
fn op_one<T: zerocopy::IntoBytes + zerocopy::FromBytes>(cmd: u32, arg: &mut T) -> Result<u64> {
    // SAFETY: `arg` is one live, exclusively borrowed `T`, the type `cmd` reads and writes
    // (grant_table.h); these sub-ops change no mapping.
    unsafe { op(cmd, arg as *mut T as u64, 1) }
}

/// `GNTTABOP_setup_table` for `dom` (`DOMID_SELF`, or any domain for the control
/// domain): grows the table to `frames.len()` frames and writes their frame numbers
/// (MFNs for PV) into `frames`. Returns the operation's `GNTST_*` status (the hypercall's
/// own result is the `Err`).
pub fn setup_table(dom: u16, frames: &mut [u64]) -> Result<i16> {
    let mut s = GnttabSetupTable::new_zeroed();
    s.dom = dom;
    s.nr_frames = u32::try_from(frames.len()).map_err(|_| Error::local(Errno::EINVAL))?;
    s.frame_list = frames.as_mut_ptr() as u64;
    // SAFETY: the hypervisor reads and writes `s` and writes at most `nr_frames` u64s to
    // `frames`, a live exclusive slice of that length.
    unsafe {
        op(
            GNTTABOP_SETUP_TABLE,
            &mut s as *mut GnttabSetupTable as u64,
            1,
        )
    }?;
    Ok(s.status)
}

/// `GNTTABOP_query_size` for `dom`: the filled argument (`nr_frames`, `max_nr_frames`,
/// `status`).
pub fn query_size(dom: u16) -> Result<GnttabQuerySize> {
    let mut q = GnttabQuerySize::new_zeroed();
    q.dom = dom;
    op_one(GNTTABOP_QUERY_SIZE, &mut q)?;
    Ok(q)
}

/// `GNTTABOP_set_version`: the hypercall's result and the version written back (the
/// one in force, also on error).
pub fn set_version(version: u32) -> (Result<u64>, u32) {
    let mut v = GnttabSetVersion { version };
    let r = op_one(GNTTABOP_SET_VERSION, &mut v);
    (r, v.version)
}

/// `GNTTABOP_get_version` of `dom`.
pub fn get_version(dom: u16) -> Result<u32> {
    let mut v = GnttabGetVersion::new_zeroed();
    v.dom = dom;
    op_one(GNTTABOP_GET_VERSION, &mut v)?;
    Ok(v.version)
}

/// Whether `va` is the VA of a map-area slot.
fn is_slot_va(va: u64) -> bool {
    va >= MAP_AREA_VA && (va - MAP_AREA_VA) / PAGE_SIZE < MAP_AREA_SLOTS as u64 && va & 0xfff == 0
}

/// Whether `maddr` is the machine address of a map-area slot's L1 entry.
fn is_slot_pte(maddr: u64) -> bool {
    let Some(first) = mmu::slot_maddr(0) else {
        return false;
    };
    maddr >= first && maddr - first < 8 * MAP_AREA_SLOTS as u64 && maddr & 7 == 0
}

/// A host-mapping target is the map area (see the module's safety model).
fn host_target_ok(host_addr: u64, contains_pte: bool) -> bool {
    if contains_pte {
        is_slot_pte(host_addr)
    } else {
        is_slot_va(host_addr)
    }
}

fn batch_len(n: usize) -> Result<u32> {
    if n > MAX_BATCH {
        return Err(Error::local(Errno::E2BIG));
    }
    Ok(n as u32)
}

/// `GNTTABOP_map_grant_ref` of `ops` in one call; each element's `status`, `handle` and
/// `dev_bus_addr` are filled by the hypervisor. An element with `GNTMAP_host_map` must
/// target a map-area slot (VA, or its L1 entry's machine address with
/// `GNTMAP_contains_pte`): otherwise nothing is issued and the result is -EPERM.
pub fn map_grant_ref(ops: &mut [GnttabMapGrantRef]) -> Result<u64> {
    let n = batch_len(ops.len())?;
    let ok = ops.iter().all(|o| {
        o.flags & GNTMAP_HOST_MAP == 0
            || host_target_ok(o.host_addr, o.flags & GNTMAP_CONTAINS_PTE != 0)
    });
    if !ok {
        return Err(Error::local(Errno::EPERM));
    }
    // SAFETY: `n` live elements; every host mapping lands in the map area (checked).
    unsafe { op(GNTTABOP_MAP_GRANT_REF, ops.as_mut_ptr() as u64, n) }
}

/// `GNTTABOP_unmap_grant_ref` of `ops` in one call (one TLB flush for the batch);
/// `status` filled per element. A non-zero `host_addr` must be a map-area slot's VA (or
/// the machine address of its L1 entry, for a mapping made with
/// `GNTMAP_contains_pte`): otherwise nothing is issued and the result is -EPERM.
pub fn unmap_grant_ref(ops: &mut [GnttabUnmapGrantRef]) -> Result<u64> {
    let n = batch_len(ops.len())?;
    let ok = ops
        .iter()
        .all(|o| o.host_addr == 0 || is_slot_va(o.host_addr) || is_slot_pte(o.host_addr));
    if !ok {
        return Err(Error::local(Errno::EPERM));
    }
    // SAFETY: `n` live elements; only map-area entries are cleared (checked).
    unsafe { op(GNTTABOP_UNMAP_GRANT_REF, ops.as_mut_ptr() as u64, n) }
}

/// Whether a frame destination `mfn` is one of our frames in allocator territory (its
/// PFN, from the M2P, maps back to it in our p2m and lies past the boot region).
fn dest_frame_ok(mfn: u64) -> bool {
    let (Some(layout), Some((pfn, _))) = (mmu::layout(), mmu::probe_m2p_read(mfn)) else {
        return false;
    };
    pfn >= layout.first_free_pfn && pfn < layout.nr_pages && mmu::pfn_to_mfn(pfn) == Some(mfn)
}

/// A batch of `gnttab_copy` elements checked once against the module's safety model
/// and then issued as often as wanted (a benchmark repeats the same copies).
pub struct CopyBatch<'a> {
    ops: &'a mut [GnttabCopy],
}

impl<'a> CopyBatch<'a> {
    /// Checks `ops`: every destination that is a frame must be ours and in allocator
    /// territory (-EPERM otherwise); at most [`MAX_BATCH`] elements (-E2BIG).
    pub fn new(ops: &'a mut [GnttabCopy]) -> Result<CopyBatch<'a>> {
        batch_len(ops.len())?;
        if ops
            .iter()
            .any(|o| o.flags & GNTCOPY_DEST_GREF == 0 && o.len != 0 && !dest_frame_ok(o.dest.u))
        {
            return Err(Error::local(Errno::EPERM));
        }
        Ok(CopyBatch { ops })
    }

    /// `GNTTABOP_copy` of the batch in one call; `status` filled per element.
    pub fn issue(&mut self) -> Result<u64> {
        let n = self.ops.len() as u32;
        // SAFETY: `n` live elements (bounded in `new`); frame destinations were checked
        // to be allocator frames of ours, where the caller keeps no Rust object (module
        // safety model); the elements' other fields are only read.
        unsafe { op(GNTTABOP_COPY, self.ops.as_mut_ptr() as u64, n) }
    }

    /// The elements with their statuses.
    pub fn ops(&self) -> &[GnttabCopy] {
        self.ops
    }
}

/// `GNTTABOP_copy` of `ops` in one call (see [`CopyBatch::new`] for what is refused).
pub fn copy(ops: &mut [GnttabCopy]) -> Result<u64> {
    CopyBatch::new(ops)?.issue()
}

/// Store `value` to word `idx` of map-area slot `slot` with `mov [rdi], rsi` (48 89 37),
/// expecting a #PF when the slot is mapped read-only (a `GNTMAP_readonly` grant mapping):
/// the kernel's #PF hook must skip 3 bytes. Returns the faulting site; `None` (no access)
/// for a slot or word out of range.
pub fn probe_slot_write(slot: usize, idx: usize, value: u64) -> Option<FaultSite> {
    if slot >= MAP_AREA_SLOTS || idx >= 512 {
        return None;
    }
    let addr = mmu::slot_va(slot) + 8 * idx as u64;
    let site: u64;
    // SAFETY: a store inside the map area, where no Rust object lives (module safety
    // model); if the mapping is writable the store lands in the mapped frame, which the
    // caller mapped there; a fault is handled by the kernel's #PF hook.
    unsafe {
        core::arch::asm!(
            "lea {s}, [rip + 2f]",
            "2: .byte 0x48, 0x89, 0x37",
            s = out(reg) site,
            in("rdi") addr,
            in("rsi") value,
            options(nostack),
        );
    }
    Some(FaultSite { rip: site, len: 3 })
}
