//! blkback end to end on the host: xenbus handshake, data round trips, every rejection,
//! persistent grants, busy devices, closing with I/O in flight, hostile frontends.

mod common;

use common::*;
use ring::blkif::*;
use ring::RingMemory;
use xen_abi::GrantRef;

const DOM: u16 = 3;
const DEV: u32 = 51712;

#[test]
fn handshake_writes_linux_keys() {
    let mut h = Harness::new(DOM);
    h.add_disk("vda", 2048, false);
    h.toolstack_attach(DOM, DEV, "vda", "w");
    h.poll();
    let be = be_path(DOM, DEV);
    let get = |k: &str| h.store.get(&format!("{be}/{k}")).map(str::to_string);
    assert_eq!(get("state").as_deref(), Some("2"));
    assert_eq!(get("sectors").as_deref(), Some("2048"));
    assert_eq!(get("sector-size").as_deref(), Some("512"));
    assert_eq!(get("physical-sector-size").as_deref(), Some("4096"));
    assert_eq!(get("info").as_deref(), Some("0"));
    assert_eq!(get("feature-flush-cache").as_deref(), Some("1"));
    assert_eq!(get("feature-discard").as_deref(), Some("1"));
    assert_eq!(get("discard-granularity").as_deref(), Some("4096"));
    assert_eq!(get("discard-alignment").as_deref(), Some("0"));
    assert_eq!(get("discard-secure").as_deref(), Some("0"));
    assert_eq!(get("feature-persistent").as_deref(), Some("1"));
    assert_eq!(get("feature-max-indirect-segments").as_deref(), Some("256"));
    assert_eq!(get("multi-queue-max-queues").as_deref(), Some("1"));
    assert_eq!(get("max-ring-page-order").as_deref(), Some("3"));
    // Waiting for the frontend: no change, no writes.
    let writes = h.store.writes;
    h.poll();
    assert_eq!(h.store.writes, writes);

    let _f = h.connect_frontend(DOM, DEV, 2, false);
    h.poll();
    assert_eq!(h.be_state(DOM, DEV).as_deref(), Some("4"));
    let l = h.bb.list();
    assert_eq!(l.len(), 1);
    assert_eq!(l[0].ring_pages, 4);
    assert_eq!(l[0].evtchn, Some(7));
    assert_eq!(l[0].params, "vda");
    assert_eq!(h.w.borrow().ports_bound.len(), 1);
}

#[test]
fn serving_rings_alone_is_no_handshake_step() {
    // dom0's main loop serves the store after a poll only if it stepped a handshake.
    let mut h = Harness::new(DOM);
    h.store.track_changes = true;
    h.add_disk("vda", 2048, false);
    h.toolstack_attach(DOM, DEV, "vda", "w");
    h.poll();
    assert!(h.bb.stepped(), "the device was found and advertised");
    // Our own writes come back as a change once.
    h.poll();
    let writes = h.store.writes;
    h.poll();
    assert!(!h.bb.stepped());
    assert_eq!(h.store.writes, writes);
    let mut f = h.connect_frontend(DOM, DEV, 0, false);
    h.poll();
    assert!(h.bb.stepped(), "connected");
    h.poll();
    let (_, g) = h.data_page(0xa1, true);
    let writes = h.store.writes;
    send(&mut f, &[rw(BLKIF_OP_WRITE, 1, 8, &[seg(g, 0, 7)])]);
    let r = h.responses(&mut f, 1);
    assert_eq!(status_of(&r, 1), BLKIF_RSP_OKAY);
    assert!(!h.bb.stepped(), "I/O only");
    assert_eq!(h.store.writes, writes, "I/O writes nothing to the store");
}

#[test]
fn read_only_disk_advertised() {
    let mut h = Harness::new(DOM);
    h.add_disk("vdb", 64, false);
    h.toolstack_attach(DOM, DEV, "vdb", "r");
    h.poll();
    let be = be_path(DOM, DEV);
    assert_eq!(h.store.get(&format!("{be}/info")), Some("4"));
    assert_eq!(h.store.get(&format!("{be}/feature-discard")), Some("0"));
}

