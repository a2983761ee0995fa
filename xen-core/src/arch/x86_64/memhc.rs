//! Memory hypercalls of PV guests: mmu_update, update_va_mapping, mmuext_op, set_gdt,
//! update_descriptor and memory_op. Decoding, batching, foreign-domain resolution,
//! continuations and TLB maintenance live here; the page-type rules are the portable
//! [`crate::pvmm`] (Xen's mm.c).

use super::domain::Domain;
use super::frame::TrapFrame;
use super::guestmem;
use super::hypercall::{Ctx, HcResult, Outcome};
use super::mm::{self, pte, FRAMES};
use super::{cpu, pv, time};
use crate::pvmm::{Flush, PageType};
use alloc::vec::Vec;
use xen_abi::memory as m;
use xen_abi::xen;
use xen_abi::{DomId, Errno, Mfn};
use zerocopy::FromZeros;

/// A batch yields after this long so the tick (timers, other vCPUs) is not starved.
const PREEMPT_NS: u64 = 1_000_000;

fn should_preempt(ctx: &Ctx, start: u64) -> bool {
    !ctx.in_multicall && time::now().saturating_sub(start) > PREEMPT_NS
}

/// Resolves a domain argument: DOMID_SELF or the caller itself, or (privileged callers
/// only) another existing domain.
fn resolve(ctx: &Ctx, dom: DomId) -> Result<usize, Errno> {
    if dom == DomId::SELF || dom == ctx.domid() {
        return Ok(ctx.di);
    }
    if !ctx.privileged() {
        return Err(Errno::EPERM);
    }
    ctx.hv.find(dom).ok_or(Errno::ESRCH)
}

/// The page-table owner and page owner of an mmu_update/mmuext_op `foreigndom`
/// argument: low 16 bits name the domain whose frames may be referenced, the high 16
/// bits (+1) the domain whose tables are updated.
fn owners(ctx: &Ctx, foreigndom: u32) -> Result<(DomId, DomId), Errno> {
    let me = ctx.domid();
    let pt = match foreigndom >> 16 {
        0 => me,
        n => {
            let d = DomId::new((n - 1) as u16);
            if d != me && !ctx.privileged() {
                return Err(Errno::EPERM);
            }
            d
        }
    };
    let pg = DomId::new(foreigndom as u16);
    let pg = if pg == DomId::SELF || pg == me {
        me
    } else if pg == DomId::IO && ctx.privileged() {
        pg
    } else {
        ctx.hv.domains[resolve(ctx, pg)?].id
    };
    if pt != me {
        resolve(ctx, pt)?;
    }
    Ok((pt, pg))
}

fn do_flush(flush: Flush) {
    if flush != Flush::None {
        pv::flush_tlb_all();
    }
}

/// Reads the batch progress of a continued call (`MMU_UPDATE_PREEMPTED` in the count).
fn batch_start(count: u64, done_ptr: u64) -> Result<(u32, u32), Errno> {
    let preempted = count as u32 & xen::MMU_UPDATE_PREEMPTED != 0;
    let count = count as u32 & !xen::MMU_UPDATE_PREEMPTED;
    let done = if preempted && done_ptr != 0 {
        guestmem::read::<u32>(done_ptr)?
    } else {
        0
    };
    Ok((count, done))
}

