//! The numeric kernels under the MLP's passes: the matrix products (blocked through
//! `matrixmultiply`, or loops for thin shapes), the element-wise passes (bias, tanh and its
//! derivative) and the f64 tanh. Everything is generic over the pass's scalar ([`Real`]:
//! f32 or f64, chosen by [`Precision`]); each hot loop is compiled three times (baseline,
//! AVX2, AVX-512F) and picked at run time.
//!
//! - [`gemm`]: `W·H`, `U·Hᵀ` and `Wᵀ·U` in the flat parameter layout;
//! - [`register_tiles`]: those products in f32 with AVX-512F, without packing, bit for bit
//!   `matrixmultiply`'s;
//! - [`elementwise`]: bias, tanh and `1 − h²` over a batch, bias gradients;
//! - [`tanh`]: branch-free `tanh` in f64, and the device's in f32.

/// Defines `fn $name(args)` calling `$imp(args)`, compiled twice more, with AVX-512F and
/// with AVX2, and picked at run time on x86-64 CPUs that have them (the baseline target
/// has only SSE2's 2-lane vectors; these loops are the element-wise and thin-product work
/// between the products; AVX-512 doubles the lanes again, and the update's tanh pass alone
/// was 8 % of a run's profile). Results are bit-identical in every arm: the vectoriser keeps
/// the scalar code's IEEE operations and their order, and Rust never contracts `a·b + c`
/// into an FMA on its own (the FMA feature that AVX-512F implies changes no result). An
/// optional `<T: Bound>` makes the trio generic over the pass's scalar, an optional
/// `-> Type` gives it a result.
macro_rules! vector_dispatch {
    ($(#[$meta:meta])* $vis:vis fn $name:ident $(<$t:ident: $bound:path>)? => $imp:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)?) => {
        $(#[$meta])*
        $vis fn $name $(<$t: $bound>)? ($($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            {
                if std::arch::is_x86_feature_detected!("avx512f") {
                    #[target_feature(enable = "avx512f")]
                    fn avx512 $(<$t: $bound>)? ($($arg: $ty),*) $(-> $ret)? {
                        $imp($($arg),*)
                    }
                    // SAFETY: the running CPU supports AVX-512F, checked just above.
                    return unsafe { avx512($($arg),*) };
                }
                if std::arch::is_x86_feature_detected!("avx2") {
                    #[target_feature(enable = "avx2")]
                    fn avx2 $(<$t: $bound>)? ($($arg: $ty),*) $(-> $ret)? {
                        $imp($($arg),*)
                    }
                    // SAFETY: the running CPU supports AVX2, checked just above.
                    return unsafe { avx2($($arg),*) };
                }
            }
            $imp($($arg),*)
        }
    };
}

pub(crate) use vector_dispatch;

/// Arithmetic of an MLP's passes (forward, reverse, forward-mode).
///
/// Parameters, the network's outputs and the learner's vectors are f64 either way; only the
/// passes over the batch run in this precision.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Precision {
    /// f32 passes (the default, as SB3 and PyTorch train): activations, tangents,
    /// cotangents and every product in single precision, with the device's own `tanh`
    /// ([`tether_shared::policy::tanh`]); twice the multiply-adds per instruction and half
    /// the memory traffic; relative error ≈ 1e-6, far below a policy gradient's sampling
    /// noise.
    #[default]
    Single,
    /// f64 passes: exact to ≈ 1e-15, for checks against finite differences.
    Double,
}

/// The scalar an MLP pass runs in: f32 for [`Precision::Single`], f64 for
/// [`Precision::Double`].
pub(crate) trait Real: nalgebra::RealField + Copy + Default {
    /// 0.
    const ZERO: Self;
    /// 1.
    const ONE: Self;
    /// `x` rounded to this type.
    fn narrow(x: f64) -> Self;
    /// The value in f64 (exact).
    fn widen(self) -> f64;
    /// The hidden layers' activation in this precision.
    fn activation(self) -> Self;
    /// Whether [`Real::tiled_product`] runs for this scalar on this CPU.
    fn has_tiled_product() -> bool {
        false
    }
    /// `c = a·b` (or `c += a·b`) by [`register_tiles::product`] when this scalar has a
    /// register-tiled kernel on this CPU; false (nothing touched) when not.
    fn tiled_product(
        _c: &mut [Self],
        _a: Columns<'_, Self>,
        _b: Elements<'_, Self>,
        _shape: ProductShape,
        _accumulate: bool,
    ) -> bool {
        false
    }
}

impl Real for f32 {
    const ZERO: Self = 0.0;
    const ONE: Self = 1.0;

    #[inline(always)]
    fn narrow(x: f64) -> Self {
        x as f32
    }

    #[inline(always)]
    fn widen(self) -> f64 {
        f64::from(self)
    }

    /// The device's `tanh`: the learner differentiates the function the policy runs.
    #[inline(always)]
    fn activation(self) -> Self {
        tanh::tanh_f32(self)
    }

    fn has_tiled_product() -> bool {
        register_tiles::available()
    }

    fn tiled_product(
        c: &mut [Self],
        a: Columns<'_, Self>,
        b: Elements<'_, Self>,
        shape: ProductShape,
        accumulate: bool,
    ) -> bool {
        register_tiles::product(c, a, b, shape, accumulate)
    }
}

impl Real for f64 {
    const ZERO: Self = 0.0;
    const ONE: Self = 1.0;

    #[inline(always)]
    fn narrow(x: f64) -> Self {
        x
    }

    #[inline(always)]
    fn widen(self) -> f64 {
        self
    }

    #[inline(always)]
    fn activation(self) -> Self {
        tanh::tanh(self)
    }
}

pub(crate) mod elementwise;
pub(crate) mod gemm;
pub(crate) mod register_tiles;

use register_tiles::{Columns, Elements, ProductShape};
pub mod tanh;
