//! dom0's "filesystem": its ramdisk (multiboot module 2, `start_info.mod_start`) is a cpio
//! archive in the `newc` format (the format of Linux initramfs images, `cpio -H newc`),
//! read in place. Configurations (`/etc/xen/*.cfg`) and domU kernels (`/boot/*`) are
//! looked up by path.
//!
//! newc entry: a 110-byte ASCII header (`070701`, then 13 fields of 8 hex digits: ino,
//! mode, uid, gid, nlink, mtime, filesize, devmajor, devminor, rdevmajor, rdevminor,
//! namesize, check), the NUL-terminated name, padding to 4 bytes, the data, padding to 4
//! bytes. The archive ends with the entry `TRAILER!!!`. Everything is bounds-checked: a
//! malformed archive yields an error, never a panic.

/// Size of a newc header.
pub const HEADER_LEN: usize = 110;
/// The newc magic (`070702`, with checksums, is accepted too).
pub const MAGIC: &[u8; 6] = b"070701";
/// Name of the last entry.
pub const TRAILER: &str = "TRAILER!!!";
/// `S_IFMT` and `S_IFREG`.
const S_IFMT: u32 = 0o170000;
const S_IFREG: u32 = 0o100000;

/// What is wrong with an archive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CpioError {
    /// Bad magic at this offset.
    Magic(usize),
    /// A header field is not hex, at this offset.
    Field(usize),
    /// An entry runs past the end of the archive, at this offset.
    Truncated(usize),
    /// A name is not NUL-terminated UTF-8, at this offset.
    Name(usize),
}

impl core::fmt::Display for CpioError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            CpioError::Magic(o) => write!(f, "bad cpio magic at offset {o:#x}"),
            CpioError::Field(o) => write!(f, "bad cpio header field at offset {o:#x}"),
            CpioError::Truncated(o) => write!(f, "cpio entry at offset {o:#x} is truncated"),
            CpioError::Name(o) => write!(f, "bad cpio file name at offset {o:#x}"),
        }
    }
}

/// One archive member.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry<'a> {
    /// Path as stored (usually without a leading `/`).
    pub name: &'a str,
    /// `st_mode`.
    pub mode: u32,
    pub data: &'a [u8],
}

impl Entry<'_> {
    /// A regular file.
    pub fn is_file(&self) -> bool {
        self.mode & S_IFMT == S_IFREG
    }
}

/// A newc archive in memory.
#[derive(Clone, Copy, Debug)]
pub struct Archive<'a> {
    bytes: &'a [u8],
}

fn hex_field(h: &[u8], i: usize, at: usize) -> Result<u32, CpioError> {
    let s = h
        .get(6 + 8 * i..14 + 8 * i)
        .ok_or(CpioError::Truncated(at))?;
    let s = core::str::from_utf8(s).map_err(|_| CpioError::Field(at))?;
    u32::from_str_radix(s, 16).map_err(|_| CpioError::Field(at))
}

const fn align4(n: usize) -> Option<usize> {
    match n.checked_add(3) {
        Some(v) => Some(v & !3),
        None => None,
    }
}

/// Normalises a path for lookup: no leading `/` or `./`.
fn normalise(p: &str) -> &str {
    let p = p.trim_start_matches('/');
    p.strip_prefix("./").unwrap_or(p).trim_start_matches('/')
}

impl<'a> Archive<'a> {
    /// An archive over `bytes` (trailing zero padding, as left by page rounding, is fine).
    pub fn new(bytes: &'a [u8]) -> Archive<'a> {
        Archive { bytes }
    }

    /// The entries in order, up to the trailer; an error ends the iteration.
    pub fn entries(&self) -> Entries<'a> {
        Entries {
            bytes: self.bytes,
            off: 0,
            done: false,
        }
    }

    /// Checks the whole archive; returns the number of entries.
    pub fn validate(&self) -> Result<usize, CpioError> {
        let mut n = 0;
        for e in self.entries() {
            e?;
            n += 1;
        }
        Ok(n)
    }

    /// The regular file at `path` (`/etc/xen/demo.cfg` and `etc/xen/demo.cfg` are the same).
    pub fn find(&self, path: &str) -> Result<Option<&'a [u8]>, CpioError> {
        let want = normalise(path);
        for e in self.entries() {
            let e = e?;
            if e.is_file() && normalise(e.name) == want {
                return Ok(Some(e.data));
            }
        }
        Ok(None)
    }
}

/// Iterator over an archive's entries.
pub struct Entries<'a> {
    bytes: &'a [u8],
    off: usize,
    done: bool,
}

