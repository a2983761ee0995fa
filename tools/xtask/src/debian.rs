//! `cargo xtask debian-kernel`: fetch Debian's stock kernel and turn it into the ELF that
//! rxen boots as a PV dom0 or domU.
//!
//! Debian ships the kernel as a bzImage (`boot/vmlinuz-*` in `linux-image-6.1.0-N-amd64`,
//! the package the meta-package `linux-image-amd64` depends on). A bzImage is the x86 boot
//! protocol's setup code followed by a compressed `vmlinux`; Xen's PV loader
//! (`xg_dom_bzimageloader.c`) finds that payload through the setup header and decompresses
//! it. This module does the same offline, with `apt-get`, `dpkg-deb`, `tar` and `xz` (or
//! Python's `lzma` module), so that a test can hand the hypervisor a plain ELF.
//! The layout is in `../shared/ABI.md` §1.1.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::{exec, target_dir, Failure, Outcome};

/// The meta-package whose dependency names the current bookworm kernel.
const META_PACKAGE: &str = "linux-image-amd64";

/// The prefix of the bookworm (Debian 12) kernel packages: Linux 6.1, ABI 6.1.0-N.
const PACKAGE_PREFIX: &str = "linux-image-6.1.0-";

/// What `apt-get update` needs to know to find bookworm's kernel.
const APT_HINT: &str = "the apt sources need Debian bookworm's `main` component, e.g. \
`deb http://deb.debian.org/debian bookworm main` in /etc/apt/sources.list, then `apt-get update`";

/// The files `cargo xtask debian-kernel` leaves behind.
pub struct DebianKernel {
    /// The Debian package (e.g. `linux-image-6.1.0-56-amd64`).
    pub package: String,
    /// The extracted ELF.
    pub vmlinux: PathBuf,
    /// The package's bzImage (xz payload), as shipped, copied to `vmlinuz` beside the ELF.
    pub vmlinuz: PathBuf,
    /// The kernel's symbol map, to map addresses to symbols: Debian puts a stub in
    /// `boot/System.map-*` and the real one in the `-dbg` package, so only with `--dbg`.
    pub system_map: Option<PathBuf>,
    /// The unstripped `vmlinux` with DWARF (for `addr2line -i`), from the `-dbg` package.
    pub debug_vmlinux: Option<PathBuf>,
    /// The package's `boot/config-*`.
    pub config: Option<PathBuf>,
}

impl DebianKernel {
    pub fn print(&self) {
        println!("package    {}", self.package);
        if let Some(map) = &self.system_map {
            println!("System.map {}", map.display());
        }
        if let Some(config) = &self.config {
            println!("config     {}", config.display());
        }
        if let Some(debug) = &self.debug_vmlinux {
            println!("debug ELF  {}", debug.display());
        }
        println!("vmlinuz    {}", self.vmlinuz.display());
        println!("vmlinux    {}", self.vmlinux.display());
    }
}

/// The cache directory: `debian/` in Cargo's target directory.
fn cache_dir() -> PathBuf {
    target_dir().join("debian")
}

/// Fails unless `program` can be started (`--version` answers).
fn require_tool(program: &str, package: &str) -> Outcome {
    match Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
    {
        Ok(_) => Ok(()),
        Err(_) => Err(Failure::new(format!(
            "`{program}` is not installed (Debian package `{package}`)"
        ))),
    }
}

