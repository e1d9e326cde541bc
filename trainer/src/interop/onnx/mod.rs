//! The deterministic policy as an ONNX model (opset 13).
//!
//! The graph takes `obs`, float `[N, obs_dim]`, and returns `action`: float
//! `[N, action_dim]`, the Gaussian mean clamped to the plant's bounds, or int64 `[N]`, the
//! index of the largest logit (ONNX `ArgMax` takes the first on a tie, as the reference
//! does). In between, in the order of the shared forward pass:
//!
//! - the normaliser, if the policy has one: `Clip((obs − mean) · scale, −10, 10)`;
//! - per layer `MatMul` by the transposed weights and `Add` of the bias;
//! - after each hidden layer the shared rational `tanh` written out as plain arithmetic
//!   (`Clip` to ±9, the two Horner polynomials in `x²`, `x·P/Q`, `Clip` to ±1), so a runtime
//!   computes what the device computes, not its own `Tanh`.
//!
//! Only `MatMul` sums in its own order, so a runtime matches the shared pass to f32 rounding
//! (the tests hold tract to 1e-5). The model's metadata names the plant, the policy version,
//! the observation size and the action's bounds or choices.

pub mod proto;

use std::collections::HashMap;

use prost::Message;
use tether_shared::policy::{NORMALIZED_OBS_CLIP, TANH_FIXED_SCALE, TANH_P, TANH_Q};

use self::proto::{
    ATTRIBUTE_INT, AttributeProto, Dimension, DimensionValue, ELEM_FLOAT, ELEM_INT64, GraphProto,
    ModelProto, NodeProto, OperatorSetIdProto, StringStringEntryProto, TensorProto,
    TensorShapeProto, TensorTypeProto, TypeProto, ValueInfoProto,
};
use super::DeployedPolicy;

/// The operator set the graph uses (`Clip` with tensor bounds needs at least 11).
pub const OPSET: i64 = 13;
/// The IR (file format) version that goes with [`OPSET`].
pub const IR_VERSION: i64 = 7;
/// Name of the graph's input.
pub const INPUT: &str = "obs";
/// Name of the graph's output.
pub const OUTPUT: &str = "action";

/// The model file's bytes.
pub fn model_bytes(policy: &DeployedPolicy) -> Vec<u8> {
    model(policy).encode_to_vec()
}

/// The model.
pub fn model(policy: &DeployedPolicy) -> ModelProto {
    let mut graph = GraphBuilder::default();
    let mut x = INPUT.to_owned();
    if let Some((mean, scale)) = policy.normalizer() {
        let mean = graph.tensor("obs_mean", mean);
        let scale = graph.tensor("obs_scale", scale);
        let centred = graph.node("Sub", &[&x, &mean], "obs_centred");
        let scaled = graph.node("Mul", &[&centred, &scale], "obs_scaled");
        x = graph.clip(&scaled, NORMALIZED_OBS_CLIP, "obs_normalized");
    }
    for (index, layer) in policy.layers().iter().enumerate() {
        let weights_t = graph.tensor_2d(
            &format!("layer{index}.weight_t"),
            &transpose(layer.weights, layer.outputs, layer.inputs),
            layer.inputs,
            layer.outputs,
        );
        let bias = graph.tensor(&format!("layer{index}.bias"), layer.bias);
        let product = graph.node("MatMul", &[&x, &weights_t], &format!("layer{index}.matmul"));
        x = graph.node("Add", &[&product, &bias], &format!("layer{index}.linear"));
        if layer.hidden {
            x = graph.rational_tanh(&x, &format!("layer{index}.tanh"));
        }
    }
    let output = match policy.action_bounds() {
        Some((low, high)) => {
            let low = graph.tensor("action_low", low);
            let high = graph.tensor("action_high", high);
            let floored = graph.node("Max", &[&x, &low], "mean_above_low");
            graph.node("Min", &[&floored, &high], OUTPUT);
            value_info(OUTPUT, ELEM_FLOAT, Some(policy.spec().output_dim()))
        }
        None => {
            graph.node_with("ArgMax", &[&x], OUTPUT, &[("axis", 1), ("keepdims", 0)]);
            value_info(OUTPUT, ELEM_INT64, None)
        }
    };
    let input = value_info(INPUT, ELEM_FLOAT, Some(policy.spec().obs_dim as usize));
    let plant = policy.plant().name.as_str();
    ModelProto {
        ir_version: IR_VERSION,
        producer_name: "tether".into(),
        producer_version: env!("CARGO_PKG_VERSION").into(),
        model_version: i64::from(policy.version()),
        doc_string: format!(
            "tether policy for plant `{plant}`, version {}: the deterministic action \
             (clamped Gaussian mean or argmax) for a batch of observations",
            policy.version()
        ),
        graph: Some(GraphProto {
            node: graph.nodes,
            name: format!("tether_{plant}"),
            initializer: graph.initializers,
            doc_string: String::new(),
            input: vec![input],
            output: vec![output],
        }),
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: OPSET,
        }],
        metadata_props: metadata(policy),
    }
}

