//! The test scenarios, one per `scenario=` value.

pub mod bench;
pub mod cpu;
pub mod crash;
pub mod domctl;
pub mod events;
pub mod exception;
pub mod grant;
pub mod hypercalls;
pub mod mmu;
pub mod pirq;
pub mod timers;
pub mod userspace;

use pv_guest::hypercall::Result;
use pv_guest::{events as ev, traps};

use crate::report::{rc0, Report};

/// Install the trap table and the event callbacks (events stay masked).
pub fn setup(r: &mut Report) {
    let t = traps::install();
    r.eq("set_trap_table(vectors 0-19)", rc0(t), crate::report::Rc(0));
    let c = ev::init();
    r.eq(
        "callback_op register event+failsafe",
        rc0(c),
        crate::report::Rc(0),
    );
}

/// `Ok(v)` → v, else record a failure and return None.
pub fn ok<T>(r: &mut Report, what: &str, v: Result<T>) -> Option<T> {
    match v {
        Ok(v) => {
            r.pass(what);
            Some(v)
        }
        Err(e) => {
            r.fail(what, crate::report::rc_err(e), "success");
            None
        }
    }
}