/// `cargo xtask debian-kernel`: download (once), unpack, extract; print the paths.
/// With `dbg`, also the `-dbg` package's System.map and unstripped vmlinux.
pub fn debian_kernel(package: Option<&str>, dbg: bool) -> Outcome<DebianKernel> {
    require_tool("apt-get", "apt")?;
    require_tool("dpkg-deb", "dpkg")?;
    require_tool("tar", "tar")?;
    let package = match package {
        Some(p) => p.to_owned(),
        None => resolve_package()?,
    };
    let dir = cache_dir();
    std::fs::create_dir_all(&dir)?;
    let deb = download(&dir, &package)?;

    // Only `boot/` is needed: the modules would be hundreds of MiB.
    let root = dir.join(&package);
    std::fs::create_dir_all(&root)?;
    unpack(&deb, &root, &["./boot"], false)?;
    let boot = root.join("boot");
    let vmlinuz = find_one(&boot, "vmlinuz-")?.ok_or_else(|| {
        Failure::new(format!(
            "{} has no boot/vmlinuz-*: is it a kernel image package?",
            deb.display()
        ))
    })?;
    let config = find_one(&boot, "config-")?;

    let image = std::fs::read(&vmlinuz)?;
    let payload =
        BzImage::parse(&image).map_err(|e| Failure::new(format!("{}: {e}", vmlinuz.display())))?;
    eprintln!(
        "xtask: {}: boot protocol {}.{:02}, setup_sects {}, {} payload at {:#x}, {} bytes",
        vmlinuz.display(),
        payload.version >> 8,
        payload.version & 0xff,
        payload.setup_sects,
        payload.compression.name(),
        payload.offset,
        payload.data.len(),
    );
    if payload.compression != Compression::Xz {
        return Err(Failure::new(format!(
            "{}: the payload is {}, only XZ (what Debian uses) is handled",
            vmlinuz.display(),
            payload.compression.name()
        )));
    }
    let elf = decompress_xz(payload.data)?;
    check_elf(&elf).map_err(|e| Failure::new(format!("the decompressed payload {e}")))?;
    let vmlinux = dir.join("vmlinux");
    // Write then rename: a half-written vmlinux is never left under the final name.
    let partial = dir.join("vmlinux.partial");
    std::fs::write(&partial, &elf)?;
    std::fs::rename(&partial, &vmlinux)?;
    // Beside the ELF, under fixed names, so that tests and notes can refer to them.
    let bzimage = dir.join("vmlinuz");
    std::fs::copy(&vmlinuz, &bzimage)?;
    let config = match config {
        Some(src) => {
            let dst = dir.join("config");
            std::fs::copy(&src, &dst)?;
            Some(dst)
        }
        None => None,
    };
    let (system_map, debug_vmlinux) = if dbg {
        let (map, elf) = debug_files(&dir, &package)?;
        (Some(map), Some(elf))
    } else {
        // A real map from an earlier `--dbg` (Debian's stub is one line of 83 bytes).
        let map = dir.join("System.map");
        if std::fs::metadata(&map).is_ok_and(|m| m.len() > 4096) {
            (
                Some(map),
                dir.join("vmlinux-dbg")
                    .is_file()
                    .then(|| dir.join("vmlinux-dbg")),
            )
        } else {
            eprintln!(
                "xtask: Debian's boot/System.map-* is a stub; `--dbg` fetches the real one \
                 (and an unstripped vmlinux) from {package}-dbg (~860 MB)"
            );
            (None, None)
        }
    };
    Ok(DebianKernel {
        package,
        vmlinux,
        vmlinuz: bzimage,
        system_map,
        debug_vmlinux,
        config,
    })
}

// Until `debian_domu_ramdisk` (main.rs) packs these instead of the ELF.
/// linuxdomu: `/etc/xen/debian.cfg`, Debian's kernel as shipped (the bzImage, whose xz
/// payload dom0's domain builder unpacks as Xen's libxc does) as a PV domU.
pub const DOMU_CFG: &str = "\
# Debian's stock kernel (cargo xtask debian-kernel) as a PV domU: packed only by
# `cargo xtask run --debian-domu`. `xl create /etc/xen/debian.cfg -c`
# The kernel is the package's bzImage; dom0 decompresses its xz payload.
name = \"debian\"
kernel = \"/boot/vmlinuz\"
memory = 128
vcpus = 1
extra = \"earlyprintk=xen console=hvc0 loglevel=8\"
on_crash = \"preserve\"
";

/// The files `--debian-domu` adds to dom0's ramdisk (archive path, contents): the bzImage
/// as `/boot/vmlinuz` and [`DOMU_CFG`] as `/etc/xen/debian.cfg`. Fetches the kernel with
/// [`debian_kernel`] unless `debian/vmlinuz` is already in the target directory. (The
/// extracted ELF is not packed: the bzImage is an eighth of its size and dom0 unpacks it.)
pub fn domu_ramdisk_files() -> Outcome<Vec<(&'static str, crate::ramdisk::Extra)>> {
    let mut vmlinuz = cache_dir().join("vmlinuz");
    if !vmlinuz.is_file() {
        vmlinuz = debian_kernel(None, false)?.vmlinuz;
    }
    Ok(vec![
        ("boot/vmlinuz", crate::ramdisk::Extra::File(vmlinuz)),
        (
            "etc/xen/debian.cfg",
            crate::ramdisk::Extra::Bytes(DOMU_CFG.as_bytes().to_vec()),
        ),
    ])
}

