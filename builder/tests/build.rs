//! Building into a mock memory: page-table walks, p2m, segments, start_info, hypercall page.

mod common;

use std::collections::HashMap;

use common::*;
use domain_builder::{
    build, hypercall_page, plan, BootState, BuildError, KernelImage, Layout, LayoutParams,
    StartInfoParams,
};
use xen_abi::{EvtchnPort, Mfn, Pfn};

const BASE: u64 = 0xffff_ffff_8000_0000;
const PTE_RW: u64 = 2;
const UPPER: u64 = 0x67;

struct Built {
    layout: Layout,
    state: BootState,
    mem: MockMem,
}

fn params<'a>(cmdline: &'a [u8], ramdisk: &'a [u8], flags: u32) -> StartInfoParams<'a> {
    StartInfoParams {
        shared_info: Mfn::new(0xabcde),
        flags,
        store_evtchn: EvtchnPort::new(1),
        console_evtchn: EvtchnPort::new(2),
        cmdline,
        ramdisk,
    }
}

fn build_with(spec: &ElfSpec, lp: LayoutParams, cmdline: &[u8], ramdisk: &[u8]) -> Built {
    let bytes = spec.emit();
    let img = KernelImage::parse(&bytes, ALL_FEATURES).unwrap();
    let layout = plan(&img, &lp).unwrap();
    let mut mem = MockMem::new(lp.nr_pages);
    let state = build(&img, &layout, &mut mem, &params(cmdline, ramdisk, 0)).unwrap();
    Built { layout, state, mem }
}

fn linux_domu() -> Built {
    let ramdisk = pattern(10_000, 42);
    build_with(
        &linux_like(),
        LayoutParams {
            nr_pages: 0x8000,
            ramdisk_len: 10_000,
            with_store_and_console: true,
        },
        b"console=hvc0 root=/dev/xvda",
        &ramdisk,
    )
}

fn xtf_domu() -> Built {
    let ramdisk = pattern(5000, 1);
    build_with(
        &xtf_like(),
        LayoutParams {
            nr_pages: 0x1000,
            ramdisk_len: 5000,
            with_store_and_console: true,
        },
        b"",
        &ramdisk,
    )
}

/// Walks the page tables from the L4 for `va`; returns the final L1 entry, checking the
/// flags of the upper entries on the way.
fn walk(mem: &MockMem, l4_mfn: u64, va: u64) -> Option<u64> {
    let mut table_mfn = l4_mfn;
    for level in (1..=4u32).rev() {
        let idx = ((va >> (12 + 9 * (level - 1))) & 511) as usize;
        let pfn = mem
            .pfn_of(table_mfn)
            .expect("table mfn belongs to the domain");
        let entry = mem.u64_at(pfn, idx * 8);
        if entry & 1 == 0 {
            return None;
        }
        if level == 1 {
            return Some(entry);
        }
        assert_eq!(entry & 0xfff, UPPER, "L{level} entry flags for {va:#x}");
        table_mfn = (entry & 0x000f_ffff_ffff_f000) >> 12;
    }
    unreachable!()
}

/// Checks every page of `[va, va + pages * 4096)` maps PFN `pfn..` with the right MFN, RW
/// clear exactly for page-table frames.
fn check_range(b: &Built, va: u64, pfn: u64, pages: u64, pt: &HashMap<u64, u8>) {
    for i in 0..pages {
        let v = va + i * 4096;
        let entry =
            walk(&b.mem, b.state.l4_mfn.raw(), v).unwrap_or_else(|| panic!("{v:#x} unmapped"));
        let p = pfn + i;
        assert_eq!(
            (entry >> 12) & 0xff_ffff_ffff,
            b.mem.mfn_of(p),
            "mfn for {v:#x}"
        );
        let want = if pt.contains_key(&p) { 0x21 } else { 0x23 };
        assert_eq!(entry & 0xfff, want, "L1 flags for {v:#x} (pfn {p:#x})");
        assert_eq!(entry >> 52, 0);
        assert_eq!(entry & PTE_RW == 0, pt.contains_key(&p));
    }
}

