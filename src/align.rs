//! Face alignment: the least-squares 5-point similarity transform (Umeyama, without reflection) from detected
//! landmarks to a model's template, and the bilinear warp that cuts the aligned crop out of the photo.
//!
//! Pure functions; the template comes from the recognizer's manifest.

use image::RgbImage;
use serde::Serialize;

use crate::detect::Landmarks;
use crate::manifest::AlignmentSpec;

/// A 2-D similarity `p' = s·R·p + t`, stored as the complex multiplier `a + ib = s·e^{iθ}` and translation.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Similarity {
    pub a: f32,
    pub b: f32,
    pub tx: f32,
    pub ty: f32,
}

impl Similarity {
    pub fn apply(&self, p: [f32; 2]) -> [f32; 2] {
        [self.a * p[0] - self.b * p[1] + self.tx, self.b * p[0] + self.a * p[1] + self.ty]
    }

    pub fn scale(&self) -> f32 {
        self.a.hypot(self.b)
    }

    /// Rotation in degrees, counter-clockwise in image coordinates (y down).
    pub fn rotation_degrees(&self) -> f32 {
        self.b.atan2(self.a).to_degrees()
    }

    /// The inverse transform; `None` when the scale is zero.
    pub fn inverse(&self) -> Option<Similarity> {
        let n = self.a * self.a + self.b * self.b;
        if n <= f32::EPSILON || !n.is_finite() {
            return None;
        }
        let (a, b) = (self.a / n, -self.b / n);
        Some(Similarity { a, b, tx: -(a * self.tx - b * self.ty), ty: -(b * self.tx + a * self.ty) })
    }
}

/// Least-squares similarity mapping `src` onto `dst` (Umeyama 1991 restricted to proper rotations). In complex
/// form the optimum is `z = Σ conj(s̃)·d̃ / Σ|s̃|²` over centred points, which is exact for 2-D. Computed in f64 so
/// that a known similarity is recovered to float precision. `None` when the source points coincide.
pub fn estimate_similarity(src: &[[f32; 2]], dst: &[[f32; 2]]) -> Option<Similarity> {
    if src.len() != dst.len() || src.len() < 2 {
        return None;
    }
    let n = src.len() as f64;
    let mean = |pts: &[[f32; 2]]| {
        let (sx, sy) = pts.iter().fold((0.0, 0.0), |(x, y), p| (x + p[0] as f64, y + p[1] as f64));
        (sx / n, sy / n)
    };
    let (msx, msy) = mean(src);
    let (mdx, mdy) = mean(dst);
    let (mut re, mut im, mut norm) = (0.0f64, 0.0f64, 0.0f64);
    for (s, d) in src.iter().zip(dst) {
        let (sx, sy) = (s[0] as f64 - msx, s[1] as f64 - msy);
        let (dx, dy) = (d[0] as f64 - mdx, d[1] as f64 - mdy);
        re += sx * dx + sy * dy;
        im += sx * dy - sy * dx;
        norm += sx * sx + sy * sy;
    }
    if norm <= 1e-12 || !norm.is_finite() || !re.is_finite() || !im.is_finite() {
        return None;
    }
    let (a, b) = (re / norm, im / norm);
    let tx = mdx - (a * msx - b * msy);
    let ty = mdy - (b * msx + a * msy);
    Some(Similarity { a: a as f32, b: b as f32, tx: tx as f32, ty: ty as f32 })
}

/// A face cut out of a photo and warped onto a model's template: 8-bit RGB, the model's input size.
#[derive(Debug, Clone)]
pub struct AlignedFace {
    pub image: RgbImage,
    /// Photo → crop transform that produced it.
    pub transform: Similarity,
}

#[derive(Debug, thiserror::Error)]
pub enum AlignError {
    #[error("alignment: landmarks are degenerate (coincident or not finite)")]
    DegenerateLandmarks,
}

/// Aligns one face: similarity from its landmarks to the template, then the bilinear warp.
pub fn align_face(photo: &RgbImage, landmarks: &Landmarks, spec: &AlignmentSpec) -> Result<AlignedFace, AlignError> {
    let transform = estimate_similarity(&landmarks.points, &spec.template).ok_or(AlignError::DegenerateLandmarks)?;
    let image = warp_similarity(photo, &transform, spec.size[0], spec.size[1]).ok_or(AlignError::DegenerateLandmarks)?;
    Ok(AlignedFace { image, transform })
}

/// Bits of the fixed-point bilinear weights: source positions are resolved to 1/2048 pixel (OpenCV's
/// `warpAffine` uses 1/32).
const WEIGHT_BITS: u32 = 11;
const WEIGHT_ONE: u32 = 1 << WEIGHT_BITS;
/// Extra fraction bits of the source positions while they are stepped along a row (32.32 fixed point over the
/// 1/2048-pixel grid): one integer add per pixel instead of a float multiply and a float-to-integer conversion,
/// which took 40 % of the warp. The step's rounding drifts by less than 2⁻²⁴ pixel over a row.
const STEP_BITS: u32 = 32;

