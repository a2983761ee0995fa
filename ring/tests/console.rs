//! Console ring (`xencons_interface`): wrap, full ring, indices near the 32-bit wrap, a
//! corrupt peer, and a two-thread stream with a checksum.

use proptest::prelude::*;
use ring::console::{
    ConsoleBack, ConsoleFront, XENCONSOLE_DISCONNECTED, XENCONS_IN_SIZE, XENCONS_OUT_SIZE,
};
use ring::{RingError, RingIdx, RingMemory, VecRingMemory};

const OUT_CONS: usize = 3080;
const OUT_PROD: usize = 3084;
const IN_CONS: usize = 3072;
const IN_PROD: usize = 3076;

fn pair() -> (ConsoleFront<VecRingMemory>, ConsoleBack<VecRingMemory>) {
    let mem = VecRingMemory::pages(0);
    (
        ConsoleFront::new(mem.clone()).unwrap(),
        ConsoleBack::new(mem).unwrap(),
    )
}

#[test]
fn full_then_wrap() {
    let (front, back) = pair();
    let data: Vec<u8> = (0..3000u32).map(|i| (i * 7) as u8).collect();
    // Only 2048 bytes fit; then the ring is full.
    assert_eq!(front.write(&data), Ok(2048));
    assert_eq!(front.write(b"x"), Ok(0));
    assert_eq!(front.unsent(), Ok(2048));
    let mut buf = [0u8; 1000];
    assert_eq!(back.read(&mut buf), Ok(1000));
    assert_eq!(&buf[..], &data[..1000]);
    // This write wraps around the end of out[].
    assert_eq!(front.write(&data[2048..]), Ok(952));
    let mut rest = vec![0u8; 4096];
    assert_eq!(back.read(&mut rest), Ok(2000));
    assert_eq!(&rest[..2000], &data[1000..3000]);
    assert_eq!(back.read(&mut rest), Ok(0));
    assert_eq!(back.pending_output(), Ok(0));
}

#[test]
fn input_direction_and_connection() {
    let (front, back) = pair();
    assert_eq!(back.write(&[1u8; 1500]), Ok(XENCONS_IN_SIZE as usize));
    let mut buf = [0u8; 10];
    assert_eq!(front.read(&mut buf), Ok(10));
    assert_eq!(buf, [1u8; 10]);
    back.set_connection(XENCONSOLE_DISCONNECTED);
    let mut b = [0u8; 1];
    back.memory().read_bytes(3088, &mut b);
    assert_eq!(b[0], XENCONSOLE_DISCONNECTED);
}

#[test]
fn indices_near_u32_max() {
    let (front, back) = pair();
    let start = u32::MAX - 100;
    let mem = front.memory();
    for off in [OUT_CONS, OUT_PROD, IN_CONS, IN_PROD] {
        mem.store_u32(off, start);
    }
    let mut seq = 0u8;
    for _ in 0..50 {
        let chunk: Vec<u8> = (0..777)
            .map(|_| {
                seq = seq.wrapping_add(1);
                seq
            })
            .collect();
        let mut written = 0;
        let mut got = Vec::new();
        while written < chunk.len() || got.len() < chunk.len() {
            written += front.write(&chunk[written..]).unwrap();
            let mut buf = [0u8; 300];
            let n = back.read(&mut buf).unwrap();
            got.extend_from_slice(&buf[..n]);
        }
        assert_eq!(got, chunk);
    }
    let prod = mem.load_u32(OUT_PROD);
    assert_eq!(
        RingIdx::new(prod).distance_from(RingIdx::new(start)),
        50 * 777
    );
    assert!(prod < start, "wrapped");
}

#[test]
fn corrupt_indices_are_errors() {
    let (front, back) = pair();
    let mem = front.memory();
    mem.store_u32(OUT_PROD, XENCONS_OUT_SIZE + 1);
    assert!(matches!(
        back.read(&mut [0; 8]),
        Err(RingError::ConsumerOverrun { .. })
    ));
    assert!(matches!(
        front.write(b"hi"),
        Err(RingError::ConsumerOverrun { .. })
    ));
    // A consumer index ahead of the producer.
    mem.store_u32(OUT_PROD, 5);
    mem.store_u32(OUT_CONS, 6);
    assert!(front.write(b"hi").is_err());
    assert!(ConsoleFront::new(VecRingMemory::new(3000)).is_err());
}

#[test]
fn two_threads_stream() {
    let (front, back) = pair();
    let total: usize = if cfg!(debug_assertions) {
        2_000_000
    } else {
        20_000_000
    };
    let reader = std::thread::spawn(move || {
        let mut got = 0usize;
        let mut sum = 0u64;
        let mut buf = [0u8; 512];
        while got < total {
            let n = back.read(&mut buf).unwrap();
            for &b in &buf[..n] {
                assert_eq!(b, (got % 251) as u8, "byte {got}");
                sum = sum.wrapping_mul(31).wrapping_add(u64::from(b));
                got += 1;
            }
            if n == 0 {
                std::thread::yield_now();
            }
        }
        sum
    });
    let data: Vec<u8> = (0..251 * 8).map(|i| (i % 251) as u8).collect();
    let mut sent = 0usize;
    let mut sum = 0u64;
    while sent < total {
        let off = sent % 251;
        let want = (total - sent).min(1024);
        let n = front.write(&data[off..off + want]).unwrap();
        for &b in &data[off..off + n] {
            sum = sum.wrapping_mul(31).wrapping_add(u64::from(b));
        }
        sent += n;
        if n == 0 {
            std::thread::yield_now();
        }
    }
    assert_eq!(reader.join().unwrap(), sum);
}

proptest! {
    /// Random indices and data: reads and writes never panic or leave the page, and never
    /// move more bytes than the indices allow.
    #[test]
    fn hostile_console_indices(
        idx in prop::array::uniform4(prop_oneof![any::<u32>(), 0u32..4096, (u32::MAX - 4096)..=u32::MAX]),
        junk in prop::collection::vec(any::<u8>(), 0..4096),
        len in 0usize..5000,
    ) {
        let (front, back) = pair();
        let mem = front.memory();
        mem.write_bytes(0, &junk);
        for (off, v) in [IN_CONS, IN_PROD, OUT_CONS, OUT_PROD].into_iter().zip(idx) {
            mem.store_u32(off, v);
        }
        let mut buf = vec![0u8; len];
        let out_used = idx[3].wrapping_sub(idx[2]);
        match back.read(&mut buf) {
            Ok(n) => prop_assert!(n as u32 <= out_used && out_used <= XENCONS_OUT_SIZE),
            Err(_) => prop_assert!(out_used > XENCONS_OUT_SIZE),
        }
        let _ = front.write(&buf);
        let _ = front.read(&mut buf);
        let _ = back.write(&buf);
    }
}
