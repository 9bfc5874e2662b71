//! Results: the data model, the markdown table and the JSON file.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde_json::{json, Value};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Better {
    Higher,
    Lower,
}

/// A measured figure: the median of the repetitions, with min and max.
#[derive(Clone, Debug)]
pub struct Figure {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub samples: Vec<f64>,
    /// Anything worth saying next to the number (e.g. a PSS breakdown).
    pub detail: Option<String>,
}

impl Figure {
    pub fn from_samples(mut samples: Vec<f64>) -> Figure {
        assert!(!samples.is_empty(), "a figure needs at least one sample");
        let mut sorted = samples.clone();
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len();
        let median = if n % 2 == 1 { sorted[n / 2] } else { (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0 };
        samples.shrink_to_fit();
        Figure { median, min: sorted[0], max: sorted[n - 1], samples, detail: None }
    }

    pub fn single(value: f64) -> Figure {
        Figure::from_samples(vec![value])
    }

    pub fn with_detail(mut self, detail: impl Into<String>) -> Figure {
        self.detail = Some(detail.into());
        self
    }
}

#[derive(Clone, Debug)]
pub enum Cell {
    Figure(Figure),
    /// No figure, with the reason: "not installed (…)", "n/a: …", "error: …".
    Text(String),
}

#[derive(Clone, Debug)]
pub struct Row {
    pub id: &'static str,
    pub title: String,
    pub unit: &'static str,
    pub better: Better,
    pub cells: BTreeMap<String, Cell>,
}

#[derive(Clone, Debug)]
pub struct Target {
    pub what: String,
    pub goal: String,
    /// The measured ratio or figure the goal is about.
    pub value: Option<f64>,
    pub met: Option<bool>,
    pub detail: String,
}

#[derive(Clone, Debug, Default)]
pub struct Report {
    pub date: String,
    pub command: String,
    pub machine: Vec<(String, String)>,
    pub config: Vec<(String, String)>,
    pub engines: Vec<String>,
    pub rows: Vec<Row>,
    pub sizes: BTreeMap<String, Vec<(String, u64)>>,
    pub notes: Vec<String>,
    pub targets: Vec<Target>,
}

/// A number with a unit, readable: 1.23 M, 45.6 k, 7.89.
pub fn human(value: f64, unit: &str) -> String {
    if unit.ends_with("/s") {
        if value >= 1e6 {
            return format!("{:.2} M", value / 1e6);
        }
        if value >= 1e3 {
            return format!("{:.1} k", value / 1e3);
        }
        return format!("{value:.0}");
    }
    if value >= 100.0 {
        format!("{value:.0}")
    } else if value >= 10.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.2}")
    }
}

impl Row {
    pub fn cell_text(&self, engine: &str) -> String {
        match self.cells.get(engine) {
            None => "not run".to_string(),
            Some(Cell::Text(t)) => t.clone(),
            Some(Cell::Figure(f)) if f.samples.len() == 1 => human(f.median, self.unit),
            Some(Cell::Figure(f)) => {
                format!("{} ({}–{})", human(f.median, self.unit), human(f.min, self.unit), human(f.max, self.unit))
            }
        }
    }

    pub fn median(&self, engine: &str) -> Option<f64> {
        match self.cells.get(engine) {
            Some(Cell::Figure(f)) => Some(f.median),
            _ => None,
        }
    }

    /// shoal / `anchor`, on medians.
    pub fn ratio(&self, anchor: &str) -> Option<f64> {
        let (s, a) = (self.median("shoal")?, self.median(anchor)?);
        (a > 0.0).then(|| s / a)
    }
}

fn engine_title(engine: &str) -> &str {
    match engine {
        "shoal" => "shoal",
        "lmdb" => "LMDB",
        "redis" => "Redis",
        other => other,
    }
}

impl Report {
    pub fn row(&self, id: &str) -> Option<&Row> {
        self.rows.iter().find(|r| r.id == id)
    }

    fn anchors(&self) -> Vec<&String> {
        if self.engines.iter().any(|e| e == "shoal") {
            self.engines.iter().filter(|e| *e != "shoal").collect()
        } else {
            Vec::new()
        }
    }

