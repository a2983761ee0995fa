use super::fake::Fake;
use super::*;

const HOST: Bdf = Bdf { bus: 0, devfn: 0 };
const DISK: Bdf = Bdf {
    bus: 0,
    devfn: 3 << 3,
};
const BRIDGE: Bdf = Bdf {
    bus: 0,
    devfn: 4 << 3,
};
const BEHIND: Bdf = Bdf { bus: 5, devfn: 0 };

/// A host bridge; a virtio disk (BAR1 4 KiB memory with the MSI-X table at 0 and the PBA at
/// 0x800, BAR0 64-byte I/O at 0xc040, BAR4 64-bit 16 KiB above 4 GiB); a bridge to bus 5
/// with a function that has one 32-bit 8 KiB BAR and an unassigned one.
fn machine() -> Fake {
    let mut c = Fake::default();
    c.function(HOST, 0x29c0_8086, 0);
    c.function(DISK, 0x1042_1af4, 0);
    c.bar(DISK, 0x10, 0xc041, 0xffff_ffc0);
    c.bar(DISK, 0x14, 0xfebd_1000, 0xffff_f000);
    c.bar(DISK, 0x20, 0xc, 0xffff_c000);
    c.bar(DISK, 0x24, 0x1, 0xffff_ffff);
    c.put16(DISK, reg::STATUS, reg::STATUS_CAP_LIST);
    c.put8(DISK, reg::CAP_PTR, 0x98);
    c.put16(DISK, 0x98, 0x0011);
    c.put16(DISK, 0x98 + 2, 2); // 3 entries
    c.put32(DISK, 0x98 + 4, 1);
    c.put32(DISK, 0x98 + 8, 0x800 | 1);
    c.function(BRIDGE, 0x0001_1b36, 0x01);
    c.put8(BRIDGE, 0x18, 0);
    c.put8(BRIDGE, 0x19, 5);
    c.put8(BRIDGE, 0x1a, 5);
    c.function(BEHIND, 0x1234_5678, 0);
    c.bar(BEHIND, 0x10, 0xfe00_0000, 0xffff_e000);
    c.bar(BEHIND, 0x14, 0, 0xffff_f000);
    c
}

#[test]
fn scan_walks_bridges_and_sizes_bars() {
    let mut c = machine();
    let found = scan(&mut c);
    let bdfs: Vec<Bdf> = found.iter().map(|f| f.bdf).collect();
    assert_eq!(bdfs, [HOST, DISK, BRIDGE, BEHIND]);
    let disk = &found[1];
    assert_eq!(disk.id, 0x1042_1af4);
    assert_eq!(
        disk.bars.as_slice(),
        [
            Bar {
                index: 0,
                space: BarSpace::Io,
                base: 0xc040,
                size: 0x40
            },
            Bar {
                index: 1,
                space: BarSpace::Memory,
                base: 0xfebd_1000,
                size: 0x1000
            },
            Bar {
                index: 4,
                space: BarSpace::Memory,
                base: 0x1_0000_0000,
                size: 0x4000
            },
        ]
    );
    assert_eq!(
        disk.msix,
        Some(MsixLayout {
            pos: 0x98,
            table: Some(0xfebd_1000),
            table_len: 48,
            pba: Some(0xfebd_1800),
            pba_len: 8,
        })
    );
    // The unassigned BAR is left out.
    assert_eq!(found[3].bars.len(), 1);
    assert_eq!(found[3].bars[0].size, 0x2000);
}

#[test]
fn sizing_restores_bars_and_command_and_probes_with_decoding_off() {
    let mut c = machine();
    scan(&mut c);
    assert_eq!(c.get32(DISK, 0x14), 0xfebd_1000);
    assert_eq!(c.get32(DISK, 0x20), 0xc);
    assert_eq!(c.get32(DISK, 0x24), 0x1);
    assert_eq!(c.get32(DISK, 0x10), 0xc041);
    assert_eq!(c.read16(DISK, reg::COMMAND), 0x7);
    assert!(!c.command_during_probe.is_empty());
    assert!(c.command_during_probe.iter().all(|cmd| cmd & 3 == 0));
}