/// `mmu_update(reqs, count, done, foreigndom)`.
pub(super) fn mmu_update(
    ctx: &mut Ctx,
    f: &mut TrapFrame,
    reqs: u64,
    count: u64,
    done_ptr: u64,
    foreigndom: u32,
) -> Outcome {
    let (count, done_before) = match batch_start(count, done_ptr) {
        Ok(v) => v,
        Err(e) => return Outcome::Return(Err(e)),
    };
    let (pt, pg) = match owners(ctx, foreigndom) {
        Ok(o) => o,
        Err(e) => return Outcome::Return(Err(e)),
    };
    let me = ctx.domid();
    let start = time::now();
    let mut flush = Flush::None;
    let mut result: HcResult = Ok(0);
    let mut i = 0u32;
    while i < count {
        if i > 0 && should_preempt(ctx, start) {
            do_flush(flush);
            if done_ptr != 0 {
                let _ = guestmem::write(done_ptr, &(done_before + i));
            }
            f.rdi = reqs.wrapping_add(u64::from(i) * 16);
            f.rsi = u64::from((count - i) | xen::MMU_UPDATE_PREEMPTED);
            return Outcome::Continue;
        }
        let req: xen::MmuUpdate = match guestmem::read(reqs.wrapping_add(u64::from(i) * 16)) {
            Ok(r) => r,
            Err(e) => {
                result = Err(e);
                break;
            }
        };
        let cmd = req.ptr & 3;
        let r = match cmd {
            xen::MMU_NORMAL_PT_UPDATE | xen::MMU_PT_UPDATE_PRESERVE_AD => pv::with(|p, mem| {
                p.mmu_update_pt(
                    mem,
                    pt,
                    pg,
                    req.ptr & !3,
                    req.val,
                    cmd == xen::MMU_PT_UPDATE_PRESERVE_AD,
                )
            })
            .map(|fl| flush = flush.merge(fl)),
            xen::MMU_MACHPHYS_UPDATE => {
                if pt != me {
                    Err(Errno::EPERM)
                } else {
                    let mfn = Mfn::new(req.ptr >> 12);
                    pv::with(|p, _| p.check_machphys_update(pg, mfn))
                        .map(|()| mm::set_m2p(mfn, req.val))
                }
            }
            _ => Err(Errno::ENOSYS),
        };
        if let Err(e) = r {
            result = Err(e);
            break;
        }
        i += 1;
    }
    do_flush(flush);
    if done_ptr != 0 {
        if let Err(e) = guestmem::write(done_ptr, &(done_before + i)) {
            return Outcome::Return(Err(e));
        }
    }
    Outcome::Return(result)
}

/// Finds the L1 slot that maps `va` in page table `l4`.
pub(super) fn l1_slot(l4: Mfn, va: u64) -> Result<(Mfn, usize), Errno> {
    let mut table = l4;
    for level in (2..=4).rev() {
        let idx = ((va >> (12 + 9 * (level - 1))) & 511) as usize;
        let e = mm::read_entry(table, idx);
        if e & pte::P == 0 || e & pte::PS != 0 {
            return Err(Errno::EINVAL);
        }
        table = Mfn::new((e & pte::ADDR_MASK) >> 12);
    }
    Ok((table, ((va >> 12) & 511) as usize))
}

fn uvmf_flush(flags: u64, va: u64) {
    match flags & xen::UVMF_FLUSHTYPE_MASK {
        xen::UVMF_TLB_FLUSH => pv::flush_tlb_all(),
        // UVMF_INVLPG, and UVMF_NONE too: dropping one stale entry is always safe.
        _ => cpu::invlpg(va),
    }
}

/// `update_va_mapping(va, pte, flags)`: one L1 entry of the current page table.
pub(super) fn update_va_mapping(ctx: &mut Ctx, va: u64, val: u64, flags: u64) -> HcResult {
    if !guestmem::is_guest_range(va, 1) {
        return Err(Errno::EINVAL);
    }
    let me = ctx.domid();
    let l4 = ctx.vcpu().kernel_l4;
    let (l1, idx) = l1_slot(l4, va)?;
    pv::with(|p, mem| p.update_va_mapping(mem, me, me, l1, idx, val))?;
    uvmf_flush(flags, va);
    Ok(0)
}

/// `mmuext_op(ops, count, done, foreigndom)`.
pub(super) fn mmuext_op(
    ctx: &mut Ctx,
    f: &mut TrapFrame,
    ops: u64,
    count: u64,
    done_ptr: u64,
    foreigndom: u32,
) -> Outcome {
    let (count, done_before) = match batch_start(count, done_ptr) {
        Ok(v) => v,
        Err(e) => return Outcome::Return(Err(e)),
    };
    let (_, pg) = match owners(ctx, foreigndom & 0xffff) {
        Ok(o) => o,
        Err(e) => return Outcome::Return(Err(e)),
    };
    let start = time::now();
    let mut result: HcResult = Ok(0);
    let mut i = 0u32;
    while i < count {
        if i > 0 && should_preempt(ctx, start) {
            if done_ptr != 0 {
                let _ = guestmem::write(done_ptr, &(done_before + i));
            }
            f.rdi = ops.wrapping_add(u64::from(i) * 24);
            f.rsi = u64::from((count - i) | xen::MMU_UPDATE_PREEMPTED);
            return Outcome::Continue;
        }
        let op: xen::MmuextOp = match guestmem::read(ops.wrapping_add(u64::from(i) * 24)) {
            Ok(o) => o,
            Err(e) => {
                result = Err(e);
                break;
            }
        };
        if let Err(e) = mmuext_one(ctx, pg, &op) {
            result = Err(e);
            break;
        }
        i += 1;
    }
    if done_ptr != 0 {
        if let Err(e) = guestmem::write(done_ptr, &(done_before + i)) {
            return Outcome::Return(Err(e));
        }
    }
    Outcome::Return(result)
}

