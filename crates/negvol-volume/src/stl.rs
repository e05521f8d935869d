//! Triangle meshes ([`TriMesh`]), STL reading (ASCII and binary) and writing (binary).

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;

use crate::rawdata::{atomic_write, WriteErr};
use crate::{Result, VolumeError};

/// An indexed triangle mesh in world millimetres (RAS+ for negvol's own meshes; STL files
/// carry no coordinate system, so a mesh read from STL is in whatever frame its writer used).
///
/// Faces are counter-clockwise seen from outside for an outward-oriented closed mesh.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TriMesh {
    /// Vertex positions.
    pub vertices: Vec<[f64; 3]>,
    /// Triangles as indices into `vertices`.
    pub faces: Vec<[u32; 3]>,
}

impl TriMesh {
    /// The closed, outward-oriented surface of the axis-aligned box from corner `lo` to
    /// corner `hi` (world mm): 8 vertices, 12 triangles. Corners in either order.
    ///
    /// ```
    /// let b = negvol_volume::TriMesh::cuboid([0.0; 3], [2.0, 3.0, 4.0]);
    /// assert!(b.is_closed());
    /// assert!((b.signed_volume() - 24.0).abs() < 1e-12);
    /// ```
    pub fn cuboid(lo: [f64; 3], hi: [f64; 3]) -> Self {
        let (lo, hi) = (
            [0, 1, 2].map(|a| lo[a].min(hi[a])),
            [0, 1, 2].map(|a| lo[a].max(hi[a])),
        );
        let vertices = (0..8)
            .map(|n| [0, 1, 2].map(|a| if n >> a & 1 == 1 { hi[a] } else { lo[a] }))
            .collect();
        let faces = vec![
            [0, 2, 1],
            [1, 2, 3],
            [4, 5, 6],
            [5, 7, 6],
            [0, 1, 4],
            [1, 5, 4],
            [2, 6, 3],
            [3, 6, 7],
            [0, 4, 2],
            [2, 4, 6],
            [1, 3, 5],
            [3, 7, 5],
        ];
        Self { vertices, faces }
    }

    /// A mesh from vertices and faces; every index must be in range and every coordinate
    /// finite.
    pub fn new(vertices: Vec<[f64; 3]>, faces: Vec<[u32; 3]>) -> Result<Self> {
        if let Some((n, v)) = vertices
            .iter()
            .enumerate()
            .find(|(_, v)| v.iter().any(|x| !x.is_finite()))
        {
            return Err(VolumeError::InvalidArgument(format!(
                "mesh vertex {n} is not finite: {v:?}"
            )));
        }
        if let Some((n, f)) = faces
            .iter()
            .enumerate()
            .find(|(_, f)| f.iter().any(|&i| i as usize >= vertices.len()))
        {
            return Err(VolumeError::InvalidArgument(format!(
                "mesh face {n} {f:?} refers to a vertex past the {} vertices",
                vertices.len()
            )));
        }
        Ok(Self { vertices, faces })
    }

    /// A mesh from a triangle soup, merging vertices with bit-identical coordinates (as STL
    /// files repeat each shared vertex).
    pub fn from_triangles(triangles: &[[[f64; 3]; 3]]) -> Self {
        let mut map: HashMap<[u64; 3], u32> = HashMap::new();
        let mut vertices = Vec::new();
        let mut faces = Vec::with_capacity(triangles.len());
        for t in triangles {
            let mut f = [0u32; 3];
            for (c, v) in t.iter().enumerate() {
                // +0.0 and -0.0 are the same point.
                let key = v.map(|x| (x + 0.0).to_bits());
                f[c] = *map.entry(key).or_insert_with(|| {
                    vertices.push(*v);
                    (vertices.len() - 1) as u32
                });
            }
            faces.push(f);
        }
        Self { vertices, faces }
    }

    /// Number of triangles.
    pub fn len(&self) -> usize {
        self.faces.len()
    }

    /// Whether the mesh has no triangles.
    pub fn is_empty(&self) -> bool {
        self.faces.is_empty()
    }

    /// The corners of face `f`.
    pub fn triangle(&self, f: usize) -> [[f64; 3]; 3] {
        let [a, b, c] = self.faces[f];
        [
            self.vertices[a as usize],
            self.vertices[b as usize],
            self.vertices[c as usize],
        ]
    }

    /// Signed enclosed volume (mm^3) by the divergence theorem: positive for a closed mesh
    /// with outward-facing (counter-clockwise from outside) triangles.
    pub fn signed_volume(&self) -> f64 {
        (0..self.len())
            .map(|f| {
                let [a, b, c] = self.triangle(f);
                dot(a, cross(b, c)) / 6.0
            })
            .sum()
    }

