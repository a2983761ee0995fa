//! Check reporting in the format the harness parses.

use core::fmt;

use pv_guest::hypercall::{self, Error};
use pv_guest::xen_abi::Errno;
use pv_guest::{println, sched};

/// A hypercall return value shown with its errno name.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Rc(pub i64);

impl fmt::Debug for Rc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match Errno::from_ret(self.0) {
            Some(e) if self.0 < 0 => write!(f, "{} (-{})", self.0, e.name()),
            _ => write!(f, "{}", self.0),
        }
    }
}

/// Return value of a typed wrapper.
pub fn rc<T>(r: hypercall::Result<T>) -> Rc
where
    T: Into<RcValue>,
{
    match r {
        Ok(v) => Rc(v.into().0),
        Err(e) => Rc(e.raw()),
    }
}

/// Success values convertible to an `Rc`.
pub struct RcValue(i64);

impl From<u64> for RcValue {
    fn from(v: u64) -> Self {
        RcValue(v as i64)
    }
}

impl From<u32> for RcValue {
    fn from(v: u32) -> Self {
        RcValue(i64::from(v))
    }
}

impl From<()> for RcValue {
    fn from(_: ()) -> Self {
        RcValue(0)
    }
}

/// `Rc` of success with any payload (0).
pub fn rc0<T>(r: hypercall::Result<T>) -> Rc {
    match r {
        Ok(_) => Rc(0),
        Err(e) => Rc(e.raw()),
    }
}

/// The `Rc` of an errno.
pub const fn err(e: Errno) -> Rc {
    Rc(e.to_ret())
}

/// `Rc` of a hypercall error.
pub fn rc_err(e: Error) -> Rc {
    Rc(e.raw())
}

/// Counts checks and failures.
pub struct Report {
    checks: u32,
    failures: u32,
}

impl Report {
    pub fn new() -> Report {
        Report {
            checks: 0,
            failures: 0,
        }
    }

    /// Record a passing check.
    pub fn pass(&mut self, what: &str) {
        self.checks += 1;
        println!("ok {what}");
    }

    /// Record a failing check.
    pub fn fail(&mut self, what: &str, got: impl fmt::Debug, expected: impl fmt::Debug) {
        self.checks += 1;
        self.failures += 1;
        println!("FAIL {what}: got {got:?}, expected {expected:?}");
    }

    /// `cond` must hold.
    pub fn check(
        &mut self,
        cond: bool,
        what: &str,
        got: impl fmt::Debug,
        expected: impl fmt::Debug,
    ) -> bool {
        if cond {
            self.pass(what);
        } else {
            self.fail(what, got, expected);
        }
        cond
    }

    /// `got == expected`.
    pub fn eq<T: PartialEq + fmt::Debug>(&mut self, what: &str, got: T, expected: T) -> bool {
        let ok = got == expected;
        self.check(ok, what, got, expected)
    }

    /// Print the verdict and power off.
    pub fn finish(self) -> ! {
        println!("{} checks, {} failures", self.checks, self.failures);
        if self.failures == 0 {
            println!("Test result: SUCCESS");
        } else {
            println!("Test result: FAILURE");
        }
        sched::poweroff()
    }
}
