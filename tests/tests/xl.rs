//! dom0's `xl` toolstack end to end: domUs built from the example configs in dom0's
//! ramdisk (`dom0/rootfs/etc/xen/`, the Rust domU kernel of `frontends/domu`), their
//! consoles, `xl list` states, shutdown and destroy, memory returned after many
//! create/destroy cycles, `on_crash`, an interdomain event channel set up through
//! xenstore, and isolation between domUs.

use std::time::{Duration, Instant};

use rxen_tests::shell::{
    console_expect, create, domid, free_memory, power_off, run, COMMAND, CTRL_RBRACKET, DOMU_UP,
};
use rxen_tests::{Config, Machine, Result, DOM0_PROMPT};

/// Booting to the prompt under TCG; generous because tests share two cores.
const BOOT: Duration = Duration::from_secs(120);
/// Boots rxen's dom0 with its ramdisk and waits for the prompt.
fn boot() -> Result<Machine> {
    let mut m = Machine::boot(Config::dom0())?;
    m.expect(DOM0_PROMPT, BOOT)?;
    println!(
        "boot: {:.1} s from QEMU start to dom0's prompt (TCG)",
        m.elapsed().as_secs_f64()
    );
    Ok(m)
}

/// One row of `xl list`.
#[derive(Debug, Clone)]
struct Row {
    name: String,
    id: u16,
    mem: u64,
    vcpus: u32,
    state: String,
}

/// Parses `xl list`: the header (checked) and its rows.
fn parse_list(out: &str) -> Vec<Row> {
    let mut lines = out.lines().skip_while(|l| !l.starts_with("Name"));
    let header = lines.next().unwrap_or_else(|| panic!("no header:\n{out}"));
    let cols: Vec<&str> = header.split_whitespace().collect();
    assert_eq!(
        cols,
        ["Name", "ID", "Mem", "VCPUs", "State", "Time(s)"],
        "xl list header:\n{out}"
    );
    lines
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            assert_eq!(f.len(), 6, "xl list row {l:?}:\n{out}");
            let state = f[4].to_owned();
            assert_eq!(state.len(), 6, "state column {l:?}");
            assert!(
                state.chars().all(|c| "rbpscd-".contains(c)),
                "state column {l:?}"
            );
            f[5].parse::<f64>()
                .unwrap_or_else(|_| panic!("Time(s) column {l:?}"));
            Row {
                name: f[0].to_owned(),
                id: f[1].parse().unwrap_or_else(|_| panic!("ID column {l:?}")),
                mem: f[2].parse().unwrap_or_else(|_| panic!("Mem column {l:?}")),
                vcpus: f[3]
                    .parse()
                    .unwrap_or_else(|_| panic!("VCPUs column {l:?}")),
                state,
            }
        })
        .collect()
}

fn list(m: &mut Machine) -> Result<Vec<Row>> {
    Ok(parse_list(&run(m, "xl list")?))
}

fn row<'a>(rows: &'a [Row], name: &str) -> Option<&'a Row> {
    rows.iter().find(|r| r.name == name)
}