    /// Total surface area (mm^2).
    pub fn area(&self) -> f64 {
        (0..self.len())
            .map(|f| {
                let [a, b, c] = self.triangle(f);
                norm(cross(sub(b, a), sub(c, a))) / 2.0
            })
            .sum()
    }

    /// Axis-aligned bounds `(min, max)`, or `None` for a mesh without vertices.
    pub fn bounds(&self) -> Option<([f64; 3], [f64; 3])> {
        let mut it = self.vertices.iter();
        let first = *it.next()?;
        Some(it.fold((first, first), |(mut lo, mut hi), v| {
            for a in 0..3 {
                lo[a] = lo[a].min(v[a]);
                hi[a] = hi[a].max(v[a]);
            }
            (lo, hi)
        }))
    }

    /// Number of edges used by an odd number of faces: 0 for a closed mesh (in the mod-2
    /// sense that ray-parity voxelization needs; two closed surfaces touching along an edge
    /// are still closed).
    pub fn open_edges(&self) -> usize {
        let mut count: HashMap<(u32, u32), u32> = HashMap::new();
        for f in &self.faces {
            for e in 0..3 {
                let (a, b) = (f[e], f[(e + 1) % 3]);
                *count.entry((a.min(b), a.max(b))).or_insert(0) += 1;
            }
        }
        count.values().filter(|&&n| n % 2 == 1).count()
    }

    /// Whether the mesh is non-empty and has no [open edges](Self::open_edges).
    pub fn is_closed(&self) -> bool {
        !self.is_empty() && self.open_edges() == 0
    }

    /// The mesh with every face's orientation reversed.
    pub fn flipped(&self) -> Self {
        Self {
            vertices: self.vertices.clone(),
            faces: self.faces.iter().map(|&[a, b, c]| [a, c, b]).collect(),
        }
    }

    /// The mesh with `f` applied to every vertex.
    pub fn map_vertices(&self, f: impl Fn([f64; 3]) -> [f64; 3]) -> Self {
        Self {
            vertices: self.vertices.iter().map(|&v| f(v)).collect(),
            faces: self.faces.clone(),
        }
    }
}

pub(crate) fn sub(a: [f64; 3], b: [f64; 3]) -> [f64; 3] {
    [a[0] - b[0], a[1] - b[1], a[2] - b[2]]
}
pub(crate) fn dot(a: [f64; 3], b: [f64; 3]) -> f64 {
    a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
}
pub(crate) fn cross(a: [f64; 3], b: [f64; 3]) -> [f64; 3] {
    [
        a[1] * b[2] - a[2] * b[1],
        a[2] * b[0] - a[0] * b[2],
        a[0] * b[1] - a[1] * b[0],
    ]
}
pub(crate) fn norm(a: [f64; 3]) -> f64 {
    dot(a, a).sqrt()
}

/// Read an STL file, ASCII or binary (detected from the size the binary header implies,
/// then from a leading `solid`), welding repeated vertices.
///
/// ```no_run
/// let mesh = negvol_volume::read_stl("condyle.stl")?;
/// println!("{} triangles, closed: {}", mesh.len(), mesh.is_closed());
/// # Ok::<(), negvol_volume::VolumeError>(())
/// ```
pub fn read_stl(path: impl AsRef<Path>) -> Result<TriMesh> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|e| VolumeError::io(path, e))?;
    let tris = parse_stl(&bytes).map_err(|m| VolumeError::format(path, m))?;
    Ok(TriMesh::from_triangles(&tris))
}

/// [`read_stl`] from bytes in memory. Errors name the file as `<memory>`.
pub fn read_stl_from_bytes(bytes: &[u8]) -> Result<TriMesh> {
    let tris = parse_stl(bytes).map_err(|m| VolumeError::format("<memory>", m))?;
    Ok(TriMesh::from_triangles(&tris))
}

/// Parse STL bytes into a triangle soup.
pub(crate) fn parse_stl(bytes: &[u8]) -> std::result::Result<Vec<[[f64; 3]; 3]>, String> {
    if bytes.len() >= 84 {
        let n = u32::from_le_bytes([bytes[80], bytes[81], bytes[82], bytes[83]]) as u64;
        if 84 + 50 * n == bytes.len() as u64 {
            return parse_binary(bytes, n as usize);
        }
    }
    let start = bytes
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(bytes.len());
    if bytes[start..].starts_with(b"solid") {
        return parse_ascii(bytes);
    }
    if bytes.len() >= 84 {
        let n = u32::from_le_bytes([bytes[80], bytes[81], bytes[82], bytes[83]]) as u64;
        return Err(format!(
            "not an STL file: binary header claims {n} triangles ({} bytes) but the file has {} bytes, and it does not start with \"solid\"",
            84 + 50 * n,
            bytes.len()
        ));
    }
    Err(format!("not an STL file ({} bytes)", bytes.len()))
}

