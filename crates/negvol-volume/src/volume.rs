//! [`Volume<T>`]: an array with its geometry.

use ndarray::{Array3, ArrayView3, ArrayViewMut3};

use crate::{Geometry, Result, VolumeError};

/// A 3D array of voxels with the geometry that places it in the world.
///
/// The array always has shape `geometry.shape()` and standard (row-major) layout.
#[derive(Debug, Clone, PartialEq)]
pub struct Volume<T> {
    data: Array3<T>,
    geometry: Geometry,
}

impl<T> Volume<T> {
    /// Pair an array with a geometry; the shapes must agree. Non-standard layouts are
    /// copied into standard layout.
    pub fn new(data: Array3<T>, geometry: Geometry) -> Result<Self>
    where
        T: Clone,
    {
        if data.shape() != geometry.shape() {
            return Err(VolumeError::ShapeMismatch {
                expected: geometry.shape(),
                found: data.shape().to_vec(),
            });
        }
        let data = if data.is_standard_layout() {
            data
        } else {
            data.as_standard_layout().into_owned()
        };
        Ok(Self { data, geometry })
    }

    /// A volume filled with `T::default()`.
    pub fn zeros(geometry: Geometry) -> Self
    where
        T: Clone + Default,
    {
        let s = geometry.shape();
        Self {
            data: Array3::from_elem((s[0], s[1], s[2]), T::default()),
            geometry,
        }
    }

    /// The voxel array.
    pub fn data(&self) -> &Array3<T> {
        &self.data
    }

    /// A read-only view of the voxels.
    pub fn view(&self) -> ArrayView3<'_, T> {
        self.data.view()
    }

    /// A mutable view of the voxels (the shape cannot change).
    pub fn view_mut(&mut self) -> ArrayViewMut3<'_, T> {
        self.data.view_mut()
    }

    /// The geometry.
    pub fn geometry(&self) -> &Geometry {
        &self.geometry
    }

    /// Split into array and geometry.
    pub fn into_parts(self) -> (Array3<T>, Geometry) {
        (self.data, self.geometry)
    }

    /// Same geometry, new voxels computed from each old one.
    pub fn map<U>(&self, f: impl FnMut(&T) -> U) -> Volume<U> {
        Volume {
            data: self.data.map(f),
            geometry: self.geometry.clone(),
        }
    }

    /// A volume with this geometry and other voxels of the same shape.
    pub fn with_data<U: Clone>(&self, data: Array3<U>) -> Result<Volume<U>> {
        Volume::new(data, self.geometry.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shape_must_match() {
        let g = Geometry::from_spacing([2, 3, 4], [1.0; 3]).unwrap();
        assert!(Volume::new(Array3::<u8>::zeros((2, 3, 4)), g.clone()).is_ok());
        let e = Volume::new(Array3::<u8>::zeros((4, 3, 2)), g).unwrap_err();
        assert!(matches!(e, VolumeError::ShapeMismatch { .. }));
    }

    #[test]
    fn non_standard_layout_is_normalised() {
        let g = Geometry::from_spacing([4, 3, 2], [1.0; 3]).unwrap();
        let a = Array3::<u16>::from_shape_fn((2, 3, 4), |(i, j, k)| (i * 100 + j * 10 + k) as u16);
        let t = a.permuted_axes([2, 1, 0]);
        let v = Volume::new(t.clone(), g).unwrap();
        assert!(v.data().is_standard_layout());
        assert_eq!(v.data(), &t);
    }
}
