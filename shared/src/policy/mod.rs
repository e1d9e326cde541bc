//! The policy both sides agree on: its shape ([`PolicySpec`]), the order of its flat f32
//! parameters, and the forward pass ([`PolicyView::forward`]) that the firmware runs at the
//! control rate and the trainer uses to check its own export, and the log-probabilities of
//! its actions.

mod forward;
mod log_prob;
mod spec;

pub use forward::{
    ForwardError, LayeredParams, PolicyView, TANH_FIXED_SCALE, TANH_P, TANH_Q, normalize, tanh,
};
pub use log_prob::{LogSoftmax, argmax, categorical_log_prob, gaussian_log_prob};
pub use spec::{
    MAX_HIDDEN_LAYERS, MAX_LAYER_WIDTH, NORMALIZED_OBS_CLIP, PolicyHead, PolicySpec, SpecError,
};
