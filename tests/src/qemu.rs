//! How rxen is started in QEMU, and what QEMU's exit status means.
//!
//! This is the one place that knows the QEMU command line, so that `cargo xtask run`, the
//! system tests and the boot-time measurement all boot the machine the same way.
//!
//! The hypervisor is a multiboot (v1) image: QEMU's built-in multiboot loader takes it with
//! `-kernel`, its command line with `-append`, and the multiboot modules (dom0's kernel, then
//! its optional ramdisk) with `-initrd`, as a comma-separated list of `"path args"` strings —
//! the way GRUB's `module` lines hand Xen its dom0. QEMU passes each module's string, path
//! included, as the module command line, and prepends the kernel's path to `-append`; the
//! hypervisor strips that first word as Xen does.
//!
//! The machine ends through QEMU's `isa-debug-exit` device at port 0xf4: a byte `v` written
//! there makes QEMU exit with status `(v << 1) | 1`. rxen writes 0x10 when dom0 powers the
//! machine off (status 33) and 0x1f when the hypervisor panics (status 63). A reset is a
//! QEMU exit with status 0, because the machine runs with `-no-reboot`.

use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::str::FromStr;

/// The hypervisor command line used unless one is given: all log levels on COM1.
pub const DEFAULT_XEN_CMDLINE: &str = "console=com1 loglvl=all";
/// dom0's command line used unless one is given: its console is the hypervisor console.
pub const DEFAULT_DOM0_CMDLINE: &str = "console=hvc0";

/// The QEMU binary: `$RXEN_QEMU` if set, else `qemu-system-x86_64` from `PATH`.
pub fn qemu_binary() -> OsString {
    std::env::var_os("RXEN_QEMU").unwrap_or_else(|| OsString::from("qemu-system-x86_64"))
}

/// Oldest QEMU rxen supports.
pub const MIN_QEMU: Version = Version {
    major: 8,
    minor: 0,
    micro: 0,
};

/// Port of the `isa-debug-exit` device (the same as Xen's XTF test framework uses).
pub const DEBUG_EXIT_PORT: u16 = 0xf4;
/// Byte the hypervisor writes to [`DEBUG_EXIT_PORT`] when dom0 powers the machine off.
pub const DEBUG_EXIT_POWEROFF: u8 = 0x10;
/// Byte the hypervisor writes to [`DEBUG_EXIT_PORT`] when it panics.
pub const DEBUG_EXIT_PANIC: u8 = 0x1f;

/// QEMU's exit status for a byte written to `isa-debug-exit`.
pub const fn debug_exit_status(value: u8) -> i32 {
    ((value as i32) << 1) | 1
}

/// How QEMU executes guest code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accel {
    /// QEMU's binary translator: slow, but the same everywhere; the tests use it.
    Tcg,
    /// Hardware virtualization through `/dev/kvm`.
    Kvm,
}

impl Accel {
    /// The value of QEMU's `-accel` option.
    pub fn as_str(self) -> &'static str {
        match self {
            Accel::Tcg => "tcg",
            Accel::Kvm => "kvm",
        }
    }
}

impl FromStr for Accel {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "tcg" => Ok(Accel::Tcg),
            "kvm" => Ok(Accel::Kvm),
            other => Err(format!(
                "unknown accelerator `{other}` (expected `kvm` or `tcg`)"
            )),
        }
    }
}

impl fmt::Display for Accel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Everything needed to start one machine.
#[derive(Clone, Debug)]
pub struct QemuConfig {
    /// The hypervisor image (multiboot).
    pub xen: PathBuf,
    /// The hypervisor's command line.
    pub xen_cmdline: String,
    /// dom0's kernel: the first multiboot module.
    pub dom0_kernel: PathBuf,
    /// dom0's command line (after the module's path).
    pub dom0_cmdline: String,
    /// dom0's ramdisk: the second multiboot module, if any.
    pub ramdisk: Option<PathBuf>,
    /// The accelerator.
    pub accel: Accel,
    /// `-icount shift=0`: virtual time advances one nanosecond per instruction (TCG only).
    pub icount: bool,
    /// Guest RAM in MiB.
    pub memory_mib: u32,
    /// File for QEMU's `-d cpu_reset` log, which is how a triple fault (a reset too, with
    /// `-no-reboot`) is told apart from a reset the hypervisor asked for. TCG only.
    pub reset_log: Option<PathBuf>,
    /// Raw disk images, each a modern-only virtio-blk PCI device (dom0's `vda`, `vdb`, ...).
    pub disks: Vec<Disk>,
}