/// `plant`, `policy_version`, `obs_dim` and the action's `action_low`/`action_high` or
/// `action_choices`.
fn metadata(policy: &DeployedPolicy) -> Vec<StringStringEntryProto> {
    let mut entries = vec![
        ("plant", policy.plant().name.to_string()),
        ("policy_version", policy.version().to_string()),
        ("obs_dim", policy.spec().obs_dim.to_string()),
    ];
    match policy.action_bounds() {
        Some((low, high)) => {
            entries.push(("action_low", format!("{low:?}")));
            entries.push(("action_high", format!("{high:?}")));
        }
        None => entries.push(("action_choices", policy.spec().output_dim().to_string())),
    }
    entries
        .into_iter()
        .map(|(key, value)| StringStringEntryProto {
            key: key.into(),
            value,
        })
        .collect()
}

/// A float tensor `[N, width]` (or int64 `[N]` without a width), `N` symbolic.
fn value_info(name: &str, elem_type: i32, width: Option<usize>) -> ValueInfoProto {
    let mut dim = vec![Dimension {
        value: Some(DimensionValue::DimParam("N".into())),
    }];
    if let Some(width) = width {
        dim.push(Dimension {
            value: Some(DimensionValue::DimValue(width as i64)),
        });
    }
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            tensor_type: Some(TensorTypeProto {
                elem_type,
                shape: Some(TensorShapeProto { dim }),
            }),
        }),
        doc_string: String::new(),
    }
}

/// `rows × cols` row-major → `cols × rows` row-major.
fn transpose(values: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    (0..cols)
        .flat_map(|c| (0..rows).map(move |r| values[r * cols + c]))
        .collect()
}

/// Nodes and weights, added in evaluation order.
#[derive(Default)]
struct GraphBuilder {
    nodes: Vec<NodeProto>,
    initializers: Vec<TensorProto>,
    /// Scalar constants already added, by their bits.
    scalars: HashMap<u32, String>,
}

impl GraphBuilder {
    /// A 1-D float initializer; returns its name.
    fn tensor(&mut self, name: &str, values: &[f32]) -> String {
        self.initializer(name, vec![values.len() as i64], values)
    }

    /// A 2-D `rows × cols` float initializer; returns its name.
    fn tensor_2d(&mut self, name: &str, values: &[f32], rows: usize, cols: usize) -> String {
        self.initializer(name, vec![rows as i64, cols as i64], values)
    }

    /// A scalar float constant, added once per value; returns its name.
    fn scalar(&mut self, value: f32) -> String {
        if let Some(name) = self.scalars.get(&value.to_bits()) {
            return name.clone();
        }
        let name = format!("const{}", self.scalars.len());
        self.initializer(&name, Vec::new(), &[value]);
        self.scalars.insert(value.to_bits(), name.clone());
        name
    }

