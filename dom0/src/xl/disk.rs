//! Virtual block devices in the toolstack: xl's disk specification
//! (`xl-disk-configuration(5)`), libxl's device numbering, and the xenstore nodes libxl
//! writes to connect a domain's blkfront with dom0's blkback (`libxl__device_disk_add`).
//!
//! A disk lives in two xenstore directories: the frontend's
//! `/local/domain/<domid>/device/vbd/<devid>`, owned by the guest, and the backend's
//! `/local/domain/0/backend/vbd/<domid>/<devid>`, owned by dom0. Both start in
//! XenbusState Initialising (1); the drivers take it from there. Detaching sets the
//! backend's `online` to 0 and its state to Closing (5); once blkback reports Closed (6),
//! or the domain is gone, the toolstack removes both directories.

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

use xen_abi::xenbus::XenbusState;

use super::platform::{Access, Perm};

/// The XenbusState values the toolstack writes or waits for.
pub const XENBUS_INITIALISING: u32 = XenbusState::Initialising as u32;
/// Closing: the toolstack asks the backend to disconnect.
pub const XENBUS_CLOSING: u32 = XenbusState::Closing as u32;
/// Closed: the backend has let go of the frontend.
pub const XENBUS_CLOSED: u32 = XenbusState::Closed as u32;

/// Xen's major number for `xvd` devices (`XEN_IDE0_MAJOR`... in Linux's xen-blkfront).
const XVD_MAJOR: u32 = 202;
/// Linux's SCSI disk major (`sd`).
const SD_MAJOR: u32 = 8;
/// Linux's first and second IDE majors (`hda`/`hdb`, `hdc`/`hdd`).
const IDE0_MAJOR: u32 = 3;
const IDE1_MAJOR: u32 = 22;
/// Extended xvd numbering for disks beyond 15 or partitions beyond 15.
const EXTENDED: u32 = 1 << 28;

/// Whether the guest may write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DiskMode {
    /// `r`/`ro`.
    ReadOnly,
    /// `w`/`rw`.
    ReadWrite,
}

impl DiskMode {
    /// The backend's `mode` node.
    pub fn as_str(self) -> &'static str {
        match self {
            DiskMode::ReadOnly => "r",
            DiskMode::ReadWrite => "w",
        }
    }
}

/// One parsed disk specification.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiskSpec {
    /// The backend type from the target's prefix or `backendtype=` (`phy`, `file`, ...).
    pub backend_type: String,
    /// The dom0 device, without prefix and without `/dev/` (`vda`).
    pub target: String,
    /// The guest's name for it (`xvda`).
    pub vdev: String,
    /// libxl's device number (the xenstore key and blkif handle).
    pub devid: u32,
    /// Read-only or writable.
    pub mode: DiskMode,
}

/// Parses one element of `disk = [...]` (or `xl block-attach`'s argument).
///
/// Forms accepted, as xl does: keyword parameters (`target=`, `vdev=`, `access=`,
/// `format=`, `backendtype=`, `devtype=`, `script=`), and positional ones
/// `target,vdev,access` (the classic `phy:/dev/vg/x,xvda,w`) or
/// `target,format,vdev,access`; a `phy:`/`file:`/... prefix on the target names the
/// backend type. `target=` must come last (it may contain commas).
pub fn parse_disk(spec: &str) -> Result<DiskSpec, String> {
    let spec = spec.trim();
    let (head, keyed_target) = match spec.find("target=") {
        Some(i) if i == 0 || spec[..i].trim_end().ends_with(',') => (
            spec[..i].trim_end().trim_end_matches(','),
            Some(&spec[i + 7..]),
        ),
        _ => (spec, None),
    };
    let mut positional: Vec<&str> = Vec::new();
    let mut vdev = None;
    let mut access = None;
    let mut backend_type = None;
    for part in head.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.split_once('=') {
            Some(("vdev", v)) => vdev = Some(v),
            Some(("access", v)) => access = Some(v),
            Some(("backendtype", v)) => backend_type = Some(v),
            Some(("format" | "devtype" | "script" | "discard" | "direct-io-safe", _)) => {}
            Some((k, _)) => return Err(format!("unknown disk parameter `{k}'")),
            None => positional.push(part),
        }
    }
    let mut target = keyed_target.map(str::trim);
    match positional.as_slice() {
        [] => {}
        [t] => target = target.or(Some(t)),
        [t, v] => {
            target = target.or(Some(t));
            vdev = vdev.or(Some(v));
        }
        [t, v, a] => {
            target = target.or(Some(t));
            vdev = vdev.or(Some(v));
            access = access.or(Some(a));
        }
        [t, _format, v, a] => {
            target = target.or(Some(t));
            vdev = vdev.or(Some(v));
            access = access.or(Some(a));
        }
        _ => return Err(format!("too many positional parameters in `{spec}'")),
    }
    let target = target
        .filter(|t| !t.is_empty())
        .ok_or_else(|| format!("no target in disk specification `{spec}'"))?;
    let (prefix, path) = match target.split_once(':') {
        Some((p, rest)) if !p.contains('/') => (Some(p), rest),
        _ => (None, target),
    };
    let backend_type = backend_type.or(prefix).unwrap_or("phy").to_string();
    let target = path.strip_prefix("/dev/").unwrap_or(path).to_string();
    if target.is_empty() {
        return Err(format!("no target in disk specification `{spec}'"));
    }
    let vdev = vdev.ok_or_else(|| format!("no vdev in disk specification `{spec}'"))?;
    let devid = vdev_devid(vdev).ok_or_else(|| format!("invalid vdev `{vdev}'"))?;
    let mode = match access.unwrap_or("w") {
        "w" | "rw" => DiskMode::ReadWrite,
        "r" | "ro" => DiskMode::ReadOnly,
        other => return Err(format!("invalid access `{other}' (r or w)")),
    };
    Ok(DiskSpec {
        backend_type,
        target,
        vdev: vdev.to_string(),
        devid,
        mode,
    })
}

