//! Connected components of a binary mask: a label volume ([`label_components`]), per-component
//! statistics without one ([`component_stats`]), and keeping only the largest components of a
//! mask in place ([`keep_largest_components`]).
//!
//! ## Definitions
//! Two foreground voxels are *adjacent* when their index offset is one of the offsets of the
//! chosen [`Connectivity`]: [`Connectivity::Six`] (a shared face), [`Connectivity::Eighteen`]
//! (a shared face or edge) or [`Connectivity::TwentySix`] (a shared face, edge or corner). A
//! component is a maximal set of foreground voxels connected through adjacent pairs. Voxels
//! outside the array are background: nothing wraps around. Components are numbered `1..=n` in
//! the index order (`(i, j, k)`, `k` fastest) of their first voxel, which is what a voxel flood
//! fill that scans the array in index order produces, and what `scipy.ndimage.label` produces
//! with the structuring element of the same connectivity.
//!
//! ## Algorithm and cost
//! The mask is read once, plane by plane in parallel, as *runs*: maximal intervals
//! `[k0, k1)` of foreground voxels along the last (fastest) axis. A row without foreground is
//! skipped by a vectorised test; a row with foreground is converted 64 voxels at a time into a
//! bit mask whose transitions are the run ends. Each run is then joined (union-find, path
//! halving, the smaller run index becoming the root) with the runs of the previously scanned
//! neighbouring rows whose `k` ranges make them adjacent:
//!
//! | connectivity | row `(i - 1, j)` | rows `(i - 1, j -+ 1)` | row `(i, j - 1)` |
//! |---|---|---|---|
//! | 6 | overlapping `k` | - | overlapping `k` |
//! | 18 | `k` within one | overlapping `k` | `k` within one |
//! | 26 | `k` within one | `k` within one | `k` within one |
//!
//! ("Overlapping": some `k` in both runs; "within one": some pair of their `k` differs by at
//! most one. The other neighbours of a voxel are in its own run or in rows scanned later,
//! which join it from their side.) Time: one pass over the mask plus O(runs) (near-linear
//! union-find); memory: 12 bytes per run and 4 bytes per row of the array. A whole-CT mask thus
//! costs one read of it plus what its foreground costs. [`component_stats`] and
//! [`keep_largest_components`] allocate no label volume; [`label_components`] allocates one
//! `u32` per voxel (zeroed lazily by the allocator) and writes only the foreground runs.
//!
//! ```
//! use ndarray::{s, Array3};
//! use negvol_metrics::components::{component_stats, keep_largest_components, label_components};
//! use negvol_metrics::components::{ComponentFilter, FilterOutcome};
//! use negvol_metrics::Connectivity;
//!
//! // Two 2x2x2 cubes touching only at a corner, and a 3x3x3 cube further away.
//! let mut m = Array3::from_elem((10, 10, 10), false);
//! m.slice_mut(s![0..2, 0..2, 0..2]).fill(true);
//! m.slice_mut(s![2..4, 2..4, 2..4]).fill(true);
//! m.slice_mut(s![6..9, 6..9, 6..9]).fill(true);
//!
//! let six = label_components(m.view(), Connectivity::Six)?;
//! assert_eq!(six.sizes, vec![8, 8, 27]);
//! assert_eq!((six.labels[[0, 0, 0]], six.labels[[3, 3, 3]], six.labels[[8, 8, 8]]), (1, 2, 3));
//! let all = label_components(m.view(), Connectivity::TwentySix)?;
//! assert_eq!(all.sizes, vec![16, 27]);
//!
//! // Statistics without a label volume: largest first.
//! let stats = component_stats(m.view(), Connectivity::TwentySix)?;
//! assert_eq!((stats[0].voxels, stats[0].centroid()), (27, [7.0, 7.0, 7.0]));
//! assert_eq!((stats[1].voxels, stats[1].first), (16, [0, 0, 0]));
//!
//! // Keep the largest 26-connected component only.
//! let filter = ComponentFilter { max_components: 1, min_fraction: 0.0 };
//! let out = keep_largest_components(m.view_mut(), &filter)?;
//! assert_eq!(out, FilterOutcome { components: 2, kept: 1, removed_voxels: 16 });
//! assert!(!m[[0, 0, 0]] && m[[7, 7, 7]]);
//! # Ok::<(), negvol_metrics::MetricsError>(())
//! ```

