use super::*;
use crate::pci::fake::Fake;

const DEV: Bdf = Bdf {
    bus: 0,
    devfn: 3 << 3,
};

/// A virtio-blk-like function: caps at 0x40 (vendor 0x09) → 0x50 (MSI 0x05) → 0x98
/// (MSI-X, 3 entries, BAR 4 offset 0x3000); BAR 4 64-bit at 0x1_2345_6000.
fn device() -> Fake {
    let mut c = Fake::default();
    c.put32(DEV, 0, 0x1042_1af4);
    c.put16(DEV, reg::STATUS, reg::STATUS_CAP_LIST);
    c.put8(DEV, reg::CAP_PTR, 0x40);
    c.put16(DEV, 0x40, 0x5009);
    c.put16(DEV, 0x50, 0x9805);
    c.put16(DEV, 0x98, 0x0011);
    c.put16(DEV, 0x98 + 2, 2);
    c.put32(DEV, 0x98 + 4, 0x3000 | 4);
    c.put32(DEV, reg::BAR0 + 16, 0x2345_600c);
    c.put32(DEV, reg::BAR0 + 20, 0x1);
    c
}

#[test]
fn capability_walk_finds_msix() {
    let mut c = device();
    assert!(function_present(&mut c, DEV));
    assert_eq!(find_capability(&mut c, DEV, reg::CAP_ID_MSI), Some(0x50));
    assert_eq!(find_capability(&mut c, DEV, reg::CAP_ID_MSIX), Some(0x98));
    assert_eq!(find_capability(&mut c, DEV, 0x10), None);
    assert_eq!(
        msix_capability(&mut c, DEV),
        Some(MsixCap {
            pos: 0x98,
            table_size: 3,
            bir: 4,
            offset: 0x3000
        })
    );
    assert_eq!(bar_address(&mut c, DEV, 4), Ok(0x1_2345_6000));
}

#[test]
fn absent_function_and_no_cap_list() {
    let mut c = device();
    let other = Bdf { bus: 1, devfn: 0 };
    assert!(!function_present(&mut c, other));
    assert_eq!(msix_capability(&mut c, other), None);
    c.put16(DEV, reg::STATUS, 0);
    assert_eq!(msix_capability(&mut c, DEV), None);
}

#[test]
fn looping_capability_list_ends() {
    let mut c = device();
    c.put16(DEV, 0x50, 0x4005); // MSI points back to the first capability
    assert_eq!(find_capability(&mut c, DEV, reg::CAP_ID_MSIX), None);
    c.put16(DEV, 0x50, 0x0805); // a pointer into the header ends the walk
    assert_eq!(find_capability(&mut c, DEV, reg::CAP_ID_MSIX), None);
}

#[test]
fn bars() {
    let mut c = device();
    assert_eq!(bar_address(&mut c, DEV, 6), Err(BarError::BadIndex));
    c.put32(DEV, reg::BAR0, 0xc001);
    assert_eq!(bar_address(&mut c, DEV, 0), Err(BarError::IoSpace));
    c.put32(DEV, reg::BAR0 + 4, 0xfebd_1000);
    assert_eq!(bar_address(&mut c, DEV, 1), Ok(0xfebd_1000));
    assert_eq!(bar_address(&mut c, DEV, 2), Err(BarError::Unassigned));
    c.put32(DEV, reg::BAR0 + 20, 0x4);
    assert_eq!(bar_address(&mut c, DEV, 5), Err(BarError::BadIndex));
}

#[test]
fn guest_bdf() {
    assert_eq!(
        Bdf::from_guest(0, 0x18, false),
        Some(Bdf {
            bus: 0,
            devfn: 0x18
        })
    );
    assert_eq!(Bdf::from_guest(256, 0, false), None);
    assert_eq!(Bdf::from_guest(-1, 0, false), None);
    assert_eq!(Bdf::from_guest(0, 256, false), None);
    assert_eq!(Bdf::from_guest(0x1_0002, 0, true), None);
    assert_eq!(
        Bdf::from_guest(0x0000_0002, 8, true),
        Some(Bdf { bus: 2, devfn: 8 })
    );
    assert_eq!(
        Bdf {
            bus: 2,
            devfn: 0x19
        }
        .config_address(0x9a),
        0x8002_1998
    );
}

#[test]
fn msi_message() {
    assert_eq!(msi_address(0), 0xfee0_0000);
    assert_eq!(msi_address(3), 0xfee0_3000);
    assert_eq!(msi_data(0x31), 0x4031);
}

#[test]
fn vectors() {
    let mut p = VectorPool::new();
    let mut got = Vec::new();
    while let Some(v) = p.alloc() {
        got.push(v);
    }
    assert_eq!(got.first(), Some(&FIRST_DEVICE_VECTOR));
    assert_eq!(got.last(), Some(&LAST_DEVICE_VECTOR));
    assert!(!got.contains(&0x80));
    assert_eq!(
        got.len(),
        usize::from(LAST_DEVICE_VECTOR - FIRST_DEVICE_VECTOR)
    );
    assert_eq!(p.in_use() as usize, got.len());
    p.free(0x42);
    p.free(0xf0); // not a device vector: ignored
    assert_eq!(p.alloc(), Some(0x42));
    assert_eq!(p.alloc(), None);
    assert!(is_device_vector(0x30) && !is_device_vector(0x80) && !is_device_vector(0xf0));
}

fn info(entry: u16) -> PirqInfo {
    PirqInfo {
        vector: 0x30,
        source: Source::MsiX {
            bdf: DEV,
            cap_pos: 0x98,
            entry,
            entry_maddr: 0x1000 + u64::from(entry) * 16,
        },
    }
}

#[test]
fn pirq_allocation_top_down() {
    let mut t = PirqTable::new(HWDOM_NR_PIRQS);
    assert_eq!(t.choose(-1), Ok(255));
    t.insert(255, info(0));
    assert_eq!(t.choose(-1), Ok(254));
    assert_eq!(t.choose(255), Err(Errno::EEXIST));
    assert_eq!(t.choose(256), Err(Errno::EINVAL));
    assert_eq!(t.choose(30), Ok(30));
    assert_eq!(t.find_msix(DEV, 0), Some(255));
    assert_eq!(t.find_msix(DEV, 1), None);
    assert!(t.function_in_use(DEV));
    assert_eq!(t.remove(255), Some(info(0)));
    assert!(!t.function_in_use(DEV));
    assert_eq!(t.in_range(-1), None);
    assert_eq!(t.in_range(256), None);
    assert_eq!(t.in_range(0), Some(0));
}

#[test]
fn pirqs_run_out() {
    let mut t = PirqTable::new(NR_GSI + 2);
    for _ in 0..2 {
        let p = t.choose(-1).unwrap();
        assert!(p >= NR_GSI);
        t.insert(p, info(0));
    }
    assert_eq!(t.choose(-1), Err(Errno::ENOSPC));
    assert_eq!(t.len(), 2);
    let all = t.drain();
    assert_eq!(all.len(), 2);
    assert!(t.is_empty());
    let mut none = PirqTable::new(0);
    assert_eq!(none.choose(-1), Err(Errno::ENOSPC));
    assert_eq!(none.choose(0), Err(Errno::EINVAL));
    none.insert(0, info(0));
}

#[test]
fn vector_owners() {
    let mut o = VectorOwners::new();
    o.set(0x31, Some((DomId::new(0), 255)));
    assert_eq!(o.get(0x31), Some((DomId::new(0), 255)));
    o.set(0x31, None);
    assert_eq!(o.get(0x31), None);
}
