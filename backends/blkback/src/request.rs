//! Validation of blkif requests (`blkif.h`) copied out of the ring, as Linux's
//! `dispatch_rw_block_io` / `dispatch_discard_io` / `xen_vbd_translate` check them. Every
//! field is frontend-controlled: a request that fails a check is answered at once with the
//! status Linux gives, and nothing of it reaches the device.

use ring::blkif::{
    BlkifRequest, BlkifRequestSegment, BLKIF_DISCARD_SECURE, BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST,
    BLKIF_MAX_SEGMENTS_PER_REQUEST, BLKIF_OP_DISCARD, BLKIF_OP_FLUSH_DISKCACHE, BLKIF_OP_INDIRECT,
    BLKIF_OP_READ, BLKIF_OP_WRITE, BLKIF_OP_WRITE_BARRIER, BLKIF_RSP_EOPNOTSUPP, BLKIF_RSP_ERROR,
    SECTORS_PER_PAGE, SEGS_PER_INDIRECT_FRAME,
};
use xen_abi::GrantRef;

/// What the disk allows, fixed for a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Capacity in 512-byte sectors.
    pub sectors: u64,
    /// Logical block size in 512-byte sectors (a power of two, ≥ 1).
    pub block_sectors: u64,
    /// Writes are refused (`mode` "r", or a read-only disk).
    pub read_only: bool,
    /// Discard is offered (`feature-discard`).
    pub discard: bool,
    /// `feature-max-indirect-segments` advertised (0: no indirect requests).
    pub max_indirect_segments: u16,
}

/// A request refused before it reached the device: answer with `status` and `operation`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rejected {
    /// The frontend's id, echoed.
    pub id: u64,
    /// The operation to put in the response.
    pub operation: u8,
    /// `BLKIF_RSP_ERROR` or `BLKIF_RSP_EOPNOTSUPP`.
    pub status: i16,
}

/// Where the data segments of a read/write are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Segments {
    /// In the request itself (1..=11).
    Direct {
        /// Count.
        nr: u8,
        /// The slot's segment array (only `..nr` used).
        seg: [BlkifRequestSegment; BLKIF_MAX_SEGMENTS_PER_REQUEST],
    },
    /// In `ceil(nr / 512)` granted indirect pages.
    Indirect {
        /// Count (1..=max_indirect_segments).
        nr: u16,
        /// The indirect pages' grants (only `..pages` used).
        grefs: [GrantRef; BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST],
        /// Pages used.
        pages: u8,
    },
}

