//! `timers`: set_timer_op, VCPUOP single-shot (future and past deadlines), VCPUOP periodic,
//! SCHEDOP_block woken by the timer, SCHEDOP_poll with a timeout and on a pending port, and
//! system/wall-clock time behaving sanely.

use core::sync::atomic::{AtomicU64, Ordering};

use pv_guest::hypercall as hc;
use pv_guest::xen_abi::xen::VIRQ_TIMER;
use pv_guest::xen_abi::{DomId, Errno};
use pv_guest::{events, println, sched, shared, time};

use crate::report::{err, rc, Rc, Report};

static TICKS: AtomicU64 = AtomicU64::new(0);
static LAST_TICK_NS: AtomicU64 = AtomicU64::new(0);

const MS: u64 = 1_000_000;
/// Xen may fire a timer up to its slop early; allow for that and for clock-read skew.
const EARLY_TOLERANCE: u64 = MS / 5;
/// How long to wait for a timer before declaring it lost.
const WAIT_LIMIT: u64 = 2_000 * MS;

fn on_timer(_port: u32) {
    TICKS.fetch_add(1, Ordering::SeqCst);
    LAST_TICK_NS.store(time::now_ns(), Ordering::SeqCst);
}

/// Spin (yielding) with events enabled until TICKS reaches `target` or the limit passes.
fn wait_ticks(target: u64) -> bool {
    let end = time::now_ns() + WAIT_LIMIT;
    events::enable();
    while TICKS.load(Ordering::SeqCst) < target {
        if time::now_ns() > end {
            return false;
        }
        sched::yield_now();
    }
    true
}

fn spin_for(ns: u64) {
    let end = time::now_ns() + ns;
    while time::now_ns() < end {
        sched::yield_now();
    }
}

pub fn run(r: &mut Report) {
    super::setup(r);
    monotonic(r);
    let Some(port) = super::ok(
        r,
        "bind VIRQ_TIMER",
        events::bind_virq(VIRQ_TIMER, 0, on_timer),
    ) else {
        return;
    };
    println!("timers: VIRQ_TIMER on port {port}");
    // Xen may start vCPUs with a default periodic timer: start from a clean state.
    r.eq("stop_periodic_timer", rc(time::stop_periodic()), Rc(0));
    events::enable();
    spin_for(MS);

    // set_timer_op, 1 ms.
    let n = TICKS.load(Ordering::SeqCst);
    let deadline = time::now_ns() + MS;
    r.eq(
        "set_timer_op(now + 1ms)",
        rc(time::set_timer(deadline)),
        Rc(0),
    );
    if r.check(
        wait_ticks(n + 1),
        "set_timer_op fired VIRQ_TIMER",
        "no event",
        "VIRQ_TIMER",
    ) {
        let at = LAST_TICK_NS.load(Ordering::SeqCst);
        r.check(
            at + EARLY_TOLERANCE >= deadline,
            "set_timer_op fired at/after its deadline",
            at,
            deadline,
        );
    }

    // VCPUOP_set_singleshot_timer, 2 ms.
    let n = TICKS.load(Ordering::SeqCst);
    let deadline = time::now_ns() + 2 * MS;
    r.eq(
        "VCPUOP_set_singleshot_timer(now + 2ms)",
        rc(time::set_singleshot(deadline)),
        Rc(0),
    );
    if r.check(
        wait_ticks(n + 1),
        "single-shot timer fired VIRQ_TIMER",
        "no event",
        "VIRQ_TIMER",
    ) {
        let at = LAST_TICK_NS.load(Ordering::SeqCst);
        r.check(
            at + EARLY_TOLERANCE >= deadline,
            "single-shot fired at/after its deadline",
            at,
            deadline,
        );
    }

    // A deadline in the past fires at once (Xen injects the event immediately).
    let n = TICKS.load(Ordering::SeqCst);
    let past = time::now_ns().saturating_sub(MS).max(1);
    r.eq(
        "VCPUOP_set_singleshot_timer(past)",
        rc(time::set_singleshot(past)),
        Rc(0),
    );
    r.check(
        wait_ticks(n + 1),
        "past single-shot fired",
        "no event",
        "VIRQ_TIMER",
    );

    periodic(r);
    block(r);
    poll(r);
    wallclock(r);
    let _ = events::close(port);
}

fn monotonic(r: &mut Report) {
    let t0 = time::now_ns();
    r.check(t0 > 0, "system time is running", t0, "> 0");
    let mut prev = t0;
    let mut back = 0u32;
    for _ in 0..1000 {
        let t = time::now_ns();
        if t < prev {
            back += 1;
        }
        prev = t;
    }
    r.eq("system time never goes backwards (1000 reads)", back, 0);
    r.check(prev >= t0, "system time advances", prev, t0);
}

