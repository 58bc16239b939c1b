//! Evaluation figures: DET, score histograms, CMC, recall-vs-QPS and latency histograms, written as SVG or
//! PNG (chosen by the file extension) with plotters.
//!
//! Text (titles, tick labels, legends) needs a system font found through fontconfig (plotters' `ttf`
//! feature). On a machine without fonts the figure is drawn without any text rather than failing, and the
//! returned [`Figure`] says so (`labels_rendered == false`). Non-finite values are not drawn.

use std::path::Path;

use plotters::coord::{CoordTranslate, Shift};
use plotters::prelude::*;

use super::metrics::DetPoint;
use super::report::{Figure, ReportError};

/// Pixel size of every figure (SVG user units or PNG pixels).
const FIGURE_SIZE: (u32, u32) = (960, 640);
const FONT: &str = "sans-serif";
/// Categorical palette (Tableau 10) so that series stay distinguishable in print and for most colour-blind
/// readers.
const PALETTE: [RGBColor; 10] = [
    RGBColor(78, 121, 167),
    RGBColor(242, 142, 43),
    RGBColor(225, 87, 89),
    RGBColor(118, 183, 178),
    RGBColor(89, 161, 79),
    RGBColor(237, 201, 72),
    RGBColor(176, 122, 161),
    RGBColor(255, 157, 167),
    RGBColor(156, 117, 95),
    RGBColor(186, 176, 172),
];
/// Histogram bin count for score and latency histograms.
const HISTOGRAM_BINS: usize = 50;
/// DET points closer than this in both log10 FPIR and log10 FNIR to the last drawn point are skipped, which
/// bounds a curve from millions of searches to a few thousand vertices without visible change.
const DET_MIN_LOG_STEP: f64 = 0.002;

fn colour(index: usize) -> RGBColor {
    PALETTE[index % PALETTE.len()]
}

/// One labelled DET curve (e.g. one model or one gallery size).
#[derive(Debug, Clone, PartialEq)]
pub struct DetSeries {
    pub label: String,
    pub points: Vec<DetPoint>,
}

/// One labelled CMC curve: `(rank, identification rate)` points.
#[derive(Debug, Clone, PartialEq)]
pub struct CmcSeries {
    pub label: String,
    pub points: Vec<(usize, f64)>,
}

/// One measured configuration of an approximate-nearest-neighbour index.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RecallQps {
    /// Fraction of the exact top-k found, in `[0, 1]`.
    pub recall: f64,
    /// Queries per second.
    pub qps: f64,
}

/// One labelled recall-vs-QPS curve (e.g. one index type swept over its search parameter).
#[derive(Debug, Clone, PartialEq)]
pub struct RecallQpsSeries {
    pub label: String,
    pub points: Vec<RecallQps>,
}

/// Everything a figure draws, independent of the backend it is drawn on.
trait Chart {
    fn draw<DB: DrawingBackend>(
        &self,
        area: &DrawingArea<DB, Shift>,
        labels: bool,
    ) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>>;
}

enum FigureFormat {
    Svg,
    Png,
}

fn figure_format(path: &Path) -> Result<FigureFormat, ReportError> {
    match path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        Some("svg") => Ok(FigureFormat::Svg),
        Some("png") => Ok(FigureFormat::Png),
        _ => Err(ReportError::UnsupportedFigureFormat {
            path: path.to_path_buf(),
        }),
    }
}

/// Whether plotters can load a font for text. Probing before drawing avoids a half-drawn first attempt, and
/// the font error type of the backend crate is not reachable through plotters' public API anyway.
fn font_available() -> bool {
    (FONT, 14.0).into_font().box_size("0").is_ok()
}

fn draw_on<DB: DrawingBackend, C: Chart>(
    backend: DB,
    chart: &C,
    labels: bool,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let area = backend.into_drawing_area();
    area.fill(&WHITE)?;
    chart.draw(&area, labels)?;
    area.present()
}

