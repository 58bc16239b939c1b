//! Evaluation and benchmark reports: provenance (command line, seeds, model hashes, gallery sizes, machine),
//! named tables and figures, rendered as an aligned terminal table, JSON, Markdown and a self-contained HTML
//! page with the figures inlined.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::machine::MachineFacts;
use super::metrics::{
    IdentOperatingPoint, KFoldAccuracy, LatencySummary, Measurement, OperatingPoint, ThresholdRow,
};

/// Why a figure or report could not be produced.
#[derive(Debug, Error)]
pub enum ReportError {
    #[error("figure {}: unsupported format, expected .svg or .png", .path.display())]
    UnsupportedFigureFormat { path: PathBuf },
    #[error("figure {}: drawing failed", .path.display())]
    Draw {
        path: PathBuf,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("{figure}: no finite values to draw")]
    NoData { figure: &'static str },
    #[error("report file {}: i/o failed", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("report: json serialisation failed")]
    Json(#[source] serde_json::Error),
    #[error("table {table}: row has {found} cells, header has {expected}")]
    RowWidth {
        table: String,
        expected: usize,
        found: usize,
    },
}

/// A model the numbers were produced with, identified by content hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelFact {
    pub id: String,
    pub sha256: String,
}

/// A figure file written by [`crate::eval::plot`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Figure {
    pub caption: String,
    pub path: PathBuf,
    /// False when no font was available and the figure was drawn without any text.
    pub labels_rendered: bool,
}

