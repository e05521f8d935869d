//! Shared by tests/nrrd.rs and tests/metaimage.rs: the SimpleITK fixtures of
//! `tests/fixtures/itk` (made by `make_itk_fixtures.py`) and what SimpleITK read from them.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use approx::assert_abs_diff_eq;
use negvol_volume::*;

pub fn itk(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/itk")
        .join(name)
}

/// What SimpleITK reported for a fixture.
pub struct Itk {
    pub size: [usize; 3],
    pub components: usize,
    /// The RAS affine negvol must report: diag(-1, -1, 1) [D diag(spacing) | origin].
    pub affine: [[f64; 4]; 4],
    /// One list per component, index order (i fastest).
    pub values: Vec<Vec<f64>>,
}

pub fn itk_json(json: &str) -> Itk {
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(itk(json)).unwrap()).unwrap();
    let nums = |k: &str| -> Vec<f64> {
        v[k].as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect()
    };
    let size: Vec<usize> = nums("size").iter().map(|x| *x as usize).collect();
    let (sp, o, d) = (nums("spacing"), nums("origin"), nums("direction"));
    let mut affine = [[0.0; 4]; 4];
    for r in 0..3 {
        let sign = if r < 2 { -1.0 } else { 1.0 };
        for c in 0..3 {
            affine[r][c] = sign * d[3 * r + c] * sp[c];
        }
        affine[r][3] = sign * o[r];
    }
    affine[3][3] = 1.0;
    let components = v["components"].as_u64().unwrap() as usize;
    let as_list = |x: &serde_json::Value| -> Vec<f64> {
        x.as_array()
            .unwrap()
            .iter()
            .map(|y| y.as_f64().unwrap())
            .collect()
    };
    let values = if components == 1 {
        vec![as_list(&v["values"])]
    } else {
        v["values"]
            .as_array()
            .unwrap()
            .iter()
            .map(as_list)
            .collect()
    };
    Itk {
        size: [size[0], size[1], size[2]],
        components,
        affine,
        values,
    }
}

/// Voxels in index order (i fastest), as SimpleITK's lists are.
pub fn index_order<T: NiftiScalar>(v: &Volume<T>) -> Vec<f64> {
    v.data().t().iter().map(|x| x.to_f64()).collect()
}

pub fn assert_affine(a: &[[f64; 4]; 4], b: &[[f64; 4]; 4], what: &str) {
    for r in 0..4 {
        for c in 0..4 {
            assert_abs_diff_eq!(a[r][c], b[r][c], epsilon = 1e-9);
        }
    }
    let _ = what;
}

/// A 3D fixture must read (through `read_volume`) as SimpleITK read it: values, shape and
/// the world affine.
pub fn check_itk_fixture(file: &str, json: &str) {
    let want = itk_json(json);
    assert_eq!(want.components, 1, "{file}");
    let v = read_volume::<f64>(itk(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
    assert_eq!(v.geometry().shape(), want.size, "{file}");
    assert_eq!(index_order(&v), want.values[0], "{file}");
    assert_affine(&v.geometry().affine(), &want.affine, file);
    // The header alone gives the same grid.
    let g = read_volume_geometry(itk(file)).unwrap();
    assert_eq!(&g, v.geometry(), "{file}");
}

/// An oblique grid whose direction matrix is not symmetric (an axis permutation and two
/// rotations), with anisotropic spacing: a transposed direction gives another grid.
pub fn oblique_geometry(shape: [usize; 3]) -> Geometry {
    let (c1, s1) = (0.3f64.cos(), 0.3f64.sin());
    let (c2, s2) = (0.2f64.cos(), 0.2f64.sin());
    let rz = [[c1, -s1, 0.0], [s1, c1, 0.0], [0.0, 0.0, 1.0]];
    let rx = [[1.0, 0.0, 0.0], [0.0, c2, -s2], [0.0, s2, c2]];
    let perm = [[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]];
    let sp = [0.4, 0.7, 1.3];
    let mul = |a: [[f64; 3]; 3], b: [[f64; 3]; 3]| {
        let mut m = [[0.0; 3]; 3];
        for r in 0..3 {
            for c in 0..3 {
                m[r][c] = (0..3).map(|k| a[r][k] * b[k][c]).sum();
            }
        }
        m
    };
    let d = mul(mul(rz, rx), perm);
    let mut a = [[0.0; 4]; 4];
    for r in 0..3 {
        for c in 0..3 {
            a[r][c] = d[r][c] * sp[c];
        }
    }
    a[0][3] = -12.5;
    a[1][3] = 30.25;
    a[2][3] = 4.0;
    a[3][3] = 1.0;
    Geometry::new(shape, a).unwrap()
}

/// A volume whose voxel at flat C index `p` is `f(p)`.
pub fn ramp<T: NiftiScalar>(shape: [usize; 3], f: impl Fn(usize) -> T) -> Volume<T> {
    let n = shape[0] * shape[1] * shape[2];
    let data =
        ndarray::Array3::from_shape_vec((shape[0], shape[1], shape[2]), (0..n).map(f).collect())
            .unwrap();
    Volume::new(data, oblique_geometry(shape)).unwrap()
}

/// Files in a folder, for checking that atomic writes leave no temporary file.
pub fn names(dir: &Path) -> Vec<String> {
    let mut n: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    n.sort();
    n
}

/// Deterministic pseudo-random bytes (xorshift), for the never-panic tests.
pub struct Xorshift(pub u64);

impl Xorshift {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}
