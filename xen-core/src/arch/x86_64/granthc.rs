//! `grant_table_op` (hypercall 20), grant tables v1: setup_table, query_size,
//! set/get_version, map_grant_ref, unmap_grant_ref (batched, one TLB flush per batch)
//! and copy. The rules are the portable `grant` crate (Xen's grant_table.c); the PTEs a
//! host mapping needs come from the PV MMU ([`crate::pvmm`]).

use super::domain::Domain;
use super::frame::TrapFrame;
use super::guestmem;
use super::hypercall::{Ctx, HcResult, Outcome};
use super::mm;
use super::pv::{self, DirectMap};
use crate::pvmm::{GrantUnmap, PvMm};
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU32, Ordering};
use grant::copy::GrantTables;
use grant::{EntryAccess, GrantTable, Header, MapUse};
use xen_abi::grant_table as gt;
use xen_abi::grant_table::{Gntst, GrantHandle};
use xen_abi::{DomId, Errno, GrantRef, Mfn};
use zerocopy::IntoBytes;

/// A domain's grant-table entries, read and written in the shared frames through the
/// direct map (the frames are hypervisor pages shared writable with the domain).
#[derive(Default)]
pub struct DirectEntries {
    frames: Vec<Mfn>,
}

impl DirectEntries {
    fn word(&self, gref: GrantRef, off: u64) -> Option<&AtomicU32> {
        let i = gref.raw() as usize;
        let frame = self.frames.get(i / 512)?;
        let addr = (frame.raw() << 12) + (i as u64 % 512) * 8 + off;
        // SAFETY: the frame is one of this table's shared frames, alive while the domain
        // exists; the word is inside it and 4-byte aligned.
        Some(unsafe { &*(mm::maddr_to_virt(addr) as *const AtomicU32) })
    }
}

impl EntryAccess for DirectEntries {
    fn read_header(&mut self, gref: GrantRef) -> Header {
        Header(self.word(gref, 0).map_or(0, |w| w.load(Ordering::SeqCst)))
    }
    fn read_frame(&mut self, gref: GrantRef) -> u32 {
        self.word(gref, 4).map_or(0, |w| w.load(Ordering::SeqCst))
    }
    fn cmpxchg_header(&mut self, gref: GrantRef, old: Header, new: Header) -> Result<(), Header> {
        match self.word(gref, 0) {
            Some(w) => w
                .compare_exchange(old.0, new.0, Ordering::SeqCst, Ordering::SeqCst)
                .map(|_| ())
                .map_err(Header),
            None => Err(Header(0)),
        }
    }
    fn clear_flags(&mut self, gref: GrantRef, bits: u16) {
        if let Some(w) = self.word(gref, 0) {
            w.fetch_and(!u32::from(bits), Ordering::SeqCst);
        }
    }
}

/// Frame references for the grant rules, taken in the PV MMU.
struct Refs<'a> {
    pv: &'a mut PvMm,
    mem: &'a mut DirectMap,
}

impl grant::FrameRefs for Refs<'_> {
    fn get_frame(&mut self, mfn: Mfn, owner: DomId) -> bool {
        self.pv.get_page_ref(mfn, owner).is_ok()
    }
    fn put_frame(&mut self, mfn: Mfn) {
        self.pv.put_page_ref(mfn);
    }
    fn check_frame(&mut self, mfn: Mfn, owner: DomId) -> bool {
        // The PV MMU is held across the check and whatever the caller does with the
        // frame, so checking is the same as taking and dropping a reference.
        self.pv.owns_frame(mfn, owner)
    }
    fn get_writable(&mut self, mfn: Mfn) -> bool {
        // The caller holds a general reference (get_frame): only the type reference is
        // taken, as Xen's get_page_type(PGT_writable_page).
        self.pv.get_writable_type(self.mem, mfn).is_ok()
    }
    fn put_writable(&mut self, mfn: Mfn) {
        self.pv.put_writable_type(self.mem, mfn);
    }
}

