//! The xz decoder against files made by XZ Utils 5.4.1 (`tests/data/*.xz`, see the list in
//! `fixtures()`), hand-built containers for the paths `xz` does not produce, corruptions,
//! and random inputs.

use domain_builder::xz::{self, crc32, XzError};
use proptest::prelude::*;

const LIMIT: usize = 64 << 20;

fn data(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/data/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The pattern behind `pattern.xz` (5 MiB + 123 bytes; three LZMA chunks).
fn pattern() -> Vec<u8> {
    (0..5 * 1024 * 1024 + 123usize)
        .map(|i| ((i % 251) ^ (i >> 16)) as u8)
        .collect()
}

/// (fixture, expected output). Made with:
/// `xz -c --check=crc32 --lzma2=preset=6 text.txt > text.crc32.xz`,
/// `--check=none --lzma2=preset=1` (text.none), `--check=crc64 --block-size=2048`
/// (text.blocks.crc64: 5 blocks), `--lzma2=lc=0,lp=2,pb=0`, `--x86 --lzma2=dict=32MiB`
/// (x86.bcj, as Linux's `xz_wrap.sh`), `--check=crc64 --x86=start=4096` (x86.bcj-start),
/// random.xz (a stored LZMA2 chunk), kernel.xz (see `unpack_kernel_decompresses_xz_payloads`), concat.padded.xz = text.crc32.xz + 8 zero bytes +
/// random.xz + 4 zero bytes, mixed.xz = text + random + text, empty.xz, pattern.xz.
fn fixtures() -> Vec<(&'static str, Vec<u8>)> {
    let text = data("text.txt");
    let random = data("random.bin");
    let x86 = data("x86.bin");
    vec![
        ("text.crc32.xz", text.clone()),
        ("text.none.xz", text.clone()),
        ("text.blocks.crc64.xz", text.clone()),
        ("text.lc0lp2pb0.xz", text.clone()),
        ("x86.bcj.xz", x86.clone()),
        ("x86.bcj-start.xz", x86),
        ("random.xz", random.clone()),
        ("concat.padded.xz", [text.clone(), random.clone()].concat()),
        ("mixed.xz", [text.clone(), random, text].concat()),
        ("empty.xz", Vec::new()),
        ("pattern.xz", pattern()),
    ]
}

#[test]
fn crc_check_values() {
    assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    assert_eq!(xz::crc64(b"123456789"), 0x995D_C9BB_DF19_39FA);
}

#[test]
fn fixtures_decode_to_their_originals() {
    for (name, want) in fixtures() {
        let got = xz::decompress(&data(name), LIMIT).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(got == want, "{name}: output differs");
    }
}

#[test]
fn bcj_filter_is_applied() {
    // Without undoing the filter the output would differ: check the fixture really has
    // converted branches (the x86 sample contains E8/E9 with near displacements).
    let x86 = data("x86.bin");
    let converted = x86
        .windows(5)
        .filter(|w| w[0] & 0xFE == 0xE8 && (w[4] == 0 || w[4] == 0xFF))
        .count();
    assert!(converted > 10, "{converted}");
    assert_eq!(xz::decompress(&data("x86.bcj.xz"), LIMIT).unwrap(), x86);
}

#[test]
fn stream_decoder_ignores_what_follows() {
    let mut input = data("x86.bcj.xz");
    let len = input.len();
    input.extend_from_slice(&12288u32.to_le_bytes());
    let (out, used) = xz::decompress_stream(&input, LIMIT).unwrap();
    assert_eq!(used, len);
    assert_eq!(out, data("x86.bin"));
    // The whole-file decoder refuses the same trailing bytes (as bad stream padding).
    assert_eq!(xz::decompress(&input, LIMIT), Err(XzError::BadPadding));
    input.truncate(len);
    input.extend_from_slice(b"\0\0\0\0junk");
    assert_eq!(xz::decompress(&input, LIMIT), Err(XzError::TrailingData));
}

#[test]
fn decode_into_a_fixed_buffer() {
    let want = data("text.txt");
    let mut buf = vec![0u8; want.len()];
    let (n, _) = xz::decompress_stream_into(&data("text.crc32.xz"), &mut buf).unwrap();
    assert_eq!(n, want.len());
    assert_eq!(buf, want);
    let mut small = vec![0u8; want.len() - 1];
    assert_eq!(
        xz::decompress_stream_into(&data("text.crc32.xz"), &mut small),
        Err(XzError::OutputLimit)
    );
}

#[test]
fn output_limit_is_enforced() {
    let input = data("pattern.xz");
    let n = pattern().len();
    assert_eq!(xz::decompress(&input, n).unwrap().len(), n);
    assert_eq!(xz::decompress(&input, n - 1), Err(XzError::OutputLimit));
    assert_eq!(xz::decompress(&input, 0), Err(XzError::OutputLimit));
    // The limit also bounds what is reserved.
    let out = xz::decompress(&data("text.crc32.xz"), 9000).unwrap();
    assert!(out.capacity() <= 9000);
}

// ----- hand-built containers -----

fn vli(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// A single-block `.xz` stream (CRC32 check) around a raw LZMA2 stream that decodes to
/// `plain`, with valid CRCs everywhere, so the decoder gets to the part under test.
fn wrap(lzma2: &[u8], plain: &[u8], filters: &[(u64, &[u8])]) -> Vec<u8> {
    let flags = [0u8, 1];
    let mut f = vec![0xFD, b'7', b'z', b'X', b'Z', 0];
    f.extend_from_slice(&flags);
    f.extend_from_slice(&crc32(&flags).to_le_bytes());
    let block_start = f.len();
    let mut h = vec![0u8, (filters.len() - 1) as u8];
    for (id, props) in filters {
        vli(*id, &mut h);
        vli(props.len() as u64, &mut h);
        h.extend_from_slice(props);
    }
    while (h.len() + 4) % 4 != 0 {
        h.push(0);
    }
    h[0] = ((h.len() + 4) / 4 - 1) as u8;
    let hc = crc32(&h);
    f.extend_from_slice(&h);
    f.extend_from_slice(&hc.to_le_bytes());
    f.extend_from_slice(lzma2);
    let unpadded = f.len() - block_start + 4;
    while (f.len() - block_start) % 4 != 0 {
        f.push(0);
    }
    f.extend_from_slice(&crc32(plain).to_le_bytes());
    let index_start = f.len();
    f.push(0);
    vli(1, &mut f);
    vli(unpadded as u64, &mut f);
    vli(plain.len() as u64, &mut f);
    while (f.len() - index_start) % 4 != 0 {
        f.push(0);
    }
    let ic = crc32(&f[index_start..]);
    f.extend_from_slice(&ic.to_le_bytes());
    let backward = ((f.len() - index_start) / 4 - 1) as u32;
    let mut tail = backward.to_le_bytes().to_vec();
    tail.extend_from_slice(&flags);
    f.extend_from_slice(&crc32(&tail).to_le_bytes());
    f.extend_from_slice(&tail);
    f.extend_from_slice(b"YZ");
    f
}

const LZMA2_ONLY: &[(u64, &[u8])] = &[(0x21, &[0x08])];

fn stored(control: u8, data: &[u8]) -> Vec<u8> {
    let mut c = vec![control];
    c.extend_from_slice(&((data.len() - 1) as u16).to_be_bytes());
    c.extend_from_slice(data);
    c
}

#[test]
fn hand_built_stored_chunks() {
    let raw = [stored(1, b"hello, "), stored(2, b"world"), vec![0]].concat();
    let f = wrap(&raw, b"hello, world", LZMA2_ONLY);
    assert_eq!(xz::decompress(&f, LIMIT).unwrap(), b"hello, world");
    // A chunk without a dictionary reset first is refused.
    let raw = [stored(2, b"x"), vec![0]].concat();
    assert_eq!(
        xz::decompress(&wrap(&raw, b"x", LZMA2_ONLY), LIMIT),
        Err(XzError::CorruptLzma2)
    );
    // Reserved control bytes.
    for c in [0x03u8, 0x40, 0x7F] {
        let raw = [stored(1, b"x"), vec![c, 0, 0, b'y'], vec![0]].concat();
        assert_eq!(
            xz::decompress(&wrap(&raw, b"xy", LZMA2_ONLY), LIMIT),
            Err(XzError::CorruptLzma2),
            "{c:#x}"
        );
    }
    // An LZMA chunk after a dictionary reset must carry properties.
    let raw = [
        stored(1, b"x"),
        vec![0xA0, 0, 0, 0, 4, 0, 0, 0, 0, 0],
        vec![0],
    ]
    .concat();
    assert_eq!(
        xz::decompress(&wrap(&raw, b"xx", LZMA2_ONLY), LIMIT),
        Err(XzError::CorruptLzma2)
    );
    // lc + lp > 4.
    let props = (2 * 5 + 3) * 9 + 2; // pb 2, lp 3, lc 2
    let raw = [vec![0xE0, 0, 0, 0, 4, props], vec![0; 5], vec![0]].concat();
    assert_eq!(
        xz::decompress(&wrap(&raw, b"x", LZMA2_ONLY), LIMIT),
        Err(XzError::CorruptLzma2)
    );
    // Missing end marker: what follows (the check) is read as chunks and refused.
    let raw = stored(1, b"x");
    assert!(xz::decompress(&wrap(&raw, b"x", LZMA2_ONLY), LIMIT).is_err());
}

#[test]
fn hand_built_filter_chains() {
    let raw = [stored(1, b"abc"), vec![0]].concat();
    let ok = |filters: &[(u64, &[u8])]| xz::decompress(&wrap(&raw, b"abc", filters), LIMIT);
    assert_eq!(ok(LZMA2_ONLY).unwrap(), b"abc");
    assert_eq!(ok(&[(4, &[]), (0x21, &[0x08])]).unwrap(), b"abc");
    assert_eq!(ok(&[(4, &[0, 0, 0, 0]), (0x21, &[0x08])]).unwrap(), b"abc");
    assert_eq!(
        ok(&[(4, &[0, 0]), (0x21, &[0x08])]),
        Err(XzError::BadFilterProperties)
    );
    assert_eq!(ok(&[(0x21, &[41])]), Err(XzError::BadFilterProperties));
    assert_eq!(ok(&[(0x21, &[])]), Err(XzError::BadFilterProperties));
    assert_eq!(ok(&[(4, &[])]), Err(XzError::BadFilterProperties));
    assert_eq!(
        ok(&[(0x21, &[0x08]), (0x21, &[0x08])]),
        Err(XzError::BadFilterProperties)
    );
    assert_eq!(
        ok(&[(3, &[0]), (0x21, &[0x08])]),
        Err(XzError::UnsupportedFilter { id: 3 })
    );
    assert_eq!(
        ok(&[(4, &[]), (4, &[]), (0x21, &[0x08])]),
        Err(XzError::BadFilterProperties)
    );
}

// ----- corruptions of real files -----

#[test]
fn truncations_are_errors() {
    for (name, _) in fixtures() {
        let f = data(name);
        // concat.padded.xz stays valid when cut at a stream end (+ padding).
        let valid_cuts = if name == "concat.padded.xz" {
            vec![3444, 3448, 3452, f.len() - 4]
        } else {
            vec![]
        };
        for cut in (0..f.len())
            .step_by(7)
            .chain(f.len().saturating_sub(16)..f.len())
        {
            if valid_cuts.contains(&cut) {
                continue;
            }
            assert!(
                xz::decompress(&f[..cut], LIMIT).is_err(),
                "{name} cut at {cut}"
            );
        }
    }
}

#[test]
fn every_bit_flip_is_detected() {
    // Every single-bit flip anywhere in a CRC-checked file must be refused (CRC32 catches
    // all single-bit errors), never accepted with wrong output, never a panic.
    for name in ["text.crc32.xz", "x86.bcj.xz", "text.blocks.crc64.xz"] {
        let f = data(name);
        for i in 0..f.len() {
            for bit in 0..8 {
                let mut g = f.clone();
                g[i] ^= 1 << bit;
                assert!(
                    xz::decompress(&g, LIMIT).is_err(),
                    "{name} byte {i} bit {bit}"
                );
            }
        }
    }
}

#[test]
fn unchecked_file_bit_flips_never_panic() {
    // With check type none, flips in the LZMA data may decode to other bytes; the decoder
    // must still stay in bounds.
    let f = data("text.none.xz");
    for i in 0..f.len() {
        let mut g = f.clone();
        g[i] ^= 0x10;
        let _ = xz::decompress(&g, LIMIT);
    }
}

#[test]
fn specific_corruptions() {
    let f = data("text.crc32.xz");
    let n = f.len();
    let with = |i: usize, b: u8| {
        let mut g = f.clone();
        g[i] = b;
        xz::decompress(&g, LIMIT)
    };
    assert_eq!(with(0, 0xFE), Err(XzError::BadMagic));
    assert_eq!(with(7, 0x04), Err(XzError::HeaderCrc));
    assert_eq!(with(12 + 5, 0xFF), Err(XzError::BlockHeaderCrc));
    assert_eq!(with(n - 1, b'X'), Err(XzError::BadFooterMagic));
    assert_eq!(with(n - 12, !f[n - 12]), Err(XzError::FooterCrc));
    // The data check: flip a byte of the stored CRC32 (just before the index).
    let index =
        n - 12 - ((u32::from_le_bytes(f[n - 8..n - 4].try_into().unwrap()) as usize + 1) * 4);
    assert_eq!(with(index - 1, !f[index - 1]), Err(XzError::CheckMismatch));
    // SHA-256 and reserved check types are refused by name.
    let mut g = f.clone();
    g[7] = 10;
    let c = crc32(&g[6..8]).to_le_bytes();
    g[8..12].copy_from_slice(&c);
    let e = xz::decompress(&g, LIMIT).unwrap_err();
    assert_eq!(e, XzError::UnsupportedCheck { id: 10 });
    assert!(e.to_string().contains("SHA-256"), "{e}");
    // Stream padding that is not a multiple of four.
    let mut g = f.clone();
    g.extend_from_slice(&[0, 0]);
    assert_eq!(xz::decompress(&g, LIMIT), Err(XzError::BadPadding));
    assert_eq!(xz::decompress(&[], LIMIT), Err(XzError::Truncated));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = xz::decompress(&bytes, 1 << 20);
    }

    #[test]
    fn random_bytes_after_a_header_never_panic(
        bytes in proptest::collection::vec(any::<u8>(), 0..2048),
    ) {
        // Past the stream header, into block/LZMA2 parsing.
        let mut f = data("text.crc32.xz")[..12].to_vec();
        f.extend_from_slice(&bytes);
        let _ = xz::decompress(&f, 1 << 20);
    }

    #[test]
    fn random_lzma_payloads_never_panic(
        bytes in proptest::collection::vec(any::<u8>(), 0..4096),
        control in 0xE0u8..=0xFF,
        props in 0u8..225,
    ) {
        // A well-formed container and chunk header around random range-coder data, so the
        // LZMA decoder itself runs on garbage.
        let len = bytes.len().max(5);
        let mut raw = vec![control, 0xFF, 0xFF];
        raw.extend_from_slice(&((len - 1) as u16).to_be_bytes());
        raw.push(props);
        let mut body = bytes.clone();
        body.resize(len, 0);
        body[0] = 0;
        raw.extend_from_slice(&body);
        raw.push(0);
        let f = wrap(&raw, b"", LZMA2_ONLY);
        prop_assert!(xz::decompress(&f, 4 << 20).is_err());
    }

    #[test]
    fn random_flips_of_real_files_never_panic(
        idx in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
    ) {
        let mut f = data("x86.bcj.xz");
        let n = f.len();
        for (i, b) in idx {
            f[i % n] ^= b;
        }
        let _ = xz::decompress(&f, 1 << 20);
    }
}

// ----- bzImage with an xz payload -----

/// A bzImage (boot protocol 2.15) whose payload is `payload` + the 4-byte size hint.
fn bzimage(payload: &[u8], hint: u32) -> Vec<u8> {
    let setup_sects = 3u8;
    let payload_offset = 0x20u32;
    let start = (usize::from(setup_sects) + 1) * 512 + payload_offset as usize;
    let mut b = vec![0u8; start];
    b[0x1f1] = setup_sects;
    b[0x202..0x206].copy_from_slice(b"HdrS");
    b[0x206..0x208].copy_from_slice(&0x020fu16.to_le_bytes());
    b[0x248..0x24c].copy_from_slice(&payload_offset.to_le_bytes());
    b[0x24c..0x250].copy_from_slice(&(payload.len() as u32 + 4).to_le_bytes());
    b.extend_from_slice(payload);
    b.extend_from_slice(&hint.to_le_bytes());
    b
}

#[test]
fn unpack_kernel_decompresses_xz_payloads() {
    use domain_builder::{unpack_kernel, BuildError};
    use std::borrow::Cow;

    // kernel.xz: "\x7fELF" + x86.bin through `xz --check=crc32 --x86 --lzma2=dict=32MiB`,
    // the way Linux's `xz_wrap.sh` compresses vmlinux.bin for x86.
    let elf = [b"\x7fELF".to_vec(), data("x86.bin")].concat();
    let bz = bzimage(&data("kernel.xz"), elf.len() as u32);
    let got = unpack_kernel(&bz).unwrap();
    assert!(matches!(got, Cow::Owned(_)));
    assert_eq!(&*got, &elf[..]);

    // Stored LZMA2 chunks (0x01, then 0x02) across 64 KiB boundaries.
    let big: Vec<u8> = b"\x7fELF"
        .iter()
        .copied()
        .chain((0..140_000u32).map(|i| (i * 7 % 253) as u8))
        .collect();
    let mut raw = Vec::new();
    for (i, part) in big.chunks(65536).enumerate() {
        raw.extend_from_slice(&stored(if i == 0 { 1 } else { 2 }, part));
    }
    raw.push(0);
    let plain_stream = wrap(&raw, &big, LZMA2_ONLY);
    assert_eq!(
        &*unpack_kernel(&bzimage(&plain_stream, big.len() as u32)).unwrap(),
        &big[..]
    );

    // A plain ELF stays borrowed.
    assert!(matches!(unpack_kernel(&elf).unwrap(), Cow::Borrowed(_)));

    // The hint bounds the output (+ 1 MiB slack): 5 MiB of output with a hint of 0.
    assert_eq!(
        unpack_kernel(&bzimage(&data("pattern.xz"), 0)).unwrap_err(),
        BuildError::Xz(XzError::OutputLimit)
    );
    // With a right hint it decodes, but the result is not an ELF.
    assert_eq!(
        unpack_kernel(&bzimage(&data("pattern.xz"), pattern().len() as u32)).unwrap_err(),
        BuildError::NotElf
    );
    // Corrupt xz payloads are named.
    let mut bad = plain_stream.clone();
    let n = bad.len();
    bad[n - 20] ^= 1;
    let e = unpack_kernel(&bzimage(&bad, big.len() as u32)).unwrap_err();
    assert!(matches!(e, BuildError::Xz(_)), "{e:?}");
    assert!(e.to_string().contains("xz"), "{e}");
    // Other compressions are still refused by name.
    assert_eq!(
        unpack_kernel(&bzimage(&[0x1f, 0x8b, 8, 0], 100)).unwrap_err(),
        BuildError::CompressedPayload {
            kind: domain_builder::Compression::Gzip
        }
    );
}
