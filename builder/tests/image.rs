//! ELF, Xen notes and bzImage: acceptance and every rejection.

mod common;

use common::*;
use domain_builder::bzimage::{kernel_elf, BzImage};
use domain_builder::{BuildError, Compression, FeatureName, KernelImage};

fn parse(spec: &ElfSpec) -> Result<KernelImage<'static>, BuildError> {
    let bytes: &'static [u8] = Box::leak(spec.emit().into_boxed_slice());
    KernelImage::parse(bytes, ALL_FEATURES)
}

fn err(spec: &ElfSpec) -> BuildError {
    parse(spec).expect_err("image should be refused")
}

/// Patches `bytes` at `off`.
fn patched(spec: &ElfSpec, off: usize, new: &[u8]) -> Vec<u8> {
    let mut b = spec.emit();
    b[off..off + new.len()].copy_from_slice(new);
    b
}

#[test]
fn linux_like_notes_and_addresses() {
    let img = parse(&linux_like()).unwrap();
    let n = img.notes();
    assert_eq!(n.guest_os, Some(&b"linux"[..]));
    assert_eq!(n.guest_version, Some(&b"2.6"[..]));
    assert_eq!(n.xen_version, Some(&b"xen-3.0"[..]));
    assert_eq!(n.loader, Some(&b"generic"[..]));
    assert_eq!(n.virt_base, Some(0xffff_ffff_8000_0000));
    assert_eq!(n.paddr_offset, Some(0));
    assert_eq!(n.init_p2m, Some(0x80_0000_0000));
    assert_eq!(n.mod_start_pfn, Some(1));
    assert_eq!(n.supported_features, Some(0x8801));
    assert_eq!(n.l1_mfn_valid, Some((1, 1)));
    assert_eq!(n.suspend_cancel, Some(1));
    assert_eq!(n.hv_start_low, Some(0xffff_8000_0000_0000));
    assert_eq!(n.hypercall_page, None);
    assert_eq!(img.virt_base(), 0xffff_ffff_8000_0000);
    assert_eq!(
        img.virt_range(),
        (0xffff_ffff_8100_0000, 0xffff_ffff_8100_4000)
    );
    assert_eq!(img.entry(), 0xffff_ffff_8100_0040);
    assert_eq!(img.usable_init_p2m(), Some(0x80_0000_0000));
    assert!(img.unmapped_initrd());
    let f = img.kernel_features();
    assert_eq!(f.required, 1);
    assert_eq!(f.supported, 0x8801 | 1 | (1 << 4));
    assert_eq!(img.elf().segments().len(), 2);
}

#[test]
fn defaults_without_optional_notes() {
    let img = parse(&xtf_like()).unwrap();
    assert_eq!(img.virt_base(), 0);
    assert_eq!(img.entry(), 0x10_0000); // e_entry
    assert_eq!(img.hypercall_page_va(), Some(0x10_2000));
    assert_eq!(img.usable_init_p2m(), None);
    assert!(!img.unmapped_initrd());
}

#[test]
fn notes_from_sht_note_section_and_foreign_owners_ignored() {
    let mut s = xtf_like();
    s.notes_in_section = true;
    s.notes.insert(
        0,
        Note {
            owner: b"GNU\0".to_vec(),
            kind: 5,
            desc: b"bogus\0".to_vec(),
        },
    );
    let img = parse(&s).unwrap();
    assert_eq!(img.notes().xen_version, Some(&b"xen-3.0"[..]));
    assert_eq!(img.notes().guest_os, Some(&b"XTF"[..]));
}

#[test]
fn numeric_notes_may_be_4_bytes() {
    let mut s = xtf_like();
    s.set_note(Note::u32(ENTRY, 0x10_0010));
    assert_eq!(parse(&s).unwrap().entry(), 0x10_0010);
}

#[test]
fn linux_guest_os_needs_no_generic_loader() {
    let mut s = linux_like();
    s.remove_note(LOADER);
    parse(&s).unwrap();
    s.set_note(Note::str(LOADER, "bsd"));
    parse(&s).unwrap();
}

// ----- ELF container rejections -----

#[test]
fn rejects_non_elf() {
    assert_eq!(
        KernelImage::parse(b"hello", 0).unwrap_err(),
        BuildError::NotElf
    );
    assert_eq!(
        KernelImage::parse(&[0u8; 4096], 0).unwrap_err(),
        BuildError::NotElf
    );
}

#[test]
fn rejects_bad_ident() {
    let s = linux_like();
    assert_eq!(
        KernelImage::parse(&patched(&s, 4, &[1]), 0).unwrap_err(),
        BuildError::NotElf64
    );
    assert_eq!(
        KernelImage::parse(&patched(&s, 5, &[2]), 0).unwrap_err(),
        BuildError::NotLittleEndian
    );
    assert_eq!(
        KernelImage::parse(&patched(&s, 6, &[0]), 0).unwrap_err(),
        BuildError::BadElfVersion
    );
    assert_eq!(
        KernelImage::parse(&patched(&s, 20, &[2]), 0).unwrap_err(),
        BuildError::BadElfVersion
    );
}

