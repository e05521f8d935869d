//! Voxelization against analytic volumes and a brute-force generalized winding number.

use negvol_volume::*;

fn boxed(lo: [f64; 3], hi: [f64; 3]) -> TriMesh {
    TriMesh::cuboid(lo, hi)
}

/// Icosphere: icosahedron subdivided `levels` times, projected on the sphere.
fn icosphere(center: [f64; 3], r: f64, levels: usize) -> TriMesh {
    let t = (1.0 + 5f64.sqrt()) / 2.0;
    let mut v: Vec<[f64; 3]> = vec![
        [-1.0, t, 0.0],
        [1.0, t, 0.0],
        [-1.0, -t, 0.0],
        [1.0, -t, 0.0],
        [0.0, -1.0, t],
        [0.0, 1.0, t],
        [0.0, -1.0, -t],
        [0.0, 1.0, -t],
        [t, 0.0, -1.0],
        [t, 0.0, 1.0],
        [-t, 0.0, -1.0],
        [-t, 0.0, 1.0],
    ];
    let mut f: Vec<[u32; 3]> = vec![
        [0, 11, 5],
        [0, 5, 1],
        [0, 1, 7],
        [0, 7, 10],
        [0, 10, 11],
        [1, 5, 9],
        [5, 11, 4],
        [11, 10, 2],
        [10, 7, 6],
        [7, 1, 8],
        [3, 9, 4],
        [3, 4, 2],
        [3, 2, 6],
        [3, 6, 8],
        [3, 8, 9],
        [4, 9, 5],
        [2, 4, 11],
        [6, 2, 10],
        [8, 6, 7],
        [9, 8, 1],
    ];
    let unit = |p: [f64; 3]| {
        let n = (p[0] * p[0] + p[1] * p[1] + p[2] * p[2]).sqrt();
        [p[0] / n, p[1] / n, p[2] / n]
    };
    for p in v.iter_mut() {
        *p = unit(*p);
    }
    for _ in 0..levels {
        let mut mid = std::collections::HashMap::new();
        let mut nf = Vec::new();
        for tri in &f {
            let mut m = [0u32; 3];
            for e in 0..3 {
                let (a, b) = (tri[e], tri[(e + 1) % 3]);
                let key = (a.min(b), a.max(b));
                m[e] = *mid.entry(key).or_insert_with(|| {
                    let (pa, pb) = (v[a as usize], v[b as usize]);
                    v.push(unit([
                        (pa[0] + pb[0]) / 2.0,
                        (pa[1] + pb[1]) / 2.0,
                        (pa[2] + pb[2]) / 2.0,
                    ]));
                    (v.len() - 1) as u32
                });
            }
            nf.push([tri[0], m[0], m[2]]);
            nf.push([tri[1], m[1], m[0]]);
            nf.push([tri[2], m[2], m[1]]);
            nf.push([m[0], m[1], m[2]]);
        }
        f = nf;
    }
    let v = v
        .into_iter()
        .map(|p| {
            [
                center[0] + r * p[0],
                center[1] + r * p[1],
                center[2] + r * p[2],
            ]
        })
        .collect();
    TriMesh::new(v, f).unwrap()
}

/// Generalized winding number (sum of solid angles / 4 pi), Van Oosterom-Strackee.
fn winding(mesh: &TriMesh, p: [f64; 3]) -> f64 {
    let mut total = 0.0;
    for f in 0..mesh.len() {
        let t = mesh.triangle(f);
        let a = [t[0][0] - p[0], t[0][1] - p[1], t[0][2] - p[2]];
        let b = [t[1][0] - p[0], t[1][1] - p[1], t[1][2] - p[2]];
        let c = [t[2][0] - p[0], t[2][1] - p[1], t[2][2] - p[2]];
        let n = |v: [f64; 3]| (v[0] * v[0] + v[1] * v[1] + v[2] * v[2]).sqrt();
        let d = |u: [f64; 3], v: [f64; 3]| u[0] * v[0] + u[1] * v[1] + u[2] * v[2];
        let det = a[0] * (b[1] * c[2] - b[2] * c[1]) - a[1] * (b[0] * c[2] - b[2] * c[0])
            + a[2] * (b[0] * c[1] - b[1] * c[0]);
        let (la, lb, lc) = (n(a), n(b), n(c));
        let den = la * lb * lc + d(a, b) * lc + d(b, c) * la + d(c, a) * lb;
        total += 2.0 * det.atan2(den);
    }
    total / (4.0 * std::f64::consts::PI)
}

fn count(v: &Volume<bool>) -> usize {
    v.data().iter().filter(|&&b| b).count()
}

