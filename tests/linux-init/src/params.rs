//! `blktest=SEED,SECTOR,SECTORS` from init's environment (Linux hands init the command
//! line's unknown `key=value` words as environment variables).

/// What to write and check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlkTest {
    /// Pattern seed (`blkfront::pattern_byte`).
    pub seed: u64,
    /// First sector (512 bytes).
    pub sector: u64,
    /// Sectors to write (at most [`MAX_SECTORS`]).
    pub sectors: u64,
}

/// The buffer's size in sectors.
pub const MAX_SECTORS: u64 = 256;

impl Default for BlkTest {
    fn default() -> Self {
        BlkTest {
            seed: 7,
            sector: 2048,
            sectors: 64,
        }
    }
}

fn number(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 19 {
        return None;
    }
    s.iter().try_fold(0u64, |n, &c| {
        c.is_ascii_digit().then(|| n * 10 + u64::from(c - b'0'))
    })
}

/// The test named by the environment entry `entry` if it is `blktest=...`; `Err` for a
/// malformed value, `Ok(None)` for another variable.
pub fn parse(entry: &[u8]) -> Result<Option<BlkTest>, ()> {
    let Some(value) = entry.strip_prefix(b"blktest=") else {
        return Ok(None);
    };
    let mut it = value.split(|&c| c == b',');
    let mut next = || it.next().and_then(number).ok_or(());
    let t = BlkTest {
        seed: next()?,
        sector: next()?,
        sectors: next()?,
    };
    if t.sectors == 0 || t.sectors > MAX_SECTORS {
        return Err(());
    }
    Ok(Some(t))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blktest_values() {
        assert_eq!(
            parse(b"blktest=5,4096,128"),
            Ok(Some(BlkTest {
                seed: 5,
                sector: 4096,
                sectors: 128
            }))
        );
        assert_eq!(parse(b"TERM=linux"), Ok(None));
        assert_eq!(parse(b"blktest=5,4096"), Err(()));
        assert_eq!(parse(b"blktest=5,4096,0"), Err(()));
        assert_eq!(parse(b"blktest=5,4096,257"), Err(()));
        assert_eq!(parse(b"blktest=x,1,1"), Err(()));
        assert_eq!(parse(b"blktest=99999999999999999999,1,1"), Err(()));
    }
}
