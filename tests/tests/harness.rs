//! The harness tested on itself: tiny multiboot probes instead of rxen, so that a failure
//! here is the harness's (or QEMU's), never the hypervisor's.

use std::path::PathBuf;
use std::time::Duration;

use rxen_tests::{probe, Config, Error, ExitKind, Machine};

const WAIT: Duration = Duration::from_secs(30);

/// A machine booting `image` as the "hypervisor" (the dom0 module is ignored by probes).
fn boot_probe(name: &str, image: &[u8]) -> Machine {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("probes");
    let path = probe::write(&dir, name, image).expect("write probe");
    let mut cfg = Config::new(&path, &path);
    cfg.timeout = Duration::from_secs(60);
    Machine::boot(cfg).expect("QEMU starts")
}

#[test]
fn serial_output_input_and_power_off() {
    let mut m = boot_probe("echo.bin", &probe::echo_probe());
    let seen = m.expect("rxen probe ready", WAIT).expect("probe prints");
    assert!(seen.ends_with("rxen probe ready"), "{seen}");
    m.send_line("hello, rxen").expect("send");
    let line = m.expect_line("hello", WAIT).expect("echo");
    assert_eq!(line, "hello, rxen");
    m.send(b"q").expect("send");
    assert_eq!(m.wait_exit(WAIT).expect("exit"), ExitKind::PoweredOff);
}

#[test]
fn input_sent_before_the_guest_reads_is_kept() {
    // As with `printf 'info\nshutdown\n' | cargo xtask run`: everything is typed at once.
    let mut m = boot_probe("echo-early.bin", &probe::echo_probe());
    m.send(b"early bird\nq").expect("send");
    assert_eq!(m.wait_exit(WAIT).expect("exit"), ExitKind::PoweredOff);
    assert!(m.output().contains("early bird\n"), "{}", m.output());
}

#[test]
fn triple_fault_is_not_a_reset() {
    let mut m = boot_probe("triple-fault.bin", &probe::triple_fault_probe());
    assert_eq!(m.wait_exit(WAIT).expect("exit"), ExitKind::TripleFault);
}

#[test]
fn hung_guest_times_out_with_its_output() {
    let mut m = boot_probe("hang.bin", &probe::hang_probe());
    m.expect("rxen probe", WAIT).expect("probe prints");
    m.expect_running_for(Duration::from_millis(300))
        .expect("a halted machine keeps running");
    match m.expect("never printed", Duration::from_millis(300)) {
        Err(Error::Timeout { tail, .. }) => assert!(tail.contains("rxen probe"), "{tail}"),
        other => panic!("expected a timeout, got {other:?}"),
    }
    match m.wait_exit(Duration::from_millis(300)) {
        Err(Error::Timeout { .. }) => {}
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert!(m.is_running());
    m.kill();
}

#[test]
fn exit_while_waiting_is_reported() {
    let mut m = boot_probe("poweroff.bin", &probe::power_off_probe());
    match m.expect("dom0# ", WAIT) {
        Err(Error::Exited { exit, .. }) => assert_eq!(exit, ExitKind::PoweredOff),
        other => panic!("expected QEMU to have exited, got {other:?}"),
    }
}