impl<'a> Entries<'a> {
    fn next_entry(&mut self) -> Result<Option<Entry<'a>>, CpioError> {
        let at = self.off;
        let rest = self.bytes.get(at..).unwrap_or(&[]);
        // Only zero padding (or nothing) left: the archive ended without a trailer,
        // which we tolerate.
        if rest.iter().all(|&b| b == 0) {
            return Ok(None);
        }
        let h = rest.get(..HEADER_LEN).ok_or(CpioError::Truncated(at))?;
        if &h[..6] != MAGIC && &h[..6] != b"070702" {
            return Err(CpioError::Magic(at));
        }
        let mode = hex_field(h, 1, at)?;
        let filesize = hex_field(h, 6, at)? as usize;
        let namesize = hex_field(h, 11, at)? as usize;
        if namesize == 0 {
            return Err(CpioError::Name(at));
        }
        let name_end = HEADER_LEN
            .checked_add(namesize)
            .ok_or(CpioError::Truncated(at))?;
        let name = rest
            .get(HEADER_LEN..name_end)
            .ok_or(CpioError::Truncated(at))?;
        let (last, name) = name.split_last().ok_or(CpioError::Name(at))?;
        if *last != 0 {
            return Err(CpioError::Name(at));
        }
        let name = core::str::from_utf8(name).map_err(|_| CpioError::Name(at))?;
        let data_start = align4(name_end).ok_or(CpioError::Truncated(at))?;
        let data_end = data_start
            .checked_add(filesize)
            .ok_or(CpioError::Truncated(at))?;
        let data = rest
            .get(data_start..data_end)
            .ok_or(CpioError::Truncated(at))?;
        let next = align4(data_end).ok_or(CpioError::Truncated(at))?;
        self.off = at.checked_add(next).ok_or(CpioError::Truncated(at))?;
        if name == TRAILER {
            return Ok(None);
        }
        Ok(Some(Entry { name, mode, data }))
    }
}

impl<'a> Iterator for Entries<'a> {
    type Item = Result<Entry<'a>, CpioError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        match self.next_entry() {
            Ok(Some(e)) => Some(Ok(e)),
            Ok(None) => {
                self.done = true;
                None
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A newc writer for the tests (the xtask has the real one).
    fn push(out: &mut Vec<u8>, name: &str, mode: u32, data: &[u8]) {
        let fields = [
            1,
            mode,
            0,
            0,
            1,
            0,
            data.len() as u32,
            0,
            0,
            0,
            0,
            name.len() as u32 + 1,
            0,
        ];
        out.extend_from_slice(MAGIC);
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
    }

    fn sample() -> Vec<u8> {
        let mut a = Vec::new();
        push(&mut a, "etc", 0o40755, b"");
        push(&mut a, "etc/xen", 0o40755, b"");
        push(&mut a, "etc/xen/demo.cfg", 0o100644, b"name = \"demo\"\n");
        push(&mut a, "boot/domu", 0o100755, &[0x7f, b'E', b'L', b'F', 2]);
        push(&mut a, TRAILER, 0, b"");
        a
    }

    #[test]
    fn finds_files() {
        let mut bytes = sample();
        // Page rounding leaves zeroes after the trailer.
        bytes.resize(bytes.len().next_multiple_of(4096), 0);
        let a = Archive::new(&bytes);
        assert_eq!(a.validate(), Ok(4));
        assert_eq!(
            a.find("/etc/xen/demo.cfg"),
            Ok(Some(&b"name = \"demo\"\n"[..]))
        );
        assert_eq!(a.find("boot/domu").unwrap().map(|d| d.len()), Some(5));
        assert_eq!(a.find("./boot/domu").unwrap().map(|d| d.len()), Some(5));
        // Directories are not files.
        assert_eq!(a.find("/etc/xen"), Ok(None));
        assert_eq!(a.find("/nope"), Ok(None));
        assert_eq!(Archive::new(&[]).validate(), Ok(0));
    }

    #[test]
    fn malformed_archives_are_errors() {
        let good = sample();
        let mut bad = good.clone();
        bad[0] = b'1';
        assert_eq!(Archive::new(&bad).validate(), Err(CpioError::Magic(0)));
        let mut bad = good.clone();
        bad[20] = b'z';
        assert_eq!(Archive::new(&bad).validate(), Err(CpioError::Field(0)));
        // Every truncation and every single-byte corruption: an error or fewer entries,
        // never a panic.
        for n in 0..good.len() {
            let _ = Archive::new(&good[..n]).validate();
            let _ = Archive::new(&good[..n]).find("boot/domu");
        }
        for i in 0..good.len() {
            for v in [0u8, b'f', 0xff] {
                let mut b = good.clone();
                b[i] = v;
                let _ = Archive::new(&b).validate();
            }
        }
        // A huge file size.
        let mut a = Vec::new();
        push(&mut a, "x", 0o100644, b"");
        a[6 + 6 * 8..6 + 7 * 8].copy_from_slice(b"ffffffff");
        assert!(matches!(
            Archive::new(&a).validate(),
            Err(CpioError::Truncated(0))
        ));
    }
}
