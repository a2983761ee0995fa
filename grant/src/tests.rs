//! Unit tests: every operation and every rejection with Xen's GNTST code.
#![allow(clippy::indexing_slicing, clippy::arithmetic_side_effects)]

use crate::alloc::{end_access, grant_access, AllocError, GrantAllocator, StillInUse};
use crate::copy::{copy_begin, copy_end, copy_one, GrantTables};
use crate::mock::{MockEntries, MockRefs, MockTables};
use crate::*;
use alloc_crate::vec::Vec;
use xen_abi::grant_table::*;
use xen_abi::{DomId, Errno, GrantRef, Mfn};

const A: DomId = DomId::new(1);
const B: DomId = DomId::new(2);
const C: DomId = DomId::new(3);

fn r(n: u32) -> GrantRef {
    GrantRef::new(n)
}

/// Granter A with a one-frame table (512 entries); A owns frames 100..110 (105 is a
/// page table), B owns 200..210.
struct World {
    gt: GrantTable,
    e: MockEntries,
    refs: MockRefs,
    mt: MapTrack,
}

fn world() -> World {
    let mut gt = GrantTable::new(4);
    let mut n = 0x1000;
    gt.setup_table(1, || {
        n += 1;
        Some(Mfn::new(n))
    })
    .unwrap();
    let mut refs = MockRefs::default();
    for f in 100..110 {
        refs.own(f, A);
    }
    refs.frames.get_mut(&105).unwrap().page_table = true;
    for f in 200..210 {
        refs.own(f, B);
    }
    World {
        e: MockEntries::new(gt.nr_entries() as usize),
        gt,
        refs,
        mt: MapTrack::new(16),
    }
}

impl World {
    fn map(&mut self, gref: u32, mapper: DomId, flags: u32) -> Result<Mapped, Gntst> {
        self.gt.map(
            &mut self.e,
            &mut self.refs,
            A,
            r(gref),
            mapper,
            &mut self.mt,
            flags,
        )
    }
    fn unmap(&mut self, h: GrantHandle, done: MapUse) -> Result<Mapping, Gntst> {
        self.gt
            .unmap(&mut self.e, &mut self.refs, &mut self.mt, h, done)
    }
    fn flags(&self, gref: u32) -> u16 {
        self.e.get(gref).flags
    }
}

const HOST: u32 = GNTMAP_HOST_MAP;
const HOST_RO: u32 = GNTMAP_HOST_MAP | GNTMAP_READONLY;
const DEV: u32 = GNTMAP_DEVICE_MAP;

#[test]
fn gntst_codes() {
    assert_eq!(Gntst::GeneralError.code(), -1);
    assert_eq!(Gntst::BadGntref.code(), -3);
    assert_eq!(Gntst::NoSpace.code(), -13);
    assert_eq!(Gntst::status(&Ok::<(), Gntst>(())), GNTST_OKAY);
    assert_eq!(Gntst::status(&Err::<(), _>(Gntst::BadPage)), -9);
    let h = Header::new(GTF_PERMIT_ACCESS | GTF_READONLY, B);
    assert_eq!(h.0, 0x0002_0005);
    assert!(h.permits(B, true) && !h.permits(C, true) && h.readonly() && !h.in_use());
    assert!(!Header::new(GTF_PERMIT_ACCESS | GTF_SUB_PAGE, B).permits(B, true));
    assert!(Header::new(GTF_PERMIT_ACCESS | GTF_SUB_PAGE, B).permits(B, false));
}