/// A raw disk image QEMU offers as a virtio-blk PCI device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Disk {
    /// The image file.
    pub path: PathBuf,
    /// The device refuses writes (`readonly=on`, virtio's `VIRTIO_BLK_F_RO`).
    pub read_only: bool,
}

impl Disk {
    /// A writable disk.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Disk {
            path: path.into(),
            read_only: false,
        }
    }

    /// Parses `PATH` or `PATH,ro` (xtask's `--disk`).
    pub fn parse(spec: &str) -> Self {
        match spec.strip_suffix(",ro") {
            Some(path) => Disk {
                path: path.into(),
                read_only: true,
            },
            None => Disk::new(spec),
        }
    }
}

impl QemuConfig {
    /// A configuration with the default command lines, TCG and 512 MiB.
    pub fn new(xen: impl Into<PathBuf>, dom0_kernel: impl Into<PathBuf>) -> Self {
        QemuConfig {
            xen: xen.into(),
            xen_cmdline: DEFAULT_XEN_CMDLINE.to_owned(),
            dom0_kernel: dom0_kernel.into(),
            dom0_cmdline: DEFAULT_DOM0_CMDLINE.to_owned(),
            ramdisk: None,
            accel: Accel::Tcg,
            icount: false,
            memory_mib: 512,
            reset_log: None,
            disks: Vec::new(),
        }
    }

    /// The `-initrd` value: the multiboot modules, `"path args"` each, comma-separated.
    pub fn modules_arg(&self) -> Result<OsString, ConfigError> {
        let mut modules = vec![module_string(&self.dom0_kernel, &self.dom0_cmdline)?];
        if let Some(ramdisk) = &self.ramdisk {
            modules.push(module_string(ramdisk, "")?);
        }
        Ok(OsString::from(modules.join(",")))
    }

    /// QEMU's arguments (without the program name).
    pub fn args(&self) -> Result<Vec<OsString>, ConfigError> {
        if self.icount && self.accel != Accel::Tcg {
            return Err(ConfigError::IcountNeedsTcg);
        }
        let xen = plain_path(&self.xen)?;
        let mut args: Vec<OsString> = [
            "-machine",
            "q35",
            // No x2APIC: the hypervisor drives the local APIC through its MMIO page.
            "-cpu",
            "max,-x2apic",
            "-smp",
            "1",
            "-display",
            "none",
            // No default NIC, VGA, monitor, floppy or CD: only the devices named here.
            "-nodefaults",
            "-no-reboot",
            "-device",
            "isa-debug-exit,iobase=0xf4,iosize=0x04",
            "-serial",
            "stdio",
        ]
        .iter()
        .map(OsString::from)
        .collect();
        args.push("-m".into());
        args.push(format!("{}M", self.memory_mib).into());
        args.push("-accel".into());
        args.push(self.accel.as_str().into());
        if self.icount {
            args.push("-icount".into());
            args.push("shift=0".into());
        }
        if let (Some(log), Accel::Tcg) = (&self.reset_log, self.accel) {
            args.push("-d".into());
            args.push("cpu_reset".into());
            args.push("-D".into());
            args.push(log.into());
        }
        for (i, disk) in self.disks.iter().enumerate() {
            // QEMU's -drive splits on commas; a comma in the path would need doubling.
            let path = plain_path(&disk.path)?.replace(',', ",,");
            let ro = if disk.read_only { ",readonly=on" } else { "" };
            args.push("-drive".into());
            args.push(format!("file={path},if=none,format=raw,id=disk{i}{ro}").into());
            args.push("-device".into());
            // Modern-only (virtio 1.x) transport: dom0's driver speaks no legacy virtio.
            args.push(format!("virtio-blk-pci,drive=disk{i},disable-legacy=on").into());
        }
        args.push("-kernel".into());
        args.push(xen.into());
        args.push("-append".into());
        args.push(self.xen_cmdline.clone().into());
        args.push("-initrd".into());
        args.push(self.modules_arg()?);
        Ok(args)
    }

