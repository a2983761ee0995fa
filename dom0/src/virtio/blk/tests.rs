use super::*;
use crate::virtio::fake::FakeBlk;
use blkback::DmaSegment;
use ring::VecRingMemory;

type Blk = VirtioBlk<crate::virtio::fake::Regs, VecRingMemory>;

fn setup(fake: &FakeBlk, depth: u16) -> Blk {
    let dma = fake.dma.clone();
    VirtioBlk::new(fake.transport(), &mut || Some(dma.alloc()), depth).unwrap()
}

/// `n` contiguous data pages (the fake allocates consecutively).
fn buffers(fake: &FakeBlk, n: usize) -> Vec<Page<VecRingMemory>> {
    (0..n).map(|_| fake.dma.alloc()).collect()
}

fn segs(pages: &[Page<VecRingMemory>]) -> Vec<DmaSegment> {
    pages
        .iter()
        .map(|p| DmaSegment {
            maddr: p.maddr,
            len: 4096,
        })
        .collect()
}

fn drain(blk: &mut Blk) -> Vec<(u64, DeviceStatus)> {
    let mut v = Vec::new();
    blk.complete(&mut |t, s| v.push((t, s)));
    v
}

#[test]
fn init_negotiates_and_reports_geometry() {
    let fake = FakeBlk::new(2048, blkf::FLUSH | blkf::DISCARD, true, 254);
    let blk = setup(&fake, 32);
    let d = fake.dev.borrow();
    assert_eq!(d.status, 1 | 2 | 8 | 4);
    assert!(d.enabled);
    assert_eq!(d.driver_features & feature::VERSION_1, feature::VERSION_1);
    let i = blk.info();
    assert_eq!(i.sectors, 2048);
    assert_eq!(i.sector_size, 512);
    assert!(i.flush && i.discard && !i.read_only);
    assert_eq!(
        i.max_segments, 250,
        "the indirect table bounds it below seg_max"
    );
    assert_eq!(i.queue_depth, 32);
    assert_eq!(i.discard_granularity, 8 * 512);
    assert_eq!(blk.queue_size(), 256);
}

#[test]
fn refuses_without_version_1() {
    let fake = FakeBlk::new(64, 0, true, 0);
    fake.dev.borrow_mut().features &= !feature::VERSION_1;
    let dma = fake.dma.clone();
    let r = VirtioBlk::new(fake.transport(), &mut || Some(dma.alloc()), 8);
    assert!(matches!(r, Err(Error::Features)));
    assert_eq!(
        fake.dev.borrow().status & crate::virtio::status::FAILED,
        0x80
    );
}

#[test]
fn write_read_many_in_flight_one_kick() {
    let fake = FakeBlk::new(4096, blkf::FLUSH, true, 254);
    let mut blk = setup(&fake, 64);
    // 40 writes of 8 KiB, each from two contiguous pages: one doorbell.
    let pages = buffers(&fake, 80);
    for (i, p) in pages.iter().enumerate() {
        let mut b = vec![0u8; 4096];
        blkfront::fill_pattern(3, 8 * i as u64, &mut b);
        p.mem.write_bytes(0, &b);
    }
    for r in 0..40 {
        let s = segs(&pages[2 * r..2 * r + 2]);
        let req = DeviceRequest {
            tag: r as u64,
            op: BlockOp::Write,
            sector: 16 * r as u64,
            nr_sectors: 16,
            segments: &s,
        };
        blk.submit(&req).unwrap();
    }
    assert_eq!(blk.in_flight(), 40);
    blk.kick();
    blk.kick();
    assert_eq!(fake.dev.borrow().notifies, 1);
    // Contiguous pages merge: header + 1 data + status.
    assert_eq!(fake.process(), 40);
    assert!(fake.dev.borrow().chains.iter().all(|&n| n == 3));
    let done = drain(&mut blk);
    assert_eq!(done.len(), 40);
    assert!(done.iter().all(|&(_, s)| s == DeviceStatus::Ok));
    assert_eq!(blk.in_flight(), 0);
    assert_eq!(
        blkfront::check_pattern(3, 0, &fake.dev.borrow().disk[..40 * 8192]),
        None
    );
    // Read back into scattered (non-contiguous) pages.
    let dst = buffers(&fake, 4);
    let s = [
        DmaSegment {
            maddr: dst[3].maddr,
            len: 4096,
        },
        DmaSegment {
            maddr: dst[1].maddr,
            len: 4096,
        },
    ];
    blk.submit(&DeviceRequest {
        tag: 99,
        op: BlockOp::Read,
        sector: 8,
        nr_sectors: 16,
        segments: &s,
    })
    .unwrap();
    blk.kick();
    fake.process();
    assert_eq!(drain(&mut blk), [(99, DeviceStatus::Ok)]);
    let mut b = vec![0u8; 4096];
    dst[3].mem.read_bytes(0, &mut b);
    assert_eq!(blkfront::check_pattern(3, 8, &b), None);
    dst[1].mem.read_bytes(0, &mut b);
    assert_eq!(blkfront::check_pattern(3, 16, &b), None);
    assert_eq!(fake.dev.borrow().chains.last(), Some(&4));
}