#[test]
fn write_then_read_round_trip() {
    let mut h = Harness::new(DOM);
    let (disk, _) = h.add_disk("vda", 2048, false);
    let mut f = h.setup(DOM, DEV, "vda", "w", 0, false);

    // Two pages written to sectors 100..116, one partial segment (sectors 2..=5).
    let (_, g1) = h.data_page(0xa1, true);
    let (_, g2) = h.data_page(0xb2, true);
    let (_, g3) = h.data_page(0xc3, true);
    send(
        &mut f,
        &[rw(
            BLKIF_OP_WRITE,
            1,
            100,
            &[seg(g1, 0, 7), seg(g2, 0, 7), seg(g3, 2, 5)],
        )],
    );
    let r = h.responses(&mut f, 1);
    assert_eq!(r.len(), 1);
    assert_eq!(
        (r[0].id, r[0].operation, r[0].status),
        (1, BLKIF_OP_WRITE, BLKIF_RSP_OKAY)
    );
    {
        let d = disk.borrow();
        assert!(d[100 * 512..108 * 512].iter().all(|&b| b == 0xa1));
        assert!(d[108 * 512..116 * 512].iter().all(|&b| b == 0xb2));
        assert!(d[116 * 512..120 * 512].iter().all(|&b| b == 0xc3));
        assert!(d[120 * 512..121 * 512].iter().all(|&b| b == 0));
    }

    // Read back into fresh pages; the tail of the partial page stays untouched.
    let (p1, r1) = h.data_page(0, false);
    let (p2, r2) = h.data_page(0xee, false);
    send(
        &mut f,
        &[rw(BLKIF_OP_READ, 2, 104, &[seg(r1, 0, 7), seg(r2, 1, 4)])],
    );
    let r = h.responses(&mut f, 1);
    assert_eq!(status_of(&r, 2), BLKIF_RSP_OKAY);
    let a = h.page(p1);
    assert!(a[..4 * 512].iter().all(|&b| b == 0xa1) && a[4 * 512..].iter().all(|&b| b == 0xb2));
    let b = h.page(p2);
    assert!(b[..512].iter().all(|&x| x == 0xee));
    assert!(b[512..5 * 512].iter().all(|&x| x == 0xb2));
    assert!(b[5 * 512..].iter().all(|&x| x == 0xee));

    let w = h.w.borrow();
    assert!(w.live.is_empty(), "all grants unmapped after completion");
    assert!(w.dma_violations.is_empty(), "{:?}", w.dma_violations);
    // One batched map call per batch.
    assert_eq!(w.map_calls, 2);
    assert!(w.notifies >= 2);
}

#[test]
fn flush_discard_and_flush_with_data() {
    let mut h = Harness::new(DOM);
    let (disk, flushes) = h.add_disk("vda", 2048, false);
    disk.borrow_mut().fill(0x55);
    let mut f = h.setup(DOM, DEV, "vda", "w", 0, false);

    let flush = rw(BLKIF_OP_FLUSH_DISKCACHE, 1, 0, &[]);
    let mut d = BlkifRequest::default().as_discard();
    d.operation = BLKIF_OP_DISCARD;
    d.id = 2;
    d.sector_number = 10;
    d.nr_sectors = 150; // device takes 64 per discard: split in 3
    let (_, g) = h.data_page(0x77, true);
    let fua = rw(BLKIF_OP_FLUSH_DISKCACHE, 3, 500, &[seg(g, 0, 7)]);
    send(&mut f, &[flush, d.into(), fua]);
    let r = h.responses(&mut f, 3);
    assert_eq!(status_of(&r, 1), BLKIF_RSP_OKAY);
    assert_eq!(status_of(&r, 2), BLKIF_RSP_OKAY);
    assert_eq!(status_of(&r, 3), BLKIF_RSP_OKAY);
    assert_eq!(
        r.iter().find(|x| x.id == 3).unwrap().operation,
        BLKIF_OP_FLUSH_DISKCACHE
    );
    let dd = disk.borrow();
    assert!(dd[10 * 512..160 * 512].iter().all(|&b| b == 0));
    assert!(dd[9 * 512..10 * 512].iter().all(|&b| b == 0x55));
    assert!(dd[160 * 512..161 * 512].iter().all(|&b| b == 0x55));
    assert!(dd[500 * 512..508 * 512].iter().all(|&b| b == 0x77));
    assert_eq!(*flushes.borrow(), 2);
    let log = &h.w.borrow().dev_log;
    assert_eq!(
        log.iter()
            .filter(|e| e.0 == blkback::BlockOp::Discard)
            .count(),
        3
    );
    // The data write precedes its flush.
    let wpos = log
        .iter()
        .position(|e| e.0 == blkback::BlockOp::Write)
        .unwrap();
    let fpos = log
        .iter()
        .rposition(|e| e.0 == blkback::BlockOp::Flush)
        .unwrap();
    assert!(wpos < fpos);
}

