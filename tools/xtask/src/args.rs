//! Command-line parsing for `cargo xtask` (by hand: a handful of flags needs no library).

use std::path::PathBuf;

use rxen_tests::Accel;

/// Usage text, printed by `cargo xtask help` and after a usage error.
pub const USAGE: &str = "\
usage: cargo xtask <command> [options]

commands:
  build                 build the hypervisor, dom0 and test-guest images; print their paths
  run                   build, then boot rxen in QEMU with the serial console on this terminal
                        (stdin is the console's input: `printf 'info\\nshutdown\\n' | cargo xtask run`)
  test                  the full test suite: formatting, clippy, host unit tests, images, and
                        the QEMU system tests (under TCG)
  boot-time             median wall time from QEMU start to dom0's prompt
  debian-kernel         download Debian bookworm's stock kernel (the linux-image-6.1.0-*-amd64
                        that linux-image-amd64 depends on) into <target>/debian/ with apt-get,
                        extract the ELF from its bzImage; print its path (and System.map's)
  bench                 boot the test guest (scenario=bench) under TCG with -icount shift=0
                        --runs N times (default 3; --verbose echoes the console) and print
                        the benchmark table (medians, ratios to a call and a 4 KiB memcpy);
                        --only hv,ring,blk runs some of its three parts
  help                  this text

options for build, run and boot-time:
  --debug               use debug images (default: release)

options for run:
  --accel kvm|tcg|auto  accelerator (default: $RXEN_ACCEL, else tcg; `auto` = KVM if a probe
                        guest runs under it, else TCG)
  --icount              deterministic virtual time: QEMU's `-icount shift=0` (TCG only)
  --timeout SECONDS     stop QEMU after this long and fail
  --memory MIB          the machine's RAM (default 512)
  --dom0-kernel FILE    boot FILE (any Xen PV kernel) as dom0 instead of rxen's dom0
  --dom0-ramdisk FILE   dom0's ramdisk (second multiboot module)
  --dom0-cmdline STR    dom0's command line (default: \"console=hvc0\")
  --xen-cmdline STR     the hypervisor's command line (default: \"console=com1 loglvl=all\")
  --disk PATH[,ro]      a raw disk image as a virtio-blk device (dom0's vda, vdb, ... in
                        order; `,ro` = read-only); repeatable. Default: a 64 MiB scratch
                        disk kept at target/xtask/vda.img
  --no-disk             no disk at all
  --xen FILE            boot FILE as the hypervisor instead of rxen's (nothing is built
                        when --dom0-kernel is given too)
  --debian-domu         also put Debian's kernel (`debian-kernel`, run if needed: ~70 MB
                        download) in dom0's ramdisk as /boot/vmlinuz, with /etc/xen/debian.cfg
                        (`xl create /etc/xen/debian.cfg -c`); defaults become --memory 1024
                        and dom0_mem=256M

options for test:
  --no-lint             skip `cargo fmt --check` and clippy
  -- ARGS               passed to the system tests' test binaries (e.g. `-- shell`)

options for debian-kernel:
  --package NAME        this kernel package instead of linux-image-amd64's dependency
  --dbg                 also fetch NAME-dbg (~860 MB) for the real System.map and an
                        unstripped vmlinux (Debian's boot/System.map-* is a stub)

options for boot-time:
  --runs N              number of boots (default 5)
  --accel kvm|tcg|auto  as for run (default tcg)

exit status: 0 when the machine powers off or is reset by its guest (run) or everything
passes (test); 1 on failure (hypervisor panic, triple fault, QEMU error, failed test);
2 on a usage error; 124 when --timeout expires.";

/// How to pick the accelerator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AccelChoice {
    /// This one.
    Fixed(Accel),
    /// KVM if `/dev/kvm` is usable and a probe guest runs under it, else TCG.
    Auto,
}