    /// A [`Command`] running QEMU with [`QemuConfig::args`]; stdio is left to the caller.
    pub fn command(&self) -> Result<Command, ConfigError> {
        let mut cmd = Command::new(qemu_binary());
        cmd.args(self.args()?);
        Ok(cmd)
    }
}

/// Why a [`QemuConfig`] cannot be turned into a command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConfigError {
    /// QEMU's multiboot loader splits a module string at its first space, so a path with a
    /// space cannot be passed.
    PathWithSpace(PathBuf),
    /// The path is not valid UTF-8.
    NonUtf8Path(PathBuf),
    /// `-icount` only exists under TCG.
    IcountNeedsTcg,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::PathWithSpace(p) => write!(
                f,
                "{}: QEMU's multiboot loader cannot take a path containing a space; \
                 copy or link the file elsewhere",
                p.display()
            ),
            ConfigError::NonUtf8Path(p) => write!(f, "{}: path is not UTF-8", p.display()),
            ConfigError::IcountNeedsTcg => f.write_str("--icount needs TCG (--accel tcg)"),
        }
    }
}

impl std::error::Error for ConfigError {}

fn plain_path(path: &Path) -> Result<&str, ConfigError> {
    path.to_str()
        .ok_or_else(|| ConfigError::NonUtf8Path(path.to_owned()))
}

/// One `-initrd` entry: `"path args"`, with commas doubled as QEMU's option parser wants.
fn module_string(path: &Path, args: &str) -> Result<String, ConfigError> {
    let p = plain_path(path)?;
    if p.contains(char::is_whitespace) {
        return Err(ConfigError::PathWithSpace(path.to_owned()));
    }
    let mut s = p.replace(',', ",,");
    let args = args.trim();
    if !args.is_empty() {
        s.push(' ');
        s.push_str(&args.replace(',', ",,"));
    }
    Ok(s)
}

/// How a machine ended, read from QEMU's exit status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitKind {
    /// dom0 powered the machine off (the hypervisor wrote 0x10 to isa-debug-exit: status 33).
    PoweredOff,
    /// The machine was reset (status 0 under `-no-reboot`), e.g. dom0 asked to reboot.
    Reset,
    /// A reset that QEMU logged as a triple fault: the hypervisor itself died.
    TripleFault,
    /// The hypervisor panicked (it wrote 0x1f: status 63).
    Panic,
    /// Any other exit status (QEMU itself failed, e.g. status 1 for a bad option).
    Other(i32),
    /// QEMU was killed by this signal (e.g. by the harness after a timeout).
    Signal(i32),
}

impl ExitKind {
    /// Classifies an exit status. `triple_fault` says whether QEMU's reset log saw one.
    pub fn from_code(code: Option<i32>, signal: Option<i32>, triple_fault: bool) -> Self {
        const POWEROFF: i32 = debug_exit_status(DEBUG_EXIT_POWEROFF);
        const PANIC: i32 = debug_exit_status(DEBUG_EXIT_PANIC);
        match code {
            Some(0) if triple_fault => ExitKind::TripleFault,
            Some(0) => ExitKind::Reset,
            Some(POWEROFF) => ExitKind::PoweredOff,
            Some(PANIC) => ExitKind::Panic,
            Some(other) => ExitKind::Other(other),
            None => ExitKind::Signal(signal.unwrap_or(0)),
        }
    }

    /// Classifies a [`std::process::ExitStatus`].
    pub fn from_status(status: ExitStatus, triple_fault: bool) -> Self {
        #[cfg(unix)]
        let signal = std::os::unix::process::ExitStatusExt::signal(&status);
        #[cfg(not(unix))]
        let signal = None;
        Self::from_code(status.code(), signal, triple_fault)
    }