#[test]
fn map_unmap_sets_and_clears_status() {
    let mut w = world();
    w.e.set(10, GTF_PERMIT_ACCESS, B, 100);
    let m = w.map(10, B, HOST).unwrap();
    assert_eq!(m.frame, Mfn::new(100));
    assert_eq!(w.flags(10), GTF_PERMIT_ACCESS | GTF_READING | GTF_WRITING);
    assert_eq!(w.gt.pins(r(10)).host_rw, 1);
    // A host mapping's frame references are the PTE's, not ours.
    assert!(w.refs.idle());
    // A second, read-only mapping: the writing bit stays until the writable one goes.
    let m2 = w.map(10, B, HOST_RO).unwrap();
    assert_ne!(m.handle, m2.handle);
    let u = w.unmap(m.handle, MapUse::ALL).unwrap();
    assert_eq!(
        (u.granter, u.gref, u.frame, u.readonly),
        (A, r(10), Mfn::new(100), false)
    );
    assert_eq!(w.flags(10), GTF_PERMIT_ACCESS | GTF_READING);
    assert_eq!(w.unmap(m.handle, MapUse::ALL), Err(Gntst::BadHandle));
    w.unmap(m2.handle, MapUse::ALL).unwrap();
    assert_eq!(w.flags(10), GTF_PERMIT_ACCESS);
    assert!(w.gt.is_idle() && w.mt.is_empty());
    assert_eq!(w.gt.inconsistencies(), 0);
}

#[test]
fn map_rejections_with_xen_codes() {
    let mut w = world();
    w.e.set(10, GTF_PERMIT_ACCESS, B, 100);
    w.e.set(11, GTF_PERMIT_ACCESS | GTF_READONLY, B, 101);
    w.e.set(12, GTF_ACCEPT_TRANSFER, B, 102);
    w.e.set(13, GTF_INVALID, B, 103);
    w.e.set(14, GTF_PERMIT_ACCESS, B, 205); // B's own frame, not A's
    w.e.set(15, GTF_PERMIT_ACCESS, B, 105); // a page table of A
    w.e.set(16, GTF_PERMIT_ACCESS | GTF_SUB_PAGE, B, 106);
    w.e.set(17, GTF_TRANSITIVE, B, 107);
    // Wrong flags: neither host nor device map.
    assert_eq!(w.map(10, B, GNTMAP_READONLY), Err(Gntst::BadGntref));
    assert_eq!(w.map(10, B, 0), Err(Gntst::BadGntref));
    // Bad ref.
    assert_eq!(w.map(512, B, HOST), Err(Gntst::BadGntref));
    assert_eq!(w.map(u32::MAX, B, HOST), Err(Gntst::BadGntref));
    // Mapping a grant not given to you.
    assert_eq!(w.map(10, C, HOST), Err(Gntst::GeneralError));
    // Writing through a read-only grant.
    assert_eq!(w.map(11, B, HOST), Err(Gntst::GeneralError));
    assert_eq!(w.map(11, B, DEV), Err(Gntst::GeneralError));
    // Wrong entry types.
    for g in [12, 13, 16, 17] {
        assert_eq!(w.map(g, B, HOST_RO), Err(Gntst::GeneralError), "entry {g}");
    }
    // Frame not the granter's.
    assert_eq!(w.map(14, B, HOST_RO), Err(Gntst::BadPage));
    // Device map of a page table writable: the frame cannot be pinned.
    assert_eq!(w.map(15, B, DEV), Err(Gntst::GeneralError));
    // Nothing stuck: no status bits, no pins, no refs, no handles.
    for g in 10..18 {
        assert_eq!(
            w.e.get(g).flags & (GTF_READING | GTF_WRITING),
            0,
            "entry {g}"
        );
    }
    assert!(w.gt.is_idle() && w.refs.idle() && w.mt.is_empty());
    // Read-only mapping of a read-only grant works; of a page table too.
    let m = w.map(11, B, HOST_RO).unwrap();
    assert_eq!(w.flags(11), GTF_PERMIT_ACCESS | GTF_READONLY | GTF_READING);
    // Pinned for B: C still cannot use it, and B cannot upgrade to writable.
    assert_eq!(w.map(11, C, HOST_RO), Err(Gntst::GeneralError));
    assert_eq!(w.map(11, B, HOST), Err(Gntst::GeneralError));
    assert_eq!(w.flags(11), GTF_PERMIT_ACCESS | GTF_READONLY | GTF_READING);
    w.unmap(m.handle, MapUse::ALL).unwrap();
    w.map(15, B, HOST_RO).unwrap();
}

