//! Model test: an honest frontend and backend driven by random interleavings on one thread,
//! checked against `VecDeque` models, with indices starting near the 32-bit wrap. Besides
//! FIFO delivery it checks the notification rule exactly: a push notifies if and only if
//! the consumer had re-armed (its final check found nothing) since the last notification,
//! so no wake-up is lost and none is sent needlessly.

use std::collections::VecDeque;

use proptest::prelude::*;
use ring::{BackRing, FrontRing, RingError, RingIdx, VecRingMemory, HEADER_SIZE};

#[derive(Clone, Debug)]
enum Op {
    FrontPush(u8),
    FrontPublish,
    FrontGet(u8),
    FrontFinalCheck,
    BackGet(u8),
    BackRespond(u8),
    BackPublish,
    BackFinalCheck,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (1u8..12).prop_map(Op::FrontPush),
        Just(Op::FrontPublish),
        (1u8..12).prop_map(Op::FrontGet),
        Just(Op::FrontFinalCheck),
        (1u8..12).prop_map(Op::BackGet),
        (1u8..12).prop_map(Op::BackRespond),
        Just(Op::BackPublish),
        Just(Op::BackFinalCheck),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(if cfg!(debug_assertions) { 1024 } else { 8192 }))]

    #[test]
    fn ring_matches_model(
        slots in 1usize..=16,
        slack in 0usize..8,
        start in prop_oneof![(u32::MAX - 40)..=u32::MAX, Just(0u32), any::<u32>()],
        ops in prop::collection::vec(op(), 1..300),
    ) {
        let mem = VecRingMemory::new(HEADER_SIZE + slots * 8 + slack);
        let start = RingIdx::new(start);
        let mut front: FrontRing<u64, u64, _> = FrontRing::init_at(mem.clone(), start).unwrap();
        let mut back: BackRing<u64, u64, _> = BackRing::attach(mem, start).unwrap();
        let size = front.size() as usize;
        prop_assert!(size.is_power_of_two() && size <= slots && size * 2 > slots);

        // Model state.
        let mut next_seq = 0u64;
        let mut unpublished: VecDeque<u64> = VecDeque::new(); // written, not published
        let mut published: VecDeque<u64> = VecDeque::new(); // visible to the backend
        let mut in_service: VecDeque<u64> = VecDeque::new(); // consumed by the backend
        let mut answered: VecDeque<u64> = VecDeque::new(); // response written, unpublished
        let mut responses: VecDeque<u64> = VecDeque::new(); // visible to the frontend
        let mut outstanding = 0usize; // requests without a consumed response
        let mut back_armed = true; // req_event = start + 1 initially
        let mut front_armed = true; // rsp_event = start + 1 initially

        for op in &ops {
            match *op {
                Op::FrontPush(n) => for _ in 0..n {
                    match front.push_request(&next_seq) {
                        Ok(_) => {
                            prop_assert!(outstanding < size);
                            outstanding += 1;
                            unpublished.push_back(next_seq);
                            next_seq += 1;
                        }
                        Err(e) => {
                            prop_assert_eq!(e, RingError::Full);
                            prop_assert_eq!(outstanding, size);
                        }
                    }
                },
                Op::FrontPublish => {
                    let new = !unpublished.is_empty();
                    published.extend(unpublished.drain(..));
                    let notify = front.push_requests_and_check_notify();
                    prop_assert_eq!(notify, new && back_armed);
                    if new { back_armed = false; }
                }
                Op::BackGet(n) => for _ in 0..n {
                    let got = back.get_request().unwrap();
                    prop_assert_eq!(got, published.pop_front());
                    if let Some(seq) = got { in_service.push_back(seq); }
                },
                Op::BackRespond(n) => for _ in 0..n {
                    match in_service.pop_front() {
                        Some(seq) => {
                            back.push_response(&!seq).unwrap();
                            answered.push_back(seq);
                        }
                        None => prop_assert_eq!(back.push_response(&0), Err(RingError::NoPendingRequest)),
                    }
                },
                Op::BackPublish => {
                    let new = !answered.is_empty();
                    responses.extend(answered.drain(..));
                    let notify = back.push_responses_and_check_notify();
                    prop_assert_eq!(notify, new && front_armed);
                    if new { front_armed = false; }
                }
                Op::FrontGet(n) => for _ in 0..n {
                    let got = front.get_response().unwrap();
                    prop_assert_eq!(got, responses.pop_front().map(|s| !s));
                    if got.is_some() { outstanding -= 1; }
                },
                Op::BackFinalCheck => {
                    let work = back.final_check_for_requests();
                    prop_assert_eq!(work, !published.is_empty());
                    if !work { back_armed = true; }
                }
                Op::FrontFinalCheck => {
                    let work = front.final_check_for_responses();
                    prop_assert_eq!(work, !responses.is_empty());
                    if !work { front_armed = true; }
                }
            }
            prop_assert_eq!(front.free_requests() as usize, size - outstanding);
            prop_assert_eq!(back.unconsumed_requests().unwrap() as usize, published.len());
            prop_assert_eq!(front.unconsumed_responses().unwrap() as usize, responses.len());
        }
    }
}

/// Deterministic walk across the wrap with a full ring at every step.
#[test]
fn full_ring_across_wrap() {
    let mem = VecRingMemory::new(HEADER_SIZE + 4 * 8);
    let start = RingIdx::new(u32::MAX - 5);
    let mut front: FrontRing<u64, u64, _> = FrontRing::init_at(mem.clone(), start).unwrap();
    let mut back: BackRing<u64, u64, _> = BackRing::attach(mem, start).unwrap();
    let mut seq = 0u64;
    for round in 0..10u64 {
        while front.push_request(&seq).is_ok() {
            seq += 1;
        }
        assert_eq!(front.free_requests(), 0);
        let _ = front.push_requests_and_check_notify();
        for i in 0..4 {
            let req = back.get_request().unwrap().unwrap();
            assert_eq!(req, round * 4 + i);
            back.push_response(&(req * 2)).unwrap();
        }
        assert_eq!(back.get_request(), Ok(None));
        let _ = back.push_responses_and_check_notify();
        for i in 0..4 {
            assert_eq!(front.get_response(), Ok(Some((round * 4 + i) * 2)));
        }
        assert_eq!(front.get_response(), Ok(None));
    }
    assert_eq!(front.req_prod_pvt(), start.wrapping_add(40));
    assert!(front.req_prod_pvt().raw() < 40, "indices wrapped");
}
