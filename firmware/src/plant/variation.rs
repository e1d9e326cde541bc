//! What a plant model varies from episode to episode: the settings a host sent and this
//! episode's imperfections. Each model keeps one [`Variation`] beside its physical
//! constants and forwards [`Plant::set_params`](super::Plant::set_params) and
//! [`Plant::vary`](super::Plant::vary) to it.

use tether_shared::message::PlantParams;
use tether_shared::seeds::SplitMix64;

use super::imperfections::{IMPERFECTION_NAMES, Imperfections};
use super::params::{ParamRefusal, ParamSettings, ParamSpec};

/// The host's settings for a model's `N` parameters and the imperfections of the current
/// episode.
#[derive(Clone, Debug, PartialEq)]
pub struct Variation<const N: usize> {
    settings: ParamSettings<N>,
    /// This episode's imperfections (none until the first [`Variation::draw`]).
    pub imperfections: Imperfections,
}

impl<const N: usize> Variation<N> {
    /// Every parameter of `table` at its default, no imperfection.
    pub const fn new(table: &'static [ParamSpec; N]) -> Self {
        Variation {
            settings: ParamSettings::new(table),
            imperfections: Imperfections::none(),
        }
    }

    /// Replaces the settings (see [`ParamSettings::set`]).
    pub fn set(&mut self, params: &PlantParams) -> Result<(), ParamRefusal> {
        self.settings.set(params, &IMPERFECTION_NAMES)
    }

    /// Refuses every later setting (see [`ParamSettings::lock`]).
    pub fn lock(&mut self) {
        self.settings.lock();
    }

    /// Draws an episode's values from `seed`: sets the episode's imperfections (their noise
    /// seeded from the same stream) and returns every value in table order, for the model
    /// to take its physical constants from.
    pub fn draw(&mut self, seed: u64) -> [f32; N] {
        let mut rng = SplitMix64::new(seed);
        let values = self.settings.draw(&mut rng);
        self.imperfections = Imperfections::of_draw(self.settings.table(), &values, rng.next_u64());
        values
    }
}