impl AccelChoice {
    fn parse(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(AccelChoice::Auto),
            other => other
                .parse::<Accel>()
                .map(AccelChoice::Fixed)
                .map_err(|e| format!("{e} or `auto`")),
        }
    }

    /// The default when `--accel` is not given: `$RXEN_ACCEL`, else TCG.
    ///
    /// TCG rather than "KVM where it works": on hosts where KVM itself is nested (CI VMs,
    /// this project's build machines) a probe guest runs but rxen's guests can hang, so
    /// KVM is opt-in (`--accel kvm`, `--accel auto`, `RXEN_ACCEL=kvm`).
    pub fn default_from(env: Option<&str>) -> Result<Self, String> {
        match env.map(str::trim).filter(|s| !s.is_empty()) {
            Some(s) => AccelChoice::parse(s).map_err(|e| format!("$RXEN_ACCEL: {e}")),
            None => Ok(AccelChoice::Fixed(Accel::Tcg)),
        }
    }
}

/// Image build profile.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Profile {
    /// `--release` (the default).
    #[default]
    Release,
    /// The dev profile.
    Debug,
}

impl Profile {
    /// The folder under `target/<triple>/`.
    pub fn dir(self) -> &'static str {
        match self {
            Profile::Release => "release",
            Profile::Debug => "debug",
        }
    }
}

/// `cargo xtask run` options.
#[derive(Clone, Debug, PartialEq)]
pub struct RunOpts {
    /// Image profile.
    pub profile: Profile,
    /// Accelerator; `None` means the default ([`AccelChoice::default_from`]).
    pub accel: Option<AccelChoice>,
    /// `-icount shift=0`.
    pub icount: bool,
    /// Wall-clock limit in seconds.
    pub timeout: Option<f64>,
    /// The machine's RAM in MiB; `None` means the harness's default.
    pub memory_mib: Option<u32>,
    /// Kernel booted as dom0 instead of rxen's dom0.
    pub dom0_kernel: Option<PathBuf>,
    /// dom0's ramdisk.
    pub dom0_ramdisk: Option<PathBuf>,
    /// dom0's command line.
    pub dom0_cmdline: Option<String>,
    /// The hypervisor's command line.
    pub xen_cmdline: Option<String>,
    /// Hypervisor image booted instead of rxen's.
    pub xen: Option<PathBuf>,
    /// linuxdomu: Debian's vmlinux and /etc/xen/debian.cfg in dom0's ramdisk.
    pub debian_domu: bool,
    /// `--disk PATH[,ro]`: disk images for dom0's virtio-blk driver, in order (`vda`, ...).
    /// Empty means the default scratch disk.
    pub disks: Vec<String>,
    /// `--no-disk`: no disk at all.
    pub no_disk: bool,
}

/// `cargo xtask test` options.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct TestOpts {
    /// Skip fmt and clippy.
    pub no_lint: bool,
    /// Arguments for the system tests' binaries.
    pub test_args: Vec<String>,
}

/// `cargo xtask boot-time` options.
#[derive(Clone, Debug, PartialEq)]
pub struct BootTimeOpts {
    /// Image profile.
    pub profile: Profile,
    /// Number of boots.
    pub runs: u32,
    /// Accelerator.
    pub accel: Option<AccelChoice>,
}

/// `cargo xtask debian-kernel` options.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct DebianKernelOpts {
    /// The kernel package (`--package`); `None`: what `linux-image-amd64` depends on.
    pub package: Option<String>,
    /// Also the `-dbg` package's System.map and unstripped vmlinux.
    pub dbg: bool,
}

/// A parsed command line.
#[derive(Clone, Debug, PartialEq)]
pub enum Cmd {
    /// `build`
    Build(Profile),
    /// `run`
    Run(RunOpts),
    /// `test`
    Test(TestOpts),
    /// `boot-time`
    BootTime(BootTimeOpts),
    /// `debian-kernel`
    DebianKernel(DebianKernelOpts),
    /// `bench`
    Bench(crate::bench::BenchOpts),
    /// `help`, `-h`, `--help`
    Help,
}

/// Walks the arguments, splitting `--opt=value` and fetching values for `--opt value`.
struct Args<I: Iterator<Item = String>> {
    it: I,
    pending: Option<String>,
}

impl<I: Iterator<Item = String>> Args<I> {
    /// The next option name, with an inline `=value` saved for [`Args::value`].
    fn next_opt(&mut self) -> Option<String> {
        let arg = self.it.next()?;
        if arg.starts_with("--") {
            if let Some((name, value)) = arg.split_once('=') {
                self.pending = Some(value.to_owned());
                return Some(name.to_owned());
            }
        }
        Some(arg)
    }

