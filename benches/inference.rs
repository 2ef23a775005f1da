//! Batched inference throughput of the detector's model (tract, float32) on
//! one core: classifications per second over host snapshots held in memory.
//!
//!     cargo bench --bench inference
//!
//! Two measurements: the model alone (`run_prepared`, inputs already
//! standardised) and `classify` (preparation included: gather, `log1p`,
//! standardise, then the model), each on 4096 host rows per iteration in
//! the model's fixed batch size. Criterion reports elements/s =
//! classifications per second. Wall time on a shared 2-core machine: see
//! docs/PERFORMANCE.md for the recorded numbers and their caveats.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use gatewarden::detect::model::{host_columns, HostModel};

const ROWS: usize = 4096;

fn rows() -> Vec<Vec<f32>> {
    // Deterministic, varied host statistics (rates, counts, ratios).
    let n = host_columns().len();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..ROWS)
        .map(|_| {
            (0..n)
                .map(|i| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let u = (x >> 40) as f32 / (1u64 << 24) as f32;
                    if i % 10 >= 4 && i % 10 <= 8 {
                        u
                    } else {
                        u * 10f32.powi((i % 5) as i32)
                    }
                })
                .collect()
        })
        .collect()
}

fn inference(c: &mut Criterion) {
    let model = HostModel::embedded().expect("embedded model loads");
    let rows = rows();
    let refs: Vec<&[f32]> = rows.iter().map(|r| r.as_slice()).collect();
    let n = model.n_inputs();
    let mut prepared = vec![0.0f32; ROWS * n];
    for (r, out) in rows.iter().zip(prepared.chunks_mut(n)) {
        model.prepare(r, out);
    }
    let mut g = c.benchmark_group("inference");
    g.throughput(Throughput::Elements(ROWS as u64));
    g.bench_function(format!("model_only_batch{}", model.batch()), |b| {
        b.iter(|| model.run_prepared(std::hint::black_box(&prepared)).unwrap())
    });
    g.bench_function(format!("classify_batch{}", model.batch()), |b| {
        b.iter(|| model.classify(std::hint::black_box(&refs)).unwrap())
    });
    g.finish();
}

criterion_group!(benches, inference);
criterion_main!(benches);
