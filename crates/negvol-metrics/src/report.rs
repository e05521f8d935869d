//! Aggregation of many cases into mean +- std per metric (for Table 1 style reports).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::value::{MetricValue, Note};

/// Summary of one metric over cases.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Summary {
    /// Mean over the cases where the metric is defined (`None` if none is).
    pub mean: Option<f64>,
    /// Population standard deviation (numpy's default `ddof = 0`) over the same cases.
    pub std: Option<f64>,
    /// Smallest defined value.
    pub min: Option<f64>,
    /// Largest defined value.
    pub max: Option<f64>,
    /// Number of cases with a value (including conventional both-empty values).
    pub n_defined: usize,
    /// Number of cases where the metric was undefined (not in the mean), like MONAI's
    /// not-nans count.
    pub n_undefined: usize,
    /// Number of cases whose value is the both-empty convention (included in the mean).
    pub n_both_empty: usize,
}

/// A report over cases: per metric name, its [`Summary`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Report {
    /// Number of cases.
    pub cases: usize,
    /// Summaries by metric name.
    pub metrics: BTreeMap<String, Summary>,
}

impl Report {
    /// Aggregates cases, each given as named values (e.g. from
    /// [`crate::pair::PairMetrics::named_values`]).
    pub fn from_cases<I>(cases: I) -> Report
    where
        I: IntoIterator<Item = Vec<(String, MetricValue)>>,
    {
        let mut values: BTreeMap<String, (Vec<f64>, usize, usize)> = BTreeMap::new();
        let mut n = 0;
        for case in cases {
            n += 1;
            for (name, v) in case {
                let e = values.entry(name).or_default();
                match v.value {
                    Some(x) => {
                        e.0.push(x);
                        if v.note == Some(Note::BothEmpty) {
                            e.2 += 1;
                        }
                    }
                    None => e.1 += 1,
                }
            }
        }
        let metrics = values
            .into_iter()
            .map(|(k, (xs, undef, both))| {
                let s = if xs.is_empty() {
                    Summary {
                        n_undefined: undef,
                        ..Summary::default()
                    }
                } else {
                    let m = xs.iter().sum::<f64>() / xs.len() as f64;
                    let var = xs.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / xs.len() as f64;
                    Summary {
                        mean: Some(m),
                        std: Some(var.sqrt()),
                        min: xs.iter().copied().reduce(f64::min),
                        max: xs.iter().copied().reduce(f64::max),
                        n_defined: xs.len(),
                        n_undefined: undef,
                        n_both_empty: both,
                    }
                };
                (k, s)
            })
            .collect();
        Report { cases: n, metrics }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use approx::assert_relative_eq;

    #[test]
    fn mean_std_and_counts() {
        let cases = vec![
            vec![("hd".to_string(), MetricValue::defined(1.0))],
            vec![("hd".to_string(), MetricValue::defined(3.0))],
            vec![(
                "hd".to_string(),
                MetricValue::undefined(Note::EmptyPrediction),
            )],
            vec![(
                "hd".to_string(),
                MetricValue::conventional(0.0, Note::BothEmpty),
            )],
        ];
        let r = Report::from_cases(cases);
        let s = &r.metrics["hd"];
        assert_eq!(r.cases, 4);
        assert_eq!((s.n_defined, s.n_undefined, s.n_both_empty), (3, 1, 1));
        assert_relative_eq!(s.mean.unwrap(), 4.0 / 3.0);
        let m = 4.0 / 3.0;
        let var: f64 = [1.0f64, 3.0, 0.0]
            .iter()
            .map(|x| (x - m) * (x - m))
            .sum::<f64>()
            / 3.0;
        assert_relative_eq!(s.std.unwrap(), var.sqrt());
    }
}

/// One row of a per-case table: a case name, an optional label and its named values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CaseRow {
    /// Case name (e.g. the file name).
    pub case: String,
    /// The label, for label maps.
    pub label: Option<u8>,
    /// Named metric values.
    pub values: Vec<(String, MetricValue)>,
}

/// CSV text of the rows: columns `case,label,<metrics...>,notes`; an undefined value is an
/// empty cell and `notes` lists `metric=note` for every undefined or conventional value.
/// Case names containing a comma or quote are quoted (RFC 4180).
pub fn csv_table(rows: &[CaseRow]) -> String {
    let mut names: Vec<String> = Vec::new();
    for r in rows {
        for (n, _) in &r.values {
            if !names.contains(n) {
                names.push(n.clone());
            }
        }
    }
    let quote = |s: &str| {
        if s.contains([',', '"', '\n']) {
            format!("\"{}\"", s.replace('"', "\"\""))
        } else {
            s.to_string()
        }
    };
    let mut out = String::from("case,label");
    for n in &names {
        out.push(',');
        out.push_str(n);
    }
    out.push_str(",notes\n");
    for r in rows {
        out.push_str(&quote(&r.case));
        out.push(',');
        if let Some(l) = r.label {
            out.push_str(&l.to_string());
        }
        let mut notes = Vec::new();
        for n in &names {
            out.push(',');
            if let Some((_, v)) = r.values.iter().find(|(k, _)| k == n) {
                if let Some(x) = v.value {
                    out.push_str(&format!("{x}"));
                }
                if let Some(note) = v.note {
                    let s = serde_json::to_string(&note).unwrap_or_default();
                    notes.push(format!("{n}={}", s.trim_matches('"')));
                }
            }
        }
        out.push(',');
        out.push_str(&quote(&notes.join(";")));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod csv_tests {
    use super::*;

    #[test]
    fn csv_cells_and_notes() {
        let rows = vec![
            CaseRow {
                case: "a,b".into(),
                label: Some(1),
                values: vec![
                    ("dice".into(), MetricValue::defined(0.5)),
                    ("hd".into(), MetricValue::undefined(Note::EmptyPrediction)),
                ],
            },
            CaseRow {
                case: "c".into(),
                label: None,
                values: vec![(
                    "dice".into(),
                    MetricValue::conventional(1.0, Note::BothEmpty),
                )],
            },
        ];
        let s = csv_table(&rows);
        let lines: Vec<&str> = s.lines().collect();
        assert_eq!(lines[0], "case,label,dice,hd,notes");
        assert_eq!(lines[1], "\"a,b\",1,0.5,,hd=empty_prediction");
        assert_eq!(lines[2], "c,,1,,dice=both_empty");
    }
}