    fn value(&mut self, opt: &str) -> Result<String, String> {
        self.pending
            .take()
            .or_else(|| self.it.next())
            .ok_or_else(|| format!("{opt} needs a value"))
    }

    /// Rejects `--flag=value` for options that take no value.
    fn no_value(&mut self, opt: &str) -> Result<(), String> {
        match self.pending.take() {
            Some(_) => Err(format!("{opt} takes no value")),
            None => Ok(()),
        }
    }
}

fn unknown(cmd: &str, opt: &str) -> String {
    format!("unknown option `{opt}` for `cargo xtask {cmd}`")
}

/// Parses the arguments after `cargo xtask`.
pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Cmd, String> {
    let mut args = Args {
        it: args.into_iter(),
        pending: None,
    };
    let Some(cmd) = args.it.next() else {
        return Err("no command given".into());
    };
    match cmd.as_str() {
        "help" | "-h" | "--help" => Ok(Cmd::Help),
        "build" => {
            let mut profile = Profile::Release;
            while let Some(opt) = args.next_opt() {
                match opt.as_str() {
                    "--debug" => profile = Profile::Debug,
                    "--release" => profile = Profile::Release,
                    _ => return Err(unknown("build", &opt)),
                }
                args.no_value(&opt)?;
            }
            Ok(Cmd::Build(profile))
        }
        "run" => {
            let mut o = RunOpts {
                profile: Profile::Release,
                accel: None,
                icount: false,
                timeout: None,
                memory_mib: None,
                dom0_kernel: None,
                dom0_ramdisk: None,
                dom0_cmdline: None,
                xen_cmdline: None,
                xen: None,
                debian_domu: false,
                disks: Vec::new(),
                no_disk: false,
            };
            while let Some(opt) = args.next_opt() {
                match opt.as_str() {
                    "--debug" | "--release" | "--icount" | "--debian-domu" | "--no-disk" => {
                        args.no_value(&opt)?;
                        match opt.as_str() {
                            "--debug" => o.profile = Profile::Debug,
                            "--release" => o.profile = Profile::Release,
                            "--debian-domu" => o.debian_domu = true,
                            "--no-disk" => o.no_disk = true,
                            _ => o.icount = true,
                        }
                    }
                    "--accel" => o.accel = Some(AccelChoice::parse(&args.value(&opt)?)?),
                    "--timeout" => {
                        let v = args.value(&opt)?;
                        let secs = v
                            .parse::<f64>()
                            .ok()
                            .filter(|s| s.is_finite() && *s > 0.0)
                            .ok_or_else(|| format!("--timeout: `{v}` is not a positive number"))?;
                        o.timeout = Some(secs);
                    }
                    "--memory" => {
                        let v = args.value(&opt)?;
                        // QEMU needs a few MiB; more than 1 TiB is a typo.
                        let mib = v
                            .parse::<u32>()
                            .ok()
                            .filter(|m| (16..=1 << 20).contains(m))
                            .ok_or_else(|| {
                                format!("--memory: `{v}` is not a size in MiB (16 or more)")
                            })?;
                        o.memory_mib = Some(mib);
                    }
                    "--disk" => o.disks.push(args.value(&opt)?),
                    "--dom0-kernel" => o.dom0_kernel = Some(args.value(&opt)?.into()),
                    "--dom0-ramdisk" => o.dom0_ramdisk = Some(args.value(&opt)?.into()),
                    "--dom0-cmdline" => o.dom0_cmdline = Some(args.value(&opt)?),
                    "--xen-cmdline" => o.xen_cmdline = Some(args.value(&opt)?),
                    "--xen" => o.xen = Some(args.value(&opt)?.into()),
                    _ => return Err(unknown("run", &opt)),
                }
            }
            if o.icount && o.accel == Some(AccelChoice::Fixed(Accel::Kvm)) {
                return Err("--icount needs TCG; it cannot be combined with --accel kvm".into());
            }
            Ok(Cmd::Run(o))
        }
        "test" => {
            let mut o = TestOpts::default();
            while let Some(opt) = args.next_opt() {
                match opt.as_str() {
                    "--no-lint" => {
                        args.no_value(&opt)?;
                        o.no_lint = true;
                    }
                    "--" => {
                        o.test_args = args.it.by_ref().collect();
                    }
                    _ => return Err(unknown("test", &opt)),
                }
            }
            Ok(Cmd::Test(o))
        }
        "boot-time" => {
            let mut o = BootTimeOpts {
                profile: Profile::Release,
                runs: 5,
                accel: None,
            };
            while let Some(opt) = args.next_opt() {
                match opt.as_str() {
                    "--debug" => {
                        args.no_value(&opt)?;
                        o.profile = Profile::Debug;
                    }
                    "--runs" => {
                        let v = args.value(&opt)?;
                        o.runs =
                            v.parse::<u32>().ok().filter(|&n| n > 0).ok_or_else(|| {
                                format!("--runs: `{v}` is not a positive integer")
                            })?;
                    }
                    "--accel" => o.accel = Some(AccelChoice::parse(&args.value(&opt)?)?),
                    _ => return Err(unknown("boot-time", &opt)),
                }
            }
            Ok(Cmd::BootTime(o))
        }
        "bench" => crate::bench::parse_opts(args.it).map(Cmd::Bench),
        "debian-kernel" => {
            let mut o = DebianKernelOpts::default();
            while let Some(opt) = args.next_opt() {
                match opt.as_str() {
                    "--package" => o.package = Some(args.value(&opt)?),
                    "--dbg" => {
                        args.no_value(&opt)?;
                        o.dbg = true;
                    }
                    _ => return Err(unknown("debian-kernel", &opt)),
                }
            }
            Ok(Cmd::DebianKernel(o))
        }
        other => Err(format!("unknown command `{other}`")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(args: &[&str]) -> Result<Cmd, String> {
        parse(args.iter().map(|s| s.to_string()))
    }

    fn run(args: &[&str]) -> RunOpts {
        match p(args) {
            Ok(Cmd::Run(o)) => o,
            other => panic!("{args:?} -> {other:?}"),
        }
    }

    #[test]
    fn commands() {
        assert_eq!(p(&["help"]), Ok(Cmd::Help));
        assert_eq!(p(&["--help"]), Ok(Cmd::Help));
        assert_eq!(p(&["build"]), Ok(Cmd::Build(Profile::Release)));
        assert_eq!(p(&["build", "--debug"]), Ok(Cmd::Build(Profile::Debug)));
        assert!(p(&[]).is_err());
        assert!(p(&["frobnicate"]).unwrap_err().contains("unknown command"));
        assert!(p(&["build", "--accel", "kvm"]).is_err());
    }

    #[test]
    fn run_defaults() {
        let o = run(&["run"]);
        assert_eq!(o.profile, Profile::Release);
        assert_eq!(o.accel, None);
        assert!(!o.icount);
        assert_eq!(o.timeout, None);
        assert_eq!(o.memory_mib, None);
        assert_eq!(o.dom0_kernel, None);
        assert_eq!(o.dom0_cmdline, None);
        assert_eq!(o.xen_cmdline, None);
        assert_eq!(o.xen, None);
        assert!(!o.debian_domu);
        assert!(run(&["run", "--debian-domu"]).debian_domu);
        let o = run(&["run", "--disk", "/a.img", "--disk=/b.img,ro"]);
        assert_eq!(o.disks, ["/a.img", "/b.img,ro"]);
        assert!(!o.no_disk);
        assert!(run(&["run", "--no-disk"]).no_disk);
        assert!(p(&["run", "--disk"]).is_err());
        assert!(p(&["run", "--debian-domu=yes"]).is_err());
    }

    #[test]
    fn run_options_both_spellings() {
        let o = run(&[
            "run",
            "--accel",
            "kvm",
            "--timeout=30",
            "--memory",
            "1024",
            "--dom0-kernel",
            "/boot/vmlinuz",
            "--dom0-ramdisk=/boot/initrd.img",
            "--dom0-cmdline",
            "console=hvc0 root=/dev/xvda1 quiet",
            "--xen-cmdline=console=com1 loglvl=all noreboot",
            "--debug",
        ]);
        assert_eq!(o.accel, Some(AccelChoice::Fixed(Accel::Kvm)));
        assert_eq!(o.timeout, Some(30.0));
        assert_eq!(o.memory_mib, Some(1024));
        assert_eq!(o.dom0_kernel, Some(PathBuf::from("/boot/vmlinuz")));
        assert_eq!(o.dom0_ramdisk, Some(PathBuf::from("/boot/initrd.img")));
        assert_eq!(
            o.dom0_cmdline.as_deref(),
            Some("console=hvc0 root=/dev/xvda1 quiet")
        );
        // Only the first `=` splits: the value keeps its own.
        assert_eq!(
            o.xen_cmdline.as_deref(),
            Some("console=com1 loglvl=all noreboot")
        );
        assert_eq!(o.profile, Profile::Debug);
        assert_eq!(run(&["run", "--xen", "/x"]).xen, Some(PathBuf::from("/x")));
        let o = run(&["run", "--icount", "--accel=tcg", "--timeout", "2.5"]);
        assert!(o.icount);
        assert_eq!(o.accel, Some(AccelChoice::Fixed(Accel::Tcg)));
        assert_eq!(o.timeout, Some(2.5));
        assert_eq!(
            run(&["run", "--accel", "auto"]).accel,
            Some(AccelChoice::Auto)
        );
    }

    #[test]
    fn run_errors() {
        let err = |args: &[&str]| p(args).expect_err("must be refused");
        assert!(err(&["run", "--accel"]).contains("needs a value"));
        assert!(err(&["run", "--accel", "hvf"]).contains("unknown accelerator"));
        assert!(err(&["run", "--timeout", "-1"]).contains("positive"));
        assert!(err(&["run", "--timeout", "soon"]).contains("positive"));
        assert!(err(&["run", "--timeout", "0"]).contains("positive"));
        assert!(err(&["run", "--memory", "8"]).contains("MiB"));
        assert!(err(&["run", "--memory", "1G"]).contains("MiB"));
        assert!(err(&["run", "--icount", "--accel", "kvm"]).contains("TCG"));
        assert!(err(&["run", "--icount=yes"]).contains("no value"));
        assert!(err(&["run", "--kernel", "x"]).contains("unknown option"));
        assert!(err(&["run", "extra"]).contains("unknown option"));
    }

    #[test]
    fn test_and_boot_time() {
        assert_eq!(p(&["test"]), Ok(Cmd::Test(TestOpts::default())));
        assert_eq!(
            p(&["test", "--no-lint", "--", "shell", "--nocapture"]),
            Ok(Cmd::Test(TestOpts {
                no_lint: true,
                test_args: vec!["shell".into(), "--nocapture".into()],
            }))
        );
        assert!(p(&["test", "--lint"]).is_err());
        assert_eq!(
            p(&["boot-time"]),
            Ok(Cmd::BootTime(BootTimeOpts {
                profile: Profile::Release,
                runs: 5,
                accel: None,
            }))
        );
        assert_eq!(
            p(&["boot-time", "--runs", "3", "--accel", "tcg"]),
            Ok(Cmd::BootTime(BootTimeOpts {
                profile: Profile::Release,
                runs: 3,
                accel: Some(AccelChoice::Fixed(Accel::Tcg)),
            }))
        );
        assert!(p(&["boot-time", "--runs", "0"]).is_err());
    }

    #[test]
    fn debian_kernel() {
        assert_eq!(
            p(&["debian-kernel"]),
            Ok(Cmd::DebianKernel(DebianKernelOpts::default()))
        );
        assert_eq!(
            p(&[
                "debian-kernel",
                "--dbg",
                "--package=linux-image-6.1.0-56-amd64"
            ]),
            Ok(Cmd::DebianKernel(DebianKernelOpts {
                package: Some("linux-image-6.1.0-56-amd64".into()),
                dbg: true,
            }))
        );
        assert!(p(&["debian-kernel", "--debug"]).is_err());
        assert!(p(&["debian-kernel", "--dbg=yes"]).is_err());
    }

    #[test]
    fn accel_default() {
        assert_eq!(
            AccelChoice::default_from(None),
            Ok(AccelChoice::Fixed(Accel::Tcg))
        );
        assert_eq!(
            AccelChoice::default_from(Some("")),
            Ok(AccelChoice::Fixed(Accel::Tcg))
        );
        assert_eq!(
            AccelChoice::default_from(Some("kvm")),
            Ok(AccelChoice::Fixed(Accel::Kvm))
        );
        assert_eq!(
            AccelChoice::default_from(Some("auto")),
            Ok(AccelChoice::Auto)
        );
        assert!(AccelChoice::default_from(Some("xen"))
            .unwrap_err()
            .contains("RXEN_ACCEL"));
    }
}
