//! Where the detector looks in a photo: the whole-photo pass and, for small faces, the tiled pass, each at its
//! scale; and the second look at a face that the finest pass saw small.

use image::RgbImage;

use super::rescale::Rescaled;
use super::{suppress, DetectError, Detection, DetectionConfig, Detector, Tile};

impl Detector {
    /// Detects `face` again in a crop of twice its box's width and height around it, seen at `scale`; the detection
    /// there that overlaps it most (IoU above the NMS threshold), in photo pixels, or `None` when that look finds
    /// nothing there.
    pub(super) fn look_again(
        &self,
        photo: &RgbImage,
        face: &Detection,
        scale: f32,
    ) -> Result<Option<Detection>, DetectError> {
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
    pub(super) fn plan(&self, width: u32, height: u32, min_face_px: f32) -> Vec<(f32, Vec<Tile>)> {
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
}

fn round_up(v: u32, m: u32) -> u32 {
    v.div_ceil(m).max(1) * m
}

/// A second look must see the face at least this many times larger than the finest pass did; below that the
/// landmarks barely move and the inference is wasted (a 250 px portrait enlarged 2× is never looked at again).
const REFINE_MIN_GAIN: f32 = 1.5;

/// The scale at which to look again at a face `width` photo pixels wide that the finest pass saw at `finest`: the
/// one that makes it `refine_face_px` wide, capped at `max_upscale`; `None` when refinement is off or would not
/// enlarge the face `REFINE_MIN_GAIN` times.
pub(super) fn refinement_scale(width: f32, finest: f32, config: &DetectionConfig) -> Option<f32> {
    if config.refine_face_px <= 0.0 || !width.is_finite() || width <= 0.0 {
        return None;
    }
    let scale = (config.refine_face_px / width).min(config.max_upscale.max(1.0));
    (scale >= REFINE_MIN_GAIN * finest).then_some(scale)
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