use ndarray::{s, Array3, ArrayView3, ArrayViewMut3, Axis};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{MetricsError, Result};
use crate::surface::{BoundingBox, Connectivity};

/// A label volume: what [`label_components`] returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Labelling {
    /// One label per voxel, same shape as the mask: 0 for background, `1..=n` for the
    /// components, numbered in the index order of their first voxel.
    pub labels: Array3<u32>,
    /// Voxel count of each component: `sizes[l - 1]` is the size of label `l`.
    pub sizes: Vec<usize>,
    /// Bounding box of the foreground (outside it every label is 0); `None` for an empty mask.
    pub bounding_box: Option<BoundingBox>,
}

impl Labelling {
    /// Number of components `n` (the largest label).
    pub fn count(&self) -> usize {
        self.sizes.len()
    }
}

/// One component as [`component_stats`] reports it. Indices are those of the mask given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ComponentStats {
    /// The label [`label_components`] gives this component (`1..=n`, index order of the first
    /// voxel).
    pub label: u32,
    /// Number of voxels.
    pub voxels: usize,
    /// Sum of the voxels' indices per axis (exact), from which [`ComponentStats::centroid`]
    /// follows.
    pub index_sum: [u64; 3],
    /// The component's first voxel in index order (`k` fastest).
    pub first: [usize; 3],
}

impl ComponentStats {
    /// Mean voxel index per axis (fractional).
    pub fn centroid(&self) -> [f64; 3] {
        self.index_sum.map(|s| s as f64 / self.voxels as f64)
    }
}

/// Which components [`keep_largest_components`] keeps.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ComponentFilter {
    /// Keep at most this many components, the largest first (>= 1).
    pub max_components: usize,
    /// Drop components smaller than this fraction of the largest, in `[0, 1]`.
    pub min_fraction: f64,
}

impl Default for ComponentFilter {
    /// Two joints: up to 2 components, each at least 10 % of the largest.
    fn default() -> Self {
        Self {
            max_components: 2,
            min_fraction: 0.1,
        }
    }
}

impl ComponentFilter {
    /// `Ok` when `max_components >= 1` and `min_fraction` is in `[0, 1]`, else
    /// [`MetricsError::InvalidParameter`] naming the field.
    pub fn validate(&self) -> Result<()> {
        if self.max_components == 0 {
            return Err(MetricsError::InvalidParameter {
                name: "max_components",
                value: 0.0,
                reason: "must be >= 1",
            });
        }
        if !(0.0..=1.0).contains(&self.min_fraction) {
            return Err(MetricsError::InvalidParameter {
                name: "min_fraction",
                value: self.min_fraction,
                reason: "must be in [0, 1]",
            });
        }
        Ok(())
    }
}

/// What [`keep_largest_components`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct FilterOutcome {
    /// 26-connected components found.
    pub components: usize,
    /// Components kept.
    pub kept: usize,
    /// Foreground voxels removed.
    pub removed_voxels: usize,
}

/// Labels the connected components of `mask` under `connectivity` (see the module docs for
/// the definition and the numbering).
///
/// # Errors
/// [`MetricsError::TooLarge`] when the mask has more than `u32::MAX` runs of foreground voxels
/// or a last axis longer than `u32::MAX` (the 32-bit run indices; a mask of fewer than 2^32
/// foreground voxels never fails).
pub fn label_components(mask: ArrayView3<bool>, connectivity: Connectivity) -> Result<Labelling> {
    let runs = Runs::of(mask, connectivity)?;
    let mut labels = Array3::<u32>::zeros(mask.raw_dim());
    let nj = runs.shape[1];
    labels
        .axis_iter_mut(Axis(0))
        .into_par_iter()
        .enumerate()
        .for_each(|(i, mut plane)| {
            for j in 0..nj {
                let r = runs.row(i * nj + j);
                if r.is_empty() {
                    continue;
                }
                let mut row = plane.row_mut(j);
                for x in r {
                    let (k0, k1) = runs.runs[x];
                    let l = runs.comp[x] + 1;
                    match row.as_slice_mut() {
                        Some(sl) => sl[k0 as usize..k1 as usize].fill(l),
                        None => row.slice_mut(s![k0 as usize..k1 as usize]).fill(l),
                    }
                }
            }
        });
    Ok(Labelling {
        labels,
        sizes: runs.sizes(),
        bounding_box: runs.bounding_box(),
    })
}

