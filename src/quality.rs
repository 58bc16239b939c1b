//! Face quality figures reported with every face: detector score, inter-eye distance, head pose estimates from
//! the landmarks, sharpness and exposure of the aligned crop. Enrollment refuses faces below configured minimums.

use image::RgbImage;
use serde::{Deserialize, Serialize};

use crate::detect::Detection;

/// Quality of one detected face.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FaceQuality {
    /// Detector confidence, 0..1.
    pub detector_score: f32,
    /// Distance between the eye centres in photo pixels; ISO/IEC 19794-5 asks ≥ 90 for enrollment photos.
    pub inter_eye_px: f32,
    /// In-plane rotation of the eye line, degrees (positive: clockwise in the image).
    pub roll_deg: f32,
    /// Left-right head turn estimated from the nose's offset from the eye midpoint, degrees (rough: ±10°).
    pub yaw_deg: f32,
    /// Variance of the Laplacian of the aligned crop's luminance; low means blurred.
    pub sharpness: f32,
    /// Mean luminance of the aligned crop, 0..1.
    pub brightness: f32,
    /// Fraction of aligned-crop pixels that are clipped black or white.
    pub clipped: f32,
}

/// Minimum quality for enrollment; searches only report quality.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QualityPolicy {
    /// Minimum detector score (default 0.7).
    pub min_detector_score: f32,
    /// Minimum inter-eye distance in pixels (default 24).
    pub min_inter_eye_px: f32,
    /// Largest absolute yaw estimate, degrees (default 45).
    pub max_abs_yaw_deg: f32,
    /// Minimum sharpness (default 20).
    pub min_sharpness: f32,
}

impl Default for QualityPolicy {
    fn default() -> Self {
        QualityPolicy { min_detector_score: 0.7, min_inter_eye_px: 24.0, max_abs_yaw_deg: 45.0, min_sharpness: 20.0 }
    }
}

impl QualityPolicy {
    /// Reasons the face falls short, empty when it is acceptable.
    pub fn shortfalls(&self, q: &FaceQuality) -> Vec<String> {
        let mut out = Vec::new();
        if q.detector_score < self.min_detector_score {
            out.push(format!("detector score {:.2} < {:.2}", q.detector_score, self.min_detector_score));
        }
        if q.inter_eye_px < self.min_inter_eye_px {
            out.push(format!("inter-eye distance {:.0} px < {:.0} px", q.inter_eye_px, self.min_inter_eye_px));
        }
        if q.yaw_deg.abs() > self.max_abs_yaw_deg {
            out.push(format!("head turned {:.0}° > {:.0}°", q.yaw_deg.abs(), self.max_abs_yaw_deg));
        }
        if q.sharpness < self.min_sharpness {
            out.push(format!("sharpness {:.1} < {:.1}", q.sharpness, self.min_sharpness));
        }
        out
    }
}

/// Measures a face from its detection and its aligned crop.
pub fn assess_face(detection: &Detection, crop: &RgbImage) -> FaceQuality {
    let [le, re, nose, _, _] = detection.landmarks.points;
    let (dx, dy) = (re[0] - le[0], re[1] - le[1]);
    let inter_eye = dx.hypot(dy);
    let roll = dy.atan2(dx).to_degrees();
    // Project the nose onto the eye line: on a frontal face it sits over the eye midpoint. Half the inter-eye
    // distance is roughly the head's radius at eye level, so the offset ratio is the sine of the turn.
    let mid = [(le[0] + re[0]) / 2.0, (le[1] + re[1]) / 2.0];
    let along = if inter_eye > 0.0 { ((nose[0] - mid[0]) * dx + (nose[1] - mid[1]) * dy) / inter_eye } else { 0.0 };
    let ratio = if inter_eye > 0.0 { (along / (inter_eye / 2.0)).clamp(-1.0, 1.0) } else { 0.0 };
    let luma = luminance(crop);
    let (brightness, clipped) = exposure(&luma);
    FaceQuality {
        detector_score: detection.score,
        inter_eye_px: inter_eye,
        roll_deg: roll,
        yaw_deg: ratio.asin().to_degrees(),
        sharpness: laplacian_variance(&luma, crop.width() as usize, crop.height() as usize),
        brightness,
        clipped,
    }
}

/// BT.601 luma in whole levels, as a grayscale conversion of the crop would give (OpenCV's fixed-point weights):
/// the variance of the Laplacian is conventionally taken on such an 8-bit image, and integer levels make the sums
/// below exact and vectorisable.
fn luminance(img: &RgbImage) -> Vec<u8> {
    img.as_raw()
        .chunks_exact(3)
        .map(|p| ((4899 * u32::from(p[0]) + 9617 * u32::from(p[1]) + 1868 * u32::from(p[2]) + (1 << 13)) >> 14) as u8)
        .collect()
}

fn exposure(luma: &[u8]) -> (f32, f32) {
    if luma.is_empty() {
        return (0.0, 0.0);
    }
    let n = luma.len() as f64;
    let sum: u64 = luma.iter().map(|&v| u64::from(v)).sum();
    let clipped = luma.iter().filter(|&&v| v <= 2 || v >= 253).count() as f64;
    ((sum as f64 / n / 255.0) as f32, (clipped / n) as f32)
}

