//! Connected components against a brute-force flood fill, and analytic cases.

use std::collections::VecDeque;

use ndarray::{s, Array3, ArrayView3};
use negvol_metrics::components::{
    component_stats, keep_largest_components, label_components, ComponentFilter, FilterOutcome,
};
use negvol_metrics::{Connectivity, MetricsError};

const ALL: [Connectivity; 3] = [
    Connectivity::Six,
    Connectivity::Eighteen,
    Connectivity::TwentySix,
];

/// Breadth-first flood fill from every unlabelled foreground voxel met in index order, over
/// `Connectivity::offsets`: the reference labelling (numbered by first voxel).
fn bfs_labels(mask: ArrayView3<bool>, conn: Connectivity) -> (Array3<u32>, u32) {
    let sh: [usize; 3] = mask.dim().into();
    let offs = conn.offsets();
    let mut lab = Array3::<u32>::zeros(sh);
    let mut n = 0;
    let mut queue = VecDeque::new();
    for i in 0..sh[0] {
        for j in 0..sh[1] {
            for k in 0..sh[2] {
                if !mask[[i, j, k]] || lab[[i, j, k]] != 0 {
                    continue;
                }
                n += 1;
                lab[[i, j, k]] = n;
                queue.push_back([i, j, k]);
                while let Some(p) = queue.pop_front() {
                    for d in &offs {
                        let q = [0, 1, 2].map(|a| p[a] as isize + d[a]);
                        if (0..3).any(|a| q[a] < 0 || q[a] as usize >= sh[a]) {
                            continue;
                        }
                        let q = q.map(|v| v as usize);
                        if mask[q] && lab[q] == 0 {
                            lab[q] = n;
                            queue.push_back(q);
                        }
                    }
                }
            }
        }
    }
    (lab, n)
}

/// A tiny LCG in [0, 1) (no dependency).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Everything the three functions report on `mask`, checked against the flood fill.
fn check_against_bfs(mask: ArrayView3<bool>, conn: Connectivity, what: &str) {
    let (want, n) = bfs_labels(mask, conn);
    let got = label_components(mask, conn).unwrap();
    assert_eq!(got.count(), n as usize, "{what}: count");
    assert_eq!(got.labels, want, "{what}: labels");
    let mut sizes = vec![0usize; n as usize];
    let mut sums = vec![[0u64; 3]; n as usize];
    let mut first = vec![None; n as usize];
    for ((i, j, k), &l) in want.indexed_iter() {
        if l > 0 {
            let c = l as usize - 1;
            sizes[c] += 1;
            sums[c][0] += i as u64;
            sums[c][1] += j as u64;
            sums[c][2] += k as u64;
            first[c].get_or_insert([i, j, k]);
        }
    }
    assert_eq!(got.sizes, sizes, "{what}: sizes");
    let stats = component_stats(mask, conn).unwrap();
    assert_eq!(stats.len(), n as usize, "{what}: stats");
    for (a, b) in stats.iter().zip(stats.iter().skip(1)) {
        assert!(
            a.voxels > b.voxels || (a.voxels == b.voxels && a.first < b.first),
            "{what}: order"
        );
    }
    for st in &stats {
        let c = st.label as usize - 1;
        assert_eq!(st.voxels, sizes[c], "{what}: voxels");
        assert_eq!(st.index_sum, sums[c], "{what}: index sums");
        assert_eq!(Some(st.first), first[c], "{what}: first voxel");
    }
    // The bounding box holds every foreground voxel and is tight.
    match got.bounding_box {
        None => assert_eq!(n, 0),
        Some(b) => {
            let inside = b.crop(mask).iter().filter(|v| **v).count();
            assert_eq!(inside, mask.iter().filter(|v| **v).count(), "{what}: box");
            for a in 0..3 {
                assert!(b.min[a] < b.max[a]);
                let lo = mask
                    .index_axis(ndarray::Axis(a), b.min[a])
                    .iter()
                    .any(|v| *v);
                let hi = mask
                    .index_axis(ndarray::Axis(a), b.max[a] - 1)
                    .iter()
                    .any(|v| *v);
                assert!(lo && hi, "{what}: box not tight on axis {a}");
            }
        }
    }
}

#[test]
fn random_masks_match_the_flood_fill() {
    let shapes = [
        [7, 5, 9],
        [1, 13, 1],
        [1, 1, 70],
        [11, 1, 1],
        [1, 9, 11],
        [6, 7, 1],
        [3, 4, 130],
        [2, 3, 64],
        [5, 6, 65],
        [12, 10, 8],
    ];
    let mut rng = Lcg(0x5eed_0fc0_ffee);
    let mut checked = 0;
    for seed in 0..12 {
        for density in [0.05, 0.2, 0.35, 0.5, 0.8] {
            for sh in shapes {
                let m = Array3::from_shape_fn(sh, |_| rng.next() < density);
                for conn in ALL {
                    check_against_bfs(
                        m.view(),
                        conn,
                        &format!("seed {seed}, density {density}, shape {sh:?}, {conn:?}"),
                    );
                    checked += 1;
                }
            }
        }
    }
    assert_eq!(checked, 12 * 5 * 10 * 3);
}