/// Draws `chart` to `path`, with text when a font is available and without otherwise.
fn render<C: Chart>(chart: &C, title: &str, path: &Path) -> Result<Figure, ReportError> {
    let format = figure_format(path)?;
    let labels_rendered = font_available();
    if !labels_rendered {
        tracing::warn!(path = %path.display(), "no usable system font; figure drawn without text");
    }
    let draw_error = |source: Box<dyn std::error::Error + Send + Sync>| ReportError::Draw {
        path: path.to_path_buf(),
        source,
    };
    match format {
        FigureFormat::Svg => {
            // Drawing into a string keeps a failed attempt out of the file system.
            let mut svg = String::new();
            draw_on(
                SVGBackend::with_string(&mut svg, FIGURE_SIZE),
                chart,
                labels_rendered,
            )
            .map_err(|e| draw_error(Box::new(e)))?;
            std::fs::write(path, svg).map_err(|source| ReportError::Io {
                path: path.to_path_buf(),
                source,
            })?;
        }
        FigureFormat::Png => {
            draw_on(BitMapBackend::new(path, FIGURE_SIZE), chart, labels_rendered)
                .map_err(|e| draw_error(Box::new(e)))?;
        }
    }
    Ok(Figure {
        caption: title.to_owned(),
        path: path.to_path_buf(),
        labels_rendered,
    })
}

/// Applies the shared frame: title and label areas only when text can be drawn.
fn frame<'a, 'b, DB: DrawingBackend>(
    area: &'a DrawingArea<DB, Shift>,
    title: &'b str,
    labels: bool,
) -> ChartBuilder<'a, 'b, DB> {
    let mut builder = ChartBuilder::on(area);
    builder.margin(18);
    if labels {
        builder
            .caption(title, (FONT, 24))
            .x_label_area_size(52)
            .y_label_area_size(76);
    }
    builder
}

/// Box around the plotting area, standing in for the axes when no text (hence no label area) can be drawn.
fn outline<DB: DrawingBackend, CT: CoordTranslate>(
    plot: &DrawingArea<DB, CT>,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let frame = plot.strip_coord_spec();
    let (width, height) = frame.dim_in_pixel();
    let corner = (width.saturating_sub(1) as i32, height.saturating_sub(1) as i32);
    frame.draw(&Rectangle::new([(0, 0), corner], BLACK.stroke_width(1)))
}

/// Tick label on a log axis: plain decimals down to 0.01, scientific notation below.
fn log_tick(value: &f64) -> String {
    if *value >= 0.01 {
        let text = format!("{value:.4}");
        text.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        format!("{value:.0e}")
    }
}

fn two_decimals(value: &f64) -> String {
    format!("{value:.2}")
}

/// Tick label for an axis that carries log10 of the value.
fn power_of_ten(exponent: &f64) -> String {
    let value = 10f64.powf(*exponent);
    if value >= 1.0 {
        format!("{value:.0}")
    } else {
        log_tick(&value)
    }
}

fn integer(value: &f64) -> String {
    format!("{value:.0}")
}

/// Largest power of ten at or below `value` (which must be positive), for log-axis lower bounds.
fn decade_floor(value: f64) -> f64 {
    10f64.powf(value.log10().floor())
}

/// Drops points that would sit on top of the previous drawn point on log-log axes.
fn thin_log_curve(points: &[(f64, f64)]) -> Vec<(f64, f64)> {
    let mut kept: Vec<(f64, f64)> = Vec::new();
    for (i, &(x, y)) in points.iter().enumerate() {
        let is_last = i + 1 == points.len();
        let far_enough = kept.last().is_none_or(|&(kx, ky)| {
            (x.log10() - kx.log10()).abs() >= DET_MIN_LOG_STEP
                || (y.log10() - ky.log10()).abs() >= DET_MIN_LOG_STEP
        });
        if far_enough || is_last {
            kept.push((x, y));
        }
    }
    kept
}

struct DetChart<'s> {
    title: &'s str,
    series: Vec<(String, Vec<(f64, f64)>)>,
}