#[test]
fn indirect_requests_split_for_the_device() {
    let mut h = Harness::new(DOM);
    let (disk, _) = h.add_disk("vda", 4096, false);
    let mut f = h.setup(DOM, DEV, "vda", "w", 1, false);

    // 40 full pages written through one indirect request (device: 16 segments max).
    let mut segs = Vec::new();
    for i in 0..40u8 {
        let (_, g) = h.data_page(i + 1, true);
        segs.push(seg(g, 0, 7));
    }
    let ind_page = {
        let mut w = h.w.borrow_mut();
        let p = w.new_page();
        for (i, s) in segs.iter().enumerate() {
            let b = zerocopy::IntoBytes::as_bytes(s);
            w.pages[p][i * 8..i * 8 + 8].copy_from_slice(b);
        }
        w.grant(p, true)
    };
    let mut ind: BlkifRequestIndirect = BlkifRequest::default().as_indirect();
    ind.operation = BLKIF_OP_INDIRECT;
    ind.indirect_op = BLKIF_OP_WRITE;
    ind.nr_segments = 40;
    ind.id = 9;
    ind.sector_number = 1000;
    ind.indirect_grefs[0] = ind_page;
    send(&mut f, &[ind.into()]);
    let r = h.responses(&mut f, 1);
    assert_eq!(
        (r[0].id, r[0].operation, r[0].status),
        (9, BLKIF_OP_WRITE, BLKIF_RSP_OKAY)
    );
    {
        let d = disk.borrow();
        for i in 0..40usize {
            let at = (1000 + i * 8) * 512;
            assert!(
                d[at..at + 4096].iter().all(|&b| b == i as u8 + 1),
                "page {i}"
            );
        }
    }
    let w = h.w.borrow();
    let writes: Vec<_> = w
        .dev_log
        .iter()
        .filter(|e| e.0 == blkback::BlockOp::Write)
        .collect();
    assert_eq!(
        writes.iter().map(|e| e.3).collect::<Vec<_>>(),
        vec![16, 16, 8]
    );
    assert_eq!(
        writes.iter().map(|e| e.1).collect::<Vec<_>>(),
        vec![1000, 1128, 1256]
    );
    assert!(w.live.is_empty());
    assert_eq!(w.copies, 1);
}

