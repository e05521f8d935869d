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
