//! `GNTTABOP_copy` (Xen's `gnttab_copy_one`, `gnttab_copy_claim_buf`,
//! `gnttab_copy_buf`): each side is either a grant reference of some domain
//! (`GNTCOPY_source_gref`/`GNTCOPY_dest_gref`) or a frame of the calling domain. The
//! grants are pinned (`GTF_reading` for the source, `GTF_writing` for the destination)
//! and the frames referenced only while the caller copies: [`copy_begin`] validates and
//! returns the frames, [`copy_end`] releases them. [`copy_one`] does both around a
//! caller-supplied byte copy.

use crate::{EntryAccess, FrameRefs, GrantTable};
use xen_abi::grant_table::Gntst;
use xen_abi::grant_table::{GnttabCopy, GNTCOPY_DEST_GREF, GNTCOPY_SOURCE_GREF};
use xen_abi::{DomId, GrantRef, Mfn, PAGE_SIZE};

/// The grant tables of all domains, for copies (which name up to two granters).
pub trait GrantTables {
    /// A domain's shared entries.
    type Entries: EntryAccess;
    /// The grant table and shared entries of `dom` (never `DOMID_SELF`: resolved before);
    /// `None` if there is no such domain.
    fn table(&mut self, dom: DomId) -> Option<(&mut GrantTable, &mut Self::Entries)>;
}

/// One side of a copy, as resolved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// Grant `gref` of domain `dom`.
    Gref {
        /// The granting domain.
        dom: DomId,
        /// The grant reference.
        gref: GrantRef,
    },
    /// A frame of the calling domain.
    Frame(Mfn),
}

/// A copy whose pins and references are held until [`copy_end`].
#[derive(Debug, PartialEq, Eq)]
#[must_use = "the pins and references are released only by copy_end"]
pub struct CopyHold {
    src: Side,
    dst: Side,
    /// Source frame.
    pub src_frame: Mfn,
    /// Byte offset in the source frame.
    pub src_offset: u16,
    /// Destination frame (holds a writable type reference until [`copy_end`]).
    pub dst_frame: Mfn,
    /// Byte offset in the destination frame.
    pub dst_offset: u16,
    /// Bytes to copy; both ranges lie within their frames.
    pub len: u16,
}

/// Resolves one side's domain (Xen's `gnttab_copy_lock_domain`): a frame side must say
/// `DOMID_SELF` (`GNTST_permission_denied` otherwise), a grant side names any domain
/// (`GNTST_bad_domain` if it does not exist).
fn lock_side<T: GrantTables>(
    tables: &mut T,
    caller: DomId,
    domid: u16,
    is_gref: bool,
) -> Result<DomId, Gntst> {
    let d = DomId::new(domid);
    if d != DomId::SELF && !is_gref {
        return Err(Gntst::PermissionDenied);
    }
    let d = if d == DomId::SELF { caller } else { d };
    if tables.table(d).is_none() {
        return Err(Gntst::BadDomain);
    }
    Ok(d)
}

/// Claims one side (Xen's `gnttab_copy_claim_buf`): pin the grant or reference the
/// caller's frame, plus a writable type reference for the destination.
fn claim<T: GrantTables, R: FrameRefs>(
    tables: &mut T,
    refs: &mut R,
    caller: DomId,
    side: Side,
    readonly: bool,
) -> Result<Mfn, Gntst> {
    let frame = match side {
        Side::Gref { dom, gref } => {
            let (t, e) = tables.table(dom).ok_or(Gntst::BadDomain)?;
            t.acquire_for_copy(e, refs, dom, gref, caller, readonly)?
        }
        Side::Frame(mfn) => {
            if !refs.get_frame(mfn, caller) {
                return Err(Gntst::BadPage);
            }
            mfn
        }
    };
    if !readonly && !refs.get_writable(frame) {
        unclaim(tables, refs, side, frame, readonly, false);
        return Err(Gntst::GeneralError);
    }
    Ok(frame)
}