#[test]
fn large_masks_split_over_threads_match_the_flood_fill() {
    // Enough runs (about 130 000) for the union-find to be split into slabs of planes joined
    // in parallel and then across the slab borders; the same result on 1, 2 and 3 threads.
    let mut rng = Lcg(2024);
    let m = Array3::from_shape_fn([100, 60, 100], |_| rng.next() < 0.3);
    for conn in ALL {
        let (want, _) = bfs_labels(m.view(), conn);
        for threads in [1, 2, 3] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            let got = pool.install(|| label_components(m.view(), conn).unwrap());
            assert_eq!(got.labels, want, "{conn:?}, {threads} threads");
        }
    }
}

#[test]
fn the_three_connectivities_differ_on_random_masks() {
    // Not a vacuous comparison: on these masks 6 < 18 < 26 in merging power.
    let mut rng = Lcg(42);
    let m = Array3::from_shape_fn([10, 10, 10], |_| rng.next() < 0.2);
    let n: Vec<usize> = ALL
        .iter()
        .map(|&c| label_components(m.view(), c).unwrap().count())
        .collect();
    assert!(n[0] > n[1] && n[1] > n[2], "{n:?}");
}

#[test]
fn views_that_are_not_in_standard_layout() {
    let mut rng = Lcg(7);
    let m = Array3::from_shape_fn([9, 8, 12], |_| rng.next() < 0.3);
    let t = m.clone().permuted_axes([2, 0, 1]);
    let sub = m.slice(s![1..8;2, .., 3..;-1]);
    for conn in ALL {
        check_against_bfs(t.view(), conn, &format!("permuted, {conn:?}"));
        check_against_bfs(sub, conn, &format!("strided, {conn:?}"));
    }
}

/// Two 2x2x2 cubes, the second moved by `d` (entries 0 or +-2) from the first.
fn two_cubes(d: [isize; 3]) -> Array3<bool> {
    let mut m = Array3::from_elem([8, 8, 8], false);
    for c in [[0isize; 3], d] {
        let lo = c.map(|v| (v + 3) as usize);
        m.slice_mut(s![lo[0]..lo[0] + 2, lo[1]..lo[1] + 2, lo[2]..lo[2] + 2])
            .fill(true);
    }
    m
}

#[test]
fn cubes_touching_at_a_corner_an_edge_or_a_face() {
    let count = |m: &Array3<bool>, c| label_components(m.view(), c).unwrap().count();
    // Every corner direction (the sign pattern matters: rows (i-1, j+1) and (i-1, j-1)).
    for d in [[2, 2, 2], [2, 2, -2], [2, -2, 2], [2, -2, -2]] {
        let m = two_cubes(d);
        assert_eq!(count(&m, Connectivity::TwentySix), 1, "corner {d:?}");
        assert_eq!(count(&m, Connectivity::Eighteen), 2, "corner {d:?}");
        assert_eq!(count(&m, Connectivity::Six), 2, "corner {d:?}");
    }
    // Every edge direction: along k, j and i, both diagonal signs.
    for d in [
        [2, 2, 0],
        [2, -2, 0],
        [2, 0, 2],
        [2, 0, -2],
        [0, 2, 2],
        [0, 2, -2],
    ] {
        let m = two_cubes(d);
        assert_eq!(count(&m, Connectivity::TwentySix), 1, "edge {d:?}");
        assert_eq!(count(&m, Connectivity::Eighteen), 1, "edge {d:?}");
        assert_eq!(count(&m, Connectivity::Six), 2, "edge {d:?}");
    }
    for d in [[2, 0, 0], [0, 2, 0], [0, 0, 2]] {
        let m = two_cubes(d);
        for c in ALL {
            assert_eq!(count(&m, c), 1, "face {d:?} {c:?}");
        }
    }
    // Numbering: the cube whose first voxel comes first in index order is label 1.
    let l = label_components(two_cubes([2, -2, 2]).view(), Connectivity::Six).unwrap();
    assert_eq!(l.labels[[3, 3, 3]], 1);
    assert_eq!(l.labels[[5, 1, 5]], 2);
    assert_eq!(l.sizes, vec![8, 8]);
}