/// A named table of preformatted cells.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Table {
    pub name: String,
    pub header: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new<S: Into<String>>(name: impl Into<String>, header: impl IntoIterator<Item = S>) -> Self {
        Table {
            name: name.into(),
            header: header.into_iter().map(Into::into).collect(),
            rows: Vec::new(),
        }
    }

    /// Appends a row; it must have exactly one cell per header column.
    pub fn push_row<S: Into<String>>(&mut self, row: impl IntoIterator<Item = S>) -> Result<(), ReportError> {
        let row: Vec<String> = row.into_iter().map(Into::into).collect();
        if row.len() != self.header.len() {
            return Err(ReportError::RowWidth {
                table: self.name.clone(),
                expected: self.header.len(),
                found: row.len(),
            });
        }
        self.rows.push(row);
        Ok(())
    }

    /// Appends a row built by this module, whose width matches its header by construction.
    fn push_cells(&mut self, row: Vec<String>) {
        debug_assert_eq!(row.len(), self.header.len(), "table {}", self.name);
        self.rows.push(row);
    }

    /// Cell `column` of `row`, or empty when a (deserialised) row is short.
    fn cell(row: &[String], column: usize) -> &str {
        row.get(column).map_or("", String::as_str)
    }

    fn column_count(&self) -> usize {
        self.rows
            .iter()
            .map(Vec::len)
            .chain([self.header.len()])
            .max()
            .unwrap_or(0)
    }

    /// TAR at each target FAR; unmeasurable targets say so instead of showing a number.
    pub fn verification_operating_points(points: &[Measurement<OperatingPoint>]) -> Table {
        let mut table = Table::new(
            "TAR at FAR",
            [
                "FAR target",
                "threshold",
                "TAR",
                "FAR achieved",
                "false accepts",
                "impostor pairs",
                "genuine pairs",
            ],
        );
        for point in points {
            table.push_cells(match point {
                Measurement::Measured(p) => vec![
                    format_rate(p.far_target),
                    p.threshold.to_string(),
                    format_rate(p.tar),
                    format_rate(p.far_achieved),
                    p.false_accepts.to_string(),
                    p.impostor_pairs.to_string(),
                    p.genuine_pairs.to_string(),
                ],
                Measurement::NotMeasurable(s) => vec![
                    format_rate(s.target),
                    "-".into(),
                    format!(
                        "not measurable: {} impostor pairs, needs {}",
                        s.available, s.required
                    ),
                    "-".into(),
                    "-".into(),
                    s.available.to_string(),
                    "-".into(),
                ],
            });
        }
        table
    }

    /// FNIR at each target FPIR; unmeasurable targets say so instead of showing a number.
    pub fn identification_operating_points(points: &[Measurement<IdentOperatingPoint>]) -> Table {
        let mut table = Table::new(
            "FNIR at FPIR",
            [
                "FPIR target",
                "threshold",
                "FNIR",
                "FPIR achieved",
                "false positives",
                "non-mated searches",
                "mated searches",
            ],
        );
        for point in points {
            table.push_cells(match point {
                Measurement::Measured(p) => vec![
                    format_rate(p.fpir_target),
                    p.threshold.to_string(),
                    format_rate(p.fnir),
                    format_rate(p.fpir_achieved),
                    p.false_positives.to_string(),
                    p.nonmated_searches.to_string(),
                    p.mated_searches.to_string(),
                ],
                Measurement::NotMeasurable(s) => vec![
                    format_rate(s.target),
                    "-".into(),
                    format!(
                        "not measurable: {} non-mated searches, needs {}",
                        s.available, s.required
                    ),
                    "-".into(),
                    "-".into(),
                    s.available.to_string(),
                    "-".into(),
                ],
            });
        }
        table
    }

    /// Identification rate at each rank (CMC points).
    pub fn rank_rates(rates: &[(usize, f64)]) -> Table {
        let mut table = Table::new("Rank-k identification rate", ["rank", "identification rate"]);
        for &(rank, rate) in rates {
            table.push_cells(vec![rank.to_string(), format_rate(rate)]);
        }
        table
    }

    /// FAR, FRR and accuracy at fixed thresholds.
    pub fn thresholds(rows: &[ThresholdRow]) -> Table {
        let mut table = Table::new(
            "Error rates at fixed thresholds",
            ["threshold", "FAR", "FRR", "accuracy"],
        );
        for row in rows {
            table.push_cells(vec![
                row.threshold.to_string(),
                format_rate(row.far),
                format_rate(row.frr),
                format_rate(row.accuracy),
            ]);
        }
        table
    }

    /// Per-fold LFW-protocol accuracy with the mean ± std as the last row.
    pub fn kfold(result: &KFoldAccuracy) -> Table {
        let mut table = Table::new(
            "k-fold verification accuracy",
            ["fold", "threshold", "accuracy", "pairs"],
        );
        for fold in &result.per_fold {
            table.push_cells(vec![
                fold.fold.to_string(),
                format!("{:.6}", fold.threshold),
                format!("{:.4}", fold.accuracy),
                fold.pairs.to_string(),
            ]);
        }
        let pairs: usize = result.per_fold.iter().map(|f| f.pairs).sum();
        table.push_cells(vec![
            "mean ± std".into(),
            "-".into(),
            format!("{:.4} ± {:.4}", result.mean, result.std),
            pairs.to_string(),
        ]);
        table
    }

    /// Latency summaries (milliseconds), one row per labelled measurement.
    pub fn latency(name: impl Into<String>, rows: &[(String, LatencySummary)]) -> Table {
        let mut table = Table::new(
            name,
            ["", "count", "mean ms", "p50 ms", "p90 ms", "p99 ms", "max ms"],
        );
        for (label, s) in rows {
            table.push_cells(vec![
                label.clone(),
                s.count.to_string(),
                format!("{:.3}", s.mean),
                format!("{:.3}", s.p50),
                format!("{:.3}", s.p90),
                format!("{:.3}", s.p99),
                format!("{:.3}", s.max),
            ]);
        }
        table
    }

    /// Score percentiles, one row per labelled sample; the columns are the percentiles of the first row.
    pub fn percentiles(name: impl Into<String>, rows: &[(String, Vec<(f64, f32)>)]) -> Table {
        let percents: Vec<f64> = rows
            .first()
            .map(|(_, p)| p.iter().map(|(q, _)| *q).collect())
            .unwrap_or_default();
        let header = std::iter::once(String::new()).chain(percents.iter().map(|p| format!("p{p}")));
        let mut table = Table::new(name, header);
        for (label, values) in rows {
            let mut row = vec![label.clone()];
            row.extend(percents.iter().map(|p| {
                values
                    .iter()
                    .find(|(q, _)| q == p)
                    .map_or_else(|| "-".to_owned(), |(_, v)| format!("{v:.4}"))
            }));
            table.push_cells(row);
        }
        table
    }
}

/// Rates at or above 0.01 with four decimals; smaller ones in scientific notation so that 1e-5 stays legible.
pub fn format_rate(rate: f64) -> String {
    if rate == 0.0 || rate >= 0.01 {
        format!("{rate:.4}")
    } else {
        format!("{rate:.2e}")
    }
}