#[test]
fn busy_when_slots_run_out() {
    let fake = FakeBlk::new(64, 0, true, 0);
    let mut blk = setup(&fake, 2);
    let p = buffers(&fake, 1);
    let s = segs(&p[..1]);
    let req = |tag| DeviceRequest {
        tag,
        op: BlockOp::Read,
        sector: 0,
        nr_sectors: 8,
        segments: &s,
    };
    blk.submit(&req(1)).unwrap();
    blk.submit(&req(2)).unwrap();
    assert_eq!(blk.submit(&req(3)), Err(SubmitError::Busy));
    blk.kick();
    fake.process();
    assert_eq!(drain(&mut blk).len(), 2);
    blk.submit(&req(3)).unwrap();
}

#[test]
fn invalid_requests() {
    let fake = FakeBlk::new(64, blkf::RO | blkf::DISCARD, true, 2);
    let mut blk = setup(&fake, 4);
    assert!(blk.info().read_only);
    let p = buffers(&fake, 4);
    let s = [
        DmaSegment {
            maddr: p[0].maddr,
            len: 512,
        },
        DmaSegment {
            maddr: p[2].maddr,
            len: 512,
        },
        DmaSegment {
            maddr: p[0].maddr + 1024,
            len: 512,
        },
    ];
    let mut req = DeviceRequest {
        tag: 0,
        op: BlockOp::Write,
        sector: 0,
        nr_sectors: 1,
        segments: &s[..1],
    };
    assert_eq!(blk.submit(&req), Err(SubmitError::Invalid), "read-only");
    req.op = BlockOp::Read;
    req.sector = 64;
    assert_eq!(blk.submit(&req), Err(SubmitError::Invalid), "past the end");
    req.sector = u64::MAX;
    assert_eq!(blk.submit(&req), Err(SubmitError::Invalid), "overflow");
    req.sector = 0;
    req.nr_sectors = 2;
    assert_eq!(
        blk.submit(&req),
        Err(SubmitError::Invalid),
        "length mismatch"
    );
    req.segments = &s;
    req.nr_sectors = 3;
    assert_eq!(blk.submit(&req), Err(SubmitError::Invalid), "seg_max 2");
    let odd = [DmaSegment {
        maddr: p[0].maddr + 3584,
        len: 1024,
    }];
    req.segments = &odd;
    req.nr_sectors = 2;
    assert_eq!(
        blk.submit(&req),
        Err(SubmitError::Invalid),
        "crosses a page"
    );
    req.op = BlockOp::Discard;
    req.segments = &[];
    assert_eq!(
        blk.submit(&req),
        Err(SubmitError::Invalid),
        "discard on read-only"
    );
    assert_eq!(blk.in_flight(), 0);
    assert_eq!(fake.dev.borrow().notifies, 0);
}

#[test]
fn flush_discard_and_direct_chains() {
    // No indirect descriptors: chains in the ring itself.
    let fake = FakeBlk::new(256, blkf::DISCARD, false, 0);
    let mut blk = setup(&fake, 8);
    assert!(!blk.info().flush);
    assert_eq!(blk.info().max_segments, 253);
    fake.dev.borrow_mut().disk.fill(0xaa);
    blk.submit(&DeviceRequest {
        tag: 5,
        op: BlockOp::Discard,
        sector: 8,
        nr_sectors: 8,
        segments: &[],
    })
    .unwrap();
    // Flush without a volatile cache completes at once, without the device.
    blk.submit(&DeviceRequest {
        tag: 6,
        op: BlockOp::Flush,
        sector: 0,
        nr_sectors: 0,
        segments: &[],
    })
    .unwrap();
    blk.kick();
    fake.process();
    let mut done = drain(&mut blk);
    done.sort_by_key(|d| d.0);
    assert_eq!(done, [(5, DeviceStatus::Ok), (6, DeviceStatus::Ok)]);
    let d = fake.dev.borrow();
    assert!(d.disk[8 * 512..16 * 512].iter().all(|&b| b == 0));
    assert!(d.disk[..8 * 512].iter().all(|&b| b == 0xaa));
    assert_eq!(d.chains, [3]);
}

#[test]
fn polling_until_msix_vector() {
    let fake = FakeBlk::new(64, 0, true, 0);
    let mut blk = setup(&fake, 4);
    assert_eq!(fake.dev.borrow().vector, NO_VECTOR);
    assert!(blk.use_msix_vector(0));
    assert_eq!(fake.dev.borrow().vector, 0);
}

#[test]
fn no_notify_suppresses_doorbell() {
    let fake = FakeBlk::new(64, 0, true, 0);
    let mut blk = setup(&fake, 4);
    fake.dev.borrow_mut().no_notify = true;
    let p = buffers(&fake, 1);
    let s = segs(&p);
    let req = DeviceRequest {
        tag: 1,
        op: BlockOp::Read,
        sector: 0,
        nr_sectors: 8,
        segments: &s,
    };
    blk.submit(&req).unwrap();
    blk.kick();
    assert_eq!(fake.dev.borrow().notifies, 1);
    fake.process();
    drain(&mut blk);
    blk.submit(&req).unwrap();
    blk.kick();
    assert_eq!(
        fake.dev.borrow().notifies,
        1,
        "device asked for no doorbells"
    );
}
