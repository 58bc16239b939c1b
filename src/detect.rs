//! Face detection with YuNet: scaling any photo into the face sizes the model was trained on, tiling for small
//! faces in large photos, decoding the anchor-free heads, and non-maximum suppression.
//!
//! Strategy (documented in the README): a *whole-photo pass* letterboxes the photo into the model input (shrinking
//! big photos, enlarging small ones at most `max_upscale`×), which finds faces whose size is 10–300 px at that
//! scale — every face of a checkpoint portrait. When the caller asks for faces down to `min_face_px` and the
//! whole-photo pass cannot see them, a *tiled pass* runs at the scale that makes such faces ~12 px, over
//! overlapping model-sized tiles. Its cost grows with the photo area: (W·s)·(H·s)/tile² inferences.

use image::RgbImage;
use ndarray::Array4;
use ort::value::TensorRef;
use serde::{Deserialize, Serialize};

use crate::manifest::{ColourOrder, ManifestError, ModelManifest, ModelTask};
use crate::runtime::{Runtime, RuntimeError, SessionPool};

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
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
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
    /// Largest enlargement of a small photo in the whole-photo pass (default 2).
    pub max_upscale: f32,
    /// Largest side of the model input for detectors with a dynamic input size (default 640).
    pub max_input_side: u32,
    /// Cap on tiles of one tiled pass, so a request cannot ask for unbounded work (default 64).
    pub max_tiles: usize,
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
        for (scale, tiles) in self.plan(photo.width(), photo.height(), min_face_px) {
            let scaled = Rescaled::new(photo, scale);
            for tile in tiles {
                self.detect_tile(&scaled, tile, &mut found)?;
            }
        }
        Ok(suppress(found, self.nms_iou))
    }

    /// The passes to run: (scale, tiles) pairs.
    fn plan(&self, width: u32, height: u32, min_face_px: f32) -> Vec<(f32, Vec<Tile>)> {
        let (max_w, max_h) = self.input_bounds();
        let fit = (max_w as f32 / width as f32).min(max_h as f32 / height as f32).min(self.config.max_upscale.max(1.0));
        let mut passes = vec![(fit, self.tiles_for(width, height, fit, 0))];
        if min_face_px > 0.0 && min_face_px * fit < self.model_min_face {
            // Make the smallest requested face ~1.2× the smallest trained size; never enlarge beyond max_upscale.
            let fine = (self.model_min_face * 1.2 / min_face_px).min(self.config.max_upscale.max(1.0));
            if fine > fit * 1.05 {
                // Faces the coarse pass misses are below model_min_face/fit photo pixels; tiles must overlap by at
                // least that (at the fine scale) so none is cut in every tile that holds it.
                let overlap = (1.5 * self.model_min_face * fine / fit).ceil() as u32;
                passes.push((fine, self.tiles_for(width, height, fine, overlap)));
            }
        }
        passes
    }

    /// Model input bounds: the fixed size, or the configured cap for dynamic models.
    fn input_bounds(&self) -> (u32, u32) {
        match self.manifest.input.fixed_size() {
            Some((h, w)) => (w, h),
            None => (self.config.max_input_side, self.config.max_input_side),
        }
    }

    fn tiles_for(&self, width: u32, height: u32, scale: f32, overlap: u32) -> Vec<Tile> {
        let (max_w, max_h) = self.input_bounds();
        let fixed = self.manifest.input.fixed_size().is_some();
        let sw = ((width as f32 * scale).round() as u32).max(1);
        let sh = ((height as f32 * scale).round() as u32).max(1);
        let starts = |extent: u32, tile: u32| -> Vec<u32> {
            if extent <= tile {
                return vec![0];
            }
            let step = tile.saturating_sub(overlap).max(tile / 2).max(1);
            let mut v: Vec<u32> = (0..).map(|i| i * step).take_while(|s| s + tile < extent).collect();
            v.push(extent - tile);
            v
        };
        let xs = starts(sw, max_w);
        let ys = starts(sh, max_h);
        let mut tiles = Vec::new();
        for &y in &ys {
            for &x in &xs {
                let (w, h) = if fixed {
                    (max_w, max_h)
                } else {
                    (round_up(sw.min(max_w), 32), round_up(sh.min(max_h), 32))
                };
                tiles.push(Tile { x, y, width: w, height: h });
            }
        }
        tiles.truncate(self.config.max_tiles.max(1));
        tiles
    }

    fn detect_tile(&self, scaled: &Rescaled<'_>, tile: Tile, found: &mut Vec<Detection>) -> Result<(), DetectError> {
        let input = self.input_tensor(scaled, tile);
        let id = &self.manifest.id;
        let inference = |source| DetectError::Inference { id: id.clone(), source };
        self.pool.with_session(|session| {
            let tensor = TensorRef::from_array_view(input.view()).map_err(inference)?;
            let outputs = session.run(ort::inputs![self.manifest.input.name.as_str() => tensor]).map_err(inference)?;
            for &stride in &self.strides {
                let cols = (tile.width / stride) as usize;
                let rows = (tile.height / stride) as usize;
                let n = rows * cols;
                let head = |name: String, per: usize| -> Result<&[f32], DetectError> {
                    let value = outputs.get(&name).ok_or_else(|| DetectError::BadOutput {
                        id: id.clone(),
                        name: name.clone(),
                        len: 0,
                        expected: n * per,
                    })?;
                    let (_, data) = value.try_extract_tensor::<f32>().map_err(inference)?;
                    if data.len() != n * per {
                        return Err(DetectError::BadOutput { id: id.clone(), name, len: data.len(), expected: n * per });
                    }
                    Ok(data)
                };
                let cls = head(format!("cls_{stride}"), 1)?;
                let obj = head(format!("obj_{stride}"), 1)?;
                let bbox = head(format!("bbox_{stride}"), 4)?;
                let kps = head(format!("kps_{stride}"), 10)?;
                decode_stride(
                    StrideHeads { stride, cols, cls, obj, bbox, kps },
                    self.score_threshold,
                    |p| scaled.to_photo([p[0] + tile.x as f32, p[1] + tile.y as f32]),
                    scaled.scale,
                    found,
                );
            }
            Ok(())
        })
    }

    /// NCHW float tensor of one tile in the model's colour order and normalisation, zero-padded.
    fn input_tensor(&self, scaled: &Rescaled<'_>, tile: Tile) -> Array4<f32> {
        let spec = &self.manifest.input;
        let (w, h) = (tile.width as usize, tile.height as usize);
        let mut tensor = Array4::<f32>::zeros((1, 3, h, w));
        let channel_of = |c: usize| match spec.colour {
            ColourOrder::Rgb => c,
            ColourOrder::Bgr => 2 - c,
        };
        let plane = h * w;
        let buf = tensor.as_slice_mut().expect("fresh array is contiguous");
        let valid_w = (scaled.width.saturating_sub(tile.x)).min(tile.width) as usize;
        let valid_h = (scaled.height.saturating_sub(tile.y)).min(tile.height) as usize;
        let mut px = [0f32; 3];
        for v in 0..valid_h {
            for u in 0..valid_w {
                scaled.sample(tile.x as usize + u, tile.y as usize + v, &mut px);
                let o = v * w + u;
                for (c, value) in px.iter().enumerate() {
                    let k = channel_of(c);
                    buf[k * plane + o] = (value - spec.mean[k]) / spec.std[k];
                }
            }
        }
        // Padding must hold the normalised value of black, which is not 0 when mean ≠ 0.
        if spec.mean.iter().any(|m| *m != 0.0) {
            for k in 0..3 {
                let pad = -spec.mean[k] / spec.std[k];
                for v in 0..h {
                    for u in 0..w {
                        if v >= valid_h || u >= valid_w {
                            buf[k * plane + v * w + u] = pad;
                        }
                    }
                }
            }
        }
        tensor
    }
}