/// `apt-get download PACKAGE` into `dir`, unless a `PACKAGE_*.deb` is already there.
fn download(dir: &Path, package: &str) -> Outcome<PathBuf> {
    if let Some(deb) = cached_deb(dir, package)? {
        eprintln!("xtask: using the cached {}", deb.display());
        return Ok(deb);
    }
    exec(
        "apt-get download",
        Command::new("apt-get")
            .args(["download", package])
            .current_dir(dir),
    )
    .map_err(|f| Failure::new(format!("{}; {APT_HINT}", f.message)))?;
    cached_deb(dir, package)?.ok_or_else(|| {
        Failure::new(format!(
            "apt-get download succeeded but no {package}_*.deb is in {}",
            dir.display()
        ))
    })
}

/// The `-dbg` package's System.map and unstripped vmlinux, as `System.map` and
/// `vmlinux-dbg` in `dir`.
fn debug_files(dir: &Path, package: &str) -> Outcome<(PathBuf, PathBuf)> {
    let release = package
        .strip_prefix("linux-image-")
        .ok_or_else(|| Failure::new(format!("{package}: not a linux-image-* package")))?;
    let deb = download(dir, &format!("{package}-dbg"))?;
    let root = dir.join(format!("{package}-dbg"));
    std::fs::create_dir_all(&root)?;
    let map = format!("./usr/lib/debug/boot/System.map-{release}");
    let elf = format!("./usr/lib/debug/boot/vmlinux-{release}");
    // Both sit at the start of a 5 GiB archive: stop reading once they are out.
    unpack(&deb, &root, &[&map, &elf], true)?;
    let out_map = dir.join("System.map");
    let out_elf = dir.join("vmlinux-dbg");
    std::fs::rename(root.join(&map), &out_map)?;
    std::fs::rename(root.join(&elf), &out_elf)?;
    Ok((out_map, out_elf))
}

/// The bookworm kernel package that `linux-image-amd64` (its candidate version) depends on.
fn resolve_package() -> Outcome<String> {
    require_tool("apt-cache", "apt")?;
    eprintln!("xtask: $ apt-cache depends {META_PACKAGE}");
    let out = Command::new("apt-cache")
        .args(["depends", META_PACKAGE])
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| Failure::new(format!("cannot run apt-cache: {e}")))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() || text.trim().is_empty() {
        return Err(Failure::new(format!(
            "apt knows no `{META_PACKAGE}`: {APT_HINT}"
        )));
    }
    kernel_dependency(&text).ok_or_else(|| {
        Failure::new(format!(
            "`{META_PACKAGE}` does not depend on a {PACKAGE_PREFIX}*-amd64 package \
             (its candidate is not bookworm's: pinned to backports or a later release?): \
             {APT_HINT}, or name the package with --package\napt-cache said:\n{text}"
        ))
    })
}

/// The `linux-image-6.1.0-N-amd64` in `apt-cache depends` output.
fn kernel_dependency(depends: &str) -> Option<String> {
    depends.lines().find_map(|line| {
        let name = line.trim().strip_prefix("Depends:")?.trim();
        // An alternative (`|Depends:`) or a virtual package (`<name>`) is not it.
        let ok = name.starts_with(PACKAGE_PREFIX)
            && name.ends_with("-amd64")
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
        ok.then(|| name.to_owned())
    })
}

/// A `PACKAGE_*.deb` already in `dir` (the newest by name if several).
fn cached_deb(dir: &Path, package: &str) -> Outcome<Option<PathBuf>> {
    let prefix = format!("{package}_");
    let mut debs: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&prefix) && n.ends_with(".deb"))
        })
        .collect();
    debs.sort();
    Ok(debs.pop())
}

