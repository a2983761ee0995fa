//! The ring page: round trips through `req`/`rsp`, wrap-around, split messages,
//! backpressure, and hostile indices and bytes (proptest).

mod common;

use common::*;
use proptest::prelude::*;
use xenstored::ring::{self, RingError, RingMemory};
use xenstored::wire::{self, MsgType as T};
use xenstored::{Store, DOM0};

fn guest_store(n: u16) -> Store {
    let mut s = Store::new();
    make_domain(&mut s, n);
    s.introduce(d(n), 0x1000, 3).unwrap();
    s
}

#[test]
fn requests_and_replies_over_the_ring() {
    let mut s = guest_store(1);
    let mut g = Guest::new();
    g.send(&wire::message(T::Read.raw(), 1, 0, b"name\0"));
    g.send(&wire::message(
        T::Watch.raw(),
        2,
        0,
        b"control/shutdown\0tok\0",
    ));
    let r = s.service_ring(d(1), &mut g.page).unwrap();
    assert!(r.notify);
    assert_eq!(r.requests, 2);
    assert_eq!(r.broken, None);
    assert_eq!(
        g.page.load_u32(ring::SERVER_FEATURES),
        ring::SERVER_FEATURES_OFFERED
    );
    assert_eq!(
        g.page.load_u32(ring::REQ_CONS),
        g.page.load_u32(ring::REQ_PROD)
    );
    g.recv();
    let m = g.messages();
    assert_eq!(m.len(), 3);
    assert_eq!(
        (m[0].0.ty, m[0].0.req_id, m[0].1.as_slice()),
        (T::Read.raw(), 1, &b"guest1"[..])
    );
    assert_eq!(
        (m[1].0.ty, m[1].0.req_id, m[1].1.as_slice()),
        (T::Watch.raw(), 2, &b"OK\0"[..])
    );
    assert_eq!(
        (m[2].0.ty, m[2].0.req_id, m[2].1.as_slice()),
        (T::WatchEvent.raw(), 0, &b"control/shutdown\0tok\0"[..])
    );
    // The toolstack writes control/shutdown: the event goes out on the next service.
    s.write(DOM0, "/local/domain/1/control/shutdown", b"poweroff")
        .unwrap();
    let r = s.service_ring(d(1), &mut g.page).unwrap();
    assert!(r.notify);
    assert_eq!(r.requests, 0);
    g.recv();
    let m = g.messages();
    assert_eq!(m[0].1, b"control/shutdown\0tok\0");
    // Nothing to do: no notification.
    assert!(!s.service_ring(d(1), &mut g.page).unwrap().notify);
}

#[test]
fn wrap_and_split_messages() {
    for base in [0u32, 1000, u32::MAX - 5, u32::MAX - 1030] {
        let mut s = guest_store(2);
        let mut g = Guest::with_indices(base);
        // A write of ~1.5 KiB must be fed in pieces as the ring drains.
        let value = vec![b'v'; 1500];
        let msg = wire::message(T::Write.raw(), 7, 0, &write_payload("data/big", &value));
        let mut sent = 0;
        let mut rounds = 0;
        while sent < msg.len() {
            sent += g.send(&msg[sent..]);
            s.service_ring(d(2), &mut g.page).unwrap();
            rounds += 1;
            assert!(rounds < 10);
        }
        assert!(rounds >= 2);
        g.recv();
        let m = g.messages();
        assert_eq!(m.len(), 1);
        assert_eq!((m[0].0.req_id, m[0].1.as_slice()), (7, &b"OK\0"[..]));
        assert_eq!(s.read(DOM0, "/local/domain/2/data/big").unwrap(), value);
        // Read it back: the 1500-byte reply must cross the rsp ring in pieces.
        g.send(&wire::message(T::Read.raw(), 8, 0, b"data/big\0"));
        let mut got = Vec::new();
        for _ in 0..10 {
            s.service_ring(d(2), &mut g.page).unwrap();
            g.recv();
            got.extend(g.messages());
            if !got.is_empty() {
                break;
            }
        }
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].1, value);
        // Byte-at-a-time delivery of a request.
        let msg = wire::message(T::Read.raw(), 9, 0, b"domid\0");
        for b in &msg {
            g.send(std::slice::from_ref(b));
            s.service_ring(d(2), &mut g.page).unwrap();
        }
        g.recv();
        let m = g.messages();
        assert_eq!((m[0].0.req_id, m[0].1.as_slice()), (9, &b"2"[..]));
    }
}