/// The connected components of `mask` under `connectivity`, largest first (equal sizes in the
/// index order of their first voxel, i.e. by label), without a label volume.
///
/// # Errors
/// As [`label_components`].
pub fn component_stats(
    mask: ArrayView3<bool>,
    connectivity: Connectivity,
) -> Result<Vec<ComponentStats>> {
    let runs = Runs::of(mask, connectivity)?;
    let mut out: Vec<ComponentStats> = Vec::with_capacity(runs.count);
    let nj = runs.shape[1];
    for i in 0..runs.shape[0] {
        for j in 0..nj {
            for x in runs.row(i * nj + j) {
                let c = runs.comp[x] as usize;
                let (k0, k1) = runs.runs[x];
                if c == out.len() {
                    out.push(ComponentStats {
                        label: c as u32 + 1,
                        voxels: 0,
                        index_sum: [0; 3],
                        first: [i, j, k0 as usize],
                    });
                }
                let len = u64::from(k1 - k0);
                let st = &mut out[c];
                st.voxels += len as usize;
                st.index_sum[0] += i as u64 * len;
                st.index_sum[1] += j as u64 * len;
                // k0 + (k0 + 1) + ... + (k1 - 1); one of the two factors is even.
                let (a, b) = (u64::from(k0 + k1 - 1), len);
                st.index_sum[2] += if a % 2 == 0 { a / 2 * b } else { b / 2 * a };
            }
        }
    }
    // Stable: equal sizes stay in label order.
    out.sort_by_key(|c| std::cmp::Reverse(c.voxels));
    Ok(out)
}

/// Keeps the largest 26-connected components of `mask`, in place: at most
/// `filter.max_components` of them, the largest first, each at least `filter.min_fraction` of
/// the largest. Equal sizes are ranked by the index order of their first voxel, so the result
/// is deterministic. An empty mask stays empty. No label volume is allocated: removed
/// components are cleared run by run.
///
/// ```
/// use ndarray::{s, Array3};
/// use negvol_metrics::components::{keep_largest_components, ComponentFilter};
///
/// // Two 27-voxel cubes and one stray voxel.
/// let mut m = Array3::from_elem((12, 12, 12), false);
/// m.slice_mut(s![1..4, 1..4, 1..4]).fill(true);
/// m.slice_mut(s![7..10, 7..10, 7..10]).fill(true);
/// m[[1, 10, 10]] = true;
/// let filter = ComponentFilter { max_components: 2, min_fraction: 0.1 };
/// let out = keep_largest_components(m.view_mut(), &filter)?;
/// assert_eq!((out.components, out.kept, out.removed_voxels), (3, 2, 1));
/// assert!(!m[[1, 10, 10]]);
/// # Ok::<(), negvol_metrics::MetricsError>(())
/// ```
///
/// # Errors
/// [`MetricsError::InvalidParameter`] when `max_components` is 0 or `min_fraction` is outside
/// `[0, 1]` (or NaN); [`MetricsError::TooLarge`] as [`label_components`].
pub fn keep_largest_components(
    mut mask: ArrayViewMut3<bool>,
    filter: &ComponentFilter,
) -> Result<FilterOutcome> {
    filter.validate()?;
    let runs = Runs::of(mask.view(), Connectivity::TwentySix)?;
    if runs.count == 0 {
        return Ok(FilterOutcome::default());
    }
    let sizes = runs.sizes();
    let mut order: Vec<usize> = (0..sizes.len()).collect();
    // Stable: ties stay in label order.
    order.sort_by_key(|&c| std::cmp::Reverse(sizes[c]));
    let largest = sizes[order[0]] as f64;
    let mut keep = vec![false; sizes.len()];
    let mut kept = 0;
    for &c in order.iter().take(filter.max_components) {
        if sizes[c] as f64 >= filter.min_fraction * largest {
            keep[c] = true;
            kept += 1;
        }
    }
    let removed_voxels = sizes
        .iter()
        .zip(&keep)
        .filter(|(_, k)| !**k)
        .map(|(s, _)| s)
        .sum();
    if removed_voxels > 0 {
        let nj = runs.shape[1];
        mask.axis_iter_mut(Axis(0))
            .into_par_iter()
            .enumerate()
            .for_each(|(i, mut plane)| {
                for j in 0..nj {
                    for x in runs.row(i * nj + j) {
                        if !keep[runs.comp[x] as usize] {
                            let (k0, k1) = runs.runs[x];
                            plane.slice_mut(s![j, k0 as usize..k1 as usize]).fill(false);
                        }
                    }
                }
            });
    }
    Ok(FilterOutcome {
        components: sizes.len(),
        kept,
        removed_voxels,
    })
}

