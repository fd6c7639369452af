use std::time::Instant;
fn run(m: usize, n: usize, k: usize, tn: bool, reps: usize) -> f64 {
    let a = vec![0.5f32; m * k];
    let b = vec![0.25f32; k * n];
    let mut c = vec![0f32; m * n];
    let t = Instant::now();
    for _ in 0..reps {
        unsafe {
            if tn {
                gemm::gemm(m, n, k, c.as_mut_ptr(), 1, n as isize, true, a.as_ptr(), m as isize, 1, b.as_ptr(), 1, n as isize, 1.0, 1.0, false, false, false, gemm::Parallelism::None)
            } else {
                gemm::gemm(m, n, k, c.as_mut_ptr(), 1, n as isize, false, a.as_ptr(), 1, k as isize, b.as_ptr(), 1, n as isize, 0.0, 1.0, false, false, false, gemm::Parallelism::None)
            }
        }
    }
    2.0 * (m * n * k) as f64 / (t.elapsed().as_secs_f64() / reps as f64) / 1e9
}
fn main() {
    for &(m, n, k, tn) in &[
        (128, 96, 96, false), (256, 96, 96, false), (512, 96, 96, false), (1024, 96, 96, false),
        (128, 192, 192, false), (256, 192, 192, false), (512, 192, 192, false),(1024, 192, 192, false),
        (256, 192, 96, false),
        (96, 96, 256, true), (96, 96, 1024, true), (192, 192, 256, true), (192, 192, 1024, true),
    ] {
        let g = run(m, n, k, tn, 200);
        println!("tn={tn} m={m} n={n} k={k}: {g:.0} GF/s");
    }
}