/// `dpkg-deb --fsys-tarfile DEB | tar -x MEMBERS`, into `root`.
///
/// With `first_only`, tar stops after the first copy of each member (`--occurrence`) and
/// closes the pipe, so dpkg-deb dying of SIGPIPE then is expected.
fn unpack(deb: &Path, root: &Path, members: &[&str], first_only: bool) -> Outcome {
    eprintln!(
        "xtask: $ dpkg-deb --fsys-tarfile {} | tar -x -C {}{} {}",
        deb.display(),
        root.display(),
        if first_only { " --occurrence=1" } else { "" },
        members.join(" ")
    );
    let mut dpkg = Command::new("dpkg-deb")
        .arg("--fsys-tarfile")
        .arg(deb)
        .stdout(Stdio::piped())
        .stderr(if first_only {
            Stdio::null()
        } else {
            Stdio::inherit()
        })
        .spawn()
        .map_err(|e| Failure::new(format!("cannot run dpkg-deb: {e}")))?;
    let tar_in = dpkg
        .stdout
        .take()
        .ok_or_else(|| Failure::new("dpkg-deb: no output pipe"))?;
    let mut tar_cmd = Command::new("tar");
    tar_cmd.arg("-x").arg("-C").arg(root);
    if first_only {
        tar_cmd.arg("--occurrence=1");
    }
    let tar = tar_cmd.args(members).stdin(tar_in).status();
    // The Command holds our copy of the pipe's read end: close it, or dpkg-deb never sees
    // the pipe break when tar stops early and blocks forever.
    drop(tar_cmd);
    let dpkg = dpkg.wait();
    let dpkg_ok = |s: &std::process::ExitStatus| s.success() || first_only;
    match (dpkg, tar) {
        (Ok(d), Ok(t)) if dpkg_ok(&d) && t.success() => Ok(()),
        (d, t) => Err(Failure::new(format!(
            "unpacking {} failed (dpkg-deb: {}, tar: {})",
            deb.display(),
            d.map_or_else(|e| e.to_string(), |s| s.to_string()),
            t.map_or_else(|e| e.to_string(), |s| s.to_string()),
        ))),
    }
}

/// The one file in `dir` whose name starts with `prefix`, if any.
fn find_one(dir: &Path, prefix: &str) -> Outcome<Option<PathBuf>> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(prefix))
        })
        .collect();
    found.sort();
    match found.len() {
        0 | 1 => Ok(found.pop()),
        _ => Err(Failure::new(format!(
            "{} has several {prefix}* files: {found:?}",
            dir.display()
        ))),
    }
}

/// The payload's compression, from its magic bytes (as Xen's bzImage loader tells them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    Xz,
    Gzip,
    Bzip2,
    Lzma,
    Lzo,
    Lz4,
    Zstd,
    Unknown,
}

impl Compression {
    fn detect(data: &[u8]) -> Self {
        const MAGICS: &[(&[u8], Compression)] = &[
            (b"\xfd7zXZ\x00", Compression::Xz),
            (b"\x1f\x8b", Compression::Gzip),
            (b"BZh", Compression::Bzip2),
            (b"\x5d\x00", Compression::Lzma),
            (b"\x89LZO", Compression::Lzo),
            (b"\x02\x21\x4c\x18", Compression::Lz4),
            (b"\x28\xb5\x2f\xfd", Compression::Zstd),
        ];
        MAGICS
            .iter()
            .find(|(magic, _)| data.starts_with(magic))
            .map_or(Compression::Unknown, |&(_, c)| c)
    }

    fn name(self) -> &'static str {
        match self {
            Compression::Xz => "XZ",
            Compression::Gzip => "gzip",
            Compression::Bzip2 => "bzip2",
            Compression::Lzma => "LZMA",
            Compression::Lzo => "LZO",
            Compression::Lz4 => "LZ4",
            Compression::Zstd => "zstd",
            Compression::Unknown => "of unknown compression",
        }
    }
}

/// The compressed kernel inside a bzImage, found through the setup header.
#[derive(Debug)]
pub struct BzImage<'a> {
    /// Boot protocol version (0x020f for Linux 6.1).
    pub version: u16,
    /// Setup sectors (after the boot sector), with 0 read as 4 as the boot protocol says.
    pub setup_sects: u32,
    /// File offset of the payload.
    pub offset: usize,
    /// The payload (`payload_length` bytes).
    pub data: &'a [u8],
    /// The payload's compression.
    pub compression: Compression,
}

impl<'a> BzImage<'a> {
    /// Offset of `setup_sects` (u8) in the setup header.
    const SETUP_SECTS: usize = 0x1f1;
    /// Offset of the `"HdrS"` magic.
    const MAGIC: usize = 0x202;
    /// Offset of the boot protocol version (u16).
    const VERSION: usize = 0x206;
    /// Offset of `payload_offset` (u32), from the start of the protected-mode code.
    const PAYLOAD_OFFSET: usize = 0x248;
    /// Offset of `payload_length` (u32).
    const PAYLOAD_LENGTH: usize = 0x24c;
    /// `payload_offset`/`payload_length` exist from boot protocol 2.08 on.
    const MIN_VERSION: u16 = 0x0208;

