//! A machine under test: QEMU running rxen headless, driven through its serial console.
//!
//! QEMU's COM1 is its standard input and output, both pipes. A reader thread collects what
//! the machine prints (and echoes each line to the test's output, which libtest shows when
//! a test fails); the test waits for strings with [`Machine::expect`], types with
//! [`Machine::send_line`] and ends with [`Machine::wait_exit`], which reads QEMU's exit
//! status as [`ExitKind`]. Every wait has a timeout, and dropping a `Machine` kills QEMU,
//! so a hung guest fails its test instead of hanging the run.

use std::fmt;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::qemu::{self, Accel, ConfigError, ExitKind, QemuConfig};

/// File name of dom0's ramdisk as `cargo xtask build` packs it, next to the dom0 image.
pub const DOM0_RAMDISK_FILE: &str = "dom0-ramdisk.cpio";

/// How many lines of output an error shows.
const TAIL_LINES: usize = 40;

/// What to boot.
#[derive(Clone, Debug)]
pub struct Config {
    /// The hypervisor image.
    pub xen: PathBuf,
    /// The hypervisor's command line.
    pub xen_cmdline: String,
    /// The machine's RAM in MiB (default 512).
    pub memory_mib: u32,
    /// The kernel booted as dom0 (rxen's dom0, a test guest, or any Xen PV kernel).
    pub dom0_kernel: PathBuf,
    /// dom0's command line; a test guest reads its scenario from it.
    pub dom0_cmdline: String,
    /// dom0's ramdisk, if any.
    pub ramdisk: Option<PathBuf>,
    /// Longest the machine may live; every wait ends by then at the latest.
    pub timeout: Duration,
    /// The accelerator; tests use TCG so that they behave the same everywhere.
    pub accel: Accel,
    /// QEMU's `-icount shift=0` (deterministic virtual time).
    pub icount: bool,
    /// Echo the serial output, line by line, to this process's stdout.
    pub echo: bool,
    /// Disk images offered as virtio-blk devices.
    pub disks: Vec<qemu::Disk>,
}

impl Config {
    /// The default configuration for booting `dom0_kernel` on `xen`: default command
    /// lines, TCG, a 300 s lifetime (scaled by `$RXEN_TIMEOUT_SCALE`).
    pub fn new(xen: impl Into<PathBuf>, dom0_kernel: impl Into<PathBuf>) -> Self {
        Config {
            xen: xen.into(),
            xen_cmdline: qemu::DEFAULT_XEN_CMDLINE.to_owned(),
            memory_mib: 512,
            dom0_kernel: dom0_kernel.into(),
            dom0_cmdline: qemu::DEFAULT_DOM0_CMDLINE.to_owned(),
            ramdisk: None,
            timeout: scaled(Duration::from_secs(300)),
            accel: Accel::Tcg,
            icount: false,
            echo: true,
            disks: Vec::new(),
        }
    }

    /// rxen's dom0 on rxen with its ramdisk (the `xl` configs and the domU kernel), images
    /// from the environment (see [`Images::from_env`]).
    pub fn dom0() -> Self {
        let images = Images::get();
        let mut cfg = Config::new(images.xen, images.dom0);
        cfg.ramdisk = images.dom0_ramdisk;
        cfg
    }

    /// The test guest booted as dom0 with `scenario=<scenario>` on its command line.
    pub fn test_guest(scenario: &str) -> Self {
        let images = Images::get();
        let mut cfg = Config::new(images.xen, images.test_guest);
        cfg.dom0_cmdline = format!("scenario={scenario}");
        cfg
    }

    fn qemu(&self, reset_log: PathBuf) -> QemuConfig {
        QemuConfig {
            xen: self.xen.clone(),
            xen_cmdline: self.xen_cmdline.clone(),
            dom0_kernel: self.dom0_kernel.clone(),
            dom0_cmdline: self.dom0_cmdline.clone(),
            ramdisk: self.ramdisk.clone(),
            accel: self.accel,
            icount: self.icount,
            memory_mib: self.memory_mib,
            reset_log: Some(reset_log),
            disks: self.disks.clone(),
        }
    }
}

/// The images `cargo xtask build` makes, as `cargo xtask test` passes them to the tests.
#[derive(Clone, Debug)]
pub struct Images {
    /// `$RXEN_XEN`: the hypervisor.
    pub xen: PathBuf,
    /// `$RXEN_DOM0`: rxen's dom0 kernel.
    pub dom0: PathBuf,
    /// `$RXEN_TEST_GUEST`: the test guest kernel.
    pub test_guest: PathBuf,
    /// `$RXEN_DOM0_RAMDISK`: dom0's ramdisk (example configs, the domU kernel); if unset,
    /// the `dom0-ramdisk.cpio` that `cargo xtask build` packs next to the dom0 image, if
    /// there is one.
    pub dom0_ramdisk: Option<PathBuf>,
}