/// The domains' grant tables for `copy`.
struct Tables<'a>(&'a mut [Domain]);

impl GrantTables for Tables<'_> {
    type Entries = DirectEntries;
    fn table(&mut self, dom: DomId) -> Option<(&mut GrantTable, &mut DirectEntries)> {
        let d = self.0.iter_mut().find(|d| d.id == dom)?;
        Some((&mut d.grant, &mut d.grant_entries))
    }
}

/// Releases the pins and references a dying mapper held through `m` on granter `d`.
pub(super) fn release_mapping(
    pv: &mut PvMm,
    mem: &mut DirectMap,
    d: &mut Domain,
    m: &grant::Mapping,
) {
    let mut refs = Refs { pv, mem };
    d.grant.release_mapping(&mut d.grant_entries, &mut refs, m);
}

fn resolve(ctx: &Ctx, dom: u16) -> Result<usize, Gntst> {
    let dom = DomId::new(dom);
    if dom == DomId::SELF || dom == ctx.domid() {
        Ok(ctx.di)
    } else if !ctx.privileged() {
        Err(Gntst::PermissionDenied)
    } else {
        ctx.hv.find(dom).ok_or(Gntst::BadDomain)
    }
}

/// Grant mappings one domain may hold at once. Bounded well below Xen's default so that
/// no pair of domains can exhaust the hypervisor's heap with maptrack entries.
pub const MAPTRACK_LIMIT: u32 = 16384;

/// Elements of a map/unmap/copy batch handled per hypercall entry; a longer batch
/// continues (the guest re-executes the hypercall with the rest), as Xen's does.
const BATCH: u32 = 512;

/// `grant_table_op(cmd, uop, count)` with continuations for long batches.
pub(super) fn grant_table_op_batched(
    ctx: &mut Ctx,
    f: &mut TrapFrame,
    cmd: u32,
    uop: u64,
    count: u32,
) -> Outcome {
    let size = match cmd {
        gt::GNTTABOP_MAP_GRANT_REF => 32,
        gt::GNTTABOP_UNMAP_GRANT_REF => 24,
        gt::GNTTABOP_COPY => 40,
        _ => 0,
    };
    if size == 0 || count <= BATCH {
        return Outcome::Return(grant_table_op(ctx, cmd, uop, count));
    }
    // A multicall entry cannot be continued; its batch stays bounded instead.
    if ctx.in_multicall {
        return Outcome::Return(Err(Errno::EINVAL));
    }
    match grant_table_op(ctx, cmd, uop, BATCH) {
        Ok(_) => {
            f.rsi = uop.wrapping_add(u64::from(BATCH) * size);
            f.rdx = u64::from(count - BATCH);
            Outcome::Continue
        }
        Err(e) => Outcome::Return(Err(e)),
    }
}