impl Chart for DetChart<'_> {
    fn draw<DB: DrawingBackend>(
        &self,
        area: &DrawingArea<DB, Shift>,
        labels: bool,
    ) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
        let all = self.series.iter().flat_map(|(_, points)| points.iter());
        let (min_x, min_y) = all.fold((1.0f64, 1.0f64), |(mx, my), &(x, y)| (mx.min(x), my.min(y)));
        let x_range = (decade_floor(min_x).min(1e-3)..1.0).log_scale();
        let y_range = (decade_floor(min_y).min(1e-2)..1.0).log_scale();
        let mut chart = frame(area, self.title, labels).build_cartesian_2d(x_range, y_range)?;
        let mut mesh = chart.configure_mesh();
        if labels {
            mesh.x_desc("FPIR (false positive identification rate)")
                .y_desc("FNIR (false negative identification rate)")
                .x_label_formatter(&log_tick)
                .y_label_formatter(&log_tick);
        } else {
            mesh.x_labels(0).y_labels(0);
        }
        mesh.draw()?;
        if !labels {
            outline(chart.plotting_area())?;
        }
        for (index, (label, points)) in self.series.iter().enumerate() {
            let style = colour(index).stroke_width(2);
            let drawn = chart.draw_series(LineSeries::new(points.iter().copied(), style))?;
            if labels {
                drawn.label(label.as_str()).legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 24, y)], colour(index).stroke_width(2))
                });
            }
        }
        if labels {
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::UpperRight)
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .label_font((FONT, 14))
                .draw()?;
        }
        Ok(())
    }
}

/// DET curves for open-set identification: FPIR (log scale, x) against FNIR (log scale, y), one line per
/// series. Points with FPIR or FNIR of 0 cannot sit on log axes and are left out; dense curves are thinned
/// to points at least 0.002 decades apart.
pub fn plot_det(title: &str, series: &[DetSeries], path: &Path) -> Result<Figure, ReportError> {
    let series = series
        .iter()
        .map(|s| {
            let mut points: Vec<(f64, f64)> = s
                .points
                .iter()
                .filter(|p| p.fpir.is_finite() && p.fnir.is_finite() && p.fpir > 0.0 && p.fnir > 0.0)
                .map(|p| (p.fpir, p.fnir))
                .collect();
            points.sort_by(|a, b| a.0.total_cmp(&b.0).then(b.1.total_cmp(&a.1)));
            (s.label.clone(), thin_log_curve(&points))
        })
        .collect();
    render(&DetChart { title, series }, title, path)
}

/// Fractions of each sample in shared equal-width bins.
struct Binned {
    lower: f64,
    width: f64,
    fractions: Vec<f64>,
}

fn bin_fractions(values: &[f64], lower: f64, upper: f64) -> Binned {
    let width = (upper - lower) / HISTOGRAM_BINS as f64;
    let mut counts = vec![0usize; HISTOGRAM_BINS];
    for &v in values {
        // The top edge belongs to the last bin; values beyond `upper` (clipped tails) are collected there too.
        let bin = (((v - lower) / width).floor().max(0.0) as usize).min(HISTOGRAM_BINS - 1);
        counts[bin] += 1;
    }
    let total = values.len().max(1) as f64;
    Binned {
        lower,
        width,
        fractions: counts.iter().map(|&c| c as f64 / total).collect(),
    }
}

/// Value range for a histogram, widened when all values coincide so that bins have a width.
fn histogram_range(values: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    if !lo.is_finite() {
        return None;
    }
    Some(if hi > lo { (lo, hi) } else { (lo - 0.5, hi + 0.5) })
}

struct HistogramChart<'s> {
    title: &'s str,
    x_desc: &'s str,
    /// `(label, bins)` drawn in order, later ones on top.
    layers: Vec<(String, Binned)>,
    range: (f64, f64),
}

impl Chart for HistogramChart<'_> {
    fn draw<DB: DrawingBackend>(
        &self,
        area: &DrawingArea<DB, Shift>,
        labels: bool,
    ) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
        let top = self
            .layers
            .iter()
            .flat_map(|(_, b)| b.fractions.iter().copied())
            .fold(0.0f64, f64::max)
            .max(1e-3)
            * 1.1;
        let mut chart =
            frame(area, self.title, labels).build_cartesian_2d(self.range.0..self.range.1, 0.0..top)?;
        let mut mesh = chart.configure_mesh();
        if labels {
            mesh.light_line_style(WHITE)
                .x_desc(self.x_desc)
                .y_desc("fraction of samples per bin")
                .x_label_formatter(&two_decimals)
                .y_label_formatter(&two_decimals);
        } else {
            mesh.x_labels(0).y_labels(0);
        }
        mesh.draw()?;
        if !labels {
            outline(chart.plotting_area())?;
        }
        for (index, (label, binned)) in self.layers.iter().enumerate() {
            let fill = colour(index).mix(0.5).filled();
            let bars = binned.fractions.iter().enumerate().map(move |(bin, &fraction)| {
                let left = binned.lower + bin as f64 * binned.width;
                Rectangle::new([(left, 0.0), (left + binned.width, fraction)], fill)
            });
            let drawn = chart.draw_series(bars)?;
            if labels {
                drawn.label(label.as_str()).legend(move |(x, y)| {
                    Rectangle::new([(x, y - 6), (x + 18, y + 6)], colour(index).mix(0.5).filled())
                });
            }
        }
        if labels {
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::UpperLeft)
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .label_font((FONT, 14))
                .draw()?;
        }
        Ok(())
    }
}