fn parse_binary(bytes: &[u8], n: usize) -> std::result::Result<Vec<[[f64; 3]; 3]>, String> {
    let mut out = Vec::with_capacity(n);
    for t in 0..n {
        let rec = &bytes[84 + 50 * t..84 + 50 * t + 50];
        let mut tri = [[0.0; 3]; 3];
        for (c, v) in tri.iter_mut().enumerate() {
            for (a, x) in v.iter_mut().enumerate() {
                let o = 12 + 12 * c + 4 * a;
                *x = f32::from_le_bytes([rec[o], rec[o + 1], rec[o + 2], rec[o + 3]]) as f64;
                if !x.is_finite() {
                    return Err(format!("triangle {t} has a non-finite coordinate {x}"));
                }
            }
        }
        out.push(tri);
    }
    Ok(out)
}

fn parse_ascii(bytes: &[u8]) -> std::result::Result<Vec<[[f64; 3]; 3]>, String> {
    let text = std::str::from_utf8(bytes).map_err(|e| format!("ASCII STL is not UTF-8: {e}"))?;
    let mut out = Vec::new();
    let mut cur: Vec<[f64; 3]> = Vec::with_capacity(3);
    let mut in_facet = false;
    let mut ended = false;
    for (ln, line) in text.lines().enumerate() {
        let ln = ln + 1;
        let mut tok = line.split_whitespace();
        let Some(kw) = tok.next() else { continue };
        match kw.to_ascii_lowercase().as_str() {
            "solid" => {}
            "facet" => {
                if in_facet {
                    return Err(format!("line {ln}: facet inside a facet"));
                }
                in_facet = true;
                cur.clear();
            }
            "outer" | "endloop" => {}
            "vertex" => {
                if !in_facet {
                    return Err(format!("line {ln}: vertex outside a facet"));
                }
                let mut v = [0.0; 3];
                for x in v.iter_mut() {
                    let t = tok
                        .next()
                        .ok_or_else(|| format!("line {ln}: vertex needs 3 coordinates"))?;
                    *x = t
                        .parse::<f64>()
                        .map_err(|_| format!("line {ln}: bad coordinate {t:?}"))?;
                    if !x.is_finite() {
                        return Err(format!("line {ln}: non-finite coordinate {t:?}"));
                    }
                }
                cur.push(v);
            }
            "endfacet" => {
                if !in_facet {
                    return Err(format!("line {ln}: endfacet without facet"));
                }
                if cur.len() != 3 {
                    return Err(format!(
                        "line {ln}: facet has {} vertices (STL facets are triangles)",
                        cur.len()
                    ));
                }
                out.push([cur[0], cur[1], cur[2]]);
                in_facet = false;
            }
            "endsolid" => {
                ended = true;
                break;
            }
            other => return Err(format!("line {ln}: unexpected keyword {other:?}")),
        }
    }
    if in_facet {
        return Err("truncated ASCII STL: file ends inside a facet".into());
    }
    if !ended {
        return Err("truncated ASCII STL: no endsolid".into());
    }
    Ok(out)
}