#[test]
fn domid_change_while_pinned_is_ignored_until_unpinned() {
    let mut w = world();
    w.e.set(20, GTF_PERMIT_ACCESS, B, 100);
    let m = w.map(20, B, HOST_RO).unwrap();
    // The guest rewrites the entry while pinned: later pins use the active entry.
    w.e.set(20, GTF_PERMIT_ACCESS | GTF_READING, C, 101);
    let m2 = w.map(20, B, HOST_RO).unwrap();
    assert_eq!(m2.frame, Mfn::new(100));
    assert_eq!(w.map(20, C, HOST_RO), Err(Gntst::GeneralError));
    w.unmap(m.handle, MapUse::ALL).unwrap();
    w.unmap(m2.handle, MapUse::ALL).unwrap();
    assert_eq!(w.flags(20), GTF_PERMIT_ACCESS);
    // Now unpinned, the new contents count.
    assert_eq!(w.map(20, C, HOST_RO).unwrap().frame, Mfn::new(101));
}

#[test]
fn revoking_while_mapped_fails_and_bits_stay() {
    let mut w = world();
    grant_access(&mut w.e, r(30), B, 100, false);
    assert_eq!(w.e.get(30), crate::entry::entry(GTF_PERMIT_ACCESS, B, 100));
    let m = w.map(30, B, HOST).unwrap();
    // The frontend's revoke refuses while the backend maps the grant.
    assert_eq!(end_access(&mut w.e, r(30)), Err(StillInUse));
    assert_eq!(w.flags(30), GTF_PERMIT_ACCESS | GTF_READING | GTF_WRITING);
    // A buggy/hostile frontend that clears the flags blindly cannot take the frame
    // back: the pin and the mapping stay, and the hypervisor's bits come back on the
    // next writable pin.
    w.e.set(30, 0, B, 100);
    assert_eq!(w.gt.pins(r(30)).host_rw, 1);
    assert_eq!(w.gt.still_mapped().len(), 1);
    let m2 = w.map(30, B, HOST_RO).unwrap();
    w.unmap(m.handle, MapUse::ALL).unwrap();
    w.unmap(m2.handle, MapUse::ALL).unwrap();
    assert_eq!(w.flags(30), 0);
    // Once unmapped, revoking works.
    grant_access(&mut w.e, r(30), B, 100, true);
    let m = w.map(30, B, HOST_RO).unwrap();
    assert_eq!(end_access(&mut w.e, r(30)), Err(StillInUse));
    w.unmap(m.handle, MapUse::ALL).unwrap();
    assert_eq!(end_access(&mut w.e, r(30)), Ok(()));
    assert_eq!(w.flags(30), 0);
}

#[test]
fn device_map_holds_refs_until_device_unmap() {
    let mut w = world();
    w.e.set(40, GTF_PERMIT_ACCESS, B, 100);
    let m = w.map(40, B, HOST | DEV).unwrap();
    let f = w.refs.frames[&100];
    assert_eq!((f.count, f.writable), (1, 1));
    assert_eq!(w.gt.pins(r(40)).dev_rw, 1);
    // Remove the host use only: the handle and the device refs stay.
    w.unmap(
        m.handle,
        MapUse {
            host: true,
            device: false,
        },
    )
    .unwrap();
    assert_eq!(
        w.mt.lookup(m.handle).unwrap().uses,
        MapUse {
            host: false,
            device: true
        }
    );
    assert_eq!(w.flags(40), GTF_PERMIT_ACCESS | GTF_READING | GTF_WRITING);
    // Unmapping the host use again does nothing.
    w.unmap(
        m.handle,
        MapUse {
            host: true,
            device: false,
        },
    )
    .unwrap();
    assert_eq!(w.gt.pins(r(40)).dev_rw, 1);
    w.unmap(
        m.handle,
        MapUse {
            host: false,
            device: true,
        },
    )
    .unwrap();
    assert!(w.refs.idle() && w.gt.is_idle() && w.mt.is_empty());
    assert_eq!(w.flags(40), GTF_PERMIT_ACCESS);
    assert_eq!(w.refs.bugs, 0);
}

