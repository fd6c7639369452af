//! The memory budget: the most host memory one request may take.
//!
//! Every size a user controls (a `--batch`, a `--top`, a header's declared
//! image count, a file's length) is compared with the budget *before*
//! anything is allocated, so that a typo or a hostile file ends in a message
//! naming the flag or file and the size, not in an allocation failure, the
//! kernel's OOM killer or swapping.
//!
//! The budget is 3/4 of the memory available at the time of the check
//! (`MemAvailable` of `/proc/meminfo`, or less where the process's cgroup
//! limits it: a container's `--memory`); the rest is left to the operating system, the
//! allocator's overhead and the copies a command makes around its main
//! buffer. Where `/proc/meminfo` cannot be read (not Linux, a sandbox), it is
//! [`FALLBACK_BYTES`]. The environment variable [`ENV`]
//! (`ALLCNNC_MEMORY_BUDGET`) overrides it: a number of bytes with an optional
//! unit `K`, `M`, `G` or `T` (powers of 1024, `KiB`/`KB`/`k` alike), e.g.
//! `ALLCNNC_MEMORY_BUDGET=8G`.

use std::fmt;

/// The environment variable that sets the budget.
pub const ENV: &str = "ALLCNNC_MEMORY_BUDGET";

/// The budget when the available memory cannot be read: 4 GiB, enough for
/// every bundled model and data set, small enough for most machines.
pub const FALLBACK_BYTES: u64 = 4 << 30;

/// Where the budget comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// 3/4 of this many bytes available.
    Available(u64),
    /// `/proc/meminfo` could not be read.
    Fallback,
    /// `ALLCNNC_MEMORY_BUDGET`, as written.
    Env(String),
    /// The free memory of a GPU, named (its buffers live there, not in the
    /// host's memory).
    DeviceFree(String),
}

/// The most bytes one request may take, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Budget {
    pub bytes: u64,
    pub source: Source,
}

impl fmt::Display for Budget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bytes = human(u128::from(self.bytes));
        match &self.source {
            Source::Available(available) => write!(
                f,
                "the memory budget is {bytes} (3/4 of the {} available; set {ENV} to change it)",
                human(u128::from(*available))
            ),
            Source::Fallback => write!(
                f,
                "the memory budget is {bytes} (the available memory could not be read; set {ENV} to change it)"
            ),
            Source::Env(text) => write!(f, "the memory budget is {bytes} ({ENV}={text})"),
            Source::DeviceFree(device) => write!(f, "{device} has {bytes} free"),
        }
    }
}

/// A request larger than the budget, or a budget that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BudgetError {
    /// `what` would need `bytes`; the message reads "WHAT needs SIZE; the
    /// memory budget is ...".
    #[error("{what} needs {}; {budget}", human(*.bytes))]
    TooLarge {
        what: String,
        bytes: u128,
        budget: Budget,
    },
    #[error("{ENV}={value} is not a size (expected bytes with an optional unit, e.g. 8G or 512M)")]
    BadSetting { value: String },
}

impl Budget {
    /// The budget now: [`ENV`] when set, else 3/4 of the available memory.
    pub fn current() -> Result<Self, BudgetError> {
        if let Some(value) = std::env::var_os(ENV) {
            let text = value.to_string_lossy().into_owned();
            let bytes = parse_size(&text).ok_or(BudgetError::BadSetting {
                value: text.clone(),
            })?;
            return Ok(Self {
                bytes,
                source: Source::Env(text),
            });
        }
        Ok(match available() {
            Some(available) => Self {
                bytes: available / 4 * 3,
                source: Source::Available(available),
            },
            None => Self {
                bytes: FALLBACK_BYTES,
                source: Source::Fallback,
            },
        })
    }

    /// `Ok` when `bytes` fit; else an error saying `what` needs `bytes`.
    pub fn check(&self, what: impl fmt::Display, bytes: u128) -> Result<(), BudgetError> {
        if bytes <= u128::from(self.bytes) {
            Ok(())
        } else {
            Err(BudgetError::TooLarge {
                what: what.to_string(),
                bytes,
                budget: self.clone(),
            })
        }
    }
}

/// Checks `bytes` against the current budget (see [`Budget::check`]).
///
/// `bytes` is a `u128` so that callers can multiply sizes from headers and
/// flags without overflow; [`product`] does it for several factors.
pub fn check(what: impl fmt::Display, bytes: u128) -> Result<(), BudgetError> {
    Budget::current()?.check(what, bytes)
}

