//! `xl block-attach`, `block-detach`, `block-list` and the disks of `xl create`: the
//! toolstack's half of a virtual block device (libxl's `libxl__device_disk_add` and
//! `libxl__initiate_device_generic_remove`). The other halves are dom0's blkback, which
//! watches `backend/vbd`, and the guest's blkfront.

use alloc::string::String;
use alloc::vec::Vec;

use super::disk::{
    backend_dir, backend_path, block_list_row, disk_nodes, frontend_path, parse_disk, DiskMode,
    DiskSpec, BLOCK_LIST_HEADER, XENBUS_CLOSED, XENBUS_CLOSING,
};
use super::platform::{Hypervisor, Perm, Store};
use super::Toolstack;
use crate::Host;

/// How long `block-detach` waits for blkback to close before removing the device anyway
/// (libxl's `LIBXL_DESTROY_TIMEOUT`).
pub const DETACH_TIMEOUT_NS: u64 = 10_000_000_000;

/// A virtual block device the toolstack attached.
pub(super) struct Vbd {
    pub(super) domid: u16,
    pub(super) spec: DiskSpec,
    /// Set by `block-detach`: when to give up waiting for the backend.
    pub(super) detach_deadline: Option<u64>,
}

impl<V: Hypervisor, S: Store> Toolstack<V, S> {
    /// Checks that `spec` can be given to `domid`, then writes its frontend and backend
    /// nodes.
    pub(super) fn attach_disk(&mut self, domid: u16, spec: &DiskSpec) -> Result<(), String> {
        if spec.backend_type != "phy" {
            return Err(alloc::format!(
                "disk backend type `{}' is not supported by rxen's dom0 (phy: only)",
                spec.backend_type
            ));
        }
        if !self.hv.block_devices().contains(&spec.target) {
            return Err(alloc::format!(
                "disk `{}': dom0 has no such block device (see `disk list')",
                spec.target
            ));
        }
        if self
            .vbds
            .iter()
            .any(|v| v.domid == domid && v.spec.devid == spec.devid)
        {
            return Err(alloc::format!(
                "domain {domid} already has a device {} ({})",
                spec.vdev,
                spec.devid
            ));
        }
        // A disk goes to one domain at a time: dom0's driver serves one backend per disk.
        if let Some(v) = self.vbds.iter().find(|v| v.spec.target == spec.target) {
            return Err(alloc::format!(
                "disk `{}' is already in use by domain {} ({})",
                spec.target,
                v.domid,
                match v.spec.mode {
                    DiskMode::ReadOnly => "read-only",
                    DiskMode::ReadWrite => "writable",
                }
            ));
        }
        let nodes = disk_nodes(domid, spec);
        let store = |e: crate::HostError| alloc::format!("xenstore: {e}");
        for (dir, perms) in &nodes.dirs {
            self.xs.mkdir(dir).map_err(store)?;
            let perms: &[Perm] = perms;
            self.xs.set_perms(dir, perms).map_err(store)?;
        }
        for (path, value) in &nodes.nodes {
            self.xs.write(path, value).map_err(store)?;
        }
        self.vbds.push(Vbd {
            domid,
            spec: spec.clone(),
            detach_deadline: None,
        });
        Ok(())
    }

    /// Forgets every device of a domain that is going away and removes its backend nodes
    /// (the frontend nodes go with the domain's directory); blkback sees the directory
    /// vanish and lets go of the disk.
    pub(super) fn drop_disks(&mut self, domid: u16) {
        self.vbds.retain(|v| v.domid != domid);
        let _ = self.xs.rm(&backend_dir(domid));
    }

    /// `xl block-attach DOM DISKSPEC`.
    pub(super) fn cmd_block_attach(&mut self, rest: &[&str], h: &mut impl Host) {
        let [dom, spec @ ..] = rest else {
            let _ = writeln!(h, "Usage: xl block-attach <Domain> <disk-spec>");
            return;
        };
        if spec.is_empty() {
            let _ = writeln!(h, "Usage: xl block-attach <Domain> <disk-spec>");
            return;
        }
        let Some(id) = self.own_domain(dom, h) else {
            return;
        };
        let spec = match parse_disk(&spec.join(",")) {
            Ok(s) => s,
            Err(e) => {
                let _ = writeln!(h, "xl: {e}");
                return;
            }
        };
        if let Err(e) = self.attach_disk(id, &spec) {
            let _ = writeln!(h, "xl: {e}");
        }
    }

