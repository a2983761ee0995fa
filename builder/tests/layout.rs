//! The layout of ABI.md 1.3 (libxc order) for Linux-like and XTF-like kernels.

mod common;

use common::*;
use domain_builder::{plan, BuildError, KernelImage, LayoutParams, Region};
use xen_abi::Pfn;

const BASE: u64 = 0xffff_ffff_8000_0000;

fn image(spec: &ElfSpec) -> KernelImage<'static> {
    let bytes: &'static [u8] = Box::leak(spec.emit().into_boxed_slice());
    KernelImage::parse(bytes, ALL_FEATURES).unwrap()
}

fn region(pfn: u64, pages: u64) -> Region {
    Region {
        pfn: Pfn::new(pfn),
        pages,
    }
}

#[test]
fn linux_like_domu_layout() {
    let img = image(&linux_like());
    let l = plan(
        &img,
        &LayoutParams {
            nr_pages: 0x8000,
            ramdisk_len: 10_000,
            with_store_and_console: true,
        },
    )
    .unwrap();
    // 1-2: 16 MiB of padding, then the image (4 pages) at PFN 0x1000.
    assert_eq!(l.kernel(), region(0x1000, 4));
    // 5-7.
    assert_eq!(l.start_info(), Pfn::new(0x1004));
    assert_eq!(l.xenstore(), Some(Pfn::new(0x1005)));
    assert_eq!(l.console(), Some(Pfn::new(0x1006)));
    // 8: L4 + L3 + L2 + 10 L1s (the mapping reaches 20 MiB).
    assert_eq!(l.page_tables(), region(0x1007, 13));
    // 9-10.
    assert_eq!(l.boot_stack(), Pfn::new(0x1014));
    assert_eq!(l.mapping_end(), BASE + 0x140_0000);
    assert_eq!(l.va_of(Pfn::new(0x1004)), Some(BASE + 0x100_4000));
    assert_eq!(l.va_of(Pfn::new(0x1400)), None);
    // 11: unmapped initrd right after the mapping.
    let rd = l.ramdisk().unwrap();
    assert_eq!(rd.region, region(0x1400, 3));
    assert!(!rd.mapped);
    assert_eq!(rd.len, 10_000);
    // 12: p2m list (0x8000 * 8 bytes = 64 pages) at INIT_P2M, then its L3, L2, L1.
    let p2m = l.p2m();
    assert_eq!(p2m.list, region(0x1403, 64));
    assert_eq!(p2m.va, 0x80_0000_0000);
    assert_eq!(p2m.tables, Some(region(0x1443, 3)));
    assert_eq!(l.alloc_end(), Pfn::new(0x1446));
}

/// Same numbers as Xen 4.17 building Debian's 6.1 kernel as dom0 (ABI.md 1.3): image
/// ffffffff81000000-ffffffff84a00000, start_info ffffffff84a00000, page tables
/// ffffffff84a01000-ffffffff84a2a000, stack ffffffff84a2a000, mapping to ffffffff84c00000,
/// p2m 0000008000000000-0000008000200000.
#[test]
fn debian_dom0_numbers() {
    let mut s = linux_like();
    s.segments.truncate(1);
    s.segments[0].memsz = 0x3a0_0000;
    let img = image(&s);
    let l = plan(
        &img,
        &LayoutParams {
            nr_pages: 0x4_0000,
            ramdisk_len: 0,
            with_store_and_console: false,
        },
    )
    .unwrap();
    let va = |p: Pfn| l.va_of(p).unwrap();
    assert_eq!(va(l.kernel().pfn), 0xffff_ffff_8100_0000);
    assert_eq!(va(l.kernel().end()), 0xffff_ffff_84a0_0000);
    assert_eq!(va(l.start_info()), 0xffff_ffff_84a0_0000);
    assert_eq!(va(l.page_tables().pfn), 0xffff_ffff_84a0_1000);
    assert_eq!(va(l.page_tables().end()), 0xffff_ffff_84a2_a000);
    assert_eq!(va(l.boot_stack()), 0xffff_ffff_84a2_a000);
    assert_eq!(l.mapping_end(), 0xffff_ffff_84c0_0000);
    assert_eq!(l.p2m().va, 0x80_0000_0000);
    assert_eq!(l.p2m().list.pages * 4096, 0x20_0000);
    assert_eq!(l.xenstore(), None);
    assert_eq!(l.ramdisk(), None);
}