#[test]
fn rejects_wrong_type_and_machine() {
    let mut s = linux_like();
    s.e_type = 3;
    assert_eq!(err(&s), BuildError::NotExecutable { e_type: 3 });
    let mut s = linux_like();
    s.machine = 3;
    assert_eq!(err(&s), BuildError::WrongMachine { machine: 3 });
}

#[test]
fn rejects_bad_program_headers() {
    let s = linux_like();
    assert_eq!(
        KernelImage::parse(&patched(&s, 54, &40u16.to_le_bytes()), 0).unwrap_err(),
        BuildError::BadProgramHeaderSize { size: 40 }
    );
    assert_eq!(
        KernelImage::parse(&patched(&s, 56, &0xffffu16.to_le_bytes()), 0).unwrap_err(),
        BuildError::ProgramHeadersOutOfFile
    );
    assert_eq!(
        KernelImage::parse(&patched(&s, 32, &u64::MAX.to_le_bytes()), 0).unwrap_err(),
        BuildError::ProgramHeadersOutOfFile
    );
}

#[test]
fn rejects_bad_section_headers_when_needed() {
    let mut s = xtf_like();
    s.notes_in_section = true;
    assert_eq!(
        KernelImage::parse(&patched(&s, 58, &32u16.to_le_bytes()), 0).unwrap_err(),
        BuildError::BadSectionHeaderSize { size: 32 }
    );
    assert_eq!(
        KernelImage::parse(&patched(&s, 40, &(u64::MAX - 8).to_le_bytes()), 0).unwrap_err(),
        BuildError::SectionHeadersOutOfFile
    );
}

#[test]
fn rejects_bad_segments() {
    let mut s = linux_like();
    s.segments.clear();
    assert_eq!(err(&s), BuildError::NoLoadableSegments);

    // A PT_LOAD without permissions is not loadable (libelf).
    let mut s = linux_like();
    for seg in &mut s.segments {
        seg.flags = 0;
    }
    assert_eq!(err(&s), BuildError::NoLoadableSegments);

    let mut s = linux_like();
    s.segments[1].memsz = 0x10;
    assert_eq!(
        err(&s),
        BuildError::SegmentFileSizeExceedsMemSize { index: 1 }
    );

    let mut s = linux_like();
    s.segments[1].paddr = u64::MAX - 0x100;
    assert_eq!(err(&s), BuildError::SegmentAddressOverflow { index: 1 });

    // p_offset of segment 0 (program header 0 at 64, p_offset at +8) past the end.
    let s = linux_like();
    assert_eq!(
        KernelImage::parse(&patched(&s, 64 + 8, &0x10_0000u64.to_le_bytes()), 0).unwrap_err(),
        BuildError::SegmentOutOfFile { index: 0 }
    );
    // p_filesz huge.
    assert_eq!(
        KernelImage::parse(&patched(&s, 64 + 32, &u64::MAX.to_le_bytes()), 0).unwrap_err(),
        BuildError::SegmentFileSizeExceedsMemSize { index: 0 }
    );
}

#[test]
fn rejects_bad_notes() {
    let s = linux_like();
    // The PT_NOTE header is the third program header; p_filesz at +32.
    let ph = 64 + 2 * 56;
    assert_eq!(
        KernelImage::parse(&patched(&s, ph + 32, &0x10_0000u64.to_le_bytes()), 0).unwrap_err(),
        BuildError::NotesOutOfFile { index: 2 }
    );
    // First note's descsz made huge.
    let notes_off = 64 + 3 * 56;
    assert_eq!(
        KernelImage::parse(
            &patched(&s, notes_off + 4, &0x7fff_fff0u32.to_le_bytes()),
            0
        )
        .unwrap_err(),
        BuildError::MalformedNote
    );
    let mut s = linux_like();
    s.set_note(Note::xen(VIRT_BASE, vec![1, 2, 3]));
    assert_eq!(
        err(&s),
        BuildError::BadNoteSize {
            note: VIRT_BASE,
            size: 3
        }
    );
}

// ----- Xen note rejections -----

#[test]
fn rejects_kernel_without_xen_notes() {
    let mut s = linux_like();
    s.notes.clear();
    assert_eq!(err(&s), BuildError::NotXenImage);
    let mut s = linux_like();
    for n in &mut s.notes {
        n.owner = b"Xem\0".to_vec();
    }
    assert_eq!(err(&s), BuildError::NotXenImage);
}

