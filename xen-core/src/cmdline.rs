//! The hypervisor's command line (Xen's boot options that rxen understands).

use crate::log::LogLevel;

/// Options parsed from the multiboot command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Options {
    /// Console log verbosity (`loglvl=`).
    pub log_level: LogLevel,
    /// Stay halted instead of rebooting when dom0 crashes (`noreboot`).
    pub noreboot: bool,
    /// Memory given to dom0, in KiB (`dom0_mem=`, Xen's size syntax: 64M, 1G, 65536K).
    pub dom0_mem_kib: Option<u64>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            log_level: LogLevel::Info,
            noreboot: false,
            dom0_mem_kib: None,
        }
    }
}

/// Parses a Xen size ("64M", "1G", "512K", plain numbers are KiB as in Xen's `dom0_mem`).
pub fn parse_size_kib(s: &str) -> Option<u64> {
    let (num, mult) = match s.as_bytes().last()? {
        b'K' | b'k' => (&s[..s.len() - 1], 1),
        b'M' | b'm' => (&s[..s.len() - 1], 1024),
        b'G' | b'g' => (&s[..s.len() - 1], 1024 * 1024),
        b'T' | b't' => (&s[..s.len() - 1], 1024 * 1024 * 1024),
        _ => (s, 1),
    };
    num.parse::<u64>().ok()?.checked_mul(mult)
}

impl Options {
    /// Parses the words of a command line; unknown words are ignored, as Xen does
    /// (it warns about them).
    pub fn parse(cmdline: &str) -> Options {
        let mut o = Options::default();
        for word in cmdline.split_ascii_whitespace() {
            let (key, value) = match word.split_once('=') {
                Some((k, v)) => (k, Some(v)),
                None => (word, None),
            };
            match (key, value) {
                ("noreboot", None) => o.noreboot = true,
                ("loglvl", Some(v)) => {
                    if let Some(l) = LogLevel::parse(v.split('/').next().unwrap_or(v)) {
                        o.log_level = l;
                    }
                }
                ("dom0_mem", Some(v)) => o.dom0_mem_kib = parse_size_kib(v),
                _ => {}
            }
        }
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_known_options() {
        let o = Options::parse("console=com1 loglvl=all noreboot dom0_mem=64M");
        assert!(o.noreboot);
        assert_eq!(o.log_level, LogLevel::Debug);
        assert_eq!(o.dom0_mem_kib, Some(64 * 1024));
    }

    #[test]
    fn sizes_follow_xen_syntax() {
        assert_eq!(parse_size_kib("1G"), Some(1024 * 1024));
        assert_eq!(parse_size_kib("512K"), Some(512));
        assert_eq!(parse_size_kib("100"), Some(100));
        assert_eq!(parse_size_kib("x"), None);
        assert_eq!(parse_size_kib("99999999999999999999T"), None);
    }

    #[test]
    fn defaults_when_empty() {
        assert_eq!(Options::parse(""), Options::default());
    }
}