#[test]
fn a_guest_that_does_not_read_replies_is_paused_not_fatal() {
    let mut s = guest_store(3);
    let mut g = Guest::new();
    let value = vec![b'x'; 2000];
    s.write(DOM0, "/local/domain/3/data/v", &value).unwrap();
    let req = wire::message(T::Read.raw(), 1, 0, b"data/v\0");
    // Keep sending reads without ever consuming rsp.
    for _ in 0..200 {
        g.send(&req);
        s.service_ring(d(3), &mut g.page).unwrap();
    }
    // rsp is full, output is queued up to the pause threshold, then requests wait.
    let rsp_used = g
        .page
        .load_u32(ring::RSP_PROD)
        .wrapping_sub(g.page.load_u32(ring::RSP_CONS));
    assert_eq!(rsp_used, 1024);
    let pending = g
        .page
        .load_u32(ring::REQ_PROD)
        .wrapping_sub(g.page.load_u32(ring::REQ_CONS));
    assert!(pending > 0);
    // Draining lets everything through.
    let mut replies = 0;
    for _ in 0..1000 {
        g.recv();
        replies += g.messages().len();
        s.service_ring(d(3), &mut g.page).unwrap();
        if g.page.load_u32(ring::REQ_PROD) == g.page.load_u32(ring::REQ_CONS)
            && g.page.load_u32(ring::RSP_PROD) == g.page.load_u32(ring::RSP_CONS)
        {
            break;
        }
    }
    g.recv();
    replies += g.messages().len();
    assert!(replies >= 30, "{replies}");
}

#[test]
fn hostile_indices_and_lengths_break_the_connection() {
    // req_prod far ahead of req_cons.
    let mut s = guest_store(4);
    let mut g = Guest::new();
    g.page.store_u32(ring::REQ_PROD, 5000);
    let r = s.service_ring(d(4), &mut g.page).unwrap();
    assert_eq!(r.broken, Some(RingError::BadIndex));
    assert!(r.notify);
    assert_eq!(g.page.load_u32(ring::ERROR), ring::ERROR_RINGIDX);
    // Broken stays broken, and quiet.
    g.page.store_u32(ring::REQ_PROD, 0);
    let r = s.service_ring(d(4), &mut g.page).unwrap();
    assert_eq!((r.broken, r.notify), (Some(RingError::BadIndex), false));
    // The store itself is fine; re-introduction gives a fresh connection.
    s.introduce(d(4), 0x1000, 3).unwrap();
    let mut g = Guest::new();
    g.send(&wire::message(T::Read.raw(), 1, 0, b"domid\0"));
    assert_eq!(s.service_ring(d(4), &mut g.page).unwrap().broken, None);

    // rsp indices corrupted while we have output.
    let mut g = Guest::new();
    g.send(&wire::message(T::Read.raw(), 1, 0, b"domid\0"));
    g.page.store_u32(ring::RSP_CONS, 3000);
    s.introduce(d(4), 0x1000, 3).unwrap();
    let r = s.service_ring(d(4), &mut g.page).unwrap();
    assert_eq!(r.broken, Some(RingError::BadIndex));

    // A header announcing more than XENSTORE_PAYLOAD_MAX.
    s.introduce(d(4), 0x1000, 3).unwrap();
    let mut g = Guest::new();
    let mut h = wire::Header {
        ty: T::Write.raw(),
        req_id: 1,
        tx_id: 0,
        len: 4097,
    }
    .to_bytes()
    .to_vec();
    h.extend_from_slice(b"data/x\0");
    g.send(&h);
    let r = s.service_ring(d(4), &mut g.page).unwrap();
    assert_eq!(r.broken, Some(RingError::Protocol));
    assert_eq!(g.page.load_u32(ring::ERROR), ring::ERROR_PROTO);

    // Unknown domain.
    assert!(s.service_ring(d(40), &mut g.page).is_err());
}

/// A page whose indices move under us between reads, like a guest racing dom0.
struct Racing {
    page: xenstored::ArrayRing,
    script: Vec<(usize, u32)>,
    step: usize,
}

