//! LSUV initialisation (`runtime::train::init`): pre-activations recomputed
//! naively from the layer inputs and the written weights must have unit second
//! moment, the class scores must start at the stated offset, and a second
//! pass must be a fixed point.

#[path = "cpu_support.rs"]
mod support;

use runtime::backend::Executor;
use runtime::cpu::CpuExecutor;
use runtime::plan::{Activation, Op, Plan, Shape};
use runtime::train::init::{lsuv, CLASS_SCORE_OFFSET};
use support::*;

const N: usize = 16;

/// conv 3x3 (relu) - conv 1x1 (relu) - dropout - conv 1x1 (relu, class
/// scores) - gap - softmax on 3x8x8.
fn net() -> Plan {
    plan_of(
        Shape::new(3, 8, 8),
        5,
        vec![
            (
                "conv1",
                conv(8, 3, 1, Activation::Relu),
                Shape::new(8, 8, 8),
            ),
            (
                "conv2",
                conv(6, 1, 1, Activation::Relu),
                Shape::new(6, 8, 8),
            ),
            ("drop", Op::Dropout { p: 0.5 }, Shape::new(6, 8, 8)),
            (
                "conv3",
                conv(5, 1, 1, Activation::Relu),
                Shape::new(5, 8, 8),
            ),
            ("gap", Op::GlobalAvgPool, Shape::new(5, 1, 1)),
            ("softmax", Op::Softmax, Shape::new(5, 1, 1)),
        ],
    )
}

/// Inputs far from unit variance and with a non-zero mean, as GCN + ZCA or raw
/// pixels give.
fn images() -> Vec<f32> {
    random_vec(7, N * 3 * 8 * 8)
        .iter()
        .map(|v| 0.2 * v + 0.5)
        .collect()
}

/// Pre-activations of a 1x1 convolution: `x (rows x ci) * w (ci x co) + b`.
fn pointwise(x: &[f32], w: &[f32], b: &[f32]) -> Vec<Vec<f64>> {
    let co = b.len();
    let ci = w.len() / co;
    x.chunks_exact(ci)
        .map(|row| {
            (0..co)
                .map(|o| {
                    f64::from(b[o])
                        + row
                            .iter()
                            .enumerate()
                            .map(|(i, &v)| f64::from(v) * f64::from(w[i * co + o]))
                            .sum::<f64>()
                })
                .collect()
        })
        .collect()
}

fn mean_square(rows: &[Vec<f64>], shift: &[f32]) -> f64 {
    let count = (rows.len() * shift.len()) as f64;
    rows.iter()
        .flat_map(|row| {
            row.iter()
                .zip(shift)
                .map(|(v, &s)| (v - f64::from(s)).powi(2))
        })
        .sum::<f64>()
        / count
}

#[test]
fn lsuv_gives_unit_pre_activations_and_active_class_scores() {
    let mut exec = CpuExecutor::new(net(), 3).unwrap();
    let images = images();
    let report = lsuv(&mut exec, &images, N).unwrap();
    let names: Vec<&str> = report.iter().map(|s| s.layer.as_str()).collect();
    assert_eq!(names, ["conv1", "conv2", "conv3"]);
    // He-normal assumes unit-variance inputs; these are not, so conv1 moves.
    assert!((report[0].factor - 1.0).abs() > 0.2, "{report:?}");

    let params = exec.read_params().unwrap(); // conv1 w, b, conv2 w, b, conv3 w, b
    let conv1_out = exec.forward_to(&images, N, 0).unwrap();
    let conv2_pre = pointwise(&conv1_out, &params[2], &params[3]);
    let zeros = vec![0.0f32; 6];
    let ms2 = mean_square(&conv2_pre, &zeros);
    assert!(
        (ms2 - 1.0).abs() < 1e-3,
        "conv2 pre-activation mean square {ms2}"
    );
    assert!(
        params[3].iter().all(|&b| b == 0.0),
        "hidden biases stay zero"
    );

    // Dropout is the identity in inference mode.
    let drop_out = exec.forward_to(&images, N, 2).unwrap();
    let conv3_pre = pointwise(&drop_out, &params[4], &params[5]);
    let ms3 = mean_square(&conv3_pre, &params[5]);
    assert!(
        (ms3 - 1.0).abs() < 1e-3,
        "conv3 weight response mean square {ms3}"
    );
    for class in 0..5 {
        let mean = conv3_pre.iter().map(|row| row[class]).sum::<f64>() / conv3_pre.len() as f64;
        assert!(
            (mean - CLASS_SCORE_OFFSET).abs() < 1e-3,
            "class {class} pre-activation mean {mean}"
        );
    }
    // Nearly every class score is active, so no class starts dead.
    let active = conv3_pre.iter().flatten().filter(|&&v| v > 0.0).count();
    assert!(active as f64 > 0.9 * (conv3_pre.len() * 5) as f64);
}

#[test]
fn lsuv_is_a_fixed_point_and_deterministic() {
    let images = images();
    let mut a = CpuExecutor::new(net(), 5).unwrap();
    let mut b = CpuExecutor::new(net(), 5).unwrap();
    lsuv(&mut a, &images, N).unwrap();
    lsuv(&mut b, &images, N).unwrap();
    assert_eq!(a.read_params().unwrap(), b.read_params().unwrap());
    let again = lsuv(&mut a, &images, N).unwrap();
    for scale in &again {
        assert!(
            (scale.factor - 1.0).abs() < 1e-3,
            "second pass moved {}: {}",
            scale.layer,
            scale.factor
        );
    }
}