    /// Whether `cargo xtask run` counts this ending as success: the guest asked for it.
    pub fn is_success(self) -> bool {
        matches!(self, ExitKind::PoweredOff | ExitKind::Reset)
    }
}

impl fmt::Display for ExitKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitKind::PoweredOff => f.write_str("machine powered off"),
            ExitKind::Reset => f.write_str("machine reset"),
            ExitKind::TripleFault => f.write_str("triple fault (machine reset by the CPU)"),
            ExitKind::Panic => f.write_str("hypervisor panic"),
            ExitKind::Other(code) => write!(f, "QEMU exited with status {code}"),
            ExitKind::Signal(sig) => write!(f, "QEMU killed by signal {sig}"),
        }
    }
}

/// Whether a `-d cpu_reset` log records a triple fault.
pub fn log_has_triple_fault(log: &str) -> bool {
    log.lines().any(|l| l.trim() == "Triple fault")
}

/// Reads a `-d cpu_reset` log, if it exists, and says whether it records a triple fault.
pub fn reset_log_has_triple_fault(path: &Path) -> bool {
    std::fs::read(path)
        .map(|bytes| log_has_triple_fault(&String::from_utf8_lossy(&bytes)))
        .unwrap_or(false)
}

/// A QEMU version number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version {
    /// Major version.
    pub major: u32,
    /// Minor version.
    pub minor: u32,
    /// Micro version.
    pub micro: u32,
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.micro)
    }
}

/// Parses the first line of `qemu-system-x86_64 --version`
/// (`QEMU emulator version 10.0.2 (Debian 1:10.0.2+ds-2+deb13u1~bpo12+1)`).
pub fn parse_version(text: &str) -> Option<Version> {
    let rest = text.split("version").nth(1)?;
    let word = rest.split_whitespace().next()?;
    let mut parts = word
        .split(|c: char| !c.is_ascii_digit())
        .map(|p| p.parse::<u32>().ok());
    let major = parts.next()??;
    let minor = parts.next().flatten().unwrap_or(0);
    let micro = parts.next().flatten().unwrap_or(0);
    Some(Version {
        major,
        minor,
        micro,
    })
}

/// How to get a recent QEMU on Debian bookworm (the CI's system), for error messages.
pub const INSTALL_HINT: &str = "\
On Debian bookworm, install QEMU 10 from bookworm-backports:
    echo 'deb http://deb.debian.org/debian bookworm-backports main' \\
        | sudo tee /etc/apt/sources.list.d/bookworm-backports.list
    sudo apt-get update
    sudo apt-get install -y -t bookworm-backports qemu-system-x86
(.ci/run does exactly this.) On other systems install qemu-system-x86_64 8.0 or newer
from the distribution, or point $RXEN_QEMU at a QEMU binary.";

/// Why QEMU cannot be used.
#[derive(Debug)]
pub enum QemuCheckError {
    /// The binary is not there.
    Missing(OsString),
    /// The binary ran but its version could not be read.
    Unreadable(OsString, String),
    /// Too old.
    TooOld(Version),
}

impl fmt::Display for QemuCheckError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            QemuCheckError::Missing(bin) => write!(
                f,
                "QEMU is not installed: `{}` was not found.\n\
                 rxen boots in QEMU (8.0 or newer) for `cargo xtask run` and its system tests.\n{}",
                bin.to_string_lossy(),
                INSTALL_HINT
            ),
            QemuCheckError::Unreadable(bin, why) => write!(
                f,
                "could not read the version of `{}`: {why}\n{}",
                bin.to_string_lossy(),
                INSTALL_HINT
            ),
            QemuCheckError::TooOld(v) => write!(
                f,
                "QEMU {v} is too old: rxen needs QEMU {MIN_QEMU} or newer and is tested with \
                 QEMU 10 (TCG's x86 emulation and the q35 machine changed in ways rxen's \
                 boot path and tests depend on; Debian bookworm's own 7.2 is not supported).\n{}",
                INSTALL_HINT
            ),
        }
    }
}

impl std::error::Error for QemuCheckError {}