#[test]
fn rejects_bad_xen_version() {
    let mut s = xtf_like();
    s.set_note(Note::str(XEN_VERSION, "xen-2.0"));
    assert_eq!(err(&s), BuildError::BadXenVersion);
    s.remove_note(XEN_VERSION);
    assert_eq!(err(&s), BuildError::BadXenVersion);
}

#[test]
fn rejects_unknown_loader() {
    let mut s = xtf_like();
    s.set_note(Note::str(LOADER, "special"));
    assert_eq!(err(&s), BuildError::UnsupportedLoader);
    s.remove_note(LOADER);
    assert_eq!(err(&s), BuildError::UnsupportedLoader);
}

#[test]
fn rejects_paddr_offset_without_virt_base() {
    let mut s = xtf_like();
    s.set_note(Note::u64(PADDR_OFFSET, 0));
    assert_eq!(err(&s), BuildError::PaddrOffsetWithoutVirtBase);
}

#[test]
fn rejects_wrapping_image() {
    let mut s = xtf_like();
    s.set_note(Note::u64(VIRT_BASE, 0xffff_ffff_ffff_f000));
    s.segments[0].paddr = 0;
    s.entry = 0xffff_ffff_ffff_f000;
    assert_eq!(err(&s), BuildError::ImageBoundsInvalid);
}

#[test]
fn rejects_entry_outside_image() {
    let mut s = linux_like();
    s.set_note(Note::u64(ENTRY, 0xffff_ffff_8200_0000));
    assert_eq!(
        err(&s),
        BuildError::EntryOutsideImage {
            entry: 0xffff_ffff_8200_0000
        }
    );
    let mut s = xtf_like();
    s.entry = 0x1000;
    assert_eq!(err(&s), BuildError::EntryOutsideImage { entry: 0x1000 });
}

#[test]
fn rejects_virt_base_above_image() {
    // kstart = p_paddr 0x1000000 - PADDR_OFFSET 0x2000000 + VIRT_BASE lies below VIRT_BASE.
    let mut s = linux_like();
    s.set_note(Note::u64(VIRT_BASE, 0xffff_ffff_8200_0000));
    s.set_note(Note::u64(PADDR_OFFSET, 0x200_0000));
    s.set_note(Note::u64(ENTRY, 0xffff_ffff_8100_0000));
    assert_eq!(err(&s), BuildError::VirtBaseAboveImage);
}

#[test]
fn rejects_init_p2m_inside_image() {
    let mut s = linux_like();
    s.set_note(Note::u64(INIT_P2M, 0xffff_ffff_8100_1000));
    assert_eq!(
        err(&s),
        BuildError::InitP2mInsideImage {
            va: 0xffff_ffff_8100_1000
        }
    );
}

#[test]
fn init_p2m_above_virt_base_or_misaligned_is_ignored() {
    let mut s = linux_like();
    s.set_note(Note::u64(INIT_P2M, 0xffff_ffff_c000_0000));
    assert_eq!(parse(&s).unwrap().usable_init_p2m(), None);
    s.set_note(Note::u64(INIT_P2M, 0x80_0000_0010));
    assert_eq!(parse(&s).unwrap().usable_init_p2m(), None);
}

#[test]
fn rejects_misaligned_image() {
    let mut s = xtf_like();
    s.segments[0].paddr = 0x10_0800;
    s.entry = 0x10_0800;
    s.set_note(Note::u64(HYPERCALL_PAGE, 0x10_2000));
    assert_eq!(err(&s), BuildError::MisalignedImage);
}

#[test]
fn rejects_hypercall_page_outside_image() {
    let mut s = xtf_like();
    s.set_note(Note::u64(HYPERCALL_PAGE, 0x20_0000));
    assert_eq!(
        err(&s),
        BuildError::HypercallPageOutsideImage { va: 0x20_0000 }
    );
}

#[test]
fn rejects_unknown_required_feature_but_ignores_unknown_optional() {
    let mut s = linux_like();
    s.set_note(Note::str(FEATURES, "writable_page_tables|fancy_new_thing"));
    parse(&s).unwrap();
    s.set_note(Note::str(FEATURES, "writable_page_tables|!fancy_new_thing"));
    let e = err(&s);
    assert_eq!(
        e,
        BuildError::UnknownFeature {
            name: FeatureName::new(b"fancy_new_thing")
        }
    );
    assert_eq!(
        e.to_string(),
        "kernel requires unknown feature fancy_new_thing"
    );
}

#[test]
fn rejects_required_feature_rxen_does_not_offer() {
    let bytes = linux_like().emit();
    let e = KernelImage::parse(&bytes, 0).unwrap_err();
    assert_eq!(
        e,
        BuildError::UnsupportedFeature {
            name: FeatureName::new(b"writable_page_tables")
        }
    );
    assert_eq!(
        e.to_string(),
        "kernel requires feature writable_page_tables which rxen does not support"
    );
    // Offering bit 0 (XENFEAT_writable_page_tables) is enough.
    KernelImage::parse(&bytes, 1).unwrap();
}