#[test]
fn xtf_like_layout_with_mapped_initrd_and_p2m() {
    let img = image(&xtf_like());
    let l = plan(
        &img,
        &LayoutParams {
            nr_pages: 0x1000,
            ramdisk_len: 5000,
            with_store_and_console: true,
        },
    )
    .unwrap();
    assert_eq!(l.kernel(), region(0x100, 5));
    let rd = l.ramdisk().unwrap();
    assert_eq!(rd.region, region(0x105, 2));
    assert!(rd.mapped);
    // p2m list inside the mapping: 0x1000 * 8 bytes = 8 pages.
    assert_eq!(l.p2m().list, region(0x107, 8));
    assert_eq!(l.p2m().va, 0x10_7000);
    assert_eq!(l.p2m().tables, None);
    assert_eq!(l.start_info(), Pfn::new(0x10f));
    assert_eq!(l.xenstore(), Some(Pfn::new(0x110)));
    assert_eq!(l.console(), Some(Pfn::new(0x111)));
    // L4, L3, L2 and two L1s for 4 MiB.
    assert_eq!(l.page_tables(), region(0x112, 5));
    assert_eq!(l.boot_stack(), Pfn::new(0x117));
    assert_eq!(l.mapping_end(), 0x40_0000);
    assert_eq!(l.alloc_end(), Pfn::new(0x400));
}

#[test]
fn mapping_keeps_512k_slack() {
    // Put the end of the allocations just below a 4 MiB boundary: the mapping must then
    // extend to the next boundary.
    let mut s = xtf_like();
    s.segments[0].memsz = 0x40_0000 - 0x10_0000 - 0x8_0000; // image ends 512 KiB below 4 MiB
    s.segments[0].data.truncate(0x1000);
    let img = image(&s);
    let l = plan(
        &img,
        &LayoutParams {
            nr_pages: 0x1000,
            ramdisk_len: 0,
            with_store_and_console: false,
        },
    )
    .unwrap();
    assert_eq!(l.mapping_end(), 0x80_0000);
    let used_end = l.boot_stack().raw() + 1;
    assert!(l.mapping_end() - used_end * 4096 >= 512 * 1024);
}

#[test]
fn refuses_too_little_memory() {
    let img = image(&linux_like());
    let p = |nr_pages| LayoutParams {
        nr_pages,
        ramdisk_len: 10_000,
        with_store_and_console: true,
    };
    // Mapping ends at 0x1400, then 3 initrd pages, ceil(nr/512) list pages, 3 p2m tables.
    assert_eq!(
        plan(&img, &p(0x1000)).unwrap_err(),
        BuildError::NotEnoughMemory {
            needed: 0x1400 + 3 + 8 + 3,
            available: 0x1000
        }
    );
    assert_eq!(
        plan(&img, &p(0)).unwrap_err(),
        BuildError::NotEnoughMemory {
            needed: 0x1400 + 3 + 3,
            available: 0
        }
    );
    // 0x1411 pages need an 11-page list: exactly enough. One page less is refused.
    assert_eq!(
        plan(&img, &p(0x1411)).unwrap().alloc_end(),
        Pfn::new(0x1411)
    );
    assert_eq!(
        plan(&img, &p(0x1410)).unwrap_err(),
        BuildError::NotEnoughMemory {
            needed: 0x1411,
            available: 0x1410
        }
    );
}

#[test]
fn exact_memory_boundary() {
    let img = image(&xtf_like());
    let p = |nr_pages| LayoutParams {
        nr_pages,
        ramdisk_len: 0,
        with_store_and_console: false,
    };
    // The layout of an XTF-like kernel ends at PFN 0x400 whatever nr_pages (the p2m list
    // grows by one page per 512 PFNs, which stays within the slack here).
    assert!(plan(&img, &p(0x400)).is_ok());
    assert_eq!(
        plan(&img, &p(0x3ff)).unwrap_err(),
        BuildError::NotEnoughMemory {
            needed: 0x400,
            available: 0x3ff
        }
    );
}

