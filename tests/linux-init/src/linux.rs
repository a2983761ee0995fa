//! The program proper: Linux system calls, the entry point and the block check.

use crate::params::{self, BlkTest, MAX_SECTORS};
use core::fmt::{self, Write};

// x86_64 Linux system call numbers.
const SYS_WRITE: u64 = 1;
const SYS_OPEN: u64 = 2;
const SYS_CLOSE: u64 = 3;
const SYS_IOCTL: u64 = 16;
const SYS_PREAD64: u64 = 17;
const SYS_PWRITE64: u64 = 18;
const SYS_NANOSLEEP: u64 = 35;
const SYS_FSYNC: u64 = 74;
const SYS_MKDIR: u64 = 83;
const SYS_SYNC: u64 = 162;
const SYS_MOUNT: u64 = 165;
const SYS_REBOOT: u64 = 169;
const SYS_FINIT_MODULE: u64 = 313;

const O_RDONLY: u64 = 0;
const O_RDWR: u64 = 2;
const O_DIRECT: u64 = 0o40000;
const O_CLOEXEC: u64 = 0o2000000;
/// `BLKGETSIZE64`: the device's size in bytes.
const BLKGETSIZE64: u64 = 0x8008_1272;
/// `BLKDISCARD`: discard `[start, len]` bytes.
const BLKDISCARD: u64 = 0x1277;

/// One system call with up to five arguments: the raw result (negative errno on failure).
///
/// # Safety
/// The arguments must be what call `nr` expects; pointers must be valid for it.
unsafe fn syscall(nr: u64, a: [u64; 5]) -> i64 {
    let ret: i64;
    // SAFETY: the caller vouches for the arguments; `syscall` clobbers rcx and r11 only.
    unsafe {
        core::arch::asm!(
            "syscall",
            inlateout("rax") nr as i64 => ret,
            in("rdi") a[0],
            in("rsi") a[1],
            in("rdx") a[2],
            in("r10") a[3],
            in("r8") a[4],
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack)
        );
    }
    ret
}

/// A NUL-terminated path's address.
fn cstr(s: &[u8]) -> u64 {
    debug_assert_eq!(s.last(), Some(&0));
    s.as_ptr() as u64
}

fn open(path: &[u8], flags: u64) -> i64 {
    // SAFETY: `path` is NUL-terminated and lives across the call.
    unsafe { syscall(SYS_OPEN, [cstr(path), flags | O_CLOEXEC, 0, 0, 0]) }
}

fn close(fd: i64) {
    // SAFETY: closing a descriptor we own.
    unsafe { syscall(SYS_CLOSE, [fd as u64, 0, 0, 0, 0]) };
}

fn sleep_ms(ms: u64) {
    let ts = [ms / 1000, (ms % 1000) * 1_000_000];
    // SAFETY: a valid timespec; no remainder wanted.
    unsafe { syscall(SYS_NANOSLEEP, [ts.as_ptr() as u64, 0, 0, 0, 0]) };
}

/// Where the output goes (the console once /dev is mounted; fd 1 if the kernel opened one).
static mut OUT_FD: i64 = 1;

struct Console;

impl Write for Console {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        // SAFETY: one thread; OUT_FD is only written during start-up.
        let fd = unsafe { OUT_FD };
        let mut b = s.as_bytes();
        while !b.is_empty() {
            // SAFETY: writing from a live buffer.
            let n = unsafe {
                syscall(
                    SYS_WRITE,
                    [fd as u64, b.as_ptr() as u64, b.len() as u64, 0, 0],
                )
            };
            if n <= 0 {
                return Err(fmt::Error);
            }
            b = &b[n as usize..];
        }
        Ok(())
    }
}

macro_rules! say {
    ($($arg:tt)*) => {{
        let _ = writeln!(Console, "linux-init: {}", format_args!($($arg)*));
    }};
}

