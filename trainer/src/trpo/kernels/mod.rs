//! The numeric kernels under the MLP's passes: the matrix products (blocked through
//! `matrixmultiply`, or loops for thin shapes), their f32 conversions, the element-wise
//! passes (bias, tanh and its derivative) and the fast tanh itself. Each hot loop is
//! compiled twice, with and without AVX2, and picked at run time.
//!
//! - [`gemm`]: `W·H`, `U·Hᵀ` and `Wᵀ·U` in the flat parameter layout, in f32 or f64;
//! - [`convert`]: f64 ↔ f32 copies for the single-precision products;
//! - [`elementwise`]: bias, `tanh` and `1 − h²` over a batch;
//! - [`tanh`]: branch-free `tanh` in f64 and f32.

/// Defines `fn $name(args)` calling `$imp(args)`, compiled a second time with AVX2 and
/// picked at run time on x86-64 CPUs that have it (the baseline target has only SSE2's
/// 2-lane vectors; these loops are the element-wise and thin-product work between the
/// `matrixmultiply` calls). Results are bit-identical either way: the vectoriser keeps the
/// scalar code's IEEE operations and their order, and no FMA is enabled.
macro_rules! avx2_dispatch {
    ($(#[$meta:meta])* $vis:vis fn $name:ident => $imp:ident($($arg:ident: $ty:ty),* $(,)?)) => {
        $(#[$meta])*
        $vis fn $name($($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            if std::arch::is_x86_feature_detected!("avx2") {
                #[target_feature(enable = "avx2")]
                fn avx2($($arg: $ty),*) {
                    $imp($($arg),*)
                }
                // SAFETY: the running CPU supports AVX2, checked just above.
                unsafe { avx2($($arg),*) };
                return;
            }
            $imp($($arg),*)
        }
    };
}

/// Arithmetic of the large matrix products (the 64 × 64 layers of an MLP over a batch).
///
/// Everything else — parameters, activations, the learner's vectors — is f64 either way.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Precision {
    /// f32 products (the default, as SB3 and PyTorch train): twice the multiply-adds per
    /// instruction; relative error ≈ 1e-6, far below a policy gradient's sampling noise.
    #[default]
    Single,
    /// f64 products: exact to ≈ 1e-15, for checks against finite differences.
    Double,
}

pub(crate) mod convert;
pub(crate) mod elementwise;
pub(crate) mod gemm;
pub mod tanh;
