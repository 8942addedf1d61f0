//! Forecasts for the planning horizon: additive Holt-Winters with a daily
//! period on hourly series (ambient temperature, workload utilisation), and
//! persistence as the baseline it must beat. Pure.

/// Smoothing of level, trend and season.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HoltWinters {
    pub alpha: f64,
    pub beta: f64,
    pub gamma: f64,
    /// Season length in samples (24 for hourly data with a daily cycle).
    pub period: usize,
}

impl Default for HoltWinters {
    /// Tuned on a year of hourly weather (TMY3 Greensboro, Seattle 2010).
    fn default() -> Self {
        Self {
            alpha: 0.3,
            beta: 0.01,
            gamma: 0.2,
            period: 24,
        }
    }
}

/// The fitted state after a series.
#[derive(Debug, Clone, PartialEq)]
pub struct HwState {
    pub level: f64,
    pub trend: f64,
    /// Seasonal terms, indexed by position in the period.
    pub season: Vec<f64>,
    /// Samples seen (the next sample's index).
    pub seen: usize,
    params: HoltWinters,
}

impl HoltWinters {
    /// Initialise from the first period, then update with every sample.
    /// `None` if the series is shorter than two periods.
    pub fn fit(&self, series: &[f64]) -> Option<HwState> {
        let m = self.period.max(1);
        if series.len() < 2 * m {
            return None;
        }
        let level = series[..m].iter().sum::<f64>() / m as f64;
        let mut state = HwState {
            level,
            trend: 0.0,
            season: series[..m].iter().map(|y| y - level).collect(),
            seen: m,
            params: *self,
        };
        for &y in &series[m..] {
            state.update(y);
        }
        Some(state)
    }
}

impl HwState {
    /// Take one more observation.
    pub fn update(&mut self, y: f64) {
        let p = self.params;
        let m = self.season.len();
        let k = self.seen % m;
        let s = self.season[k];
        let level = p.alpha * (y - s) + (1.0 - p.alpha) * (self.level + self.trend);
        self.trend = p.beta * (level - self.level) + (1.0 - p.beta) * self.trend;
        self.season[k] = p.gamma * (y - level) + (1.0 - p.gamma) * s;
        self.level = level;
        self.seen += 1;
    }

    /// The forecast `h` ≥ 1 samples after the last observation.
    pub fn forecast(&self, h: usize) -> f64 {
        let m = self.season.len();
        self.level + h as f64 * self.trend + self.season[(self.seen + h - 1) % m]
    }

    /// Forecasts for the next `n` samples.
    pub fn forecasts(&self, n: usize) -> Vec<f64> {
        (1..=n).map(|h| self.forecast(h)).collect()
    }
}

/// Mean absolute errors (Holt-Winters, persistence) of `h`-step-ahead
/// forecasts over a series, walking forward one sample at a time after two
/// periods of warm-up.
pub fn backtest_mae(hw: &HoltWinters, series: &[f64], h: usize) -> Option<(f64, f64)> {
    let m = hw.period;
    let mut state = hw.fit(&series[..2 * m.min(series.len() / 2)])?;
    let (mut e_hw, mut e_last, mut n) = (0.0, 0.0, 0usize);
    for t in 2 * m..series.len() {
        if t + h <= series.len() {
            let truth = series[t + h - 1];
            e_hw += (state.forecast(h) - truth).abs();
            e_last += (series[t - 1] - truth).abs();
            n += 1;
        }
        state.update(series[t]);
    }
    (n > 0).then(|| (e_hw / n as f64, e_last / n as f64))
}
