//! Every distance metric and variant against all-pairs brute force on small random masks with
//! random anisotropic spacing, plus analytic cases.

use approx::assert_relative_eq;
use ndarray::{s, Array3};
use negvol_metrics::surface::{neighbour_codes, surfel_area_table};
use negvol_metrics::*;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Random blobby mask: a few random boxes, plus noise.
fn random_mask(rng: &mut Rng, sh: [usize; 3]) -> Array3<bool> {
    let mut m = Array3::from_elem(sh, false);
    let boxes = rng.next() % 3;
    for _ in 0..boxes {
        let lo: Vec<usize> = (0..3).map(|a| (rng.next() as usize) % sh[a]).collect();
        let hi: Vec<usize> = (0..3)
            .map(|a| (lo[a] + 1 + (rng.next() as usize) % sh[a]).min(sh[a]))
            .collect();
        m.slice_mut(s![lo[0]..hi[0], lo[1]..hi[1], lo[2]..hi[2]])
            .fill(true);
    }
    let p = [0.0, 0.05, 0.2][(rng.next() % 3) as usize];
    m.mapv_inplace(|x| x ^ (rng.unit() < p));
    m
}

fn boundary_bf(m: &Array3<bool>, conn: Connectivity) -> Vec<[f64; 3]> {
    let sh = m.shape();
    let mut out = Vec::new();
    for ((i, j, k), &v) in m.indexed_iter() {
        if !v {
            continue;
        }
        let mut b = false;
        for o in conn.offsets() {
            let (a, bb, c) = (i as isize + o[0], j as isize + o[1], k as isize + o[2]);
            if a < 0
                || bb < 0
                || c < 0
                || a >= sh[0] as isize
                || bb >= sh[1] as isize
                || c >= sh[2] as isize
                || !m[[a as usize, bb as usize, c as usize]]
            {
                b = true;
            }
        }
        if b {
            out.push([i as f64, j as f64, k as f64]);
        }
    }
    out
}

fn solid_bf(m: &Array3<bool>) -> Vec<[f64; 3]> {
    m.indexed_iter()
        .filter(|(_, &v)| v)
        .map(|((i, j, k), _)| [i as f64, j as f64, k as f64])
        .collect()
}

/// Surfels: (corner position, area) by direct evaluation of the 8 voxels around each corner.
fn surfels_bf(m: &Array3<bool>, sp: [f64; 3]) -> (Vec<[f64; 3]>, Vec<f64>) {
    let t = surfel_area_table(sp);
    let sh = m.shape();
    let get = |i: isize, j: isize, k: isize| {
        i >= 0
            && j >= 0
            && k >= 0
            && (i as usize) < sh[0]
            && (j as usize) < sh[1]
            && (k as usize) < sh[2]
            && m[[i as usize, j as usize, k as usize]]
    };
    let (mut pts, mut w) = (Vec::new(), Vec::new());
    for p in 0..=sh[0] as isize {
        for q in 0..=sh[1] as isize {
            for r in 0..=sh[2] as isize {
                let mut code = 0u8;
                for a in 0..2 {
                    for b in 0..2 {
                        for c in 0..2 {
                            if get(p - 1 + a, q - 1 + b, r - 1 + c) {
                                code |= 128u8 >> (4 * a + 2 * b + c);
                            }
                        }
                    }
                }
                if code != 0 && code != 255 {
                    pts.push([p as f64, q as f64, r as f64]);
                    w.push(t[code as usize]);
                }
            }
        }
    }
    (pts, w)
}

fn directed(a: &[[f64; 3]], b: &[[f64; 3]], sp: [f64; 3]) -> Vec<f64> {
    a.iter()
        .map(|x| {
            b.iter()
                .map(|y| {
                    (0..3)
                        .map(|d| ((x[d] - y[d]) * sp[d]).powi(2))
                        .sum::<f64>()
                        .sqrt()
                })
                .fold(f64::INFINITY, f64::min)
        })
        .collect()
}

/// numpy.percentile(x, p) with the default linear method, written independently.
fn np_percentile(x: &[f64], p: f64) -> f64 {
    let mut v = x.to_vec();
    v.sort_by(f64::total_cmp);
    let h = (v.len() - 1) as f64 * p / 100.0;
    let (lo, hi) = (h.floor() as usize, h.ceil() as usize);
    v[lo] + (h - lo as f64) * (v[hi] - v[lo])
}