/// Variance of the 4-neighbour Laplacian over interior pixels.
pub fn laplacian_variance(luma: &[u8], width: usize, height: usize) -> f32 {
    if width < 3 || height < 3 || luma.len() < width * height {
        return 0.0;
    }
    // |l| ≤ 1020, so a row's sums fit easily in i32/i64 and stay exact.
    let (mut sum, mut sq) = (0i64, 0i64);
    for y in 1..height - 1 {
        let (above, row, below) =
            (&luma[(y - 1) * width..y * width], &luma[y * width..(y + 1) * width], &luma[(y + 1) * width..(y + 2) * width]);
        let (mut row_sum, mut row_sq) = (0i32, 0i64);
        for x in 1..width - 1 {
            let l = i32::from(row[x - 1]) + i32::from(row[x + 1]) + i32::from(above[x]) + i32::from(below[x])
                - 4 * i32::from(row[x]);
            row_sum += l;
            row_sq += i64::from(l * l);
        }
        sum += i64::from(row_sum);
        sq += row_sq;
    }
    let n = ((width - 2) * (height - 2)) as f64;
    let mean = sum as f64 / n;
    (sq as f64 / n - mean * mean) as f32
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::{BoundingBox, Landmarks};

    fn detection(points: [[f32; 2]; 5]) -> Detection {
        Detection { bbox: BoundingBox { x: 0.0, y: 0.0, width: 100.0, height: 100.0 }, landmarks: Landmarks { points }, score: 0.9 }
    }

    #[test]
    fn frontal_level_face_has_zero_pose() {
        let d = detection([[30.0, 40.0], [70.0, 40.0], [50.0, 60.0], [35.0, 80.0], [65.0, 80.0]]);
        let q = assess_face(&d, &RgbImage::new(8, 8));
        assert!((q.inter_eye_px - 40.0).abs() < 1e-4);
        assert!(q.roll_deg.abs() < 1e-4 && q.yaw_deg.abs() < 1e-4);
    }

    #[test]
    fn tilted_and_turned_faces_are_measured() {
        // Eye line rising 45° to the right → roll −45°; nose halfway to the right eye → yaw asin(0.5) = 30°.
        let d = detection([[0.0, 10.0], [10.0, 0.0], [5.0 + 2.5 * 0.70710677, 5.0 - 2.5 * 0.70710677], [0.0; 2], [0.0; 2]]);
        let q = assess_face(&d, &RgbImage::new(8, 8));
        assert!((q.roll_deg + 45.0).abs() < 1e-3, "{q:?}");
        let d = detection([[30.0, 40.0], [70.0, 40.0], [60.0, 60.0], [35.0, 80.0], [65.0, 80.0]]);
        let q = assess_face(&d, &RgbImage::new(8, 8));
        assert!((q.yaw_deg - 30.0).abs() < 1e-3, "{q:?}");
    }

    #[test]
    fn sharp_edges_beat_flat_images() {
        let flat = RgbImage::from_pixel(20, 20, image::Rgb([128, 128, 128]));
        let checker = RgbImage::from_fn(20, 20, |x, y| if (x + y) % 2 == 0 { image::Rgb([255; 3]) } else { image::Rgb([0; 3]) });
        let d = detection([[30.0, 40.0], [70.0, 40.0], [50.0, 60.0], [35.0, 80.0], [65.0, 80.0]]);
        let qf = assess_face(&d, &flat);
        let qc = assess_face(&d, &checker);
        assert_eq!(qf.sharpness, 0.0);
        assert!(qc.sharpness > 1000.0);
        assert!((qf.brightness - 128.0 / 255.0).abs() < 1e-3);
        assert_eq!(qf.clipped, 0.0);
        assert_eq!(qc.clipped, 1.0);
    }

    #[test]
    fn laplacian_variance_and_luma_by_hand() {
        // Interior pixels (1, 1) and (2, 1): Laplacians −40 and 10, mean −15, variance (25² + 25²) / 2.
        let luma = [0, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0, 0];
        assert_eq!(laplacian_variance(&luma, 4, 3), 625.0);
        assert_eq!(laplacian_variance(&luma, 2, 6), 0.0, "no interior pixels");
        let img = RgbImage::from_vec(3, 1, vec![255, 255, 255, 255, 0, 0, 0, 0, 255]).unwrap();
        assert_eq!(luminance(&img), vec![255, 76, 29], "white, red and blue as OpenCV's grayscale conversion gives");
    }

    #[test]
    fn policy_lists_every_shortfall() {
        let d = detection([[30.0, 40.0], [40.0, 40.0], [50.0, 60.0], [35.0, 80.0], [65.0, 80.0]]);
        let q = assess_face(&d, &RgbImage::new(8, 8));
        let reasons = QualityPolicy::default().shortfalls(&q);
        assert!(reasons.iter().any(|r| r.contains("inter-eye")), "{reasons:?}");
        assert!(reasons.iter().any(|r| r.contains("sharpness")), "{reasons:?}");
        assert!(!reasons.iter().any(|r| r.contains("detector")), "{reasons:?}");
    }
}