/// Checks that QEMU is installed and recent enough, and returns its version.
pub fn check_qemu() -> Result<Version, QemuCheckError> {
    let bin = qemu_binary();
    let out = match Command::new(&bin).arg("--version").output() {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(QemuCheckError::Missing(bin))
        }
        Err(e) => return Err(QemuCheckError::Unreadable(bin, e.to_string())),
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let version = parse_version(&text).ok_or_else(|| {
        QemuCheckError::Unreadable(bin.clone(), format!("unexpected output {text:?}"))
    })?;
    if version < MIN_QEMU {
        return Err(QemuCheckError::TooOld(version));
    }
    Ok(version)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args_of(cfg: &QemuConfig) -> Vec<String> {
        cfg.args()
            .expect("valid config")
            .into_iter()
            .map(|a| a.into_string().expect("utf-8"))
            .collect()
    }

    fn value_after<'a>(args: &'a [String], opt: &str) -> Option<&'a str> {
        let i = args.iter().position(|a| a == opt)?;
        args.get(i + 1).map(String::as_str)
    }

    #[test]
    fn exit_status_mapping() {
        assert_eq!(debug_exit_status(DEBUG_EXIT_POWEROFF), 33);
        assert_eq!(debug_exit_status(DEBUG_EXIT_PANIC), 63);
        assert_eq!(
            ExitKind::from_code(Some(33), None, false),
            ExitKind::PoweredOff
        );
        assert_eq!(ExitKind::from_code(Some(0), None, false), ExitKind::Reset);
        assert_eq!(
            ExitKind::from_code(Some(0), None, true),
            ExitKind::TripleFault
        );
        assert_eq!(ExitKind::from_code(Some(63), None, false), ExitKind::Panic);
        assert_eq!(
            ExitKind::from_code(Some(1), None, false),
            ExitKind::Other(1)
        );
        assert_eq!(
            ExitKind::from_code(None, Some(9), false),
            ExitKind::Signal(9)
        );
        // A triple fault only matters for a reset; a power-off is a power-off.
        assert_eq!(
            ExitKind::from_code(Some(33), None, true),
            ExitKind::PoweredOff
        );
        assert!(ExitKind::PoweredOff.is_success());
        assert!(ExitKind::Reset.is_success());
        assert!(!ExitKind::TripleFault.is_success());
        assert!(!ExitKind::Panic.is_success());
        assert!(!ExitKind::Other(33 + 2).is_success());
        assert!(!ExitKind::Signal(9).is_success());
    }

    #[test]
    fn triple_fault_log() {
        let log = "CPU Reset (CPU 0)\nEAX=00000000\nCPU Reset (CPU 0)\nTriple fault\n";
        assert!(log_has_triple_fault(log));
        assert!(!log_has_triple_fault("CPU Reset (CPU 0)\nEAX=00000000\n"));
    }

    #[test]
    fn disks_are_modern_virtio_blk_devices() {
        let mut cfg = QemuConfig::new("/t/xen", "/t/dom0");
        cfg.disks = vec![Disk::new("/d/a.img"), Disk::parse("/d/b,c.img,ro")];
        let args = args_of(&cfg);
        let drives: Vec<&String> = args
            .iter()
            .zip(args.iter().skip(1))
            .filter(|(o, _)| *o == "-drive")
            .map(|(_, v)| v)
            .collect();
        assert_eq!(
            drives,
            [
                "file=/d/a.img,if=none,format=raw,id=disk0",
                "file=/d/b,,c.img,if=none,format=raw,id=disk1,readonly=on"
            ]
        );
        let blk: Vec<&String> = args
            .iter()
            .filter(|a| a.starts_with("virtio-blk-pci"))
            .collect();
        assert_eq!(
            blk,
            [
                "virtio-blk-pci,drive=disk0,disable-legacy=on",
                "virtio-blk-pci,drive=disk1,disable-legacy=on"
            ]
        );
        assert!(!Disk::parse("/d/x.img").read_only);
    }

    #[test]
    fn default_command_line() {
        let cfg = QemuConfig::new("/t/xen", "/t/dom0");
        let args = args_of(&cfg);
        assert_eq!(value_after(&args, "-machine"), Some("q35"));
        assert_eq!(value_after(&args, "-cpu"), Some("max,-x2apic"));
        assert_eq!(value_after(&args, "-m"), Some("512M"));
        assert_eq!(value_after(&args, "-accel"), Some("tcg"));
        assert_eq!(value_after(&args, "-serial"), Some("stdio"));
        assert_eq!(
            value_after(&args, "-device"),
            Some("isa-debug-exit,iobase=0xf4,iosize=0x04")
        );
        assert_eq!(value_after(&args, "-kernel"), Some("/t/xen"));
        assert_eq!(
            value_after(&args, "-append"),
            Some("console=com1 loglvl=all")
        );
        assert_eq!(value_after(&args, "-initrd"), Some("/t/dom0 console=hvc0"));
        assert!(args.iter().any(|a| a == "-no-reboot"));
        assert!(!args.iter().any(|a| a == "-icount"));
        assert!(!args.iter().any(|a| a == "-d"));
    }

    #[test]
    fn modules_and_escaping() {
        let mut cfg = QemuConfig::new("/t/xen", "/t/dom0");
        cfg.dom0_cmdline = "scenario=crash opt=a,b".into();
        cfg.ramdisk = Some("/t/ram,disk".into());
        assert_eq!(
            cfg.modules_arg().expect("valid"),
            OsString::from("/t/dom0 scenario=crash opt=a,,b,/t/ram,,disk")
        );
        cfg.dom0_cmdline = "  ".into();
        cfg.ramdisk = None;
        assert_eq!(cfg.modules_arg().expect("valid"), OsString::from("/t/dom0"));
        cfg.dom0_kernel = "/my kernels/vmlinuz".into();
        assert_eq!(
            cfg.modules_arg(),
            Err(ConfigError::PathWithSpace("/my kernels/vmlinuz".into()))
        );
    }

    #[test]
    fn icount_and_accel() {
        let mut cfg = QemuConfig::new("/t/xen", "/t/dom0");
        cfg.icount = true;
        let args = args_of(&cfg);
        assert_eq!(value_after(&args, "-icount"), Some("shift=0"));
        cfg.accel = Accel::Kvm;
        assert_eq!(cfg.args().err(), Some(ConfigError::IcountNeedsTcg));
        cfg.icount = false;
        cfg.reset_log = Some("/t/log".into());
        let args = args_of(&cfg);
        assert_eq!(value_after(&args, "-accel"), Some("kvm"));
        // The reset log only works under TCG: under KVM the triple fault never reaches QEMU's log.
        assert!(!args.iter().any(|a| a == "-d"));
        cfg.accel = Accel::Tcg;
        let args = args_of(&cfg);
        assert_eq!(value_after(&args, "-d"), Some("cpu_reset"));
        assert_eq!(value_after(&args, "-D"), Some("/t/log"));
        assert_eq!("kvm".parse::<Accel>(), Ok(Accel::Kvm));
        assert_eq!("tcg".parse::<Accel>(), Ok(Accel::Tcg));
        assert!("hvf".parse::<Accel>().is_err());
    }

    #[test]
    fn versions() {
        let v = |major, minor, micro| Version {
            major,
            minor,
            micro,
        };
        assert_eq!(
            parse_version("QEMU emulator version 10.0.2 (Debian 1:10.0.2+ds-2+deb13u1~bpo12+1)\n"),
            Some(v(10, 0, 2))
        );
        assert_eq!(
            parse_version("QEMU emulator version 7.2.15 (Debian 1:7.2+dfsg-7+deb12u12)"),
            Some(v(7, 2, 15))
        );
        assert_eq!(parse_version("QEMU emulator version 8.1"), Some(v(8, 1, 0)));
        assert_eq!(parse_version("no such thing"), None);
        assert!(v(7, 2, 15) < MIN_QEMU);
        assert!(v(8, 0, 0) >= MIN_QEMU);
        assert!(v(10, 0, 2) >= MIN_QEMU);
    }
}
