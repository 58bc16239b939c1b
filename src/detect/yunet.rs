//! Running YuNet on one tile: the input tensor in the model's colour order and normalisation, the inference, and the
//! decoding of its anchor-free heads into detections in photo pixels.

use ort::value::TensorRef;

use super::rescale::Rescaled;
use super::{BoundingBox, DetectError, Detection, Detector, Landmarks, Tile};
use crate::manifest::ColourOrder;

impl Detector {
    pub(super) fn detect_tile(
        &self,
        scaled: &Rescaled<'_>,
        tile: Tile,
        found: &mut Vec<Detection>,
    ) -> Result<(), DetectError> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