/// Paths of the files [`Report::write_files`] produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportFiles {
    pub json: PathBuf,
    pub markdown: PathBuf,
    pub html: PathBuf,
}

/// Everything needed to reproduce and read one evaluation or benchmark run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub title: String,
    /// UTC creation time, ISO 8601 (`2025-01-31T12:00:00Z`).
    pub created_utc: String,
    pub command_line: Vec<String>,
    pub seeds: Vec<u64>,
    pub models: Vec<ModelFact>,
    pub gallery_sizes: Vec<usize>,
    pub machine: MachineFacts,
    pub tables: Vec<Table>,
    pub figures: Vec<Figure>,
    /// Free-text remarks (data set caveats, unmeasurable points, skipped steps).
    pub notes: Vec<String>,
}

impl Report {
    /// A report stamped with the current time and this machine's facts, taking the command line of this
    /// process.
    pub fn new(title: impl Into<String>) -> Self {
        Report {
            title: title.into(),
            created_utc: utc_timestamp(SystemTime::now()),
            command_line: std::env::args().collect(),
            seeds: Vec::new(),
            models: Vec::new(),
            gallery_sizes: Vec::new(),
            machine: MachineFacts::collect(),
            tables: Vec::new(),
            figures: Vec::new(),
            notes: Vec::new(),
        }
    }

    /// Provenance lines shared by every rendering: `(label, value)`.
    fn facts(&self) -> Vec<(&'static str, String)> {
        let mut facts = vec![
            ("created", self.created_utc.clone()),
            ("command", self.command_line.join(" ")),
        ];
        if !self.seeds.is_empty() {
            facts.push(("seeds", join_display(&self.seeds)));
        }
        for model in &self.models {
            facts.push(("model", format!("{} (sha256 {})", model.id, model.sha256)));
        }
        if !self.gallery_sizes.is_empty() {
            facts.push(("gallery sizes", join_display(&self.gallery_sizes)));
        }
        facts.push(("machine", self.machine.summary()));
        facts
    }

