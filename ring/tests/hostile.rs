//! A hostile peer: random indices and random bytes anywhere in the shared area, interleaved
//! with the honest side's operations. The honest side may return errors but must never
//! panic, never access memory outside the ring (`VecRingMemory` panics if it does), and
//! never let its private invariants break.

mod common;

use common::Msg;
use proptest::prelude::*;
use ring::blkif::{BlkifBackRing, BlkifFrontRing, BlkifRequest, BlkifResponse};
use ring::{BackRing, FrontRing, RingError, RingIdx, RingMemory, VecRingMemory, HEADER_SIZE};

/// What the hostile side does to the shared area between two honest operations.
#[derive(Clone, Debug)]
enum Attack {
    /// Store a value into one header word (0 req_prod .. 12 rsp_event, ...).
    Header { word: usize, value: u32 },
    /// Set the honest consumer's producer index to `cons + delta` (near-valid values are
    /// the interesting ones).
    ProdNear { delta: u32 },
    /// Write random bytes anywhere in the area.
    Scribble { at: usize, bytes: Vec<u8> },
}

#[derive(Clone, Debug)]
enum Op {
    Attack(Attack),
    /// The honest side's operations.
    Get,
    Put,
    Publish,
    FinalCheck,
}

fn attack() -> impl Strategy<Value = Attack> {
    prop_oneof![
        (0usize..16, any::<u32>()).prop_map(|(word, value)| Attack::Header { word, value }),
        prop_oneof![0u32..80, any::<u32>(), (u32::MAX - 80)..=u32::MAX]
            .prop_map(|delta| Attack::ProdNear { delta }),
        (any::<usize>(), prop::collection::vec(any::<u8>(), 1..64))
            .prop_map(|(at, bytes)| Attack::Scribble { at, bytes }),
    ]
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    prop::collection::vec(
        prop_oneof![
            3 => attack().prop_map(Op::Attack),
            3 => Just(Op::Get),
            2 => Just(Op::Put),
            1 => Just(Op::Publish),
            1 => Just(Op::FinalCheck),
        ],
        1..200,
    )
}

fn apply(mem: &VecRingMemory, a: &Attack, prod_offset: usize, cons: RingIdx) {
    match a {
        Attack::Header { word, value } => mem.store_u32(word * 4, *value),
        Attack::ProdNear { delta } => mem.store_u32(prod_offset, cons.wrapping_add(*delta).raw()),
        Attack::Scribble { at, bytes } => {
            // Anywhere in the area, clipped to its end.
            let at = at % mem.len();
            let n = bytes.len().min(mem.len() - at);
            mem.write_bytes(at, &bytes[..n]);
        }
    }
}

