//! The seeded fault generator: which injected failure, if any, hits a
//! request, and how many of each took effect.
//!
//! Every class is drawn on every request, whether or not an earlier one hit,
//! so the sequence of outcomes depends only on the seed and the number of
//! requests, and a run with a given seed repeats.

use std::time::Duration;

use crate::sim::{EchoHeaders, FaultConfig, FaultCounts};

/// The faults drawn for one request. Every class is drawn every time, so the
/// sequence of draws does not depend on which faults hit.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct HttpFault {
    pub(crate) status: Option<u16>,
    pub(crate) retry_after_secs: u64,
}

/// The exec-level faults drawn for one exec request.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ExecFaults {
    pub(crate) vanish: bool,
    pub(crate) drop_before: bool,
    pub(crate) slow: Option<Duration>,
    pub(crate) drop_after: bool,
    pub(crate) corrupt: bool,
}

/// The create-level faults drawn for one `POST /instance`.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct CreateFaults {
    /// Create, then drop the connection without an answer.
    pub(crate) lost: bool,
    /// Hold the request this long, then create and answer.
    pub(crate) late: Option<Duration>,
}

/// Mixed into the seed of the create faults' own sequence.
const CREATE_SEED_SALT: u64 = 0x6372_6561_7465_2121;

/// The fault settings, the seeded random sources they are drawn from, and
/// the counts of faults that took effect.
#[derive(Debug)]
pub(crate) struct FaultDice {
    config: FaultConfig,
    rng: fastrand::Rng,
    /// The create faults' own sequence: drawing them does not shift the
    /// sequence of the other faults, so seeded runs without them repeat
    /// what they always did.
    create_rng: fastrand::Rng,
    counts: FaultCounts,
}

impl FaultDice {
    pub(crate) fn new(config: FaultConfig) -> FaultDice {
        FaultDice {
            rng: fastrand::Rng::with_seed(config.seed),
            create_rng: fastrand::Rng::with_seed(config.seed ^ CREATE_SEED_SALT),
            config,
            counts: FaultCounts::default(),
        }
    }

    /// New settings, rates clamped to `0..=1` (NaN is 0), and the random
    /// source reseeded from them. The counts carry on.
    pub(crate) fn set(&mut self, mut config: FaultConfig) {
        for rate in [
            &mut config.error_500,
            &mut config.error_502,
            &mut config.error_503,
            &mut config.error_429,
            &mut config.drop_before,
            &mut config.drop_after,
            &mut config.slow,
            &mut config.boot_error,
            &mut config.vanish,
            &mut config.create_lost,
            &mut config.create_late,
        ] {
            *rate = if rate.is_nan() {
                0.0
            } else {
                rate.clamp(0.0, 1.0)
            };
        }
        self.rng = fastrand::Rng::with_seed(config.seed);
        self.create_rng = fastrand::Rng::with_seed(config.seed ^ CREATE_SEED_SALT);
        self.config = config;
    }

    /// Draws the HTTP-level faults of one request.
    pub(crate) fn draw_http(&mut self) -> HttpFault {
        let f = self.config.clone();
        let hit_429 = self.draw(f.error_429);
        let hit_503 = self.draw(f.error_503);
        let hit_502 = self.draw(f.error_502);
        let hit_500 = self.draw(f.error_500);
        let status = if hit_429 {
            self.counts.error_429 += 1;
            Some(429)
        } else if hit_503 {
            self.counts.error_503 += 1;
            Some(503)
        } else if hit_502 {
            self.counts.error_502 += 1;
            Some(502)
        } else if hit_500 {
            self.counts.error_500 += 1;
            Some(500)
        } else {
            None
        };
        HttpFault {
            status,
            retry_after_secs: f.retry_after_secs,
        }
    }

    /// The hostile behaviours that are always on (not drawn).
    pub(crate) fn hostile(&self) -> (Option<EchoHeaders>, Option<Duration>) {
        (self.config.echo_headers, self.config.trickle)
    }