fn power_off() -> ! {
    // SAFETY: sync and reboot(LINUX_REBOOT_CMD_POWER_OFF) with the magic numbers; PID 1
    // may do this.
    unsafe {
        syscall(SYS_SYNC, [0; 5]);
        syscall(SYS_REBOOT, [0xfee1_dead, 672_274_793, 0x4321_fedc, 0, 0]);
    }
    loop {
        sleep_ms(1000);
    }
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    say!("FAIL panic: {info}");
    power_off()
}

core::arch::global_asm!(
    ".globl _start",
    "_start:",
    "mov rdi, rsp",
    "and rsp, -16",
    "call {main}",
    "ud2",
    main = sym start,
);

/// The 4 KiB-aligned data buffer (`O_DIRECT` needs aligned memory).
#[repr(C, align(4096))]
struct Buffer([u8; MAX_SECTORS as usize * 512]);

static mut BUFFER: Buffer = Buffer([0; MAX_SECTORS as usize * 512]);

/// Entry from `_start` with the initial stack: argc, argv..., NULL, envp..., NULL.
extern "C" fn start(sp: *const u64) -> ! {
    // SAFETY: the System V process start-up layout: argc then the argv and envp arrays of
    // NUL-terminated strings, each ended by a NULL pointer.
    let test = unsafe { read_params(sp) };
    setup_console();
    say!("started");
    let verdict = match test {
        Ok(t) => run(t),
        Err(()) => Err(Failure::Params),
    };
    match verdict {
        Ok(report) => say!("PASS {report}"),
        Err(f) => say!("FAIL {f}"),
    }
    power_off()
}

/// # Safety
/// `sp` is the initial stack pointer Linux gave the process.
unsafe fn read_params(sp: *const u64) -> Result<BlkTest, ()> {
    let mut test = BlkTest::default();
    // SAFETY: per the start-up layout (see `start`).
    unsafe {
        let argc = *sp as usize;
        let mut env = sp.add(argc + 2) as *const *const u8;
        while !(*env).is_null() {
            let s = *env;
            let mut len = 0;
            while *s.add(len) != 0 && len < 4096 {
                len += 1;
            }
            if let Some(t) = params::parse(core::slice::from_raw_parts(s, len))? {
                test = t;
            }
            env = env.add(1);
        }
    }
    Ok(test)
}

fn setup_console() {
    // SAFETY: NUL-terminated strings; mkdir/mount of devtmpfs on /dev.
    unsafe {
        syscall(SYS_MKDIR, [cstr(b"/dev\0"), 0o755, 0, 0, 0]);
        syscall(
            SYS_MOUNT,
            [
                cstr(b"devtmpfs\0"),
                cstr(b"/dev\0"),
                cstr(b"devtmpfs\0"),
                0,
                0,
            ],
        );
    }
    let fd = open(b"/dev/console\0", O_RDWR);
    if fd >= 0 {
        // SAFETY: one thread, before any output.
        unsafe { OUT_FD = fd };
    }
}

/// Why the check failed.
enum Failure {
    Params,
    Module(i64),
    NoDisk,
    Size(i64),
    Io(&'static str, i64),
    Mismatch(usize),
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Params => write!(f, "bad blktest= (SEED,SECTOR,SECTORS)"),
            Failure::Module(e) => write!(f, "loading xen-blkfront.ko: errno {}", -e),
            Failure::NoDisk => write!(f, "/dev/xvda did not appear in 60 s"),
            Failure::Size(e) => write!(f, "BLKGETSIZE64: errno {}", -e),
            Failure::Io(what, e) => write!(f, "{what}: result {e}"),
            Failure::Mismatch(at) => write!(f, "read back differs at byte {at}"),
        }
    }
}

fn load_blkfront() -> Result<(), Failure> {
    let fd = open(b"/xen-blkfront.ko\0", O_RDONLY);
    if fd < 0 {
        return Err(Failure::Module(fd));
    }
    // SAFETY: finit_module(fd, "", 0).
    let r = unsafe { syscall(SYS_FINIT_MODULE, [fd as u64, cstr(b"\0"), 0, 0, 0]) };
    close(fd);
    if r < 0 {
        return Err(Failure::Module(r));
    }
    Ok(())
}

