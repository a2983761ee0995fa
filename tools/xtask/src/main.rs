//! `cargo xtask`: build rxen's images, boot them in QEMU, run every test, measure boot time.
//!
//! The QEMU command line and the meaning of QEMU's exit status live in the system-test
//! harness (`rxen_tests::qemu`), so that `cargo xtask run` and the tests boot the machine
//! the same way. See [`args::USAGE`] for the commands.

#![forbid(unsafe_code)]

mod args;
mod bench;
mod blkbench; // block split driver rows of `cargo xtask bench`
mod debian;
mod ramdisk; // toolstack: dom0's ramdisk (cpio newc)
mod ringbench; // ringtest: two-domain benchmarks for `cargo xtask bench`

use std::ffi::OsStr;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use args::{AccelChoice, BootTimeOpts, Cmd, Profile, RunOpts, TestOpts};
use rxen_tests::qemu::{self, Accel, ExitKind, QemuConfig};
use rxen_tests::{probe, Config, Machine, DOM0_PROMPT, XEN_POWEROFF};

/// The bare-metal target every image is built for.
const TARGET: &str = "x86_64-unknown-none";

/// Crates built for bare metal, linted there as well as on the host.
const BARE_METAL_CRATES: &[&str] = &[
    "xen-abi",
    "xen-core",
    "pv-guest",
    "domain-builder",
    "dom0",
    "rxen-test-guest",
    "domu",
    "linux-init",
];

/// Exit status for a `--timeout` that expired (as timeout(1)).
const EXIT_TIMEOUT: u8 = 124;

/// A failed command: message for stderr, and the exit status.
struct Failure {
    message: String,
    code: u8,
}

impl Failure {
    fn new(message: impl Into<String>) -> Self {
        Failure {
            message: message.into(),
            code: 1,
        }
    }
}

impl<E: std::error::Error> From<E> for Failure {
    fn from(e: E) -> Self {
        Failure::new(e.to_string())
    }
}

type Outcome<T = ()> = Result<T, Failure>;

fn main() -> ExitCode {
    let cmd = match args::parse(std::env::args().skip(1)) {
        Ok(cmd) => cmd,
        Err(e) => {
            eprintln!("xtask: {e}\n\n{}", args::USAGE);
            return ExitCode::from(2);
        }
    };
    let result = match cmd {
        Cmd::Help => {
            println!("{}", args::USAGE);
            Ok(())
        }
        Cmd::Build(profile) => build(profile).map(|images| images.print()),
        Cmd::Run(opts) => run(&opts),
        Cmd::Test(opts) => test(&opts),
        Cmd::BootTime(opts) => boot_time(&opts),
        Cmd::Bench(o) => bench::bench(&o),
        Cmd::DebianKernel(o) => {
            debian::debian_kernel(o.package.as_deref(), o.dbg).map(|k| k.print())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("xtask: {}", f.message);
            ExitCode::from(f.code)
        }
    }
}

/// The workspace root (xtask lives in `tools/xtask/`).
fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest
        .ancestors()
        .nth(2)
        .unwrap_or(manifest)
        .to_path_buf()
}

/// Cargo's target directory: `$CARGO_TARGET_DIR` if set, else `target/` in the workspace.
fn target_dir() -> PathBuf {
    let root = workspace_root();
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => root.join(dir),
        _ => root.join("target"),
    }
}

/// A scratch directory for xtask's own files (probe kernels, QEMU logs).
fn scratch_dir() -> PathBuf {
    target_dir().join("xtask")
}

/// `cargo` with the workspace as working directory (so rust-toolchain.toml applies).
fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(workspace_root());
    cmd
}

/// Runs a command, echoing it first; fails if it does.
fn exec(what: &str, cmd: &mut Command) -> Outcome {
    let shown = std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(OsStr::to_string_lossy)
        .collect::<Vec<_>>()
        .join(" ");
    eprintln!("xtask: $ {shown}");
    let status = cmd
        .status()
        .map_err(|e| Failure::new(format!("{what}: cannot run `{shown}`: {e}")))?;
    if status.success() {
        Ok(())
    } else {
        Err(Failure::new(format!("{what} failed ({status})")))
    }
}

/// The images `cargo xtask build` produces.
struct Images {
    xen: PathBuf,
    dom0: PathBuf,
    test_guest: PathBuf,
    /// The Rust domU kernel, for dom0's ramdisk.
    domu: PathBuf,
}

