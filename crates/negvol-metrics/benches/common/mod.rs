//! Shared by the negvol-metrics benches.

/// Rayon pools of one thread and of all threads, named `t1` / `tN`: each bench runs its kernels
/// inside both, so single-core and all-core figures come from one run.
pub fn thread_pools() -> Vec<(String, rayon::ThreadPool)> {
    let all = rayon::current_num_threads();
    [1, all]
        .iter()
        .map(|&t| {
            (
                format!("t{t}"),
                rayon::ThreadPoolBuilder::new()
                    .num_threads(t)
                    .build()
                    .expect("thread pool"),
            )
        })
        .collect()
}