impl Images {
    /// Reads `RXEN_XEN`, `RXEN_DOM0` and `RXEN_TEST_GUEST`; says what is wrong if one is
    /// missing or names no file.
    pub fn from_env() -> std::result::Result<Images, String> {
        let var = |name: &str| -> std::result::Result<PathBuf, String> {
            let path = std::env::var_os(name).ok_or_else(|| {
                format!(
                    "${name} is not set. The system tests boot the images that xtask builds: \
                     run them through `cargo xtask test` (or set RXEN_XEN, RXEN_DOM0 and \
                     RXEN_TEST_GUEST to the paths `cargo xtask build` prints)."
                )
            })?;
            let path = PathBuf::from(path);
            if !path.is_file() {
                return Err(format!(
                    "${name} = {} is not a file; run `cargo xtask build`",
                    path.display()
                ));
            }
            Ok(path)
        };
        let dom0 = var("RXEN_DOM0")?;
        let dom0_ramdisk = match std::env::var_os("RXEN_DOM0_RAMDISK") {
            Some(_) => Some(var("RXEN_DOM0_RAMDISK")?),
            None => Some(dom0.with_file_name(DOM0_RAMDISK_FILE)).filter(|p| p.is_file()),
        };
        Ok(Images {
            xen: var("RXEN_XEN")?,
            dom0,
            test_guest: var("RXEN_TEST_GUEST")?,
            dom0_ramdisk,
        })
    }

    /// [`Images::from_env`], panicking with its message: a system test run outside
    /// `cargo xtask test` must fail loudly, never pass without having booted anything.
    pub fn get() -> Images {
        match Images::from_env() {
            Ok(images) => images,
            Err(why) => panic!("{why}"),
        }
    }
}

/// `d` multiplied by `$RXEN_TIMEOUT_SCALE` (default 1), for slow or busy machines.
pub fn scaled(d: Duration) -> Duration {
    let scale = std::env::var("RXEN_TIMEOUT_SCALE")
        .ok()
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s > 0.0)
        .unwrap_or(1.0);
    d.mul_f64(scale)
}

/// Why a wait on the machine failed.
pub enum Error {
    /// The configuration cannot be expressed as a QEMU command line.
    Config(ConfigError),
    /// QEMU is missing, too old, or could not be started.
    Qemu(String),
    /// Writing to the serial console failed.
    Io(String),
    /// The awaited thing did not happen in time.
    Timeout {
        /// What was awaited.
        waiting_for: String,
        /// How long.
        after: Duration,
        /// The last lines of output.
        tail: String,
    },
    /// QEMU exited while something else was awaited.
    Exited {
        /// What was awaited.
        waiting_for: String,
        /// How QEMU ended.
        exit: ExitKind,
        /// The last lines of output.
        tail: String,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Config(e) => write!(f, "bad machine configuration: {e}"),
            Error::Qemu(e) => write!(f, "{e}"),
            Error::Io(e) => write!(f, "serial console: {e}"),
            Error::Timeout {
                waiting_for,
                after,
                tail,
            } => write!(
                f,
                "timed out after {:.1} s waiting for {waiting_for}; last output:\n{tail}",
                after.as_secs_f64()
            ),
            Error::Exited {
                waiting_for,
                exit,
                tail,
            } => write!(
                f,
                "QEMU ended ({exit}) while waiting for {waiting_for}; last output:\n{tail}"
            ),
        }
    }
}

// Debug is what libtest prints for a test returning `Err`: make it the readable message.
impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl std::error::Error for Error {}

/// Result of a harness operation.
pub type Result<T> = std::result::Result<T, Error>;

/// Output collected by a reader thread.
#[derive(Default)]
struct Output {
    bytes: Vec<u8>,
    eof: bool,
}

#[derive(Default)]
struct Stream {
    out: Mutex<Output>,
    grew: Condvar,
}

