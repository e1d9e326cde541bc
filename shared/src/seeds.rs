//! Seeds: the one SplitMix64 mix, and every derivation of a random stream from the run seed.
//!
//! Every random stream of a run is a function of its seed, so a seeded run reproduces bit
//! for bit. This module is the single place that says which function: the trainer derives a
//! seed per round, per update and per simulated board; the device derives one per episode
//! for the plant's initial state, one for its exploration noise and one for a simulated
//! plant's parameter draws and sensor noise. Each derivation keeps
//! the exact arithmetic it was introduced with (they differ in whether the golden-gamma
//! increment is added and how many times the mix is applied); changing any of them changes
//! every seeded run, so the tests below pin their outputs.
//!
//! SplitMix64 is Steele, Lea and Flood's generator (2014): a counter advanced by the golden
//! gamma, scrambled by two xor-shift-multiply rounds. Not cryptographic.

/// The odd constant SplitMix64 advances its counter by (2⁶⁴ / φ, rounded to odd).
pub const GOLDEN_GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

/// Odd multiplier spreading a device index over 64 bits in [`round_seed`].
const DEVICE_GAMMA: u64 = 0xD1B5_4A32_D192_ED03;

/// SplitMix64's output function: two xor-shift-multiply rounds and a final xor-shift. A
/// bijection on `u64` that spreads every input bit over the whole output.
pub const fn scramble(z: u64) -> u64 {
    let z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    let z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// One SplitMix64 step from counter value `z`: [`scramble`]`(z + GOLDEN_GAMMA)`. Mixes a
/// value into a well-distributed one.
pub const fn mix64(z: u64) -> u64 {
    scramble(z.wrapping_add(GOLDEN_GAMMA))
}

/// The SplitMix64 generator: one `u64` of state, every seed (0 included) a good stream. The
/// plant models draw initial states from it; tests drive mutations with it.
#[derive(Clone, Debug)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// A generator whose stream is fully determined by `seed`.
    pub const fn new(seed: u64) -> Self {
        SplitMix64 { state: seed }
    }

    /// The next 64 uniformly distributed bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(GOLDEN_GAMMA);
        scramble(self.state)
    }

    /// A uniform value in `[0, 1)`: the top 24 bits, so every value is an exact f32.
    pub fn next_unit(&mut self) -> f32 {
        const SCALE: f32 = 1.0 / (1u32 << 24) as f32;
        (self.next_u64() >> 40) as f32 * SCALE
    }

    /// A uniform value in `[low, high)` (for `low < high`).
    pub fn uniform(&mut self, low: f32, high: f32) -> f32 {
        low + (high - low) * self.next_unit()
    }
}

/// The device's random streams within one episode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum EpisodeStream {
    /// The plant's initial state (simulated plants).
    InitialState = 0,
    /// The exploration noise of the sampler.
    Exploration = 1,
    /// A simulated plant's parameter values for the episode (drawn from their ranges) and
    /// its sensor noise.
    PlantVariation = 2,
}

/// Seed of `stream` in episode `episode` of a run the host started with `run_seed` (the
/// [`crate::message::RunCommand`]'s seed): the mix applied twice.
pub const fn episode_seed(run_seed: u64, episode: u32, stream: EpisodeStream) -> u64 {
    mix64(mix64(run_seed ^ (((episode as u64) << 8) | stream as u64)))
}

/// Seed the trainer sends to device `device` (its index in the fleet) for training
/// iteration `iteration` of a run seeded `run_seed`: one scramble of the three, each index
/// spread by its own odd constant, without the golden-gamma increment.
pub const fn round_seed(run_seed: u64, iteration: u64, device: u64) -> u64 {
    scramble(run_seed ^ iteration.wrapping_mul(GOLDEN_GAMMA) ^ device.wrapping_mul(DEVICE_GAMMA))
}

/// Seed the trainer sends to device `device` for an evaluation: the round seed of an
/// iteration number training never reaches.
pub const fn evaluation_seed(run_seed: u64, device: u64) -> u64 {
    round_seed(run_seed, u64::MAX, device)
}

/// Seed of the learner's random stream (the critic's minibatch order) for update number
/// `update` (0-based) of a run seeded `run_seed`: two mixes, so neighbouring seeds and
/// updates give unrelated streams, and none coincides with the initialisation stream seeded
/// by `run_seed` itself.
pub const fn update_seed(run_seed: u64, update: u64) -> u64 {
    mix64(mix64(run_seed) ^ update)
}

/// Seed of simulated board number `board` (its link emulation's faults) in a run seeded
/// `run_seed`.
pub const fn board_seed(run_seed: u64, board: u32) -> u64 {
    run_seed ^ (((board as u64) << 32) | 0x51)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix64_matches_the_reference_stream() {
        // First outputs for seed 1234567 from the reference C implementation.
        let mut g = SplitMix64::new(1_234_567);
        assert_eq!(g.next_u64(), 6_457_827_717_110_365_317);
        assert_eq!(g.next_u64(), 3_203_168_211_198_807_973);
        assert_eq!(g.next_u64(), 9_817_491_932_198_370_423);
        // The generator's step is the mix of its previous state.
        let mut h = SplitMix64::new(42);
        assert_eq!(h.next_u64(), mix64(42));
    }

    #[test]
    fn uniform_stays_in_range() {
        let mut g = SplitMix64::new(0);
        for _ in 0..10_000 {
            let v = g.uniform(-0.05, 0.05);
            assert!((-0.05..0.05).contains(&v));
        }
    }

    /// The derivations' outputs as they were when each was introduced: a change here
    /// changes every seeded run.
    #[test]
    fn derivations_keep_their_values() {
        assert_eq!(
            episode_seed(0, 0, EpisodeStream::InitialState),
            0xA706_DD2F_4D19_7E6F
        );
        assert_eq!(
            episode_seed(7, 3, EpisodeStream::Exploration),
            0x8D8B_53FD_91D8_0673
        );
        assert_eq!(
            episode_seed(7, 3, EpisodeStream::PlantVariation),
            0x0A23_4456_60EA_459F
        );
        assert_eq!(round_seed(0, 0, 0), 0);
        assert_eq!(round_seed(1, 2, 3), 0x4FFD_E32F_18BC_9A36);
        assert_eq!(evaluation_seed(5, 1), round_seed(5, u64::MAX, 1));
        assert_eq!(update_seed(0, 0), 0xA706_DD2F_4D19_7E6F);
        assert_eq!(board_seed(9, 2), 9 ^ 0x2_0000_0051);
    }

    #[test]
    fn update_seeds_differ_between_updates_and_runs() {
        let mut seeds = [0u64; 4 * 64];
        for (i, slot) in seeds.iter_mut().enumerate() {
            *slot = update_seed(i as u64 / 64, i as u64 % 64);
        }
        seeds.sort_unstable();
        assert!(seeds.windows(2).all(|w| w[0] != w[1]));
        assert!((0..64).all(|s| update_seed(s, 0) != s));
    }
}