/// Renders the `width`×`height` crop whose pixel `q` shows photo point `transform⁻¹(q)`, sampled bilinearly;
/// outside the photo counts as black (as OpenCV's `warpAffine` with a constant border does, so both agree).
///
/// The interpolation is in integers with weights quantised to 1/2048 pixel, as OpenCV's is: per channel four
/// multiplies and a shift instead of float conversions and rounding, which made this the costliest step of the
/// pipeline outside the networks.
pub fn warp_similarity(photo: &RgbImage, transform: &Similarity, width: u32, height: u32) -> Option<RgbImage> {
    let inv = transform.inverse()?;
    let (pw, ph) = (photo.width() as i64, photo.height() as i64);
    let src = photo.as_raw();
    let stride = pw as usize * 3;
    let mut out = RgbImage::new(width, height);
    if width == 0 || height == 0 {
        return Some(out);
    }
    let dst: &mut [u8] = &mut out;
    let texel = |x: i64, y: i64| -> [u32; 3] {
        if x < 0 || y < 0 || x >= pw || y >= ph {
            return [0; 3];
        }
        let i = y as usize * stride + x as usize * 3;
        [src[i] as u32, src[i + 1] as u32, src[i + 2] as u32]
    };
    // A photo position in stepping units; `as` saturates, and a saturated position lies far outside the photo.
    let fixed = |pixels: f64| (pixels * f64::from(WEIGHT_ONE) * (1u64 << STEP_BITS) as f64).round() as i64;
    let (step_x, step_y) = (fixed(f64::from(inv.a)), fixed(f64::from(inv.b)));
    // Rounding to the nearest 1/2048 pixel is flooring half a unit higher.
    let half = 1i64 << (STEP_BITS - 1);
    for (v, row) in dst.chunks_exact_mut(width as usize * 3).enumerate() {
        // Source coordinates are affine in u: a row start plus u times the first column of the inverse.
        let v = v as f64;
        let mut x = fixed(-f64::from(inv.b) * v + f64::from(inv.tx)).saturating_add(half);
        let mut y = fixed(f64::from(inv.a) * v + f64::from(inv.ty)).saturating_add(half);
        for px in row.chunks_exact_mut(3) {
            let (qx, qy) = (x >> STEP_BITS, y >> STEP_BITS);
            x = x.saturating_add(step_x);
            y = y.saturating_add(step_y);
            // The arithmetic shift floors negative positions too, so the weight is always the fraction above.
            let (xi, yi) = (qx >> WEIGHT_BITS, qy >> WEIGHT_BITS);
            let wx = (qx & (WEIGHT_ONE as i64 - 1)) as u32;
            let wy = (qy & (WEIGHT_ONE as i64 - 1)) as u32;
            if xi >= 0 && yi >= 0 && xi + 1 < pw && yi + 1 < ph {
                // Both source pixel pairs as fixed-size arrays: one bounds check each instead of one per byte.
                let i = yi as usize * stride + xi as usize * 3;
                let (Ok(upper), Ok(lower)) =
                    (<&[u8; 6]>::try_from(&src[i..i + 6]), <&[u8; 6]>::try_from(&src[i + stride..i + stride + 6]))
                else {
                    continue;
                };
                for c in 0..3 {
                    let top = [upper[c] as u32, upper[c + 3] as u32];
                    let bottom = [lower[c] as u32, lower[c + 3] as u32];
                    px[c] = blend(top, bottom, wx, wy);
                }
            } else if xi + 1 >= 0 && yi + 1 >= 0 && xi < pw && yi < ph {
                let (p00, p01, p10, p11) = (texel(xi, yi), texel(xi + 1, yi), texel(xi, yi + 1), texel(xi + 1, yi + 1));
                for c in 0..3 {
                    px[c] = blend([p00[c], p01[c]], [p10[c], p11[c]], wx, wy);
                }
            }
        }
    }
    Some(out)
}