/// Splits `xvdb3` into the disk letters' index (1) and the partition (3).
fn disk_and_partition(letters_and_digits: &str) -> Option<(u32, u32)> {
    let digits_at = letters_and_digits
        .find(|c: char| c.is_ascii_digit())
        .unwrap_or(letters_and_digits.len());
    let (letters, digits) = letters_and_digits.split_at(digits_at);
    if letters.is_empty() || letters.len() > 3 || !letters.bytes().all(|b| b.is_ascii_lowercase()) {
        return None;
    }
    // a..z = 0..25, aa = 26, ... (bijective base 26, as Linux names disks).
    let mut disk: u32 = 0;
    for b in letters.bytes() {
        disk = disk * 26 + u32::from(b - b'a') + 1;
    }
    let part = if digits.is_empty() {
        0
    } else {
        if digits.starts_with('0') {
            return None;
        }
        digits.parse().ok()?
    };
    Some((disk - 1, part))
}

/// libxl's device number for a virtual device name (`libxl__device_disk_dev_number`):
/// `xvdX[N]`, `sdX[N]`, `hdX[N]`, or a decimal number.
pub fn vdev_devid(vdev: &str) -> Option<u32> {
    if let Some(n) = vdev.strip_prefix('d').and_then(|r| r.split_once('p')) {
        // dNpM: disk N, partition M.
        let (d, p) = (n.0.parse::<u32>().ok()?, n.1.parse::<u32>().ok()?);
        return extended(d, p);
    }
    if !vdev.is_empty() && vdev.bytes().all(|b| b.is_ascii_digit()) {
        return vdev.parse().ok();
    }
    if let Some(rest) = vdev.strip_prefix("xvd") {
        let (disk, part) = disk_and_partition(rest)?;
        if disk < 16 && part < 16 {
            return Some((XVD_MAJOR << 8) | (disk << 4) | part);
        }
        return extended(disk, part);
    }
    if let Some(rest) = vdev.strip_prefix("sd") {
        let (disk, part) = disk_and_partition(rest)?;
        return (disk < 16 && part < 16).then_some((SD_MAJOR << 8) | (disk << 4) | part);
    }
    if let Some(rest) = vdev.strip_prefix("hd") {
        let (disk, part) = disk_and_partition(rest)?;
        if part >= 64 {
            return None;
        }
        return match disk {
            0 | 1 => Some((IDE0_MAJOR << 8) | (disk << 6) | part),
            2 | 3 => Some((IDE1_MAJOR << 8) | ((disk - 2) << 6) | part),
            _ => None,
        };
    }
    None
}

fn extended(disk: u32, part: u32) -> Option<u32> {
    (disk < (1 << 20) && part < 256).then_some(EXTENDED | (disk << 8) | part)
}

/// The frontend's directory.
pub fn frontend_path(domid: u16, devid: u32) -> String {
    format!("/local/domain/{domid}/device/vbd/{devid}")
}

