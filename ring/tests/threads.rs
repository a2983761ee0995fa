//! Two threads as frontend and backend pass millions of messages through a ring: none is
//! lost, duplicated, reordered or torn, and notifications (both directions) stay far below
//! the message count, proving the event-index batching of `ring.h`.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::{self, Thread};
use std::time::{Duration, Instant};

use common::{mix, Msg};
use ring::{BackRing, FrontRing, RingIdx, VecRingMemory, HEADER_SIZE};

/// Messages per full-size run: millions in release, fewer in debug builds.
const MESSAGES: u64 = if cfg!(debug_assertions) {
    200_000
} else {
    2_000_000
};

/// A simulated event channel: a pending bit plus the thread to wake.
#[derive(Default)]
struct Event {
    pending: AtomicBool,
    waiter: OnceLock<Thread>,
    sent: AtomicU64,
    /// Waits that timed out with work on the ring: a lost wake-up.
    stalls: AtomicU64,
}

impl Event {
    fn notify(&self) {
        self.sent.fetch_add(1, Ordering::Relaxed);
        self.pending.store(true, Ordering::SeqCst);
        if let Some(t) = self.waiter.get() {
            t.unpark();
        }
    }

    /// Sleeps until notified. `has_work` is consulted only after a long timeout, to tell a
    /// lost wake-up (work waiting, no event) from a slow peer.
    fn wait(&self, mut has_work: impl FnMut() -> bool) {
        let mut since = Instant::now();
        while !self.pending.swap(false, Ordering::SeqCst) {
            thread::park_timeout(Duration::from_millis(500));
            if since.elapsed() > Duration::from_secs(5) {
                if has_work() {
                    self.stalls.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                since = Instant::now();
            }
        }
    }
}

struct Stats {
    to_back: u64,
    to_front: u64,
    stalls: u64,
    front_sleeps: u64,
    back_sleeps: u64,
}

/// Runs `n` request/response pairs through a ring in `bytes` of shared memory whose indices
/// start at `start`.
fn run(bytes: usize, start: u32, n: u64) -> Stats {
    let mem = VecRingMemory::new(bytes);
    let start = RingIdx::new(start);
    let mut front: FrontRing<Msg, Msg, _> = FrontRing::init_at(mem.clone(), start).unwrap();
    let mut back: BackRing<Msg, Msg, _> = BackRing::attach(mem, start).unwrap();
    let to_back = Arc::new(Event::default());
    let to_front = Arc::new(Event::default());

    let backend = {
        let (to_back, to_front) = (to_back.clone(), to_front.clone());
        thread::spawn(move || {
            to_back.waiter.set(thread::current()).unwrap();
            let mut expect = 0u64;
            let mut digest = 0u64;
            let mut sleeps = 0u64;
            while expect < n {
                let mut got = 0;
                while let Some(req) = back.get_request().expect("honest frontend") {
                    assert!(req.is_request(expect), "request {expect}: got {req:?}");
                    digest = mix(digest ^ req.value);
                    back.push_response(&Msg::response_to(&req)).unwrap();
                    expect += 1;
                    got += 1;
                }
                if got > 0 {
                    if back.push_responses_and_check_notify() {
                        to_front.notify();
                    }
                    continue;
                }
                if back.final_check_for_requests() {
                    continue;
                }
                sleeps += 1;
                to_back.wait(|| back.final_check_for_requests());
            }
            (digest, sleeps)
        })
    };

    to_front.waiter.set(thread::current()).unwrap();
    let mut next_req = 0u64;
    let mut next_rsp = 0u64;
    let mut digest = 0u64;
    let mut front_sleeps = 0u64;
    while next_rsp < n {
        let mut pushed = false;
        while next_req < n && !front.is_full() {
            front.push_request(&Msg::request(next_req)).unwrap();
            digest = mix(digest ^ Msg::request(next_req).value);
            next_req += 1;
            pushed = true;
        }
        if pushed && front.push_requests_and_check_notify() {
            to_back.notify();
        }
        let mut got = false;
        while let Some(rsp) = front.get_response().expect("honest backend") {
            assert!(
                rsp.is_response(next_rsp),
                "response {next_rsp}: got {rsp:?}"
            );
            next_rsp += 1;
            got = true;
        }
        if got || next_rsp == n || front.final_check_for_responses() {
            continue;
        }
        front_sleeps += 1;
        to_front.wait(|| front.final_check_for_responses());
    }
    let (back_digest, back_sleeps) = backend.join().unwrap();
    assert_eq!(digest, back_digest, "request stream differs");
    assert_eq!(next_req, n);
    // Nothing left over in either direction.
    assert_eq!(front.get_response(), Ok(None));
    assert_eq!(front.free_requests(), front.size());

    Stats {
        to_back: to_back.sent.load(Ordering::Relaxed),
        to_front: to_front.sent.load(Ordering::Relaxed),
        stalls: to_back.stalls.load(Ordering::Relaxed) + to_front.stalls.load(Ordering::Relaxed),
        front_sleeps,
        back_sleeps,
    }
}

fn check(name: &str, bytes: usize, start: u32, n: u64, max_ratio: f64) {
    let t = Instant::now();
    let s = run(bytes, start, n);
    let elapsed = t.elapsed();
    let (rb, rf) = (s.to_back as f64 / n as f64, s.to_front as f64 / n as f64);
    println!(
        "{name}: {n} messages each way in {elapsed:?} ({:.2} M msg/s); notifications \
         front->back {} ({:.3}%), back->front {} ({:.3}%); sleeps front {} back {}",
        n as f64 / elapsed.as_secs_f64() / 1e6,
        s.to_back,
        rb * 100.0,
        s.to_front,
        rf * 100.0,
        s.front_sleeps,
        s.back_sleeps,
    );
    assert_eq!(s.stalls, 0, "lost wake-up");
    assert!(rb < max_ratio, "front->back notification ratio {rb}");
    assert!(rf < max_ratio, "back->front notification ratio {rf}");
}

fn slots_bytes(slots: usize) -> usize {
    HEADER_SIZE + slots * core::mem::size_of::<Msg>()
}

#[test]
fn one_page_millions() {
    // One page of 24-byte messages: (4096 - 64) / 24 = 168 -> 128 slots.
    check("1 page (128 slots)", 4096, 0, MESSAGES, 0.10);
}

#[test]
fn small_ring_wraps_indices() {
    // 16 slots, indices starting just below the 32-bit wrap.
    check(
        "16 slots, start u32::MAX-1000",
        slots_bytes(16),
        u32::MAX - 1000,
        MESSAGES / 2,
        0.25,
    );
}

#[test]
fn tiny_ring_correctness() {
    // One slot: every message is a full round trip; only correctness is checked.
    let s = run(slots_bytes(1), u32::MAX - 3, MESSAGES / 20);
    assert_eq!(s.stalls, 0);
}

#[test]
fn multi_page_ring() {
    // Order 2 (4 pages): (16384 - 64) / 24 = 680 -> 512 slots.
    check("4 pages (512 slots)", 4 * 4096, 7, MESSAGES / 2, 0.10);
}