impl Images {
    fn print(&self) {
        println!("xen        {}", self.xen.display());
        println!("dom0       {}", self.dom0.display());
        println!("test-guest {}", self.test_guest.display());
        println!("domu       {}", self.domu.display());
    }
}

/// Builds the hypervisor, dom0, the test guest and the domU kernel for bare metal.
fn build(profile: Profile) -> Outcome<Images> {
    let mut cmd = cargo();
    cmd.args(["build", "--target", TARGET]);
    if profile == Profile::Release {
        cmd.arg("--release");
    }
    cmd.args([
        "-p",
        "xen-core",
        "--bin",
        "xen",
        "-p",
        "dom0",
        "--bin",
        "dom0",
        "-p",
        "rxen-test-guest",
        "--bin",
        "test-guest",
        "-p",
        "domu",
        "--bin",
        "domu",
    ]);
    exec("building the images", &mut cmd)?;
    let dir = target_dir().join(TARGET).join(profile.dir());
    let images = Images {
        xen: dir.join("xen"),
        dom0: dir.join("dom0"),
        test_guest: dir.join("test-guest"),
        domu: dir.join("domu"),
    };
    for image in [&images.xen, &images.dom0, &images.test_guest, &images.domu] {
        if !image.is_file() {
            return Err(Failure::new(format!(
                "cargo built, but {} is missing",
                image.display()
            )));
        }
    }
    // toolstack: dom0's ramdisk (example configs + the domU kernel), next to dom0.
    let rd = ramdisk::path_for(&images.dom0);
    ramdisk::pack(&workspace_root().join("dom0/rootfs"), &images.domu, &rd)
        .map_err(|e| Failure::new(format!("packing {}: {e}", rd.display())))?;
    Ok(images)
}

/// Builds `tests/linux-init` (PID 1 of the Debian domU's initramfs) and returns its path.
fn build_linux_init() -> Outcome<PathBuf> {
    let mut cmd = cargo();
    cmd.args(["build", "--target", TARGET, "--release", "-p", "linux-init"]);
    exec("building linux-init", &mut cmd)?;
    Ok(target_dir()
        .join(TARGET)
        .join(Profile::Release.dir())
        .join("linux-init"))
}

/// linuxdomu: packs dom0's ramdisk plus Debian's kernel as shipped (the bzImage, fetched
/// with `debian-kernel` unless already there) as `/boot/vmlinuz` and `/etc/xen/debian.cfg`,
/// next to the usual one as `dom0-debian.cpio`; returns its path.
fn debian_domu_ramdisk(dom0: &Path) -> Outcome<PathBuf> {
    let rd = dom0.with_file_name("dom0-debian.cpio");
    let linux_init = build_linux_init()?;
    let extra = debian::domu_ramdisk_files(&linux_init)?;
    ramdisk::pack_with(
        &workspace_root().join("dom0/rootfs"),
        &dom0.with_file_name("domu"),
        &extra,
        &rd,
    )
    .map_err(|e| Failure::new(format!("packing {}: {e}", rd.display())))?;
    eprintln!(
        "xtask: dom0's ramdisk with Debian's kernel: {} ({} bytes)",
        rd.display(),
        std::fs::metadata(&rd).map(|m| m.len()).unwrap_or(0)
    );
    Ok(rd)
}

/// Size of the scratch disk `cargo xtask run` gives dom0 when no `--disk` is named.
const DEFAULT_DISK_BYTES: u64 = 64 << 20;

/// The scratch disk (dom0's `vda`), created empty on first use and kept between runs so
/// that what a domU writes is still there next time.
fn default_disk() -> Outcome<PathBuf> {
    let path = scratch_dir().join("vda.img");
    if !path.is_file() {
        std::fs::create_dir_all(scratch_dir())?;
        let f = std::fs::File::create(&path)?;
        f.set_len(DEFAULT_DISK_BYTES)?;
        eprintln!(
            "xtask: created the scratch disk {} (64 MiB)",
            path.display()
        );
    }
    Ok(path)
}

/// Fails with the install instructions unless a recent enough QEMU is installed.
fn require_qemu() -> Outcome<qemu::Version> {
    qemu::check_qemu().map_err(Failure::from)
}