#[test]
fn refuses_mappings_in_the_hypervisor_range() {
    let mut s = linux_like();
    s.set_note(Note::u64(VIRT_BASE, 0xffff_8000_0000_0000));
    s.set_note(Note::u64(ENTRY, 0xffff_8000_0100_0040));
    let img = image(&s);
    let p = LayoutParams {
        nr_pages: 0x8000,
        ramdisk_len: 0,
        with_store_and_console: false,
    };
    assert_eq!(
        plan(&img, &p).unwrap_err(),
        BuildError::InHypervisorArea {
            va: 0xffff_8000_0000_0000
        }
    );

    // INIT_P2M inside the hypervisor range.
    let mut s = linux_like();
    s.set_note(Note::u64(INIT_P2M, 0xffff_8100_0000_0000));
    let img = image(&s);
    assert_eq!(
        plan(&img, &p).unwrap_err(),
        BuildError::InHypervisorArea {
            va: 0xffff_8100_0000_0000
        }
    );
}

#[test]
fn refuses_non_canonical_mappings() {
    // The image itself runs past the end of the lower half.
    let mut s = xtf_like();
    s.set_note(Note::u64(VIRT_BASE, 0x7fff_fff0_0000));
    s.segments[0].paddr = 0;
    s.segments[0].memsz = 0x20_0000;
    s.entry = 0x7fff_fff0_0000;
    s.remove_note(HYPERCALL_PAGE);
    let img = image(&s);
    let p = LayoutParams {
        nr_pages: 0x1000,
        ramdisk_len: 0,
        with_store_and_console: false,
    };
    assert_eq!(
        plan(&img, &p).unwrap_err(),
        BuildError::NonCanonicalAddress {
            va: 0x8000_0000_0000
        }
    );

    let mut s = xtf_like();
    s.set_note(Note::u64(VIRT_BASE, 0x9000_0000_0000));
    s.segments[0].paddr = 0;
    s.entry = 0x9000_0000_0000;
    s.remove_note(HYPERCALL_PAGE);
    let img = image(&s);
    assert_eq!(
        plan(&img, &p).unwrap_err(),
        BuildError::NonCanonicalAddress {
            va: 0x9000_0000_0000
        }
    );
}

#[test]
fn refuses_address_overflow() {
    let mut s = xtf_like();
    s.set_note(Note::u64(VIRT_BASE, 0xffff_ffff_ffc0_0000));
    s.segments[0].paddr = 0;
    s.entry = 0xffff_ffff_ffc0_0000;
    s.remove_note(HYPERCALL_PAGE);
    let img = image(&s);
    let p = LayoutParams {
        nr_pages: 0x1000,
        ramdisk_len: 0,
        with_store_and_console: false,
    };
    assert_eq!(plan(&img, &p).unwrap_err(), BuildError::AddressOverflow);
    let p = LayoutParams {
        nr_pages: u64::MAX,
        ramdisk_len: 0,
        with_store_and_console: false,
    };
    assert_eq!(
        plan(&image(&xtf_like()), &p).unwrap_err(),
        BuildError::AddressOverflow
    );
}

#[test]
fn refuses_p2m_overlapping_the_initial_mapping() {
    let mut s = linux_like();
    s.set_note(Note::u64(INIT_P2M, BASE - 0x1000));
    let img = image(&s);
    let p = LayoutParams {
        nr_pages: 0x8000,
        ramdisk_len: 0,
        with_store_and_console: false,
    };
    assert_eq!(plan(&img, &p).unwrap_err(), BuildError::OverlappingMappings);
}

#[test]
fn p2m_sharing_upper_tables_with_the_initial_mapping() {
    // INIT_P2M in the same 512 GiB (L4 slot 511) and 1 GiB as the kernel: the p2m needs
    // only its own L1 (libxc's count_pgtables skips tables the first mapping has).
    let mut s = linux_like();
    s.set_note(Note::u64(INIT_P2M, BASE));
    s.set_note(Note::u64(VIRT_BASE, 0xffff_ffff_a000_0000));
    s.set_note(Note::u64(PADDR_OFFSET, 0));
    s.set_note(Note::u64(ENTRY, 0xffff_ffff_a100_0040));
    let img = image(&s);
    let l = plan(
        &img,
        &LayoutParams {
            nr_pages: 0x8000,
            ramdisk_len: 0,
            with_store_and_console: false,
        },
    )
    .unwrap();
    assert_eq!(l.p2m().tables.unwrap().pages, 1);
}
