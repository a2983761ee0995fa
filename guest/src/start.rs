//! The boot contract (ABI.md §1.4-1.5): our copy of `start_info`, the mapping of
//! `shared_info`, and address translations that only need the builder's layout.

use spin::Once;
use xen_abi::xen::StartInfo;

/// Where our kernels ask to be mapped (the VIRT_BASE note): pseudo-physical 0 is here and
/// PFN n is at `VIRT_BASE + n * 4096` inside the initial mapping.
pub const VIRT_BASE: u64 = 0xffff_ffff_8000_0000;

static START_INFO: Once<StartInfo> = Once::new();

/// Store the copy of start_info and map shared_info. Called once by the entry path.
pub(crate) fn init(si: StartInfo) -> &'static StartInfo {
    let si = START_INFO.call_once(|| si);
    match crate::arch::hypercall::map_shared_info(si.shared_info) {
        Ok(va) => crate::shared::init(va),
        Err(e) => {
            crate::println!(
                "pv-guest: cannot map shared_info {:#x}: {}",
                si.shared_info,
                e
            );
            crate::sched::crash();
        }
    }
    si
}

/// Our copy of start_info (None before the entry path ran, e.g. in host tests).
pub fn start_info() -> Option<&'static StartInfo> {
    START_INFO.get()
}

/// The command line as text (up to the first NUL; invalid UTF-8 yields "").
pub fn cmdline(si: &StartInfo) -> &str {
    let b = &si.cmd_line[..];
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    core::str::from_utf8(&b[..end]).unwrap_or("")
}

/// PFN of a VA inside the initial mapping.
pub fn va_to_pfn(va: u64) -> Option<u64> {
    va.checked_sub(VIRT_BASE).map(|off| off >> 12)
}

/// MFN backing a VA inside the initial mapping, through the builder's p2m list.
pub fn va_to_mfn(va: u64) -> Option<u64> {
    let si = start_info()?;
    crate::shared::p2m_entry(si.mfn_list, si.nr_pages, va_to_pfn(va)?)
}

/// Value of `key=value` on a space-separated command line.
pub fn cmdline_value<'a>(cmdline: &'a str, key: &str) -> Option<&'a str> {
    cmdline.split_ascii_whitespace().find_map(|tok| {
        let (k, v) = tok.split_once('=')?;
        (k == key).then_some(v)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cmdline_values() {
        assert_eq!(
            cmdline_value("scenario=timers quiet", "scenario"),
            Some("timers")
        );
        assert_eq!(
            cmdline_value("  a=1   scenario=events ", "scenario"),
            Some("events")
        );
        assert_eq!(cmdline_value("scenario", "scenario"), None);
        assert_eq!(cmdline_value("", "scenario"), None);
        assert_eq!(cmdline_value("xscenario=1 scenario=", "scenario"), Some(""));
    }

    #[test]
    fn pfn_of_va() {
        assert_eq!(va_to_pfn(VIRT_BASE), Some(0));
        assert_eq!(va_to_pfn(0xffff_ffff_8010_0000), Some(0x100));
        assert_eq!(va_to_pfn(0x1000), None);
    }
}
