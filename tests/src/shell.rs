//! Driving dom0's shell in a [`Machine`]: commands, `xl` verbs and domU consoles, as the
//! system tests of the toolstack and the split drivers use them.

use std::collections::HashMap;
use std::time::Duration;

use crate::{ExitKind, Machine, Result, DOM0_PROMPT, XEN_POWEROFF};

/// One shell command (an `xl create` builds a 16 MiB domain).
pub const COMMAND: Duration = Duration::from_secs(60);
/// A domU's first console lines after `xl create`.
pub const DOMU_UP: Duration = Duration::from_secs(60);
/// Ctrl-]: `xl console`'s escape back to the shell.
pub const CTRL_RBRACKET: u8 = 0x1d;

/// Runs one shell command and returns what it printed (without the echoed command and the
/// next prompt), waiting at most `timeout`.
pub fn run_for(m: &mut Machine, command: &str, timeout: Duration) -> Result<String> {
    m.send_line(command)?;
    let out = m.expect(DOM0_PROMPT, timeout)?;
    let out = out.strip_suffix(DOM0_PROMPT).unwrap_or(&out);
    let body = match out.find(command) {
        Some(i) => &out[i + command.len()..],
        None => out,
    };
    Ok(body.trim_start_matches('\n').to_owned())
}

/// [`run_for`] with the [`COMMAND`] timeout.
pub fn run(m: &mut Machine, command: &str) -> Result<String> {
    run_for(m, command, COMMAND)
}

/// Powers the machine off from dom0's shell.
pub fn power_off(mut m: Machine) -> Result<()> {
    m.send_line("shutdown")?;
    m.expect(XEN_POWEROFF, COMMAND)?;
    assert_eq!(m.wait_exit(COMMAND)?, ExitKind::PoweredOff);
    Ok(())
}

/// `xl create FILE [settings]`; fails the test unless xl said nothing but "Parsing ...".
pub fn create(m: &mut Machine, cfg: &str, settings: &str) -> Result<()> {
    let cmd = format!("xl create {cfg} {settings}");
    let out = run(m, cmd.trim_end())?;
    assert!(
        out.lines()
            .all(|l| l.starts_with("Parsing config") || l.starts_with("(XEN)")),
        "`{cmd}` printed:\n{out}"
    );
    Ok(())
}

/// `xl domid NAME`.
pub fn domid(m: &mut Machine, name: &str) -> Result<u16> {
    let out = run(m, &format!("xl domid {name}"))?;
    let id = out
        .lines()
        .find_map(|l| l.trim().parse().ok())
        .unwrap_or_else(|| panic!("`xl domid {name}` printed:\n{out}"));
    Ok(id)
}

/// `xl info`'s free_memory (MiB).
pub fn free_memory(m: &mut Machine) -> Result<u64> {
    let out = run(m, "xl info")?;
    let kv: HashMap<&str, &str> = out
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim(), v.trim()))
        .collect();
    let free = kv
        .get("free_memory")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no free_memory in `xl info`:\n{out}"));
    Ok(free)
}

/// Attaches to `name`'s console, waits (up to `timeout`) for `pattern` in it, detaches
/// with Ctrl-]; returns what the console showed up to the pattern.
pub fn console_expect_for(
    m: &mut Machine,
    name: &str,
    pattern: &str,
    timeout: Duration,
) -> Result<String> {
    m.send_line(&format!("xl console {name}"))?;
    let seen = m.expect(pattern, timeout)?;
    m.send(&[CTRL_RBRACKET])?;
    m.expect(DOM0_PROMPT, COMMAND)?;
    Ok(seen)
}

/// [`console_expect_for`] with the [`DOMU_UP`] timeout.
pub fn console_expect(m: &mut Machine, name: &str, pattern: &str) -> Result<String> {
    console_expect_for(m, name, pattern, DOMU_UP)
}
