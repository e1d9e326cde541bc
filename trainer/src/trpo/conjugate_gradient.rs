//! Conjugate gradient for `H x = b` with `H` given only as a product `v ↦ H v` (the damped
//! Fisher), started from zero as in TRPO. It never returns a non-finite solution: a
//! non-positive or non-finite curvature `pᵀHp`, or a non-finite update, ends the solve with
//! the last good iterate and says why.

use nalgebra::DVector;

/// Why the solve stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CgTermination {
    /// The squared residual fell below the tolerance.
    Converged,
    /// The iteration cap was reached first (normal for TRPO's 10–15 steps).
    IterationCap,
    /// `pᵀHp ≤ 0`: `H` is not positive definite along the search direction.
    NonPositiveCurvature,
    /// A NaN or infinity appeared (in `b`, in `Hp` or in the update).
    NonFinite,
}

/// Result of a solve.
#[derive(Clone, Debug)]
pub struct ConjugateGradientResult {
    /// The approximate solution (zero if the first step already failed); always finite.
    pub solution: DVector<f64>,
    /// Products with `H` spent.
    pub iterations: usize,
    /// Squared residual norm `|b − H x|²` of `solution`.
    pub residual_norm_squared: f64,
    /// Why it stopped.
    pub termination: CgTermination,
}

/// Solves `H x = b` from `x = 0` for at most `max_iterations` products, stopping when the
/// squared residual drops below `residual_tolerance` (SB3 uses 1e-10).
pub fn conjugate_gradient(
    mut hessian_vector_product: impl FnMut(&DVector<f64>) -> DVector<f64>,
    b: &DVector<f64>,
    max_iterations: usize,
    residual_tolerance: f64,
) -> ConjugateGradientResult {
    let mut x = DVector::zeros(b.len());
    let mut residual = b.clone();
    let mut direction = b.clone();
    let mut rr = residual.norm_squared();
    let result = |solution, iterations, rr, termination| ConjugateGradientResult {
        solution,
        iterations,
        residual_norm_squared: rr,
        termination,
    };
    if !rr.is_finite() {
        return result(x, 0, f64::INFINITY, CgTermination::NonFinite);
    }
    for iteration in 0..max_iterations {
        if rr < residual_tolerance {
            return result(x, iteration, rr, CgTermination::Converged);
        }
        let hp = hessian_vector_product(&direction);
        let curvature = direction.dot(&hp);
        if !curvature.is_finite() {
            return result(x, iteration + 1, rr, CgTermination::NonFinite);
        }
        if curvature <= 0.0 {
            return result(x, iteration + 1, rr, CgTermination::NonPositiveCurvature);
        }
        let alpha = rr / curvature;
        let next_x = &x + &direction * alpha;
        let next_residual = &residual - &hp * alpha;
        let next_rr = next_residual.norm_squared();
        if !next_rr.is_finite() || next_x.iter().any(|v| !v.is_finite()) {
            return result(x, iteration + 1, rr, CgTermination::NonFinite);
        }
        x = next_x;
        residual = next_residual;
        let beta = next_rr / rr;
        rr = next_rr;
        direction = &residual + &direction * beta;
    }
    let termination = if rr < residual_tolerance {
        CgTermination::Converged
    } else {
        CgTermination::IterationCap
    };
    result(x, max_iterations, rr, termination)
}

#[cfg(test)]
mod tests {
    use super::*;
    use nalgebra::DMatrix;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]
        #[test]
        fn solves_random_spd_systems_to_tolerance(
            n in 2usize..12,
            entries in proptest::collection::vec(-1.0f64..1.0, 144),
            rhs in proptest::collection::vec(-1.0f64..1.0, 12),
        ) {
            let a = DMatrix::from_fn(n, n, |i, j| entries[i * 12 + j]);
            let h = &a * a.transpose() + DMatrix::identity(n, n) * 0.5;
            let b = DVector::from_fn(n, |i, _| rhs[i]);
            let solved = conjugate_gradient(|v| &h * v, &b, 10 * n, 1e-20);
            prop_assert_eq!(solved.termination, CgTermination::Converged);
            let residual = (&h * &solved.solution - &b).norm();
            prop_assert!(residual < 1e-8, "residual {}", residual);
        }
    }

    #[test]
    fn stops_at_the_iteration_cap_with_a_finite_partial_solution() {
        let h = DMatrix::from_diagonal(&DVector::from_fn(30, |i, _| 1.0 + i as f64));
        let b = DVector::from_element(30, 1.0);
        let solved = conjugate_gradient(|v| &h * v, &b, 3, 1e-10);
        assert_eq!(solved.termination, CgTermination::IterationCap);
        assert_eq!(solved.iterations, 3);
        assert!(solved.residual_norm_squared < b.norm_squared());
    }

    #[test]
    fn zero_matrix_ends_safely_with_zero_solution() {
        let b = DVector::from_element(4, 1.0);
        let solved = conjugate_gradient(|v| v * 0.0, &b, 15, 1e-10);
        assert_eq!(solved.termination, CgTermination::NonPositiveCurvature);
        assert_eq!(solved.solution, DVector::zeros(4));
    }

    #[test]
    fn negative_curvature_ends_safely() {
        let h = DMatrix::from_diagonal(&DVector::from_vec(vec![1.0, -2.0]));
        let b = DVector::from_vec(vec![1.0, 1.0]);
        let solved = conjugate_gradient(|v| &h * v, &b, 15, 1e-10);
        assert_eq!(solved.termination, CgTermination::NonPositiveCurvature);
        assert!(solved.solution.iter().all(|v| v.is_finite()));
    }

    #[test]
    fn nan_in_the_product_or_the_right_hand_side_ends_safely() {
        let b = DVector::from_element(3, 1.0);
        let solved = conjugate_gradient(|v| v.map(|_| f64::NAN), &b, 15, 1e-10);
        assert_eq!(solved.termination, CgTermination::NonFinite);
        assert_eq!(solved.solution, DVector::zeros(3));
        let mut nan_b = b.clone();
        nan_b[1] = f64::NAN;
        let solved = conjugate_gradient(|v| v.clone(), &nan_b, 15, 1e-10);
        assert_eq!(solved.termination, CgTermination::NonFinite);
        assert_eq!(solved.iterations, 0);
        assert!(solved.solution.iter().all(|v| v.is_finite()));
    }

    #[test]
    fn zero_right_hand_side_converges_immediately() {
        let solved = conjugate_gradient(|v| v.clone(), &DVector::zeros(3), 15, 1e-10);
        assert_eq!(solved.termination, CgTermination::Converged);
        assert_eq!(solved.iterations, 0);
    }
}