#[test]
fn an_empty_mask() {
    let m = Array3::from_elem([4, 5, 6], false);
    for c in ALL {
        let l = label_components(m.view(), c).unwrap();
        assert_eq!((l.count(), l.bounding_box), (0, None));
        assert!(l.labels.iter().all(|v| *v == 0));
        assert!(component_stats(m.view(), c).unwrap().is_empty());
    }
    let mut e = m.clone();
    let out = keep_largest_components(e.view_mut(), &ComponentFilter::default()).unwrap();
    assert_eq!(out, FilterOutcome::default());
    // Zero-sized arrays too, along each axis.
    for sh in [[0, 3, 3], [3, 0, 3], [3, 3, 0]] {
        let z = Array3::from_elem(sh, false);
        for c in ALL {
            let l = label_components(z.view(), c).unwrap();
            assert_eq!((l.count(), l.labels.dim()), (0, (sh[0], sh[1], sh[2])));
            assert!(component_stats(z.view(), c).unwrap().is_empty());
        }
    }
}

#[test]
fn masks_touching_every_face() {
    // The full array is one component whose box is the array.
    let full = Array3::from_elem([5, 6, 7], true);
    for c in ALL {
        let l = label_components(full.view(), c).unwrap();
        assert_eq!(l.sizes, vec![210]);
        let b = l.bounding_box.unwrap();
        assert_eq!((b.min, b.max), ([0; 3], [5, 6, 7]));
        let st = component_stats(full.view(), c).unwrap();
        assert_eq!(st[0].centroid(), [2.0, 2.5, 3.0]);
    }
    // One voxel in the middle of each face, and the 12 edges of the box (a wire frame):
    // nothing wraps around, the face voxels stay apart, the frame is one component.
    let mut m = Array3::from_elem([9, 9, 9], false);
    for p in [
        [0, 4, 4],
        [8, 4, 4],
        [4, 0, 4],
        [4, 8, 4],
        [4, 4, 0],
        [4, 4, 8],
    ] {
        m[p] = true;
    }
    for a in [0, 8] {
        for b in [0, 8] {
            m.slice_mut(s![.., a, b]).fill(true);
            m.slice_mut(s![a, .., b]).fill(true);
            m.slice_mut(s![a, b, ..]).fill(true);
        }
    }
    for c in ALL {
        let l = label_components(m.view(), c).unwrap();
        assert_eq!(l.count(), 7, "{c:?}");
        assert_eq!(l.sizes[0], 12 * 9 - 2 * 8, "{c:?}: the frame comes first");
        assert_eq!(l.labels[[0, 4, 4]], 2);
        assert_eq!(l.labels[[8, 4, 4]], 7);
        check_against_bfs(m.view(), c, &format!("frame {c:?}"));
    }
}

/// Sizes 64 (4^3), 27 (3^3), 8 (2^3) and a pair touching at a corner (2).
fn cubes() -> Array3<bool> {
    let mut m = Array3::from_elem((20, 20, 20), false);
    m.slice_mut(s![0..4, 0..4, 0..4]).fill(true);
    m.slice_mut(s![10..13, 10..13, 10..13]).fill(true);
    m.slice_mut(s![0..2, 15..17, 15..17]).fill(true);
    m[[18, 0, 18]] = true;
    m[[19, 1, 19]] = true;
    m
}

#[test]
fn keep_largest_keeps_the_largest_and_respects_the_fraction() {
    let mut m = cubes();
    let f = ComponentFilter {
        max_components: 3,
        min_fraction: 0.1,
    };
    let out = keep_largest_components(m.view_mut(), &f).unwrap();
    // 8 >= 6.4 is kept; the corner-touching pair is one 26-component of 2 < 6.4.
    assert_eq!(
        out,
        FilterOutcome {
            components: 4,
            kept: 3,
            removed_voxels: 2
        }
    );
    assert_eq!(m.iter().filter(|v| **v).count(), 64 + 27 + 8);
    assert!(!m[[18, 0, 18]] && !m[[19, 1, 19]]);
    let mut m = cubes();
    let one = ComponentFilter {
        max_components: 1,
        min_fraction: 0.0,
    };
    let out = keep_largest_components(m.view_mut(), &one).unwrap();
    assert_eq!((out.kept, out.removed_voxels), (1, 27 + 8 + 2));
    assert!(m[[0, 0, 0]] && !m[[10, 10, 10]]);
    // A fraction above the second's share drops it even when two may stay.
    let mut m = cubes();
    let half = ComponentFilter {
        max_components: 2,
        min_fraction: 0.5,
    };
    assert_eq!(
        keep_largest_components(m.view_mut(), &half).unwrap().kept,
        1
    );
    // On a strided view, only the viewed voxels are touched.
    let mut m = cubes();
    let before = m.clone();
    let out = keep_largest_components(m.slice_mut(s![.., .., 10..]), &one).unwrap();
    assert_eq!(out.components, 3);
    assert_eq!(out.removed_voxels, 8 + 2);
    assert_eq!(
        m.slice(s![.., .., ..10]),
        before.slice(s![.., .., ..10]),
        "outside the view"
    );
}