#[test]
fn every_rejection_leaves_other_requests_alone() {
    let mut h = Harness::new(DOM);
    let (disk, _) = h.add_disk("vda", 1024, false);
    let mut f = h.setup(DOM, DEV, "vda", "w", 1, false);

    let (_, good_w) = h.data_page(0x11, true);
    let (pr, good_r) = h.data_page(0, false);
    let (_, other) = h.data_page(0x99, true);
    let (_, ro_for_read) = h.data_page(0x42, true);
    let bad = GrantRef::new(0xdead);

    let mut too_many = rw(BLKIF_OP_READ, 13, 0, &[seg(other, 0, 7)]);
    too_many.nr_segments = 12;
    let mut secure = BlkifRequest::default().as_discard();
    secure.operation = BLKIF_OP_DISCARD;
    secure.flag = BLKIF_DISCARD_SECURE;
    secure.id = 17;
    secure.nr_sectors = 8;
    let mut big_ind: BlkifRequestIndirect = BlkifRequest::default().as_indirect();
    big_ind.operation = BLKIF_OP_INDIRECT;
    big_ind.indirect_op = BLKIF_OP_READ;
    big_ind.nr_segments = 257;
    big_ind.id = 18;
    let reqs = [
        rw(BLKIF_OP_WRITE, 10, 0, &[seg(good_w, 0, 7)]),
        rw(BLKIF_OP_WRITE, 11, 1020, &[seg(other, 0, 7)]), // past the end
        rw(BLKIF_OP_WRITE, 12, 8, &[seg(other, 0, 7), seg(bad, 0, 7)]), // bad grant
        too_many,
        rw(42, 14, 0, &[seg(other, 0, 7)]), // unknown op
        rw(BLKIF_OP_WRITE_BARRIER, 15, 0, &[seg(other, 0, 7)]), // barrier
        rw(BLKIF_OP_READ, 16, 0, &[seg(other, 3, 2)]), // first > last
        secure.into(),
        big_ind.into(),
        rw(BLKIF_OP_READ, 19, 0, &[seg(ro_for_read, 0, 7)]), // device would write a RO grant
        rw(BLKIF_OP_READ, 20, 16, &[seg(good_r, 0, 7)]),
    ];
    disk.borrow_mut()[16 * 512..24 * 512].fill(0x3c);
    send(&mut f, &reqs);
    let r = h.responses(&mut f, reqs.len());
    assert_eq!(r.len(), reqs.len());
    assert_eq!(status_of(&r, 10), BLKIF_RSP_OKAY);
    assert_eq!(status_of(&r, 11), BLKIF_RSP_ERROR);
    assert_eq!(status_of(&r, 12), BLKIF_RSP_ERROR);
    assert_eq!(status_of(&r, 13), BLKIF_RSP_ERROR);
    assert_eq!(status_of(&r, 14), BLKIF_RSP_EOPNOTSUPP);
    assert_eq!(status_of(&r, 15), BLKIF_RSP_EOPNOTSUPP);
    assert_eq!(status_of(&r, 16), BLKIF_RSP_ERROR);
    assert_eq!(status_of(&r, 17), BLKIF_RSP_EOPNOTSUPP);
    assert_eq!(status_of(&r, 18), BLKIF_RSP_ERROR);
    assert_eq!(status_of(&r, 19), BLKIF_RSP_ERROR);
    assert_eq!(status_of(&r, 20), BLKIF_RSP_OKAY);
    assert_eq!(
        r.iter().find(|x| x.id == 18).unwrap().operation,
        BLKIF_OP_READ
    );
    let d = disk.borrow();
    assert!(d[..8 * 512].iter().all(|&b| b == 0x11));
    // The bad-grant request wrote nothing, even its good segment.
    assert!(d[8 * 512..16 * 512].iter().all(|&b| b == 0));
    assert!(h.page(pr).iter().all(|&b| b == 0x3c));
    let w = h.w.borrow();
    assert!(
        w.live.is_empty(),
        "the bad request's good mapping was unmapped too"
    );
    assert!(w.dma_violations.is_empty());
    // All the mapping of the batch went in one call.
    assert_eq!(w.map_calls, 1);
    assert_eq!(h.bb.list()[0].stats.errors, 9);
}

