//! dom0 and a domU exchange 100,000 messages over a shared ring (issue 5): the domU
//! (`/etc/xen/ringtest.cfg`, `frontends/domu/src/ringtest.rs`) grants dom0 a ring page and
//! offers an event channel through xenstore; dom0's `ringtest DOMID`
//! (`dom0/src/ringtest.rs`) maps the grant, binds the channel and answers every request.
//! Both ends print an order-sensitive digest of the checksums, which must agree; the
//! notifications must be far fewer than the messages (batching through the ring's event
//! indices); and the two-domain benchmarks (ping-pong, event round trip) must report.

use std::time::{Duration, Instant};

use rxen_tests::shell::{run_for as run, CTRL_RBRACKET};
use rxen_tests::{Config, ExitKind, Machine, Result, DOM0_PROMPT, XEN_POWEROFF};

/// Booting to the prompt under TCG; generous because tests share two cores.
const BOOT: Duration = Duration::from_secs(120);
/// One ordinary shell command.
const COMMAND: Duration = Duration::from_secs(60);
/// `ringtest DOMID`: 100,000 streamed messages, 1,000 ping-pongs, 1,000 round trips.
const RINGTEST: Duration = Duration::from_secs(600);
/// Messages the domU streams (ringtest.cfg's default).
const MESSAGES: u64 = 100_000;

/// The word after `key` on the first line containing `key`.
fn after<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    let l = text.lines().find(|l| l.contains(key))?;
    l.split(key).nth(1)?.split_whitespace().next()
}

fn number(text: &str, key: &str) -> u64 {
    after(text, key)
        .and_then(|w| w.trim_matches(|c: char| !c.is_ascii_digit()).parse().ok())
        .unwrap_or_else(|| panic!("no number after {key:?} in:\n{text}"))
}

#[test]
fn dom0_and_domu_exchange_100000_messages_over_a_granted_ring() -> Result<()> {
    let mut m = Machine::boot(Config::dom0())?;
    m.expect(DOM0_PROMPT, BOOT)?;

    let out = run(&mut m, "xl create /etc/xen/ringtest.cfg", COMMAND)?;
    assert!(
        out.lines()
            .all(|l| l.starts_with("Parsing config") || l.starts_with("(XEN)")),
        "xl create printed:\n{out}"
    );
    let out = run(&mut m, "xl domid ringtest", COMMAND)?;
    let domid: u16 = out
        .lines()
        .find_map(|l| l.trim().parse().ok())
        .unwrap_or_else(|| panic!("`xl domid ringtest` printed:\n{out}"));

    let t = Instant::now();
    let backend = run(&mut m, &format!("ringtest {domid}"), RINGTEST)?;
    let wall = t.elapsed();
    println!("{backend}");
    println!(
        "ringtest: {:.1} s wall for `ringtest {domid}` under TCG",
        wall.as_secs_f64()
    );
    assert!(!backend.contains("FAILED"), "{backend}");
    assert_eq!(
        number(&backend, "backend served "),
        MESSAGES,
        "backend:\n{backend}"
    );
    let back_notifies = number(&backend, "msg/s), ");
    let back_sum = after(&backend, "backend checksum ")
        .unwrap_or_else(|| panic!("no backend checksum:\n{backend}"))
        .trim_end_matches(',')
        .to_owned();
    assert!(backend.contains("BENCH ring_pingpong_2dom "), "{backend}");
    assert!(backend.contains("BENCH evtchn_rtt_2dom "), "{backend}");

    // The domU's side, from its buffered console.
    m.send_line("xl console ringtest")?;
    let front = m.expect("ringtest: OK", COMMAND)?;
    m.send(&[CTRL_RBRACKET])?;
    m.expect(DOM0_PROMPT, COMMAND)?;
    assert!(!front.contains("ringtest: FAILED"), "{front}");
    let summary = front
        .lines()
        .find(|l| l.contains(" messages, checksum "))
        .unwrap_or_else(|| panic!("no frontend summary:\n{front}"));
    assert_eq!(number(summary, "ringtest: "), MESSAGES, "{front}");
    let front_sum = after(&front, "messages, checksum ")
        .unwrap_or_else(|| panic!("no frontend checksum:\n{front}"))
        .trim_end_matches(',')
        .to_owned();
    assert_eq!(front_sum, back_sum, "digests differ:\n{front}\n{backend}");
    let front_notifies = number(&front, &format!("checksum {front_sum}, "));
    for l in front.lines().filter(|l| l.contains("ringtest:")) {
        println!("domU: {}", l.trim());
    }
    // Batching: far fewer events than messages in either direction.
    assert!(
        front_notifies * 10 < MESSAGES && back_notifies * 10 < MESSAGES,
        "notifications: frontend {front_notifies}, backend {back_notifies}"
    );

    run(&mut m, "xl destroy ringtest", COMMAND)?;
    m.send_line("shutdown")?;
    m.expect(XEN_POWEROFF, COMMAND)?;
    assert_eq!(m.wait_exit(COMMAND)?, ExitKind::PoweredOff);
    Ok(())
}
