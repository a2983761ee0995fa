//! Hostile kernels: truncations, bit flips and random bytes must be refused with an error
//! or built correctly, never panic (including inside `plan` and `build`).

mod common;

use common::*;
use domain_builder::{build, plan, KernelImage, LayoutParams, StartInfoParams};
use proptest::prelude::*;
use xen_abi::{EvtchnPort, Mfn};

const NR_PAGES: u64 = 0x2000;

/// Runs the whole pipeline on `bytes`; any error is fine, a panic is not. Returns whether
/// it got as far as building.
fn pipeline(bytes: &[u8]) -> bool {
    let Ok(img) = KernelImage::parse(bytes, ALL_FEATURES) else {
        return false;
    };
    let lp = LayoutParams {
        nr_pages: NR_PAGES,
        ramdisk_len: 100,
        with_store_and_console: true,
    };
    let Ok(layout) = plan(&img, &lp) else {
        return false;
    };
    assert!(layout.alloc_end().raw() <= NR_PAGES);
    let mut mem = MockMem::new(NR_PAGES);
    let params = StartInfoParams {
        shared_info: Mfn::new(1),
        flags: 0,
        store_evtchn: EvtchnPort::new(1),
        console_evtchn: EvtchnPort::new(2),
        cmdline: b"x",
        ramdisk: &[7; 100],
    };
    build(&img, &layout, &mut mem, &params).unwrap();
    true
}

fn fixtures() -> Vec<Vec<u8>> {
    let mut section = xtf_like();
    section.notes_in_section = true;
    vec![linux_like().emit(), xtf_like().emit(), section.emit()]
}

#[test]
fn fixtures_build() {
    for f in fixtures() {
        assert!(pipeline(&f));
    }
}

#[test]
fn every_truncation_is_refused_without_panic() {
    for f in fixtures() {
        for len in 0..f.len() {
            pipeline(&f[..len]);
        }
    }
}

#[test]
fn every_single_bit_flip_in_headers_and_notes() {
    let mut built = 0;
    for f in fixtures() {
        // Headers, program headers and notes are in the first 0x300 bytes.
        for byte in 0..f.len().min(0x300) {
            for bit in 0..8 {
                let mut g = f.clone();
                g[byte] ^= 1 << bit;
                built += usize::from(pipeline(&g));
            }
        }
    }
    // Many flips (padding, string contents, ...) still give a valid kernel that is built.
    assert!(built > 1000, "{built}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn random_corruption(which in 0usize..3, flips in prop::collection::vec((any::<usize>(), any::<u8>()), 1..16), cut in any::<usize>()) {
        let mut f = fixtures().swap_remove(which);
        for (pos, val) in flips {
            let i = pos % f.len();
            f[i] = val;
        }
        let cut = cut % (f.len() + 1);
        pipeline(&f[..cut.max(f.len() / 2)]);
    }

    #[test]
    fn random_u64_header_fields(which in 0usize..3, field in 0usize..40, val in any::<u64>()) {
        // Overwrite an aligned 8-byte word in the headers with an arbitrary value: offsets,
        // sizes and addresses get extreme values.
        let mut f = fixtures().swap_remove(which);
        let off = field * 8;
        if off + 8 <= f.len() {
            f[off..off + 8].copy_from_slice(&val.to_le_bytes());
        }
        pipeline(&f);
    }

    #[test]
    fn random_bytes(data in prop::collection::vec(any::<u8>(), 0..2048)) {
        pipeline(&data);
        let mut elf = data.clone();
        if elf.len() >= 4 {
            elf[..4].copy_from_slice(b"\x7fELF");
        }
        pipeline(&elf);
    }
}