impl Stream {
    fn lock(&self) -> MutexGuard<'_, Output> {
        // A reader thread that panicked leaves consistent data behind: keep using it.
        self.out.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// One running QEMU.
pub struct Machine {
    child: Child,
    stdin: Option<ChildStdin>,
    serial: Arc<Stream>,
    stderr: Arc<Stream>,
    readers: Vec<JoinHandle<()>>,
    /// Serial output before this offset has been consumed by `expect`.
    cursor: usize,
    started: Instant,
    deadline: Instant,
    reset_log: PathBuf,
    exit: Option<ExitKind>,
}

impl Machine {
    /// Starts QEMU. Fails if QEMU is missing or too old, or the configuration is invalid.
    pub fn boot(config: Config) -> Result<Machine> {
        static QEMU_OK: OnceLock<std::result::Result<(), String>> = OnceLock::new();
        QEMU_OK
            .get_or_init(|| qemu::check_qemu().map(|_| ()).map_err(|e| e.to_string()))
            .clone()
            .map_err(Error::Qemu)?;

        static SERIAL: AtomicUsize = AtomicUsize::new(0);
        let n = SERIAL.fetch_add(1, Ordering::Relaxed);
        let reset_log =
            std::env::temp_dir().join(format!("rxen-{}-{n}-cpu_reset.log", std::process::id()));
        let mut cmd = config
            .qemu(reset_log.clone())
            .command()
            .map_err(Error::Config)?;
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let started = Instant::now();
        let mut child = cmd
            .spawn()
            .map_err(|e| Error::Qemu(format!("cannot start QEMU: {e}")))?;
        let serial = Arc::new(Stream::default());
        let stderr = Arc::new(Stream::default());
        let mut readers = Vec::new();
        if let Some(out) = child.stdout.take() {
            let echo = config.echo.then_some("");
            readers.push(spawn_reader(out, Arc::clone(&serial), echo));
        }
        if let Some(err) = child.stderr.take() {
            let echo = config.echo.then_some("qemu: ");
            readers.push(spawn_reader(err, Arc::clone(&stderr), echo));
        }
        Ok(Machine {
            stdin: child.stdin.take(),
            child,
            serial,
            stderr,
            readers,
            cursor: 0,
            started,
            deadline: started + config.timeout,
            reset_log,
            exit: None,
        })
    }

    /// Time since QEMU was started.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Everything the serial console printed so far (carriage returns removed).
    pub fn output(&self) -> String {
        clean(&self.serial.lock().bytes)
    }