fn mmuext_one(ctx: &mut Ctx, pg: DomId, op: &xen::MmuextOp) -> Result<(), Errno> {
    let me = ctx.domid();
    let vi = ctx.vi;
    let mfn = Mfn::new(op.arg1);
    match op.cmd {
        xen::MMUEXT_PIN_L1_TABLE
        | xen::MMUEXT_PIN_L2_TABLE
        | xen::MMUEXT_PIN_L3_TABLE
        | xen::MMUEXT_PIN_L4_TABLE => {
            let level = (op.cmd - xen::MMUEXT_PIN_L1_TABLE + 1) as u8;
            pv::with(|p, mem| p.pin(mem, pg, mfn, level)).map(|_| ())
        }
        xen::MMUEXT_UNPIN_TABLE => pv::with(|p, mem| p.unpin(mem, pg, mfn)).map(|_| ()),
        xen::MMUEXT_NEW_BASEPTR => {
            let _reload = pv::with(|p, mem| p.new_baseptr(mem, me, vi, mfn))?;
            let v = ctx.vcpu();
            v.kernel_l4 = mfn;
            if v.in_kernel {
                // SAFETY: the new L4 was validated (type L4, hypervisor slots filled).
                unsafe { cpu::write_cr3(mfn.raw() << 12) };
                pv::flush_tlb_all();
            }
            Ok(())
        }
        xen::MMUEXT_NEW_USER_BASEPTR => {
            let new = if op.arg1 == 0 { None } else { Some(mfn) };
            pv::with(|p, mem| p.new_user_baseptr(mem, me, vi, new))?;
            let v = ctx.vcpu();
            v.user_l4 = new;
            if !v.in_kernel {
                if let Some(l4) = new {
                    // SAFETY: as for NEW_BASEPTR.
                    unsafe { cpu::write_cr3(l4.raw() << 12) };
                }
            }
            Ok(())
        }
        xen::MMUEXT_TLB_FLUSH_LOCAL | xen::MMUEXT_TLB_FLUSH_MULTI | xen::MMUEXT_TLB_FLUSH_ALL => {
            pv::flush_tlb_all();
            Ok(())
        }
        xen::MMUEXT_INVLPG_LOCAL | xen::MMUEXT_INVLPG_MULTI | xen::MMUEXT_INVLPG_ALL => {
            if guestmem::is_guest_range(op.arg1, 1) {
                cpu::invlpg(op.arg1);
            }
            Ok(())
        }
        xen::MMUEXT_SET_LDT => {
            // Clearing the LDT is what guests do at boot; a non-empty LDT needs the LDT
            // window, which rxen does not provide yet.
            let (base, ents) = (op.arg1, op.arg2);
            if ents > 8192
                || base & 0xfff != 0
                || (ents != 0 && !guestmem::is_guest_range(base, (ents * 8) as usize))
            {
                return Err(Errno::EINVAL);
            }
            if ents == 0 {
                pv::with(|p, mem| p.destroy_ldt(mem, me, vi)).map(|_| ())
            } else {
                Err(Errno::ENOSYS)
            }
        }
        xen::MMUEXT_CLEAR_PAGE => {
            pv::with(|p, mem| p.get_page_and_type(mem, mfn, me, PageType::Writable))?;
            mm::zero_frame(mfn);
            pv::with(|p, mem| p.put_page_and_type(mem, mfn));
            Ok(())
        }
        xen::MMUEXT_COPY_PAGE => {
            let src = Mfn::new(op.arg2);
            pv::with(|p, _| p.get_page_ref(src, me))?;
            let r = pv::with(|p, mem| p.get_page_and_type(mem, mfn, me, PageType::Writable));
            if r.is_ok() {
                // SAFETY: both frames belong to the caller (references held above) and
                // are direct-mapped; the destination can take writes (writable type).
                unsafe {
                    core::ptr::copy(
                        mm::maddr_to_virt(src.raw() << 12),
                        mm::maddr_to_virt(mfn.raw() << 12),
                        4096,
                    )
                };
                pv::with(|p, mem| p.put_page_and_type(mem, mfn));
            }
            pv::with(|p, _| p.put_page_ref(src));
            r
        }
        _ => Err(Errno::ENOSYS),
    }
}

