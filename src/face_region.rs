//! The face region kept with an enrolment: the detected face with a wide margin, cut from the photo (shrunk when
//! large) with its detection in the region's pixels, so that any recognizer can later align and embed it as it would
//! have from the photo itself. This is what lets a gallery move to another model without the enrolment photos.

use std::io::Cursor;

use image::codecs::jpeg::JpegEncoder;
use image::{imageops, RgbImage};
use serde::{Deserialize, Serialize};

use crate::detect::Detection;

/// The region's side as a multiple of the face box's larger side. An aligned crop covers about 1.2 box widths for
/// dlib's 150 px template (eyes 53 px apart) and less for ArcFace-style 112 px ones, so twice the box leaves room
/// for templates with more context than any shipped recognizer's.
pub const REGION_BOX_MULTIPLE: f32 = 2.0;
/// The region's side as a multiple of the eye distance, at least: a tight box (a face in profile) still gets room.
pub const REGION_EYE_MULTIPLE: f32 = 5.0;
/// A region larger than this (pixels, each side) is shrunk to it: 512 px keeps a face of about 250 px at full
/// resolution, more than any recognizer's input, at 30–60 KB per JPEG.
pub const MAX_REGION_PX: u32 = 512;
/// JPEG quality of the stored region: high enough that a template made from it matches one made from the photo
/// (cosine ≥ 0.99 in `tests/migration.rs`).
pub const REGION_JPEG_QUALITY: u8 = 92;

/// Where a region lies in its photo and where the face lies in the region.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RegionGeometry {
    /// Region pixels per photo pixel (1 unless the region was shrunk).
    pub scale: f32,
    /// The region's top-left corner in photo pixels.
    pub origin: [u32; 2],
    /// The face's detection in region pixels.
    pub detection: Detection,
}

impl RegionGeometry {
    /// The detection at the photo's scale (placed at the region's origin): what quality figures measured in photo
    /// pixels, such as the eye distance, are computed from.
    pub fn photo_scale_detection(&self) -> Detection {
        let s = 1.0 / self.scale;
        let mut d = self.detection;
        d.bbox.x *= s;
        d.bbox.y *= s;
        d.bbox.width *= s;
        d.bbox.height *= s;
        for p in &mut d.landmarks.points {
            p[0] *= s;
            p[1] *= s;
        }
        d
    }
}

/// A face region ready to be stored.
#[derive(Debug, Clone)]
pub struct FaceRegion {
    pub jpeg: Vec<u8>,
    pub geometry: RegionGeometry,
}