#[test]
fn maptrack_exhaustion() {
    let mut w = world();
    w.mt = MapTrack::new(3);
    w.e.set(50, GTF_PERMIT_ACCESS, B, 100);
    let hs: Vec<_> = (0..3)
        .map(|_| w.map(50, B, HOST_RO).unwrap().handle)
        .collect();
    assert_eq!(w.map(50, B, HOST_RO), Err(Gntst::NoSpace));
    // Checked before the reference: even a bad ref gets no_space, as in Xen.
    assert_eq!(w.map(9999, B, HOST_RO), Err(Gntst::NoSpace));
    // But bad flags come first.
    assert_eq!(w.map(50, B, 0), Err(Gntst::BadGntref));
    assert_eq!(w.gt.pins(r(50)).host_ro, 3);
    w.unmap(hs[1], MapUse::ALL).unwrap();
    let h = w.map(50, B, HOST_RO).unwrap().handle;
    assert_eq!(h, hs[1]);
    assert_eq!(w.mt.len(), 3);
}

#[test]
fn pin_counter_limit() {
    let mut w = world();
    w.mt = MapTrack::new(1000);
    w.e.set(60, GTF_PERMIT_ACCESS, B, 100);
    for _ in 0..PIN_LIMIT {
        w.map(60, B, HOST_RO).unwrap();
    }
    assert_eq!(w.map(60, B, HOST_RO), Err(Gntst::GeneralError));
    // Another kind still has room.
    w.map(60, B, HOST).unwrap();
}

#[test]
fn unstable_entry_gives_up_after_five_tries() {
    let mut w = world();
    w.e.set(70, GTF_PERMIT_ACCESS, B, 100);
    // The guest toggles GTF_PAT before every CAS: the hypervisor retries 5 times.
    w.e.meddler = Some(alloc_crate::boxed::Box::new(|_, h: Header| {
        Header(h.0 ^ u32::from(GTF_PAT))
    }));
    assert_eq!(w.map(70, B, HOST_RO), Err(Gntst::GeneralError));
    assert_eq!(w.e.cas_count, 5);
    assert_eq!(w.flags(70) & (GTF_READING | GTF_WRITING), 0);
    assert!(w.gt.is_idle() && w.mt.is_empty());
    // Once it stops, it works.
    w.e.meddler = None;
    w.map(70, B, HOST_RO).unwrap();
}

#[test]
fn mapper_and_granter_teardown() {
    let mut w = world();
    w.e.set(80, GTF_PERMIT_ACCESS, B, 100);
    w.e.set(81, GTF_PERMIT_ACCESS, B, 101);
    w.map(80, B, HOST).unwrap();
    w.map(81, B, HOST_RO | DEV).unwrap();
    // The granter dies: both frames are reported as still mapped.
    let mut left = w.gt.still_mapped();
    left.sort_by_key(|s| s.gref);
    assert_eq!(left.len(), 2);
    assert_eq!(
        (left[0].gref, left[0].domid, left[0].frame),
        (r(80), B, Mfn::new(100))
    );
    assert_eq!(left[1].pins.dev_ro, 1);
    assert!(!w.gt.is_idle());
    // The mapper dies: every mapping is released.
    for (_, m) in w.mt.drain() {
        w.gt.release_mapping(&mut w.e, &mut w.refs, &m);
    }
    assert!(w.gt.is_idle() && w.refs.idle() && w.mt.is_empty());
    assert_eq!(w.flags(80), GTF_PERMIT_ACCESS);
    assert_eq!(w.flags(81), GTF_PERMIT_ACCESS);
    assert_eq!(w.gt.inconsistencies(), 0);
}

#[test]
fn unmap_with_foreign_handle_is_bad_handle() {
    let mut w = world();
    w.e.set(90, GTF_PERMIT_ACCESS, B, 100);
    let m = w.map(90, B, HOST).unwrap();
    // A handle recorded against a bigger table than this one's.
    let mut other = GrantTable::new(4);
    let mut n = 0;
    other
        .setup_table(2, || {
            n += 1;
            Some(Mfn::new(n))
        })
        .unwrap();
    let mut oe = MockEntries::new(1024);
    oe.set(600, GTF_PERMIT_ACCESS, B, 100);
    let mo = other
        .map(&mut oe, &mut w.refs, A, r(600), B, &mut w.mt, HOST)
        .unwrap();
    assert_eq!(w.unmap(mo.handle, MapUse::ALL), Err(Gntst::BadHandle));
    assert_eq!(
        w.unmap(GrantHandle::new(1234), MapUse::ALL),
        Err(Gntst::BadHandle)
    );
    w.unmap(m.handle, MapUse::ALL).unwrap();
}