#[test]
fn write_to_read_only_disk_refused() {
    let mut h = Harness::new(DOM);
    let (disk, _) = h.add_disk("vda", 64, true);
    let mut f = h.setup(DOM, DEV, "vda", "w", 0, false);
    assert_eq!(
        h.store.get(&format!("{}/info", be_path(DOM, DEV))),
        Some("4")
    );
    let (_, g) = h.data_page(0x12, true);
    let (p, r) = h.data_page(0, false);
    disk.borrow_mut()[..4096].fill(0x21);
    send(
        &mut f,
        &[
            rw(BLKIF_OP_WRITE, 1, 0, &[seg(g, 0, 7)]),
            rw(BLKIF_OP_READ, 2, 0, &[seg(r, 0, 7)]),
        ],
    );
    let rs = h.responses(&mut f, 2);
    assert_eq!(status_of(&rs, 1), BLKIF_RSP_ERROR);
    assert_eq!(status_of(&rs, 2), BLKIF_RSP_OKAY);
    assert!(disk.borrow()[..4096].iter().all(|&b| b == 0x21));
    assert!(h.page(p).iter().all(|&b| b == 0x21));
}

#[test]
fn persistent_grants_are_reused_and_released() {
    let mut h = Harness::new(DOM);
    h.add_disk("vda", 1024, false);
    let mut f = h.setup(DOM, DEV, "vda", "w", 0, true);
    let (_, g1) = h.data_page(1, false);
    let (_, g2) = h.data_page(2, false);
    for round in 0..5u64 {
        send(
            &mut f,
            &[rw(
                BLKIF_OP_WRITE,
                round,
                0,
                &[seg(g1, 0, 7), seg(g2, 0, 7)],
            )],
        );
        let r = h.responses(&mut f, 1);
        assert_eq!(status_of(&r, round), BLKIF_RSP_OKAY);
    }
    {
        let w = h.w.borrow();
        assert_eq!(w.mapped_total, 2, "mapped once, then reused");
        assert_eq!(w.live.len(), 2);
        // Persistent mappings are writable (reused for reads).
        assert!(w.live.values().all(|&(_, _, ro)| !ro));
    }
    let st = &h.bb.list()[0];
    assert_eq!(st.persistent_grants, 2);
    assert_eq!(st.stats.persistent_hits, 8);
    // Frontend closes: everything is unmapped.
    h.store.set(&format!("{}/state", fe_path(DOM, DEV)), "5");
    h.poll();
    h.store.set(&format!("{}/state", fe_path(DOM, DEV)), "6");
    h.poll();
    assert_eq!(h.be_state(DOM, DEV).as_deref(), Some("6"));
    let w = h.w.borrow();
    assert!(w.live.is_empty());
    assert_eq!(w.rings_mapped, 0);
    assert!(w.ports_bound.is_empty());
}

#[test]
fn persistent_table_is_bounded() {
    let mut h = Harness::with_config(
        DOM,
        blkback::Config {
            max_persistent_grants: 3,
            ..Default::default()
        },
    );
    h.add_disk("vda", 1024, false);
    let mut f = h.setup(DOM, DEV, "vda", "w", 0, true);
    let segs: Vec<_> = (0..5).map(|i| seg(h.data_page(i, false).1, 0, 7)).collect();
    send(&mut f, &[rw(BLKIF_OP_READ, 1, 0, &segs)]);
    assert_eq!(status_of(&h.responses(&mut f, 1), 1), BLKIF_RSP_OKAY);
    assert_eq!(h.w.borrow().live.len(), 3);
    assert_eq!(h.bb.list()[0].persistent_grants, 3);
}

#[test]
fn busy_device_and_full_ring() {
    let mut h = Harness::new(DOM);
    let (disk, _) = h.add_disk("vda", 4096, false);
    let mut f = h.setup(DOM, DEV, "vda", "w", 0, false);
    // 32 requests (the whole ring) against a device that takes 4 at a time.
    let mut pages = Vec::new();
    let mut reqs = Vec::new();
    for i in 0..32u64 {
        let (p, g) = h.data_page(i as u8, true);
        pages.push(p);
        reqs.push(rw(BLKIF_OP_WRITE, 100 + i, i * 8, &[seg(g, 0, 7)]));
    }
    send(&mut f, &reqs);
    assert!(f.is_full());
    let r = h.responses(&mut f, 32);
    assert_eq!(r.len(), 32);
    assert!(r.iter().all(|x| x.status == BLKIF_RSP_OKAY));
    let d = disk.borrow();
    for i in 0..32usize {
        assert!(d[i * 4096..(i + 1) * 4096].iter().all(|&b| b == i as u8));
    }
    assert!(h.w.borrow().live.is_empty());
}