/// The product of sizes, saturating (a `u128` product of `u64` factors
/// overflows only for absurd requests, which the budget refuses anyway).
pub fn product(factors: &[u128]) -> u128 {
    factors
        .iter()
        .try_fold(1u128, |acc, &f| acc.checked_mul(f))
        .unwrap_or(u128::MAX)
}

/// The memory available to this process, in bytes: `MemAvailable`, or
/// what its cgroup (v2) still allows if that is less.
fn available() -> Option<u64> {
    let host = mem_available()?;
    Some(cgroup_room().map_or(host, |room| room.min(host)))
}

/// What this process's memory cgroup still allows (limit minus usage),
/// when it has a limit: cgroup v2 (`memory.max`, `memory.current`) or v1
/// (`memory.limit_in_bytes`, `memory.usage_in_bytes`; "no limit" is a
/// number near `i64::MAX` there).
fn cgroup_room() -> Option<u64> {
    let membership = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let room = |dir: std::path::PathBuf, max: &str, current: &str| -> Option<u64> {
        let read = |name: &str| -> Option<u64> {
            std::fs::read_to_string(dir.join(name))
                .ok()?
                .trim()
                .parse()
                .ok()
        };
        let limit = read(max)?; // v2 writes "max" when there is no limit
        (limit < 1 << 60).then(|| limit.saturating_sub(read(current).unwrap_or(0)))
    };
    let root = std::path::Path::new("/sys/fs/cgroup");
    membership.lines().find_map(|line| {
        let mut fields = line.splitn(3, ':');
        let (_, controllers, path) = (fields.next()?, fields.next()?, fields.next()?);
        let path = path.trim_start_matches('/');
        match controllers {
            "" => room(root.join(path), "memory.max", "memory.current"),
            c if c.split(',').any(|c| c == "memory") => room(
                root.join("memory").join(path),
                "memory.limit_in_bytes",
                "memory.usage_in_bytes",
            ),
            _ => None,
        }
    })
}

/// `MemAvailable` of `/proc/meminfo`, in bytes.
fn mem_available() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line
        .trim_start_matches("MemAvailable:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    kib.checked_mul(1024)
}

/// Bytes from `8G`, `512MiB`, `1.5g`, `1000000`; `None` for anything else.
pub fn parse_size(text: &str) -> Option<u64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => return None,
    };
    let bytes = number * (1u64 << shift) as f64;
    (bytes.is_finite() && bytes >= 0.0 && bytes < u64::MAX as f64).then_some(bytes as u64)
}

/// A size in binary units with three significant figures: `512 B`,
/// `3.00 KiB`, `12.0 MiB`, `2.79 PiB`.
pub fn human(bytes: u128) -> String {
    const UNITS: [&str; 7] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    let digits = if value >= 100.0 {
        0
    } else if value >= 10.0 {
        1
    } else {
        2
    };
    format!("{value:.digits$} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_binary_units() {
        assert_eq!(parse_size("8G"), Some(8 << 30));
        assert_eq!(parse_size("512MiB"), Some(512 << 20));
        assert_eq!(parse_size(" 1.5 g "), Some(3 << 29));
        assert_eq!(parse_size("1000"), Some(1000));
        assert_eq!(parse_size("lots"), None);
        assert_eq!(parse_size("8X"), None);
        assert_eq!(parse_size(""), None);
    }

    #[test]
    fn sizes_print_in_binary_units() {
        assert_eq!(human(512), "512 B");
        assert_eq!(human(3 << 10), "3.00 KiB");
        assert_eq!(human(12 << 20), "12.0 MiB");
        assert_eq!(human(300 << 30), "300 GiB");
        assert_eq!(human(u128::MAX), "295147905179352825856 EiB");
    }

    #[test]
    fn a_request_over_the_budget_names_itself_and_the_budget() {
        let budget = Budget {
            bytes: 1 << 30,
            source: Source::Env("1G".into()),
        };
        assert!(budget.check("small", 1 << 30).is_ok());
        let err = budget.check("--batch 9", 3 << 30).unwrap_err();
        assert_eq!(
            err.to_string(),
            "--batch 9 needs 3.00 GiB; the memory budget is 1.00 GiB (ALLCNNC_MEMORY_BUDGET=1G)"
        );
        assert_eq!(product(&[u128::MAX, 2]), u128::MAX);
        assert_eq!(product(&[3, 4]), 12);
    }
}