/// `grant_table_op(cmd, uop, count)`.
pub(super) fn grant_table_op(ctx: &mut Ctx, cmd: u32, uop: u64, count: u32) -> HcResult {
    match cmd {
        gt::GNTTABOP_SETUP_TABLE => {
            if count != 1 {
                return Err(Errno::EINVAL);
            }
            let mut op: gt::GnttabSetupTable = guestmem::read(uop)?;
            op.status = match resolve(ctx, op.dom) {
                Err(s) => s.code(),
                Ok(ti) => setup_table(&mut ctx.hv.domains[ti], op.nr_frames, op.frame_list),
            };
            guestmem::write(uop, &op)?;
            Ok(0)
        }
        gt::GNTTABOP_QUERY_SIZE => {
            if count != 1 {
                return Err(Errno::EINVAL);
            }
            let mut op: gt::GnttabQuerySize = guestmem::read(uop)?;
            match resolve(ctx, op.dom) {
                Err(s) => op.status = s.code(),
                Ok(ti) => {
                    let (n, max) = ctx.hv.domains[ti].grant.query_size();
                    op.nr_frames = n;
                    op.max_nr_frames = max;
                    op.status = 0;
                }
            }
            guestmem::write(uop, &op)?;
            Ok(0)
        }
        gt::GNTTABOP_SET_VERSION => {
            let mut op: gt::GnttabSetVersion = guestmem::read(uop)?;
            let (r, v) = ctx.dom().grant.set_version(op.version);
            op.version = v;
            guestmem::write(uop, &op)?;
            r.map(|()| 0)
        }
        gt::GNTTABOP_GET_VERSION => {
            let mut op: gt::GnttabGetVersion = guestmem::read(uop)?;
            let ti = resolve(ctx, op.dom).map_err(|_| Errno::ESRCH)?;
            op.version = ctx.hv.domains[ti].grant.version();
            guestmem::write(uop, &op)?;
            Ok(0)
        }
        gt::GNTTABOP_MAP_GRANT_REF => map_batch(ctx, uop, count),
        gt::GNTTABOP_UNMAP_GRANT_REF => unmap_batch(ctx, uop, count),
        gt::GNTTABOP_COPY => {
            let me = ctx.domid();
            for i in 0..u64::from(count) {
                let va = uop.wrapping_add(i * 40);
                let mut op: gt::GnttabCopy = guestmem::read(va)?;
                let r = pv::with(|p, mem| {
                    let mut refs = Refs { pv: p, mem };
                    let mut tables = Tables(&mut ctx.hv.domains);
                    grant::copy::copy_one(
                        &mut tables,
                        &mut refs,
                        me,
                        &op,
                        |src, so, dst, dof, len| {
                            // SAFETY: both frames are held (references taken by copy_begin)
                            // and direct-mapped; offsets + len are within a page (checked).
                            unsafe {
                                core::ptr::copy(
                                    mm::maddr_to_virt((src.raw() << 12) + u64::from(so)),
                                    mm::maddr_to_virt((dst.raw() << 12) + u64::from(dof)),
                                    usize::from(len),
                                )
                            }
                        },
                    )
                });
                op.status = Gntst::status(&r);
                guestmem::write(va, &op)?;
            }
            Ok(0)
        }
        _ => Err(Errno::ENOSYS),
    }
}

fn setup_table(d: &mut Domain, nr: u32, list: u64) -> i16 {
    let id = d.id;
    let r = d.grant.setup_table(nr, || {
        let m = pv::alloc_xen_frame().ok()?;
        pv::with(|p, _| p.share_xen_page(m, id, true)).ok()?;
        Some(m)
    });
    let frames: Vec<Mfn> = match r {
        Ok(f) => f.to_vec(),
        Err(s) => return s.code(),
    };
    d.grant_entries.frames = d.grant.frames().to_vec();
    for (i, f) in frames.iter().enumerate() {
        if guestmem::write(list.wrapping_add(i as u64 * 8), &f.raw()).is_err() {
            return Gntst::GeneralError.code();
        }
    }
    0
}

/// Map and unmap elements handled per copy of the arguments in, one hold of the PV MMU
/// and one copy of the results out. Xen unmaps in batches of 32 as well
/// (`GNTTAB_UNMAP_BATCH_SIZE`), with one TLB flush each.
const CHUNK: usize = 32;

/// Copies a chunk of hypercall elements in: a whole-chunk copy when the chunk is
/// readable and writable (probed by writing the elements back unchanged, so that the
/// results can be written back in one go after the work), else `None`: the caller then
/// handles the chunk one element at a time, stopping at the first element that cannot
/// be read or written back, exactly as element-wise processing does.
fn read_chunk<T>(va: u64, out: &mut [T]) -> Option<()>
where
    T: zerocopy::FromBytes + zerocopy::IntoBytes + zerocopy::Immutable,
{
    guestmem::copy_from_guest(va, out.as_mut_bytes()).ok()?;
    guestmem::copy_to_guest(va, out.as_bytes()).ok()
}