/// Overlaid histograms of mated and non-mated scores over 50 shared bins; each distribution is normalised to
/// its own sample count (bars show fractions), so the typically far larger non-mated set does not flatten the
/// mated one. Fails with [`ReportError::NoData`] when neither sample has a finite score.
pub fn plot_score_histograms(
    title: &str,
    mated: &[f32],
    nonmated: &[f32],
    path: &Path,
) -> Result<Figure, ReportError> {
    let finite = |scores: &[f32]| -> Vec<f64> {
        scores
            .iter()
            .filter(|s| s.is_finite())
            .map(|&s| f64::from(s))
            .collect()
    };
    let (mated, nonmated) = (finite(mated), finite(nonmated));
    let range = histogram_range(mated.iter().chain(&nonmated).copied()).ok_or(ReportError::NoData {
        figure: "score histogram",
    })?;
    let mut layers = Vec::new();
    if !nonmated.is_empty() {
        layers.push((
            format!("non-mated (n = {})", nonmated.len()),
            bin_fractions(&nonmated, range.0, range.1),
        ));
    }
    if !mated.is_empty() {
        layers.push((
            format!("mated (n = {})", mated.len()),
            bin_fractions(&mated, range.0, range.1),
        ));
    }
    render(
        &HistogramChart {
            title,
            x_desc: "score",
            layers,
            range,
        },
        title,
        path,
    )
}

/// Latencies more than this many times the 99th percentile are folded into the last bin, so one stall does
/// not squeeze the whole distribution into a single bar.
const LATENCY_TAIL_FOLD: f64 = 4.0;

/// Histogram of request latencies in milliseconds (50 bins, fractions of requests). When the maximum exceeds
/// four times the 99th percentile (nearest rank), the axis ends at that percentile and slower requests are
/// counted in the last bin; the legend then says how many.
pub fn plot_latency_histogram(title: &str, latencies_ms: &[f64], path: &Path) -> Result<Figure, ReportError> {
    let mut sorted: Vec<f64> = latencies_ms.iter().copied().filter(|v| v.is_finite()).collect();
    sorted.sort_by(f64::total_cmp);
    let (lower, max) = histogram_range(sorted.iter().copied()).ok_or(ReportError::NoData {
        figure: "latency histogram",
    })?;
    let p99 = sorted[((sorted.len() * 99).div_ceil(100)).clamp(1, sorted.len()) - 1];
    let upper = if max > LATENCY_TAIL_FOLD * p99 && p99 > lower {
        p99
    } else {
        max
    };
    let folded = sorted.iter().filter(|&&v| v > upper).count();
    let label = if folded > 0 {
        format!(
            "requests (n = {}; {folded} slower than {upper:.1} ms, up to {max:.1} ms, in last bin)",
            sorted.len()
        )
    } else {
        format!("requests (n = {})", sorted.len())
    };
    let layers = vec![(label, bin_fractions(&sorted, lower, upper))];
    render(
        &HistogramChart {
            title,
            x_desc: "latency (ms)",
            layers,
            range: (lower, upper),
        },
        title,
        path,
    )
}

struct LineChart<'s> {
    title: &'s str,
    x_desc: &'s str,
    y_desc: &'s str,
    /// Points in axis units (already log10-transformed where the axis is logarithmic).
    series: Vec<(String, Vec<(f64, f64)>)>,
    x_range: (f64, f64),
    y_range: (f64, f64),
    x_format: fn(&f64) -> String,
    y_format: fn(&f64) -> String,
    /// Most y tick labels; decade axes set it so that ticks fall on whole decades.
    y_labels: usize,
}

