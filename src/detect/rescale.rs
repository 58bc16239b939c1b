//! The photo seen at a scale, as the model input wants it: large reductions average pixel blocks first (so that they
//! do not alias), then rows are resampled bilinearly.

use image::RgbImage;

/// The photo seen at a scale. Large reductions first average integer blocks (so shrinking a 4000-px photo to 640
/// does not alias), then sample bilinearly with OpenCV's half-pixel convention.
pub(super) struct Rescaled<'a> {
    source: std::borrow::Cow<'a, RgbImage>,
    /// Scale from photo to this view.
    pub(super) scale: f32,
    /// Scale from `source` to this view (differs from `scale` after block averaging).
    sample_scale: f32,
    pub(super) width: u32,
    pub(super) height: u32,
}

impl<'a> Rescaled<'a> {
    pub(super) fn new(photo: &'a RgbImage, scale: f32) -> Rescaled<'a> {
        let block = if scale < 0.5 { (1.0 / scale).floor() as u32 } else { 1 };
        let source = if block > 1 {
            std::borrow::Cow::Owned(block_average(photo, block))
        } else {
            std::borrow::Cow::Borrowed(photo)
        };
        Rescaled {
            sample_scale: scale * block as f32,
            width: ((photo.width() as f32 * scale).round() as u32).max(1),
            height: ((photo.height() as f32 * scale).round() as u32).max(1),
            source,
            scale,
        }
    }

    /// A bilinear sampler for the columns `x0..x0 + width` of this view (OpenCV's half-pixel convention, edges
    /// clamped). The view is resized separably: each source row is interpolated horizontally once and kept while
    /// consecutive output rows need it, which an enlargement does for most rows.
    pub(super) fn row_sampler(&self, x0: usize, width: usize) -> RowSampler<'_> {
        let sw = self.source.width() as usize;
        let columns = (0..width)
            .map(|u| {
                let (i0, i1, f) = source_taps(x0 + u, self.sample_scale, sw);
                (i0 * 3, i1 * 3, f)
            })
            .collect();
        // At 1× every output pixel is a source pixel: the common case of a portrait smaller than the model input.
        let copy = (self.sample_scale == 1.0 && x0 + width <= sw).then_some(x0 * 3..(x0 + width) * 3);
        RowSampler {
            view: self,
            columns,
            copy,
            cache: [(usize::MAX, vec![0.0; width * 3]), (usize::MAX, vec![0.0; width * 3])],
        }
    }

    /// Maps a point of this view back to photo pixels.
    pub(super) fn to_photo(&self, p: [f32; 2]) -> [f32; 2] {
        [p[0] / self.scale, p[1] / self.scale]
    }
}

/// Source pixels `(lower, upper, weight of upper)` that output pixel `i` of a view at `scale` blends, for a
/// source `len` pixels long: the pixel centre `(i + 0.5) / scale - 0.5`, clamped to the first and last pixel.
fn source_taps(i: usize, scale: f32, len: usize) -> (usize, usize, f32) {
    let s = ((i as f32 + 0.5) / scale - 0.5).max(0.0);
    // `s` is non-negative, so truncation is the floor.
    let lower = s as usize;
    let weight = s - lower as f32;
    let last = len.saturating_sub(1);
    (lower.min(last), (lower + 1).min(last), weight)
}

/// Row-by-row bilinear resampling of a [`Rescaled`] view into interleaved RGB floats.
pub(super) struct RowSampler<'a> {
    view: &'a Rescaled<'a>,
    /// Per output column: byte offsets of the two source pixels and the weight of the second.
    columns: Vec<(usize, usize, f32)>,
    /// Byte range of each source row to copy when the view is the source at 1× (no interpolation needed).
    copy: Option<std::ops::Range<usize>>,
    /// The last two horizontally interpolated source rows, with their row index.
    cache: [(usize, Vec<f32>); 2],
}