    fn initializer(&mut self, name: &str, dims: Vec<i64>, values: &[f32]) -> String {
        self.initializers.push(TensorProto {
            dims,
            data_type: ELEM_FLOAT,
            float_data: values.to_vec(),
            name: name.into(),
        });
        name.into()
    }

    /// `output = op(inputs)`; returns `output`.
    fn node(&mut self, op: &str, inputs: &[&str], output: &str) -> String {
        self.node_with(op, inputs, output, &[])
    }

    /// `output = op(inputs)` with integer attributes; returns `output`.
    fn node_with(
        &mut self,
        op: &str,
        inputs: &[&str],
        output: &str,
        attrs: &[(&str, i64)],
    ) -> String {
        self.nodes.push(NodeProto {
            input: inputs.iter().map(|&i| i.to_owned()).collect(),
            output: vec![output.to_owned()],
            name: output.to_owned(),
            op_type: op.to_owned(),
            attribute: attrs
                .iter()
                .map(|&(name, i)| AttributeProto {
                    name: name.into(),
                    i,
                    r#type: ATTRIBUTE_INT,
                })
                .collect(),
        });
        output.to_owned()
    }

    /// `Clip(x, −bound, bound)`.
    fn clip(&mut self, x: &str, bound: f32, output: &str) -> String {
        let low = self.scalar(-bound);
        let high = self.scalar(bound);
        self.node("Clip", &[x, &low, &high], output)
    }

    /// The shared rational `tanh` (`tether_shared::policy::tanh`), operation by operation.
    /// The shared function first puts its input on a fixed-point grid of 2⁻²⁸ saturating at
    /// ±8; here it is only clipped to ±8 (ONNX's float-to-integer `Cast` is not defined for
    /// every input), which moves the result by less than 4·10⁻⁹.
    fn rational_tanh(&mut self, x: &str, prefix: &str) -> String {
        let limit = 2_147_483_648.0 / TANH_FIXED_SCALE;
        let clamped = self.clip(x, limit, &format!("{prefix}.clamped"));
        let square = self.node("Mul", &[&clamped, &clamped], &format!("{prefix}.square"));
        let p = self.horner(&square, &TANH_P, &format!("{prefix}.p"));
        let q = self.horner(&square, &TANH_Q, &format!("{prefix}.q"));
        let numerator = self.node("Mul", &[&clamped, &p], &format!("{prefix}.numerator"));
        self.node("Div", &[&numerator, &q], prefix)
    }