/// The runs of foreground voxels of a mask and the component of each.
struct Runs {
    shape: [usize; 3],
    /// `[k0, k1)` of every run, in scan order (row `i * nj + j`, then `k`).
    runs: Vec<(u32, u32)>,
    /// Row `r` owns `runs[row_start[r]..row_start[r + 1]]`.
    row_start: Vec<u32>,
    /// The component of every run, `0..count`, numbered in scan order of their first run.
    comp: Vec<u32>,
    count: usize,
}

impl Runs {
    fn of(mask: ArrayView3<bool>, conn: Connectivity) -> Result<Self> {
        let shape: [usize; 3] = mask.dim().into();
        let too_large = || MetricsError::TooLarge {
            shape,
            voxels: shape.iter().map(|&n| n as u128).product(),
        };
        if u32::try_from(shape[2]).is_err() {
            return Err(too_large());
        }
        let (runs, row_start) = extract_runs(mask).ok_or_else(too_large)?;
        let mut parent: Vec<u32> = (0..runs.len() as u32).collect();
        join_rows(&runs, &row_start, shape, conn, &mut parent);
        // Parents always point to smaller run indices and a root is the smallest run of its
        // component, so one pass in scan order replaces every parent by its component number.
        let mut count = 0u32;
        for x in 0..parent.len() {
            let p = parent[x] as usize;
            parent[x] = if p == x {
                count += 1;
                count - 1
            } else {
                // `p < x` already holds its component number.
                parent[p]
            };
        }
        Ok(Self {
            shape,
            runs,
            row_start,
            comp: parent,
            count: count as usize,
        })
    }

    /// Run indices of row `r`.
    #[inline]
    fn row(&self, r: usize) -> std::ops::Range<usize> {
        self.row_start[r] as usize..self.row_start[r + 1] as usize
    }

    /// Voxels per component.
    fn sizes(&self) -> Vec<usize> {
        let mut sizes = vec![0usize; self.count];
        for (&(k0, k1), &c) in self.runs.iter().zip(&self.comp) {
            sizes[c as usize] += (k1 - k0) as usize;
        }
        sizes
    }

    /// Bounding box of all runs.
    fn bounding_box(&self) -> Option<BoundingBox> {
        let nj = self.shape[1];
        let mut bb: Option<BoundingBox> = None;
        for r in 0..self.shape[0] * nj {
            let xs = self.row(r);
            if xs.is_empty() {
                continue;
            }
            let (i, j) = (r / nj, r % nj);
            let b = BoundingBox {
                min: [i, j, self.runs[xs.start].0 as usize],
                max: [i + 1, j + 1, self.runs[xs.end - 1].1 as usize],
            };
            bb = Some(bb.map_or(b, |o| o.union(&b)));
        }
        bb
    }
}

/// Runs `[k0, k1)` and, per row, where its runs start (one more entry than rows).
type RowRuns = (Vec<(u32, u32)>, Vec<u32>);