/// Resolves the accelerator choice; `auto` probes KVM.
fn choose_accel(choice: Option<AccelChoice>) -> Outcome<Accel> {
    let choice = match choice {
        Some(c) => c,
        None => AccelChoice::default_from(std::env::var("RXEN_ACCEL").ok().as_deref())
            .map_err(Failure::new)?,
    };
    Ok(match choice {
        AccelChoice::Fixed(accel) => accel,
        AccelChoice::Auto => match kvm_probe() {
            Ok(()) => Accel::Kvm,
            Err(why) => {
                eprintln!("xtask: using TCG: {why}");
                Accel::Tcg
            }
        },
    })
}

/// Checks that KVM can run a guest: `/dev/kvm` opens read-write and a probe kernel that
/// powers off at once does so under it within a few seconds.
fn kvm_probe() -> Result<(), String> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .map_err(|e| format!("/dev/kvm is not usable: {e}"))?;
    let path = probe::write(&scratch_dir(), "kvm-probe.bin", &probe::power_off_probe())
        .map_err(|e| format!("cannot write the KVM probe: {e}"))?;
    let mut cfg = QemuConfig::new(&path, &path);
    cfg.accel = Accel::Kvm;
    cfg.memory_mib = 32;
    let mut cmd = cfg.command().map_err(|e| e.to_string())?;
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start QEMU: {e}"))?;
    match wait_with_deadline(&mut child, Some(Duration::from_secs(10))) {
        Some(status) if ExitKind::from_status(status, false) == ExitKind::PoweredOff => Ok(()),
        Some(status) => Err(format!("a probe guest under KVM ended with {status}")),
        None => {
            stop(&mut child);
            Err("a probe guest under KVM did not finish in 10 s".into())
        }
    }
}

