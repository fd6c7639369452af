use faer::linalg::matmul::matmul;
use faer::{Accum, MatMut, MatRef, Par};
use std::time::Instant;
fn run_gemm(m: usize, n: usize, k: usize, tn: bool, reps: usize) -> f64 {
    let a = vec![0.5f32; m * k];
    let b = vec![0.25f32; k * n];
    let mut c = vec![0f32; m * n];
    let t = Instant::now();
    for _ in 0..reps {
        unsafe {
            if tn {
                gemm::gemm(
                    m,
                    n,
                    k,
                    c.as_mut_ptr(),
                    1,
                    n as isize,
                    true,
                    a.as_ptr(),
                    m as isize,
                    1,
                    b.as_ptr(),
                    1,
                    n as isize,
                    1.0,
                    1.0,
                    false,
                    false,
                    false,
                    gemm::Parallelism::None,
                )
            } else {
                gemm::gemm(
                    m,
                    n,
                    k,
                    c.as_mut_ptr(),
                    1,
                    n as isize,
                    false,
                    a.as_ptr(),
                    1,
                    k as isize,
                    b.as_ptr(),
                    1,
                    n as isize,
                    0.0,
                    1.0,
                    false,
                    false,
                    false,
                    gemm::Parallelism::None,
                )
            }
        }
    }
    2.0 * (m * n * k) as f64 / (t.elapsed().as_secs_f64() / reps as f64) / 1e9
}
fn run_faer(m: usize, n: usize, k: usize, tn: bool, reps: usize, par: Par) -> f64 {
    let a = vec![0.5f32; m * k];
    let b = vec![0.25f32; k * n];
    let mut c = vec![0f32; m * n];
    let t = Instant::now();
    for _ in 0..reps {
        let dst = MatMut::from_row_major_slice_mut(&mut c, m, n);
        let rhs = MatRef::from_row_major_slice(&b, k, n);
        if tn {
            let lhs = MatRef::from_row_major_slice(&a, k, m).transpose();
            matmul(dst, Accum::Add, lhs, rhs, 1.0f32, par);
        } else {
            let lhs = MatRef::from_row_major_slice(&a, m, k);
            matmul(dst, Accum::Replace, lhs, rhs, 1.0f32, par);
        }
    }
    2.0 * (m * n * k) as f64 / (t.elapsed().as_secs_f64() / reps as f64) / 1e9
}
fn main() {
    for &(m, n, k, tn) in &[
        (1024, 96, 864, false),
        (4096, 96, 864, false),
        (256, 192, 1728, false),
        (1024, 192, 1728, false),
        (1024, 96, 27, false),
        (1024, 864, 96, false),
        (1024, 1728, 192, false),
        (864, 96, 1024, true),
        (1728, 192, 1024, true),
        (1728, 192, 256, true),
    ] {
        let g = run_gemm(m, n, k, tn, 30);
        let f = run_faer(m, n, k, tn, 30, Par::Seq);
        let f2 = run_faer(m, n, k, tn, 30, Par::rayon(2));
        println!("tn={tn} m={m} n={n} k={k}: gemm {g:.0} faer {f:.0} faer2t {f2:.0} GF/s");
    }
}