    /// `xl block-detach DOM DEVID|VDEV`: asks the backend to close; [`poll_devices`]
    /// removes the device once it has (or after [`DETACH_TIMEOUT_NS`]).
    ///
    /// [`poll_devices`]: Toolstack::poll_devices
    pub(super) fn cmd_block_detach(&mut self, rest: &[&str], h: &mut impl Host) {
        let [dom, dev] = rest else {
            let _ = writeln!(h, "Usage: xl block-detach <Domain> <DevId>");
            return;
        };
        let Some(id) = self.own_domain(dom, h) else {
            return;
        };
        let devid = dev
            .parse::<u32>()
            .ok()
            .or_else(|| super::disk::vdev_devid(dev));
        let now = self.hv.now_ns();
        let Some(v) = self
            .vbds
            .iter_mut()
            .find(|v| v.domid == id && Some(v.spec.devid) == devid)
        else {
            let _ = writeln!(h, "xl: error: device {dev} of domain {id} does not exist");
            return;
        };
        if v.detach_deadline.is_some() {
            return;
        }
        v.detach_deadline = Some(now.saturating_add(DETACH_TIMEOUT_NS));
        let be = backend_path(id, v.spec.devid);
        let _ = self.xs.write(&alloc::format!("{be}/online"), "0");
        let _ = self.xs.write(
            &alloc::format!("{be}/state"),
            &alloc::format!("{XENBUS_CLOSING}"),
        );
    }

    /// `xl block-list DOM`.
    pub(super) fn cmd_block_list(&mut self, rest: &[&str], h: &mut impl Host) {
        let [dom] = rest else {
            let _ = writeln!(h, "Usage: xl block-list <Domain>");
            return;
        };
        let Some(id) = self.lookup(dom) else {
            let _ = writeln!(h, "xl: domain '{dom}' does not exist.");
            return;
        };
        let _ = writeln!(h, "{BLOCK_LIST_HEADER}");
        let devids: Vec<u32> = self
            .vbds
            .iter()
            .filter(|v| v.domid == id)
            .map(|v| v.spec.devid)
            .collect();
        for devid in devids {
            let be = backend_path(id, devid);
            let fe = frontend_path(id, devid);
            let mut num = |p: String| -> Option<u32> {
                self.xs.read(&p).ok().flatten().and_then(|s| s.parse().ok())
            };
            let state = num(alloc::format!("{be}/state"));
            let evtch = num(alloc::format!("{fe}/event-channel"));
            let rref = num(alloc::format!("{fe}/ring-ref"))
                .or_else(|| num(alloc::format!("{fe}/ring-ref0")));
            let _ = writeln!(h, "{}", block_list_row(devid, 0, state, evtch, rref, &be));
        }
    }

    /// Finishes detaches: removes a device's nodes once its backend is Closed, its domain
    /// is gone, or the timeout passed. Called from dom0's main loop.
    pub fn poll_devices(&mut self) {
        let now = self.hv.now_ns();
        let mut done: Vec<(u16, u32)> = Vec::new();
        for v in &self.vbds {
            let Some(deadline) = v.detach_deadline else {
                continue;
            };
            let be = backend_path(v.domid, v.spec.devid);
            let state = self
                .xs
                .read(&alloc::format!("{be}/state"))
                .ok()
                .flatten()
                .and_then(|s| s.parse::<u32>().ok());
            if state == Some(XENBUS_CLOSED) || state.is_none() || now >= deadline {
                done.push((v.domid, v.spec.devid));
            }
        }
        for (domid, devid) in done {
            let _ = self.xs.rm(&backend_path(domid, devid));
            let _ = self.xs.rm(&frontend_path(domid, devid));
            self.vbds
                .retain(|v| !(v.domid == domid && v.spec.devid == devid));
        }
    }

    /// Whether a device of `domid` with `devid` is still attached (tests).
    pub fn has_disk(&self, domid: u16, devid: u32) -> bool {
        self.vbds
            .iter()
            .any(|v| v.domid == domid && v.spec.devid == devid)
    }

    /// A domain this toolstack manages, by name or id; prints why not.
    fn own_domain(&mut self, dom: &str, h: &mut impl Host) -> Option<u16> {
        let Some(id) = self.lookup(dom) else {
            let _ = writeln!(h, "xl: domain '{dom}' does not exist.");
            return None;
        };
        if !self.domains.iter().any(|d| d.domid == id) {
            let _ = writeln!(h, "xl: domain {id} was not created by this toolstack");
            return None;
        }
        Some(id)
    }
}