/// Waits for `child` until `limit` has passed; `None` if it is still running then.
fn wait_with_deadline(
    child: &mut Child,
    limit: Option<Duration>,
) -> Option<std::process::ExitStatus> {
    let deadline = limit.map(|l| Instant::now() + l);
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) => {}
            // Cannot poll: fall back to a plain wait.
            Err(_) => return child.wait().ok(),
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Stops QEMU: SIGTERM first, so that it puts the terminal back in order, then SIGKILL.
fn stop(child: &mut Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .stderr(Stdio::null())
        .status();
    if wait_with_deadline(child, Some(Duration::from_secs(3))).is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// `cargo xtask run`: build, boot, and report how the machine ended.
fn run(opts: &RunOpts) -> Outcome {
    let (xen, dom0) = match (&opts.xen, &opts.dom0_kernel) {
        (Some(xen), Some(dom0)) => (xen.clone(), dom0.clone()),
        (xen, dom0) => {
            let images = build(opts.profile)?;
            (
                xen.clone().unwrap_or(images.xen),
                dom0.clone().unwrap_or(images.dom0),
            )
        }
    };
    let version = require_qemu()?;
    let accel = if opts.icount && opts.accel.is_none_or(|c| c == AccelChoice::Auto) {
        // Deterministic virtual time exists only under TCG: no point probing KVM.
        Accel::Tcg
    } else {
        choose_accel(opts.accel)?
    };
    if opts.icount && accel != Accel::Tcg {
        return Err(Failure::new("--icount needs TCG (--accel tcg)"));
    }
    for file in [&xen, &dom0].into_iter().chain(opts.dom0_ramdisk.as_ref()) {
        if !file.is_file() {
            return Err(Failure::new(format!("{}: no such file", file.display())));
        }
    }
    let mut cfg = QemuConfig::new(&xen, &dom0);
    if let Some(s) = &opts.xen_cmdline {
        cfg.xen_cmdline = s.clone();
    }
    if let Some(s) = &opts.dom0_cmdline {
        cfg.dom0_cmdline = s.clone();
    }
    cfg.ramdisk = opts.dom0_ramdisk.clone();
    // linuxdomu: the bigger ramdisk with Debian's kernel; a 66 MB ramdisk must fit in
    // dom0's initial mapping, hence more memory for the machine and for dom0.
    if opts.debian_domu {
        if opts.dom0_kernel.is_some() || opts.dom0_ramdisk.is_some() {
            return Err(Failure::new(
                "--debian-domu packs rxen's dom0 ramdisk: no --dom0-kernel/--dom0-ramdisk",
            ));
        }
        cfg.ramdisk = Some(debian_domu_ramdisk(&dom0)?);
        cfg.memory_mib = 1024;
        if opts.xen_cmdline.is_none() {
            cfg.xen_cmdline = format!("{} dom0_mem=256M", qemu::DEFAULT_XEN_CMDLINE);
        }
    }
    // toolstack: by default dom0 gets the ramdisk packed next to its image.
    if cfg.ramdisk.is_none() && ramdisk::path_for(&dom0).is_file() {
        cfg.ramdisk = Some(ramdisk::path_for(&dom0));
    }
    if let Some(mib) = opts.memory_mib {
        cfg.memory_mib = mib;
    }
    if opts.no_disk && !opts.disks.is_empty() {
        return Err(Failure::new("--no-disk and --disk contradict each other"));
    }
    cfg.disks = opts.disks.iter().map(|d| qemu::Disk::parse(d)).collect();
    if cfg.disks.is_empty() && !opts.no_disk {
        cfg.disks.push(qemu::Disk::new(default_disk()?));
    }
    cfg.accel = accel;
    cfg.icount = opts.icount;
    let reset_log = scratch_dir().join(format!("cpu_reset-{}.log", std::process::id()));
    std::fs::create_dir_all(scratch_dir())?;
    cfg.reset_log = Some(reset_log.clone());

    let mut cmd = cfg.command()?;
    eprintln!(
        "xtask: booting {} with dom0 {} under {} (QEMU {version}){}",
        xen.display(),
        dom0.display(),
        accel.as_str().to_uppercase(),
        if opts.icount { ", -icount shift=0" } else { "" }
    );
    // The serial console is this terminal (or pipe): QEMU reads stdin and writes stdout.
    let started = Instant::now();
    let mut child = cmd
        .stdin(Stdio::inherit())
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| Failure::new(format!("cannot start QEMU: {e}")))?;
    let limit = opts.timeout.map(Duration::from_secs_f64);
    let status = wait_with_deadline(&mut child, limit);
    let elapsed = started.elapsed().as_secs_f64();
    let Some(status) = status else {
        stop(&mut child);
        let _ = std::fs::remove_file(&reset_log);
        return Err(Failure {
            message: format!("timed out after {elapsed:.1} s; QEMU stopped"),
            code: EXIT_TIMEOUT,
        });
    };
    let kind = ExitKind::from_status(status, qemu::reset_log_has_triple_fault(&reset_log));
    let _ = std::fs::remove_file(&reset_log);
    if kind.is_success() {
        eprintln!("xtask: {kind} after {elapsed:.1} s");
        Ok(())
    } else {
        Err(Failure::new(format!("{kind} after {elapsed:.1} s")))
    }
}

