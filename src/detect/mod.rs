//! Face detection: the `Detector` (YuNet, loaded from its manifest), what it finds (`Detection`: box, landmarks,
//! score), its settings, and the choices made over its findings: non-maximum suppression and a photo's subject.
//!
//! Strategy (documented in the README): a *whole-photo pass* letterboxes the photo into the model input (shrinking
//! big photos, enlarging small ones at most `max_upscale`×), which finds faces whose size is 10–300 px at that
//! scale — every face of a checkpoint portrait. When the caller asks for faces down to `min_face_px` and the
//! whole-photo pass cannot see them, a *tiled pass* runs at the scale that makes such faces ~12 px, over
//! overlapping model-sized tiles. Its cost grows with the photo area: (W·s)·(H·s)/tile² inferences.
//!
//! Then a *refinement* looks again at every face that even the finest pass saw smaller than `refine_face_px`: the
//! detector runs once more on a crop around it (twice the box each way), enlarged so the face is about that wide,
//! and the face takes that look's box and landmarks. YuNet places landmarks more precisely on a larger face, and
//! the alignment rests on them; a face that fills a small part of a large photo is where it matters. One small
//! inference per such face (twice `refine_face_px` wide and twice the box's height at that scale).

mod passes;
mod rescale;
mod yunet;

use image::RgbImage;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::manifest::{ManifestError, ModelManifest, ModelTask};
use crate::runtime::{Runtime, RuntimeError, SessionPool};
use passes::refinement_scale;
use rescale::Rescaled;

/// The five facial landmarks in YuNet's order: image-left eye, image-right eye, nose tip, image-left mouth corner,
/// image-right mouth corner; in photo pixels.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Landmarks {
    pub points: [[f32; 2]; 5],
}

impl Landmarks {
    pub fn left_eye(&self) -> [f32; 2] {
        self.points[0]
    }
    pub fn right_eye(&self) -> [f32; 2] {
        self.points[1]
    }
    pub fn nose(&self) -> [f32; 2] {
        self.points[2]
    }
}

/// An axis-aligned box in photo pixels.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BoundingBox {
    pub x: f32,
    pub y: f32,
    pub width: f32,
    pub height: f32,
}

impl BoundingBox {
    pub fn area(&self) -> f32 {
        self.width.max(0.0) * self.height.max(0.0)
    }

    pub fn iou(&self, other: &BoundingBox) -> f32 {
        let x1 = self.x.max(other.x);
        let y1 = self.y.max(other.y);
        let x2 = (self.x + self.width).min(other.x + other.width);
        let y2 = (self.y + self.height).min(other.y + other.height);
        let inter = (x2 - x1).max(0.0) * (y2 - y1).max(0.0);
        let union = self.area() + other.area() - inter;
        if union <= 0.0 {
            0.0
        } else {
            inter / union
        }
    }
}

/// One detected face.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Detection {
    #[serde(rename = "box")]
    pub bbox: BoundingBox,
    pub landmarks: Landmarks,
    pub score: f32,
}

impl Detection {
    /// The same detection moved by `offset` pixels: from a crop's coordinates to its photo's.
    fn shifted(mut self, offset: [f32; 2]) -> Detection {
        self.bbox.x += offset[0];
        self.bbox.y += offset[1];
        for p in &mut self.landmarks.points {
            p[0] += offset[0];
            p[1] += offset[1];
        }
        self
    }
}

/// Detection settings; every default is documented and may be set in the config file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DetectionConfig {
    /// Minimum face score (default: the manifest's, 0.6 for YuNet).
    pub score_threshold: Option<f32>,
    /// NMS IoU (default: the manifest's, 0.3 for YuNet as in OpenCV).
    pub nms_iou: Option<f32>,
    /// Smallest face (in photo pixels, box width) that must be found. 0 (default) means one whole-photo pass,
    /// right for checkpoint portraits; investigators searching crowd photos ask for e.g. 20 per request.
    pub min_face_px: f32,
    /// Largest enlargement of a small photo (default 2), in the whole-photo pass and in the tiled pass. Enlarging
    /// adds no detail, but YuNet places its landmarks more precisely on a face of 200 px than of 100 px, and the
    /// alignment rests on them: on lfw-dev's 250 px photos, 2× instead of 1× lowers FNIR at FPIR 1 % by about a
    /// sixth (docs/benchmarks.md). A fixed-size detector's letterbox costs the same either way; a dynamic-size one
    /// pays for the larger input (a 250 px photo: 512² instead of 256²), still less than the 640² of the fixed one.
    pub max_upscale: f32,
    /// Largest side of the model input for detectors with a dynamic input size (default 640).
    pub max_input_side: u32,
    /// Cap on tiles of one tiled pass, so a request cannot ask for unbounded work (default 64).
    pub max_tiles: usize,
    /// Faces that the finest pass saw narrower than this (model-input pixels, box width) are detected again in an
    /// enlarged crop, up to this width but never beyond `max_upscale` × the photo's own pixels (default 192; 0 turns
    /// it off). On lfw-dev photos placed in a 2000 px frame, where the whole-photo pass sees the faces at about
    /// 32 px, it halves the landmarks' error and lowers FNIR at FPIR 1 % by about a tenth (docs/benchmarks.md,
    /// "Small faces in large photos"). A 250 px portrait enlarged 2× is never refined: its face is already about
    /// 200 px.
    pub refine_face_px: f32,
    /// Cap on refined faces per photo, best score first (default 32).
    pub max_refinements: usize,
}