    /// Plain-text rendering for the terminal: provenance, then each table with aligned columns (numbers
    /// right-aligned), then figure paths and notes.
    pub fn render_terminal(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "{}\n{}", self.title, "=".repeat(self.title.chars().count()));
        let width = self.facts().iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        for (key, value) in self.facts() {
            let _ = writeln!(out, "{key:<width$}  {value}");
        }
        for table in &self.tables {
            let _ = writeln!(out, "\n{}", table.name);
            out.push_str(&aligned_table(table));
        }
        if !self.figures.is_empty() {
            let _ = writeln!(out, "\nfigures");
            for figure in &self.figures {
                let _ = writeln!(
                    out,
                    "  {}: {}{}",
                    figure.caption,
                    figure.path.display(),
                    unlabelled_note(figure)
                );
            }
        }
        if !self.notes.is_empty() {
            let _ = writeln!(out, "\nnotes");
            for note in &self.notes {
                let _ = writeln!(out, "  - {note}");
            }
        }
        out
    }

    /// Pretty-printed JSON of the whole report.
    pub fn to_json(&self) -> Result<String, ReportError> {
        serde_json::to_string_pretty(self).map_err(ReportError::Json)
    }

    /// GitHub-flavoured Markdown; figure links use the paths as stored.
    pub fn render_markdown(&self) -> String {
        self.markdown_with_base(None)
    }

    /// Markdown whose figure links are relative to `base` when the figure lies inside it.
    fn markdown_with_base(&self, base: Option<&Path>) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "# {}\n", markdown_cell(&self.title));
        for (key, value) in self.facts() {
            let _ = writeln!(out, "- **{key}**: {}", markdown_cell(&value));
        }
        for table in &self.tables {
            let _ = writeln!(out, "\n## {}\n", markdown_cell(&table.name));
            let columns = table.column_count();
            let header: Vec<String> = (0..columns)
                .map(|c| markdown_cell(Table::cell(&table.header, c)))
                .collect();
            let _ = writeln!(out, "| {} |", header.join(" | "));
            let _ = writeln!(out, "|{}", "---|".repeat(columns));
            for row in &table.rows {
                let cells: Vec<String> = (0..columns).map(|c| markdown_cell(Table::cell(row, c))).collect();
                let _ = writeln!(out, "| {} |", cells.join(" | "));
            }
        }
        for figure in &self.figures {
            let path = base
                .and_then(|b| figure.path.strip_prefix(b).ok())
                .unwrap_or(&figure.path);
            let _ = writeln!(
                out,
                "\n## {}\n\n![{}]({}){}",
                markdown_cell(&figure.caption),
                markdown_cell(&figure.caption),
                path.display().to_string().replace(' ', "%20"),
                unlabelled_note(figure)
            );
        }
        if !self.notes.is_empty() {
            let _ = writeln!(out, "\n## Notes\n");
            for note in &self.notes {
                let _ = writeln!(out, "- {}", markdown_cell(note));
            }
        }
        out
    }

    /// A single HTML page with no external references: SVG figures are inlined as markup and PNG figures as
    /// base64 data URIs, so the file can be mailed or archived on its own.
    pub fn render_html(&self) -> Result<String, ReportError> {
        let mut out = String::new();
        let title = escape_html(&self.title);
        let _ = write!(
            out,
            "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>{title}</title>\n\
             <style>\nbody {{ font-family: sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }}\n\
             table {{ border-collapse: collapse; margin: 0.5em 0 1.5em; }}\n\
             th, td {{ border: 1px solid #ccc; padding: 0.25em 0.6em; }}\n\
             th {{ background: #f3f3f3; }} td.num {{ text-align: right; font-variant-numeric: tabular-nums; }}\n\
             dl.facts dt {{ font-weight: bold; float: left; clear: left; width: 9em; }}\n\
             dl.facts dd {{ margin-left: 10em; }}\nfigure {{ margin: 1em 0; }} figure svg, figure img {{ max-width: 100%; height: auto; }}\n\
             </style>\n</head>\n<body>\n<h1>{title}</h1>\n<dl class=\"facts\">\n"
        );
        for (key, value) in self.facts() {
            let _ = writeln!(out, "<dt>{key}</dt><dd>{}</dd>", escape_html(&value));
        }
        out.push_str("</dl>\n");
        for table in &self.tables {
            let _ = writeln!(out, "<h2>{}</h2>\n<table>\n<thead><tr>", escape_html(&table.name));
            let columns = table.column_count();
            for c in 0..columns {
                let _ = write!(out, "<th>{}</th>", escape_html(Table::cell(&table.header, c)));
            }
            out.push_str("</tr></thead>\n<tbody>\n");
            for row in &table.rows {
                out.push_str("<tr>");
                for c in 0..columns {
                    let cell = Table::cell(row, c);
                    let class = if looks_numeric(cell) { " class=\"num\"" } else { "" };
                    let _ = write!(out, "<td{class}>{}</td>", escape_html(cell));
                }
                out.push_str("</tr>\n");
            }
            out.push_str("</tbody>\n</table>\n");
        }
        for figure in &self.figures {
            let caption = escape_html(&figure.caption);
            let _ = writeln!(
                out,
                "<figure>\n{}\n<figcaption>{caption}{}</figcaption>\n</figure>",
                inline_figure(figure)?,
                escape_html(unlabelled_note(figure))
            );
        }
        if !self.notes.is_empty() {
            out.push_str("<h2>Notes</h2>\n<ul>\n");
            for note in &self.notes {
                let _ = writeln!(out, "<li>{}</li>", escape_html(note));
            }
            out.push_str("</ul>\n");
        }
        out.push_str("</body>\n</html>\n");
        Ok(out)
    }

    /// Writes `<stem>.json`, `<stem>.md` and `<stem>.html` into `dir` (created if missing). Markdown links to
    /// figures inside `dir` are made relative to it.
    pub fn write_files(&self, dir: &Path, stem: &str) -> Result<ReportFiles, ReportError> {
        std::fs::create_dir_all(dir).map_err(|source| ReportError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let files = ReportFiles {
            json: dir.join(format!("{stem}.json")),
            markdown: dir.join(format!("{stem}.md")),
            html: dir.join(format!("{stem}.html")),
        };
        let write = |path: &Path, text: String| {
            std::fs::write(path, text).map_err(|source| ReportError::Io {
                path: path.to_path_buf(),
                source,
            })
        };
        write(&files.json, self.to_json()?)?;
        write(&files.markdown, self.markdown_with_base(Some(dir)))?;
        write(&files.html, self.render_html()?)?;
        Ok(files)
    }
}

fn join_display<T: std::fmt::Display>(values: &[T]) -> String {
    values.iter().map(T::to_string).collect::<Vec<_>>().join(", ")
}

