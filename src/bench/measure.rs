//! What the load generator measures with: latency percentiles and this
//! process's memory from `/proc/self/status`.

use std::time::Duration;

/// Latency percentiles of a sample, in milliseconds (nearest rank).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Percentiles {
    /// How many values the sample had.
    pub count: usize,
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Largest value.
    pub max_ms: f64,
    /// Arithmetic mean.
    pub mean_ms: f64,
}

impl Percentiles {
    /// The percentiles of `sample`, or `None` for an empty sample.
    pub fn of(sample: &[Duration]) -> Option<Percentiles> {
        if sample.is_empty() {
            return None;
        }
        let mut sorted = sample.to_vec();
        sorted.sort_unstable();
        let rank = |p: f64| {
            // Nearest rank: the smallest value with at least p of the sample
            // at or below it.
            let n = sorted.len();
            let idx = ((p * n as f64).ceil() as usize).clamp(1, n) - 1;
            ms(sorted[idx])
        };
        let total: Duration = sorted.iter().sum();
        Some(Percentiles {
            count: sorted.len(),
            p50_ms: rank(0.50),
            p90_ms: rank(0.90),
            p99_ms: rank(0.99),
            max_ms: ms(sorted[sorted.len() - 1]),
            mean_ms: ms(total) / sorted.len() as f64,
        })
    }

    /// Whether p50 ≤ p90 ≤ p99 ≤ max.
    pub fn is_ordered(&self) -> bool {
        self.p50_ms <= self.p90_ms && self.p90_ms <= self.p99_ms && self.p99_ms <= self.max_ms
    }
}

/// A duration in milliseconds, as a float.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// A field of `/proc/self/status` given in kB (`VmRSS`, `VmHWM`), in bytes;
/// 0 where the file or field is missing (not Linux).
pub fn proc_status_bytes(field: &str) -> u64 {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return 0;
    };
    status
        .lines()
        .find_map(|line| {
            let rest = line.strip_prefix(field)?.strip_prefix(':')?;
            let kib: u64 = rest.trim().trim_end_matches("kB").trim().parse().ok()?;
            Some(kib * 1024)
        })
        .unwrap_or(0)
}

/// This process's resident memory now.
pub fn rss_bytes() -> u64 {
    proc_status_bytes("VmRSS")
}

/// This process's peak resident memory.
pub fn peak_rss_bytes() -> u64 {
    proc_status_bytes("VmHWM")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_nearest_rank() {
        let sample: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        let p = Percentiles::of(&sample).expect("non-empty");
        assert_eq!(p.p50_ms, 50.0);
        assert_eq!(p.p90_ms, 90.0);
        assert_eq!(p.p99_ms, 99.0);
        assert_eq!(p.max_ms, 100.0);
        assert!(p.is_ordered());
        let one = Percentiles::of(&[Duration::from_millis(7)]).expect("non-empty");
        assert_eq!((one.p50_ms, one.max_ms), (7.0, 7.0));
        assert!(Percentiles::of(&[]).is_none());
    }

    #[test]
    fn memory_is_read_from_proc() {
        if std::path::Path::new("/proc/self/status").exists() {
            assert!(rss_bytes() > 0);
            assert!(peak_rss_bytes() >= rss_bytes() / 2);
        }
    }
}