    /// Finds the payload; an error says what is wrong with the image.
    pub fn parse(image: &'a [u8]) -> Result<Self, String> {
        let u8_at = |at: usize| image.get(at).copied();
        let u16_at = |at: usize| {
            image
                .get(at..at + 2)
                .map(|b| u16::from_le_bytes([b[0], b[1]]))
        };
        let u32_at = |at: usize| {
            image
                .get(at..at + 4)
                .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        };
        if image.get(Self::MAGIC..Self::MAGIC + 4) != Some(b"HdrS") {
            return Err("not a bzImage (no \"HdrS\" at 0x202)".into());
        }
        let version = u16_at(Self::VERSION).ok_or("truncated setup header")?;
        if version < Self::MIN_VERSION {
            return Err(format!(
                "boot protocol {:#06x} is older than 2.08: no payload fields",
                version
            ));
        }
        let setup_sects = match u8_at(Self::SETUP_SECTS).ok_or("truncated setup header")? {
            0 => 4,
            n => u32::from(n),
        };
        let payload_offset = u32_at(Self::PAYLOAD_OFFSET).ok_or("truncated setup header")?;
        let payload_length = u32_at(Self::PAYLOAD_LENGTH).ok_or("truncated setup header")?;
        let offset = (setup_sects as usize + 1) * 512 + payload_offset as usize;
        let data = offset
            .checked_add(payload_length as usize)
            .and_then(|end| image.get(offset..end))
            .ok_or_else(|| {
                format!(
                    "payload [{offset:#x}, +{payload_length:#x}) runs past the end of the \
                     {}-byte image",
                    image.len()
                )
            })?;
        Ok(BzImage {
            version,
            setup_sects,
            offset,
            data,
            compression: Compression::detect(data),
        })
    }
}

/// Decompresses the first XZ stream of `data` with `xz`, else with Python's `lzma`.
///
/// The kernel's build appends the uncompressed size (4 bytes) after the XZ stream and
/// counts it in `payload_length`, so only the first stream is decoded and the rest ignored.
fn decompress_xz(data: &[u8]) -> Outcome<Vec<u8>> {
    let xz = Command::new("xz")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if xz {
        let mut cmd = Command::new("xz");
        cmd.args(["-d", "-c", "--single-stream"]);
        return filter("xz -dc --single-stream", &mut cmd, data);
    }
    eprintln!("xtask: `xz` is not installed (package xz-utils): using python3's lzma");
    let script = "import lzma,sys\n\
                  d=lzma.LZMADecompressor(lzma.FORMAT_XZ)\n\
                  sys.stdout.buffer.write(d.decompress(sys.stdin.buffer.read()))\n\
                  sys.exit(0 if d.eof else 'truncated XZ stream')\n";
    let mut cmd = Command::new("python3");
    cmd.args(["-c", script]);
    filter("python3 lzma", &mut cmd, data).map_err(|f| {
        Failure::new(format!(
            "{}; install xz-utils (`apt-get install xz-utils`)",
            f.message
        ))
    })
}

/// Runs `cmd` with `input` on its stdin; returns its stdout.
fn filter(what: &str, cmd: &mut Command, input: &[u8]) -> Outcome<Vec<u8>> {
    eprintln!("xtask: $ {what} <payload >vmlinux");
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| Failure::new(format!("cannot run {what}: {e}")))?;
    let mut stdin = child
        .stdin
        .take()
        .ok_or_else(|| Failure::new(format!("{what}: no input pipe")))?;
    // Feed from a thread: the output pipe must be drained at the same time.
    let input = input.to_vec();
    let feeder = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output()?;
    let fed = feeder
        .join()
        .map_err(|_| Failure::new(format!("{what}: the input thread panicked")))?;
    if !out.status.success() {
        return Err(Failure::new(format!("{what} failed ({})", out.status)));
    }
    // A filter that stops reading early (after the first stream) may break the pipe.
    if let Err(e) = fed {
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            return Err(Failure::new(format!("{what}: writing its input: {e}")));
        }
    }
    Ok(out.stdout)
}