fn unlabelled_note(figure: &Figure) -> &'static str {
    if figure.labels_rendered {
        ""
    } else {
        " (drawn without text: no font available)"
    }
}

/// Numbers, rates, `a ± b` and `-` placeholders align right; everything else left.
fn looks_numeric(cell: &str) -> bool {
    let cell = cell.trim();
    !cell.is_empty()
        && (cell == "-"
            || cell.split(" ± ").all(|part| part.parse::<f64>().is_ok())
            || cell.parse::<f64>().is_ok())
}

/// Columns padded to their widest cell (counted in chars), two spaces apart, with a dashed rule under the
/// header.
fn aligned_table(table: &Table) -> String {
    let columns = table.column_count();
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            std::iter::once(&table.header)
                .chain(&table.rows)
                .map(|row| Table::cell(row, c).chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    let mut line = |row: &[String], right_align_numbers: bool| {
        let cells: Vec<String> = widths
            .iter()
            .enumerate()
            .map(|(c, &width)| {
                let cell = Table::cell(row, c);
                if right_align_numbers && looks_numeric(cell) {
                    format!("{cell:>width$}")
                } else {
                    format!("{cell:<width$}")
                }
            })
            .collect();
        let _ = writeln!(out, "  {}", cells.join("  ").trim_end());
    };
    line(&table.header, false);
    let rule: Vec<String> = widths.iter().map(|&w| "-".repeat(w)).collect();
    line(&rule, false);
    for row in &table.rows {
        line(row, true);
    }
    out
}

/// Escapes the characters Markdown tables and inline text would otherwise interpret.
fn markdown_cell(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for ch in text.chars() {
        match ch {
            '|' | '\\' | '*' | '_' | '`' | '[' | ']' | '<' | '>' => {
                out.push('\\');
                out.push(ch);
            }
            '\n' | '\r' => out.push(' '),
            _ => out.push(ch),
        }
    }
    out
}

fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for ch in text.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(ch),
        }
    }
    out
}

/// The figure as HTML: the SVG markup itself (minus any XML prolog) or a PNG `<img>` with a data URI.
fn inline_figure(figure: &Figure) -> Result<String, ReportError> {
    let io_error = |source| ReportError::Io {
        path: figure.path.clone(),
        source,
    };
    let extension = figure
        .path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    match extension.as_deref() {
        Some("svg") => {
            let svg = std::fs::read_to_string(&figure.path).map_err(io_error)?;
            let start = svg.find("<svg").unwrap_or(0);
            Ok(svg[start..].trim_end().to_owned())
        }
        Some("png") => {
            let png = std::fs::read(&figure.path).map_err(io_error)?;
            Ok(format!(
                "<img alt=\"{}\" src=\"data:image/png;base64,{}\">",
                escape_html(&figure.caption),
                base64_encode(&png)
            ))
        }
        _ => Err(ReportError::UnsupportedFigureFormat {
            path: figure.path.clone(),
        }),
    }
}

/// Standard base64 (RFC 4648 §4) with padding, for PNG data URIs.
fn base64_encode(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let group = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((group >> (18 - 6 * i)) & 0x3f) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// `SystemTime` as ISO 8601 UTC with second precision (times before 1970 clamp to the epoch).
fn utc_timestamp(time: SystemTime) -> String {
    let seconds = time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, second_of_day) = (seconds / 86_400, seconds % 86_400);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        second_of_day / 3600,
        second_of_day % 3600 / 60,
        second_of_day % 60
    )
}