impl RowSampler<'_> {
    /// Output row `v` (in view coordinates) into `out`, three floats per column.
    pub(super) fn sample_row(&mut self, v: usize, out: &mut [f32]) {
        let source = &self.view.source;
        if let Some(range) = &self.copy {
            let y = v.min((source.height() as usize).saturating_sub(1));
            let line = &source.as_raw()[y * source.width() as usize * 3..][range.clone()];
            for (o, &p) in out.iter_mut().zip(line) {
                *o = p as f32;
            }
            return;
        }
        let (y0, y1, fy) = source_taps(v, self.view.sample_scale, self.view.source.height() as usize);
        let a = self.horizontal(y0, None);
        let b = self.horizontal(y1, Some(a));
        let (top, bottom) = (&self.cache[a].1, &self.cache[b].1);
        for ((o, t), b) in out.iter_mut().zip(top).zip(bottom) {
            *o = t + (b - t) * fy;
        }
    }

    /// Index into `cache` of source row `y` interpolated horizontally; on a miss it overwrites the slot other than
    /// `keep`, or else the one with the lower row (rows are requested in increasing order).
    fn horizontal(&mut self, y: usize, keep: Option<usize>) -> usize {
        if let Some(i) = self.cache.iter().position(|(row, _)| *row == y) {
            return i;
        }
        let slot = match keep {
            Some(k) => 1 - k,
            None if self.cache[0].0 == usize::MAX => 0,
            None if self.cache[1].0 == usize::MAX => 1,
            None => usize::from(self.cache[1].0 < self.cache[0].0),
        };
        let src = self.view.source.as_raw();
        let stride = self.view.source.width() as usize * 3;
        let line = &src[y * stride..(y + 1) * stride];
        let (row, values) = &mut self.cache[slot];
        *row = y;
        for (out, &(i0, i1, fx)) in values.chunks_exact_mut(3).zip(&self.columns) {
            for c in 0..3 {
                let (p0, p1) = (line[i0 + c] as f32, line[i1 + c] as f32);
                out[c] = p0 + (p1 - p0) * fx;
            }
        }
        slot
    }
}

/// Averages `block`×`block` pixel squares (the photo's last partial row and column of squares are dropped; a photo
/// smaller than one block repeats its last row or column).
fn block_average(photo: &RgbImage, block: u32) -> RgbImage {
    // Column sums of up to 257 rows fit in 16 bits, which doubles what one vector add covers.
    if block <= 257 {
        block_average_with::<u16>(photo, block)
    } else {
        block_average_with::<u32>(photo, block)
    }
}

fn block_average_with<S>(photo: &RgbImage, block: u32) -> RgbImage
where
    S: Copy + Default + From<u8> + std::ops::AddAssign,
    u32: From<S>,
{
    let w = (photo.width() / block).max(1) as usize;
    let h = (photo.height() / block).max(1) as usize;
    let block = block as usize;
    let (pw, ph) = (photo.width() as usize, photo.height() as usize);
    let raw = photo.as_raw();
    let stride = pw * 3;
    let divide = BlockDivisor::new((block * block) as u32);
    // Source column (byte offset) of each pixel of a row of blocks.
    let columns: Vec<usize> = (0..w * block).map(|x| x.min(pw - 1) * 3).collect();
    let contiguous = w * block <= pw;
    let mut out = Vec::with_capacity(w * h * 3);
    // Column sums over the block's rows first: a straight add of byte rows, which vectorises, and it touches each
    // photo byte once. That pass is most of the cost of shrinking a 14-megapixel photo.
    let mut sums = vec![S::default(); w * block * 3];
    for y in 0..h {
        sums.fill(S::default());
        for dy in 0..block {
            let line = &raw[(y * block + dy).min(ph - 1) * stride..][..stride];
            if contiguous {
                for (s, &p) in sums.iter_mut().zip(&line[..w * block * 3]) {
                    *s += S::from(p);
                }
            } else {
                for (s, &i) in sums.chunks_exact_mut(3).zip(&columns) {
                    s[0] += S::from(line[i]);
                    s[1] += S::from(line[i + 1]);
                    s[2] += S::from(line[i + 2]);
                }
            }
        }
        for squares in sums.chunks_exact(block * 3) {
            let mut acc = [0u32; 3];
            for px in squares.chunks_exact(3) {
                acc[0] += u32::from(px[0]);
                acc[1] += u32::from(px[1]);
                acc[2] += u32::from(px[2]);
            }
            out.extend(acc.map(|s| divide.floor(s)));
        }
    }
    RgbImage::from_raw(w as u32, h as u32, out).expect("buffer holds w*h pixels by construction")
}

/// `⌊s / n⌋` for block sums `s ≤ 255·n` by a multiply and a shift: a hardware division per output channel was a
/// fifth of the shrink's time. With `m = ⌈2⁴⁰ / n⌉` the error `s·(m - 2⁴⁰/n) / 2⁴⁰ < 255·n / 2⁴⁰` stays below the
/// `1/n` gap to the next integer whenever `n < 65,000`; larger blocks divide.
struct BlockDivisor {
    n: u32,
    multiplier: u64,
}

impl BlockDivisor {
    fn new(n: u32) -> BlockDivisor {
        let n = n.max(1);
        BlockDivisor { n, multiplier: (1u64 << 40).div_ceil(n as u64) }
    }