/// `set_gdt(frames, entries)`.
pub(super) fn set_gdt(ctx: &mut Ctx, list: u64, entries: u64) -> HcResult {
    if entries > 14 * 512 {
        return Err(Errno::EINVAL);
    }
    let nr = entries.div_ceil(512) as usize;
    let mut frames = Vec::with_capacity(nr);
    for i in 0..nr {
        let mfn: u64 = guestmem::read(list.wrapping_add(i as u64 * 8))?;
        frames.push(Mfn::new(mfn));
    }
    let me = ctx.domid();
    let vi = ctx.vi;
    pv::with(|p, mem| p.set_gdt(mem, me, vi, &frames, entries as u32))?;
    let v = ctx.vcpu();
    v.gdt_frames = frames.iter().copied().collect();
    v.gdt_ents = entries as u32;
    super::gdt::show(&v.gdt_frames);
    Ok(0)
}

/// `update_descriptor(maddr, desc)`.
pub(super) fn update_descriptor(ctx: &mut Ctx, maddr: u64, desc: u64) -> HcResult {
    let me = ctx.domid();
    pv::with(|p, mem| p.update_descriptor(mem, me, maddr, desc))?;
    Ok(0)
}

/// Highest pseudo-physical frame domain `d` may populate. The p2m kept here is dense, so
/// the bound is tied to the domain's own size: a guest cannot make the hypervisor grow it
/// without limit.
fn max_gpfn(d: &Domain) -> u64 {
    (d.max_pages.max(d.p2m.len() as u64)).saturating_mul(2) + 256
}

/// Which extent a continued reservation op resumes at (Xen's MEMOP_EXTENT_SHIFT).
const MEMOP_EXTENT_SHIFT: u32 = 6;

/// `memory_op(cmd, arg)`.
pub(super) fn memory_op(ctx: &mut Ctx, f: &mut TrapFrame, cmd: u64, arg: u64) -> Outcome {
    let op = cmd as u32 & ((1 << MEMOP_EXTENT_SHIFT) - 1);
    let start_extent = cmd >> MEMOP_EXTENT_SHIFT;
    match op {
        m::XENMEM_INCREASE_RESERVATION
        | m::XENMEM_DECREASE_RESERVATION
        | m::XENMEM_POPULATE_PHYSMAP => reservation(ctx, f, op, start_extent, arg),
        m::XENMEM_EXCHANGE => exchange(ctx, f, arg),
        _ => Outcome::Return(memory_info(ctx, op, start_extent, arg)),
    }
}

fn reservation(ctx: &mut Ctx, f: &mut TrapFrame, op: u32, start_extent: u64, arg: u64) -> Outcome {
    let r: m::XenMemoryReservation = match guestmem::read(arg) {
        Ok(r) => r,
        Err(e) => return Outcome::Return(Err(e)),
    };
    let ti = match resolve(ctx, DomId::new(r.domid)) {
        Ok(t) => t,
        Err(e) => return Outcome::Return(Err(e)),
    };
    // Only 4 KiB extents; a larger order gets nothing done, as Xen answers a request it
    // cannot satisfy.
    if r.extent_order != 0 || start_extent > r.nr_extents {
        return Outcome::Return(Ok(start_extent as i64));
    }
    let started = time::now();
    let mut i = start_extent;
    while i < r.nr_extents {
        if i > start_extent && should_preempt(ctx, started) {
            f.rdi = u64::from(op) | (i << MEMOP_EXTENT_SHIFT);
            return Outcome::Continue;
        }
        let slot = r.extent_start.wrapping_add(i * 8);
        let d = &mut ctx.hv.domains[ti];
        let ok = match op {
            m::XENMEM_INCREASE_RESERVATION => {
                grow(d, None).and_then(|mfn| guestmem::write(slot, &mfn.raw()))
            }
            m::XENMEM_POPULATE_PHYSMAP => guestmem::read::<u64>(slot)
                .and_then(|gpfn| grow(d, Some(gpfn)))
                .and_then(|mfn| guestmem::write(slot, &mfn.raw())),
            _ => guestmem::read::<u64>(slot).and_then(|gmfn| shrink(d, Mfn::new(gmfn))),
        };
        if ok.is_err() {
            break;
        }
        i += 1;
    }
    Outcome::Return(Ok(i as i64))
}