#[test]
fn close_with_io_in_flight() {
    let mut h = Harness::new(DOM);
    h.add_disk("vda", 1024, false);
    let mut f = h.setup(DOM, DEV, "vda", "w", 0, false);
    h.w.borrow_mut().hold = true;
    let mut reqs = Vec::new();
    for i in 0..8u64 {
        let (_, g) = h.data_page(0, false);
        reqs.push(rw(BLKIF_OP_READ, i, i * 8, &[seg(g, 0, 7)]));
    }
    send(&mut f, &reqs);
    h.poll();
    // 4 on the device, 4 waiting. The toolstack detaches.
    let be = be_path(DOM, DEV);
    h.store.set(&format!("{be}/online"), "0");
    h.store.set(&format!("{be}/state"), "5");
    h.poll();
    assert_eq!(h.be_state(DOM, DEV).as_deref(), Some("5"));
    {
        let w = h.w.borrow();
        assert_eq!(w.live.len(), 4, "pages under DMA stay mapped");
        assert_eq!(w.rings_mapped, 1);
    }
    // The waiting ones were failed already.
    let mut early = Vec::new();
    while let Some(r) = f.get_response().unwrap() {
        early.push(r);
    }
    assert_eq!(early.len(), 4);
    assert!(early.iter().all(|r| r.status == BLKIF_RSP_ERROR));
    h.w.borrow_mut().hold = false;
    h.poll();
    assert_eq!(h.be_state(DOM, DEV).as_deref(), Some("6"));
    let mut late = Vec::new();
    while let Some(r) = f.get_response().unwrap() {
        late.push(r);
    }
    assert_eq!(late.len(), 4);
    assert!(late.iter().all(|r| r.status == BLKIF_RSP_OKAY));
    {
        let w = h.w.borrow();
        assert!(w.live.is_empty());
        assert_eq!(w.rings_mapped, 0);
        assert!(w.ports_bound.is_empty());
        assert_eq!(w.disks_given_back, vec!["vda".to_string()]);
        assert!(w.dma_violations.is_empty());
    }
    // The toolstack removes the directories: the device goes away.
    h.store.rm_tree(&be);
    h.poll();
    assert!(h.bb.is_empty());
    assert_eq!(h.be_state(DOM, DEV), None, "nothing written after removal");
}

#[test]
fn domain_destroyed_with_io_in_flight() {
    let mut h = Harness::new(DOM);
    h.add_disk("vda", 1024, false);
    let mut f = h.setup(DOM, DEV, "vda", "w", 0, true);
    h.w.borrow_mut().hold = true;
    let (_, g) = h.data_page(0, false);
    send(&mut f, &[rw(BLKIF_OP_READ, 1, 0, &[seg(g, 0, 7)])]);
    h.poll();
    h.store.rm_tree(&fe_path(DOM, DEV));
    h.store.rm_tree(&be_path(DOM, DEV));
    h.poll();
    assert!(
        !h.bb.is_empty(),
        "kept until the device lets go of the pages"
    );
    assert_eq!(h.w.borrow().live.len(), 1);
    h.w.borrow_mut().hold = false;
    h.poll();
    assert!(h.bb.is_empty());
    let w = h.w.borrow();
    assert!(w.live.is_empty());
    assert_eq!(w.rings_mapped, 0);
    assert!(w.ports_bound.is_empty());
    assert_eq!(w.disks_given_back, vec!["vda".to_string()]);
    assert!(
        h.store.nodes.is_empty(),
        "nothing recreated: {:?}",
        h.store.nodes
    );
}

