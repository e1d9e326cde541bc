//! Backtracking line search along the natural-gradient direction (TRPO appendix C):
//! start from the largest step the quadratic KL model allows, `sqrt(2δ / sᵀHs)·s`, and
//! shrink it until the *measured* mean KL is within δ and the surrogate actually improved.
//! If no step qualifies the old parameters stay.

use nalgebra::DVector;

/// Line-search settings.
#[derive(Clone, Copy, Debug)]
pub struct LineSearchSettings {
    /// Trust-region radius δ: largest accepted mean KL(old ‖ new), nats.
    pub max_kl: f64,
    /// Factor applied to the step at each backtrack (0 < shrink < 1).
    pub shrink: f64,
    /// Backtracks after the full step (so at most `1 + max_backtracks` evaluations).
    pub max_backtracks: usize,
}

/// What one candidate measured.
#[derive(Clone, Copy, Debug)]
pub struct CandidateEvaluation {
    /// Surrogate objective at the candidate.
    pub surrogate: f64,
    /// Mean KL(old ‖ candidate), nats.
    pub kl: f64,
}

/// Outcome of the search.
#[derive(Clone, Debug)]
pub struct LineSearchResult {
    /// The accepted parameters, or `None` when every candidate failed.
    pub parameters: Option<DVector<f64>>,
    /// Backtracks performed (0 = the full step was taken or tried once).
    pub backtracks: usize,
    /// Linear prediction gᵀ·step of the last candidate tried.
    pub expected_improvement: f64,
    /// Measured surrogate(new) − surrogate(old) of the last candidate tried.
    pub actual_improvement: f64,
    /// actual / expected (0 when the expectation is not positive).
    pub improvement_ratio: f64,
    /// Measured mean KL of the last candidate tried, nats.
    pub kl: f64,
}

/// The full trust-region step `sqrt(2δ / sᵀHs)·s` for a search direction `s` with
/// curvature `sᵀHs`; `None` when the curvature is not positive and finite.
pub fn full_step(direction: &DVector<f64>, curvature: f64, max_kl: f64) -> Option<DVector<f64>> {
    if !(curvature.is_finite() && curvature > 0.0) {
        return None;
    }
    let scale = (2.0 * max_kl / curvature).sqrt();
    let step = direction * scale;
    step.iter().all(|v| v.is_finite()).then_some(step)
}

/// Searches `old + fraction·full_step`, fraction = 1, shrink, shrink², …; `gradient` is the
/// surrogate gradient at `old`, `surrogate_old` the surrogate there, `evaluate` measures a
/// candidate.
pub fn line_search(
    old: &DVector<f64>,
    full_step: &DVector<f64>,
    gradient: &DVector<f64>,
    surrogate_old: f64,
    settings: LineSearchSettings,
    mut evaluate: impl FnMut(&DVector<f64>) -> CandidateEvaluation,
) -> LineSearchResult {
    let full_expected = gradient.dot(full_step);
    let mut fraction = 1.0;
    let mut result = LineSearchResult {
        parameters: None,
        backtracks: 0,
        expected_improvement: 0.0,
        actual_improvement: 0.0,
        improvement_ratio: 0.0,
        kl: 0.0,
    };
    for backtracks in 0..=settings.max_backtracks {
        let candidate = old + full_step * fraction;
        let measured = evaluate(&candidate);
        let expected = full_expected * fraction;
        let actual = measured.surrogate - surrogate_old;
        result.backtracks = backtracks;
        result.expected_improvement = expected;
        result.actual_improvement = actual;
        result.improvement_ratio = if expected > 0.0 && actual.is_finite() {
            actual / expected
        } else {
            0.0
        };
        result.kl = measured.kl;
        let within_trust_region = measured.kl.is_finite() && measured.kl <= settings.max_kl;
        let improved = actual.is_finite() && actual > 0.0;
        if within_trust_region && improved && candidate.iter().all(|v| v.is_finite()) {
            result.parameters = Some(candidate);
            return result;
        }
        fraction *= settings.shrink;
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Toy problem: surrogate gᵀx − ½·c·|x|², KL = 0.45·|x|² (a little below the ½|x|²
    /// quadratic model the full step is sized with, so rounding cannot push it over δ).
    fn toy(curvature: f64) -> impl FnMut(&DVector<f64>) -> CandidateEvaluation {
        move |x: &DVector<f64>| CandidateEvaluation {
            surrogate: x[0] + x[1] - 0.5 * curvature * x.norm_squared(),
            kl: 0.45 * x.norm_squared(),
        }
    }

    fn settings() -> LineSearchSettings {
        LineSearchSettings {
            max_kl: 0.01,
            shrink: 0.8,
            max_backtracks: 10,
        }
    }

    fn setup() -> (DVector<f64>, DVector<f64>, DVector<f64>) {
        let old = DVector::zeros(2);
        let g = DVector::from_vec(vec![1.0, 1.0]);
        // H = I so s = g and sᵀHs = 2.
        let step = full_step(&g, 2.0, 0.01).expect("positive curvature");
        (old, g, step)
    }

    #[test]
    fn accepts_a_good_full_step_and_reports_the_ratio() {
        let (old, g, step) = setup();
        let r = line_search(&old, &step, &g, 0.0, settings(), toy(0.0));
        assert!(r.parameters.is_some());
        assert_eq!(r.backtracks, 0);
        approx::assert_relative_eq!(r.kl, 0.009, max_relative = 1e-12);
        approx::assert_relative_eq!(r.improvement_ratio, 1.0, max_relative = 1e-12);
        assert_eq!(r.parameters, Some(step));
    }

    #[test]
    fn backtracks_on_an_overshooting_step() {
        let (old, g, step) = setup();
        // Twice too long a step (KL 0.036) on a curved surrogate: accepted after 3
        // backtracks (0.8³ = 0.512 of it: KL 0.0094 ≤ 0.01).
        let r = line_search(&old, &(&step * 2.0), &g, 0.0, settings(), toy(10.0));
        assert!(r.parameters.is_some());
        assert_eq!(r.backtracks, 3, "{r:?}");
        assert!(r.kl <= 0.01 && r.actual_improvement > 0.0);
        assert!(r.improvement_ratio < 1.0);
    }

    #[test]
    fn refuses_a_step_that_never_improves_and_keeps_old_parameters() {
        let (old, g, step) = setup();
        let r = line_search(&old, &(-&step), &g, 0.0, settings(), toy(0.0));
        assert!(r.parameters.is_none());
        assert_eq!(r.backtracks, 10);
    }

    #[test]
    fn refuses_nan_measurements() {
        let (old, g, step) = setup();
        let r = line_search(&old, &step, &g, 0.0, settings(), |_| CandidateEvaluation {
            surrogate: f64::NAN,
            kl: f64::NAN,
        });
        assert!(r.parameters.is_none());
    }

    #[test]
    fn full_step_refuses_non_positive_or_nan_curvature() {
        let s = DVector::from_vec(vec![1.0]);
        assert!(full_step(&s, 0.0, 0.01).is_none());
        assert!(full_step(&s, -1.0, 0.01).is_none());
        assert!(full_step(&s, f64::NAN, 0.01).is_none());
        approx::assert_relative_eq!(full_step(&s, 2.0, 0.01).expect("ok")[0], 0.1);
    }
}