fn ring_bytes() -> impl Strategy<Value = usize> {
    // Tiny rings (1..=8 slots, with slack) and a full page.
    prop_oneof![
        (1usize..9, 0usize..24).prop_map(|(s, extra)| HEADER_SIZE + s * 24 + extra),
        Just(4096)
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(if cfg!(debug_assertions) { 512 } else { 4096 }))]

    /// Backend against a hostile frontend.
    #[test]
    fn backend_survives_hostile_frontend(
        bytes in ring_bytes(),
        start in prop_oneof![Just(0u32), (u32::MAX - 20)..=u32::MAX, any::<u32>()],
        ops in ops(),
    ) {
        let mem = VecRingMemory::new(bytes);
        let _front: FrontRing<Msg, Msg, _> = FrontRing::init_at(mem.clone(), RingIdx::new(start)).unwrap();
        let mut back: BackRing<Msg, Msg, _> = BackRing::attach(mem.clone(), RingIdx::new(start)).unwrap();
        let size = back.size();
        for op in &ops {
            match op {
                Op::Attack(a) => {
                    apply(&mem, a, 0, back.req_cons());
                }
                Op::Get => {
                    let before = back.req_cons();
                    match back.get_request() {
                        Ok(Some(_)) => prop_assert_eq!(back.req_cons(), before.next()),
                        Ok(None) => prop_assert_eq!(back.req_cons(), before),
                        Err(RingError::ProducerOverflow { .. }) => {
                            prop_assert_eq!(back.req_cons(), before)
                        }
                        Err(e) => prop_assert!(false, "unexpected {:?}", e),
                    }
                }
                Op::Put => {
                    let pending = back.pending_responses();
                    match back.push_response(&Msg::default()) {
                        Ok(_) => prop_assert!(pending > 0),
                        Err(e) => {
                            prop_assert_eq!(e, RingError::NoPendingRequest);
                            prop_assert_eq!(pending, 0);
                        }
                    }
                }
                Op::Publish => { let _ = back.push_responses_and_check_notify(); }
                Op::FinalCheck => { let _ = back.final_check_for_requests(); }
            }
            // Never more than `size` requests held without a response.
            prop_assert!(back.pending_responses() <= size);
        }
    }

    /// Frontend against a hostile backend.
    #[test]
    fn frontend_survives_hostile_backend(
        bytes in ring_bytes(),
        start in prop_oneof![Just(0u32), (u32::MAX - 20)..=u32::MAX, any::<u32>()],
        ops in ops(),
    ) {
        let mem = VecRingMemory::new(bytes);
        let mut front: FrontRing<Msg, Msg, _> = FrontRing::init_at(mem.clone(), RingIdx::new(start)).unwrap();
        let size = front.size();
        let mut published = RingIdx::new(start);
        for op in &ops {
            match op {
                Op::Attack(a) => {
                    apply(&mem, a, 8, front.rsp_cons());
                }
                Op::Get => {
                    let before = front.rsp_cons();
                    match front.get_response() {
                        Ok(Some(_)) => prop_assert_eq!(front.rsp_cons(), before.next()),
                        Ok(None) => prop_assert_eq!(front.rsp_cons(), before),
                        Err(RingError::ProducerOverflow { .. }) => prop_assert_eq!(front.rsp_cons(), before),
                        Err(e) => prop_assert!(false, "unexpected {:?}", e),
                    }
                    // A response can only answer a published request.
                    prop_assert!(published.distance_from(front.rsp_cons()) <= size);
                }
                Op::Put => {
                    let free = front.free_requests();
                    match front.push_request(&Msg::default()) {
                        Ok(_) => prop_assert!(free > 0),
                        Err(e) => {
                            prop_assert_eq!(e, RingError::Full);
                            prop_assert_eq!(free, 0);
                        }
                    }
                }
                Op::Publish => {
                    let _ = front.push_requests_and_check_notify();
                    published = front.req_prod_pvt();
                }
                Op::FinalCheck => { let _ = front.final_check_for_responses(); }
            }
            prop_assert!(front.req_prod_pvt().distance_from(front.rsp_cons()) <= size);
        }
    }

    /// Random bytes in a blkif page (any operation, any nr_segments): the backend copies
    /// requests out and the typed accessors never index out of bounds.
    #[test]
    fn blkif_random_page(page in prop::collection::vec(any::<u8>(), 4096), gets in 1usize..64) {
        let mem = VecRingMemory::pages(0);
        mem.write_bytes(0, &page);
        let mut back: BlkifBackRing<_> = BlkifBackRing::new(mem.clone()).unwrap();
        for _ in 0..gets {
            match back.get_request() {
                Ok(Some(req)) => {
                    let _ = req.segments().map(|s| s.len());
                    let _ = req.as_indirect().indirect_pages();
                    let _ = req.as_discard().nr_sectors;
                    let _ = back.push_response(&BlkifResponse::default());
                }
                Ok(None) | Err(_) => break,
            }
        }
        prop_assert!(back.pending_responses() <= back.size());
    }
}

