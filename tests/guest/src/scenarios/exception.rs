//! `exception`: with our trap table registered, ud2, int3, divide by zero, a privileged
//! instruction (hlt → #GP(0)), a non-canonical load (#GP(0)) and a write to an unmapped
//! address (#PF, error code 2, cr2 in vcpu_info) must each reach the handler with the right
//! vector, error code and RIP, and execution must resume after the instruction.

use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use pv_guest::arch::cpu::{self, FaultSite};
use pv_guest::arch::TrapFrame;
use pv_guest::{shared, traps};

use crate::report::Report;

static SKIP: AtomicU64 = AtomicU64::new(0);
static SEEN: AtomicBool = AtomicBool::new(false);
static VECTOR: AtomicU64 = AtomicU64::new(0);
static ERROR: AtomicU64 = AtomicU64::new(0);
static RIP: AtomicU64 = AtomicU64::new(0);
static CS: AtomicU64 = AtomicU64::new(0);
static CR2: AtomicU64 = AtomicU64::new(0);
static MASKED: AtomicBool = AtomicBool::new(false);

/// Record the frame and resume after the faulting instruction.
fn hook(f: &mut TrapFrame) -> bool {
    SEEN.store(true, Ordering::SeqCst);
    VECTOR.store(f.vector, Ordering::SeqCst);
    ERROR.store(f.error_code, Ordering::SeqCst);
    RIP.store(f.rip, Ordering::SeqCst);
    CS.store(f.cs, Ordering::SeqCst);
    CR2.store(shared::cr2(), Ordering::SeqCst);
    MASKED.store(shared::upcall_mask(), Ordering::SeqCst);
    f.rip = f.rip.wrapping_add(SKIP.load(Ordering::SeqCst));
    true
}

const PF_ADDR: u64 = 0x0000_5a5a_5a5a_5000;

struct Expect {
    name: &'static str,
    vector: u64,
    error: u64,
    /// The frame's RIP is after the instruction (a trap such as int3).
    trap: bool,
}

fn one(r: &mut Report, e: Expect, probe: impl FnOnce() -> Option<FaultSite>, len: u64) {
    SEEN.store(false, Ordering::SeqCst);
    SKIP.store(if e.trap { 0 } else { len }, Ordering::SeqCst);
    let Some(site) = probe() else {
        r.fail(e.name, "probe refused", "executed");
        return;
    };
    // We are here: execution resumed after the instruction.
    if !r.check(
        SEEN.load(Ordering::SeqCst),
        e.name,
        "no exception",
        "handler called",
    ) {
        return;
    }
    let expect_rip = if e.trap {
        site.rip + site.len
    } else {
        site.rip
    };
    let mut ok = true;
    ok &= VECTOR.load(Ordering::SeqCst) == e.vector;
    ok &= ERROR.load(Ordering::SeqCst) == e.error;
    ok &= RIP.load(Ordering::SeqCst) == expect_rip;
    r.check(
        ok,
        e.name,
        (
            VECTOR.load(Ordering::SeqCst),
            ERROR.load(Ordering::SeqCst),
            RIP.load(Ordering::SeqCst),
        ),
        (e.vector, e.error, expect_rip),
    );
    let cs = CS.load(Ordering::SeqCst);
    r.check(
        cs & 3 == 0,
        "frame CS has RPL 0 (interrupted kernel mode)",
        cs,
        "RPL 0",
    );
    r.check(
        MASKED.load(Ordering::SeqCst),
        "handler runs with events masked (trap flag 4)",
        false,
        true,
    );
}

pub fn run(r: &mut Report) {
    super::setup(r);
    // Events on: the handlers (trap flag 4) must run masked and iret must unmask again.
    pv_guest::events::enable();
    for v in [0u8, 3, 6, 13, 14] {
        traps::set_hook(v, Some(hook));
    }
    one(
        r,
        Expect {
            name: "ud2 → #UD",
            vector: 6,
            error: 0,
            trap: false,
        },
        || Some(cpu::probe_ud2()),
        2,
    );
    one(
        r,
        Expect {
            name: "int3 → #BP",
            vector: 3,
            error: 0,
            trap: true,
        },
        || Some(cpu::probe_int3()),
        1,
    );
    one(
        r,
        Expect {
            name: "div by zero → #DE",
            vector: 0,
            error: 0,
            trap: false,
        },
        || Some(cpu::probe_divide_error()),
        3,
    );
    one(
        r,
        Expect {
            name: "hlt → #GP(0)",
            vector: 13,
            error: 0,
            trap: false,
        },
        || Some(cpu::probe_hlt()),
        1,
    );
    one(
        r,
        Expect {
            name: "non-canonical load → #GP(0)",
            vector: 13,
            error: 0,
            trap: false,
        },
        || Some(cpu::probe_non_canonical_load()),
        3,
    );
    // Write (bit 1), not present (bit 0 clear), kernel mode (bit 2 cleared by Xen).
    one(
        r,
        Expect {
            name: "write to unmapped page → #PF(2)",
            vector: 14,
            error: 2,
            trap: false,
        },
        || cpu::probe_page_fault_write(PF_ADDR),
        3,
    );
    r.eq(
        "cr2 of the #PF (vcpu_info.arch.cr2)",
        CR2.load(Ordering::SeqCst),
        PF_ADDR,
    );
    r.check(
        !shared::upcall_mask(),
        "iret restored the (unmasked) event state",
        true,
        false,
    );
}