#[derive(Debug, thiserror::Error)]
pub enum RegionError {
    #[error("face region: the detection lies outside the photo")]
    OutsidePhoto,
    #[error("face region: encode the region as JPEG")]
    Encode(#[source] image::ImageError),
}

/// Cuts the region of `detection` out of `photo`: a square around the box centre, clamped to the photo (beyond it
/// an aligner sees black either way), shrunk to at most [`MAX_REGION_PX`] a side, stored as JPEG.
pub fn cut_face_region(photo: &RgbImage, detection: &Detection) -> Result<FaceRegion, RegionError> {
    let b = detection.bbox;
    let [le, re, ..] = detection.landmarks.points;
    let eyes = (re[0] - le[0]).hypot(re[1] - le[1]);
    let side = (b.width.max(b.height) * REGION_BOX_MULTIPLE).max(eyes * REGION_EYE_MULTIPLE);
    let (cx, cy) = (b.x + b.width / 2.0, b.y + b.height / 2.0);
    let clamp = |v: f32, max: u32| (v.floor().max(0.0) as u32).min(max);
    let (x0, y0) = (clamp(cx - side / 2.0, photo.width()), clamp(cy - side / 2.0, photo.height()));
    let (x1, y1) = (clamp(cx + side / 2.0 + 1.0, photo.width()), clamp(cy + side / 2.0 + 1.0, photo.height()));
    if !side.is_finite() || x1 <= x0 || y1 <= y0 {
        return Err(RegionError::OutsidePhoto);
    }
    let crop = imageops::crop_imm(photo, x0, y0, x1 - x0, y1 - y0).to_image();
    let longest = crop.width().max(crop.height());
    let (region, scale) = if longest > MAX_REGION_PX {
        let scale = MAX_REGION_PX as f32 / longest as f32;
        let (w, h) = (((crop.width() as f32 * scale).round() as u32).max(1), ((crop.height() as f32 * scale).round() as u32).max(1));
        // The scale actually applied on each axis differs from `scale` by under half a pixel over the region.
        (imageops::resize(&crop, w, h, imageops::FilterType::Triangle), w as f32 / crop.width() as f32)
    } else {
        (crop, 1.0)
    };
    let mut local = *detection;
    let to_region = |p: [f32; 2]| [(p[0] - x0 as f32) * scale, (p[1] - y0 as f32) * scale];
    let [bx, by] = to_region([b.x, b.y]);
    local.bbox.x = bx;
    local.bbox.y = by;
    local.bbox.width = b.width * scale;
    local.bbox.height = b.height * scale;
    for p in &mut local.landmarks.points {
        *p = to_region(*p);
    }
    let mut out = Cursor::new(Vec::new());
    JpegEncoder::new_with_quality(&mut out, REGION_JPEG_QUALITY).encode_image(&region).map_err(RegionError::Encode)?;
    Ok(FaceRegion { jpeg: out.into_inner(), geometry: RegionGeometry { scale, origin: [x0, y0], detection: local } })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::{BoundingBox, Landmarks};

    fn face_at(x: f32, y: f32, size: f32) -> Detection {
        let p = |u: f32, v: f32| [x + u * size, y + v * size];
        Detection {
            bbox: BoundingBox { x, y, width: size, height: size },
            landmarks: Landmarks { points: [p(0.3, 0.4), p(0.7, 0.4), p(0.5, 0.6), p(0.35, 0.8), p(0.65, 0.8)] },
            score: 0.9,
        }
    }

    fn gradient(width: u32, height: u32) -> RgbImage {
        RgbImage::from_fn(width, height, |x, y| image::Rgb([(x % 256) as u8, (y % 256) as u8, ((x + y) % 256) as u8]))
    }

    #[test]
    fn a_small_face_is_kept_at_full_resolution_with_its_landmarks_moved_into_the_region() {
        let photo = gradient(640, 480);
        let face = face_at(300.0, 200.0, 80.0);
        let region = cut_face_region(&photo, &face).unwrap();
        let g = region.geometry;
        assert_eq!(g.scale, 1.0);
        assert_eq!(g.origin, [260, 160], "a 160 px square around the box centre (340, 240)");
        for (local, photo_point) in g.detection.landmarks.points.iter().zip(face.landmarks.points) {
            assert_eq!([local[0] + 260.0, local[1] + 160.0], photo_point);
        }
        let decoded = image::load_from_memory(&region.jpeg).unwrap().to_rgb8();
        assert_eq!((decoded.width(), decoded.height()), (161, 161));
        assert_eq!(g.photo_scale_detection().bbox.width, 80.0);
    }

    #[test]
    fn a_large_face_is_shrunk_and_its_photo_scale_is_recovered() {
        let photo = gradient(2000, 2000);
        let face = face_at(600.0, 600.0, 600.0);
        let region = cut_face_region(&photo, &face).unwrap();
        let decoded = image::load_from_memory(&region.jpeg).unwrap().to_rgb8();
        assert!(decoded.width() <= MAX_REGION_PX && decoded.height() <= MAX_REGION_PX);
        assert!(region.geometry.scale < 0.5);
        let back = region.geometry.photo_scale_detection();
        assert!((back.bbox.width - 600.0).abs() < 2.0, "{}", back.bbox.width);
        let eyes = |d: &Detection| (d.landmarks.points[1][0] - d.landmarks.points[0][0]).abs();
        assert!((eyes(&back) - eyes(&face)).abs() < 1.0);
    }

    #[test]
    fn a_face_at_the_edge_is_clamped_to_the_photo_and_one_outside_is_refused() {
        let photo = gradient(200, 200);
        let region = cut_face_region(&photo, &face_at(-20.0, 150.0, 60.0)).unwrap();
        assert_eq!(region.geometry.origin, [0, 120]);
        assert!(matches!(cut_face_region(&photo, &face_at(900.0, 900.0, 50.0)), Err(RegionError::OutsidePhoto)));
    }
}