/// `cargo xtask test`: everything the README promises, in order of cost.
fn test(opts: &TestOpts) -> Outcome {
    // QEMU first: no point in compiling for ten minutes to find it missing.
    let version = require_qemu()?;
    eprintln!("xtask: QEMU {version}");
    let mut steps: Vec<(&str, Duration)> = Vec::new();
    let mut step = |name: &'static str, f: &mut dyn FnMut() -> Outcome| -> Outcome {
        eprintln!("xtask: === {name} ===");
        let t = Instant::now();
        let r = f();
        steps.push((name, t.elapsed()));
        r
    };
    if !opts.no_lint {
        step("formatting", &mut || {
            exec(
                "cargo fmt --check",
                cargo().args(["fmt", "--all", "--", "--check"]),
            )
        })?;
        step("clippy (host)", &mut || {
            exec(
                "clippy (host)",
                cargo().args([
                    "clippy",
                    "--workspace",
                    "--all-targets",
                    "--",
                    "-D",
                    "warnings",
                ]),
            )
        })?;
        step("clippy (bare metal)", &mut || {
            let mut cmd = cargo();
            cmd.args(["clippy", "--target", TARGET]);
            for krate in BARE_METAL_CRATES {
                cmd.args(["-p", krate]);
            }
            cmd.args(["--", "-D", "warnings"]);
            exec("clippy (bare metal)", &mut cmd)
        })?;
    }
    step("host unit tests", &mut || {
        // The system tests need images; they run last, with the images built.
        exec(
            "host unit tests",
            cargo().args(["test", "--workspace", "--exclude", "rxen-tests"]),
        )
    })?;
    let mut images = None;
    step("images", &mut || {
        images = Some(build(Profile::Release)?);
        Ok(())
    })?;
    let images = images.ok_or_else(|| Failure::new("images were not built"))?;
    // Debian's kernel for the Linux-blkfront test: used when already fetched; fetched
    // under CI (`$CI`). Without it that one test says it was skipped.
    let mut debian_ramdisk = None;
    step("Debian kernel (optional)", &mut || {
        if debian::have_domu_files() || std::env::var_os("CI").is_some() {
            match debian_domu_ramdisk(&images.dom0) {
                Ok(rd) => debian_ramdisk = Some(rd),
                Err(e) => eprintln!(
                    "xtask: no Debian kernel ({}): the Linux-blkfront test is skipped",
                    e.message
                ),
            }
        }
        Ok(())
    })?;
    step("system tests (QEMU, TCG)", &mut || {
        let mut cmd = cargo();
        cmd.args(["test", "-p", "rxen-tests"])
            .env("RXEN_XEN", &images.xen)
            .env("RXEN_DOM0", &images.dom0)
            .env("RXEN_TEST_GUEST", &images.test_guest)
            .env("RXEN_DOMU", &images.domu)
            .env("RXEN_DOM0_RAMDISK", ramdisk::path_for(&images.dom0));
        if let Some(rd) = &debian_ramdisk {
            cmd.env("RXEN_DOM0_DEBIAN_RAMDISK", rd);
        }
        if !opts.test_args.is_empty() {
            cmd.arg("--").args(&opts.test_args);
        }
        exec("system tests", &mut cmd)
    })?;
    let mut summary = String::from("all tests passed:");
    for (name, t) in &steps {
        let _ = write!(summary, " {name} {:.0} s;", t.as_secs_f64());
    }
    eprintln!("xtask: {}", summary.trim_end_matches(';'));
    Ok(())
}

/// `cargo xtask boot-time`: median wall time from QEMU start to dom0's prompt.
fn boot_time(opts: &BootTimeOpts) -> Outcome {
    let images = build(opts.profile)?;
    let version = require_qemu()?;
    let accel = choose_accel(opts.accel.or(Some(AccelChoice::Fixed(Accel::Tcg))))?;
    let mut times = Vec::new();
    for i in 1..=opts.runs {
        let mut cfg = Config::new(&images.xen, &images.dom0);
        cfg.accel = accel;
        cfg.echo = false;
        let mut m = Machine::boot(cfg).map_err(|e| Failure::new(e.to_string()))?;
        m.expect(DOM0_PROMPT, Duration::from_secs(300))
            .map_err(|e| Failure::new(format!("run {i}: {e}")))?;
        let t = m.elapsed();
        eprintln!("xtask: run {i}/{}: {:.3} s", opts.runs, t.as_secs_f64());
        times.push(t);
        // End it cleanly, as a user would; a slow power-off does not count.
        if m.send_line("shutdown").is_ok()
            && m.expect(XEN_POWEROFF, Duration::from_secs(30)).is_ok()
        {
            let _ = m.wait_exit(Duration::from_secs(10));
        }
        m.kill();
    }
    let median = median(&mut times);
    println!(
        "boot time (QEMU start to `{}`), {} under QEMU {version}, median of {}: {:.3} s",
        DOM0_PROMPT.trim_end(),
        accel.as_str().to_uppercase(),
        opts.runs,
        median.as_secs_f64()
    );
    Ok(())
}

/// The median (the mean of the middle two for an even count).
fn median(times: &mut [Duration]) -> Duration {
    times.sort();
    match times.len() {
        0 => Duration::ZERO,
        n if n % 2 == 1 => times[n / 2],
        n => (times[n / 2 - 1] + times[n / 2]) / 2,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        let ms = Duration::from_millis;
        assert_eq!(median(&mut []), Duration::ZERO);
        assert_eq!(median(&mut [ms(5), ms(1), ms(3)]), ms(3));
        assert_eq!(
            median(&mut [ms(4), ms(1), ms(3), ms(2)]),
            Duration::from_micros(2500)
        );
    }

    #[test]
    fn workspace_layout() {
        let root = workspace_root();
        assert!(root.join("Cargo.toml").is_file());
        assert!(root.join("tools/xtask/Cargo.toml").is_file());
    }
}