/// Caches within one hold of the PV MMU. Nothing a grant map or unmap does changes the
/// domain list or the mapper's L4..L2 entries, so the lookups stay valid for the hold.
struct Lookups {
    /// The mapper's kernel L4 (the page table `host_addr` is resolved in).
    l4: Mfn,
    /// The last granter looked up: its id and index.
    granter: Option<(DomId, usize)>,
    /// The last L1 found by a walk: the 2 MiB region (`va >> 21`) and the L1.
    l1: Option<(u64, Mfn)>,
}

impl Lookups {
    fn new(ctx: &mut Ctx) -> Lookups {
        Lookups {
            l4: ctx.vcpu().kernel_l4,
            granter: None,
            l1: None,
        }
    }

    /// The index of domain `id` (`None`: no such domain).
    fn domain(&mut self, domains: &[Domain], id: DomId) -> Option<usize> {
        if let Some((d, i)) = self.granter {
            if d == id {
                return Some(i);
            }
        }
        let i = domains.iter().position(|d| d.id == id)?;
        self.granter = Some((id, i));
        Some(i)
    }

    /// The L1 slot a host mapping goes into: the PTE's machine address
    /// (`GNTMAP_contains_pte`) or the virtual address in the mapper's current page table.
    fn host_slot(&mut self, host_addr: u64, flags: u32) -> Result<(Mfn, usize), Gntst> {
        if flags & gt::GNTMAP_CONTAINS_PTE != 0 {
            if host_addr & 7 != 0 {
                return Err(Gntst::GeneralError);
            }
            return Ok((
                Mfn::new(host_addr >> 12),
                ((host_addr & 0xfff) / 8) as usize,
            ));
        }
        if !guestmem::is_guest_range(host_addr, 1) {
            return Err(Gntst::BadVirtAddr);
        }
        let index = ((host_addr >> 12) & 511) as usize;
        let region = host_addr >> 21;
        if let Some((r, l1)) = self.l1 {
            if r == region {
                return Ok((l1, index));
            }
        }
        let (l1, index) =
            super::memhc::l1_slot(self.l4, host_addr).map_err(|_| Gntst::BadVirtAddr)?;
        self.l1 = Some((region, l1));
        Ok((l1, index))
    }
}

/// `GNTTABOP_map_grant_ref` on `count` elements at `uop`.
fn map_batch(ctx: &mut Ctx, uop: u64, count: u32) -> HcResult {
    let mut buf = [gt::GnttabMapGrantRef::default(); CHUNK];
    in_chunks(ctx, uop, count, &mut buf, map_chunk)
}

/// Runs `work` over `count` elements at `uop` in chunks of `buf.len()`: each chunk is
/// copied in once (and probed writable), worked on, and copied back once. A chunk whose
/// copy faults is redone one element at a time, so a bad buffer gives Xen's per-element
/// result: the elements before the fault are done, then -EFAULT.
fn in_chunks<T>(
    ctx: &mut Ctx,
    uop: u64,
    count: u32,
    buf: &mut [T],
    mut work: impl FnMut(&mut Ctx, &mut [T]),
) -> HcResult
where
    T: zerocopy::FromBytes + zerocopy::IntoBytes + zerocopy::Immutable,
{
    let size = core::mem::size_of::<T>() as u64;
    let count = count as usize;
    let mut i = 0;
    while i < count {
        let n = (count - i).min(buf.len());
        let va = uop.wrapping_add(i as u64 * size);
        let ops = &mut buf[..n];
        if read_chunk(va, ops).is_some() {
            work(ctx, ops);
            guestmem::copy_to_guest(va, ops.as_bytes())?;
        } else {
            for (j, op) in ops.iter_mut().enumerate() {
                let va = va.wrapping_add(j as u64 * size);
                guestmem::copy_from_guest(va, op.as_mut_bytes())?;
                work(ctx, core::slice::from_mut(op));
                guestmem::copy_to_guest(va, op.as_bytes())?;
            }
        }
        i += n;
    }
    Ok(0)
}