fn run(t: BlkTest) -> Result<Report, Failure> {
    load_blkfront()?;
    say!("xen-blkfront loaded");
    let mut fd = -1;
    for _ in 0..600 {
        fd = open(b"/dev/xvda\0", O_RDWR | O_DIRECT);
        if fd >= 0 {
            break;
        }
        sleep_ms(100);
    }
    if fd < 0 {
        return Err(Failure::NoDisk);
    }
    let mut size = 0u64;
    // SAFETY: BLKGETSIZE64 writes one u64.
    let r = unsafe {
        syscall(
            SYS_IOCTL,
            [fd as u64, BLKGETSIZE64, &mut size as *mut u64 as u64, 0, 0],
        )
    };
    if r < 0 {
        return Err(Failure::Size(r));
    }
    say!("/dev/xvda: {} sectors", size / 512);
    let len = t.sectors as usize * 512;
    let offset = t.sector * 512;
    // SAFETY: one thread; the only reference to the buffer.
    let buf = unsafe { &mut (&mut (*core::ptr::addr_of_mut!(BUFFER)).0)[..len] };
    blkfront::fill_pattern(t.seed, t.sector, buf);
    // SAFETY: pwrite64/pread64 from and into the live, aligned buffer.
    let w = unsafe {
        syscall(
            SYS_PWRITE64,
            [fd as u64, buf.as_ptr() as u64, len as u64, offset, 0],
        )
    };
    if w != len as i64 {
        return Err(Failure::Io("write", w));
    }
    // SAFETY: fsync on our descriptor (a cache flush for a block device).
    let s = unsafe { syscall(SYS_FSYNC, [fd as u64, 0, 0, 0, 0]) };
    if s != 0 {
        return Err(Failure::Io("fsync", s));
    }
    buf.fill(0);
    // SAFETY: as for the write.
    let rd = unsafe {
        syscall(
            SYS_PREAD64,
            [fd as u64, buf.as_mut_ptr() as u64, len as u64, offset, 0],
        )
    };
    if rd != len as i64 {
        return Err(Failure::Io("read", rd));
    }
    if let Some(at) = blkfront::check_pattern(t.seed, t.sector, buf) {
        return Err(Failure::Mismatch(at));
    }
    // The last sector too (blkback's end-of-disk arithmetic).
    let last = size.saturating_sub(4096);
    // SAFETY: as for the write; 4 KiB inside the buffer.
    let rl = unsafe {
        syscall(
            SYS_PREAD64,
            [fd as u64, buf.as_mut_ptr() as u64, 4096, last, 0],
        )
    };
    if rl != 4096 {
        return Err(Failure::Io("read of the last 4 KiB", rl));
    }
    // Discard a range past the pattern (blkback's BLKIF_OP_DISCARD).
    let range = [offset + len as u64, 1 << 20];
    // SAFETY: BLKDISCARD reads two u64s.
    let d = unsafe {
        syscall(
            SYS_IOCTL,
            [fd as u64, BLKDISCARD, range.as_ptr() as u64, 0, 0],
        )
    };
    close(fd);
    Ok(Report {
        test: t,
        disk_sectors: size / 512,
        discard: d,
    })
}

/// What passed.
struct Report {
    test: BlkTest,
    disk_sectors: u64,
    discard: i64,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "xvda ({} sectors): wrote {} sectors at {} (seed {}), flushed, read back equal; discard {}",
            self.disk_sectors,
            self.test.sectors,
            self.test.sector,
            self.test.seed,
            if self.discard == 0 { "ok" } else { "refused" }
        )
    }
}

/// No heap: nothing here allocates (blkfront's pattern helpers work on slices), but the
/// crate links `alloc`, which needs an allocator. Any allocation fails.
struct NoHeap;

// SAFETY: returning null is always a valid answer (allocation failure).
unsafe impl core::alloc::GlobalAlloc for NoHeap {
    unsafe fn alloc(&self, _layout: core::alloc::Layout) -> *mut u8 {
        core::ptr::null_mut()
    }
    unsafe fn dealloc(&self, _ptr: *mut u8, _layout: core::alloc::Layout) {}
}

#[global_allocator]
static HEAP: NoHeap = NoHeap;