#[test]
fn keep_largest_on_random_masks_matches_the_labelling() {
    let mut rng = Lcg(99);
    for density in [0.05, 0.1] {
        let m = Array3::from_shape_fn([9, 10, 11], |_| rng.next() < density);
        let (lab, n) = bfs_labels(m.view(), Connectivity::TwentySix);
        assert!(n > 3, "density {density}: {n} components");
        let mut sizes = vec![0usize; n as usize + 1];
        lab.iter().for_each(|l| sizes[*l as usize] += 1);
        let mut order: Vec<usize> = (1..=n as usize).collect();
        order.sort_by(|a, b| sizes[*b].cmp(&sizes[*a]).then(a.cmp(b)));
        let f = ComponentFilter {
            max_components: 3,
            min_fraction: 0.0,
        };
        let mut got = m.clone();
        let out = keep_largest_components(got.view_mut(), &f).unwrap();
        let want = lab.mapv(|l| l > 0 && order[..3].contains(&(l as usize)));
        assert_eq!(got, want, "density {density}");
        assert_eq!(out.components, n as usize);
        assert_eq!(out.kept, 3);
    }
}

#[test]
fn keep_largest_ties_are_deterministic_and_bad_filters_are_errors() {
    let mut m = Array3::from_elem((10, 10, 10), false);
    m.slice_mut(s![6..8, 6..8, 6..8]).fill(true);
    m.slice_mut(s![0..2, 0..2, 0..2]).fill(true);
    let f = ComponentFilter {
        max_components: 1,
        min_fraction: 0.0,
    };
    keep_largest_components(m.view_mut(), &f).unwrap();
    assert!(
        m[[0, 0, 0]] && !m[[6, 6, 6]],
        "the first in index order wins a tie"
    );
    for (bad, name) in [
        (
            ComponentFilter {
                max_components: 0,
                min_fraction: 0.1,
            },
            "max_components",
        ),
        (
            ComponentFilter {
                max_components: 2,
                min_fraction: 1.5,
            },
            "min_fraction",
        ),
        (
            ComponentFilter {
                max_components: 2,
                min_fraction: f64::NAN,
            },
            "min_fraction",
        ),
    ] {
        match keep_largest_components(m.view_mut(), &bad) {
            Err(MetricsError::InvalidParameter { name: n, .. }) => assert_eq!(n, name),
            other => panic!("{bad:?}: {other:?}"),
        }
    }
    assert!(m[[0, 0, 0]], "a rejected filter changes nothing");
}

/// The labelling's worst case on a CT-sized grid: the foreground's box is the whole 686^3
/// volume (two condyle-sized balls and a stray voxel in two opposite corners). Run:
/// `cargo test --release -p negvol-metrics --test components on_686 -- --ignored --nocapture`.
#[test]
#[ignore = "timing on a 686^3 grid (323 MB): run with --release --ignored --nocapture"]
fn component_stats_on_686_cube() {
    let n = 686;
    let mut m = Array3::from_elem([n; 3], false);
    // Touch every page, as a mask read from a file is (untouched zeroed pages would all map to
    // one shared page and read unrealistically fast).
    m.fill(false);
    let r = 20.0; // 8 mm at 0.4 mm
    for cx in [200.0, 486.0] {
        let c = [cx, 343.0, 343.0];
        let lo = (cx - r) as usize;
        let mut sub = m.slice_mut(s![lo..lo + 41, 323..364, 323..364]);
        sub.indexed_iter_mut().for_each(|((i, j, k), v)| {
            let p = [(lo + i) as f64, (323 + j) as f64, (323 + k) as f64];
            let d2: f64 = (0..3).map(|a| (p[a] - c[a]).powi(2)).sum();
            *v |= d2 <= r * r;
        });
    }
    m[[0, 0, 0]] = true;
    m[[n - 1, n - 1, n - 1]] = true;
    let t = std::time::Instant::now();
    let c = component_stats(m.view(), Connectivity::TwentySix).unwrap();
    let dt = t.elapsed().as_secs_f64();
    let t = std::time::Instant::now();
    let l = label_components(m.view(), Connectivity::TwentySix).unwrap();
    let dl = t.elapsed().as_secs_f64();
    eprintln!(
        "686^3: component_stats {dt:.3} s, label_components {dl:.3} s; {} components, largest {} voxels",
        c.len(),
        c[0].voxels
    );
    assert_eq!(c.len(), 4);
    assert_eq!(l.count(), 4);
    assert_eq!(c[0].voxels, c[1].voxels);
    assert_eq!((c[2].voxels, c[3].voxels), (1, 1));
}