    #[inline]
    fn floor(&self, s: u32) -> u8 {
        if self.n < 65_000 {
            ((s as u64 * self.multiplier) >> 40) as u8
        } else {
            (s / self.n) as u8
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bilinear value of view pixel (u, v) computed directly from the definition, per pixel.
    fn bilinear_at(view: &Rescaled<'_>, u: usize, v: usize) -> [f32; 3] {
        let src = &view.source;
        let (x0, x1, fx) = source_taps(u, view.sample_scale, src.width() as usize);
        let (y0, y1, fy) = source_taps(v, view.sample_scale, src.height() as usize);
        let at = |x: usize, y: usize, c: usize| src.get_pixel(x as u32, y as u32).0[c] as f32;
        [0, 1, 2].map(|c| {
            let top = at(x0, y0, c) + (at(x1, y0, c) - at(x0, y0, c)) * fx;
            let bottom = at(x0, y1, c) + (at(x1, y1, c) - at(x0, y1, c)) * fx;
            top + (bottom - top) * fy
        })
    }

    #[test]
    fn row_sampler_matches_per_pixel_bilinear_at_every_scale() {
        let photo =
            RgbImage::from_fn(37, 23, |x, y| image::Rgb([(x * 7 + y * 3) as u8, (x * y) as u8, (255 - x * 5) as u8]));
        for scale in [2.0f32, 1.37, 1.0, 0.71, 0.3] {
            let view = Rescaled::new(&photo, scale);
            let (x0, width) = (1usize, view.width as usize - 1);
            let mut sampler = view.row_sampler(x0, width);
            let mut row = vec![0f32; width * 3];
            for v in 0..view.height as usize {
                sampler.sample_row(v, &mut row);
                for u in 0..width {
                    let expected = bilinear_at(&view, x0 + u, v);
                    assert_eq!(&row[u * 3..u * 3 + 3], &expected, "scale {scale}, pixel ({}, {v})", x0 + u);
                }
            }
        }
    }

    #[test]
    fn source_taps_clamp_at_the_edges() {
        assert_eq!(source_taps(0, 2.0, 10), (0, 1, 0.0));
        assert_eq!(source_taps(19, 2.0, 10), (9, 9, 0.25));
        // Centre of output pixel 3 at half scale: 3.5 / 0.5 - 0.5 = 6.5.
        assert_eq!(source_taps(3, 0.5, 10), (6, 7, 0.5));
    }

    #[test]
    fn block_divisor_floors_exactly_over_the_whole_range() {
        for n in [1u32, 4, 9, 49, 324, 66_049, 64_000, 65_025] {
            let divide = BlockDivisor::new(n);
            for s in (0..=255 * n).step_by((n as usize / 7).max(1)).chain([255 * n, 255 * n - 1, n - 1, n]) {
                assert_eq!(divide.floor(s) as u32, s / n, "{s} / {n}");
            }
        }
    }

    #[test]
    fn block_average_halves_and_means() {
        let img = RgbImage::from_fn(4, 2, |x, _| image::Rgb([(x * 10) as u8, 0, 255]));
        let out = block_average(&img, 2);
        assert_eq!(out.dimensions(), (2, 1));
        assert_eq!(out.get_pixel(0, 0).0, [5, 0, 255]);
        assert_eq!(out.get_pixel(1, 0).0, [25, 0, 255]);
    }

    #[test]
    fn block_average_matches_a_per_pixel_mean_and_handles_photos_narrower_than_a_block() {
        let img =
            RgbImage::from_fn(23, 17, |x, y| image::Rgb([(x * 11 + y) as u8, (x * y * 3) as u8, (200 - y * 9) as u8]));
        for block in [2u32, 3, 5] {
            let out = block_average(&img, block);
            assert_eq!(out, block_average_with::<u32>(&img, block), "16- and 32-bit sums agree");
            assert_eq!(out.dimensions(), (23 / block, 17 / block));
            for (x, y, px) in out.enumerate_pixels() {
                for c in 0..3 {
                    let sum: u32 = (0..block * block)
                        .map(|i| img.get_pixel(x * block + i % block, y * block + i / block).0[c] as u32)
                        .sum();
                    assert_eq!(px.0[c] as u32, sum / (block * block), "block {block} pixel ({x}, {y}) channel {c}");
                }
            }
        }
        // 2 px wide, block 4: one output column repeating the last photo column.
        let narrow = RgbImage::from_fn(2, 8, |x, _| image::Rgb([if x == 0 { 0 } else { 100 }, 0, 0]));
        let out = block_average(&narrow, 4);
        assert_eq!(out.dimensions(), (1, 2));
        assert_eq!(out.get_pixel(0, 0).0[0] as u32, 100 * 3 / 4, "columns 0, 1, 1, 1 of each row");
    }
}