/// DeepMind's weighted percentile, written independently.
fn dm_percentile(d: &[f64], w: &[f64], p: f64) -> f64 {
    let mut idx: Vec<usize> = (0..d.len()).collect();
    idx.sort_by(|&a, &b| d[a].total_cmp(&d[b]));
    let total: f64 = w.iter().sum();
    let mut cum = 0.0;
    for &i in &idx {
        cum += w[i];
        if cum / total >= p / 100.0 {
            return d[i];
        }
    }
    d[*idx.last().unwrap()]
}

fn close(a: MetricValue, b: f64) {
    let v = a.value.expect("defined");
    assert!(a.note.is_none(), "unexpected note {:?}", a.note);
    assert_relative_eq!(v, b, max_relative = 1e-9, epsilon = 1e-9);
}

#[test]
fn all_variants_match_brute_force() {
    let mut rng = Rng(0xDEAD_BEEF_1234_5678);
    let mut checked = 0;
    for _ in 0..60 {
        let sh = [
            2 + (rng.next() % 7) as usize,
            2 + (rng.next() % 7) as usize,
            2 + (rng.next() % 9) as usize,
        ];
        let sp = [
            0.3 + 1.5 * rng.unit(),
            0.3 + 1.5 * rng.unit(),
            0.3 + 1.5 * rng.unit(),
        ];
        let r = random_mask(&mut rng, sh);
        let p = random_mask(&mut rng, sh);
        let (re, pe) = (!r.iter().any(|&x| x), !p.iter().any(|&x| x));
        let p_pct = [95.0, 50.0, 100.0, 0.0, 90.0][(rng.next() % 5) as usize];
        let tau = [0.0, 0.5, 1.0, 2.5][(rng.next() % 4) as usize];
        for conn in [
            Connectivity::Six,
            Connectivity::Eighteen,
            Connectivity::TwentySix,
        ] {
            let d = surface_distances(r.view(), p.view(), sp, SurfaceKind::Voxels(conn)).unwrap();
            if re || pe {
                let note = match (re, pe) {
                    (true, true) => Note::BothEmpty,
                    (true, false) => Note::EmptyReference,
                    _ => Note::EmptyPrediction,
                };
                assert_eq!(d.empty, Some(note));
                if note == Note::BothEmpty {
                    assert_eq!(d.hausdorff(), MetricValue::conventional(0.0, note));
                    assert_eq!(d.nsd(1.0).unwrap().value, Some(1.0));
                } else {
                    assert_eq!(d.hausdorff(), MetricValue::undefined(note));
                    assert_eq!(d.assd(), MetricValue::undefined(note));
                    assert_eq!(d.nsd(1.0).unwrap(), MetricValue::conventional(0.0, note));
                }
                continue;
            }
            let (sr, spd) = (boundary_bf(&r, conn), boundary_bf(&p, conn));
            let (ab, ba) = (directed(&sr, &spd, sp), directed(&spd, &sr, sp));
            let max = |v: &[f64]| v.iter().copied().fold(0.0, f64::max);
            let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
            close(d.hausdorff(), max(&ab).max(max(&ba)));
            let (h1, h2) = d.directed_hausdorff();
            close(h1, max(&ab));
            close(h2, max(&ba));
            close(
                d.hausdorff_percentile(p_pct, HdConvention::MaxOfDirected)
                    .unwrap(),
                np_percentile(&ab, p_pct).max(np_percentile(&ba, p_pct)),
            );
            let pooled: Vec<f64> = ab.iter().chain(&ba).copied().collect();
            close(
                d.hausdorff_percentile(p_pct, HdConvention::Pooled).unwrap(),
                np_percentile(&pooled, p_pct),
            );
            close(d.assd(), mean(&pooled));
            close(d.msd(), (mean(&ab) + mean(&ba)) / 2.0);
            let within = pooled.iter().filter(|&&x| x <= tau).count() as f64;
            close(d.nsd(tau).unwrap(), within / pooled.len() as f64);
            checked += 1;
        }
        if re || pe {
            continue;
        }
        // Surfels.
        let d = surface_distances(r.view(), p.view(), sp, SurfaceKind::Surfels).unwrap();
        let ((pr, wr), (pp, wp)) = (surfels_bf(&r, sp), surfels_bf(&p, sp));
        let (ab, ba) = (directed(&pr, &pp, sp), directed(&pp, &pr, sp));
        let wmean = |d: &[f64], w: &[f64]| {
            d.iter().zip(w).map(|(a, b)| a * b).sum::<f64>() / w.iter().sum::<f64>()
        };
        close(
            d.hausdorff(),
            ab.iter().chain(&ba).copied().fold(0.0, f64::max),
        );
        close(
            d.hausdorff_percentile(p_pct, HdConvention::MaxOfDirected)
                .unwrap(),
            dm_percentile(&ab, &wr, p_pct).max(dm_percentile(&ba, &wp, p_pct)),
        );
        let (da, db) = d.directed_mean();
        close(da, wmean(&ab, &wr));
        close(db, wmean(&ba, &wp));
        let wsum = |d: &[f64], w: &[f64]| -> f64 {
            d.iter()
                .zip(w)
                .filter(|(x, _)| **x <= tau)
                .map(|(_, w)| w)
                .sum()
        };
        let total = wr.iter().sum::<f64>() + wp.iter().sum::<f64>();
        close(
            d.nsd(tau).unwrap(),
            (wsum(&ab, &wr) + wsum(&ba, &wp)) / total,
        );
        let pooled_d: Vec<f64> = ab.iter().chain(&ba).copied().collect();
        let pooled_w: Vec<f64> = wr.iter().chain(&wp).copied().collect();
        close(d.assd(), wmean(&pooled_d, &pooled_w));
        close(
            d.hausdorff_percentile(p_pct, HdConvention::Pooled).unwrap(),
            dm_percentile(&pooled_d, &pooled_w, p_pct),
        );
        // Codes: the corner grid has one more point per axis.
        assert_eq!(
            neighbour_codes(r.view()).shape(),
            &[sh[0] + 1, sh[1] + 1, sh[2] + 1]
        );
        // Solid-set (SimpleITK) and seed-paper variants.
        let (fr, fp) = (solid_bf(&r), solid_bf(&p));
        let (ab, ba) = (directed(&fr, &fp, sp), directed(&fp, &fr, sp));
        let s = solid_hausdorff(r.view(), p.view(), sp).unwrap();
        let mx = |v: &[f64]| v.iter().copied().fold(0.0, f64::max);
        let mn = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
        close(s.hausdorff, mx(&ab).max(mx(&ba)));
        close(s.average, (mn(&ab) + mn(&ba)) / 2.0);
        let (u1, u2) = (directed(&fr, &fp, [1.0; 3]), directed(&fp, &fr, [1.0; 3]));
        close(
            seed_paper_hausdorff_voxels(r.view(), p.view()).unwrap(),
            mx(&u1).max(mx(&u2)),
        );
    }
    assert!(checked > 60, "too few non-empty cases: {checked}");
}