/// The runs of every row, plane by plane in parallel; `None` when there are more than
/// `u32::MAX` of them.
fn extract_runs(mask: ArrayView3<bool>) -> Option<RowRuns> {
    // Per plane: its runs and the number of runs of each row.
    let planes: Vec<RowRuns> = mask
        .axis_iter(Axis(0))
        .into_par_iter()
        .map(|plane| {
            let mut runs = Vec::new();
            let mut counts = Vec::with_capacity(plane.len_of(Axis(0)));
            let mut tmp = Vec::new();
            for row in plane.outer_iter() {
                let before = runs.len();
                let r = match row.as_slice() {
                    Some(r) => r,
                    None => {
                        tmp.clear();
                        tmp.extend(row.iter().copied());
                        &tmp[..]
                    }
                };
                if any_true(r) {
                    row_runs(r, &mut runs);
                }
                counts.push((runs.len() - before) as u32);
            }
            (runs, counts)
        })
        .collect();
    let total: usize = planes.iter().map(|p| p.0.len()).sum();
    u32::try_from(total).ok()?;
    let rows: usize = planes.iter().map(|p| p.1.len()).sum();
    let mut runs = Vec::with_capacity(total);
    let mut row_start = Vec::with_capacity(rows + 1);
    let mut at = 0u32;
    for (r, counts) in planes {
        runs.extend_from_slice(&r);
        for c in counts {
            row_start.push(at);
            at += c;
        }
    }
    row_start.push(at);
    Some((runs, row_start))
}

/// Whether a row has a `true` (branch-free OR over 64-voxel chunks, which vectorises).
#[inline]
fn any_true(row: &[bool]) -> bool {
    row.chunks(64)
        .any(|c| c.iter().fold(false, |acc, &v| acc | v))
}

/// Appends the runs `[k0, k1)` of one row.
fn row_runs(row: &[bool], out: &mut Vec<(u32, u32)>) {
    // Bit t of a chunk's mask is voxel `base + t`; a set bit of `mask ^ (mask << 1 | inside)`
    // is a voxel that differs from the one before it: a run starts or ends there.
    let mut inside = false;
    let mut start = 0u32;
    let mut base = 0u32;
    for chunk in row.chunks(64) {
        let bits = pack(chunk);
        let mut x = bits ^ ((bits << 1) | u64::from(inside));
        while x != 0 {
            let at = base + x.trailing_zeros();
            if inside {
                out.push((start, at));
            } else {
                start = at;
            }
            inside = !inside;
            x &= x - 1;
        }
        // A short last chunk ends with zero bits, which close an open run at its end.
        base += chunk.len() as u32;
    }
    if inside {
        out.push((start, base));
    }
}

/// Bit `t` set when `chunk[t]` (at most 64 voxels).
#[inline]
fn pack(chunk: &[bool]) -> u64 {
    // With bytes that are 0 or 1, multiplying by this constant gathers byte `t` into bit
    // `56 + t` (all partial products land on distinct bits, so nothing carries).
    const GATHER: u64 = 0x0102_0408_1020_4080;
    let mut bits = 0u64;
    let mut words = chunk.chunks_exact(8);
    for (w, c) in (&mut words).enumerate() {
        let x = u64::from_le_bytes([
            c[0] as u8, c[1] as u8, c[2] as u8, c[3] as u8, c[4] as u8, c[5] as u8, c[6] as u8,
            c[7] as u8,
        ]);
        bits |= (x.wrapping_mul(GATHER) >> 56) << (8 * w);
    }
    let done = chunk.len() - words.remainder().len();
    for (t, &v) in words.remainder().iter().enumerate() {
        bits |= u64::from(v) << (done + t);
    }
    bits
}

/// The previously scanned rows a row's runs can be adjacent to, as `(di, dj, slack)` for row
/// `(i - di, j - dj)`: two runs are adjacent when `a0 < b1 + slack && b0 < a1 + slack`
/// (slack 0: overlapping `k`; slack 1: `k` within one).
fn previous_rows(conn: Connectivity) -> &'static [(usize, isize, u32)] {
    match conn {
        Connectivity::Six => &[(0, 1, 0), (1, 0, 0)],
        Connectivity::Eighteen => &[(0, 1, 1), (1, 1, 0), (1, 0, 1), (1, -1, 0)],
        Connectivity::TwentySix => &[(0, 1, 1), (1, 1, 1), (1, 0, 1), (1, -1, 1)],
    }
}

