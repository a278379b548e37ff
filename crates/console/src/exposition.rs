//! The Prometheus text exposition format (what `/metrics` serves), parsed into series: enough
//! to read counters, gauges and summary quantiles back by name.

/// One rendering of the metrics, as `(name, labels, value)` series.
pub(crate) struct Exposition {
    series: Vec<(String, String, f64)>,
}

impl Exposition {
    /// Parses `text`; comment lines and lines that do not parse are skipped.
    pub(crate) fn parse(text: &str) -> Self {
        let series = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|line| {
                let (head, value) = line.trim_end().rsplit_once(' ')?;
                let value: f64 = value.parse().ok()?;
                let (name, labels) = match head.split_once('{') {
                    Some((n, rest)) => (n, rest.trim_end_matches('}')),
                    None => (head, ""),
                };
                Some((name.to_owned(), labels.to_owned(), value))
            })
            .collect();
        Self { series }
    }

    /// The sum over every label set of `name`; `None` if no series has that name.
    pub(crate) fn sum(&self, name: &str) -> Option<f64> {
        let mut found = self.series.iter().filter(|(n, _, _)| n == name).peekable();
        found.peek()?;
        Some(found.map(|(_, _, v)| v).sum())
    }

    /// Quantile `q` (as written, e.g. `"0.99"`) of the summary `name`, over its first label
    /// set; `None` if absent or not a number (an empty summary renders `NaN`).
    pub(crate) fn quantile(&self, name: &str, q: &str) -> Option<f64> {
        let label = format!("quantile=\"{q}\"");
        self.series
            .iter()
            .find(|(n, l, _)| n == name && l.split(',').any(|p| p == label))
            .map(|(_, _, v)| *v)
            .filter(|v| v.is_finite())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_gauges_and_quantiles_are_read_back() {
        let text = "# TYPE jobs_total counter\n\
                    jobs_total{outcome=\"ok\"} 3\n\
                    jobs_total{outcome=\"failed\"} 1\n\
                    held 2\n\
                    held_seconds{quantile=\"0.5\"} 0.25\n\
                    held_seconds{quantile=\"0.99\"} NaN\n\
                    held_seconds_sum 1\n";
        let e = Exposition::parse(text);
        assert_eq!(e.sum("jobs_total"), Some(4.0));
        assert_eq!(e.sum("held"), Some(2.0));
        assert_eq!(e.sum("missing"), None);
        assert_eq!(e.quantile("held_seconds", "0.5"), Some(0.25));
        assert_eq!(e.quantile("held_seconds", "0.99"), None, "NaN is no value");
    }
}