/// Bilinear blend of two pixel pairs with weights in 1/2048ths, rounded to nearest. The largest intermediate,
/// 255·2048·2048, fits in 32 bits.
#[inline]
fn blend(top: [u32; 2], bottom: [u32; 2], wx: u32, wy: u32) -> u8 {
    let upper = top[0] * (WEIGHT_ONE - wx) + top[1] * wx;
    let lower = bottom[0] * (WEIGHT_ONE - wx) + bottom[1] * wx;
    ((upper * (WEIGHT_ONE - wy) + lower * wy + (1 << (2 * WEIGHT_BITS - 1))) >> (2 * WEIGHT_BITS)) as u8
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::Rgb;

    const TEMPLATE: [[f32; 2]; 5] = [[38.29, 51.69], [73.53, 51.50], [56.02, 71.73], [41.55, 92.37], [70.73, 92.20]];

    #[test]
    fn fixed_point_blend_matches_float_bilinear_to_one_level() {
        // Weights on the 1/2048 grid, so the only difference from float arithmetic is the final rounding.
        let cases = [([0u32, 255, 255, 0], 1024u32, 1024u32), ([10, 200, 37, 90], 7, 2040), ([255; 4], 2047, 2047)];
        for (p, wx, wy) in cases {
            let (fx, fy) = (wx as f32 / 2048.0, wy as f32 / 2048.0);
            let top = p[0] as f32 + (p[1] as f32 - p[0] as f32) * fx;
            let bottom = p[2] as f32 + (p[3] as f32 - p[2] as f32) * fx;
            let expected = (top + (bottom - top) * fy).round();
            let got = blend([p[0], p[1]], [p[2], p[3]], wx, wy) as f32;
            assert!((got - expected).abs() <= 1.0, "{p:?} at ({wx}, {wy}): {got} vs {expected}");
        }
        assert_eq!(blend([0, 255], [255, 0], 1024, 1024), 128, "the centre of a checkerboard rounds half up");
    }

    #[test]
    fn warp_agrees_with_float_bilinear_on_a_real_rotation() {
        let img = RgbImage::from_fn(64, 48, |x, y| Rgb([(x * 4) as u8, (y * 5) as u8, ((x * y) % 256) as u8]));
        let t = Similarity { a: 0.9 * 0.4f32.cos(), b: 0.9 * 0.4f32.sin(), tx: -5.3, ty: 12.7 };
        let out = warp_similarity(&img, &t, 40, 40).unwrap();
        let inv = t.inverse().unwrap();
        let sample = |x: f32, y: f32, c: usize| -> f32 {
            let at = |xi: i64, yi: i64| {
                if xi < 0 || yi < 0 || xi >= 64 || yi >= 48 {
                    0.0
                } else {
                    img.get_pixel(xi as u32, yi as u32).0[c] as f32
                }
            };
            let (x0, y0) = (x.floor(), y.floor());
            let (fx, fy) = (x - x0, y - y0);
            let (xi, yi) = (x0 as i64, y0 as i64);
            let top = at(xi, yi) + (at(xi + 1, yi) - at(xi, yi)) * fx;
            let bottom = at(xi, yi + 1) + (at(xi + 1, yi + 1) - at(xi, yi + 1)) * fx;
            top + (bottom - top) * fy
        };
        for (u, v, px) in out.enumerate_pixels() {
            let p = inv.apply([u as f32, v as f32]);
            if p[0] < -1.0 || p[1] < -1.0 || p[0] > 64.0 || p[1] > 48.0 {
                assert_eq!(px.0, [0, 0, 0], "({u}, {v}) shows a point outside the photo");
                continue;
            }
            for c in 0..3 {
                let expected = sample(p[0], p[1], c);
                assert!((px.0[c] as f32 - expected).abs() <= 1.5, "({u}, {v}) channel {c}: {} vs {expected}", px.0[c]);
            }
        }
    }

    #[test]
    fn crops_of_points_far_outside_the_photo_are_black() {
        let img = RgbImage::from_pixel(32, 32, Rgb([200, 100, 50]));
        // Positions beyond the fixed-point range saturate instead of wrapping around into the photo.
        for (tx, a) in [(-1e12f32, 1.0f32), (1e12, 1.0), (-3e9, 1e-3), (-1e12, 1e-3)] {
            let t = Similarity { a, b: 0.0, tx, ty: tx };
            let out = warp_similarity(&img, &t, 16, 16).unwrap();
            assert!(out.pixels().all(|p| p.0 == [0, 0, 0]), "tx {tx}, a {a}");
        }
    }

    #[test]
    fn recovers_a_known_similarity_exactly() {
        let truth = Similarity { a: 1.7 * 0.3f32.cos(), b: 1.7 * 0.3f32.sin(), tx: -12.5, ty: 40.25 };
        let src: Vec<[f32; 2]> = TEMPLATE.to_vec();
        let dst: Vec<[f32; 2]> = src.iter().map(|p| truth.apply(*p)).collect();
        let est = estimate_similarity(&src, &dst).unwrap();
        assert!((est.a - truth.a).abs() < 1e-5, "{est:?}");
        assert!((est.b - truth.b).abs() < 1e-5, "{est:?}");
        assert!((est.tx - truth.tx).abs() < 1e-3, "{est:?}");
        assert!((est.ty - truth.ty).abs() < 1e-3, "{est:?}");
        assert!((est.scale() - 1.7).abs() < 1e-5);
        assert!((est.rotation_degrees() - 0.3f32.to_degrees()).abs() < 1e-3);
    }

    #[test]
    fn least_squares_splits_noise_and_ignores_reflection() {
        // Symmetric noise on two points cancels in the least-squares fit: identity must come back.
        let mut noisy = TEMPLATE;
        noisy[0][0] += 1.0;
        noisy[1][0] -= 1.0;
        let est = estimate_similarity(&TEMPLATE, &noisy).unwrap();
        assert!((est.rotation_degrees()).abs() < 0.5, "{est:?}");
        // A mirror image cannot be produced by a proper similarity; the fit must stay a rotation+scale.
        let mirrored: Vec<[f32; 2]> = TEMPLATE.iter().map(|p| [-p[0], p[1]]).collect();
        let est = estimate_similarity(&TEMPLATE, &mirrored).unwrap();
        let det = est.a * est.a + est.b * est.b;
        assert!(det > 0.0);
    }

    #[test]
    fn inverse_round_trips() {
        let t = Similarity { a: 0.8, b: -0.6, tx: 3.0, ty: -7.0 };
        let inv = t.inverse().unwrap();
        for p in TEMPLATE {
            let q = inv.apply(t.apply(p));
            assert!((q[0] - p[0]).abs() < 1e-4 && (q[1] - p[1]).abs() < 1e-4);
        }
        assert!(Similarity { a: 0.0, b: 0.0, tx: 1.0, ty: 1.0 }.inverse().is_none());
    }

    #[test]
    fn degenerate_landmarks_are_refused() {
        let same = [[10.0, 10.0]; 5];
        assert!(estimate_similarity(&same, &TEMPLATE).is_none());
        let nan = [[f32::NAN, 1.0]; 5];
        assert!(estimate_similarity(&nan, &TEMPLATE).is_none());
        let lm = Landmarks { points: same };
        let spec = AlignmentSpec { size: [112, 112], template: TEMPLATE };
        assert!(align_face(&RgbImage::new(50, 50), &lm, &spec).is_err());
    }

    #[test]
    fn identity_warp_copies_pixels_and_translation_shifts_them() {
        let img = RgbImage::from_fn(20, 10, |x, y| Rgb([(x * 10) as u8, (y * 20) as u8, 7]));
        let id = Similarity { a: 1.0, b: 0.0, tx: 0.0, ty: 0.0 };
        assert_eq!(warp_similarity(&img, &id, 20, 10).unwrap(), img);
        // Crop pixel q shows photo point q - t: a shift of +3 in x moves the content right.
        let shift = Similarity { a: 1.0, b: 0.0, tx: 3.0, ty: 0.0 };
        let out = warp_similarity(&img, &shift, 20, 10).unwrap();
        assert_eq!(out.get_pixel(5, 4), img.get_pixel(2, 4));
        assert_eq!(out.get_pixel(1, 4).0, [0, 0, 0], "outside the photo is black");
    }

    #[test]
    fn half_scale_warp_interpolates_bilinearly() {
        let img = RgbImage::from_fn(4, 1, |x, _| Rgb([(x * 80) as u8, 0, 0]));
        // Scale 2: crop pixel u shows photo point u/2.
        let up = Similarity { a: 2.0, b: 0.0, tx: 0.0, ty: 0.0 };
        let out = warp_similarity(&img, &up, 6, 1).unwrap();
        let reds: Vec<u8> = (0..6).map(|u| out.get_pixel(u, 0).0[0]).collect();
        // The last row of the photo has no row below it inside the photo, so fy = 0 keeps exact values.
        assert_eq!(reds, vec![0, 40, 80, 120, 160, 200]);
    }

    #[test]
    fn aligning_template_points_lands_them_on_the_template() {
        let spec = AlignmentSpec { size: [112, 112], template: TEMPLATE };
        let truth = Similarity { a: 0.5, b: 0.1, tx: 20.0, ty: 5.0 };
        let inv = truth.inverse().unwrap();
        let mut points = [[0.0f32; 2]; 5];
        for (p, t) in points.iter_mut().zip(TEMPLATE) {
            *p = inv.apply(t);
        }
        let face = align_face(&RgbImage::new(300, 300), &Landmarks { points }, &spec).unwrap();
        assert_eq!(face.image.dimensions(), (112, 112));
        for (p, t) in points.iter().zip(TEMPLATE) {
            let q = face.transform.apply(*p);
            assert!((q[0] - t[0]).abs() < 1e-3 && (q[1] - t[1]).abs() < 1e-3);
        }
    }
}