fn periodic(r: &mut Report) {
    r.eq(
        "VCPUOP_set_periodic_timer(100us) = -EINVAL",
        rc(time::set_periodic(100_000)),
        err(Errno::EINVAL),
    );
    let n = TICKS.load(Ordering::SeqCst);
    let t0 = time::now_ns();
    r.eq(
        "VCPUOP_set_periodic_timer(10ms)",
        rc(time::set_periodic(10 * MS)),
        Rc(0),
    );
    if r.check(
        wait_ticks(n + 3),
        "periodic timer ticked 3 times",
        TICKS.load(Ordering::SeqCst) - n,
        3,
    ) {
        let at = LAST_TICK_NS.load(Ordering::SeqCst);
        r.check(
            at + EARLY_TOLERANCE >= t0 + 30 * MS,
            "3 periodic ticks took ≥ 30ms",
            at - t0,
            30 * MS,
        );
    }
    r.eq(
        "VCPUOP_stop_periodic_timer",
        rc(time::stop_periodic()),
        Rc(0),
    );
    let n = TICKS.load(Ordering::SeqCst);
    spin_for(30 * MS);
    let extra = TICKS.load(Ordering::SeqCst) - n;
    r.check(
        extra <= 1,
        "no periodic ticks after stop",
        extra,
        "≤ 1 (one in flight)",
    );
}

fn block(r: &mut Report) {
    let n = TICKS.load(Ordering::SeqCst);
    events::disable();
    let deadline = time::now_ns() + 5 * MS;
    r.eq(
        "set_timer_op(now + 5ms) before block",
        rc(time::set_timer(deadline)),
        Rc(0),
    );
    // Bounded: a lost timer must not hang the test forever (the harness has a timeout, but
    // a clear FAIL is better).
    for _ in 0..100 {
        sched::block();
        if TICKS.load(Ordering::SeqCst) > n {
            break;
        }
        events::disable();
    }
    let now = time::now_ns();
    r.check(
        TICKS.load(Ordering::SeqCst) > n,
        "SCHEDOP_block woke for the timer",
        "no tick",
        "VIRQ_TIMER",
    );
    r.check(
        now + EARLY_TOLERANCE >= deadline,
        "block returned at/after the deadline",
        now,
        deadline,
    );
    r.check(
        !shared::upcall_mask(),
        "SCHEDOP_block left events enabled",
        "masked",
        "unmasked",
    );
}

fn poll(r: &mut Report) {
    let Some(p) = super::ok(
        r,
        "alloc_unbound for poll",
        events::alloc_unbound(DomId::SELF),
    ) else {
        return;
    };
    events::disable();
    let t0 = time::now_ns();
    r.eq(
        "SCHEDOP_poll(idle port, timeout 5ms)",
        rc(sched::poll(&[p], t0 + 5 * MS)),
        Rc(0),
    );
    let t1 = time::now_ns();
    r.check(
        t1 + EARLY_TOLERANCE >= t0 + 5 * MS,
        "poll returned after its timeout",
        t1 - t0,
        5 * MS,
    );

    if let Some(q) = super::ok(
        r,
        "bind_interdomain for poll",
        events::bind_interdomain(DomId::SELF, p),
    ) {
        shared::test_and_clear_pending(p);
        r.eq("send to the polled port", rc(events::send(q)), Rc(0));
        let t0 = time::now_ns();
        r.eq(
            "SCHEDOP_poll(pending port)",
            rc(sched::poll(&[p], t0 + 1_000 * MS)),
            Rc(0),
        );
        let t1 = time::now_ns();
        r.check(
            t1 - t0 < 500 * MS,
            "poll on a pending port returns at once",
            t1 - t0,
            "< 500ms",
        );
        shared::test_and_clear_pending(p);
        shared::test_and_clear_pending(q);
        let _ = events::close(q);
    }
    let _ = events::close(p);
    events::enable();
    let _ = hc::set_timer_op(0);
}

fn wallclock(r: &mut Report) {
    let (sec, nsec) = time::wallclock_now();
    println!("timers: wall clock {sec}.{nsec:09}");
    r.check(
        sec > 1_000_000_000,
        "wall clock is set (after 2001)",
        sec,
        "> 1000000000",
    );
    r.check(
        nsec < 1_000_000_000,
        "wall clock nanoseconds < 1e9",
        nsec,
        "< 1e9",
    );
}