fn count_present_leaves(b: &Built) -> u64 {
    let mut n = 0;
    for &(pfn, level) in &b.state.page_tables {
        if level == 1 {
            n += (0..512)
                .filter(|i| b.mem.u64_at(pfn.raw(), i * 8) & 1 != 0)
                .count() as u64;
        }
    }
    n
}

#[test]
fn linux_page_tables_walk() {
    let b = linux_domu();
    let pt: HashMap<u64, u8> = b
        .state
        .page_tables
        .iter()
        .map(|&(p, l)| (p.raw(), l))
        .collect();
    // Initial-mapping tables: L4, L3, L2, then 10 L1s; then the p2m's L3, L2, L1.
    let levels: Vec<u8> = b.state.page_tables.iter().map(|&(_, l)| l).collect();
    assert_eq!(levels, [vec![4, 3, 2], vec![1; 10], vec![3, 2, 1]].concat());
    assert_eq!(b.state.page_tables[0].0, b.state.l4);
    assert_eq!(b.state.l4, Pfn::new(0x1007));
    assert_eq!(b.state.l4_mfn.raw(), b.mem.mfn_of(0x1007));
    let pfns: Vec<u64> = b.state.page_tables.iter().map(|&(p, _)| p.raw()).collect();
    let expect: Vec<u64> = (0x1007..0x1014).chain(0x1443..0x1446).collect();
    assert_eq!(pfns, expect);

    // Every VA of the initial mapping reaches the right frame.
    let mapped = (b.layout.mapping_end() - BASE) / 4096;
    check_range(&b, BASE, 0, mapped, &pt);
    // The p2m list at INIT_P2M.
    let p2m = b.layout.p2m();
    check_range(&b, 0x80_0000_0000, p2m.list.pfn.raw(), p2m.list.pages, &pt);
    // Nothing else is mapped.
    assert_eq!(count_present_leaves(&b), mapped + p2m.list.pages);
    assert!(walk(&b.mem, b.state.l4_mfn.raw(), b.layout.mapping_end()).is_none());
    assert!(walk(&b.mem, b.state.l4_mfn.raw(), BASE - 4096).is_none());
    assert!(walk(
        &b.mem,
        b.state.l4_mfn.raw(),
        0x80_0000_0000 + p2m.list.pages * 4096
    )
    .is_none());
    // Only L4 slots 1 (p2m) and 511 (kernel) are used; 256..=271 stay zero.
    let l4 = b.state.l4.raw();
    for slot in 0..512 {
        let e = b.mem.u64_at(l4, slot * 8);
        assert_eq!(e != 0, slot == 1 || slot == 511, "L4 slot {slot}");
    }
}

#[test]
fn xtf_page_tables_walk_with_p2m_in_mapping() {
    let b = xtf_domu();
    let pt: HashMap<u64, u8> = b
        .state
        .page_tables
        .iter()
        .map(|&(p, l)| (p.raw(), l))
        .collect();
    assert_eq!(pt.len(), 5);
    check_range(&b, 0, 0, 0x400, &pt);
    assert_eq!(count_present_leaves(&b), 0x400);
}

#[test]
fn p2m_list_holds_every_mfn() {
    for b in [linux_domu(), xtf_domu()] {
        let list = b.layout.p2m().list;
        for pfn in 0..b.mem.nr_pages {
            let page = list.pfn.raw() + pfn / 512;
            assert_eq!(
                b.mem.u64_at(page, (pfn % 512) as usize * 8),
                b.mem.mfn_of(pfn)
            );
        }
    }
}

