//! dom0's shell on the serial console: boot to the prompt, run every command, and end the
//! machine both ways dom0 can (power off, reboot).

use std::collections::HashMap;
use std::time::Duration;

use rxen_tests::{
    Config, ExitKind, Machine, Result, DOM0_PROMPT, XEN_POWEROFF, XEN_PREFIX, XEN_REBOOT,
};

/// Booting to the prompt under TCG; generous because tests share two cores.
const BOOT: Duration = Duration::from_secs(120);
/// One shell command.
const COMMAND: Duration = Duration::from_secs(30);

/// Boots rxen's dom0 and waits for its first prompt; prints how long that took.
fn boot_to_prompt() -> Result<Machine> {
    let mut m = Machine::boot(Config::dom0())?;
    let boot_log = m.expect(DOM0_PROMPT, BOOT)?;
    println!(
        "boot time: {:.2} s from QEMU start to dom0's prompt (TCG)",
        m.elapsed().as_secs_f64()
    );
    assert!(
        boot_log.lines().any(|l| l.starts_with(XEN_PREFIX)),
        "the hypervisor printed nothing before dom0's prompt:\n{boot_log}"
    );
    Ok(m)
}

/// Runs one shell command and returns what it printed (without the echoed command line
/// and the next prompt).
fn run(m: &mut Machine, command: &str) -> Result<String> {
    m.send_line(command)?;
    let out = m.expect(DOM0_PROMPT, COMMAND)?;
    let out = out.strip_suffix(DOM0_PROMPT).unwrap_or(&out);
    // The shell echoes the typed line first.
    let body = match out.find(command) {
        Some(i) => &out[i + command.len()..],
        None => out,
    };
    Ok(body.trim_start_matches('\n').to_owned())
}

/// `key : value` lines (any padding around the colon), as `xl info` prints them.
fn key_values(text: &str) -> HashMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect()
}

fn number(info: &HashMap<String, String>, key: &str) -> f64 {
    let v = info
        .get(key)
        .unwrap_or_else(|| panic!("`info` printed no `{key}` line: {info:?}"));
    let digits = v.split_whitespace().next().unwrap_or("");
    digits
        .parse::<f64>()
        .unwrap_or_else(|_| panic!("`{key}` is not a number: {v:?}"))
}

#[test]
fn shell_commands_then_shutdown() -> Result<()> {
    let mut m = boot_to_prompt()?;

    let help = run(&mut m, "help")?;
    for command in ["help", "info", "dmesg", "shutdown", "reboot"] {
        assert!(
            help.contains(command),
            "`help` does not list `{command}`:\n{help}"
        );
    }

    let info = run(&mut m, "info")?;
    let kv = key_values(&info);
    assert_eq!(kv.get("xen_major").map(String::as_str), Some("4"), "{info}");
    assert_eq!(
        kv.get("xen_minor").map(String::as_str),
        Some("19"),
        "{info}"
    );
    assert_eq!(
        kv.get("xen_extra").map(String::as_str),
        Some("-rxen"),
        "{info}"
    );
    let total = number(&kv, "total_memory");
    let free = number(&kv, "free_memory");
    let uptime = number(&kv, "uptime");
    // The machine has 512 MiB; the hypervisor and dom0 hold some of it.
    assert!(
        total > 0.0 && total <= 512.0,
        "total_memory {total} MiB:\n{info}"
    );
    assert!(
        free >= 0.0 && free <= total,
        "free_memory {free} of {total} MiB:\n{info}"
    );
    assert!(uptime >= 0.0, "uptime {uptime}:\n{info}");

    let dmesg = run(&mut m, "dmesg")?;
    assert!(
        dmesg.contains("Xen version 4.19-rxen"),
        "`dmesg` lacks the hypervisor's banner:\n{dmesg}"
    );

    // A second `info` shows time passing (uptime never goes back).
    let later = number(&key_values(&run(&mut m, "info")?), "uptime");
    assert!(later >= uptime, "uptime went from {uptime} to {later}");

    // An unknown command is refused and the shell carries on.
    run(&mut m, "no-such-command")?;
    run(&mut m, "")?;

    m.send_line("shutdown")?;
    m.expect(XEN_POWEROFF, COMMAND)?;
    assert_eq!(m.wait_exit(COMMAND)?, ExitKind::PoweredOff);
    Ok(())
}

#[test]
fn reboot_resets_the_machine() -> Result<()> {
    let mut m = boot_to_prompt()?;
    m.send_line("reboot")?;
    m.expect(XEN_REBOOT, COMMAND)?;
    assert_eq!(m.wait_exit(COMMAND)?, ExitKind::Reset);
    Ok(())
}

#[test]
fn scripted_input_typed_before_the_prompt() -> Result<()> {
    // What `printf 'info\nshutdown\n' | cargo xtask run` does: all input arrives at once,
    // long before dom0 reads it; none of it may be lost.
    let mut m = Machine::boot(Config::dom0())?;
    m.send(b"info\nshutdown\n")?;
    m.expect("xen_major", BOOT)?;
    m.expect(XEN_POWEROFF, COMMAND)?;
    assert_eq!(m.wait_exit(COMMAND)?, ExitKind::PoweredOff);
    Ok(())
}