fn sphere(sh: [usize; 3], c: [f64; 3], r: f64) -> Array3<bool> {
    Array3::from_shape_fn(sh, |(i, j, k)| {
        let d = (i as f64 - c[0]).powi(2) + (j as f64 - c[1]).powi(2) + (k as f64 - c[2]).powi(2);
        d <= r * r
    })
}

#[test]
fn concentric_spheres() {
    let sh = [40, 40, 40];
    let c = [19.5, 19.5, 19.5];
    let (r1, r2, s) = (8.0, 14.0, 0.7);
    let a = sphere(sh, c, r1);
    let b = sphere(sh, c, r2);
    let d = surface_distances(a.view(), b.view(), [s; 3], SurfaceKind::default()).unwrap();
    let gap = (r2 - r1) * s;
    // Voxelised spheres: the boundary voxels lie within one voxel of the true sphere.
    let hd = d.hausdorff().value.unwrap();
    assert!((hd - gap).abs() <= 1.5 * s, "hd {hd} vs {gap}");
    let assd = d.assd().value.unwrap();
    assert!((assd - gap).abs() <= 1.0 * s, "assd {assd} vs {gap}");
    // NSD: nothing within a tolerance well below the gap, everything above it.
    assert_eq!(d.nsd(gap - 2.0 * s).unwrap().value, Some(0.0));
    assert_eq!(d.nsd(gap + 2.0 * s).unwrap().value, Some(1.0));
    let ds = surface_distances(a.view(), b.view(), [s; 3], SurfaceKind::Surfels).unwrap();
    let hs = ds
        .hausdorff_percentile(95.0, HdConvention::MaxOfDirected)
        .unwrap()
        .value
        .unwrap();
    assert!((hs - gap).abs() <= 1.5 * s);
    // Surfel area of a sphere: close to 4 pi r^2 (marching cubes slightly overestimates).
    let t = surfel_area_table([s; 3]);
    let area: f64 = neighbour_codes(b.view())
        .iter()
        .map(|&c| t[c as usize])
        .sum();
    let true_area = 4.0 * std::f64::consts::PI * (r2 * s + 0.0).powi(2);
    assert!(
        (area / true_area - 1.0).abs() < 0.1,
        "area {area} vs {true_area}"
    );
}