#[test]
fn segments_are_loaded_by_paddr_with_bss_zeroed() {
    let spec = linux_like();
    let b = linux_domu();
    let text = &spec.segments[0].data;
    let data = &spec.segments[1].data;
    let image: Vec<u8> = (0x1000..0x1004)
        .flat_map(|p| b.mem.read(p, 0, 4096))
        .collect();
    assert_eq!(&image[..text.len()], &text[..]);
    assert!(image[0x1800..0x2000].iter().all(|&x| x == 0));
    assert_eq!(&image[0x2000..0x2000 + data.len()], &data[..]);
    assert!(
        image[0x2000 + data.len()..].iter().all(|&x| x == 0),
        "bss zeroed"
    );
    assert_eq!(b.state.entry, 0xffff_ffff_8100_0040);
    assert_eq!(b.state.stack_top, BASE + 0x1015 * 4096);
    assert_eq!(b.state.start_info_va, BASE + 0x1004 * 4096);
    assert_eq!(b.state.start_info, Pfn::new(0x1004));
    assert_eq!(b.state.hypercall_page, None);
}

#[test]
fn bss_overwrites_earlier_segment() {
    // libelf zeroes each segment's bss after copying it, even over an earlier segment.
    let mut spec = xtf_like();
    spec.remove_note(HYPERCALL_PAGE);
    let first = spec.segments[0].clone();
    spec.segments.push(Seg {
        paddr: 0x10_1000,
        vaddr: 0x10_1000,
        data: vec![],
        memsz: 0x800,
        flags: 6,
    });
    let b = build_with(
        &spec,
        LayoutParams {
            nr_pages: 0x1000,
            ramdisk_len: 0,
            with_store_and_console: false,
        },
        b"",
        b"",
    );
    assert!(b.mem.read(0x101, 0, 0x800).iter().all(|&x| x == 0));
    assert_eq!(
        b.mem.read(0x101, 0x800, 0x800),
        first.data[0x1800..0x2000].to_vec()
    );
}

#[test]
fn start_info_fields_domu_unmapped_initrd() {
    let b = linux_domu();
    let si = b.layout.start_info().raw();
    let u64_at = |off| b.mem.u64_at(si, off);
    assert_eq!(&b.mem.read(si, 0, 32)[..15], b"xen-3.0-x86_64\0");
    assert_eq!(u64_at(32), 0x8000, "nr_pages");
    assert_eq!(u64_at(40), 0xabcde << 12, "shared_info machine address");
    assert_eq!(b.mem.u32_at(si, 48), 8, "flags = SIF_MOD_START_PFN");
    assert_eq!(u64_at(56), b.mem.mfn_of(0x1005), "store_mfn");
    assert_eq!(b.mem.u32_at(si, 64), 1, "store_evtchn");
    assert_eq!(u64_at(72), b.mem.mfn_of(0x1006), "console.domU.mfn");
    assert_eq!(b.mem.u32_at(si, 80), 2, "console.domU.evtchn");
    assert_eq!(u64_at(88), BASE + 0x1007 * 4096, "pt_base");
    assert_eq!(u64_at(96), 13, "nr_pt_frames");
    assert_eq!(u64_at(104), 0x80_0000_0000, "mfn_list");
    assert_eq!(u64_at(112), 0x1400, "mod_start = PFN");
    assert_eq!(u64_at(120), 3 * 4096, "mod_len page-rounded");
    let cmd = b"console=hvc0 root=/dev/xvda";
    assert_eq!(
        b.mem.read(si, 128, cmd.len() + 1),
        [&cmd[..], b"\0"].concat()
    );
    assert_eq!(u64_at(1152), 0x1403, "first_p2m_pfn");
    assert_eq!(u64_at(1160), 64 + 3, "nr_p2m_frames");
    assert_eq!(b.state.store_mfn, Some(Mfn::new(b.mem.mfn_of(0x1005))));
    assert_eq!(b.state.console_mfn, Some(Mfn::new(b.mem.mfn_of(0x1006))));
    // Store and console pages are zero; the initrd is in place.
    assert!(!b.mem.pages.contains_key(&0x1005) && !b.mem.pages.contains_key(&0x1006));
    let rd: Vec<u8> = (0x1400..0x1403)
        .flat_map(|p| b.mem.read(p, 0, 4096))
        .collect();
    assert_eq!(&rd[..10_000], &pattern(10_000, 42)[..]);
    assert!(rd[10_000..].iter().all(|&x| x == 0));
}