/// Waits (polling `xl list`) until `name` is gone.
fn wait_gone(m: &mut Machine, name: &str, timeout: Duration) -> Result<()> {
    let end = Instant::now() + timeout;
    loop {
        let rows = list(m)?;
        if row(&rows, name).is_none() {
            return Ok(());
        }
        assert!(Instant::now() < end, "{name} still listed: {rows:?}");
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Attaches to `name`'s console for a moment and returns what it showed.
fn console_snapshot(m: &mut Machine, name: &str) -> Result<String> {
    m.send_line(&format!("xl console {name}"))?;
    std::thread::sleep(Duration::from_secs(2));
    m.send(&[CTRL_RBRACKET])?;
    m.expect(DOM0_PROMPT, COMMAND)
}

/// The highest `heartbeat N` in `text` (0 if none).
fn last_heartbeat(text: &str) -> u64 {
    text.lines()
        .filter_map(|l| l.split("heartbeat ").nth(1))
        .filter_map(|n| n.trim().parse().ok())
        .max()
        .unwrap_or(0)
}

/// Checks that `name` is alive: after what its console shows now, a new heartbeat comes.
fn expect_next_heartbeat(m: &mut Machine, name: &str) -> Result<String> {
    let seen = console_snapshot(m, name)?;
    let next = last_heartbeat(&seen) + 1;
    console_expect(m, name, &format!("domU {name} heartbeat {next}"))?;
    Ok(seen)
}

#[test]
fn create_console_list_pause_shutdown_destroy() -> Result<()> {
    let mut m = boot()?;

    let rows = list(&mut m)?;
    let dom0 = row(&rows, "Domain-0").expect("Domain-0 listed");
    assert_eq!((dom0.id, dom0.vcpus), (0, 1), "{rows:?}");
    assert!(dom0.mem > 0, "{rows:?}");

    let t = Instant::now();
    create(&mut m, "/etc/xen/demo.cfg", "")?;
    // Its console: boot lines (buffered while nobody was attached) and heartbeats.
    let seen = console_expect(&mut m, "demo", "domU demo heartbeat 1")?;
    assert!(seen.contains("rxen domU"), "{seen}");
    assert!(seen.contains("(demo) booting"), "{seen}");
    println!(
        "demo: {:.1} s from `xl create` to its first heartbeat",
        t.elapsed().as_secs_f64()
    );

    let rows = list(&mut m)?;
    let demo = row(&rows, "demo").unwrap_or_else(|| panic!("demo not listed: {rows:?}"));
    assert!(demo.id > 0, "{rows:?}");
    assert_eq!((demo.mem, demo.vcpus), (16, 1), "{rows:?}");
    assert!(!demo.state.contains('p'), "{rows:?}");
    assert!(row(&rows, "Domain-0").is_some(), "{rows:?}");
    let id = domid(&mut m, "demo")?;
    assert_eq!(id, demo.id);

    run(&mut m, "xl pause demo")?;
    let rows = list(&mut m)?;
    let state = &row(&rows, "demo").expect("demo listed").state;
    assert_eq!(&state[2..3], "p", "paused state {rows:?}");
    // Paused: no heartbeat while we wait (the console replays what it buffered).
    let beats = last_heartbeat(&console_snapshot(&mut m, "demo")?);
    std::thread::sleep(Duration::from_secs(3));
    let still = last_heartbeat(&console_snapshot(&mut m, "demo")?);
    assert_eq!(beats, still, "heartbeats while paused");
    run(&mut m, "xl unpause demo")?;
    let rows = list(&mut m)?;
    let state = &row(&rows, "demo").expect("demo listed").state;
    assert!(!state.contains('p'), "unpaused state {rows:?}");
    // Running again: the next heartbeat arrives.
    console_expect(
        &mut m,
        "demo",
        &format!("domU demo heartbeat {}", beats + 1),
    )?;

    // Clean shutdown: the guest obeys control/shutdown (its poweroff is the shutdown
    // reason), xl applies on_poweroff = destroy.
    let out = run(&mut m, "xl shutdown demo")?;
    assert!(out.contains(&format!("Shutting down domain {id}")), "{out}");
    m.expect(
        "(demo) has shut down, reason poweroff; action destroy",
        COMMAND,
    )?;
    wait_gone(&mut m, "demo", COMMAND)?;

    // A new one, destroyed at once.
    create(&mut m, "/etc/xen/demo.cfg", "")?;
    let rows = list(&mut m)?;
    assert!(row(&rows, "demo").is_some(), "{rows:?}");
    run(&mut m, "xl destroy demo")?;
    let rows = list(&mut m)?;
    assert!(
        row(&rows, "demo").is_none(),
        "destroyed domain listed: {rows:?}"
    );
    assert_eq!(rows.len(), 1, "{rows:?}");

    power_off(m)
}

/// Create/destroy cycles of the memory-loop test.
const CYCLES: usize = 100;

#[test]
fn create_destroy_loop_returns_memory() -> Result<()> {
    let mut m = boot()?;
    let before = free_memory(&mut m)?;
    let t = Instant::now();
    let mut freed = Vec::new();
    for i in 0..CYCLES {
        let out = run(&mut m, "xl create /etc/xen/demo.cfg")?;
        assert!(!out.contains("xl:"), "cycle {i}: {out}");
        let out = run(&mut m, "xl destroy demo")?;
        assert!(!out.contains("xl:"), "cycle {i}: {out}");
        // The hypervisor's account of the destruction: every frame freed, none left
        // mapped by dom0 (console ring, xenstore ring, build mappings).
        let line = out
            .lines()
            .find(|l| l.contains(" destroyed: "))
            .unwrap_or_else(|| panic!("cycle {i}: no destruction logged:\n{out}"));
        assert!(
            line.ends_with(" 0 still mapped by other domains"),
            "cycle {i}: {line}"
        );
        freed.push(line.split(" destroyed: ").nth(1).unwrap_or("").to_owned());
    }
    assert!(
        freed.iter().all(|f| *f == freed[0]),
        "frames freed differ between cycles: {freed:?}"
    );
    println!(
        "{CYCLES} create/destroy cycles: {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let rows = list(&mut m)?;
    assert_eq!(rows.len(), 1, "{rows:?}");
    let after = free_memory(&mut m)?;
    println!("free_memory: {before} MiB before, {after} MiB after {CYCLES} cycles");
    assert_eq!(before, after, "free memory did not return");
    power_off(m)
}

#[test]
fn crashing_domu_is_destroyed_while_another_runs() -> Result<()> {
    let mut m = boot()?;
    create(&mut m, "/etc/xen/demo.cfg", "")?;
    console_expect(&mut m, "demo", "domU demo heartbeat 1")?;

    // on_crash = "destroy": xl hears of the crash through VIRQ_DOM_EXC and destroys it.
    // (Typed raw: the crash report may come at any point after the command.)
    m.send_line("xl create /etc/xen/crash.cfg")?;
    m.expect(
        "(crasher) has shut down, reason crash; action destroy",
        DOMU_UP,
    )?;
    wait_gone(&mut m, "crasher", COMMAND)?;

    // demo is unaffected: still listed, not shut down, and its heartbeat goes on.
    let rows = list(&mut m)?;
    let demo = row(&rows, "demo").unwrap_or_else(|| panic!("demo gone: {rows:?}"));
    assert!(
        !demo.state.contains('s') && !demo.state.contains('c'),
        "{rows:?}"
    );
    let seen = expect_next_heartbeat(&mut m, "demo")?;
    assert!(!seen.contains("crasher"), "{seen}");
    run(&mut m, "xl destroy demo")?;
    power_off(m)
}

#[test]
fn two_domus_exchange_events_over_a_channel_set_up_through_xenstore() -> Result<()> {
    let mut m = boot()?;
    create(&mut m, "/etc/xen/evtchn-server.cfg", "")?;
    let server = domid(&mut m, "evtsrv")?;
    create(
        &mut m,
        "/etc/xen/evtchn-client.cfg",
        &format!("extra=\"evtchn_client={server}\""),
    )?;
    let client = domid(&mut m, "evtcli")?;
    let t = Instant::now();
    let line = format!("evtchn: exchanged 100 events with domid {server}");
    let seen = console_expect(&mut m, "evtcli", &line)?;
    assert!(!seen.contains("evtchn: no answer"), "{seen}");
    println!(
        "client: {:.1} s to the end of the exchange",
        t.elapsed().as_secs_f64()
    );
    let line = format!("evtchn: exchanged 100 events with domid {client}");
    console_expect(&mut m, "evtsrv", &line)?;
    // Both carry on.
    let rows = list(&mut m)?;
    assert!(
        row(&rows, "evtsrv").is_some() && row(&rows, "evtcli").is_some(),
        "{rows:?}"
    );
    run(&mut m, "xl destroy evtcli")?;
    run(&mut m, "xl destroy evtsrv")?;
    power_off(m)
}

#[test]
fn domus_cannot_touch_each_others_store_nodes_or_memory() -> Result<()> {
    let mut m = boot()?;
    create(&mut m, "/etc/xen/demo.cfg", "")?;
    let victim = domid(&mut m, "demo")?;
    create(
        &mut m,
        "/etc/xen/isolation.cfg",
        &format!("extra=\"isolation={victim}\""),
    )?;
    m.send_line("xl console intruder")?;
    let seen = m.expect("isolation: mmu_update: ", DOMU_UP)?;
    let rest = m.expect("\n", COMMAND)?;
    m.send(&[CTRL_RBRACKET])?;
    m.expect(DOM0_PROMPT, COMMAND)?;
    let out = format!("{seen}{rest}");
    println!("intruder said:\n{out}");
    for op in [
        format!("read /local/domain/{victim}/name: EACCES"),
        format!("write /local/domain/{victim}/name: EACCES"),
        format!("write /local/domain/{victim}/data/intruder: EACCES"),
    ] {
        assert!(out.contains(&format!("isolation: {op}")), "{op}:\n{out}");
    }
    for what in ["update_va_mapping", "mmu_update"] {
        let line = out
            .lines()
            .find(|l| l.starts_with(&format!("isolation: {what}: ")))
            .unwrap_or_else(|| panic!("no {what} result:\n{out}"));
        assert!(line.contains(": 0 mapped,"), "{line}");
        // Other domains' frames (and free ones) are refused as Xen does, with -EBUSY.
        let ebusy: u64 = line
            .split("EBUSY ")
            .nth(1)
            .and_then(|v| v.split(',').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        assert!(ebusy > 0, "{line}");
    }
    // The victim still runs.
    let rows = list(&mut m)?;
    assert!(row(&rows, "demo").is_some(), "{rows:?}");
    expect_next_heartbeat(&mut m, "demo")?;
    run(&mut m, "xl destroy intruder")?;
    run(&mut m, "xl destroy demo")?;
    power_off(m)
}
