//! Small 3-vector and 3x3-matrix helpers (row-major `m[r][c]`).

pub(crate) type V3 = [f64; 3];
pub(crate) type M3 = [[f64; 3]; 3];

#[inline]
pub(crate) fn dot(a: V3, b: V3) -> f64 {
    a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
}

#[inline]
pub(crate) fn sub(a: V3, b: V3) -> V3 {
    [a[0] - b[0], a[1] - b[1], a[2] - b[2]]
}

#[inline]
pub(crate) fn add(a: V3, b: V3) -> V3 {
    [a[0] + b[0], a[1] + b[1], a[2] + b[2]]
}

#[inline]
pub(crate) fn scale(a: V3, s: f64) -> V3 {
    [a[0] * s, a[1] * s, a[2] * s]
}

#[inline]
pub(crate) fn norm(a: V3) -> f64 {
    dot(a, a).sqrt()
}

#[inline]
pub(crate) fn normalize(a: V3) -> V3 {
    scale(a, 1.0 / norm(a))
}

#[inline]
pub(crate) fn cross(a: V3, b: V3) -> V3 {
    [
        a[1] * b[2] - a[2] * b[1],
        a[2] * b[0] - a[0] * b[2],
        a[0] * b[1] - a[1] * b[0],
    ]
}

#[inline]
pub(crate) fn mat_vec(m: &M3, v: V3) -> V3 {
    [dot(m[0], v), dot(m[1], v), dot(m[2], v)]
}

/// `m^T v`.
#[inline]
pub(crate) fn mat_t_vec(m: &M3, v: V3) -> V3 {
    [
        m[0][0] * v[0] + m[1][0] * v[1] + m[2][0] * v[2],
        m[0][1] * v[0] + m[1][1] * v[1] + m[2][1] * v[2],
        m[0][2] * v[0] + m[1][2] * v[1] + m[2][2] * v[2],
    ]
}

pub(crate) fn mat_mul(a: &M3, b: &M3) -> M3 {
    let mut r = [[0.0; 3]; 3];
    for (i, row) in r.iter_mut().enumerate() {
        for (j, x) in row.iter_mut().enumerate() {
            *x = (0..3).map(|k| a[i][k] * b[k][j]).sum();
        }
    }
    r
}

pub(crate) fn rot_x(deg: f64) -> M3 {
    let (s, c) = deg.to_radians().sin_cos();
    [[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]]
}

pub(crate) fn rot_y(deg: f64) -> M3 {
    let (s, c) = deg.to_radians().sin_cos();
    [[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]]
}

pub(crate) fn rot_z(deg: f64) -> M3 {
    let (s, c) = deg.to_radians().sin_cos();
    [[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]]
}

/// Extrinsic rotation about x, then y, then z (degrees): `Rz * Ry * Rx`.
pub(crate) fn euler_xyz(deg: [f64; 3]) -> M3 {
    mat_mul(&rot_z(deg[2]), &mat_mul(&rot_y(deg[1]), &rot_x(deg[0])))
}

/// Two unit vectors completing `u` to an orthonormal basis.
pub(crate) fn tangents(u: V3) -> (V3, V3) {
    let a = if u[0].abs() < 0.9 {
        [1.0, 0.0, 0.0]
    } else {
        [0.0, 1.0, 0.0]
    };
    let t1 = normalize(cross(u, a));
    let t2 = cross(u, t1);
    (t1, t2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotations_are_orthonormal() {
        let r = euler_xyz([10.0, -20.0, 33.0]);
        let rt_r = mat_mul(
            &[
                [r[0][0], r[1][0], r[2][0]],
                [r[0][1], r[1][1], r[2][1]],
                [r[0][2], r[1][2], r[2][2]],
            ],
            &r,
        );
        for (i, row) in rt_r.iter().enumerate() {
            for (j, x) in row.iter().enumerate() {
                assert!((x - if i == j { 1.0 } else { 0.0 }).abs() < 1e-12);
            }
        }
        let v = [0.3, -0.2, 0.9];
        let w = mat_t_vec(&r, mat_vec(&r, v));
        assert!(norm(sub(v, w)) < 1e-12);
        let (t1, t2) = tangents(normalize(v));
        assert!(dot(t1, v).abs() < 1e-12 && dot(t2, v).abs() < 1e-12);
        assert!((norm(t2) - 1.0).abs() < 1e-12);
        assert!(norm(sub(add(v, scale(v, -1.0)), [0.0; 3])) < 1e-15);
    }
}
