//! PNG slices through the joint with MC, TB and NV overlaid on the image, because a
//! clinician looks before reading numbers.
//!
//! Display conventions (radiological, as most viewers): axial and coronal slices show the
//! patient's right on the image's left; axial has anterior at the top, coronal and sagittal
//! have superior at the top, sagittal has anterior on the right. Slices are resampled
//! (nearest neighbour) to square pixels from the world coordinates, so any orientation and
//! anisotropic spacing display undistorted.

use std::path::{Path, PathBuf};

use negvol_volume::Volume;

use crate::{NvError, Result};

/// A slice plane.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    /// Perpendicular to superior.
    Axial,
    /// Perpendicular to anterior.
    Coronal,
    /// Perpendicular to left-right.
    Sagittal,
}

impl View {
    /// Lower-case name, used in file names.
    pub fn name(self) -> &'static str {
        match self {
            View::Axial => "axial",
            View::Coronal => "coronal",
            View::Sagittal => "sagittal",
        }
    }
    /// World directions of the image's columns (left to right) and rows (top to bottom).
    fn axes(self) -> ([f64; 3], [f64; 3]) {
        match self {
            View::Axial => ([-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]),
            View::Coronal => ([-1.0, 0.0, 0.0], [0.0, 0.0, -1.0]),
            View::Sagittal => ([0.0, 1.0, 0.0], [0.0, 0.0, -1.0]),
        }
    }
}

/// The volumes to draw; any may be absent.
#[derive(Debug, Clone, Copy, Default)]
pub struct Layers<'a> {
    /// Grey-level image (windowed between its 1st and 99th percentile on the slice).
    pub image: Option<&'a Volume<f32>>,
    /// Condyle, drawn red.
    pub mc: Option<&'a Volume<bool>>,
    /// Temporal bone, drawn blue.
    pub tb: Option<&'a Volume<bool>>,
    /// Negative volume, drawn green.
    pub nv: Option<&'a Volume<bool>>,
}

/// An RGB image, row-major, 3 bytes per pixel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rgb {
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// `width * height * 3` bytes.
    pub data: Vec<u8>,
}

fn lookup<T: Copy>(v: &Volume<T>, w: [f64; 3]) -> Option<T> {
    let p = v.geometry().world_to_voxel(w);
    let sh = v.geometry().shape();
    let q = [p[0].round(), p[1].round(), p[2].round()];
    if (0..3).all(|a| q[a] >= 0.0 && (q[a] as usize) < sh[a]) {
        Some(v.data()[[q[0] as usize, q[1] as usize, q[2] as usize]])
    } else {
        None
    }
}

/// Renders one slice through `centre` (world mm) covering `fov_mm` x `fov_mm` on a
/// `pixels` x `pixels` image.
pub fn render_slice(
    layers: &Layers,
    view: View,
    centre: [f64; 3],
    fov_mm: f64,
    pixels: usize,
) -> Rgb {
    let (ex, ey) = view.axes();
    let n = pixels.max(1);
    let px = fov_mm / n as f64;
    let world = |u: usize, v: usize| {
        let a = (u as f64 + 0.5) * px - fov_mm / 2.0;
        let b = (v as f64 + 0.5) * px - fov_mm / 2.0;
        [0, 1, 2].map(|d| centre[d] + a * ex[d] + b * ey[d])
    };
    // Image grey levels, windowed on the slice.
    let grey: Vec<f32> = match layers.image {
        Some(img) => {
            let raw: Vec<Option<f32>> = (0..n * n)
                .map(|q| lookup(img, world(q % n, q / n)).filter(|v| v.is_finite()))
                .collect();
            let mut vals: Vec<f32> = raw.iter().flatten().copied().collect();
            vals.sort_by(|a, b| a.total_cmp(b));
            let (lo, hi) = if vals.is_empty() {
                (0.0, 1.0)
            } else {
                let at = |f: f64| vals[((vals.len() - 1) as f64 * f) as usize];
                (at(0.01), at(0.99))
            };
            let span = if hi > lo { hi - lo } else { 1.0 };
            raw.iter()
                .map(|v| v.map_or(0.0, |v| ((v - lo) / span).clamp(0.0, 1.0)))
                .collect()
        }
        None => vec![0.15; n * n],
    };
    let mut data = Vec::with_capacity(n * n * 3);
    for (q, &gv) in grey.iter().enumerate() {
        let w = world(q % n, q / n);
        let mut c = [gv * 255.0; 3];
        let mut blend = |on: Option<bool>, col: [f32; 3], alpha: f32| {
            if on == Some(true) {
                for d in 0..3 {
                    c[d] = (1.0 - alpha) * c[d] + alpha * col[d];
                }
            }
        };
        blend(
            layers.mc.and_then(|m| lookup(m, w)),
            [255.0, 60.0, 60.0],
            0.45,
        );
        blend(
            layers.tb.and_then(|m| lookup(m, w)),
            [70.0, 130.0, 255.0],
            0.45,
        );
        blend(
            layers.nv.and_then(|m| lookup(m, w)),
            [60.0, 255.0, 90.0],
            0.6,
        );
        data.extend(c.map(|v| v.round().clamp(0.0, 255.0) as u8));
    }
    Rgb {
        width: n,
        height: n,
        data,
    }
}

