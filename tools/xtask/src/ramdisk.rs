//! dom0's ramdisk: a cpio archive in the `newc` format (what Linux initramfs images use;
//! dom0 reads it with `dom0::cpio`) holding the example domain configurations of
//! `dom0/rootfs/` (e.g. `/etc/xen/demo.cfg`) and the domU kernel as `/boot/domu`.
//! `cargo xtask build` packs it next to the dom0 image and `cargo xtask run` passes it as
//! dom0's ramdisk unless `--dom0-ramdisk` names another.

use std::io;
use std::path::{Path, PathBuf};

/// File name of the packed ramdisk, next to the dom0 image.
pub const FILE_NAME: &str = rxen_tests::machine::DOM0_RAMDISK_FILE;

/// Where the ramdisk for the dom0 image `dom0` is.
pub fn path_for(dom0: &Path) -> PathBuf {
    dom0.with_file_name(FILE_NAME)
}

/// Appends one newc entry.
pub fn push_entry(
    out: &mut Vec<u8>,
    ino: u32,
    name: &str,
    mode: u32,
    data: &[u8],
) -> io::Result<()> {
    let too_big = |what| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{name}: {what} too large for cpio"),
        )
    };
    let size = u32::try_from(data.len()).map_err(|_| too_big("file"))?;
    let namesize = u32::try_from(name.len() + 1).map_err(|_| too_big("name"))?;
    let nlink = if mode & 0o170000 == 0o040000 { 2 } else { 1 };
    let fields = [ino, mode, 0, 0, nlink, 0, size, 0, 0, 0, 0, namesize, 0];
    out.extend_from_slice(b"070701");
    for f in fields {
        out.extend_from_slice(format!("{f:08x}").as_bytes());
    }
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
    out.extend_from_slice(data);
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
    Ok(())
}

fn walk(dir: &Path, rel: &str, files: &mut Vec<(String, Option<Extra>)>) -> io::Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let name = e.file_name().to_string_lossy().into_owned();
        let path = if rel.is_empty() {
            name
        } else {
            format!("{rel}/{name}")
        };
        if e.file_type()?.is_dir() {
            files.push((path.clone(), None));
            walk(&e.path(), &path, files)?;
        } else {
            files.push((path, Some(Extra::File(e.path()))));
        }
    }
    Ok(())
}

/// Packs `rootfs` (directories and files, sorted) plus `domu` as `boot/domu` into `out`.
pub fn pack(rootfs: &Path, domu: &Path, out: &Path) -> io::Result<usize> {
    pack_with(rootfs, domu, &[], out)
}

/// A file added to the ramdisk beyond `rootfs/` (`cargo xtask run --debian-domu`).
pub enum Extra {
    /// Copied from this host file.
    File(PathBuf),
    /// These bytes.
    Bytes(Vec<u8>),
}

/// [`pack`], plus `extra` files (archive path, contents) after the others; their parent
/// directories must be in `rootfs/` or be `boot/` (e.g. `boot/vmlinux`, `etc/xen/x.cfg`).
pub fn pack_with(
    rootfs: &Path,
    domu: &Path,
    extra: &[(&str, Extra)],
    out: &Path,
) -> io::Result<usize> {
    let mut files = Vec::new();
    if rootfs.is_dir() {
        walk(rootfs, "", &mut files)?;
    }
    if !files.iter().any(|(p, _)| p == "boot") {
        files.push(("boot".into(), None));
    }
    files.push(("boot/domu".into(), Some(Extra::File(domu.to_path_buf()))));
    let mut a = Vec::new();
    let entries = files
        .iter()
        .map(|(n, e)| (n.as_str(), e.as_ref()))
        .chain(extra.iter().map(|(n, e)| (*n, Some(e))));
    let mut count = 0;
    for (i, (name, src)) in entries.enumerate() {
        let ino = i as u32 + 1;
        count += 1;
        match src {
            None => push_entry(&mut a, ino, name, 0o040755, &[])?,
            Some(Extra::File(p)) => push_entry(&mut a, ino, name, 0o100644, &std::fs::read(p)?)?,
            Some(Extra::Bytes(b)) => push_entry(&mut a, ino, name, 0o100644, b)?,
        }
    }
    push_entry(&mut a, 0, "TRAILER!!!", 0, &[])?;
    std::fs::write(out, &a)?;
    Ok(count)
}

/// An initramfs for a Linux guest: `/dev` (init mounts devtmpfs there), `/init`
/// (executable) and `files` in the root.
pub fn linux_initramfs(init: &[u8], files: &[(&str, &[u8])]) -> io::Result<Vec<u8>> {
    let mut a = Vec::new();
    push_entry(&mut a, 1, "dev", 0o040755, &[])?;
    push_entry(&mut a, 2, "init", 0o100755, init)?;
    for (i, (name, data)) in files.iter().enumerate() {
        push_entry(&mut a, i as u32 + 3, name, 0o100644, data)?;
    }
    push_entry(&mut a, 0, "TRAILER!!!", 0, &[])?;
    Ok(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_newc() {
        let mut a = Vec::new();
        push_entry(
            &mut a,
            1,
            "etc/xen/demo.cfg",
            0o100644,
            b"name = \"demo\"\n",
        )
        .unwrap();
        assert_eq!(&a[..6], b"070701");
        assert_eq!(&a[6 + 6 * 8..6 + 7 * 8], b"0000000e");
        assert_eq!(&a[6 + 11 * 8..6 + 12 * 8], b"00000011");
        assert_eq!(&a[110..126], b"etc/xen/demo.cfg");
        assert_eq!(a.len() % 4, 0);
        // Header + name (17) = 127, padded to 128; data 14 → 142, padded to 144.
        assert_eq!(a.len(), 144);
        assert_eq!(&a[128..142], b"name = \"demo\"\n");
    }

    #[test]
    fn extra_files_follow_the_rootfs() {
        let dir = std::env::temp_dir().join(format!("xtask-ramdisk-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let domu = dir.join("domu");
        std::fs::write(&domu, b"ELF").unwrap();
        let out = dir.join("rd.cpio");
        let extra = [("etc/xen/x.cfg", Extra::Bytes(b"name = \"x\"\n".to_vec()))];
        // No rootfs: `boot/`, `boot/domu`, then the extra file.
        let n = pack_with(&dir.join("none"), &domu, &extra, &out).unwrap();
        assert_eq!(n, 3);
        let a = std::fs::read(&out).unwrap();
        let at = |needle: &[u8]| a.windows(needle.len()).position(|w| w == needle);
        assert!(at(b"boot/domu\0").unwrap() < at(b"etc/xen/x.cfg\0").unwrap());
        assert!(at(b"name = \"x\"").is_some());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
