//! `cargo xtask debian-kernel`: fetch Debian's stock kernel and turn it into the ELF that
//! rxen boots as a PV dom0 or domU.
//!
//! Debian ships the kernel as a bzImage (`boot/vmlinuz-*` in `linux-image-6.1.0-N-amd64`,
//! the package the meta-package `linux-image-amd64` depends on). A bzImage is the x86 boot
//! protocol's setup code followed by a compressed `vmlinux`; Xen's PV loader
//! (`xg_dom_bzimageloader.c`) finds that payload through the setup header and decompresses
//! it. This module fetches it with `apt-get`, `dpkg-deb` and `tar`, and unpacks it offline
//! with the domain builder's own `unpack_kernel` (what dom0 runs for a domU), so that a
//! test can hand the hypervisor a plain ELF.
//! The layout is in `../shared/ABI.md` §1.1.

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
    // Linux's block frontend is a module in Debian's kernel: the Debian domU's initramfs
    // (`--debian-domu`) carries it.
    unpack(
        &deb,
        &root,
        &[
            "--wildcards",
            "./lib/modules/*/kernel/drivers/block/xen-blkfront.ko",
        ],
        true,
    )?;
    let modules = root.join("lib/modules");
    let blkfront = std::fs::read_dir(&modules)?
        .filter_map(Result::ok)
        .map(|e| e.path().join("kernel/drivers/block/xen-blkfront.ko"))
        .find(|p| p.is_file())
        .ok_or_else(|| Failure::new(format!("{} has no xen-blkfront.ko", deb.display())))?;
    std::fs::copy(&blkfront, dir.join(BLKFRONT_MODULE))?;

    let image = std::fs::read(&vmlinuz)?;
    // The same unpacker dom0's domain builder runs (setup header, own xz decoder).
    let elf = domain_builder::unpack_kernel(&image)
        .map_err(|e| Failure::new(format!("{}: {e}", vmlinuz.display())))?;
    eprintln!(
        "xtask: {}: {} bytes, {} bytes unpacked",
        vmlinuz.display(),
        image.len(),
        elf.len()
    );
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

/// Linux's blkfront module, copied from the package into the cache directory.
const BLKFRONT_MODULE: &str = "xen-blkfront.ko";

/// `/etc/xen/debian-blk.cfg`: Debian's kernel with an initramfs whose init
/// (`tests/linux-init`) loads Linux's xen-blkfront, writes a pattern to `xvda` (dom0's
/// `vda`, through rxen's blkback), flushes, reads it back, discards, and powers off.
pub const DOMU_BLK_CFG: &str = "\
# Debian's kernel with Linux's own xen-blkfront against rxen's blkback (packed only by
# `cargo xtask run --debian-domu`). `xl create /etc/xen/debian-blk.cfg -c`: the init in
# /boot/blktest.cpio writes sectors 2048.. of vda with pattern seed 7, reads them back and
# prints `linux-init: PASS ...`.
name = \"debian-blk\"
kernel = \"/boot/vmlinuz\"
ramdisk = \"/boot/blktest.cpio\"
memory = 128
vcpus = 1
disk = ['phy:vda,xvda,w']
extra = \"console=hvc0 loglevel=4 blktest=7,2048,64\"
on_poweroff = \"destroy\"
on_crash = \"preserve\"
";

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
///
/// Also `/boot/blktest.cpio`, the initramfs of [`DOMU_BLK_CFG`]: `init` (the `linux_init`
/// program) and Linux's `xen-blkfront.ko` from the same package.
pub fn domu_ramdisk_files(
    linux_init: &Path,
) -> Outcome<Vec<(&'static str, crate::ramdisk::Extra)>> {
    let dir = cache_dir();
    let mut vmlinuz = dir.join("vmlinuz");
    if !vmlinuz.is_file() || !dir.join(BLKFRONT_MODULE).is_file() {
        vmlinuz = debian_kernel(None, false)?.vmlinuz;
    }
    let initramfs = crate::ramdisk::linux_initramfs(
        &std::fs::read(linux_init)?,
        &[(
            "xen-blkfront.ko",
            &std::fs::read(dir.join(BLKFRONT_MODULE))?,
        )],
    )?;
    Ok(vec![
        ("boot/vmlinuz", crate::ramdisk::Extra::File(vmlinuz)),
        ("boot/blktest.cpio", crate::ramdisk::Extra::Bytes(initramfs)),
        (
            "etc/xen/debian.cfg",
            crate::ramdisk::Extra::Bytes(DOMU_CFG.as_bytes().to_vec()),
        ),
        (
            "etc/xen/debian-blk.cfg",
            crate::ramdisk::Extra::Bytes(DOMU_BLK_CFG.as_bytes().to_vec()),
        ),
    ])
}

/// Whether `debian-kernel` has already left what `--debian-domu` packs.
pub fn have_domu_files() -> bool {
    let dir = cache_dir();
    dir.join("vmlinuz").is_file() && dir.join(BLKFRONT_MODULE).is_file()
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
}