    /// Waits until `pattern` appears in output not yet consumed, and returns that output up
    /// to and including the match (carriage returns removed). Later calls search after it.
    pub fn expect(&mut self, pattern: &str, timeout: Duration) -> Result<String> {
        let waiting_for = format!("{pattern:?}");
        let begin = Instant::now();
        let deadline = self.deadline.min(begin + scaled(timeout));
        let needle = pattern.as_bytes();
        let mut out = self.serial.lock();
        loop {
            if let Some(pos) = find(&out.bytes[self.cursor..], needle) {
                let end = self.cursor + pos + needle.len();
                let text = clean(&out.bytes[self.cursor..end]);
                self.cursor = end;
                return Ok(text);
            }
            if out.eof {
                drop(out);
                return Err(self.exited_error(waiting_for));
            }
            let now = Instant::now();
            if now >= deadline {
                drop(out);
                return Err(self.timeout_error(waiting_for, begin.elapsed()));
            }
            out = self
                .serial
                .grew
                .wait_timeout(out, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Waits for a whole line containing `pattern` and returns it (without line end).
    pub fn expect_line(&mut self, pattern: &str, timeout: Duration) -> Result<String> {
        let begin = Instant::now();
        let head = self.expect(pattern, timeout)?;
        let rest = self.expect("\n", timeout.saturating_sub(begin.elapsed()))?;
        let start = head.rfind('\n').map_or(0, |i| i + 1);
        Ok(format!("{}{}", &head[start..], rest.trim_end_matches('\n')))
    }

    /// Types `line` and Enter (`\n`) on the serial console.
    pub fn send_line(&mut self, line: &str) -> Result<()> {
        self.send(format!("{line}\n").as_bytes())
    }

    /// Types raw bytes on the serial console.
    pub fn send(&mut self, bytes: &[u8]) -> Result<()> {
        let stdin = self
            .stdin
            .as_mut()
            .ok_or_else(|| Error::Io("serial input already closed".into()))?;
        stdin
            .write_all(bytes)
            .and_then(|()| stdin.flush())
            .map_err(|e| Error::Io(e.to_string()))
    }

    /// Whether QEMU is still running.
    pub fn is_running(&mut self) -> bool {
        self.poll_exit().is_none()
    }

    /// Checks that QEMU keeps running for `period` (e.g. a machine told not to reboot).
    pub fn expect_running_for(&mut self, period: Duration) -> Result<()> {
        let end = Instant::now() + period;
        while Instant::now() < end {
            if self.poll_exit().is_some() {
                return Err(self.exited_error(format!(
                    "the machine to keep running for {:.1} s",
                    period.as_secs_f64()
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// Waits for QEMU to exit and says how it ended.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<ExitKind> {
        let begin = Instant::now();
        let deadline = self.deadline.min(begin + scaled(timeout));
        loop {
            if let Some(kind) = self.poll_exit() {
                return Ok(kind);
            }
            if Instant::now() >= deadline {
                return Err(self.timeout_error("QEMU to exit".into(), begin.elapsed()));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Stops QEMU now (also done on drop).
    pub fn kill(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if self.exit.is_none() {
            // The process may have exited already; either way it is gone afterwards.
            let _ = self.child.kill();
            if let Ok(status) = self.child.wait() {
                self.exit = Some(ExitKind::from_status(status, false));
            }
        }
        self.stdin = None;
        self.join_readers();
    }

    /// Reaps QEMU if it has exited; once it has, drains the readers so that the output is
    /// complete.
    fn poll_exit(&mut self) -> Option<ExitKind> {
        if self.exit.is_none() {
            if let Ok(Some(status)) = self.child.try_wait() {
                let triple = qemu::reset_log_has_triple_fault(&self.reset_log);
                self.exit = Some(ExitKind::from_status(status, triple));
                self.join_readers();
            }
        }
        self.exit
    }

    fn join_readers(&mut self) {
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
    }

    /// The error for QEMU having ended (or ending: its output is closed) while waiting.
    fn exited_error(&mut self, waiting_for: String) -> Error {
        // Output closes just before the process is gone: give it a moment to be reaped.
        let give_up = Instant::now() + Duration::from_secs(5);
        let exit = loop {
            if let Some(kind) = self.poll_exit() {
                break kind;
            }
            if Instant::now() >= give_up {
                self.stop();
                break self.exit.unwrap_or(ExitKind::Signal(9));
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        Error::Exited {
            waiting_for,
            exit,
            tail: self.tail(),
        }
    }

    fn timeout_error(&self, waiting_for: String, after: Duration) -> Error {
        Error::Timeout {
            waiting_for,
            after,
            tail: self.tail(),
        }
    }

    /// The last [`TAIL_LINES`] lines of serial output, and QEMU's own messages if any.
    fn tail(&self) -> String {
        let mut s = last_lines(&self.output(), TAIL_LINES);
        let err = clean(&self.stderr.lock().bytes);
        if !err.trim().is_empty() {
            s.push_str("\n--- QEMU stderr ---\n");
            s.push_str(&last_lines(&err, TAIL_LINES));
        }
        s
    }
}

impl Drop for Machine {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_file(&self.reset_log);
    }
}

/// Copies `src` into `stream` until EOF, echoing complete lines with `prefix` if asked.
fn spawn_reader(
    mut src: impl Read + Send + 'static,
    stream: Arc<Stream>,
    echo: Option<&'static str>,
) -> JoinHandle<()> {
    // `thread::spawn` carries libtest's output capture over, so echoed lines land in the
    // test's own output.
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        let mut line = Vec::new();
        loop {
            let n = match src.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let chunk = &buf[..n];
            if let Some(prefix) = echo {
                for &b in chunk {
                    if b == b'\n' {
                        println!("{prefix}{}", clean(&line));
                        line.clear();
                    } else {
                        line.push(b);
                    }
                }
            }
            stream.lock().bytes.extend_from_slice(chunk);
            stream.grew.notify_all();
        }
        if let Some(prefix) = echo {
            if !line.is_empty() {
                println!("{prefix}{}", clean(&line));
            }
        }
        stream.lock().eof = true;
        stream.grew.notify_all();
    })
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return Some(0);
    }
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Bytes as text without carriage returns (the console sends CR LF).
fn clean(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).replace('\r', "")
}

fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn helpers() {
        assert_eq!(find(b"abc dom0# ", b"dom0# "), Some(4));
        assert_eq!(find(b"abc", b"abcd"), None);
        assert_eq!(clean(b"a\r\nb\r\n"), "a\nb\n");
        assert_eq!(last_lines("1\n2\n3\n", 2), "2\n3");
        assert_eq!(last_lines("1", 5), "1");
    }

    #[test]
    fn missing_images_are_explained() {
        // Only meaningful when not run under xtask, which sets the variables.
        if std::env::var_os("RXEN_XEN").is_none() {
            let err = Images::from_env().expect_err("no images in the environment");
            assert!(err.contains("cargo xtask test"), "{err}");
        }
    }
}