/// The backend's directory.
pub fn backend_path(domid: u16, devid: u32) -> String {
    format!("/local/domain/0/backend/vbd/{domid}/{devid}")
}

/// All of a domain's vbd backends.
pub fn backend_dir(domid: u16) -> String {
    format!("/local/domain/0/backend/vbd/{domid}")
}

/// The nodes `libxl__device_disk_add` writes, as (path, value), and the permissions of
/// the two directories (frontend owned by the guest and readable by the backend, backend
/// owned by dom0 and readable by the guest).
pub struct DiskNodes {
    /// Directories and their permissions, to create first.
    pub dirs: Vec<(String, [Perm; 2])>,
    /// Leaf nodes.
    pub nodes: Vec<(String, String)>,
}

/// What the toolstack writes to attach `disk` to `domid`.
pub fn disk_nodes(domid: u16, disk: &DiskSpec) -> DiskNodes {
    let fe = frontend_path(domid, disk.devid);
    let be = backend_path(domid, disk.devid);
    let perm = |domid, access| Perm { domid, access };
    let dirs = alloc::vec![
        (
            fe.clone(),
            [perm(domid, Access::None), perm(0, Access::Read)]
        ),
        (
            be.clone(),
            [perm(0, Access::None), perm(domid, Access::Read)]
        ),
    ];
    let devid = disk.devid.to_string();
    let state = XENBUS_INITIALISING.to_string();
    let mut nodes: Vec<(String, String)> = Vec::new();
    let mut fnode = |k: &str, v: String| nodes.push((format!("{fe}/{k}"), v));
    fnode("backend", be.clone());
    fnode("backend-id", "0".into());
    fnode("virtual-device", devid.clone());
    fnode("device-type", "disk".into());
    fnode("state", state.clone());
    let mut bnode = |k: &str, v: String| nodes.push((format!("{be}/{k}"), v));
    bnode("frontend", fe.clone());
    bnode("frontend-id", domid.to_string());
    bnode("params", disk.target.clone());
    bnode("type", disk.backend_type.clone());
    bnode("mode", disk.mode.as_str().into());
    bnode("dev", disk.vdev.clone());
    bnode("device-type", "disk".into());
    bnode("removable", "0".into());
    bnode("bootable", "1".into());
    bnode("online", "1".into());
    bnode("discard-enable", "1".into());
    bnode("state", state);
    DiskNodes { dirs, nodes }
}

/// `xl block-list`'s header (`tools/xl/xl_block.c`).
pub const BLOCK_LIST_HEADER: &str = "Vdev  BE  handle state evt-ch ring-ref BE-path";