#[test]
fn start_info_fields_mapped_initrd_and_p2m() {
    let b = xtf_domu();
    let si = b.layout.start_info().raw();
    assert_eq!(si, 0x10f);
    assert_eq!(b.mem.u32_at(si, 48), 0, "no flags");
    assert_eq!(b.mem.u64_at(si, 104), 0x10_7000, "mfn_list VA");
    assert_eq!(b.mem.u64_at(si, 112), 0x10_5000, "mod_start VA");
    assert_eq!(b.mem.u64_at(si, 120), 5000, "mod_len");
    assert_eq!(b.mem.u64_at(si, 1152), 0);
    assert_eq!(b.mem.u64_at(si, 1160), 0);
    assert_eq!(b.mem.read(si, 128, 1), [0]);
    let rd: Vec<u8> = (0x105..0x107)
        .flat_map(|p| b.mem.read(p, 0, 4096))
        .collect();
    assert_eq!(&rd[..5000], &pattern(5000, 1)[..]);
}

#[test]
fn dom0_start_info_has_no_store_or_console() {
    let bytes = linux_like().emit();
    let img = KernelImage::parse(&bytes, ALL_FEATURES).unwrap();
    let lp = LayoutParams {
        nr_pages: 0x8000,
        ramdisk_len: 0,
        with_store_and_console: false,
    };
    let layout = plan(&img, &lp).unwrap();
    let mut mem = MockMem::new(lp.nr_pages);
    let st = build(&img, &layout, &mut mem, &params(b"", b"", 3)).unwrap();
    let si = st.start_info.raw();
    assert_eq!(mem.u32_at(si, 48), 3, "SIF_PRIVILEGED | SIF_INITDOMAIN");
    assert_eq!(mem.u64_at(si, 56), 0);
    assert_eq!(mem.u64_at(si, 72), 0);
    assert_eq!(mem.u64_at(si, 112), 0);
    assert_eq!(mem.u64_at(si, 120), 0);
    assert_eq!(st.store_mfn, None);
    assert_eq!(st.console_mfn, None);
}

#[test]
fn cmdline_is_truncated_and_nul_terminated() {
    let long = vec![b'a'; 2000];
    let b = build_with(
        &xtf_like(),
        LayoutParams {
            nr_pages: 0x1000,
            ramdisk_len: 0,
            with_store_and_console: false,
        },
        &long,
        b"",
    );
    let si = b.layout.start_info().raw();
    let cmd = b.mem.read(si, 128, 1024);
    assert!(cmd[..1023].iter().all(|&c| c == b'a'));
    assert_eq!(cmd[1023], 0);
    assert_eq!(b.mem.u64_at(si, 1152), 0, "first_p2m_pfn not clobbered");

    let b = build_with(
        &xtf_like(),
        LayoutParams {
            nr_pages: 0x1000,
            ramdisk_len: 0,
            with_store_and_console: false,
        },
        b"ab\0cd",
        b"",
    );
    let si = b.layout.start_info().raw();
    assert_eq!(b.mem.read(si, 128, 5), b"ab\0\0\0");
}

