//! `cargo xtask bench`, third part: the block split driver (issue 6). One boot of dom0
//! with two identical scratch disks under TCG `-icount shift=0`: dom0 measures its native
//! virtio-blk driver on `vda` (`disk bench vda`), then a domU measures the same rows
//! through blkfront → blkback → virtio-blk on `vdb` (`extra="blk=bench"`), once copyless
//! (the domU's default: every request's own pages granted, mapped by blkback with
//! `GNTMAP_device_map` and handed to the disk) and once with persistent grants
//! (`blkpersistent`: Linux's default, data copied through pages granted once). All print
//! `BENCH blk <who> <pattern> <op> qd<N> <bytes> <ns> <ops>`; the table shows MB/s and
//! IOPS side by side with the ratio domU/dom0 per row.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use rxen_tests::shell::CTRL_RBRACKET;
use rxen_tests::{Accel, Config, Disk, Machine, DOM0_PROMPT};

use crate::bench::median_f64;
use crate::{ramdisk, Failure, Images};

/// Booting dom0 to its prompt.
const BOOT: Duration = Duration::from_secs(300);
/// One benchmark side (all rows).
const SIDE: Duration = Duration::from_secs(1200);
/// Size of each scratch disk.
const DISK_BYTES: u64 = 256 << 20;

/// One measured row of one side.
#[derive(Clone, Debug, PartialEq)]
pub struct BlkRow {
    /// `dom0` or `domu`.
    pub who: String,
    /// `seq1m` or `rand4k`.
    pub pattern: String,
    /// `read` or `write`.
    pub op: String,
    /// Queue depth.
    pub qd: u32,
    /// Bytes moved.
    pub bytes: u64,
    /// Virtual nanoseconds taken.
    pub ns: u64,
    /// Requests completed.
    pub ops: u64,
}

impl BlkRow {
    /// Megabytes (10^6 bytes) per second.
    pub fn mb_s(&self) -> f64 {
        if self.ns == 0 {
            return 0.0;
        }
        self.bytes as f64 * 1000.0 / self.ns as f64
    }

    /// Requests per second.
    pub fn iops(&self) -> f64 {
        if self.ns == 0 {
            return 0.0;
        }
        self.ops as f64 * 1e9 / self.ns as f64
    }
}

/// The `BENCH blk ...` lines of `output`.
pub fn parse(output: &str) -> Vec<BlkRow> {
    output
        .lines()
        .filter_map(|l| {
            let l = l.trim_start_matches(|c: char| c != 'B');
            let f: Vec<&str> = l.split_whitespace().collect();
            let [b, blk, who, pattern, op, qd, bytes, ns, ops] = f.as_slice() else {
                return None;
            };
            if *b != "BENCH" || *blk != "blk" {
                return None;
            }
            Some(BlkRow {
                who: (*who).to_owned(),
                pattern: (*pattern).to_owned(),
                op: (*op).to_owned(),
                qd: qd.strip_prefix("qd")?.parse().ok()?,
                bytes: bytes.parse().ok()?,
                ns: ns.parse().ok()?,
                ops: ops.parse().ok()?,
            })
        })
        .collect()
}

/// The rows of the issue, in table order.
pub const ROWS: [(&str, &str, u32); 8] = [
    ("seq1m", "read", 1),
    ("seq1m", "read", 32),
    ("seq1m", "write", 1),
    ("seq1m", "write", 32),
    ("rand4k", "read", 1),
    ("rand4k", "read", 32),
    ("rand4k", "write", 1),
    ("rand4k", "write", 32),
];

/// The table: per row the medians over runs of dom0's MB/s and IOPS, the domU's copyless
/// (each request's pages granted and mapped) and through persistent grants, each with its
/// ratio to dom0.
pub fn table(rows: &[BlkRow]) -> String {
    let med = |who: &str, pattern: &str, op: &str, qd: u32, f: fn(&BlkRow) -> f64| {
        let v: Vec<f64> = rows
            .iter()
            .filter(|r| r.who == who && r.pattern == pattern && r.op == op && r.qd == qd)
            .map(f)
            .collect();
        (!v.is_empty()).then(|| (median_f64(&v), v.len()))
    };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<18} | {:>9} | {:>9} | {:>9} | {:>9} | {:>6} | {:>11} | {:>6} | runs",
        "block I/O",
        "dom0 MB/s",
        "dom0 IOPS",
        "domU MB/s",
        "domU IOPS",
        "ratio",
        "pgnt MB/s",
        "ratio"
    );
    let _ = writeln!(out, "{}", "-".repeat(108));
    for (pattern, op, qd) in ROWS {
        let cell = |v: Option<(f64, usize)>| v.map_or("-".to_owned(), |(v, _)| format!("{v:.1}"));
        let ratio = |a: Option<(f64, usize)>, b: Option<(f64, usize)>| match (a, b) {
            (Some((a, _)), Some((b, _))) if a > 0.0 => format!("{:.2}", b / a),
            _ => "-".to_owned(),
        };
        let d0 = med("dom0", pattern, op, qd, BlkRow::mb_s);
        let du = med("domu", pattern, op, qd, BlkRow::mb_s);
        let dn = med("domu-pgnt", pattern, op, qd, BlkRow::mb_s);
        let runs = du.map_or(0, |(_, n)| n).min(d0.map_or(0, |(_, n)| n));
        let _ = writeln!(
            out,
            "{:<18} | {:>9} | {:>9} | {:>9} | {:>9} | {:>6} | {:>11} | {:>6} | {runs}",
            format!("{pattern} {op} qd{qd}"),
            cell(d0),
            cell(med("dom0", pattern, op, qd, BlkRow::iops)),
            cell(du),
            cell(med("domu", pattern, op, qd, BlkRow::iops)),
            ratio(d0, du),
            cell(dn),
            ratio(d0, dn),
        );
    }
    out
}