/// One `xl block-list` row; absent values print as -1, as xl does.
pub fn block_list_row(
    devid: u32,
    backend_id: u16,
    state: Option<u32>,
    evtch: Option<u32>,
    ring_ref: Option<u32>,
    be_path: &str,
) -> String {
    let n = |v: Option<u32>| v.map_or(-1, i64::from);
    format!(
        "{:<5} {:<3} {:<6} {:<5} {:<6} {:<8} {:<30}",
        devid,
        backend_id,
        devid,
        n(state),
        n(evtch),
        n(ring_ref),
        be_path
    )
    .trim_end()
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classic_and_keyword_forms() {
        let d = parse_disk("phy:/dev/vda,xvda,w").unwrap();
        assert_eq!(
            d,
            DiskSpec {
                backend_type: "phy".into(),
                target: "vda".into(),
                vdev: "xvda".into(),
                devid: 51712,
                mode: DiskMode::ReadWrite,
            }
        );
        let d = parse_disk("phy:vdb,xvdb,r").unwrap();
        assert_eq!(
            (d.target.as_str(), d.devid, d.mode),
            ("vdb", 51728, DiskMode::ReadOnly)
        );
        let d = parse_disk("vdev=xvdc, access=ro, target=/dev/vdc").unwrap();
        assert_eq!((d.target.as_str(), d.vdev.as_str()), ("vdc", "xvdc"));
        assert_eq!(d.mode, DiskMode::ReadOnly);
        assert_eq!(d.backend_type, "phy");
        let d = parse_disk("/dev/vdd,raw,xvdd,rw").unwrap();
        assert_eq!((d.target.as_str(), d.devid), ("vdd", (202 << 8) | (3 << 4)));
        let d = parse_disk("file:/srv/data.img,xvdb,r").unwrap();
        assert_eq!(
            (d.backend_type.as_str(), d.target.as_str()),
            ("file", "/srv/data.img")
        );
        // Access defaults to writable, as xl's.
        assert_eq!(
            parse_disk("phy:vda,xvda").unwrap().mode,
            DiskMode::ReadWrite
        );
    }

    #[test]
    fn bad_specifications_are_refused_with_a_reason() {
        for (spec, why) in [
            ("", "no target"),
            ("phy:,xvda,w", "no target"),
            ("phy:vda", "no vdev"),
            ("phy:vda,xvda,x", "invalid access"),
            ("phy:vda,hdz,w", "invalid vdev"),
            ("phy:vda,xvd,w", "invalid vdev"),
            ("phy:vda,xvda0,w", "invalid vdev"),
            ("phy:vda,floppy,w", "invalid vdev"),
            ("a,b,c,d,e", "too many"),
            ("colour=red,phy:vda,xvda", "unknown disk parameter"),
        ] {
            let e = parse_disk(spec).unwrap_err();
            assert!(e.contains(why), "{spec}: {e}");
        }
    }

    #[test]
    fn device_numbers_follow_libxl() {
        assert_eq!(vdev_devid("xvda"), Some(51712));
        assert_eq!(vdev_devid("xvda1"), Some(51713));
        assert_eq!(vdev_devid("xvdp15"), Some((202 << 8) | (15 << 4) | 15));
        assert_eq!(vdev_devid("xvdq"), Some(EXTENDED | (16 << 8)));
        assert_eq!(vdev_devid("xvdaa"), Some(EXTENDED | (26 << 8)));
        assert_eq!(vdev_devid("xvda16"), Some(EXTENDED | 16));
        assert_eq!(vdev_devid("sda"), Some(2048));
        assert_eq!(vdev_devid("sdb2"), Some(2048 + 16 + 2));
        assert_eq!(vdev_devid("hda"), Some(768));
        assert_eq!(vdev_devid("hdb1"), Some(768 + 64 + 1));
        assert_eq!(vdev_devid("hdc"), Some(22 << 8));
        assert_eq!(vdev_devid("d2p3"), Some(EXTENDED | (2 << 8) | 3));
        assert_eq!(vdev_devid("51728"), Some(51728));
        assert_eq!(vdev_devid("xvdA"), None);
        assert_eq!(vdev_devid("sdq"), None);
        assert_eq!(vdev_devid("xvdabcd"), None);
    }

    #[test]
    fn nodes_connect_frontend_and_backend() {
        let d = parse_disk("phy:vda,xvda,r").unwrap();
        let n = disk_nodes(3, &d);
        let get = |p: &str| {
            n.nodes
                .iter()
                .find(|(k, _)| k == p)
                .map(|(_, v)| v.as_str())
        };
        let fe = "/local/domain/3/device/vbd/51712";
        let be = "/local/domain/0/backend/vbd/3/51712";
        assert_eq!(get(&format!("{fe}/backend")), Some(be));
        assert_eq!(get(&format!("{fe}/backend-id")), Some("0"));
        assert_eq!(get(&format!("{fe}/virtual-device")), Some("51712"));
        assert_eq!(get(&format!("{fe}/state")), Some("1"));
        assert_eq!(get(&format!("{be}/frontend")), Some(fe));
        assert_eq!(get(&format!("{be}/frontend-id")), Some("3"));
        assert_eq!(get(&format!("{be}/params")), Some("vda"));
        assert_eq!(get(&format!("{be}/mode")), Some("r"));
        assert_eq!(get(&format!("{be}/online")), Some("1"));
        assert_eq!(get(&format!("{be}/state")), Some("1"));
        // The guest owns its frontend directory; the backend directory is dom0's and
        // only readable by the guest.
        assert_eq!(n.dirs[0].0, fe);
        assert_eq!(n.dirs[0].1[0].domid, 3);
        assert_eq!(n.dirs[1].0, be);
        assert_eq!(n.dirs[1].1[0].domid, 0);
        assert_eq!(n.dirs[1].1[1].access, Access::Read);
    }

    #[test]
    fn block_list_rows_line_up_with_the_header() {
        let row = block_list_row(
            51712,
            0,
            Some(4),
            Some(9),
            Some(8),
            "/local/domain/0/backend/vbd/1/51712",
        );
        assert_eq!(
            row,
            "51712 0   51712  4     9      8        /local/domain/0/backend/vbd/1/51712"
        );
        assert!(block_list_row(51728, 0, None, None, None, "/x").contains("-1    -1     -1"));
    }
}