/// Writes an RGB image as PNG (atomic: temporary file in the same folder, then rename).
pub fn write_png(path: impl AsRef<Path>, img: &Rgb) -> Result<()> {
    let path = path.as_ref();
    let png_err = |e: png::EncodingError| NvError::Png {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    // Encode in memory (a few hundred kB at most), then write atomically.
    let mut bytes = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut bytes, img.width as u32, img.height as u32);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        let mut w = enc.write_header().map_err(png_err)?;
        w.write_image_data(&img.data).map_err(png_err)?;
        w.finish().map_err(png_err)?;
    }
    crate::output::write_atomic(path, &bytes)
}

/// Writes axial, coronal and sagittal PNGs through `centre` into `dir` as
/// `{prefix}_{view}.png`; returns the paths.
pub fn write_joint_pngs(
    dir: impl AsRef<Path>,
    prefix: &str,
    layers: &Layers,
    centre: [f64; 3],
    fov_mm: f64,
    pixels: usize,
) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for view in [View::Axial, View::Coronal, View::Sagittal] {
        let p = dir.as_ref().join(format!("{prefix}_{}.png", view.name()));
        write_png(&p, &render_slice(layers, view, centre, fov_mm, pixels))?;
        out.push(p);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use negvol_volume::Geometry;

    #[test]
    fn overlay_colours_and_orientation() {
        let g = Geometry::from_spacing([20, 20, 20], [1.0; 3]).unwrap();
        // MC on the patient's right half (+x, high i), NV everywhere above k = 15.
        let mc = Volume::new(
            ndarray::Array3::from_shape_fn([20, 20, 20], |(i, _, _)| i >= 10),
            g.clone(),
        )
        .unwrap();
        let nv = Volume::new(
            ndarray::Array3::from_shape_fn([20, 20, 20], |(_, _, k)| k >= 15),
            g.clone(),
        )
        .unwrap();
        let layers = Layers {
            mc: Some(&mc),
            nv: Some(&nv),
            ..Default::default()
        };
        let img = render_slice(&layers, View::Coronal, [9.5, 9.5, 9.5], 20.0, 20);
        let px = |u: usize, v: usize| &img.data[(v * 20 + u) * 3..(v * 20 + u) * 3 + 3];
        // Patient right (MC) on the image's left, bottom half (no NV): red dominates.
        let a = px(2, 15);
        assert!(a[0] > a[1] && a[0] > a[2], "{a:?}");
        // Top rows are superior: NV green.
        let b = px(15, 1);
        assert!(b[1] > b[0] && b[1] > b[2], "{b:?}");
        let dir = tempfile::tempdir().unwrap();
        let files = write_joint_pngs(dir.path(), "t", &layers, [9.5; 3], 20.0, 32).unwrap();
        assert_eq!(files.len(), 3);
        let bytes = std::fs::read(&files[0]).unwrap();
        assert_eq!(&bytes[1..4], b"PNG");
    }
}