/// `XENMEM_exchange` (`struct xen_memory_exchange`: in, out, nr_exchanged): trade the
/// caller's frames listed in `in` for fresh ones placed at the pseudo-physical frames
/// listed in `out`, whose MFNs are written back. Only 4 KiB extents. Progress is kept
/// in `nr_exchanged`, which also makes the call restartable.
fn exchange(ctx: &mut Ctx, f: &mut TrapFrame, arg: u64) -> Outcome {
    let run = |ctx: &mut Ctx, f: &mut TrapFrame| -> Result<Option<()>, Errno> {
        let input: m::XenMemoryReservation = guestmem::read(arg)?;
        let output: m::XenMemoryReservation = guestmem::read(arg + 32)?;
        let mut done: u64 = guestmem::read(arg + 64)?;
        if input.extent_order != 0
            || output.extent_order != 0
            || input.nr_extents != output.nr_extents
        {
            return Err(Errno::EINVAL);
        }
        if input.domid != output.domid {
            return Err(Errno::EINVAL);
        }
        let ti = resolve(ctx, DomId::new(input.domid))?;
        let started = time::now();
        while done < input.nr_extents {
            if should_preempt(ctx, started) {
                guestmem::write(arg + 64, &done)?;
                let _ = f;
                return Ok(None);
            }
            let old = Mfn::new(guestmem::read::<u64>(
                input.extent_start.wrapping_add(done * 8),
            )?);
            let gpfn: u64 = guestmem::read(output.extent_start.wrapping_add(done * 8))?;
            if gpfn > max_gpfn(&ctx.hv.domains[ti]) {
                return Err(Errno::EINVAL);
            }
            let d = &mut ctx.hv.domains[ti];
            let id = d.id;
            // Only a frame nothing else references may be traded (Xen's steal_page).
            let stealable = pv::with(|p, _| {
                p.page(old).is_some_and(|pi| {
                    pi.owner == crate::pvmm::Owner::Dom(id)
                        && pi.allocated
                        && pi.count == 1
                        && pi.type_count == 0
                        && !pi.special
                })
            });
            if !stealable {
                guestmem::write(arg + 64, &done)?;
                return Err(Errno::EINVAL);
            }
            // Take the new frame off the free list before the old one goes back to it,
            // so that the two differ (Xen frees the stolen frames only after assigning
            // the new ones).
            let new = FRAMES
                .lock()
                .alloc(id, mm::FrameUse::Guest)
                .ok_or(Errno::ENOMEM)?;
            if let Err(e) = shrink(d, old) {
                FRAMES.lock().free(new);
                guestmem::write(arg + 64, &done)?;
                return Err(e);
            }
            if let Err(e) = pv::with(|p, _| p.assign(new, id)) {
                FRAMES.lock().free(new);
                return Err(e);
            }
            mm::set_m2p(new, gpfn);
            place(d, gpfn, new);
            guestmem::write(output.extent_start.wrapping_add(done * 8), &new.raw())?;
            done += 1;
        }
        guestmem::write(arg + 64, &done)?;
        Ok(Some(()))
    };
    match run(ctx, f) {
        Ok(Some(())) => Outcome::Return(Ok(0)),
        Ok(None) => Outcome::Continue,
        Err(e) => Outcome::Return(Err(e)),
    }
}

/// Gives domain `d` one more frame, at pseudo-physical `gpfn` if given (populate_physmap).
fn grow(d: &mut Domain, gpfn: Option<u64>) -> Result<Mfn, Errno> {
    if gpfn.is_some_and(|g| g > max_gpfn(d)) {
        return Err(Errno::EINVAL);
    }
    let mfn = pv::alloc_domain_frame(d.id)?;
    let pfn = gpfn.unwrap_or(d.p2m.len() as u64);
    mm::set_m2p(mfn, pfn);
    place(d, pfn, mfn);
    Ok(mfn)
}

