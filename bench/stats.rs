//! Percentiles of one repetition, medians across repetitions.

use serde_json::{Value, json};

/// Nearest-rank percentile (`p` in 0..=100) of unsorted samples; NaN when empty.
pub fn percentile(samples: &[f64], p: f64) -> f64 {
    if samples.is_empty() {
        return f64::NAN;
    }
    let mut s = samples.to_vec();
    s.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let rank = ((p / 100.0) * s.len() as f64).ceil() as usize;
    s[rank.clamp(1, s.len()) - 1]
}

pub fn median(values: &[f64]) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut s = values.to_vec();
    s.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = s.len();
    if n % 2 == 1 { s[n / 2] } else { (s[n / 2 - 1] + s[n / 2]) / 2.0 }
}

pub fn mean(values: &[f64]) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.iter().sum::<f64>() / values.len() as f64
}

/// p50/p90/p99/mean of one repetition (microseconds in, milliseconds out).
#[derive(Clone, Copy, Debug)]
pub struct Pct {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub mean: f64,
    pub n: usize,
}

impl Pct {
    pub fn of_us(samples_us: &[f64]) -> Pct {
        let ms: Vec<f64> = samples_us.iter().map(|u| u / 1000.0).collect();
        Pct {
            p50: percentile(&ms, 50.0),
            p90: percentile(&ms, 90.0),
            p99: percentile(&ms, 99.0),
            mean: mean(&ms),
            n: ms.len(),
        }
    }

    /// Per-field median across repetitions.
    pub fn median_of(reps: &[Pct]) -> Pct {
        let f = |g: fn(&Pct) -> f64| median(&reps.iter().map(g).collect::<Vec<_>>());
        Pct {
            p50: f(|p| p.p50),
            p90: f(|p| p.p90),
            p99: f(|p| p.p99),
            mean: f(|p| p.mean),
            n: reps.iter().map(|p| p.n).sum(),
        }
    }

    pub fn json(&self) -> Value {
        json!({"p50_ms": self.p50, "p90_ms": self.p90, "p99_ms": self.p99, "mean_ms": self.mean, "samples": self.n})
    }
}

/// Samples (as f64) from a JSON array.
pub fn floats(v: &Value) -> Vec<f64> {
    v.as_array().map(|a| a.iter().filter_map(Value::as_f64).collect()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank() {
        let s: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&s, 50.0), 50.0);
        assert_eq!(percentile(&s, 90.0), 90.0);
        assert_eq!(percentile(&s, 99.0), 99.0);
        assert_eq!(percentile(&[3.0], 99.0), 3.0);
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
    }
}
