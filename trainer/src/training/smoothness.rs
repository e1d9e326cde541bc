//! How smoothly a round drove the plants, measured on the actions the plants received:
//! the sampled actions of the records replayed through the device's own clamp and action
//! rate limit (`tether_firmware::rate_limit`, the same f32 arithmetic), a discrete choice
//! as its index.
//!
//! - `action_change_mean`: the mean `|aₜ − aₜ₋₁|` over consecutive steps within episodes
//!   (and over the action's dimensions), in action units;
//! - `action_hf_share`: per episode, the share of the action's energy (mean removed) at
//!   frequencies above a quarter of the control rate, averaged over the episodes. White
//!   noise puts half its energy there, a motor command that moves with the state almost
//!   none.
//!
//! The spectrum is a fast Fourier transform of each episode (`rustfft`, any length in
//! `O(n log n)`); a direct sum over the high band's bins cost `n²/4` multiply-adds per
//! episode and dimension, 4.5 % of a randomised qube run's CPU with its 1250-step episodes.
//! The tally plans each length once and keeps its buffers, so a round's episodes allocate
//! nothing for their spectra.

use std::fmt;

use rustfft::FftPlanner;
use rustfft::num_complex::Complex;

use tether_firmware::rate_limit::{ActionRateLimit, resting_action};
use tether_firmware::safety::clamp_continuous;
use tether_shared::ActionSpace;
use tether_shared::plant::MAX_ACTION_DIM;

use crate::rollout::{CollectedEpisode, DeviceRollout};

/// Smoothness of one round's actions (NaN where there was nothing to measure).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Smoothness {
    /// Mean absolute change of the applied action from one step to the next within
    /// episodes, action units.
    pub action_change_mean: f64,
    /// Mean over episodes of the share of the applied action's energy above a quarter of
    /// the control rate, in [0, 1].
    pub action_hf_share: f64,
}

/// Sums over a round's episodes.
#[derive(Default)]
pub struct SmoothnessTally {
    change_sum: f64,
    pairs: u64,
    share_sum: f64,
    episodes: u64,
    spectrum: BandEnergy,
}

impl fmt::Debug for SmoothnessTally {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmoothnessTally")
            .field("change_sum", &self.change_sum)
            .field("pairs", &self.pairs)
            .field("share_sum", &self.share_sum)
            .field("episodes", &self.episodes)
            .finish_non_exhaustive()
    }
}

/// Splits a signal's energy at a quarter of the sampling rate with fast Fourier
/// transforms: a planner that keeps one plan per length, and buffers reused from one
/// signal to the next.
struct BandEnergy {
    planner: FftPlanner<f64>,
    buffer: Vec<Complex<f64>>,
    scratch: Vec<Complex<f64>>,
}

impl Default for BandEnergy {
    fn default() -> Self {
        Self {
            planner: FftPlanner::new(),
            buffer: Vec::new(),
            scratch: Vec::new(),
        }
    }
}

impl Smoothness {
    /// The smoothness of a round's accepted episodes, each replayed with its device's rate
    /// limit, on a plant acting in `space`.
    pub fn of_round<'a>(
        rollouts: impl IntoIterator<Item = &'a DeviceRollout>,
        space: &ActionSpace,
    ) -> Self {
        let mut tally = SmoothnessTally::default();
        for rollout in rollouts {
            for episode in &rollout.episodes {
                tally.add(episode, space, rollout.action_rate_limit.as_ref());
            }
        }
        tally.finish()
    }
}