#[test]
fn setup_query_version() {
    let mut gt = GrantTable::new(4);
    assert_eq!(gt.query_size(), (0, 4));
    let mut n = 0;
    let mut alloc = || {
        n += 1;
        Some(Mfn::new(n))
    };
    assert_eq!(
        gt.setup_table(2, &mut alloc).unwrap(),
        &[Mfn::new(1), Mfn::new(2)]
    );
    // Asking for fewer returns a prefix; the table does not shrink.
    assert_eq!(gt.setup_table(1, &mut alloc).unwrap(), &[Mfn::new(1)]);
    assert_eq!(gt.setup_table(0, &mut alloc).unwrap(), &[]);
    assert_eq!(gt.query_size(), (2, 4));
    assert_eq!(gt.nr_entries(), 1024);
    assert_eq!(gt.setup_table(5, &mut alloc), Err(Gntst::GeneralError));
    assert_eq!(gt.setup_table(4, || None), Err(Gntst::GeneralError));
    assert_eq!(gt.query_size(), (2, 4));
    assert_eq!(gt.setup_table(4, &mut alloc).unwrap().len(), 4);
    assert_eq!(gt.set_version(1), (Ok(()), 1));
    assert_eq!(gt.set_version(2), (Err(Errno::ENOSYS), 1));
    assert_eq!(gt.set_version(0), (Err(Errno::EINVAL), 1));
    assert_eq!(gt.set_version(3), (Err(Errno::EINVAL), 1));
    assert_eq!(gt.version(), 1);
}

fn copy_op(src: (u64, DomId, u16), dst: (u64, DomId, u16), len: u16, flags: u16) -> GnttabCopy {
    GnttabCopy {
        source: GnttabCopyPtr {
            u: src.0,
            domid: src.1.raw(),
            offset: src.2,
            pad: 0,
        },
        dest: GnttabCopyPtr {
            u: dst.0,
            domid: dst.1.raw(),
            offset: dst.2,
            pad: 0,
        },
        len,
        flags,
        status: 0,
        pad: 0,
    }
}

/// A grants B entries; B copies.
fn copy_world() -> (MockTables, MockRefs) {
    let mut t = MockTables::default();
    t.add(A);
    t.add(B);
    let mut refs = MockRefs::default();
    for f in 100..110 {
        refs.own(f, A);
    }
    refs.frames.get_mut(&105).unwrap().page_table = true;
    for f in 200..210 {
        refs.own(f, B);
    }
    refs.frames.get_mut(&205).unwrap().page_table = true;
    let e = t.entries(A);
    e.set(10, GTF_PERMIT_ACCESS, B, 100);
    e.set(11, GTF_PERMIT_ACCESS | GTF_READONLY, B, 101);
    e.set(12, GTF_PERMIT_ACCESS, C, 102);
    e.set(13, GTF_PERMIT_ACCESS, B, 205);
    e.set(14, GTF_PERMIT_ACCESS, B, 105);
    (t, refs)
}

