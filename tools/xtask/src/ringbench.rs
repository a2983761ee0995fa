//! `cargo xtask bench`, second part: the two-domain benchmarks of issue 5. Boots rxen's
//! dom0 with its ramdisk under the same TCG `-icount shift=0` set-up as the test-guest runs,
//! starts the `ringtest` domU (`/etc/xen/ringtest.cfg`) and runs dom0's `ringtest DOMID`
//! backend, which prints `BENCH ring_stream_2dom`, `BENCH ring_pingpong_2dom` and
//! `BENCH evtchn_rtt_2dom` lines; those are added to the table's series.

use std::time::Duration;

use rxen_tests::{Accel, Config, Machine, DOM0_PROMPT};

use crate::bench::{collect, Series};
use crate::{ramdisk, Failure, Images};

/// Booting dom0 to its prompt.
const BOOT: Duration = Duration::from_secs(300);
/// One shell command.
const COMMAND: Duration = Duration::from_secs(120);
/// `ringtest DOMID` (100,000 streamed messages, 1,000 ping-pongs, 1,000 round trips).
const RINGTEST: Duration = Duration::from_secs(900);

/// One boot of dom0 that runs the two-domain benchmarks; returns how many `BENCH` lines
/// it added to `series`.
pub fn run(images: &Images, verbose: bool, series: &mut Vec<Series>) -> Result<usize, Failure> {
    let fail =
        |what: &str, e: rxen_tests::Error| Failure::new(format!("ringtest bench: {what}: {e}"));
    let mut cfg = Config::new(&images.xen, &images.dom0);
    cfg.ramdisk = Some(ramdisk::path_for(&images.dom0));
    cfg.accel = Accel::Tcg;
    cfg.icount = true;
    cfg.echo = verbose;
    let mut m = Machine::boot(cfg).map_err(|e| fail("boot", e))?;
    m.expect(DOM0_PROMPT, BOOT).map_err(|e| fail("boot", e))?;
    let command = |m: &mut Machine, line: &str, timeout| {
        m.send_line(line).map_err(|e| fail(line, e))?;
        m.expect(DOM0_PROMPT, timeout).map_err(|e| fail(line, e))
    };
    command(&mut m, "xl create /etc/xen/ringtest.cfg", COMMAND)?;
    let out = command(&mut m, "xl domid ringtest", COMMAND)?;
    let domid: u16 = out
        .lines()
        .find_map(|l| l.trim().parse().ok())
        .ok_or_else(|| {
            Failure::new(format!(
                "ringtest bench: `xl domid ringtest` printed:\n{out}"
            ))
        })?;
    let out = command(&mut m, &format!("ringtest {domid}"), RINGTEST)?;
    if let Some(l) = out.lines().find(|l| l.contains("FAILED")) {
        return Err(Failure::new(format!("ringtest bench: {l}")));
    }
    let n = collect(&out, series);
    m.kill();
    Ok(n)
}