impl Chart for LineChart<'_> {
    fn draw<DB: DrawingBackend>(
        &self,
        area: &DrawingArea<DB, Shift>,
        labels: bool,
    ) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
        let mut chart = frame(area, self.title, labels)
            .build_cartesian_2d(self.x_range.0..self.x_range.1, self.y_range.0..self.y_range.1)?;
        let mut mesh = chart.configure_mesh();
        if labels {
            mesh.light_line_style(WHITE)
                .y_labels(self.y_labels)
                .x_desc(self.x_desc)
                .y_desc(self.y_desc)
                .x_label_formatter(&self.x_format)
                .y_label_formatter(&self.y_format);
        } else {
            mesh.x_labels(0).y_labels(0);
        }
        mesh.draw()?;
        if !labels {
            outline(chart.plotting_area())?;
        }
        for (index, (label, points)) in self.series.iter().enumerate() {
            let style = colour(index).stroke_width(2);
            let drawn = chart.draw_series(LineSeries::new(points.iter().copied(), style))?;
            if labels {
                drawn.label(label.as_str()).legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 24, y)], colour(index).stroke_width(2))
                });
            }
            chart.draw_series(
                points
                    .iter()
                    .map(|&point| Circle::new(point, 3, colour(index).filled())),
            )?;
        }
        if labels {
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::LowerLeft)
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .label_font((FONT, 14))
                .draw()?;
        }
        Ok(())
    }
}

/// CMC curves: identification rate (y, 0–1) against rank (x, linear), one line with markers per series.
pub fn plot_cmc(title: &str, series: &[CmcSeries], path: &Path) -> Result<Figure, ReportError> {
    let series: Vec<(String, Vec<(f64, f64)>)> = series
        .iter()
        .map(|s| {
            let points = s
                .points
                .iter()
                .filter(|(_, rate)| rate.is_finite())
                .map(|&(rank, rate)| (rank as f64, rate))
                .collect();
            (s.label.clone(), points)
        })
        .collect();
    let max_rank = series
        .iter()
        .flat_map(|(_, p)| p.iter().map(|&(r, _)| r))
        .fold(1.0f64, f64::max);
    let chart = LineChart {
        title,
        x_desc: "rank",
        y_desc: "identification rate",
        series,
        x_range: (0.5, max_rank + 0.5),
        y_range: (0.0, 1.02),
        x_format: integer,
        y_format: two_decimals,
        y_labels: 11,
    };
    render(&chart, title, path)
}