/// Write a mesh as binary STL (f32 coordinates, facet normals from the vertex order),
/// atomically.
///
/// ```
/// use negvol_volume::{read_stl, write_stl, TriMesh};
/// let m = TriMesh::new(
///     vec![[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]],
///     vec![[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]],
/// )?;
/// assert!(m.is_closed());
/// assert!((m.signed_volume() - 1.0 / 6.0).abs() < 1e-12);
/// let dir = tempfile::tempdir().unwrap();
/// let p = dir.path().join("tet.stl");
/// write_stl(&p, &m)?;
/// let back = read_stl(&p)?; // vertices are re-welded in file order
/// assert_eq!((back.len(), back.vertices.len()), (4, 4));
/// assert_eq!(back.triangle(3), m.triangle(3));
/// # Ok::<(), negvol_volume::VolumeError>(())
/// ```
pub fn write_stl(path: impl AsRef<Path>, mesh: &TriMesh) -> Result<()> {
    let path = path.as_ref();
    let n = u32::try_from(mesh.len()).map_err(|_| {
        VolumeError::InvalidArgument(format!(
            "{}: {} triangles do not fit in binary STL",
            path.display(),
            mesh.len()
        ))
    })?;
    atomic_write(path, |w| {
        let mut header = [0u8; 80];
        let text = b"binary STL written by negvol-volume";
        header[..text.len()].copy_from_slice(text);
        w.write_all(&header)?;
        w.write_all(&n.to_le_bytes())?;
        for f in 0..mesh.len() {
            let [a, b, c] = mesh.triangle(f);
            let nrm = cross(sub(b, a), sub(c, a));
            let l = norm(nrm);
            let nrm = if l > 0.0 {
                nrm.map(|x| x / l)
            } else {
                [0.0; 3]
            };
            for v in [nrm, a, b, c] {
                for x in v {
                    w.write_all(&(x as f32).to_le_bytes())?;
                }
            }
            w.write_all(&[0, 0])?;
        }
        Ok::<(), WriteErr>(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ASCII: &str = "solid tet\n facet normal 0 0 -1\n  outer loop\n   vertex 0 0 0\n   vertex 0 1 0\n   vertex 1 0 0\n  endloop\n endfacet\n facet normal 0 -1 0\n  outer loop\n   vertex 0 0 0\n   vertex 1 0 0\n   vertex 0 0 1\n  endloop\n endfacet\n facet normal -1 0 0\n  outer loop\n   vertex 0 0 0\n   vertex 0 0 1\n   vertex 0 1 0\n  endloop\n endfacet\n facet normal 1 1 1\n  outer loop\n   vertex 1 0 0\n   vertex 0 1 0\n   vertex 0 0 1\n  endloop\n endfacet\nendsolid tet\n";

    #[test]
    fn ascii_parses_and_welds() {
        let tris = parse_stl(ASCII.as_bytes()).unwrap();
        assert_eq!(tris.len(), 4);
        let m = TriMesh::from_triangles(&tris);
        assert_eq!(m.vertices.len(), 4);
        assert!(m.is_closed());
        assert!((m.signed_volume() - 1.0 / 6.0).abs() < 1e-12);
        assert!((m.flipped().signed_volume() + 1.0 / 6.0).abs() < 1e-12);
    }

    #[test]
    fn bad_stl_is_refused_with_reason() {
        let cut = ASCII.strip_suffix("endsolid tet\n").unwrap();
        assert!(parse_stl(cut.as_bytes())
            .unwrap_err()
            .contains("no endsolid"));
        let cut = &ASCII[..ASCII.find("endloop\n endfacet\nendsolid").unwrap()];
        assert!(parse_stl(cut.as_bytes())
            .unwrap_err()
            .contains("ends inside a facet"));
        for n in 0..ASCII.len() - 13 {
            assert!(parse_stl(&ASCII.as_bytes()[..n]).is_err(), "{n}");
        }
        let quad = ASCII.replacen(
            "vertex 1 0 0\n  endloop",
            "vertex 1 0 0\n vertex 2 2 2\n endloop",
            1,
        );
        assert!(parse_stl(quad.as_bytes())
            .unwrap_err()
            .contains("4 vertices"));
        let nan = ASCII.replacen("vertex 0 1 0", "vertex 0 nan 0", 1);
        assert!(parse_stl(nan.as_bytes())
            .unwrap_err()
            .contains("non-finite"));
        let junk = ASCII.replacen("outer loop", "outer loop\n   frobnicate", 1);
        assert!(parse_stl(junk.as_bytes())
            .unwrap_err()
            .contains("frobnicate"));
        assert!(parse_stl(b"").is_err());
        let mut bin = vec![0u8; 84 + 50];
        bin[80] = 2; // claims 2 triangles, has 1
        assert!(parse_stl(&bin).unwrap_err().contains("claims 2 triangles"));
        bin[80] = 1;
        assert_eq!(parse_stl(&bin).unwrap().len(), 1);
        bin[84 + 12..84 + 16].copy_from_slice(&f32::INFINITY.to_le_bytes());
        assert!(parse_stl(&bin).unwrap_err().contains("non-finite"));
    }

    #[test]
    fn binary_starting_with_solid_is_binary() {
        let mut bin = vec![0u8; 84 + 50];
        bin[..5].copy_from_slice(b"solid");
        bin[80] = 1;
        assert_eq!(parse_stl(&bin).unwrap().len(), 1);
    }

    #[test]
    fn mesh_validation() {
        assert!(TriMesh::new(vec![[0.0; 3]], vec![[0, 0, 1]]).is_err());
        assert!(TriMesh::new(vec![[f64::NAN, 0.0, 0.0]], vec![]).is_err());
        let open = TriMesh::new(
            vec![[0.0; 3], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]],
            vec![[0, 1, 2]],
        )
        .unwrap();
        assert!(!open.is_closed());
        assert_eq!(open.open_edges(), 3);
        assert!((open.area() - 0.5).abs() < 1e-12);
        assert_eq!(open.bounds(), Some(([0.0; 3], [1.0, 1.0, 0.0])));
    }
}