#[test]
fn boxes_on_voxel_centres_have_exact_counts() {
    let g = Geometry::from_spacing([12, 12, 12], [1.0; 3]).unwrap();
    // Faces exactly on voxel centres: half-open rule gives extent^3.
    let m = voxelize(&boxed([2.0, 3.0, 1.0], [7.0, 9.0, 5.0]), &g).unwrap();
    assert_eq!(count(&m), 5 * 6 * 4);
    // Faces between centres.
    let m = voxelize(&boxed([2.5, 3.5, 1.5], [7.5, 9.5, 5.5]), &g).unwrap();
    assert_eq!(count(&m), 5 * 6 * 4);
    // The same in an LPS grid (flipped axes) and with anisotropic spacing.
    let a = [
        [-0.5, 0.0, 0.0, 10.0],
        [0.0, -1.0, 0.0, 12.0],
        [0.0, 0.0, 2.0, -2.0],
        [0.0, 0.0, 0.0, 1.0],
    ];
    let g = Geometry::new([24, 14, 8], a).unwrap();
    let b = boxed([2.0, 3.0, 0.0], [7.0, 9.0, 8.0]); // 5 x 6 x 8 mm = 240 mm^3
    let m = voxelize(&b, &g).unwrap();
    assert_eq!(count(&m) as f64 * g.voxel_volume_mm3(), 240.0);
    assert_eq!(b.signed_volume(), 240.0);
    // Flipped faces and the nonzero rule agree.
    assert_eq!(voxelize(&b.flipped(), &g).unwrap(), m);
    let nz = VoxelizeOptions {
        fill_rule: FillRule::NonZero,
        ..Default::default()
    };
    assert_eq!(voxelize_with(&b, &g, &nz).unwrap(), m);
    assert_eq!(voxelize_with(&b.flipped(), &g, &nz).unwrap(), m);
}

#[test]
fn rays_through_vertices_and_edges() {
    // Octahedron |x|+|y|+|z| <= 4 centred on a voxel centre: every vertex and many edges lie
    // on ray lines. Off-surface centres must match the analytic test exactly.
    let c = 6.0;
    let v = vec![
        [c + 4.0, c, c],
        [c - 4.0, c, c],
        [c, c + 4.0, c],
        [c, c - 4.0, c],
        [c, c, c + 4.0],
        [c, c, c - 4.0],
    ];
    let f = vec![
        [0, 2, 4],
        [2, 1, 4],
        [1, 3, 4],
        [3, 0, 4],
        [2, 0, 5],
        [1, 2, 5],
        [3, 1, 5],
        [0, 3, 5],
    ];
    let oct = TriMesh::new(v, f).unwrap();
    assert!(oct.is_closed());
    let g = Geometry::from_spacing([13, 13, 13], [1.0; 3]).unwrap();
    let m = voxelize(&oct, &g).unwrap();
    let (mut strict, mut closed) = (0, 0);
    for ((i, j, k), &inside) in m.data().indexed_iter() {
        let s = (i as f64 - c).abs() + (j as f64 - c).abs() + (k as f64 - c).abs();
        if s < 4.0 {
            assert!(inside, "({i},{j},{k}) is strictly inside");
            strict += 1;
        } else if s > 4.0 {
            assert!(!inside, "({i},{j},{k}) is strictly outside");
        } else {
            closed += 1;
        }
    }
    let n = count(&m);
    assert!(n >= strict && n <= strict + closed);
    // Exactly half-open along k: a surface centre counts iff it is on the lower (entering) side.
    for ((i, j, k), &inside) in m.data().indexed_iter() {
        let s = (i as f64 - c).abs() + (j as f64 - c).abs() + (k as f64 - c).abs();
        if s == 4.0 && (i as f64 - c).abs() + (j as f64 - c).abs() < 4.0 {
            assert_eq!(inside, (k as f64) < c, "({i},{j},{k})");
        }
    }
}

