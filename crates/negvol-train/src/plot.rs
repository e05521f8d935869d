//! A dependency-free PNG plot of the training curves.
//!
//! The plot (640x400, white) shows the training loss (blue, scaled to its own min..max) and,
//! where validation ran, the mean validation Dice (red, on a fixed 0..1 scale) against the
//! epoch; light grey lines mark Dice 0.25, 0.5 and 0.75. It has no text: the numbers are in
//! `log.jsonl`.

use std::path::Path;

use crate::checkpoint::{write_atomic, EpochRecord};
use crate::Result;

const W: usize = 640;
const H: usize = 400;
const M: usize = 30;

/// Write the curves of `history` to `path` (atomically). An empty history writes a blank
/// plot.
pub fn write_history_png(path: &Path, history: &[EpochRecord]) -> Result<()> {
    let mut px = vec![[255u8; 3]; W * H];
    let (x0, x1, y0, y1) = (M as f64, (W - M) as f64, (H - M) as f64, M as f64);
    // Axes and guides.
    for q in [0.25, 0.5, 0.75] {
        line(
            &mut px,
            (x0, y0 + (y1 - y0) * q),
            (x1, y0 + (y1 - y0) * q),
            [220, 220, 220],
        );
    }
    line(&mut px, (x0, y0), (x1, y0), [0, 0, 0]);
    line(&mut px, (x0, y0), (x0, y1), [0, 0, 0]);
    let n = history.len();
    let xs = |i: usize| {
        if n > 1 {
            x0 + (x1 - x0) * i as f64 / (n - 1) as f64
        } else {
            (x0 + x1) / 2.0
        }
    };
    let losses: Vec<f64> = history
        .iter()
        .map(|r| r.train_loss)
        .filter(|v| v.is_finite())
        .collect();
    if !losses.is_empty() {
        let lo = losses.iter().cloned().fold(f64::INFINITY, f64::min);
        let hi = losses.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let span = if hi > lo { hi - lo } else { 1.0 };
        let pts: Vec<(f64, f64)> = history
            .iter()
            .enumerate()
            .filter(|(_, r)| r.train_loss.is_finite())
            .map(|(i, r)| (xs(i), y0 + (y1 - y0) * (r.train_loss - lo) / span))
            .collect();
        polyline(&mut px, &pts, [30, 80, 220]);
    }
    let dice: Vec<(f64, f64)> = history
        .iter()
        .enumerate()
        .filter_map(|(i, r)| {
            r.val_mean_dice
                .map(|d| (xs(i), y0 + (y1 - y0) * d.clamp(0.0, 1.0)))
        })
        .collect();
    polyline(&mut px, &dice, [220, 40, 40]);
    write_atomic(path, &encode_png(&px, W, H))
}

fn polyline(px: &mut [[u8; 3]], pts: &[(f64, f64)], c: [u8; 3]) {
    for w in pts.windows(2) {
        line(px, w[0], w[1], c);
    }
    for p in pts {
        for dx in -1..=1 {
            for dy in -1..=1 {
                put(px, p.0 + dx as f64, p.1 + dy as f64, c);
            }
        }
    }
}

fn put(px: &mut [[u8; 3]], x: f64, y: f64, c: [u8; 3]) {
    let (x, y) = (x.round(), y.round());
    if x >= 0.0 && y >= 0.0 && (x as usize) < W && (y as usize) < H {
        px[y as usize * W + x as usize] = c;
    }
}

fn line(px: &mut [[u8; 3]], a: (f64, f64), b: (f64, f64), c: [u8; 3]) {
    let steps = ((b.0 - a.0).abs().max((b.1 - a.1).abs()).ceil() as usize).max(1);
    for s in 0..=steps {
        let t = s as f64 / steps as f64;
        put(px, a.0 + (b.0 - a.0) * t, a.1 + (b.1 - a.1) * t, c);
    }
}

fn crc32(data: &[u8]) -> u32 {
    let mut c = 0xffff_ffffu32;
    for &b in data {
        c ^= b as u32;
        for _ in 0..8 {
            c = if c & 1 != 0 {
                0xedb8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
        }
    }
    !c
}

fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend((data.len() as u32).to_be_bytes());
    let start = out.len();
    out.extend(kind);
    out.extend(data);
    let crc = crc32(&out[start..]);
    out.extend(crc.to_be_bytes());
}

/// Encode RGB pixels (row-major) as a PNG with stored (uncompressed) deflate blocks.
pub(crate) fn encode_png(px: &[[u8; 3]], w: usize, h: usize) -> Vec<u8> {
    let mut raw = Vec::with_capacity(h * (1 + 3 * w));
    for row in px.chunks(w) {
        raw.push(0);
        for p in row {
            raw.extend(p);
        }
    }
    let mut z = vec![0x78, 0x01];
    let blocks: Vec<&[u8]> = raw.chunks(65535).collect();
    for (i, b) in blocks.iter().enumerate() {
        z.push(u8::from(i + 1 == blocks.len()));
        z.extend((b.len() as u16).to_le_bytes());
        z.extend((!(b.len() as u16)).to_le_bytes());
        z.extend(*b);
    }
    let (mut a, mut b) = (1u32, 0u32);
    for &x in &raw {
        a = (a + x as u32) % 65521;
        b = (b + a) % 65521;
    }
    z.extend(((b << 16) | a).to_be_bytes());
    let mut out = vec![0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a];
    let mut ihdr = Vec::new();
    ihdr.extend((w as u32).to_be_bytes());
    ihdr.extend((h as u32).to_be_bytes());
    ihdr.extend([8, 2, 0, 0, 0]);
    chunk(&mut out, b"IHDR", &ihdr);
    chunk(&mut out, b"IDAT", &z);
    chunk(&mut out, b"IEND", &[]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc_of_iend_is_the_known_constant() {
        assert_eq!(crc32(b"IEND"), 0xae42_6082);
        let png = encode_png(&[[1, 2, 3]; 4], 2, 2);
        assert_eq!(&png[..8], &[0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a]);
        assert_eq!(&png[png.len() - 8..png.len() - 4], b"IEND");
    }
}