/// Proleptic Gregorian date of `days` since 1970-01-01, by counting 400-year eras that start on 1 March so
/// that leap days fall at the end of each year.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468; // days since 0000-03-01
    let era = z / 146_097;
    let day_of_era = z % 146_097;
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153; // 0 = March
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::metrics::{
        fnir_at_fpir, kfold_accuracy, latency_summary, tar_at_far, ScoredPair, SearchOutcome,
    };
    use crate::eval::plot::{plot_cmc, plot_score_histograms, CmcSeries};

    fn pairs() -> Vec<ScoredPair> {
        [
            (0.9, true),
            (0.7, false),
            (0.8, true),
            (0.5, false),
            (0.7, true),
            (0.4, false),
            (0.6, true),
            (0.3, false),
        ]
        .map(|(score, mated)| ScoredPair { score, mated })
        .to_vec()
    }

    fn report() -> Report {
        let mut report = Report::new("Verification | LFW <test>");
        report.created_utc = utc_timestamp(UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000));
        report.command_line = vec![
            "facematch".into(),
            "eval".into(),
            "verify".into(),
            "data dir".into(),
        ];
        report.seeds = vec![42, 7];
        report.models = vec![ModelFact {
            id: "face-embed".into(),
            sha256: "ab12".into(),
        }];
        report.gallery_sizes = vec![1000];
        let points: Vec<_> = [0.25, 0.1]
            .iter()
            .map(|&far| tar_at_far(&pairs(), far).expect("valid pairs"))
            .collect();
        report.tables.push(Table::verification_operating_points(&points));
        let folds = [0, 0, 1, 1, 0, 0, 1, 1];
        report.tables.push(Table::kfold(
            &kfold_accuracy(&pairs(), &folds).expect("valid folds"),
        ));
        report.notes.push("pairs are synthetic".into());
        report
    }

    #[test]
    fn terminal_rendering_aligns_columns() {
        let text = report().render_terminal();
        assert!(
            text.starts_with("Verification | LFW <test>\n=========================\n"),
            "{text}"
        );
        assert!(text.contains("created        2023-11-14T22:13:20Z"), "{text}");
        assert!(text.contains("model          face-embed (sha256 ab12)"));
        assert!(text.contains("not measurable: 4 impostor pairs, needs 10"));
        let table_lines: Vec<&str> = text
            .lines()
            .skip_while(|l| *l != "TAR at FAR")
            .skip(1)
            .take_while(|l| !l.is_empty())
            .collect();
        assert_eq!(table_lines.len(), 4, "header, rule and two rows: {table_lines:?}");
        // The rule's dash runs give each column's span; every cell sits inside its span, numbers flush right.
        let rule: Vec<char> = table_lines[1].chars().collect();
        let mut spans = Vec::new();
        let mut start = None;
        for (i, ch) in rule.iter().chain([&' ']).enumerate() {
            match (ch, start) {
                ('-', None) => start = Some(i),
                (' ', Some(s)) => {
                    spans.push((s, i));
                    start = None;
                }
                _ => {}
            }
        }
        assert_eq!(spans.len(), 7, "seven columns");
        let measured: Vec<char> = table_lines[2].chars().collect();
        let cell = |line: &[char], (s, e): (usize, usize)| -> String {
            line[s.min(line.len())..e.min(line.len())].iter().collect()
        };
        assert_eq!(cell(&measured, spans[0]).trim(), "0.2500");
        assert_eq!(
            cell(&measured, spans[2]).trim_start(),
            "1.0000",
            "TAR right-aligned in its column"
        );
        assert_eq!(cell(&measured, spans[6]).trim_start(), "4");
        let unmeasured: Vec<char> = table_lines[3].chars().collect();
        assert_eq!(
            cell(&unmeasured, spans[2]).trim_end(),
            "not measurable: 4 impostor pairs, needs 10",
            "text left-aligned"
        );
        assert!(text.contains("notes\n  - pairs are synthetic"));
    }

    #[test]
    fn json_round_trips() {
        let report = report();
        let json = report.to_json().expect("serialisable");
        let back: Report = serde_json::from_str(&json).expect("valid json");
        assert_eq!(back, report);
        assert!(
            json.contains("not measurable: 4 impostor pairs, needs 10"),
            "{json}"
        );
    }

    #[test]
    fn markdown_escapes_cells_and_builds_tables() {
        let text = report().render_markdown();
        assert!(text.starts_with("# Verification \\| LFW \\<test\\>\n"), "{text}");
        assert!(text.contains("| FAR target | threshold | TAR | FAR achieved | false accepts | impostor pairs | genuine pairs |"));
        assert!(text.contains("|---|---|---|---|---|---|---|\n"));
        assert!(
            text.contains("| 0\\.2500 |") || text.contains("| 0.2500 |"),
            "{text}"
        );
        assert!(text.contains("- pairs are synthetic"));
    }

    #[test]
    fn html_is_self_contained_with_inlined_figures() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut report = report();
        let cmc = [CmcSeries {
            label: "model & co".into(),
            points: vec![(1, 0.8), (5, 0.9)],
        }];
        report
            .figures
            .push(plot_cmc("CMC", &cmc, &dir.path().join("cmc.svg")).expect("svg"));
        report.figures.push(
            plot_score_histograms("Scores", &[0.8, 0.9], &[0.1, 0.2], &dir.path().join("scores.png"))
                .expect("png"),
        );
        let html = report.render_html().expect("figures readable");
        assert!(html.starts_with("<!DOCTYPE html>"));
        assert!(html.contains("<title>Verification | LFW &lt;test&gt;</title>"));
        assert!(html.contains("<svg"), "svg inlined");
        assert!(!html.contains("<?xml"));
        assert!(
            html.contains("src=\"data:image/png;base64,iVBORw0KGgo"),
            "png inlined as a data uri"
        );
        assert!(
            !html.contains("src=\"/") && !html.contains("href="),
            "no external references"
        );
        assert!(html.contains("<td class=\"num\">0.2500</td>"));
        assert_eq!(html.matches("<table>").count(), 2);
        assert_eq!(html.matches("<figure>").count(), 2);
        let files = report
            .write_files(&dir.path().join("out"), "verify")
            .expect("written");
        let markdown = std::fs::read_to_string(&files.markdown).expect("markdown written");
        assert!(markdown.contains("cmc.svg"));
        assert!(std::fs::metadata(&files.json).is_ok_and(|m| m.len() > 0));
        assert!(std::fs::metadata(&files.html).is_ok_and(|m| m.len() > 0));
        report.figures.push(Figure {
            caption: "gone".into(),
            path: dir.path().join("missing.svg"),
            labels_rendered: true,
        });
        assert!(matches!(report.render_html(), Err(ReportError::Io { .. })));
    }

    #[test]
    fn metric_tables_format_measurements() {
        let outcomes: Vec<SearchOutcome> = (0..20)
            .map(|i| SearchOutcome {
                mated: i % 2 == 0,
                mate_rank: (i % 2 == 0).then_some(1),
                decision_score: i as f32 / 20.0,
                top_is_mate: i % 2 == 0,
            })
            .collect();
        let points: Vec<_> = [0.1, 0.01]
            .iter()
            .map(|&t| fnir_at_fpir(&outcomes, t).expect("valid"))
            .collect();
        let table = Table::identification_operating_points(&points);
        assert_eq!(table.rows.len(), 2);
        assert_eq!(table.rows[0][0], "0.1000");
        assert_eq!(
            table.rows[1][2],
            "not measurable: 10 non-mated searches, needs 100"
        );
        let latency = latency_summary(&[1.0, 2.0, 3.0, 4.0]).expect("valid");
        let table = Table::latency("latency", &[("search".into(), latency)]);
        assert_eq!(
            table.rows[0],
            ["search", "4", "2.500", "2.000", "4.000", "4.000", "4.000"]
        );
        let table = Table::percentiles("scores", &[("mated".into(), vec![(5.0, 0.25), (50.0, 0.5)])]);
        assert_eq!(table.header, ["", "p5", "p50"]);
        assert_eq!(format_rate(0.001), "1.00e-3");
        assert_eq!(format_rate(0.5), "0.5000");
    }

    #[test]
    fn push_row_checks_width_and_renderers_tolerate_ragged_rows() {
        let mut table = Table::new("t", ["a", "b"]);
        assert!(matches!(
            table.push_row(["1"]),
            Err(ReportError::RowWidth {
                expected: 2,
                found: 1,
                ..
            })
        ));
        table.push_row(["1", "2"]).expect("right width");
        table.rows.push(vec!["only".into()]);
        table.rows.push(vec!["x".into(), "y".into(), "extra".into()]);
        let text = aligned_table(&table);
        assert!(text.contains("extra"));
        let mut report = report();
        report.tables = vec![table];
        assert!(report.render_markdown().contains("| x | y | extra |"));
        assert!(report.render_html().is_ok());
    }

    #[test]
    fn base64_matches_rfc_4648_vectors() {
        let vectors = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ];
        for (input, expected) in vectors {
            assert_eq!(base64_encode(input.as_bytes()), expected);
        }
    }

    #[test]
    fn timestamps_are_utc_iso_8601() {
        let at = |s: u64| utc_timestamp(UNIX_EPOCH + std::time::Duration::from_secs(s));
        assert_eq!(at(0), "1970-01-01T00:00:00Z");
        assert_eq!(at(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(at(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(at(4_107_542_399), "2100-02-28T23:59:59Z");
    }
}