/// Union-find over the runs: joins every run with the adjacent runs of earlier rows.
///
/// In parallel over slabs of planes holding about equal numbers of runs: each slab is joined
/// on its own part of `parent` (a slab's links stay inside it), then the first plane of every
/// slab is joined with the last plane of the slab before it, on the whole of `parent`.
fn join_rows(
    runs: &[(u32, u32)],
    row_start: &[u32],
    shape: [usize; 3],
    conn: Connectivity,
    parent: &mut [u32],
) {
    let (ni, nj) = (shape[0], shape[1]);
    let prev = previous_rows(conn);
    let in_plane: Vec<_> = prev.iter().copied().filter(|p| p.0 == 0).collect();
    let across: Vec<_> = prev.iter().copied().filter(|p| p.0 == 1).collect();
    let total = runs.len();
    // Below this many runs one thread is faster than splitting.
    const MIN_RUNS_PER_SLAB: usize = 1 << 15;
    let slabs = rayon::current_num_threads()
        .min(total / MIN_RUNS_PER_SLAB)
        .clamp(1, ni.max(1));
    // Slab boundaries (planes), by cumulative runs.
    let mut bounds = vec![0usize];
    for c in 1..slabs {
        let want = (total * c / slabs) as u32;
        let p = (0..ni)
            .position(|p| row_start[p * nj] >= want)
            .unwrap_or(ni);
        if p > *bounds.last().expect("non-empty") && p < ni {
            bounds.push(p);
        }
    }
    bounds.push(ni);
    let ctx = Join {
        runs,
        row_start,
        nj,
    };
    // Phase 1: every slab on its own runs.
    let mut parts = Vec::with_capacity(bounds.len() - 1);
    let mut rest: &mut [u32] = parent;
    for w in bounds.windows(2) {
        let (lo, hi) = (row_start[w[0] * nj] as usize, row_start[w[1] * nj] as usize);
        let (part, tail) = rest.split_at_mut(hi - lo);
        rest = tail;
        parts.push((w[0], w[1], lo, part));
    }
    parts.into_par_iter().for_each(|(p0, p1, base, part)| {
        let mut pairs = Vec::new();
        for i in p0..p1 {
            let offs = if i == p0 { &in_plane[..] } else { prev };
            ctx.join_plane(i, offs, base, part, &mut pairs);
        }
    });
    // Phase 2: the planes on either side of every slab boundary.
    let mut pairs = Vec::new();
    for &p in &bounds[1..bounds.len() - 1] {
        ctx.join_plane(p, &across, 0, parent, &mut pairs);
    }
}

/// What joining one plane needs.
struct Join<'a> {
    runs: &'a [(u32, u32)],
    row_start: &'a [u32],
    nj: usize,
}

impl Join<'_> {
    /// Joins every run of plane `i` with the adjacent runs of the rows `offs` (see
    /// [`previous_rows`]); `parent[x - base]` is the parent of run `x` (run indices are global,
    /// the slice starts at run `base`).
    ///
    /// Per pair of rows, a two-pointer walk writes the adjacent run pairs into `pairs` without
    /// branching on the data (on masks with short runs those branches are unpredictable and
    /// cost more than the walk), then the pairs are joined.
    fn join_plane(
        &self,
        i: usize,
        offs: &[(usize, isize, u32)],
        base: usize,
        parent: &mut [u32],
        pairs: &mut Vec<(u32, u32)>,
    ) {
        let (runs, nj) = (self.runs, self.nj);
        let base = base as u32;
        for j in 0..nj {
            let r = i * nj + j;
            let (a_lo, a_hi) = (self.row_start[r], self.row_start[r + 1]);
            if a_lo == a_hi {
                continue;
            }
            for &(di, dj, slack) in offs {
                let jj = j as isize - dj;
                if i < di || jj < 0 || jj as usize >= nj {
                    continue;
                }
                let q = (i - di) * nj + jj as usize;
                let (b_lo, b_hi) = (self.row_start[q], self.row_start[q + 1]);
                if b_lo == b_hi {
                    continue;
                }
                // At most one pair per step, and fewer steps than runs in both rows.
                let steps = (a_hi - a_lo + b_hi - b_lo) as usize;
                if pairs.len() < steps {
                    pairs.resize(steps, (0, 0));
                }
                let mut n = 0;
                let (mut a, mut b) = (a_lo, b_lo);
                while a < a_hi && b < b_hi {
                    let (a0, a1) = runs[a as usize];
                    let (b0, b1) = runs[b as usize];
                    pairs[n] = (a, b);
                    n += usize::from((a0 < b1 + slack) & (b0 < a1 + slack));
                    // The run that ends first cannot touch any later run of the other row.
                    let step_a = a1 < b1;
                    a += u32::from(step_a);
                    b += u32::from(!step_a);
                }
                for &(a, b) in &pairs[..n] {
                    union(parent, base, a, b);
                }
            }
        }
    }
}