#[test]
fn a_new_device_waits_for_a_disk_still_draining_a_destroyed_domains_io() {
    const NEXT: u16 = DOM + 1;
    let mut h = Harness::new(DOM);
    h.add_disk("vda", 1024, false);
    let mut f = h.setup(DOM, DEV, "vda", "w", 0, true);
    h.w.borrow_mut().hold = true;
    let (_, g) = h.data_page(0, false);
    send(&mut f, &[rw(BLKIF_OP_READ, 1, 0, &[seg(g, 0, 7)])]);
    h.poll();
    h.store.rm_tree(&fe_path(DOM, DEV));
    h.store.rm_tree(&be_path(DOM, DEV));
    // The toolstack gives the disk to the next domain while the old I/O is in flight.
    h.toolstack_attach(NEXT, DEV, "vda", "w");
    h.poll();
    assert_eq!(
        h.be_state(NEXT, DEV).as_deref(),
        Some("1"),
        "waits, no error"
    );
    assert!(h
        .store
        .get(&format!(
            "/local/domain/0/error/backend/vbd/{NEXT}/{DEV}/error"
        ))
        .is_none());
    h.w.borrow_mut().hold = false;
    h.poll();
    h.poll();
    assert_eq!(h.be_state(NEXT, DEV).as_deref(), Some("2"), "took the disk");
    // A disk that does not exist at all is still an error at once.
    h.toolstack_attach(NEXT, DEV + 16, "vdz", "w");
    h.poll();
    assert!(matches!(
        h.be_state(NEXT, DEV + 16).as_deref(),
        Some("5" | "6")
    ));
    let err = h
        .store
        .get(&format!(
            "/local/domain/0/error/backend/vbd/{NEXT}/{}/error",
            DEV + 16
        ))
        .unwrap();
    assert!(err.starts_with("19 "), "ENODEV: {err}");
}

#[test]
fn hostile_ring_index_closes_only_that_device() {
    let mut h = Harness::new(DOM);
    let (disk, _) = h.add_disk("vda", 1024, false);
    h.add_disk("vdb", 1024, false);
    let mut bad = h.setup(DOM, DEV, "vda", "w", 0, false);
    let mut good = h.setup(DOM, DEV + 16, "vdb", "w", 0, false);

    // req_prod far beyond what the ring can hold.
    bad.memory().store_u32(0, 1_000_000);
    let (p, g) = h.data_page(0, false);
    disk.borrow_mut(); // untouched
    h.poll();
    h.poll();
    let be = be_path(DOM, DEV);
    assert_eq!(h.be_state(DOM, DEV).as_deref(), Some("5"));
    let err = h
        .store
        .get(&format!(
            "/local/domain/0/error/backend/vbd/{DOM}/{DEV}/error"
        ))
        .unwrap();
    assert!(err.starts_with("71 "), "{err}");
    assert_eq!(h.w.borrow().rings_mapped, 1, "the good ring");
    let _ = be;

    // The other device keeps working.
    h.w.borrow_mut().pages[p] = [0; 4096];
    send(&mut good, &[rw(BLKIF_OP_READ, 5, 0, &[seg(g, 0, 7)])]);
    let r = h.responses(&mut good, 1);
    assert_eq!(status_of(&r, 5), BLKIF_RSP_OKAY);
    // The bad frontend closes; its backend finishes closing.
    h.store.set(&format!("{}/state", fe_path(DOM, DEV)), "6");
    h.poll();
    assert_eq!(h.be_state(DOM, DEV).as_deref(), Some("6"));
    assert!(bad.get_response().is_ok());
}

#[test]
fn flood_of_bad_requests_never_starves_or_panics() {
    let mut h = Harness::new(DOM);
    h.add_disk("vda", 1024, false);
    let mut f = h.setup(DOM, DEV, "vda", "w", 0, false);
    for round in 0..20u64 {
        let reqs: Vec<_> = (0..32)
            .map(|i| rw(200 + (i % 3) as u8, round * 100 + i, u64::MAX, &[]))
            .collect();
        send(&mut f, &reqs);
        let r = h.responses(&mut f, 32);
        assert_eq!(r.len(), 32);
        assert!(r.iter().all(|x| x.status == BLKIF_RSP_EOPNOTSUPP));
    }
}