/// Recall (x) against queries per second (y, log scale) for approximate-nearest-neighbour configurations, one
/// line per series with points in recall order (the ann-benchmarks layout). Points with non-positive QPS are
/// left out.
pub fn plot_recall_qps(title: &str, series: &[RecallQpsSeries], path: &Path) -> Result<Figure, ReportError> {
    let series: Vec<(String, Vec<(f64, f64)>)> = series
        .iter()
        .map(|s| {
            let mut points: Vec<(f64, f64)> = s
                .points
                .iter()
                .filter(|p| p.recall.is_finite() && p.qps.is_finite() && p.qps > 0.0)
                .map(|p| (p.recall, p.qps.log10()))
                .collect();
            points.sort_by(|a, b| a.0.total_cmp(&b.0));
            (s.label.clone(), points)
        })
        .collect();
    let all = || series.iter().flat_map(|(_, p)| p.iter().copied());
    let min_recall = all().map(|(r, _)| r).fold(1.0f64, f64::min);
    let (low, high) = all().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), (_, q)| {
        (lo.min(q), hi.max(q))
    });
    let (low, high) = if low.is_finite() {
        (low.floor(), high.ceil())
    } else {
        (0.0, 1.0)
    };
    // Whole decades at both ends, one tick per decade, so the labels read 100, 1000, 10000.
    let high = if high > low { high } else { low + 1.0 };
    let chart = LineChart {
        title,
        x_desc: "recall",
        y_desc: "queries per second",
        series,
        x_range: ((min_recall - 0.02).clamp(0.0, 0.98), 1.0),
        // The QPS axis is logarithmic: points carry log10(QPS) and the tick labels undo it.
        y_range: (low, high),
        x_format: two_decimals,
        y_format: power_of_ten,
        y_labels: (high - low) as usize + 1,
    };
    render(&chart, title, path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::metrics::{det_curve, SearchOutcome};

    const PNG_MAGIC: [u8; 8] = [0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a];

    /// Mated searches hit at rank 1 with scores spread over 0.4–1.0; non-mated scores over 0–0.6.
    fn outcomes(shift: f32) -> Vec<SearchOutcome> {
        let mut outcomes = Vec::new();
        for i in 0..200 {
            let score = 0.4 + shift + (i as f32 * 0.37).fract() * 0.6;
            let rank = if i % 10 == 0 { Some(3) } else { Some(1) };
            outcomes.push(SearchOutcome {
                mated: true,
                mate_rank: rank,
                decision_score: score,
                top_is_mate: rank == Some(1),
            });
        }
        for i in 0..1000 {
            let score = (i as f32 * 0.611).fract() * 0.6;
            outcomes.push(SearchOutcome {
                mated: false,
                mate_rank: None,
                decision_score: score,
                top_is_mate: false,
            });
        }
        outcomes
    }

    fn det_series() -> Vec<DetSeries> {
        [("model a", 0.0), ("model b", 0.1)]
            .iter()
            .map(|&(label, shift)| DetSeries {
                label: label.to_owned(),
                points: det_curve(&outcomes(shift)).expect("valid outcomes"),
            })
            .collect()
    }

    fn assert_valid_svg(path: &Path, expected_texts: &[&str]) {
        let text = std::fs::read_to_string(path).expect("svg written");
        assert!(text.trim_start().starts_with("<svg"), "svg root element");
        assert!(text.trim_end().ends_with("</svg>"), "svg closed");
        for expected in expected_texts {
            assert!(text.contains(expected), "svg mentions {expected}");
        }
    }

    fn assert_valid_png(path: &Path) {
        let bytes = std::fs::read(path).expect("png written");
        assert!(bytes.len() > 1000, "png has content: {} bytes", bytes.len());
        assert_eq!(bytes[..8], PNG_MAGIC);
        // IHDR width and height, big-endian, right after the chunk length and type.
        let width = u32::from_be_bytes([bytes[16], bytes[17], bytes[18], bytes[19]]);
        let height = u32::from_be_bytes([bytes[20], bytes[21], bytes[22], bytes[23]]);
        assert_eq!((width, height), FIGURE_SIZE);
    }

    /// Writes every figure kind as `<kind>.<extension>` into `dir`.
    fn write_all_figures(dir: &Path, extension: &str) -> Vec<Figure> {
        let mated: Vec<f32> = outcomes(0.0)
            .iter()
            .filter(|o| o.mated)
            .map(|o| o.decision_score)
            .collect();
        let nonmated: Vec<f32> = outcomes(0.0)
            .iter()
            .filter(|o| !o.mated)
            .map(|o| o.decision_score)
            .collect();
        let cmc = vec![CmcSeries {
            label: "model a".into(),
            points: vec![(1, 0.9), (2, 0.93), (5, 0.97), (10, 0.99)],
        }];
        let ann = vec![
            RecallQpsSeries {
                label: "hnsw ef sweep".into(),
                points: [(0.81, 52_000.0), (0.95, 21_000.0), (0.99, 8_000.0)]
                    .map(|(recall, qps)| RecallQps { recall, qps })
                    .to_vec(),
            },
            RecallQpsSeries {
                label: "exact scan".into(),
                points: vec![RecallQps {
                    recall: 1.0,
                    qps: 900.0,
                }],
            },
        ];
        // A long tail: one 900 ms stall among ~5 ms requests.
        let mut latencies: Vec<f64> = (0..500)
            .map(|i| 4.0 + (i as f64 * 0.013).sin().abs() * 3.0)
            .collect();
        latencies.push(900.0);
        let file = |name: &str| dir.join(format!("{name}.{extension}"));
        vec![
            plot_det("DET", &det_series(), &file("det")).expect("det drawn"),
            plot_score_histograms("Scores", &mated, &nonmated, &file("scores")).expect("histogram drawn"),
            plot_cmc("CMC", &cmc, &file("cmc")).expect("cmc drawn"),
            plot_recall_qps("Recall vs QPS", &ann, &file("ann")).expect("recall-qps drawn"),
            plot_latency_histogram("Latency", &latencies, &file("latency")).expect("latency drawn"),
        ]
    }

    #[test]
    fn svg_figures_are_written_with_labels() {
        let dir = tempfile::tempdir().expect("temp dir");
        let figures = write_all_figures(dir.path(), "svg");
        // A machine without fonts gets text-free figures (the font-less test below covers that path).
        if !font_available() {
            assert!(figures.iter().all(|f| !f.labels_rendered));
            return;
        }
        assert!(figures.iter().all(|f| f.labels_rendered));
        assert_valid_svg(
            &dir.path().join("det.svg"),
            &["DET", "model a", "model b", "FPIR"],
        );
        assert_valid_svg(
            &dir.path().join("scores.svg"),
            &["mated (n = 200)", "non-mated (n = 1000)"],
        );
        assert_valid_svg(&dir.path().join("cmc.svg"), &["CMC", "rank"]);
        assert_valid_svg(&dir.path().join("ann.svg"), &["hnsw ef sweep", "exact scan"]);
        assert_valid_svg(
            &dir.path().join("latency.svg"),
            &["slower than", "up to 900.0 ms, in last bin", "n = 501"],
        );
    }

    #[test]
    fn png_figures_are_written() {
        let dir = tempfile::tempdir().expect("temp dir");
        for figure in write_all_figures(dir.path(), "png") {
            assert_valid_png(&figure.path);
        }
    }

    #[test]
    fn bad_figure_requests_are_errors() {
        let dir = tempfile::tempdir().expect("temp dir");
        assert!(matches!(
            plot_det("DET", &det_series(), &dir.path().join("det.pdf")),
            Err(ReportError::UnsupportedFigureFormat { .. })
        ));
        assert!(matches!(
            plot_score_histograms("Scores", &[f32::NAN], &[], &dir.path().join("s.svg")),
            Err(ReportError::NoData { .. })
        ));
        assert!(matches!(
            plot_latency_histogram("Latency", &[], &dir.path().join("l.png")),
            Err(ReportError::NoData { .. })
        ));
    }

    #[test]
    fn det_thinning_keeps_ends_and_bounds_size() {
        let dense: Vec<(f64, f64)> = (1..=100_000)
            .map(|i| (i as f64 / 100_000.0, 1.0 - i as f64 / 200_000.0))
            .collect();
        let thin = thin_log_curve(&dense);
        assert!(thin.len() < 5000, "{} points", thin.len());
        assert_eq!(thin.first(), dense.first());
        assert_eq!(thin.last(), dense.last());
    }

    /// Environment variable naming the directory the font-less child run writes to.
    const FONTLESS_DIR: &str = "FACEMATCH_TEST_FONTLESS_DIR";

    #[test]
    fn figures_fall_back_to_no_text_without_fonts() {
        let dir = tempfile::tempdir().expect("temp dir");
        // A fontconfig configuration that lists no font directories: nothing can be found.
        let config = dir.path().join("fonts.conf");
        std::fs::write(&config, "<?xml version=\"1.0\"?>\n<fontconfig></fontconfig>\n").expect("write");
        let exe = std::env::current_exe().expect("test binary path");
        let module = module_path!()
            .split_once("::")
            .map_or(module_path!(), |(_, rest)| rest);
        let output = std::process::Command::new(exe)
            .args([
                "--exact",
                &format!("{module}::fontless_child"),
                "--ignored",
                "--test-threads=1",
            ])
            .env("FONTCONFIG_FILE", &config)
            .env(FONTLESS_DIR, dir.path())
            .output()
            .expect("child test runs");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "child failed: {stdout}");
        assert!(stdout.contains("1 passed"), "child ran: {stdout}");
        for name in ["det", "scores", "cmc", "ann", "latency"] {
            assert_valid_png(&dir.path().join(format!("{name}.png")));
            assert_valid_svg(&dir.path().join(format!("{name}.svg")), &[]);
        }
    }

    #[test]
    #[ignore = "run by figures_fall_back_to_no_text_without_fonts in an environment without fonts"]
    fn fontless_child() {
        let Some(dir) = std::env::var_os(FONTLESS_DIR) else {
            return;
        };
        let dir = Path::new(&dir);
        for extension in ["png", "svg"] {
            for figure in write_all_figures(dir, extension) {
                assert!(
                    !figure.labels_rendered,
                    "{} drawn without text",
                    figure.path.display()
                );
            }
        }
    }
}