impl Default for DetectionConfig {
    fn default() -> Self {
        DetectionConfig {
            score_threshold: None,
            nms_iou: None,
            min_face_px: 0.0,
            max_upscale: 2.0,
            max_input_side: 640,
            max_tiles: 64,
            refine_face_px: 192.0,
            max_refinements: 32,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DetectError {
    #[error("detector {id}: inference failed")]
    Inference {
        id: String,
        #[source]
        source: ort::Error,
    },
    #[error("detector {id}: output `{name}` is missing or has {len} values where {expected} were expected")]
    BadOutput { id: String, name: String, len: usize, expected: usize },
}

/// A YuNet face detector loaded from its manifest.
pub struct Detector {
    manifest: ModelManifest,
    pool: SessionPool,
    strides: Vec<u32>,
    score_threshold: f32,
    nms_iou: f32,
    model_min_face: f32,
    config: DetectionConfig,
    /// Input tensors kept between calls: a 640×640 input is 4.9 MB, and a fresh allocation per photo costs its
    /// page faults every time. At most one per concurrent inference is ever held.
    buffers: Mutex<Vec<Vec<f32>>>,
}

/// A region of the scaled photo that goes through the model once.
#[derive(Debug, Clone, Copy)]
struct Tile {
    /// Offset of the tile in the scaled photo.
    x: u32,
    y: u32,
    /// Model input size for this tile.
    width: u32,
    height: u32,
}

impl Detector {
    pub fn new(runtime: &Runtime, manifest: ModelManifest, config: DetectionConfig) -> Result<Detector, DetectorLoadError> {
        manifest.expect_task(ModelTask::Detector)?;
        let path = manifest.verify_file()?;
        let pool = runtime.session_pool(&path)?;
        manifest.check_signature(&pool.signature())?;
        let spec = manifest.detector.clone().ok_or_else(|| ManifestError::WrongTask {
            id: manifest.id.clone(),
            expected: "detector",
            actual: "recognizer",
        })?;
        Ok(Detector {
            strides: spec.strides.clone(),
            score_threshold: config.score_threshold.unwrap_or(spec.score_threshold),
            nms_iou: config.nms_iou.unwrap_or(spec.nms_iou),
            model_min_face: spec.min_face_px,
            manifest,
            pool,
            config,
            buffers: Mutex::new(Vec::new()),
        })
    }

    pub fn manifest(&self) -> &ModelManifest {
        &self.manifest
    }

    pub fn config(&self) -> &DetectionConfig {
        &self.config
    }

    /// All faces in the photo, best score first, with the configured smallest face size.
    pub fn detect(&self, photo: &RgbImage) -> Result<Vec<Detection>, DetectError> {
        self.detect_with(photo, self.config.min_face_px)
    }

    /// All faces in the photo down to `min_face_px` (0: whole-photo pass only), best score first.
    pub fn detect_with(&self, photo: &RgbImage, min_face_px: f32) -> Result<Vec<Detection>, DetectError> {
        let mut found = Vec::new();
        let mut finest = 0f32;
        for (scale, tiles) in self.plan(photo.width(), photo.height(), min_face_px) {
            finest = finest.max(scale);
            let scaled = Rescaled::new(photo, scale);
            for tile in tiles {
                self.detect_tile(&scaled, tile, &mut found)?;
            }
        }
        let mut faces = suppress(found, self.nms_iou);
        let mut refined = false;
        for face in faces.iter_mut().take(self.config.max_refinements) {
            let Some(scale) = refinement_scale(face.bbox.width, finest, &self.config) else { continue };
            if let Some(better) = self.look_again(photo, face, scale)? {
                *face = better;
                refined = true;
            }
        }
        // A second look changes scores and boxes: order and overlaps are settled again.
        Ok(if refined { suppress(faces, self.nms_iou) } else { faces })
    }
}

/// Faces at least this share of the largest face's box area compete to be a photo's subject.
const SUBJECT_MIN_AREA_SHARE: f32 = 0.5;

/// Which of a photo's faces is its subject: among faces whose box is at least half as large as the largest, the
/// one whose box centre is nearest the photo's centre. A portrait frames its subject in the middle, while a
/// bystander at the edge can be as large or larger (LFW's photos are framed on their labelled person; on lfw-dev
/// this choice instead of the largest face lowers FNIR and raises rank-1: research/README.md).
pub fn subject_index<'a>(boxes: impl IntoIterator<Item = &'a BoundingBox>, width: u32, height: u32) -> Option<usize> {
    let boxes: Vec<&BoundingBox> = boxes.into_iter().collect();
    let largest = boxes.iter().map(|b| b.area()).fold(0.0f32, f32::max);
    let (cx, cy) = (width as f32 / 2.0, height as f32 / 2.0);
    let off_centre = |b: &BoundingBox| (b.x + b.width / 2.0 - cx).powi(2) + (b.y + b.height / 2.0 - cy).powi(2);
    boxes
        .iter()
        .enumerate()
        .filter(|(_, b)| b.area() >= SUBJECT_MIN_AREA_SHARE * largest)
        .min_by(|(_, a), (_, b)| off_centre(a).total_cmp(&off_centre(b)))
        .map(|(i, _)| i)
}

/// Greedy non-maximum suppression; returns survivors best first.
pub fn suppress(mut detections: Vec<Detection>, iou: f32) -> Vec<Detection> {
    detections.sort_by(|a, b| b.score.total_cmp(&a.score));
    let mut kept: Vec<Detection> = Vec::with_capacity(detections.len().min(64));
    for d in detections {
        if kept.iter().all(|k| k.bbox.iou(&d.bbox) <= iou) {
            kept.push(d);
        }
    }
    kept
}

#[derive(Debug, thiserror::Error)]
pub enum DetectorLoadError {
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn det(x: f32, y: f32, w: f32, score: f32) -> Detection {
        Detection {
            bbox: BoundingBox { x, y, width: w, height: w },
            landmarks: Landmarks { points: [[0.0; 2]; 5] },
            score,
        }
    }

    #[test]
    fn the_subject_is_the_most_central_of_the_large_faces() {
        let boxes = |ds: &[Detection]| ds.iter().map(|d| d.bbox).collect::<Vec<_>>();
        // 250x250 photo, centre (125, 125). A bystander at the edge is the largest face (100 px); a central face
        // of 80 px (64 % of its area) is the subject.
        let faces = [det(0.0, 0.0, 100.0, 0.9), det(85.0, 85.0, 80.0, 0.8)];
        assert_eq!(subject_index(&boxes(&faces), 250, 250), Some(1));
        // At 70 px (49 % of the largest's area) the central face no longer competes: the largest wins.
        let faces = [det(0.0, 0.0, 100.0, 0.9), det(90.0, 90.0, 70.0, 0.8)];
        assert_eq!(subject_index(&boxes(&faces), 250, 250), Some(0));
        // Equal faces: the nearer centre wins, whichever order they come in.
        let faces = [det(100.0, 100.0, 50.0, 0.7), det(130.0, 130.0, 50.0, 0.9)];
        assert_eq!(subject_index(&boxes(&faces), 250, 250), Some(0));
        assert_eq!(subject_index(&boxes(&[faces[1], faces[0]]), 250, 250), Some(1));
        assert_eq!(subject_index(&boxes(&[]), 250, 250), None);
        assert_eq!(subject_index(&boxes(&faces[..1]), 250, 250), Some(0));
    }

    #[test]
    fn a_shifted_detection_moves_its_box_and_every_landmark() {
        let d = det(10.0, 20.0, 30.0, 0.9).shifted([5.0, -2.0]);
        assert_eq!((d.bbox.x, d.bbox.y, d.bbox.width, d.bbox.height), (15.0, 18.0, 30.0, 30.0));
        assert!(d.landmarks.points.iter().all(|p| *p == [5.0, -2.0]));
    }

    #[test]
    fn iou_of_known_boxes() {
        let a = BoundingBox { x: 0.0, y: 0.0, width: 10.0, height: 10.0 };
        let b = BoundingBox { x: 5.0, y: 0.0, width: 10.0, height: 10.0 };
        assert!((a.iou(&b) - 50.0 / 150.0).abs() < 1e-6);
        let far = BoundingBox { x: 50.0, y: 50.0, width: 1.0, height: 1.0 };
        assert_eq!(a.iou(&far), 0.0);
        assert!((a.iou(&a) - 1.0).abs() < 1e-6);
    }

    #[test]
    fn nms_keeps_the_best_of_overlapping_boxes_and_sorts() {
        let out = suppress(vec![det(0.0, 0.0, 10.0, 0.7), det(1.0, 0.0, 10.0, 0.9), det(100.0, 0.0, 10.0, 0.8)], 0.3);
        let scores: Vec<f32> = out.iter().map(|d| d.score).collect();
        assert_eq!(scores, vec![0.9, 0.8]);
    }
}