impl SmoothnessTally {
    /// Adds one episode of a device whose action rate limit is `limit`, on a plant acting
    /// in `space`.
    pub fn add(
        &mut self,
        episode: &CollectedEpisode,
        space: &ActionSpace,
        limit: Option<&ActionRateLimit>,
    ) {
        let (applied, dims) = applied_actions(episode, space, limit);
        if dims == 0 {
            return;
        }
        let steps = applied.len() / dims;
        for pair in applied.windows(2 * dims).step_by(dims) {
            let (before, after) = pair.split_at(dims);
            let change: f64 = before
                .iter()
                .zip(after)
                .map(|(a, b)| f64::from(b - a).abs())
                .sum();
            self.change_sum += change / dims as f64;
            self.pairs += 1;
        }
        let (mut high, mut total) = (0.0, 0.0);
        for d in 0..dims {
            let signal = (0..steps).map(|t| f64::from(applied[t * dims + d]));
            let (h, e) = self.spectrum.above_quarter_rate(signal);
            high += h;
            total += e;
        }
        if total > 0.0 {
            self.share_sum += high / total;
            self.episodes += 1;
        }
    }

    /// The round's figures.
    pub fn finish(&self) -> Smoothness {
        let mean = |sum: f64, n: u64| if n == 0 { f64::NAN } else { sum / n as f64 };
        Smoothness {
            action_change_mean: mean(self.change_sum, self.pairs),
            action_hf_share: mean(self.share_sum, self.episodes),
        }
    }
}

/// The actions the plant received in `episode`, step after step (`dims` values each), and
/// `dims`: each sampled continuous action clamped to the bounds, then rate limited from the
/// resting action the episode starts at; a discrete choice's index.
pub fn applied_actions(
    episode: &CollectedEpisode,
    space: &ActionSpace,
    limit: Option<&ActionRateLimit>,
) -> (Vec<f32>, usize) {
    let records = episode.trajectory.records();
    let mut out = Vec::with_capacity(records.len() * MAX_ACTION_DIM);
    let dims = match space {
        ActionSpace::Continuous { low, .. } => low.len().min(MAX_ACTION_DIM),
        ActionSpace::Discrete { .. } => 1,
    };
    let mut previous = [0.0f32; MAX_ACTION_DIM];
    resting_action(space, &mut previous[..dims]);
    for record in records.iter() {
        let mut action = [0.0f32; MAX_ACTION_DIM];
        let action = &mut action[..dims];
        match space {
            ActionSpace::Continuous { .. } => {
                action.copy_from_slice(&record.action[..dims]);
                clamp_continuous(space, action);
                if let Some(limit) = limit {
                    limit.apply(&mut previous[..dims], action);
                }
            }
            ActionSpace::Discrete { .. } => action[0] = record.action[0],
        }
        out.extend_from_slice(action);
    }
    (out, dims)
}

