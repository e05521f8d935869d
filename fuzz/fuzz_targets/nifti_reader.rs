//! Fuzz the NIfTI reader: any bytes (plain or gzip) must give a volume or an error, never a
//! panic, and never an allocation beyond the voxel limit.
#![no_main]

use libfuzzer_sys::fuzz_target;
use negvol_volume::{read_nifti_from_bytes, NiftiReadOptions};

fuzz_target!(|data: &[u8]| {
    let opts = NiftiReadOptions {
        max_voxels: 1 << 16,
        frame: None,
    };
    let _ = read_nifti_from_bytes::<f32>(data, &opts);
    let _ = read_nifti_from_bytes::<u8>(data, &opts);
    let _ = read_nifti_from_bytes::<bool>(data, &opts);
    let framed = NiftiReadOptions {
        frame: Some(1),
        ..opts
    };
    if let Ok(v) = read_nifti_from_bytes::<i16>(data, &framed) {
        // Whatever is read has a valid geometry.
        let g = v.geometry();
        assert_eq!(v.data().len(), g.len());
        assert!(g.spacing().iter().all(|s| s.is_finite() && *s > 0.0));
    }
});