    pub fn markdown(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "## shoal-bench results\n");
        let _ = writeln!(s, "- date: {}", self.date);
        let _ = writeln!(s, "- command: `{}`", self.command);
        for (k, v) in &self.machine {
            let _ = writeln!(s, "- {k}: {v}");
        }
        for (k, v) in &self.config {
            let _ = writeln!(s, "- {k}: {v}");
        }
        s.push('\n');
        let anchors = self.anchors();
        s.push_str("| # | measurement | unit |");
        for e in &self.engines {
            let _ = write!(s, " {} |", engine_title(e));
        }
        for a in &anchors {
            let _ = write!(s, " shoal/{} |", engine_title(a));
        }
        s.push_str("\n|---|---|---|");
        for _ in self.engines.iter().chain(anchors.iter().copied()) {
            s.push_str("---|");
        }
        s.push('\n');
        for row in &self.rows {
            let better = match row.better {
                Better::Higher => "↑",
                Better::Lower => "↓",
            };
            let _ = write!(s, "| {} | {} | {} {better} |", row.id, row.title, row.unit);
            for e in &self.engines {
                let _ = write!(s, " {} |", row.cell_text(e));
            }
            for a in &anchors {
                match row.ratio(a) {
                    Some(r) => {
                        let _ = write!(s, " {r:.2}× |");
                    }
                    None => s.push_str(" – |"),
                }
            }
            s.push('\n');
        }
        s.push_str("\nCells: median of the repetitions (min–max); ↑ higher is better, ↓ lower is better; ");
        s.push_str("ratios are shoal / anchor on the medians.\n");
        let details: Vec<String> = self
            .rows
            .iter()
            .flat_map(|row| {
                self.engines.iter().filter_map(move |e| match row.cells.get(e) {
                    Some(Cell::Figure(Figure { detail: Some(d), .. })) => {
                        Some(format!("- {} {}: {d}", row.id, engine_title(e)))
                    }
                    _ => None,
                })
            })
            .collect();
        if !details.is_empty() {
            s.push_str("\nDetails:\n\n");
            for d in details {
                let _ = writeln!(s, "{d}");
            }
        }
        if !self.sizes.is_empty() {
            s.push_str("\nStore sizes after the load:\n\n");
            for (engine, sizes) in &self.sizes {
                let parts: Vec<String> = sizes
                    .iter()
                    .map(|(k, v)| {
                        if k.contains("bytes") || k.contains("file") || k.contains("memory") || k.contains("size") {
                            format!("{k} {:.1} MiB", *v as f64 / (1 << 20) as f64)
                        } else {
                            format!("{k} {v}")
                        }
                    })
                    .collect();
                let _ = writeln!(s, "- {}: {}", engine_title(engine), parts.join("; "));
            }
        }
        if !self.notes.is_empty() {
            s.push_str("\nNotes:\n\n");
            for n in &self.notes {
                let _ = writeln!(s, "- {n}");
            }
        }
        if !self.targets.is_empty() {
            s.push_str("\nTargets:\n\n| target | goal | measured | met |\n|---|---|---|---|\n");
            for t in &self.targets {
                let value = t.value.map_or("–".to_string(), |v| format!("{v:.2}"));
                let met = match t.met {
                    Some(true) => "yes",
                    Some(false) => "**no**",
                    None => "not measured",
                };
                let _ = writeln!(s, "| {} | {} | {value} {} | {met} |", t.what, t.goal, t.detail);
            }
        }
        s
    }

    pub fn json(&self) -> Value {
        let pairs = |v: &[(String, String)]| -> Value {
            Value::Object(v.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect())
        };
        let rows: Vec<Value> = self
            .rows
            .iter()
            .map(|row| {
                let cells: serde_json::Map<String, Value> = self
                    .engines
                    .iter()
                    .map(|e| {
                        let cell = match row.cells.get(e) {
                            Some(Cell::Figure(f)) => json!({
                                "status": "ok", "median": f.median, "min": f.min, "max": f.max,
                                "samples": f.samples, "detail": f.detail, "text": row.cell_text(e),
                            }),
                            Some(Cell::Text(t)) => json!({ "status": "no figure", "text": t }),
                            None => json!({ "status": "not run", "text": "not run" }),
                        };
                        (e.clone(), cell)
                    })
                    .collect();
                let ratios: serde_json::Map<String, Value> = self
                    .anchors()
                    .into_iter()
                    .map(|a| (format!("shoal/{a}"), row.ratio(a).map_or(Value::Null, |r| json!(r))))
                    .collect();
                json!({
                    "id": row.id, "title": row.title, "unit": row.unit,
                    "better": if row.better == Better::Higher { "higher" } else { "lower" },
                    "results": cells, "ratios": ratios,
                })
            })
            .collect();
        let sizes: serde_json::Map<String, Value> = self
            .sizes
            .iter()
            .map(|(e, v)| (e.clone(), Value::Object(v.iter().map(|(k, n)| (k.clone(), json!(n))).collect())))
            .collect();
        let targets: Vec<Value> = self
            .targets
            .iter()
            .map(|t| json!({ "target": t.what, "goal": t.goal, "value": t.value, "met": t.met, "detail": t.detail }))
            .collect();
        json!({
            "date": self.date, "command": self.command,
            "machine": pairs(&self.machine), "config": pairs(&self.config),
            "engines": self.engines, "rows": rows, "sizes": sizes,
            "notes": self.notes, "targets": targets,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_min_max() {
        let f = Figure::from_samples(vec![3.0, 1.0, 2.0, 10.0]);
        assert_eq!((f.median, f.min, f.max), (2.5, 1.0, 10.0));
        assert_eq!(Figure::single(4.0).median, 4.0);
        assert_eq!(human(1_234_567.0, "gets/s"), "1.23 M");
        assert_eq!(human(12_345.0, "gets/s"), "12.3 k");
        assert_eq!(human(1.23456, "µs"), "1.23");
    }
}
