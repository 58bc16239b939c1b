//! Face detection with YuNet: scaling any photo into the face sizes the model was trained on, tiling for small
//! faces in large photos, decoding the anchor-free heads, and non-maximum suppression.
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

use image::RgbImage;
use ort::value::TensorRef;
use parking_lot::Mutex;
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
    /// session 7). A 250 px portrait enlarged 2× is never refined: its face is already about 200 px.
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

    /// Detects `face` again in a crop of twice its box's width and height around it, seen at `scale`; the detection
    /// there that overlaps it most (IoU above the NMS threshold), in photo pixels, or `None` when that look finds
    /// nothing there.
    fn look_again(&self, photo: &RgbImage, face: &Detection, scale: f32) -> Result<Option<Detection>, DetectError> {
        let b = &face.bbox;
        let (max_w, max_h) = self.input_bounds();
        let (crop_w, crop_h) = (2.0 * b.width, 2.0 * b.height);
        // The crop must fit the model input at this scale; a fixed-size model gets it letterboxed.
        let scale = scale.min(max_w as f32 / crop_w).min(max_h as f32 / crop_h);
        let (cx, cy) = (b.x + b.width / 2.0, b.y + b.height / 2.0);
        let x0 = (cx - crop_w / 2.0).floor().clamp(0.0, photo.width() as f32 - 1.0) as u32;
        let y0 = (cy - crop_h / 2.0).floor().clamp(0.0, photo.height() as f32 - 1.0) as u32;
        let w = (crop_w.ceil() as u32).min(photo.width() - x0).max(1);
        let h = (crop_h.ceil() as u32).min(photo.height() - y0).max(1);
        let crop = image::imageops::crop_imm(photo, x0, y0, w, h).to_image();
        let scaled = Rescaled::new(&crop, scale);
        let tile = match self.manifest.input.fixed_size() {
            Some((th, tw)) => Tile { x: 0, y: 0, width: tw, height: th },
            None => Tile { x: 0, y: 0, width: round_up(scaled.width, 32), height: round_up(scaled.height, 32) },
        };
        let mut found = Vec::new();
        self.detect_tile(&scaled, tile, &mut found)?;
        let offset = [x0 as f32, y0 as f32];
        // Raw anchors overlap each other; only the survivors of suppression are detections.
        let best = suppress(found, self.nms_iou)
            .into_iter()
            .map(|d| d.shifted(offset))
            .map(|d| (d.bbox.iou(b), d))
            .filter(|(iou, _)| *iou > self.nms_iou)
            .max_by(|(a, _), (b, _)| a.total_cmp(b));
        Ok(best.map(|(_, d)| d))
    }

    /// The passes to run: (scale, tiles) pairs.
    fn plan(&self, width: u32, height: u32, min_face_px: f32) -> Vec<(f32, Vec<Tile>)> {
        let (max_w, max_h) = self.input_bounds();
        let upscale = self.config.max_upscale.max(1.0);
        let fit = (max_w as f32 / width as f32).min(max_h as f32 / height as f32).min(upscale);
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
        let mut input = self.buffers.lock().pop().unwrap_or_default();
        self.fill_input(scaled, tile, &mut input);
        let result = self.run_tile(scaled, tile, &input, found);
        self.buffers.lock().push(input);
        result
    }

    fn run_tile(
        &self,
        scaled: &Rescaled<'_>,
        tile: Tile,
        input: &[f32],
        found: &mut Vec<Detection>,
    ) -> Result<(), DetectError> {
        let id = &self.manifest.id;
        let inference = |source| DetectError::Inference { id: id.clone(), source };
        let shape = [1usize, 3, tile.height as usize, tile.width as usize];
        self.pool.with_session(|session| {
            let tensor = TensorRef::from_array_view((shape, input)).map_err(inference)?;
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

    /// Writes one tile as an NCHW float tensor in the model's colour order and normalisation into `buf`, padded
    /// right and bottom with black. Every element is written, so a reused buffer needs no clearing.
    fn fill_input(&self, scaled: &Rescaled<'_>, tile: Tile, buf: &mut Vec<f32>) {
        let spec = &self.manifest.input;
        let (w, h) = (tile.width as usize, tile.height as usize);
        let plane = h * w;
        buf.resize(3 * plane, 0.0);
        let buf = &mut buf[..3 * plane];
        let valid_w = (scaled.width.saturating_sub(tile.x)).min(tile.width) as usize;
        let valid_h = (scaled.height.saturating_sub(tile.y)).min(tile.height) as usize;
        // Tensor plane of each RGB channel, its normalisation, and the normalised value of black for the padding.
        let plane_of = |c: usize| match spec.colour {
            ColourOrder::Rgb => c,
            ColourOrder::Bgr => 2 - c,
        };
        let gain = spec.std.map(|s| 1.0 / s);
        let pad = [0, 1, 2].map(|k| -spec.mean[k] * gain[k]);
        let mut row = vec![0f32; valid_w * 3];
        let mut sampler = scaled.row_sampler(tile.x as usize, valid_w);
        for v in 0..h {
            if v < valid_h {
                sampler.sample_row(tile.y as usize + v, &mut row);
            }
            for c in 0..3 {
                let k = plane_of(c);
                let out = &mut buf[k * plane + v * w..k * plane + (v + 1) * w];
                if v < valid_h {
                    for (o, px) in out[..valid_w].iter_mut().zip(row.chunks_exact(3)) {
                        *o = (px[c] - spec.mean[k]) * gain[k];
                    }
                    out[valid_w..].fill(pad[k]);
                } else {
                    out.fill(pad[k]);
                }
            }
        }
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

    /// A bilinear sampler for the columns `x0..x0 + width` of this view (OpenCV's half-pixel convention, edges
    /// clamped). The view is resized separably: each source row is interpolated horizontally once and kept while
    /// consecutive output rows need it, which an enlargement does for most rows.
    fn row_sampler(&self, x0: usize, width: usize) -> RowSampler<'_> {
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
    fn to_photo(&self, p: [f32; 2]) -> [f32; 2] {
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
struct RowSampler<'a> {
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
    fn sample_row(&mut self, v: usize, out: &mut [f32]) {
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

/// A second look must see the face at least this many times larger than the finest pass did; below that the
/// landmarks barely move and the inference is wasted (a 250 px portrait enlarged 2× is never looked at again).
const REFINE_MIN_GAIN: f32 = 1.5;

/// The scale at which to look again at a face `width` photo pixels wide that the finest pass saw at `finest`: the
/// one that makes it `refine_face_px` wide, capped at `max_upscale`; `None` when refinement is off or would not
/// enlarge the face `REFINE_MIN_GAIN` times.
fn refinement_scale(width: f32, finest: f32, config: &DetectionConfig) -> Option<f32> {
    if config.refine_face_px <= 0.0 || !width.is_finite() || width <= 0.0 {
        return None;
    }
    let scale = (config.refine_face_px / width).min(config.max_upscale.max(1.0));
    (scale >= REFINE_MIN_GAIN * finest).then_some(scale)
}

/// Faces at least this share of the largest face's box area compete to be a photo's subject.
const SUBJECT_MIN_AREA_SHARE: f32 = 0.5;

/// Which of a photo's faces is its subject: among faces whose box is at least half as large as the largest, the
/// one whose box centre is nearest the photo's centre. A portrait frames its subject in the middle, while a
/// bystander at the edge can be as large or larger (LFW's photos are framed on their labelled person; on lfw-dev
/// this choice instead of the largest face lowers FNIR and raises rank-1: docs/benchmarks.md, issue 5).
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
    fn a_face_is_looked_at_again_only_when_the_second_look_enlarges_it_enough() {
        let config = DetectionConfig::default();
        // A 250 px portrait enlarged 2x: its 100 px face was seen at 200 px already.
        assert_eq!(refinement_scale(100.0, 2.0, &config), None);
        // A 1000 px frame shrunk to 640: the same face seen at 64 px is looked at again at 192 px.
        assert_eq!(refinement_scale(100.0, 0.64, &config), Some(1.92));
        // Never beyond max_upscale of the photo's own pixels: a 40 px face is looked at 2x, not 4.8x.
        assert_eq!(refinement_scale(40.0, 0.32, &config), Some(2.0));
        // Exactly the minimum gain still counts; just below it does not.
        assert_eq!(refinement_scale(256.0, 0.5, &config), Some(0.75));
        assert_eq!(refinement_scale(257.0, 0.5, &config), None);
        let off = DetectionConfig { refine_face_px: 0.0, ..DetectionConfig::default() };
        assert_eq!(refinement_scale(100.0, 0.64, &off), None);
        assert_eq!(refinement_scale(0.0, 0.64, &config), None);
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