impl RingMemory for Racing {
    fn read(&self, offset: usize, buf: &mut [u8]) {
        self.page.read(offset, buf)
    }
    fn write(&mut self, offset: usize, data: &[u8]) {
        self.page.write(offset, data)
    }
    fn load_u32(&self, offset: usize) -> u32 {
        self.page.load_u32(offset)
    }
    fn store_u32(&mut self, offset: usize, value: u32) {
        self.page.store_u32(offset, value);
        // After each of our index updates the "guest" scribbles somewhere.
        if let Some(&(off, v)) = self.script.get(self.step) {
            self.page.store_u32((off % 4096) & !3, v);
            self.step += 1;
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Random page contents and indices never panic, never write outside the page, and
    /// never leave rsp overfilled when the guest's indices were sane.
    #[test]
    fn hostile_page_never_panics(
        bytes in proptest::collection::vec(any::<u8>(), 2080),
        req_cons in any::<u32>(),
        req_prod_delta in prop_oneof![0u32..=1024, any::<u32>()],
        rsp_cons in any::<u32>(),
        rsp_delta in prop_oneof![0u32..=1024, any::<u32>()],
        rounds in 1usize..4,
    ) {
        let mut s = guest_store(5);
        let mut g = Guest::new();
        g.page.0[..2080].copy_from_slice(&bytes);
        g.page.store_u32(ring::REQ_CONS, req_cons);
        g.page.store_u32(ring::REQ_PROD, req_cons.wrapping_add(req_prod_delta));
        g.page.store_u32(ring::RSP_CONS, rsp_cons);
        g.page.store_u32(ring::RSP_PROD, rsp_cons.wrapping_add(rsp_delta));
        for _ in 0..rounds {
            let r = s.service_ring(d(5), &mut g.page).unwrap();
            if r.broken.is_none() {
                let used = g.page.load_u32(ring::RSP_PROD)
                    .wrapping_sub(g.page.load_u32(ring::RSP_CONS));
                // (Insane rsp indices are only noticed when there is output to write.)
                prop_assert!(used <= 1024 || rsp_delta > 1024);
                let pend = g.page.load_u32(ring::REQ_PROD)
                    .wrapping_sub(g.page.load_u32(ring::REQ_CONS));
                prop_assert!(pend <= 1024);
            }
            // The guest consumes the output (if its own indices make sense).
            let used = g.page.load_u32(ring::RSP_PROD)
                .wrapping_sub(g.page.load_u32(ring::RSP_CONS));
            if used <= 1024 {
                g.recv();
                g.rx.clear();
            }
        }
        // The store still answers dom0.
        prop_assert_eq!(s.read(DOM0, "/local/domain/5/domid").unwrap(), b"5".to_vec());
    }

    /// Random valid-looking and invalid messages fed through a well-behaved ring: every
    /// complete request gets exactly one reply (or the connection breaks on len > 4096).
    #[test]
    fn random_messages_get_replies(
        msgs in proptest::collection::vec(
            (0u32..30, any::<u32>(), 0u32..3, proptest::collection::vec(
                prop_oneof![Just(0u8), Just(b'/'), Just(b'a'), any::<u8>()], 0..40)),
            1..12),
        base in any::<u32>(),
    ) {
        let mut s = guest_store(6);
        let mut g = Guest::with_indices(base);
        let mut stream = Vec::new();
        for (ty, req_id, tx, payload) in &msgs {
            stream.extend(wire::message(*ty, *req_id, *tx, payload));
        }
        let mut sent = 0;
        let mut replies = Vec::new();
        for _ in 0..200 {
            sent += g.send(&stream[sent..]);
            let r = s.service_ring(d(6), &mut g.page).unwrap();
            prop_assert!(r.broken.is_none());
            g.recv();
            replies.extend(g.messages());
            if sent == stream.len()
                && g.page.load_u32(ring::REQ_PROD) == g.page.load_u32(ring::REQ_CONS)
                && g.page.load_u32(ring::RSP_PROD) == g.page.load_u32(ring::RSP_CONS)
            {
                break;
            }
        }
        let answered: Vec<u32> = replies
            .iter()
            .filter(|(h, _)| h.ty != T::WatchEvent.raw())
            .map(|(h, _)| h.req_id)
            .collect();
        let asked: Vec<u32> = msgs.iter().map(|m| m.1).collect();
        prop_assert_eq!(answered, asked);
    }

    /// Indices changing between our reads and writes (a racing guest) never panic.
    #[test]
    fn racing_guest_never_panics(
        script in proptest::collection::vec((2048usize..2080, any::<u32>()), 0..16),
        fill in proptest::collection::vec(any::<u8>(), 1024),
    ) {
        let mut s = guest_store(7);
        let mut g = Guest::new();
        g.send(&wire::message(T::Read.raw(), 1, 0, b"domid\0"));
        g.page.0[..1024].copy_from_slice(&fill);
        g.page.store_u32(ring::REQ_PROD, 1024);
        let mut r = Racing { page: g.page, script, step: 0 };
        for _ in 0..8 {
            let _ = s.service_ring(d(7), &mut r).unwrap();
        }
    }
}