#[test]
fn copy_gref_to_gmfn_and_back() {
    let (mut t, mut refs) = copy_world();
    let sg = GNTCOPY_SOURCE_GREF;
    let dg = GNTCOPY_DEST_GREF;
    let mut seen = None;
    // From A's grant 10 into B's frame 200.
    let op = copy_op((10, A, 100), (200, DomId::SELF, 0), 64, sg);
    copy_one(&mut t, &mut refs, B, &op, |s, so, d, dof, l| {
        seen = Some((s, so, d, dof, l))
    })
    .unwrap();
    assert_eq!(seen, Some((Mfn::new(100), 100, Mfn::new(200), 0, 64)));
    // Held only during the copy.
    assert_eq!(t.entries(A).get(10).flags, GTF_PERMIT_ACCESS);
    assert!(refs.idle() && t.table(A).is_idle());
    // During: the source has GTF_reading only, the destination GTF_reading|writing.
    let op = copy_op((200, DomId::SELF, 0), (10, A, 0), 4096, dg);
    let h = copy_begin(&mut t, &mut refs, B, &op).unwrap().unwrap();
    assert_eq!(
        t.entries(A).get(10).flags,
        GTF_PERMIT_ACCESS | GTF_READING | GTF_WRITING
    );
    assert_eq!(refs.frames[&100].writable, 1);
    assert_eq!(
        (h.src_frame, h.dst_frame, h.len),
        (Mfn::new(200), Mfn::new(100), 4096)
    );
    copy_end(&mut t, &mut refs, h);
    assert_eq!(t.entries(A).get(10).flags, GTF_PERMIT_ACCESS);
    // gref to gref, the read-only grant as the source.
    let op = copy_op((11, A, 0), (10, A, 0), 8, sg | dg);
    copy_one(&mut t, &mut refs, B, &op, |_, _, _, _, _| {}).unwrap();
    // Zero length: okay whatever the rest says.
    let op = copy_op((999, C, 0), (999, C, 5000), 0, 0);
    assert_eq!(
        copy_one(&mut t, &mut refs, B, &op, |_, _, _, _, _| panic!()),
        Ok(())
    );
    assert!(refs.idle() && t.table(A).is_idle());
    assert_eq!(refs.bugs, 0);
}

#[test]
fn copy_rejections_with_xen_codes() {
    let (mut t, mut refs) = copy_world();
    let sg = GNTCOPY_SOURCE_GREF;
    let dg = GNTCOPY_DEST_GREF;
    let me = DomId::SELF;
    let cases = [
        // A frame side naming a domain (even the caller's own id).
        (
            copy_op((100, A, 0), (200, me, 0), 8, 0),
            Gntst::PermissionDenied,
        ),
        (
            copy_op((200, B, 0), (200, me, 0), 8, 0),
            Gntst::PermissionDenied,
        ),
        (
            copy_op((200, me, 0), (100, A, 0), 8, 0),
            Gntst::PermissionDenied,
        ),
        // Unknown domain.
        (copy_op((10, C, 0), (200, me, 0), 8, sg), Gntst::BadDomain),
        (copy_op((200, me, 0), (10, C, 0), 8, dg), Gntst::BadDomain),
        // Bad ref.
        (copy_op((512, A, 0), (200, me, 0), 8, sg), Gntst::BadGntref),
        // A grant not given to the caller.
        (
            copy_op((12, A, 0), (200, me, 0), 8, sg),
            Gntst::GeneralError,
        ),
        // Writing through a read-only grant.
        (
            copy_op((200, me, 0), (11, A, 0), 8, dg),
            Gntst::GeneralError,
        ),
        // Frame not the granter's.
        (copy_op((13, A, 0), (200, me, 0), 8, sg), Gntst::BadPage),
        // The caller's frame side not its own.
        (copy_op((100, me, 0), (10, A, 0), 8, dg), Gntst::BadPage),
        // Destination a page table (granted or own).
        (
            copy_op((200, me, 0), (14, A, 0), 8, dg),
            Gntst::GeneralError,
        ),
        (
            copy_op((10, A, 0), (205, me, 0), 8, sg),
            Gntst::GeneralError,
        ),
        // Beyond the page.
        (
            copy_op((10, A, 4090), (200, me, 0), 8, sg),
            Gntst::BadCopyArg,
        ),
        (
            copy_op((10, A, 0), (200, me, 4089), 8, sg),
            Gntst::BadCopyArg,
        ),
        (
            copy_op((10, A, 0), (200, me, 0), 4097, sg),
            Gntst::BadCopyArg,
        ),
        (
            copy_op((10, A, 0xffff), (200, me, 0xffff), 0xffff, sg),
            Gntst::BadCopyArg,
        ),
    ];
    for (i, (op, want)) in cases.iter().enumerate() {
        let got = copy_one(&mut t, &mut refs, B, op, |_, _, _, _, _| panic!("copied"));
        assert_eq!(got, Err(*want), "case {i}");
        assert!(refs.idle(), "case {i}: refs left");
        assert!(t.table(A).is_idle(), "case {i}: pins left");
        for g in 10..15 {
            assert_eq!(
                t.entries(A).get(g).flags & (GTF_READING | GTF_WRITING),
                0,
                "case {i}: entry {g}"
            );
        }
    }
    assert_eq!(refs.bugs, 0);
    // A copy against a grant mapped by another domain fails while it is mapped.
    let mut mt = MapTrack::default();
    t.entries(A).set(20, GTF_PERMIT_ACCESS, C, 100);
    let (gt, e) = GrantTables::table(&mut t, A).unwrap();
    gt.map(e, &mut refs, A, r(20), C, &mut mt, HOST_RO).unwrap();
    let op = copy_op((20, A, 0), (200, me, 0), 8, sg);
    assert_eq!(
        copy_one(&mut t, &mut refs, B, &op, |_, _, _, _, _| {}),
        Err(Gntst::GeneralError)
    );
    // And the mapper's own copy on it works and leaves its pin.
    let op = copy_op((20, A, 0), (300, me, 0), 8, sg);
    refs.own(300, C);
    t.add(C);
    copy_one(&mut t, &mut refs, C, &op, |_, _, _, _, _| {}).unwrap();
    assert_eq!(t.table(A).pins(r(20)).host_ro, 1);
}