/// Maps the elements of `ops` in order, each as Xen's `map_grant_ref`, results in place.
fn map_chunk(ctx: &mut Ctx, ops: &mut [gt::GnttabMapGrantRef]) {
    let me = ctx.domid();
    let mi = ctx.di;
    let mut look = Lookups::new(ctx);
    let domains = &mut ctx.hv.domains;
    pv::with(|p, mem| {
        let mut refs = Refs { pv: p, mem };
        for op in ops.iter_mut() {
            match map_one(domains, &mut refs, &mut look, me, mi, op) {
                Ok((handle, frame)) => {
                    op.status = 0;
                    op.handle = handle.raw();
                    op.dev_bus_addr = frame.raw() << 12;
                }
                Err(s) => op.status = s.code(),
            }
        }
    });
}

fn map_one(
    domains: &mut [Domain],
    refs: &mut Refs,
    look: &mut Lookups,
    me: DomId,
    mi: usize,
    op: &gt::GnttabMapGrantRef,
) -> Result<(GrantHandle, Mfn), Gntst> {
    let gi = look
        .domain(domains, DomId::new(op.dom))
        .ok_or(Gntst::BadDomain)?;
    let granter = DomId::new(op.dom);
    let slot = if op.flags & gt::GNTMAP_HOST_MAP != 0 {
        Some(look.host_slot(op.host_addr, op.flags)?)
    } else {
        None
    };
    let (gtable, entries, maptrack) = grant_parts(domains, gi, mi);
    let mapped = gtable.map(
        entries,
        refs,
        granter,
        GrantRef::new(op.gref),
        me,
        maptrack,
        op.flags,
    )?;
    if let Some((l1, index)) = slot {
        if refs
            .pv
            .create_grant_mapping(refs.mem, me, l1, index, mapped.frame, granter, op.flags)
            .is_err()
        {
            let _ = gtable.unmap(entries, refs, maptrack, mapped.handle, MapUse::ALL);
            return Err(Gntst::GeneralError);
        }
    }
    Ok((mapped.handle, mapped.frame))
}

/// The granter's table and entries and the mapper's maptrack, which may be the same
/// domain's.
fn grant_parts(
    domains: &mut [Domain],
    gi: usize,
    mi: usize,
) -> (&mut GrantTable, &mut DirectEntries, &mut grant::MapTrack) {
    if gi == mi {
        let d = &mut domains[gi];
        (&mut d.grant, &mut d.grant_entries, &mut d.maptrack)
    } else if gi < mi {
        let (a, b) = domains.split_at_mut(mi);
        (
            &mut a[gi].grant,
            &mut a[gi].grant_entries,
            &mut b[0].maptrack,
        )
    } else {
        let (a, b) = domains.split_at_mut(gi);
        (
            &mut b[0].grant,
            &mut b[0].grant_entries,
            &mut a[mi].maptrack,
        )
    }
}

/// `GNTTABOP_unmap_grant_ref` on `count` elements at `uop`.
fn unmap_batch(ctx: &mut Ctx, uop: u64, count: u32) -> HcResult {
    let mut buf = [gt::GnttabUnmapGrantRef::default(); CHUNK];
    in_chunks(ctx, uop, count, &mut buf, unmap_chunk)
}

/// An unmap whose first half is done.
struct Pending {
    /// The mapping as it was.
    m: grant::Mapping,
    /// The granter's index (`None`: the granter is gone).
    gi: Option<usize>,
    /// The references of the host PTE removed, dropped after the flush.
    token: Option<GrantUnmap>,
    /// The uses removed.
    uses: MapUse,
}