#[test]
fn long_feature_names_are_truncated_in_errors() {
    let name = "x".repeat(100);
    let mut s = linux_like();
    s.set_note(Note::str(FEATURES, &format!("!{name}")));
    let e = err(&s);
    let text = e.to_string();
    assert!(text.ends_with("…"), "{text}");
}

// ----- bzImage -----

fn bzimage(version: u16, payload: &[u8], extra_len: u32) -> Vec<u8> {
    let setup_sects = 3u8;
    let payload_offset = 0x20u32;
    let start = (usize::from(setup_sects) + 1) * 512 + payload_offset as usize;
    let mut b = vec![0u8; start];
    b[0x1f1] = setup_sects;
    b[0x202..0x206].copy_from_slice(b"HdrS");
    b[0x206..0x208].copy_from_slice(&version.to_le_bytes());
    b[0x248..0x24c].copy_from_slice(&payload_offset.to_le_bytes());
    b[0x24c..0x250].copy_from_slice(&(payload.len() as u32 + extra_len).to_le_bytes());
    b.extend_from_slice(payload);
    b
}

#[test]
fn bzimage_with_elf_payload_is_loaded() {
    let elf = linux_like().emit();
    let bz = bzimage(0x020f, &elf, 0);
    assert_eq!(kernel_elf(&bz).unwrap(), &elf[..]);
    let img = KernelImage::parse(&bz, ALL_FEATURES).unwrap();
    assert_eq!(img.entry(), 0xffff_ffff_8100_0040);
}

#[test]
fn bzimage_compressed_payloads_are_named() {
    let cases: [(&[u8], Compression); 7] = [
        (&[0xfd, b'7', b'z', b'X', b'Z', 0, 1, 2], Compression::Xz),
        (&[0x1f, 0x8b, 8, 0], Compression::Gzip),
        (&[0x28, 0xb5, 0x2f, 0xfd, 0], Compression::Zstd),
        (b"BZh91AY", Compression::Bzip2),
        (&[0x5d, 0, 0, 0x80], Compression::Lzma),
        (&[0x02, 0x21, 0x4c, 0x18, 0], Compression::Lz4),
        (
            &[0x89, b'L', b'Z', b'O', 0, 0x0d, 0x0a, 0x1a, 0x0a],
            Compression::Lzo,
        ),
    ];
    for (payload, kind) in cases {
        let mut p = payload.to_vec();
        p.extend_from_slice(&0x1234_5678u32.to_le_bytes());
        let bz = bzimage(0x020f, &p, 0);
        assert_eq!(
            KernelImage::parse(&bz, 0).unwrap_err(),
            BuildError::CompressedPayload { kind }
        );
        let parsed = BzImage::parse(&bz).unwrap().unwrap();
        assert_eq!(parsed.compression(), Some(kind));
        assert_eq!(parsed.decompressed_len_hint(), Some(0x1234_5678));
        assert_eq!(parsed.version, 0x020f);
    }
    let e = KernelImage::parse(&bzimage(0x020f, b"????", 0), 0).unwrap_err();
    assert_eq!(
        e,
        BuildError::CompressedPayload {
            kind: Compression::Unknown
        }
    );
    let e =
        KernelImage::parse(&bzimage(0x020f, &[0xfd, b'7', b'z', b'X', b'Z', 0], 0), 0).unwrap_err();
    assert!(e.to_string().contains("xz"), "{e}");
}

#[test]
fn bzimage_rejections() {
    let elf = linux_like().emit();
    assert_eq!(
        KernelImage::parse(&bzimage(0x0207, &elf, 0), 0).unwrap_err(),
        BuildError::BzImageTooOld { version: 0x0207 }
    );
    assert_eq!(
        KernelImage::parse(&bzimage(0x020f, &elf, 1), 0).unwrap_err(),
        BuildError::BzImagePayloadOutOfFile
    );
    let mut short = bzimage(0x020f, &elf, 0);
    short.truncate(0x240);
    assert_eq!(
        KernelImage::parse(&short, 0).unwrap_err(),
        BuildError::BzImagePayloadOutOfFile
    );
    assert_eq!(BzImage::parse(&elf).unwrap(), None);
}

#[test]
fn every_error_has_a_message() {
    let e = BuildError::NotEnoughMemory {
        needed: 10,
        available: 5,
    };
    assert_eq!(
        e.to_string(),
        "domain needs at least 10 pages for its initial layout but has 5"
    );
    assert_eq!(xen_abi::Errno::from(e), xen_abi::Errno::ENOMEM);
    assert_eq!(
        xen_abi::Errno::from(BuildError::NotElf),
        xen_abi::Errno::EINVAL
    );
}