#[test]
fn a_bridge_loop_ends() {
    let mut c = machine();
    // Bus 5's function is itself a bridge back to bus 0.
    c.put8(BEHIND, reg::HEADER_TYPE, 1);
    c.put8(BEHIND, 0x19, 0);
    let b2 = Bdf {
        bus: 5,
        devfn: 1 << 3,
    };
    c.function(b2, 0x0001_1b36, 1);
    c.put8(b2, 0x19, 5);
    let found = scan(&mut c);
    assert_eq!(found.iter().filter(|f| f.bdf == BEHIND).count(), 1);
    assert_eq!(found.len(), 5);
}

#[test]
fn dom0_gets_the_bars_and_the_msix_structures_become_read_only() {
    let mut c = machine();
    let r = Dom0Resources::for_functions(&scan(&mut c));
    assert_eq!(
        r.iomem,
        [
            (0xfebd1, 0xfebd1),
            (0x10_0000, 0x10_0003),
            (0xfe000, 0xfe001)
        ]
    );
    assert_eq!(r.ioports, [(0xcf8, 0xd00), (0xc040, 0xc080)]);
    assert_eq!(r.read_only, [(0xfebd1, 0xfebd1), (0xfebd1, 0xfebd1)]);
}

#[test]
fn msix_capability_writes_are_filtered() {
    let pos = Some(0x98);
    // Outside the capability: untouched.
    assert_eq!(intercept_write(pos, 0x04, 2, 0x6), ConfWrite::Allow(0x6));
    assert_eq!(intercept_write(pos, 0x94, 4, 7), ConfWrite::Allow(7));
    assert_eq!(intercept_write(pos, 0xa4, 4, 7), ConfWrite::Allow(7));
    assert_eq!(intercept_write(None, 0x9a, 4, 1), ConfWrite::Allow(1));
    // Message control as a word: allowed.
    assert_eq!(
        intercept_write(pos, 0x9a, 2, 0xc000),
        ConfWrite::Allow(0xc000)
    );
    // Anything else touching the capability: the table and PBA offsets, the header, a
    // dword or byte over the control word, a write straddling into the capability.
    for (reg, size) in [
        (0x9c, 4),
        (0xa0, 4),
        (0x98, 4),
        (0x98, 2),
        (0x9a, 1),
        (0x9b, 1),
        (0x96, 4),
    ] {
        assert_eq!(
            intercept_write(pos, reg, size, 0),
            ConfWrite::Drop,
            "reg {reg:#x} size {size}"
        );
    }
}

#[test]
fn data_port_targets() {
    let cf8 = CF8_ENABLE | (5 << 16) | (0x18 << 8) | 0x40;
    let f = Bdf {
        bus: 5,
        devfn: 0x18,
    };
    assert_eq!(data_target(cf8, 0xcfc, 4), Some((f, 0x40)));
    assert_eq!(data_target(cf8, 0xcfe, 2), Some((f, 0x42)));
    assert_eq!(data_target(cf8, 0xcff, 1), Some((f, 0x43)));
    // Low two bits of the register number are ignored, as by the hardware.
    assert_eq!(data_target(cf8 | 3, 0xcfc, 4), Some((f, 0x40)));
    assert_eq!(data_target(cf8, 0xcfe, 4), None);
    assert_eq!(data_target(cf8 & !CF8_ENABLE, 0xcfc, 4), None);
    assert_eq!(data_target(cf8, 0xcf8, 4), None);
}

#[test]
fn punching_holes() {
    let mut r = vec![(0, 0xff), (0x200, 0x2ff), (0x400, 0x4ff)];
    punch(&mut r, 0x80, 0x8f);
    punch(&mut r, 0x1f0, 0x20f);
    punch(&mut r, 0x400, 0x4ff);
    punch(&mut r, 0x1000, 0x2000);
    assert_eq!(r, [(0, 0x7f), (0x90, 0xff), (0x210, 0x2ff)]);
}