#[test]
fn shifted_box_anisotropic() {
    let sp = [0.4, 0.9, 1.3];
    let mut a = Array3::from_elem([12, 12, 16], false);
    a.slice_mut(s![2..9, 3..10, 2..8]).fill(true);
    for t in 1..4usize {
        let mut b = Array3::from_elem([12, 12, 16], false);
        b.slice_mut(s![2..9, 3..10, 2 + t..8 + t]).fill(true);
        let m = evaluate_pair(a.view(), b.view(), sp, &EvalOptions::default()).unwrap();
        let want = t as f64 * sp[2];
        close(m.voxel_surface.hd, want);
        close(m.voxel_surface.hd_ref_to_pred, want);
        close(m.solid.unwrap().hausdorff, want);
        close(m.seed_paper_hd_voxels.unwrap(), t as f64);
        close(m.overlap.dice, (6 - t) as f64 / 6.0);
        close(m.surfel_surface.unwrap().hd, want);
    }
}

#[test]
fn evaluate_and_report_with_empty_cases() {
    let mut a = Array3::from_elem([6, 6, 6], false);
    a.slice_mut(s![1..4, 1..4, 1..4]).fill(true);
    let e = Array3::from_elem([6, 6, 6], false);
    let opts = EvalOptions::default();
    let cases = [
        evaluate_pair(a.view(), a.view(), [1.0; 3], &opts).unwrap(),
        evaluate_pair(a.view(), e.view(), [1.0; 3], &opts).unwrap(),
        evaluate_pair(e.view(), e.view(), [1.0; 3], &opts).unwrap(),
    ];
    assert_eq!(
        cases[1].voxel_surface.hd,
        MetricValue::undefined(Note::EmptyPrediction)
    );
    assert_eq!(
        cases[1].solid.unwrap().hausdorff,
        MetricValue::undefined(Note::EmptyPrediction)
    );
    assert_eq!(
        cases[2].overlap.dice,
        MetricValue::conventional(1.0, Note::BothEmpty)
    );
    let rep = Report::from_cases(cases.iter().map(|c| c.named_values()));
    let hd = &rep.metrics["hd"];
    assert_eq!((hd.n_defined, hd.n_undefined, hd.n_both_empty), (2, 1, 1));
    assert_eq!(hd.mean, Some(0.0));
    let dice = &rep.metrics["dice"];
    assert_eq!(dice.n_defined, 3);
    assert_relative_eq!(dice.mean.unwrap(), 2.0 / 3.0);
    let json = serde_json::to_string(&rep).unwrap();
    assert!(json.contains("n_undefined"));
    // Shape mismatch is an error naming both shapes.
    let other = Array3::from_elem([6, 6, 7], false);
    let err = evaluate_pair(a.view(), other.view(), [1.0; 3], &opts).unwrap_err();
    assert!(err.to_string().contains("[6, 6, 7]"));
}

#[test]
fn multi_label() {
    let mut r = Array3::<u8>::zeros([8, 8, 8]);
    r.slice_mut(s![1..4, 1..4, 1..4]).fill(1);
    r.slice_mut(s![5..7, 5..7, 5..7]).fill(2);
    let mut p = r.clone();
    p.slice_mut(s![5..7, 5..7, 5..7]).fill(0);
    p[[0, 0, 0]] = 3;
    let opts = EvalOptions {
        surfels: false,
        ..EvalOptions::default()
    };
    let res = evaluate_labels(r.view(), p.view(), [1.0; 3], None, &opts).unwrap();
    let labels: Vec<u8> = res.iter().map(|l| l.label).collect();
    assert_eq!(labels, vec![1, 2, 3]);
    assert_eq!(res[0].metrics.overlap.dice.value, Some(1.0));
    assert_eq!(
        res[1].metrics.voxel_surface.hd,
        MetricValue::undefined(Note::EmptyPrediction)
    );
    assert_eq!(
        res[2].metrics.voxel_surface.hd,
        MetricValue::undefined(Note::EmptyReference)
    );
    let only = evaluate_labels(r.view(), p.view(), [1.0; 3], Some(&[7]), &opts).unwrap();
    assert_eq!(only[0].metrics.overlap.dice.note, Some(Note::BothEmpty));
}