#[test]
fn sphere_volume_and_brute_force_agree() {
    let r = 5.0;
    let sphere = icosphere([0.3, -0.2, 0.1], r, 3); // 1280 faces
    assert!(sphere.is_closed());
    let exact = sphere.signed_volume();
    assert!((exact - 4.0 / 3.0 * std::f64::consts::PI * r.powi(3)).abs() / exact < 0.02);
    // Oblique, anisotropic grid around it.
    let (cs, sn) = (0.5f64.cos(), 0.5f64.sin());
    let lin = [
        [0.5 * cs, -0.45 * sn, 0.0],
        [0.5 * sn, 0.45 * cs, 0.0],
        [0.0, 0.0, -0.6],
    ];
    let shape = [26usize, 28, 22];
    // Grid centre slightly off the sphere centre, so no centre lies on the surface.
    let mid = [12.37, 13.81, 10.29];
    let mut a = [[0.0; 4]; 4];
    for r in 0..3 {
        a[r][..3].copy_from_slice(&lin[r]);
        a[r][3] = [0.3, -0.2, 0.1][r] - (0..3).map(|c| lin[r][c] * mid[c]).sum::<f64>();
    }
    a[3][3] = 1.0;
    let g = Geometry::new(shape, a).unwrap();
    let c0 = g.world_to_voxel([0.3, -0.2, 0.1]);
    assert!(
        c0.iter()
            .zip(g.shape())
            .all(|(x, n)| *x > 8.0 && *x < n as f64 - 8.0),
        "{c0:?}"
    );
    let m = voxelize(&sphere, &g).unwrap();
    let got = count(&m) as f64 * g.voxel_volume_mm3();
    assert!((got - exact).abs() / exact < 0.02, "{got} vs {exact}");
    // Brute force on every voxel centre.
    let mut mismatches = 0;
    for ((i, j, k), &inside) in m.data().indexed_iter() {
        let p = g.voxel_to_world([i as f64, j as f64, k as f64]);
        let w = winding(&sphere, p);
        assert!(
            (w - w.round()).abs() < 1e-6 || (w - 0.5).abs() < 1e-6,
            "{w}"
        );
        if inside != (w > 0.5) {
            mismatches += 1;
        }
    }
    assert_eq!(mismatches, 0);
}

#[test]
fn overlapping_parts_union_or_xor() {
    let g = Geometry::from_spacing([10, 10, 10], [1.0; 3]).unwrap();
    let a = boxed([1.0, 1.0, 1.0], [5.0, 5.0, 5.0]);
    let b = boxed([3.0, 3.0, 3.0], [8.0, 8.0, 8.0]);
    let mut both = a.clone();
    let off = both.vertices.len() as u32;
    both.vertices.extend(b.vertices.iter().copied());
    both.faces
        .extend(b.faces.iter().map(|f| [f[0] + off, f[1] + off, f[2] + off]));
    let xor = voxelize(&both, &g).unwrap();
    let union = voxelize_with(
        &both,
        &g,
        &VoxelizeOptions {
            fill_rule: FillRule::NonZero,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(count(&union), 64 + 125 - 8);
    assert_eq!(count(&xor), 64 + 125 - 2 * 8);
}

#[test]
fn open_and_far_meshes_are_refused() {
    let g = Geometry::from_spacing([4, 4, 4], [1.0; 3]).unwrap();
    let mut open = boxed([0.0; 3], [2.0; 3]);
    open.faces.pop();
    let err = voxelize(&open, &g).unwrap_err();
    assert!(err.to_string().contains("not closed"), "{err}");
    let lenient = VoxelizeOptions {
        allow_open: true,
        ..Default::default()
    };
    assert!(voxelize_with(&open, &g, &lenient).is_ok());
    let far = boxed([0.0; 3], [1e12, 1.0, 1.0]);
    assert!(voxelize(&far, &g).is_err());
    // A mesh entirely outside the grid gives an empty mask.
    let outside = boxed([100.0; 3], [110.0; 3]);
    assert_eq!(count(&voxelize(&outside, &g).unwrap()), 0);
}

#[test]
fn stl_round_trip_then_voxelize() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("sphere.stl");
    // f32-exact coordinates survive the binary round trip bit for bit.
    let s = icosphere([1.0, 2.0, 3.0], 4.0, 2).map_vertices(|v| v.map(|x| x as f32 as f64));
    write_stl(&p, &s).unwrap();
    assert_eq!(
        std::fs::metadata(&p).unwrap().len(),
        84 + 50 * s.len() as u64
    );
    let back = read_stl(&p).unwrap();
    assert_eq!(back.vertices.len(), s.vertices.len());
    assert_eq!(back.len(), s.len());
    for f in 0..s.len() {
        assert_eq!(back.triangle(f), s.triangle(f));
    }
    assert!(back.is_closed());
    let g = Geometry::from_spacing([20, 20, 20], [0.5; 3]).unwrap();
    let g = Geometry::new(
        g.shape(),
        [
            [0.5, 0.0, 0.0, -4.0],
            [0.0, 0.5, 0.0, -3.0],
            [0.0, 0.0, 0.5, -2.0],
            [0.0, 0.0, 0.0, 1.0],
        ],
    )
    .unwrap();
    let m = voxelize(&back, &g).unwrap();
    let got = count(&m) as f64 * g.voxel_volume_mm3();
    let want = back.signed_volume();
    assert!((got - want).abs() / want < 0.05, "{got} vs {want}");
    let err = read_stl(dir.path().join("missing.stl")).unwrap_err();
    assert!(matches!(err, VolumeError::Io { .. }));
    std::fs::write(dir.path().join("junk.stl"), b"\x00\x01garbage").unwrap();
    let err = read_stl(dir.path().join("junk.stl")).unwrap_err();
    assert!(err.to_string().contains("junk.stl"), "{err}");
}