impl Segments {
    /// Number of segments.
    pub fn len(&self) -> usize {
        match self {
            Segments::Direct { nr, .. } => usize::from(*nr),
            Segments::Indirect { nr, .. } => usize::from(*nr),
        }
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A request that passed the checks that need no grant access.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Parsed {
    /// Read into (`write` false) or write from the segments, starting at `sector`; with
    /// `flush`, make it durable too (`BLKIF_OP_FLUSH_DISKCACHE` with data).
    Rw {
        /// The frontend's id.
        id: u64,
        /// Operation for the response (`indirect_op` for an indirect request).
        operation: u8,
        /// Disk write (device reads the pages).
        write: bool,
        /// Flush after the write.
        flush: bool,
        /// Start sector (512-byte units).
        sector: u64,
        /// The data segments (not yet checked: see [`check_segments`]).
        segs: Segments,
    },
    /// `BLKIF_OP_FLUSH_DISKCACHE` without data.
    Flush {
        /// The frontend's id.
        id: u64,
    },
    /// `BLKIF_OP_DISCARD`.
    Discard {
        /// The frontend's id.
        id: u64,
        /// Start sector.
        sector: u64,
        /// Sector count (≥ 1).
        nr_sectors: u64,
    },
}

fn reject(id: u64, operation: u8, status: i16) -> Rejected {
    Rejected {
        id,
        operation,
        status,
    }
}

/// Whether `sector..sector+count` lies on the disk and on logical-block boundaries.
fn range_ok(l: &Limits, sector: u64, count: u64) -> bool {
    let mask = l.block_sectors.saturating_sub(1);
    sector
        .checked_add(count)
        .is_some_and(|end| end <= l.sectors)
        && (sector | count) & mask == 0
}

/// First-level checks of one request (operation, counts, read-only, discard range).
pub fn parse(req: &BlkifRequest, l: &Limits) -> Result<Parsed, Rejected> {
    let id = req.id;
    let op = req.operation;
    match op {
        BLKIF_OP_READ | BLKIF_OP_WRITE | BLKIF_OP_FLUSH_DISKCACHE => {
            let write = op != BLKIF_OP_READ;
            let nr = req.nr_segments;
            if op == BLKIF_OP_FLUSH_DISKCACHE && nr == 0 {
                return if l.read_only {
                    Err(reject(id, op, BLKIF_RSP_ERROR))
                } else {
                    Ok(Parsed::Flush { id })
                };
            }
            if nr == 0 || usize::from(nr) > BLKIF_MAX_SEGMENTS_PER_REQUEST {
                return Err(reject(id, op, BLKIF_RSP_ERROR));
            }
            if write && l.read_only {
                return Err(reject(id, op, BLKIF_RSP_ERROR));
            }
            Ok(Parsed::Rw {
                id,
                operation: op,
                write,
                flush: op == BLKIF_OP_FLUSH_DISKCACHE,
                sector: req.sector_number,
                segs: Segments::Direct { nr, seg: req.seg },
            })
        }
        BLKIF_OP_INDIRECT => {
            let ind = req.as_indirect();
            let iop = ind.indirect_op;
            if iop != BLKIF_OP_READ && iop != BLKIF_OP_WRITE {
                return Err(reject(id, iop, BLKIF_RSP_ERROR));
            }
            let nr = ind.nr_segments;
            if nr == 0 || nr > l.max_indirect_segments {
                return Err(reject(id, iop, BLKIF_RSP_ERROR));
            }
            let write = iop == BLKIF_OP_WRITE;
            if write && l.read_only {
                return Err(reject(id, iop, BLKIF_RSP_ERROR));
            }
            let pages = match ind.indirect_pages() {
                Some(p) => p as u8,
                None => return Err(reject(id, iop, BLKIF_RSP_ERROR)),
            };
            Ok(Parsed::Rw {
                id,
                operation: iop,
                write,
                flush: false,
                sector: ind.sector_number,
                segs: Segments::Indirect {
                    nr,
                    grefs: ind.indirect_grefs,
                    pages,
                },
            })
        }
        BLKIF_OP_DISCARD => {
            let d = req.as_discard();
            if !l.discard || d.flag & BLKIF_DISCARD_SECURE != 0 {
                return Err(reject(id, op, BLKIF_RSP_EOPNOTSUPP));
            }
            if l.read_only || d.nr_sectors == 0 || !range_ok(l, d.sector_number, d.nr_sectors) {
                return Err(reject(id, op, BLKIF_RSP_ERROR));
            }
            Ok(Parsed::Discard {
                id,
                sector: d.sector_number,
                nr_sectors: d.nr_sectors,
            })
        }
        // Barriers are obsolete (never advertised), and anything else is unknown.
        BLKIF_OP_WRITE_BARRIER => Err(reject(id, op, BLKIF_RSP_EOPNOTSUPP)),
        _ => Err(reject(id, op, BLKIF_RSP_EOPNOTSUPP)),
    }
}

/// Checks the segments (`(first_sect, last_sect)` pairs) of a read/write starting at
/// `sector`: each `first_sect <= last_sect <= 7`, on logical-block boundaries, and the
/// whole range on the disk. Returns the request's length in sectors.
pub fn check_segments(
    segs: impl IntoIterator<Item = (u8, u8)>,
    sector: u64,
    l: &Limits,
) -> Option<u64> {
    let mask = l.block_sectors.saturating_sub(1);
    let mut total: u64 = 0;
    for (first, last) in segs {
        if first > last || last >= SECTORS_PER_PAGE {
            return None;
        }
        let n = u64::from(last - first) + 1;
        if (u64::from(first) | n) & mask != 0 {
            return None;
        }
        total = total.checked_add(n)?;
    }
    range_ok(l, sector, total).then_some(total)
}

/// Segments per indirect page (512), as a `usize` for slicing.
pub const SEGS_PER_PAGE: usize = SEGS_PER_INDIRECT_FRAME;

#[cfg(test)]
mod tests {
    use super::*;
    use ring::blkif::BlkifRequestIndirect;

    fn limits() -> Limits {
        Limits {
            sectors: 1000,
            block_sectors: 1,
            read_only: false,
            discard: true,
            max_indirect_segments: 256,
        }
    }

    fn seg(first: u8, last: u8) -> (u8, u8) {
        (first, last)
    }

    fn rw(op: u8, nr: u8) -> BlkifRequest {
        BlkifRequest {
            operation: op,
            nr_segments: nr,
            id: 77,
            ..Default::default()
        }
    }

    #[test]
    fn operations() {
        let l = limits();
        assert!(matches!(
            parse(&rw(BLKIF_OP_READ, 1), &l),
            Ok(Parsed::Rw { write: false, .. })
        ));
        assert!(matches!(
            parse(&rw(BLKIF_OP_WRITE, 11), &l),
            Ok(Parsed::Rw { write: true, .. })
        ));
        assert_eq!(
            parse(&rw(BLKIF_OP_FLUSH_DISKCACHE, 0), &l),
            Ok(Parsed::Flush { id: 77 })
        );
        assert!(matches!(
            parse(&rw(BLKIF_OP_FLUSH_DISKCACHE, 2), &l),
            Ok(Parsed::Rw {
                write: true,
                flush: true,
                ..
            })
        ));
        for (op, nr, status) in [
            (BLKIF_OP_READ, 0, BLKIF_RSP_ERROR),
            (BLKIF_OP_READ, 12, BLKIF_RSP_ERROR),
            (BLKIF_OP_WRITE, 255, BLKIF_RSP_ERROR),
            (BLKIF_OP_WRITE_BARRIER, 1, BLKIF_RSP_EOPNOTSUPP),
            (4, 1, BLKIF_RSP_EOPNOTSUPP),
            (200, 1, BLKIF_RSP_EOPNOTSUPP),
        ] {
            assert_eq!(
                parse(&rw(op, nr), &l),
                Err(Rejected {
                    id: 77,
                    operation: op,
                    status
                }),
                "op {op} nr {nr}"
            );
        }
        let ro = Limits {
            read_only: true,
            ..l
        };
        assert_eq!(
            parse(&rw(BLKIF_OP_WRITE, 1), &ro).unwrap_err().status,
            BLKIF_RSP_ERROR
        );
        assert!(parse(&rw(BLKIF_OP_READ, 1), &ro).is_ok());
    }

    #[test]
    fn indirect_and_discard() {
        let l = limits();
        let mut ind: BlkifRequestIndirect = BlkifRequest::default().as_indirect();
        ind.operation = BLKIF_OP_INDIRECT;
        ind.indirect_op = BLKIF_OP_WRITE;
        ind.nr_segments = 256;
        ind.id = 5;
        assert!(matches!(
            parse(&ind.into(), &l),
            Ok(Parsed::Rw {
                segs: Segments::Indirect {
                    nr: 256,
                    pages: 1,
                    ..
                },
                ..
            })
        ));
        ind.nr_segments = 257;
        assert_eq!(
            parse(&ind.into(), &l).unwrap_err().operation,
            BLKIF_OP_WRITE
        );
        ind.nr_segments = 1;
        ind.indirect_op = BLKIF_OP_DISCARD;
        assert_eq!(parse(&ind.into(), &l).unwrap_err().status, BLKIF_RSP_ERROR);

        let mut d = BlkifRequest::default().as_discard();
        d.operation = BLKIF_OP_DISCARD;
        d.sector_number = 990;
        d.nr_sectors = 10;
        assert!(parse(&d.into(), &l).is_ok());
        d.nr_sectors = 11;
        assert_eq!(parse(&d.into(), &l).unwrap_err().status, BLKIF_RSP_ERROR);
        d.sector_number = u64::MAX;
        assert_eq!(parse(&d.into(), &l).unwrap_err().status, BLKIF_RSP_ERROR);
        d.sector_number = 0;
        d.flag = BLKIF_DISCARD_SECURE;
        assert_eq!(
            parse(&d.into(), &l).unwrap_err().status,
            BLKIF_RSP_EOPNOTSUPP
        );
        d.flag = 0;
        let nod = Limits {
            discard: false,
            ..l
        };
        assert_eq!(
            parse(&d.into(), &nod).unwrap_err().status,
            BLKIF_RSP_EOPNOTSUPP
        );
    }

    #[test]
    fn segment_checks() {
        let l = limits();
        assert_eq!(check_segments([seg(0, 7), seg(2, 3)], 0, &l), Some(10));
        assert_eq!(check_segments([seg(3, 2)], 0, &l), None);
        assert_eq!(check_segments([seg(0, 8)], 0, &l), None);
        assert_eq!(check_segments([seg(0, 7)], 992, &l), Some(8));
        assert_eq!(check_segments([seg(0, 7)], 993, &l), None);
        assert_eq!(check_segments([seg(0, 0)], u64::MAX, &l), None);
        let big = Limits {
            block_sectors: 8,
            ..l
        };
        assert_eq!(check_segments([seg(0, 7)], 8, &big), Some(8));
        assert_eq!(check_segments([seg(0, 7)], 4, &big), None);
        assert_eq!(check_segments([seg(1, 7)], 8, &big), None);
    }

    proptest::proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 112),
                        sectors in 0u64..4096, ro: bool, disc: bool) {
            let mut raw = [0u8; 112];
            raw.copy_from_slice(&bytes);
            let req: BlkifRequest = zerocopy::transmute!(raw);
            let l = Limits { sectors, block_sectors: 1, read_only: ro, discard: disc,
                             max_indirect_segments: 256 };
            if let Ok(Parsed::Rw { segs: Segments::Direct { nr, seg }, sector, write, .. }) =
                parse(&req, &l)
            {
                proptest::prop_assert!((1..=11).contains(&nr));
                proptest::prop_assert!(!(write && ro));
                if let Some(n) = check_segments(seg[..usize::from(nr)].iter().map(|s| (s.first_sect, s.last_sect)), sector, &l) {
                    proptest::prop_assert!(sector + n <= sectors);
                }
            }
        }
    }
}