    /// Draws the exec-level faults of one exec request. They are counted
    /// when they take effect, see the `count_*` methods.
    pub(crate) fn draw_exec(&mut self) -> ExecFaults {
        let f = self.config.clone();
        ExecFaults {
            vanish: self.draw(f.vanish),
            drop_before: self.draw(f.drop_before),
            slow: self.draw(f.slow).then_some(f.slow_by),
            drop_after: self.draw(f.drop_after),
            corrupt: f.corrupt > 0.0 && self.draw(f.corrupt),
        }
    }

    /// Draws (and counts) whether a new instance will fail to boot.
    pub(crate) fn draw_boot_error(&mut self) -> bool {
        let fails = self.draw(self.config.boot_error);
        if fails {
            self.counts.boot_error += 1;
        }
        fails
    }

    /// Draws the create-level faults of one `POST /instance` (both always,
    /// so the sequence is stable). Counted when they take effect.
    pub(crate) fn draw_create(&mut self) -> CreateFaults {
        let lost = self.create_rng.f64();
        let late = self.create_rng.f64();
        let f = &self.config;
        CreateFaults {
            lost: f.create_lost > 0.0 && lost < f.create_lost,
            late: (f.create_late > 0.0 && late < f.create_late).then_some(f.create_late_by),
        }
    }

    pub(crate) fn count_create_lost(&mut self) {
        self.counts.create_lost += 1;
    }

    pub(crate) fn count_create_late(&mut self) {
        self.counts.create_late += 1;
    }

    fn draw(&mut self, rate: f64) -> bool {
        // Always consume one number so the sequence is stable.
        let x = self.rng.f64();
        rate > 0.0 && x < rate
    }

    pub(crate) fn count_vanish(&mut self) {
        self.counts.vanish += 1;
    }

    pub(crate) fn count_drop_before(&mut self) {
        self.counts.drop_before += 1;
    }

    pub(crate) fn count_drop_after(&mut self) {
        self.counts.drop_after += 1;
    }

    pub(crate) fn count_slow(&mut self) {
        self.counts.slow += 1;
    }

    /// How many faults of each class took effect.
    pub(crate) fn counts(&self) -> FaultCounts {
        self.counts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_draws_repeat_with_the_same_seed() {
        let faults = FaultConfig {
            error_500: 0.5,
            seed: 42,
            ..FaultConfig::default()
        };
        let draw = |n| {
            let mut dice = FaultDice::new(faults.clone());
            (0..n).map(|_| dice.draw_http().status).collect::<Vec<_>>()
        };
        let a = draw(64);
        assert_eq!(a, draw(64));
        assert!(a.contains(&Some(500)) && a.contains(&None));
    }

    #[test]
    fn create_faults_do_not_shift_the_other_faults() {
        let faults = FaultConfig {
            error_500: 0.5,
            seed: 3,
            ..FaultConfig::default()
        };
        let mut plain = FaultDice::new(faults.clone());
        let mut with_creates = FaultDice::new(FaultConfig {
            create_lost: 0.5,
            create_late: 0.5,
            ..faults
        });
        let mut hits = (0, 0);
        for _ in 0..64 {
            let c = with_creates.draw_create();
            hits.0 += u32::from(c.lost);
            hits.1 += u32::from(c.late.is_some());
            assert_eq!(plain.draw_http().status, with_creates.draw_http().status);
        }
        assert!(hits.0 > 0 && hits.1 > 0, "{hits:?}");
    }

    #[test]
    fn rates_are_clamped_and_nan_is_zero() {
        let mut dice = FaultDice::new(FaultConfig::default());
        dice.set(FaultConfig {
            error_500: 7.0,
            error_503: f64::NAN,
            ..FaultConfig::default()
        });
        for _ in 0..16 {
            assert_eq!(dice.draw_http().status, Some(500));
        }
        assert_eq!(dice.counts().error_503, 0);
    }
}
