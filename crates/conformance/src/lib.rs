//! The conformance suite: every backend runs the same op-level and graph-level cases, with seeded
//! random inputs and weights, against the reference evaluator (`accelrt_core::reference`).
//!
//! A backend's test file expands `conformance_tests!` once per device/dtype it supports:
//! ```ignore
//! mod cpu_f32 {
//!     accelrt_conformance::conformance_tests!(
//!         accelrt_candle::CandleBackend::cpu(),
//!         accelrt_core::PrepareOptions::default()
//!     );
//! }
//! ```
//!
//! Tolerances (|got − want| ≤ abs + rel·|want|, element-wise) depend on the dtype the backend
//! computes in; see [`Tolerance::for_compute`].

#![warn(missing_docs)]

pub mod cases;
mod compare;
mod sessions;

pub use cases::{Case, CaseWeights};
pub use compare::{assert_case, run_case, Tolerance};
pub use sessions::{check_refused_steps, check_session_owner, refused_step_cases, session_owner_cases};

/// Expands to one `#[test]` per conformance case, each preparing the case on `$backend` with
/// `$options` and comparing every output with the reference evaluator.
#[macro_export]
macro_rules! conformance_tests {
    ($backend:expr, $options:expr) => {
        $crate::__with_case_names!(tests $backend, $options);
    };
}

/// The name of every case, written once: a case is a function of `cases` named here, and both
/// [`conformance_tests!`] (one test each) and [`cases::all`] come from this list.
#[doc(hidden)]
#[macro_export]
macro_rules! __with_case_names {
    ($($what:tt)*) => {
        // Braces: the expansion is items (tests) or an expression (`all`).
        $crate::__expand_cases! { [$($what)*]
            embedding, matmul_batched_broadcast, matmul_transposed, linear, linear_no_bias,
            binary_broadcast, unary, affine, layer_norm, layer_norm_no_beta, rms_norm, softmax,
            attention_padding_mask, attention_causal, attention_gqa_cached_causal,
            rope_half_split, rope_interleaved_per_row, reshape_permute, slice_concat,
            mean_pool, l2_normalize, cast, positions, encoder_block, decoder_block,
            quantised_linear, quantised_embedding, take_last, kv_cache_session,
            training_ops, adamw_step, dropout,
            grad_binary_broadcast, grad_unary, grad_matmul_batched_broadcast, grad_linear,
            grad_layer_norm, grad_rms_norm, grad_softmax, grad_attention_gqa_cached_causal,
            grad_rope_interleaved_per_row, grad_reshape_permute, grad_slice_concat, grad_mean_pool,
            grad_l2_normalize, grad_take_last, grad_dropout, grad_encoder_block, grad_decoder_block,
            grad_causal_lm_loss, grad_mnrl_loss
        }
    };
}

/// What [`__with_case_names!`] expands to: the tests of a backend, or every case built.
#[doc(hidden)]
#[macro_export]
macro_rules! __expand_cases {
    ([tests $backend:expr, $options:expr] $($case:ident),* $(,)?) => {
        $(
            #[test]
            fn $case() {
                let backend = $backend;
                $crate::assert_case(&backend, &$crate::cases::$case(), &$options);
            }
        )*
    };
    ([all] $($case:ident),* $(,)?) => {
        vec![$($crate::cases::$case()),*]
    };
}
