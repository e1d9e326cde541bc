//! Which `metrics.jsonl` field each TensorBoard scalar shows.
//!
//! Tags are grouped as Stable-Baselines3 users know them (`rollout/`, `train/`, `time/`),
//! plus tether's own (`link/`, `devices/`, `device/`). Every tag names the field of
//! [`IterationMetrics`] it is read from, by its JSON name, and the value is taken from that
//! record's JSON form: a TensorBoard scalar cannot exist without its twin in `metrics.jsonl`,
//! and the two can never disagree.

use crate::run::metrics::IterationMetrics;

/// `(TensorBoard tag, metrics.jsonl field)` for every scalar written each iteration.
pub const SCALARS: &[(&str, &str)] = &[
    ("rollout/ep_rew_mean", "mean_return"),
    ("rollout/ep_len_mean", "mean_episode_length"),
    ("train/kl", "kl"),
    ("train/entropy", "entropy"),
    ("train/value_loss", "value_loss"),
    ("train/explained_variance", "explained_variance"),
    ("train/line_search_steps", "line_search_steps"),
    ("time/fps", "steps_per_s"),
    ("time/update_s", "update_s"),
    ("time/update_gradient_s", "update_gradient_s"),
    ("time/update_cg_s", "update_cg_s"),
    ("time/update_line_search_s", "update_line_search_s"),
    ("time/value_fit_s", "value_fit_s"),
    ("link/rejected_frames", "rejected_frames"),
    ("link/discarded_episodes", "discarded_episodes"),
    ("link/reconnects", "reconnects"),
    ("link/resend_requests", "resend_requests"),
    ("link/recovered_steps", "recovered_steps"),
    ("link/cut_episodes", "cut_episodes"),
    ("link/lost_steps", "lost_steps"),
    ("devices/active", "devices_active"),
    ("device/worst_step_us", "device_worst_step_us"),
    ("device/missed_deadlines", "device_missed_deadlines"),
    ("device/control_period_us", "control_period_us"),
    ("rollout/action_change_mean", "action_change_mean"),
    ("rollout/action_hf_share", "action_hf_share"),
    ("device/rate_limited_steps", "rate_limited_steps"),
    ("eval/mean_reward", "eval_mean_return"),
    ("eval/mean_ep_length", "eval_mean_episode_length"),
];

/// The step every scalar of an iteration is logged at: environment steps so far.
pub fn step_of(metrics: &IterationMetrics) -> i64 {
    i64::try_from(metrics.env_steps).unwrap_or(i64::MAX)
}

/// Each tag of [`SCALARS`] with its value in `metrics` as TensorBoard stores it (f32). A
/// field written as `null` (an undefined float) is NaN; a field missing from the record's
/// JSON or not a number is left out: only the `eval_` fields of an iteration that ran no
/// evaluation are (the tests make sure of both).
pub fn scalar_values(metrics: &IterationMetrics) -> Vec<(&'static str, f32)> {
    let Ok(serde_json::Value::Object(fields)) = serde_json::to_value(metrics) else {
        return Vec::new();
    };
    SCALARS
        .iter()
        .filter_map(|&(tag, field)| match fields.get(field)? {
            serde_json::Value::Number(n) => Some((tag, n.as_f64()? as f32)),
            serde_json::Value::Null => Some((tag, f32::NAN)),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_tag_has_a_numeric_twin_field() {
        let metrics = IterationMetrics {
            env_steps: 2048,
            mean_return: -150.5,
            mean_episode_length: 200.0,
            kl: f64::NAN,
            line_search_steps: 3,
            device_worst_step_us: 812,
            device_missed_deadlines: 2,
            control_period_us: 20_000,
            devices_active: 2,
            action_change_mean: 0.5,
            action_hf_share: f64::NAN,
            rate_limited_steps: 7,
            eval_mean_return: Some(1101.5),
            eval_mean_episode_length: Some(1250.0),
            eval_best: Some(true),
            ..IterationMetrics::default()
        };
        let values = scalar_values(&metrics);
        let tags: Vec<_> = values.iter().map(|(t, _)| *t).collect();
        let expected: Vec<_> = SCALARS.iter().map(|(t, _)| *t).collect();
        assert_eq!(tags, expected, "a tag lost its twin field");
        let get = |tag: &str| values.iter().find(|(t, _)| *t == tag).map(|(_, v)| *v);
        assert_eq!(get("rollout/ep_rew_mean"), Some(-150.5));
        assert_eq!(get("rollout/ep_len_mean"), Some(200.0));
        assert!(get("train/kl").is_some_and(f32::is_nan));
        assert_eq!(get("train/line_search_steps"), Some(3.0));
        assert_eq!(get("device/worst_step_us"), Some(812.0));
        assert_eq!(get("device/missed_deadlines"), Some(2.0));
        assert_eq!(get("device/control_period_us"), Some(20_000.0));
        assert_eq!(get("devices/active"), Some(2.0));
        assert_eq!(get("rollout/action_change_mean"), Some(0.5));
        assert!(get("rollout/action_hf_share").is_some_and(f32::is_nan));
        assert_eq!(get("device/rate_limited_steps"), Some(7.0));
        assert_eq!(get("eval/mean_reward"), Some(1101.5));
        assert_eq!(get("eval/mean_ep_length"), Some(1250.0));
        assert_eq!(step_of(&metrics), 2048);
    }

    /// An iteration without an evaluation writes no `eval/` point (TensorBoard would draw
    /// a NaN as a gap at every other iteration); every other tag is still there.
    #[test]
    fn iterations_without_an_evaluation_leave_the_eval_tags_out() {
        let values = scalar_values(&IterationMetrics::default());
        let tags: Vec<_> = values.iter().map(|(t, _)| *t).collect();
        let expected: Vec<_> = SCALARS
            .iter()
            .map(|(t, _)| *t)
            .filter(|t| !t.starts_with("eval/"))
            .collect();
        assert_eq!(tags, expected);
    }

    #[test]
    fn tags_are_unique_and_grouped() {
        let mut tags: Vec<_> = SCALARS.iter().map(|(t, _)| *t).collect();
        assert!(tags.iter().all(|t| t.split('/').count() == 2), "{tags:?}");
        tags.sort_unstable();
        tags.dedup();
        assert_eq!(tags.len(), SCALARS.len());
    }
}