/// Unmaps the elements of `ops` (at most [`CHUNK`]), results in place, as Xen's
/// `unmap_common` for each, one TLB flush, then `unmap_common_complete` for each: the
/// pins and frame references go only after the flush, so the granter can never reuse a
/// frame the mapper still caches.
fn unmap_chunk(ctx: &mut Ctx, ops: &mut [gt::GnttabUnmapGrantRef]) {
    let me = ctx.domid();
    let mi = ctx.di;
    let mut look = Lookups::new(ctx);
    let domains = &mut ctx.hv.domains;
    let mut pending: [Option<Pending>; CHUNK] = [const { None }; CHUNK];
    pv::with(|p, mem| {
        let mut flush = false;
        for (op, slot) in ops.iter_mut().zip(pending.iter_mut()) {
            match unmap_begin(p, mem, domains, &mut look, me, mi, op) {
                Ok(pend) => {
                    flush |= pend.token.is_some();
                    *slot = Some(pend);
                }
                Err(s) => op.status = s.code(),
            }
        }
        // Device-only unmaps (blkback's fast path) removed no PTE: no flush needed.
        if flush {
            pv::flush_tlb_all();
        }
        let mut refs = Refs { pv: p, mem };
        for (op, slot) in ops.iter_mut().zip(pending.iter_mut()) {
            let Some(Pending { m, gi, token, uses }) = slot.take() else {
                continue;
            };
            match gi {
                Some(gi) => {
                    let d = &mut domains[gi];
                    // Checked in unmap_begin: cannot fail.
                    let r = d
                        .grant
                        .complete_unmap(&mut d.grant_entries, &mut refs, &m, uses);
                    op.status = Gntst::status(&r);
                }
                None => {
                    // The granter is gone: its frame lives on only through this mapping,
                    // and there is no grant entry left to unpin. Drop what the device use
                    // held (the host use's references go with the token below); the last
                    // reference frees the dead domain's frame.
                    if uses.device {
                        if !m.readonly {
                            grant::FrameRefs::put_writable(&mut refs, m.frame);
                        }
                        grant::FrameRefs::put_frame(&mut refs, m.frame);
                    }
                    op.status = 0;
                }
            }
            if let Some(t) = token {
                refs.pv.put_grant_refs(refs.mem, t);
            }
        }
    });
}

/// The first half of one unmap (Xen's `unmap_common`): checks the handle and
/// `dev_bus_addr`, removes the host PTE if asked, and takes the uses removed out of the
/// maptrack entry (freeing the handle when none is left).
fn unmap_begin(
    p: &mut PvMm,
    mem: &mut DirectMap,
    domains: &mut [Domain],
    look: &mut Lookups,
    me: DomId,
    mi: usize,
    op: &gt::GnttabUnmapGrantRef,
) -> Result<Pending, Gntst> {
    let handle = GrantHandle::new(op.handle);
    let m = domains[mi].maptrack.lookup(handle)?;
    if op.dev_bus_addr != 0 && op.dev_bus_addr != m.frame.raw() << 12 {
        return Err(Gntst::BadDevAddr);
    }
    let gi = look.domain(domains, m.granter);
    if let Some(gi) = gi {
        // A grant reference beyond the granter's table: not this granter's mapping.
        if m.gref.raw() >= domains[gi].grant.nr_entries() {
            return Err(Gntst::BadHandle);
        }
    }
    // Xen's unmap_common: the device use goes only with a non-zero dev_bus_addr
    // (checked against the frame above), the host use only with a host_addr.
    let mut uses = MapUse {
        host: false,
        device: m.uses.device && op.dev_bus_addr != 0,
    };
    let mut token = None;
    if op.host_addr != 0 && m.uses.host {
        let (l1, index) = look
            .host_slot(op.host_addr, m.map_flags)
            .map_err(|_| Gntst::GeneralError)?;
        let t = p
            .destroy_grant_mapping(mem, me, l1, index, m.frame, m.map_flags)
            .map_err(|_| Gntst::GeneralError)?;
        token = Some(t);
        uses.host = true;
    }
    domains[mi].maptrack.forget_uses(handle, uses);
    Ok(Pending { m, gi, token, uses })
}