#[test]
fn overflowing_producer_is_rejected() {
    let mem = VecRingMemory::new(4096);
    let mut front: FrontRing<Msg, Msg, _> = FrontRing::init(mem.clone()).unwrap();
    let mut back: BackRing<Msg, Msg, _> = BackRing::new(mem.clone()).unwrap();
    let size = back.size();
    // Exactly `size` requests is legal.
    for i in 0..size {
        front.push_request(&Msg::request(u64::from(i))).unwrap();
    }
    assert_eq!(front.push_request(&Msg::default()), Err(RingError::Full));
    let _ = front.push_requests_and_check_notify();
    assert_eq!(back.unconsumed_requests(), Ok(size));
    // One more is an overflow; so is an index that went backwards.
    mem.store_u32(0, size + 1);
    assert_eq!(
        back.get_request(),
        Err(RingError::ProducerOverflow {
            prod: RingIdx::new(size + 1),
            cons: RingIdx::new(0)
        })
    );
    assert!(back.final_check_for_requests(), "overflow counts as work");
    mem.store_u32(0, 2);
    assert!(back.get_request().unwrap().unwrap().is_request(0));
    assert!(back.get_request().unwrap().unwrap().is_request(1));
    mem.store_u32(0, 1);
    assert!(matches!(
        back.get_request(),
        Err(RingError::ProducerOverflow { .. })
    ));
    // With two requests unanswered, req_prod may be at most rsp_prod_pvt + size.
    mem.store_u32(0, size);
    for i in 2..size {
        assert!(back
            .get_request()
            .unwrap()
            .unwrap()
            .is_request(u64::from(i)));
    }
    assert_eq!(back.get_request(), Ok(None));
    mem.store_u32(0, size + 1);
    assert!(matches!(
        back.get_request(),
        Err(RingError::ProducerOverflow { .. })
    ));
    back.push_response(&Msg::default()).unwrap();
    // One answered: now one more request may exist. Slot 0 holds our response, which the
    // (lying) frontend never overwrote, so that is what the backend copies out.
    assert_eq!(back.get_request(), Ok(Some(Msg::default())));
}

#[test]
fn responses_beyond_published_requests_are_rejected() {
    let mem = VecRingMemory::new(4096);
    let mut front: FrontRing<Msg, Msg, _> = FrontRing::init(mem.clone()).unwrap();
    front.push_request(&Msg::request(0)).unwrap();
    front.push_request(&Msg::request(1)).unwrap();
    let _ = front.push_requests_and_check_notify();
    front.push_request(&Msg::request(2)).unwrap(); // written, not published
    mem.store_u32(8, 3);
    assert!(matches!(
        front.get_response(),
        Err(RingError::ProducerOverflow { .. })
    ));
    mem.store_u32(8, u32::MAX);
    assert!(matches!(
        front.get_response(),
        Err(RingError::ProducerOverflow { .. })
    ));
    mem.store_u32(8, 2);
    assert!(front.get_response().unwrap().is_some());
    assert!(front.get_response().unwrap().is_some());
    assert_eq!(front.get_response(), Ok(None));
}

/// `RING_COPY_REQUEST`: each request is read from shared memory exactly once, and the
/// producer index once per batch.
#[test]
fn requests_are_copied_once() {
    let mem = VecRingMemory::pages(0);
    let mut front: BlkifFrontRing<_> = BlkifFrontRing::init(mem.clone()).unwrap();
    let mut back: BlkifBackRing<_> = BlkifBackRing::new(mem.clone()).unwrap();
    for id in 0..4 {
        front
            .push_request(&BlkifRequest {
                id,
                ..Default::default()
            })
            .unwrap();
    }
    let _ = front.push_requests_and_check_notify();
    let before = mem.accesses();
    let mut copies = Vec::new();
    for id in 0..4 {
        let req = back.get_request().unwrap().unwrap();
        assert_eq!(req.id, id);
        copies.push(req);
    }
    // 1 load of req_prod + 4 entry copies.
    assert_eq!(mem.accesses() - before, 5);
    // The frontend rewriting a slot afterwards cannot change the copy being validated.
    mem.write_bytes(HEADER_SIZE, &[0xff; 112]);
    assert_eq!(copies[0].id, 0);
    assert_eq!(copies[0].nr_segments, 0);
}