/// Joins the sets of runs `a` and `b` (see [`find`] for `base`): the smaller root becomes the
/// root, so a root is always the smallest run of its set and every parent is smaller than its
/// child.
#[inline]
fn union(parent: &mut [u32], base: u32, a: u32, b: u32) {
    if parent[(a - base) as usize] == parent[(b - base) as usize] {
        return;
    }
    let (x, y) = (find(parent, base, a), find(parent, base, b));
    if x < y {
        parent[(y - base) as usize] = x;
    } else if y < x {
        parent[(x - base) as usize] = y;
    }
}

/// The root of run `x`, where `parent[y - base]` is the parent of run `y`; every node on the
/// way is pointed to its grandparent (path splitting).
#[inline]
fn find(parent: &mut [u32], base: u32, mut x: u32) -> u32 {
    loop {
        let p = parent[(x - base) as usize];
        if p == x {
            return x;
        }
        parent[(x - base) as usize] = parent[(p - base) as usize];
        x = p;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_of_rows_across_chunk_borders() {
        for len in [1usize, 7, 8, 9, 63, 64, 65, 127, 128, 129, 200] {
            for pattern in 0..6u64 {
                let row: Vec<bool> = (0..len)
                    .map(|k| match pattern {
                        0 => true,
                        1 => k % 2 == 0,
                        2 => k % 3 != 1,
                        3 => k >= len / 2,
                        4 => (k * 7919 + 13) % 11 < 5,
                        _ => k == len - 1 || k == 0,
                    })
                    .collect();
                let mut want = Vec::new();
                let mut k = 0;
                while k < len {
                    if row[k] {
                        let k0 = k;
                        while k < len && row[k] {
                            k += 1;
                        }
                        want.push((k0 as u32, k as u32));
                    } else {
                        k += 1;
                    }
                }
                let mut got = Vec::new();
                row_runs(&row, &mut got);
                assert_eq!(got, want, "length {len}, pattern {pattern}");
            }
        }
    }

    #[test]
    fn pack_gathers_each_voxel_into_its_bit() {
        let c: Vec<bool> = (0..64).map(|t| (t * 37 + 5) % 7 < 3).collect();
        let want = c
            .iter()
            .enumerate()
            .fold(0u64, |a, (t, &v)| a | (u64::from(v) << t));
        assert_eq!(pack(&c), want);
        assert_eq!(pack(&c[..13]), want & ((1 << 13) - 1));
    }

    #[test]
    fn parents_point_to_smaller_runs() {
        let mut m = Array3::from_elem((4, 5, 6), false);
        for ((i, j, k), v) in m.indexed_iter_mut() {
            *v = (i * 31 + j * 17 + k * 7) % 5 < 2;
        }
        let r = Runs::of(m.view(), Connectivity::TwentySix).unwrap();
        // Component numbers appear in scan order: each new one is one more than the last.
        let mut next = 0;
        for &c in &r.comp {
            assert!(c <= next);
            if c == next {
                next += 1;
            }
        }
        assert_eq!(next as usize, r.count);
    }
}