    /// `c[n−1]·sⁿ⁻¹ + … + c[0]` evaluated as the shared code does: from the last coefficient,
    /// multiply by `s` and add the next one, down to `c[0]`.
    fn horner(&mut self, s: &str, coefficients: &[f32], prefix: &str) -> String {
        let (last, rest) = coefficients
            .split_last()
            .expect("the shared tanh has coefficients");
        let mut acc = self.scalar(*last);
        for (k, c) in rest.iter().enumerate().rev() {
            let product = self.node("Mul", &[&acc, s], &format!("{prefix}{k}.mul"));
            let c = self.scalar(*c);
            acc = self.node("Add", &[&product, &c], &format!("{prefix}{k}"));
        }
        acc
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::interop::DeterministicAction;
    use crate::interop::test_policies::{
        Head, OBS_DIM, random_observations, random_policy, shapes,
    };
    use tract_onnx::prelude::*;

    const SAMPLES: usize = 1000;

    /// Runs the model with tract on `obs` (`SAMPLES` rows): one row of outputs per sample.
    fn run_with_tract(bytes: &[u8], obs: &[f32]) -> TractResult<Vec<Vec<f64>>> {
        let model = tract_onnx::onnx()
            .model_for_read(&mut &bytes[..])?
            .with_input_fact(0, f32::fact([SAMPLES, OBS_DIM]).into())?
            .into_optimized()?
            .into_runnable()?;
        let input = Tensor::from_shape(&[SAMPLES, OBS_DIM], obs)?;
        let outputs = model.run(tvec!(input.into()))?;
        let out = &outputs[0];
        let rows = if out.datum_type() == i64::datum_type() {
            let view = out.to_plain_array_view::<i64>()?;
            view.iter().map(|&v| vec![v as f64]).collect()
        } else {
            let view = out.to_plain_array_view::<f32>()?;
            view.outer_iter()
                .map(|row| row.iter().map(|&v| f64::from(v)).collect())
                .collect()
        };
        Ok(rows)
    }

    #[test]
    fn tract_matches_the_shared_forward_pass_on_every_shape() {
        for (seed, (head, hidden, normalize)) in shapes().into_iter().enumerate() {
            let label = format!("{head:?} hidden {hidden:?} normalise {normalize}");
            let policy = random_policy(head, &hidden, normalize, seed as u64);
            let obs = random_observations(SAMPLES, 100 + seed as u64);
            let rows = run_with_tract(&model_bytes(&policy), &obs)
                .unwrap_or_else(|e| panic!("{label}: tract: {e:?}"));
            assert_eq!(rows.len(), SAMPLES, "{label}");
            let (mut worst, mut inside) = (0.0f64, 0usize);
            for (row, o) in rows.iter().zip(obs.chunks_exact(OBS_DIM)) {
                match policy.act(o).expect("reference") {
                    DeterministicAction::Continuous(mean) => {
                        assert_eq!(row.len(), mean.len(), "{label}");
                        let (low, high) = policy.action_bounds().unwrap();
                        for (i, (&got, &want)) in row.iter().zip(&mean).enumerate() {
                            worst = worst.max((got - f64::from(want)).abs());
                            inside += usize::from(want > low[i] && want < high[i]);
                        }
                    }
                    DeterministicAction::Discrete(choice) => {
                        assert_eq!(row, &[choice as f64], "{label}, observation {o:?}");
                    }
                }
            }
            eprintln!("{label}: worst difference {worst:e}, {inside} values inside the bounds");
            assert!(worst <= 1e-5, "{label}: worst difference {worst}");
            if head == Head::Continuous {
                // Most actions are not at a bound, so the clamp does not hide differences.
                assert!(
                    inside > SAMPLES,
                    "{label}: only {inside} of {} inside",
                    2 * SAMPLES
                );
            }
        }
    }

    #[test]
    fn metadata_names_the_plant_and_version() {
        let policy = random_policy(Head::Continuous, &[8], true, 3);
        let model = ModelProto::decode(model_bytes(&policy).as_slice()).unwrap();
        assert!(
            model
                .opset_import
                .iter()
                .any(|o| o.domain.is_empty() && o.version >= 13)
        );
        let get = |key: &str| {
            model
                .metadata_props
                .iter()
                .find(|e| e.key == key)
                .map(|e| e.value.clone())
        };
        assert_eq!(get("plant").as_deref(), Some("testplant"));
        assert_eq!(get("policy_version").as_deref(), Some("7"));
        assert_eq!(get("action_low").as_deref(), Some("[-1.5, -0.5]"));
        assert_eq!(get("action_high").as_deref(), Some("[1.5, 2.0]"));
        assert_eq!(model.model_version, 7);
        let graph = model.graph.unwrap();
        assert_eq!(graph.input[0].name, "obs");
        assert_eq!(graph.output[0].name, "action");
        let discrete = random_policy(Head::Discrete, &[], false, 4);
        let model = ModelProto::decode(model_bytes(&discrete).as_slice()).unwrap();
        assert!(
            model
                .metadata_props
                .iter()
                .any(|e| e.key == "action_choices" && e.value == "4")
        );
    }

    #[test]
    fn transpose_swaps_rows_and_columns() {
        assert_eq!(
            transpose(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], 2, 3),
            [1.0, 4.0, 2.0, 5.0, 3.0, 6.0]
        );
    }
}
