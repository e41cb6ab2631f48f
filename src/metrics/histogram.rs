//! [`AtomicHistogram`]: a Prometheus histogram of durations whose
//! observations are two relaxed atomic adds (its bucket and the sum), with
//! no lock, unlike `prometheus_client`'s own histogram (a mutex per
//! observation). It is read only when the metrics are encoded.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use prometheus_client::encoding::{DescriptorEncoder, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;

/// A histogram of durations with fixed bucket bounds (in seconds).
#[derive(Debug)]
pub struct AtomicHistogram {
    /// Upper bounds in seconds, ascending; the `+Inf` bucket is implicit.
    bounds: &'static [f64],
    /// Upper bounds in nanoseconds, for the comparison on observe.
    bounds_ns: Box<[u64]>,
    /// Observations per bucket (not cumulative), `bounds.len() + 1` of them.
    counts: Box<[AtomicU64]>,
    /// Sum of the observations in nanoseconds.
    sum_ns: AtomicU64,
}

impl AtomicHistogram {
    /// A histogram with these upper bounds (seconds, ascending).
    pub fn new(bounds: &'static [f64]) -> Self {
        AtomicHistogram {
            bounds,
            bounds_ns: bounds.iter().map(|b| (b * 1e9) as u64).collect(),
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_ns: AtomicU64::new(0),
        }
    }

    /// Records one observation.
    pub fn observe(&self, took: Duration) {
        let ns = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        let bucket = self.bounds_ns.partition_point(|bound| *bound < ns);
        if let Some(count) = self.counts.get(bucket) {
            count.fetch_add(1, Relaxed);
        }
        self.sum_ns.fetch_add(ns, Relaxed);
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.counts.iter().map(|c| c.load(Relaxed)).sum()
    }

    /// Writes this histogram as one series of an open metric family.
    pub fn encode_series(&self, mut encoder: MetricEncoder) -> std::fmt::Result {
        let buckets: Vec<(f64, u64)> = self
            .bounds
            .iter()
            .copied()
            .chain(std::iter::once(f64::INFINITY))
            .zip(self.counts.iter().map(|c| c.load(Relaxed)))
            .collect();
        let count = buckets.iter().map(|(_, n)| n).sum();
        let sum = self.sum_ns.load(Relaxed) as f64 / 1e9;
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    /// Writes this histogram as a metric of its own, without labels.
    pub fn encode_into(
        &self,
        encoder: &mut DescriptorEncoder,
        name: &str,
        help: &str,
    ) -> std::fmt::Result {
        self.encode_series(encoder.encode_descriptor(name, help, None, MetricType::Histogram)?)
    }
}