/// Checks that `elf` is a 64-bit x86 ELF executable (what the PV loader takes).
fn check_elf(elf: &[u8]) -> Result<(), String> {
    if !elf.starts_with(b"\x7fELF") {
        return Err("is not an ELF file".into());
    }
    // EI_CLASS 2 = ELFCLASS64, EI_DATA 1 = little-endian, e_machine 62 = EM_X86_64.
    match (elf.get(4), elf.get(5), elf.get(18..20)) {
        (Some(2), Some(1), Some([62, 0])) => Ok(()),
        _ => Err("is not a little-endian x86_64 ELF64".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal bzImage: setup header fields and a payload after `setup_sects` sectors.
    fn bzimage(setup_sects: u8, version: u16, payload: &[u8], payload_offset: u32) -> Vec<u8> {
        let sects = if setup_sects == 0 { 4 } else { setup_sects };
        let start = (usize::from(sects) + 1) * 512 + payload_offset as usize;
        let mut img = vec![0u8; start];
        img[0x1f1] = setup_sects;
        img[0x202..0x206].copy_from_slice(b"HdrS");
        img[0x206..0x208].copy_from_slice(&version.to_le_bytes());
        img[0x248..0x24c].copy_from_slice(&payload_offset.to_le_bytes());
        img[0x24c..0x250].copy_from_slice(&(payload.len() as u32).to_le_bytes());
        img.extend_from_slice(payload);
        img.extend_from_slice(b"trailer");
        img
    }

    #[test]
    fn finds_the_payload() {
        let payload = b"\xfd7zXZ\x00stream+size";
        let img = bzimage(39, 0x020f, payload, 0x2cc);
        let bz = BzImage::parse(&img).expect("valid");
        assert_eq!(bz.version, 0x020f);
        assert_eq!(bz.setup_sects, 39);
        assert_eq!(bz.offset, 40 * 512 + 0x2cc);
        assert_eq!(bz.data, payload);
        assert_eq!(bz.compression, Compression::Xz);
        // setup_sects 0 means 4.
        let img = bzimage(0, 0x0208, b"\x1f\x8bgz", 0);
        let bz = BzImage::parse(&img).expect("valid");
        assert_eq!(bz.offset, 5 * 512);
        assert_eq!(bz.compression, Compression::Gzip);
    }

    #[test]
    fn refuses_bad_images() {
        assert!(BzImage::parse(b"\x7fELF").unwrap_err().contains("HdrS"));
        let img = bzimage(1, 0x0207, b"x", 0);
        assert!(BzImage::parse(&img).unwrap_err().contains("2.08"));
        let mut img = bzimage(1, 0x020f, b"payload", 0);
        img.truncate(img.len() - 10);
        assert!(BzImage::parse(&img).unwrap_err().contains("past the end"));
        let mut img = bzimage(1, 0x020f, b"payload", 0);
        img[0x24c..0x250].copy_from_slice(&u32::MAX.to_le_bytes());
        img[0x248..0x24c].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(BzImage::parse(&img).is_err());
    }

    #[test]
    fn reads_the_kernel_dependency() {
        let out = "linux-image-amd64\n  Depends: linux-image-6.1.0-56-amd64\n";
        assert_eq!(
            kernel_dependency(out).as_deref(),
            Some("linux-image-6.1.0-56-amd64")
        );
        // Backports' candidate depends on 6.12: not bookworm's kernel.
        let bpo = "linux-image-amd64\n  Depends: linux-image-6.12.95+deb12-amd64\n";
        assert_eq!(kernel_dependency(bpo), None);
        assert_eq!(
            kernel_dependency("  Depends: <linux-image-6.1.0-5-amd64>"),
            None
        );
        assert_eq!(kernel_dependency(""), None);
    }

    #[test]
    fn elf_check() {
        let mut elf = vec![0u8; 64];
        elf[..4].copy_from_slice(b"\x7fELF");
        elf[4] = 2;
        elf[5] = 1;
        elf[18] = 62;
        assert!(check_elf(&elf).is_ok());
        elf[18] = 3;
        assert!(check_elf(&elf).is_err());
        assert!(check_elf(b"MZ").is_err());
    }

    #[test]
    fn decompresses_an_xz_stream_with_a_trailer() {
        // Needs xz or python3 on the host; both are on the project's machines.
        let mut cmd = Command::new("xz");
        cmd.args(["-z", "-c", "--check=crc32"]);
        let Ok(mut stream) = filter("xz -z", &mut cmd, b"hello, vmlinux") else {
            return;
        };
        // What the kernel's build appends: the uncompressed size.
        stream.extend_from_slice(&14u32.to_le_bytes());
        let out = decompress_xz(&stream)
            .map_err(|f| f.message)
            .expect("decodes");
        assert_eq!(out, b"hello, vmlinux");
    }
}