fn scratch_disk(dir: &Path, name: &str) -> Result<std::path::PathBuf, Failure> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join(name);
    let f = std::fs::File::create(&path)?;
    f.set_len(DISK_BYTES)?;
    Ok(path)
}

/// One boot measuring both sides; appends their rows.
pub fn run(images: &Images, verbose: bool, rows: &mut Vec<BlkRow>) -> Result<usize, Failure> {
    let fail = |what: &str, e: rxen_tests::Error| Failure::new(format!("blk bench: {what}: {e}"));
    let dir = crate::scratch_dir().join(format!("blkbench-{}", std::process::id()));
    let mut cfg = Config::new(&images.xen, &images.dom0);
    cfg.ramdisk = Some(ramdisk::path_for(&images.dom0));
    cfg.accel = Accel::Tcg;
    cfg.icount = true;
    cfg.echo = verbose;
    cfg.disks = vec![
        Disk::new(scratch_disk(&dir, "dom0.img")?),
        Disk::new(scratch_disk(&dir, "domu.img")?),
    ];
    let result = (|| {
        let mut m = Machine::boot(cfg).map_err(|e| fail("boot", e))?;
        m.expect(DOM0_PROMPT, BOOT).map_err(|e| fail("boot", e))?;
        m.send_line("disk bench vda").map_err(|e| fail("dom0", e))?;
        let out = m.expect(DOM0_PROMPT, SIDE).map_err(|e| fail("dom0", e))?;
        let mut found = parse(&out);
        m.send_line("xl create /etc/xen/blkbench.cfg -c")
            .map_err(|e| fail("domU", e))?;
        let out = m
            .expect("blk: bench done", SIDE)
            .map_err(|e| fail("domU", e))?;
        found.extend(parse(&out));
        // The same through persistent grants.
        m.send(&[CTRL_RBRACKET]).map_err(|e| fail("domU", e))?;
        m.expect(DOM0_PROMPT, SIDE).map_err(|e| fail("domU", e))?;
        m.send_line("xl destroy blkbench")
            .map_err(|e| fail("domU", e))?;
        m.expect(DOM0_PROMPT, SIDE).map_err(|e| fail("domU", e))?;
        m.send_line(
            "xl create /etc/xen/blkbench.cfg name=\"blkbench2\" extra=\"blk=bench blkpersistent\" -c",
        )
        .map_err(|e| fail("domU", e))?;
        let out = m
            .expect("blk: bench done", SIDE)
            .map_err(|e| fail("domU with persistent grants", e))?;
        found.extend(parse(&out));
        m.kill();
        let n = found.len();
        rows.extend(found);
        Ok(n)
    })();
    let _ = std::fs::remove_dir_all(&dir);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rows_and_tabulates_ratios() {
        let out = "junk\nBENCH blk dom0 seq1m read qd1 33554432 100000000 32\n\
                   (d1) BENCH blk domu seq1m read qd1 33554432 125000000 32\r\n\
                   BENCH blk domu seq1m read qdX 1 1 1\nBENCH hypercall_null 366 ns\n";
        let rows = parse(out);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[1].who, "domu");
        assert!((rows[0].mb_s() - 335.544).abs() < 0.01);
        assert!((rows[0].iops() - 320.0).abs() < 1e-9);
        let t = table(&rows);
        let line = t
            .lines()
            .find(|l| l.starts_with("seq1m read qd1 "))
            .unwrap();
        assert!(line.contains("335.5"), "{line}");
        assert!(line.contains("268.4"), "{line}");
        assert!(line.contains("0.80"), "{line}");
        let missing = t
            .lines()
            .find(|l| l.starts_with("rand4k write qd32"))
            .unwrap();
        assert!(missing.contains(" - "), "{missing}");
    }
}