#[test]
fn frontend_protocol_errors() {
    for (key, val, errno) in [
        ("protocol", "x86_32-abi", "38 "),
        ("ring-page-order", "4", "22 "),
        ("multi-queue-num-queues", "2", "22 "),
        ("event-channel", "zzz", "2 "),
    ] {
        let mut h = Harness::new(DOM);
        h.add_disk("vda", 64, false);
        h.toolstack_attach(DOM, DEV, "vda", "w");
        h.poll();
        let _f = h.connect_frontend(DOM, DEV, 0, false);
        h.store.set(&format!("{}/{key}", fe_path(DOM, DEV)), val);
        h.poll();
        assert_eq!(h.be_state(DOM, DEV).as_deref(), Some("5"), "{key}");
        let err = h
            .store
            .get(&format!(
                "/local/domain/0/error/backend/vbd/{DOM}/{DEV}/error"
            ))
            .unwrap();
        assert!(err.starts_with(errno), "{key}: {err}");
        assert_eq!(h.w.borrow().rings_mapped, 0);
        assert!(h.w.borrow().ports_bound.is_empty());
    }
}

#[test]
fn missing_disk_is_fatal() {
    let mut h = Harness::new(DOM);
    h.toolstack_attach(DOM, DEV, "vdz", "w");
    h.poll();
    let err = h
        .store
        .get(&format!(
            "/local/domain/0/error/backend/vbd/{DOM}/{DEV}/error"
        ))
        .unwrap();
    assert!(err.starts_with("19 "), "{err}");
    // Frontend still Initialising: the backend closes right away and stays closed.
    assert_eq!(h.be_state(DOM, DEV).as_deref(), Some("6"));
    let writes = h.store.writes;
    h.poll();
    h.poll();
    assert_eq!(h.store.writes, writes, "no retry loop");
}

#[test]
fn frontend_reconnects_after_close() {
    let mut h = Harness::new(DOM);
    let (disk, _) = h.add_disk("vda", 64, false);
    let _f = h.setup(DOM, DEV, "vda", "w", 0, false);
    let fe = fe_path(DOM, DEV);
    h.store.set(&format!("{fe}/state"), "5");
    h.poll();
    h.store.set(&format!("{fe}/state"), "6");
    h.poll();
    assert_eq!(h.be_state(DOM, DEV).as_deref(), Some("6"));
    h.store.set(&format!("{fe}/state"), "1");
    h.poll();
    assert_eq!(h.be_state(DOM, DEV).as_deref(), Some("2"));
    let mut f = h.connect_frontend(DOM, DEV, 3, false);
    h.poll();
    assert_eq!(h.be_state(DOM, DEV).as_deref(), Some("4"));
    assert_eq!(h.bb.list()[0].ring_pages, 8);
    let (_, g) = h.data_page(0x5a, true);
    send(&mut f, &[rw(BLKIF_OP_WRITE, 1, 8, &[seg(g, 0, 7)])]);
    assert_eq!(status_of(&h.responses(&mut f, 1), 1), BLKIF_RSP_OKAY);
    assert!(disk.borrow()[8 * 512..16 * 512].iter().all(|&b| b == 0x5a));
}

#[test]
fn four_k_logical_sectors_enforced() {
    let mut h = Harness::new(DOM);
    h.add_disk_with("vda", |i| i.sector_size = 4096, 1024);
    let mut f = h.setup(DOM, DEV, "vda", "w", 0, false);
    let (_, g) = h.data_page(1, true);
    send(
        &mut f,
        &[
            rw(BLKIF_OP_WRITE, 1, 8, &[seg(g, 0, 7)]),
            rw(BLKIF_OP_WRITE, 2, 4, &[seg(g, 0, 7)]),
            rw(BLKIF_OP_WRITE, 3, 8, &[seg(g, 0, 3)]),
        ],
    );
    let r = h.responses(&mut f, 3);
    assert_eq!(status_of(&r, 1), BLKIF_RSP_OKAY);
    assert_eq!(status_of(&r, 2), BLKIF_RSP_ERROR);
    assert_eq!(status_of(&r, 3), BLKIF_RSP_ERROR);
}