/// Undoes [`claim`] (Xen's `gnttab_copy_release_buf`).
fn unclaim<T: GrantTables, R: FrameRefs>(
    tables: &mut T,
    refs: &mut R,
    side: Side,
    frame: Mfn,
    readonly: bool,
    has_type: bool,
) {
    if let Side::Gref { dom, gref } = side {
        if let Some((t, e)) = tables.table(dom) {
            t.release_for_copy(e, gref, readonly);
        }
    }
    if has_type {
        refs.put_writable(frame);
    }
    refs.put_frame(frame);
}

/// Validates a copy and takes what it needs; `Ok(None)` for a zero-length copy (done,
/// whatever the other fields say, as in Xen).
///
/// Errors, in Xen's order (source domain, destination domain, source, destination,
/// bounds): a frame side whose domid is not `DOMID_SELF` → `GNTST_permission_denied`;
/// an unknown domain → `GNTST_bad_domain`; a grant side: see
/// [`GrantTable::acquire_for_copy`] (the source is pinned read-only, so a
/// `GTF_readonly` grant can be a source but never a destination); a frame side not the
/// caller's → `GNTST_bad_page`; a destination that cannot be writable (a page table, a
/// descriptor page) → `GNTST_general_error`; `offset + len` beyond the page on either
/// side → `GNTST_bad_copy_arg`.
pub fn copy_begin<T: GrantTables, R: FrameRefs>(
    tables: &mut T,
    refs: &mut R,
    caller: DomId,
    op: &GnttabCopy,
) -> Result<Option<CopyHold>, Gntst> {
    if op.len == 0 {
        return Ok(None);
    }
    let src_gref = op.flags & GNTCOPY_SOURCE_GREF != 0;
    let dst_gref = op.flags & GNTCOPY_DEST_GREF != 0;
    let sd = lock_side(tables, caller, op.source.domid, src_gref)?;
    let dd = lock_side(tables, caller, op.dest.domid, dst_gref)?;
    // The union's `ref` member is its low 32 bits (little-endian x86).
    let side = |gref: bool, dom: DomId, u: u64| {
        if gref {
            Side::Gref {
                dom,
                gref: GrantRef::new(u as u32),
            }
        } else {
            Side::Frame(Mfn::new(u))
        }
    };
    let src = side(src_gref, sd, op.source.u);
    let dst = side(dst_gref, dd, op.dest.u);
    let src_frame = claim(tables, refs, caller, src, true)?;
    let dst_frame = match claim(tables, refs, caller, dst, false) {
        Ok(f) => f,
        Err(e) => {
            unclaim(tables, refs, src, src_frame, true, false);
            return Err(e);
        }
    };
    let page = PAGE_SIZE as u32;
    let len = u32::from(op.len);
    if u32::from(op.source.offset).saturating_add(len) > page
        || u32::from(op.dest.offset).saturating_add(len) > page
    {
        unclaim(tables, refs, src, src_frame, true, false);
        unclaim(tables, refs, dst, dst_frame, false, true);
        return Err(Gntst::BadCopyArg);
    }
    Ok(Some(CopyHold {
        src,
        dst,
        src_frame,
        src_offset: op.source.offset,
        dst_frame,
        dst_offset: op.dest.offset,
        len: op.len,
    }))
}

/// Releases a copy's pins (clearing `GTF_reading`/`GTF_writing` when they were the last)
/// and references, after the caller copied.
pub fn copy_end<T: GrantTables, R: FrameRefs>(tables: &mut T, refs: &mut R, hold: CopyHold) {
    unclaim(tables, refs, hold.src, hold.src_frame, true, false);
    unclaim(tables, refs, hold.dst, hold.dst_frame, false, true);
}

/// One `gnttab_copy` element: validates, calls `copy(src, src_offset, dst, dst_offset,
/// len)` for the bytes, releases. Returns the element's status.
pub fn copy_one<T: GrantTables, R: FrameRefs>(
    tables: &mut T,
    refs: &mut R,
    caller: DomId,
    op: &GnttabCopy,
    copy: impl FnOnce(Mfn, u16, Mfn, u16, u16),
) -> Result<(), Gntst> {
    if let Some(h) = copy_begin(tables, refs, caller, op)? {
        copy(h.src_frame, h.src_offset, h.dst_frame, h.dst_offset, h.len);
        copy_end(tables, refs, h);
    }
    Ok(())
}