/// Records `mfn` at `pfn` in the domain's p2m.
fn place(d: &mut Domain, pfn: u64, mfn: Mfn) {
    let idx = pfn as usize;
    if idx >= d.p2m.len() {
        d.p2m.resize(idx + 1, Mfn::new(u64::MAX));
    }
    d.p2m[idx] = mfn;
}

/// Takes frame `mfn` away from domain `d` (decrease_reservation).
fn shrink(d: &mut Domain, mfn: Mfn) -> Result<(), Errno> {
    pv::with(|p, _| p.release(d.id, mfn))?;
    mm::set_m2p(mfn, u64::MAX);
    if let Some(slot) = d.p2m.iter_mut().find(|m| **m == mfn) {
        *slot = Mfn::new(u64::MAX);
    }
    Ok(())
}

/// The informational memory_op sub-ops.
fn memory_info(ctx: &mut Ctx, op: u32, start_extent: u64, arg: u64) -> HcResult {
    if start_extent != 0 {
        return Err(Errno::ENOSYS);
    }
    match op {
        m::XENMEM_MAXIMUM_RAM_PAGE => Ok(FRAMES.lock().max_mfn() as i64),
        m::XENMEM_CURRENT_RESERVATION | m::XENMEM_MAXIMUM_RESERVATION => {
            let dom: u16 = guestmem::read(arg)?;
            let ti = resolve(ctx, DomId::new(dom))?;
            let id = ctx.hv.domains[ti].id;
            let dm = pv::with(|p, _| p.domain(id).map(|d| (d.tot_pages, d.max_pages)))
                .ok_or(Errno::ESRCH)?;
            Ok(if op == m::XENMEM_CURRENT_RESERVATION {
                dm.0 as i64
            } else {
                dm.1 as i64
            })
        }
        m::XENMEM_MAXIMUM_GPFN => {
            let dom: u16 = guestmem::read(arg)?;
            let ti = resolve(ctx, DomId::new(dom))?;
            Ok(ctx.hv.domains[ti].p2m.len() as i64 - 1)
        }
        m::XENMEM_MACHPHYS_MAPPING => {
            let max = FRAMES.lock().max_mfn();
            let mut mm_ = m::XenMachphysMapping::new_zeroed();
            mm_.v_start = xen::MACH2PHYS_VIRT_START;
            // Xen reports the whole reserved range, however much of it is populated.
            mm_.v_end = xen::MACH2PHYS_VIRT_END;
            mm_.max_mfn = max.saturating_sub(1);
            guestmem::write(arg, &mm_)?;
            Ok(0)
        }
        m::XENMEM_MACHPHYS_MFN_LIST => {
            let mut l: m::XenMachphysMfnList = guestmem::read(arg)?;
            let frames = mm::m2p_frames();
            let chunks: Vec<u64> = frames.iter().step_by(512).copied().collect();
            let n = chunks.len().min(l.max_extents as usize);
            for (i, c) in chunks.iter().take(n).enumerate() {
                guestmem::write(l.extent_start.wrapping_add(i as u64 * 8), c)?;
            }
            l.nr_extents = n as u32;
            guestmem::write(arg, &l)?;
            Ok(0)
        }
        m::XENMEM_MEMORY_MAP => {
            let d = &ctx.hv.domains[ctx.di];
            let entries = [m::E820Entry {
                addr: 0,
                size: d.p2m.len() as u64 * 4096,
                kind: m::E820_RAM,
            }];
            write_map(arg, &entries)
        }
        m::XENMEM_MACHINE_MEMORY_MAP => {
            if !ctx.privileged() {
                return Err(Errno::EPERM);
            }
            write_map(arg, &mm::machine_memory_map())
        }
        _ => Err(Errno::ENOSYS),
    }
}

fn write_map(arg: u64, entries: &[m::E820Entry]) -> HcResult {
    let mut map: m::XenMemoryMap = guestmem::read(arg)?;
    let n = entries.len().min(map.nr_entries as usize);
    for (i, e) in entries.iter().take(n).enumerate() {
        guestmem::write(map.buffer.wrapping_add(i as u64 * 20), e)?;
    }
    map.nr_entries = n as u32;
    guestmem::write(arg, &map)?;
    Ok(0)
}