#[test]
fn hypercall_page_bytes() {
    let page = hypercall_page();
    // Slot 0: push rcx; push r11; mov $0, eax; syscall; pop r11; pop rcx; ret.
    assert_eq!(
        &page[0..14],
        &[0x51, 0x41, 0x53, 0xb8, 0, 0, 0, 0, 0x0f, 0x05, 0x41, 0x5b, 0x59, 0xc3]
    );
    assert_eq!(
        &page[17 * 32..17 * 32 + 14],
        &[0x51, 0x41, 0x53, 0xb8, 17, 0, 0, 0, 0x0f, 0x05, 0x41, 0x5b, 0x59, 0xc3]
    );
    assert_eq!(
        &page[127 * 32..127 * 32 + 14],
        &[0x51, 0x41, 0x53, 0xb8, 127, 0, 0, 0, 0x0f, 0x05, 0x41, 0x5b, 0x59, 0xc3]
    );
    // Slot 23 (iret): push rcx; push r11; push rax; mov $23, eax; syscall.
    assert_eq!(
        &page[23 * 32..23 * 32 + 11],
        &[0x51, 0x41, 0x53, 0x50, 0xb8, 23, 0, 0, 0, 0x0f, 0x05]
    );
    assert!(page[23 * 32 + 11..24 * 32].iter().all(|&b| b == 0xcc));
    for slot in (0..128).filter(|&s| s != 23) {
        assert!(page[slot * 32 + 14..slot * 32 + 32]
            .iter()
            .all(|&b| b == 0xcc));
    }
}

#[test]
fn hypercall_page_is_written_into_the_image() {
    let b = xtf_domu();
    assert_eq!(b.state.hypercall_page, Some(Pfn::new(0x102)));
    assert_eq!(b.mem.read(0x102, 0, 4096), hypercall_page().to_vec());
    // The rest of the image is the segment's bytes.
    assert_eq!(
        b.mem.read(0x101, 0, 4096),
        pattern(0x3000, 3)[0x1000..0x2000].to_vec()
    );
}

#[test]
fn build_checks_its_inputs() {
    let bytes = linux_like().emit();
    let img = KernelImage::parse(&bytes, ALL_FEATURES).unwrap();
    let other_bytes = xtf_like().emit();
    let other = KernelImage::parse(&other_bytes, ALL_FEATURES).unwrap();
    let lp = LayoutParams {
        nr_pages: 0x8000,
        ramdisk_len: 100,
        with_store_and_console: true,
    };
    let layout = plan(&img, &lp).unwrap();
    let mut mem = MockMem::new(lp.nr_pages);
    assert_eq!(
        build(&other, &layout, &mut mem, &params(b"", &[0; 100], 0)).unwrap_err(),
        BuildError::LayoutMismatch
    );
    assert_eq!(
        build(&img, &layout, &mut mem, &params(b"", &[0; 99], 0)).unwrap_err(),
        BuildError::RamdiskLengthMismatch {
            planned: 100,
            given: 99
        }
    );
    assert_eq!(mem.writes, 0, "nothing written before the checks");
}

#[test]
fn frames_beyond_the_layout_are_untouched() {
    let b = linux_domu();
    let end = b.layout.alloc_end().raw();
    assert!(b.mem.pages.keys().all(|&p| p < end));
}

#[test]
fn p2m_sharing_tables_with_initial_mapping_walks() {
    let mut s = linux_like();
    s.set_note(Note::u64(INIT_P2M, BASE));
    s.set_note(Note::u64(VIRT_BASE, 0xffff_ffff_a000_0000));
    s.set_note(Note::u64(ENTRY, 0xffff_ffff_a100_0040));
    let b = build_with(
        &s,
        LayoutParams {
            nr_pages: 0x8000,
            ramdisk_len: 0,
            with_store_and_console: false,
        },
        b"",
        b"",
    );
    let pt: HashMap<u64, u8> = b
        .state
        .page_tables
        .iter()
        .map(|&(p, l)| (p.raw(), l))
        .collect();
    let levels: Vec<u8> = b.state.page_tables.iter().map(|&(_, l)| l).collect();
    assert_eq!(levels.last(), Some(&1));
    assert_eq!(
        levels.iter().filter(|&&l| l > 1).count(),
        3,
        "L4, L3, L2 shared"
    );
    let vb = 0xffff_ffff_a000_0000u64;
    check_range(&b, vb, 0, (b.layout.mapping_end() - vb) / 4096, &pt);
    let p2m = b.layout.p2m();
    check_range(&b, BASE, p2m.list.pfn.raw(), p2m.list.pages, &pt);
}