#[test]
fn copy_from_dying_granter_after_frame_left() {
    let (mut t, mut refs) = copy_world();
    let mut mt = MapTrack::default();
    let (gt, e) = GrantTables::table(&mut t, A).unwrap();
    gt.map(e, &mut refs, A, r(10), B, &mut mt, HOST_RO).unwrap();
    // The frame no longer belongs to A (A is dying and relinquished it).
    refs.frames.get_mut(&100).unwrap().owner = None;
    let op = copy_op((10, A, 0), (200, DomId::SELF, 0), 8, GNTCOPY_SOURCE_GREF);
    assert_eq!(
        copy_one(&mut t, &mut refs, B, &op, |_, _, _, _, _| {}),
        Err(Gntst::BadDomain)
    );
    assert_eq!(t.table(A).pins(r(10)).host_ro, 1);
}

#[test]
fn allocator() {
    let mut a = GrantAllocator::new(1).unwrap();
    assert_eq!(a.capacity(), 512);
    assert_eq!(a.free_count(), 504);
    assert_eq!(a.claim(), Ok(r(8)));
    let b = a.claim_batch(3).unwrap();
    assert_eq!(b, [r(9), r(10), r(11)]);
    assert_eq!(a.claim_batch(501), Err(AllocError::Exhausted));
    assert_eq!(a.free_count(), 500);
    // Reserved, free, out of range and duplicate releases are refused, batch all-or-none.
    assert_eq!(a.release(r(0)), Err(AllocError::NotAllocated(r(0))));
    assert_eq!(a.release(r(100)), Err(AllocError::NotAllocated(r(100))));
    assert_eq!(a.release(r(512)), Err(AllocError::NotAllocated(r(512))));
    assert_eq!(
        a.release_batch(&[r(9), r(9)]),
        Err(AllocError::NotAllocated(r(9)))
    );
    assert_eq!(
        a.release_batch(&[r(9), r(100)]),
        Err(AllocError::NotAllocated(r(100)))
    );
    assert_eq!(a.free_count(), 500);
    a.release_batch(&b).unwrap();
    a.release(r(8)).unwrap();
    assert_eq!(a.release(r(8)), Err(AllocError::NotAllocated(r(8))));
    assert_eq!(a.free_count(), 504);
    let all = a.claim_batch(504).unwrap();
    assert!(all.iter().all(|g| g.raw() >= 8 && g.raw() < 512));
    assert_eq!(a.claim(), Err(AllocError::Exhausted));
    a.grow(2).unwrap();
    assert_eq!(a.claim(), Ok(r(512)));
    assert_eq!(a.free_count(), 511);
    assert_eq!(
        GrantAllocator::new(u32::MAX).err(),
        Some(AllocError::TooLarge)
    );
}