impl BandEnergy {
    /// `(energy above a quarter of the sampling rate, total energy)` of `signal` with its
    /// mean removed, both as `Σ_k |X_k|²` of its discrete Fourier transform (the total by
    /// Parseval: `n Σ x²`). Bin `k` of `n` is the frequency `min(k, n − k) / n` of the
    /// sampling rate, so the high band is the bins with `4·min(k, n − k) > n`. Signals of
    /// fewer than 4 samples have no band to split: `(0, 0)`.
    fn above_quarter_rate(&mut self, signal: impl ExactSizeIterator<Item = f64>) -> (f64, f64) {
        let n = signal.len();
        if n < 4 {
            return (0.0, 0.0);
        }
        self.buffer.clear();
        self.buffer.extend(signal.map(|v| Complex::new(v, 0.0)));
        let mean = self.buffer.iter().map(|c| c.re).sum::<f64>() / n as f64;
        let mut total = 0.0;
        for c in &mut self.buffer {
            c.re -= mean;
            total += c.re * c.re;
        }
        total *= n as f64;
        let fft = self.planner.plan_fft_forward(n);
        self.scratch
            .resize(fft.get_inplace_scratch_len(), Complex::default());
        fft.process_with_scratch(&mut self.buffer, &mut self.scratch);
        // Bins k and n − k carry the same frequency (the input is real): count the lower
        // half twice, except k = n/2, which is its own mirror.
        let high = ((n / 4 + 1)..=(n / 2))
            .filter(|&k| 4 * k > n)
            .map(|k| {
                let weight = if 2 * k == n { 1.0 } else { 2.0 };
                weight * self.buffer[k].norm_sqr()
            })
            .sum();
        (high, total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::f64::consts::TAU;
    use tether_shared::message::{RecordAction, RecordLayout};

    fn energy_above_quarter_rate(signal: &[f64]) -> (f64, f64) {
        BandEnergy::default().above_quarter_rate(signal.iter().copied())
    }

    /// The reference: the high band summed bin by bin, `n²/4` multiply-adds (what the
    /// tally computed before it used a fast transform), and the total by Parseval.
    fn direct_energy_above_quarter_rate(signal: &[f64]) -> (f64, f64) {
        let n = signal.len();
        let mean = signal.iter().sum::<f64>() / n as f64;
        let x: Vec<f64> = signal.iter().map(|v| v - mean).collect();
        let total = n as f64 * x.iter().map(|v| v * v).sum::<f64>();
        let mut high = 0.0;
        for k in (n / 4 + 1)..=(n / 2) {
            let (mut re, mut im) = (0.0, 0.0);
            for (t, v) in x.iter().enumerate() {
                let angle = TAU * ((k * t) % n) as f64 / n as f64;
                re += v * angle.cos();
                im -= v * angle.sin();
            }
            let weight = if 2 * k == n { 1.0 } else { 2.0 };
            high += weight * (re * re + im * im);
        }
        (high, total)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// The fast transform gives the direct sum's band energy and total, for odd and even
        /// lengths alike, and one `BandEnergy` reused across lengths (its cached plans and
        /// buffers) gives what a fresh one does.
        #[test]
        fn the_fast_band_energy_equals_the_direct_sum(
            first in (4usize..600).prop_flat_map(|n| proptest::collection::vec(-10.0f64..10.0, n)),
            second in (4usize..600).prop_flat_map(|n| proptest::collection::vec(-10.0f64..10.0, n)),
            offset in -100.0f64..100.0,
        ) {
            let mut bands = BandEnergy::default();
            for signal in [&first, &second, &first] {
                let signal: Vec<f64> = signal.iter().map(|v| v + offset).collect();
                let (high, total) = bands.above_quarter_rate(signal.iter().copied());
                let (direct_high, direct_total) = direct_energy_above_quarter_rate(&signal);
                prop_assert!(
                    (high - direct_high).abs() <= 1e-9 * direct_high.abs(),
                    "n {}: fast {high}, direct {direct_high}", signal.len()
                );
                prop_assert!(
                    (total - direct_total).abs() <= 1e-9 * direct_total,
                    "n {}: fast {total}, direct {direct_total}", signal.len()
                );
            }
        }
    }

    fn share(signal: &[f64]) -> f64 {
        let (high, total) = energy_above_quarter_rate(signal);
        high / total
    }

    #[test]
    fn slow_signals_have_no_high_band_energy_and_fast_ones_all() {
        let n = 200;
        let slow: Vec<f64> = (0..n)
            .map(|t| (TAU * 5.0 * t as f64 / n as f64).sin())
            .collect();
        assert!(share(&slow) < 1e-20, "{}", share(&slow));
        let alternating: Vec<f64> = (0..n)
            .map(|t| if t % 2 == 0 { 1.0 } else { -1.0 })
            .collect();
        assert!((share(&alternating) - 1.0).abs() < 1e-12);
        // A third of the rate is above a quarter; mixed with a slow one, its share of energy.
        let fast_and_slow: Vec<f64> = (0..n)
            .map(|t| {
                let t = t as f64 / n as f64;
                2.0 * (TAU * 4.0 * t).sin() + (TAU * 70.0 * t).sin()
            })
            .collect();
        assert!((share(&fast_and_slow) - 0.2).abs() < 1e-9);
        // White noise: about half.
        let mut rng = tether_shared::seeds::SplitMix64::new(3);
        let noise: Vec<f64> = (0..4000)
            .map(|_| f64::from(rng.next_unit()) - 0.5)
            .collect();
        assert!((share(&noise) - 0.5).abs() < 0.03, "{}", share(&noise));
        // Constant or too short: nothing.
        assert_eq!(energy_above_quarter_rate(&[3.0; 50]), (0.0, 0.0));
        assert_eq!(energy_above_quarter_rate(&[1.0, -1.0]), (0.0, 0.0));
    }

    /// The high band agrees with a direct sum over every bin of the transform.
    #[test]
    fn the_band_energy_is_the_dft_sum() {
        for n in [4usize, 5, 9, 16, 33] {
            let signal: Vec<f64> = (0..n)
                .map(|t| ((t * 7 % 5) as f64) - 1.3 * t as f64)
                .collect();
            let mean = signal.iter().sum::<f64>() / n as f64;
            let mut high = 0.0;
            let mut total = 0.0;
            for k in 0..n {
                let (mut re, mut im) = (0.0, 0.0);
                for (t, v) in signal.iter().enumerate() {
                    let angle = TAU * (k * t) as f64 / n as f64;
                    re += (v - mean) * angle.cos();
                    im -= (v - mean) * angle.sin();
                }
                let power = re * re + im * im;
                total += power;
                if 4 * k.min(n - k) > n {
                    high += power;
                }
            }
            let (h, e) = energy_above_quarter_rate(&signal);
            approx::assert_relative_eq!(h, high, max_relative = 1e-9, epsilon = 1e-9);
            approx::assert_relative_eq!(e, total, max_relative = 1e-9);
        }
    }

    fn episode(actions: &[f32]) -> CollectedEpisode {
        let layout = RecordLayout::new(1, RecordAction::Continuous { dim: 1 });
        let values: Vec<f32> = actions.iter().flat_map(|&a| [0.0, a, 0.0, 0.0]).collect();
        CollectedEpisode::of_records(layout, &values)
    }

    #[test]
    fn changes_are_measured_on_what_the_plant_received() {
        let space = ActionSpace::Continuous {
            low: heapless::Vec::from_slice(&[-1.0]).unwrap(),
            high: heapless::Vec::from_slice(&[1.0]).unwrap(),
        };
        let sampled = episode(&[0.5, 3.0, -0.5, -2.0]);
        let (applied, dims) = applied_actions(&sampled, &space, None);
        assert_eq!((applied, dims), (vec![0.5, 1.0, -0.5, -1.0], 1));
        let limit = ActionRateLimit::new(&[0.25]).unwrap();
        let (applied, _) = applied_actions(&sampled, &space, Some(&limit));
        assert_eq!(
            applied,
            vec![0.25, 0.5, 0.25, 0.0],
            "from rest, 0.25 per step"
        );
        let mut tally = SmoothnessTally::default();
        tally.add(&sampled, &space, None);
        let smooth = tally.finish();
        approx::assert_relative_eq!(smooth.action_change_mean, (0.5 + 1.5 + 0.5) / 3.0);
        // [0.5, 1, -0.5, -1] is a quarter of the rate exactly: none of it above.
        assert!(
            smooth.action_hf_share.abs() < 1e-12,
            "{}",
            smooth.action_hf_share
        );
        // Alternating between the bounds is all at half the rate; episodes average.
        tally.add(&episode(&[1.0, -1.0, 1.0, -1.0, 1.0, -1.0]), &space, None);
        let both = tally.finish();
        approx::assert_relative_eq!(both.action_hf_share, 0.5, epsilon = 1e-12);
        approx::assert_relative_eq!(both.action_change_mean, (2.5 + 5.0 * 2.0) / 8.0);
        let empty = SmoothnessTally::default().finish();
        assert!(empty.action_change_mean.is_nan() && empty.action_hf_share.is_nan());
    }
}