fn round_up(v: u32, m: u32) -> u32 {
    v.div_ceil(m).max(1) * m
}

/// The photo seen at a scale. Large reductions first average integer blocks (so shrinking a 4000-px photo to 640
/// does not alias), then sample bilinearly with OpenCV's half-pixel convention.
struct Rescaled<'a> {
    source: std::borrow::Cow<'a, RgbImage>,
    /// Scale from photo to this view.
    scale: f32,
    /// Scale from `source` to this view (differs from `scale` after block averaging).
    sample_scale: f32,
    width: u32,
    height: u32,
}

impl<'a> Rescaled<'a> {
    fn new(photo: &'a RgbImage, scale: f32) -> Rescaled<'a> {
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

    fn sample(&self, u: usize, v: usize, out: &mut [f32; 3]) {
        let src = &self.source;
        let (sw, sh) = (src.width() as i64, src.height() as i64);
        let sx = ((u as f32 + 0.5) / self.sample_scale - 0.5).max(0.0);
        let sy = ((v as f32 + 0.5) / self.sample_scale - 0.5).max(0.0);
        let (x0, y0) = (sx.floor() as i64, sy.floor() as i64);
        let (fx, fy) = (sx - x0 as f32, sy - y0 as f32);
        let x0 = x0.min(sw - 1);
        let y0 = y0.min(sh - 1);
        let x1 = (x0 + 1).min(sw - 1);
        let y1 = (y0 + 1).min(sh - 1);
        let raw = src.as_raw();
        let stride = sw as usize * 3;
        let at = |x: i64, y: i64, c: usize| raw[y as usize * stride + x as usize * 3 + c] as f32;
        for (c, o) in out.iter_mut().enumerate() {
            let top = at(x0, y0, c) + (at(x1, y0, c) - at(x0, y0, c)) * fx;
            let bottom = at(x0, y1, c) + (at(x1, y1, c) - at(x0, y1, c)) * fx;
            *o = top + (bottom - top) * fy;
        }
    }

    /// Maps a point of this view back to photo pixels.
    fn to_photo(&self, p: [f32; 2]) -> [f32; 2] {
        [p[0] / self.scale, p[1] / self.scale]
    }
}

fn block_average(photo: &RgbImage, block: u32) -> RgbImage {
    let w = (photo.width() / block).max(1);
    let h = (photo.height() / block).max(1);
    let mut out = RgbImage::new(w, h);
    let raw = photo.as_raw();
    let stride = photo.width() as usize * 3;
    let n = (block * block) as u32;
    for y in 0..h {
        for x in 0..w {
            let mut acc = [0u32; 3];
            for dy in 0..block {
                let row = ((y * block + dy).min(photo.height() - 1)) as usize * stride;
                for dx in 0..block {
                    let i = row + ((x * block + dx).min(photo.width() - 1)) as usize * 3;
                    acc[0] += raw[i] as u32;
                    acc[1] += raw[i + 1] as u32;
                    acc[2] += raw[i + 2] as u32;
                }
            }
            out.put_pixel(x, y, image::Rgb([(acc[0] / n) as u8, (acc[1] / n) as u8, (acc[2] / n) as u8]));
        }
    }
    out
}

/// The four heads of one stride.
struct StrideHeads<'a> {
    stride: u32,
    cols: usize,
    cls: &'a [f32],
    obj: &'a [f32],
    bbox: &'a [f32],
    kps: &'a [f32],
}

/// Decodes one stride's anchors (one per cell, row-major) into detections above `threshold`, mapping points with
/// `to_photo`. Score = sqrt(clamp(cls)·clamp(obj)); centre = (col + dx, row + dy)·s; size = exp(dw, dh)·s.
fn decode_stride(
    heads: StrideHeads<'_>,
    threshold: f32,
    to_photo: impl Fn([f32; 2]) -> [f32; 2],
    scale: f32,
    out: &mut Vec<Detection>,
) {
    let s = heads.stride as f32;
    for i in 0..heads.cls.len() {
        let score = (heads.cls[i].clamp(0.0, 1.0) * heads.obj[i].clamp(0.0, 1.0)).sqrt();
        if score < threshold || !score.is_finite() {
            continue;
        }
        let (row, col) = ((i / heads.cols) as f32, (i % heads.cols) as f32);
        let b = &heads.bbox[i * 4..i * 4 + 4];
        let (cx, cy) = ((col + b[0]) * s, (row + b[1]) * s);
        let (w, h) = (b[2].exp() * s, b[3].exp() * s);
        if !(w.is_finite() && h.is_finite()) {
            continue;
        }
        let top_left = to_photo([cx - w / 2.0, cy - h / 2.0]);
        let k = &heads.kps[i * 10..i * 10 + 10];
        let mut points = [[0f32; 2]; 5];
        for (j, p) in points.iter_mut().enumerate() {
            *p = to_photo([(col + k[2 * j]) * s, (row + k[2 * j + 1]) * s]);
        }
        out.push(Detection {
            bbox: BoundingBox { x: top_left[0], y: top_left[1], width: w / scale, height: h / scale },
            landmarks: Landmarks { points },
            score,
        });
    }
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

    #[test]
    fn decoding_follows_the_anchor_formulas() {
        // One 2x2 grid at stride 8; only cell (row 1, col 0) is a face.
        let cls = [0.0, 0.0, 0.81, 0.0];
        let obj = [0.0, 0.0, 1.0, 0.0];
        let mut bbox = [0f32; 16];
        bbox[8..12].copy_from_slice(&[0.5, 0.25, 2f32.ln(), 0.0]);
        let mut kps = [0f32; 40];
        kps[20..30].copy_from_slice(&[0.1, 0.2, 0.9, 0.2, 0.5, 0.5, 0.2, 0.8, 0.8, 0.8]);
        let mut out = Vec::new();
        let heads = StrideHeads { stride: 8, cols: 2, cls: &cls, obj: &obj, bbox: &bbox, kps: &kps };
        decode_stride(heads, 0.5, |p| [p[0] / 2.0, p[1] / 2.0], 2.0, &mut out);
        assert_eq!(out.len(), 1);
        let d = out[0];
        assert!((d.score - 0.9).abs() < 1e-6);
        // centre (0.5·8, 1.25·8) = (4, 10); size (16, 8); top-left (-4, 6); halved back to the photo.
        assert_eq!(d.bbox, BoundingBox { x: -2.0, y: 3.0, width: 8.0, height: 4.0 });
        assert!((d.landmarks.points[0][0] - 0.4).abs() < 1e-6 && (d.landmarks.points[0][1] - 4.8).abs() < 1e-6);
    }

    #[test]
    fn block_average_halves_and_means() {
        let img = RgbImage::from_fn(4, 2, |x, _| image::Rgb([(x * 10) as u8, 0, 255]));
        let out = block_average(&img, 2);
        assert_eq!(out.dimensions(), (2, 1));
        assert_eq!(out.get_pixel(0, 0).0, [5, 0, 255]);
        assert_eq!(out.get_pixel(1, 0).0, [25, 0, 255]);
    }
}
