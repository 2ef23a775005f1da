//! An exponentially weighted mean and variance: how the link monitor, the
//! bus's peer-anomaly check and the per-device baseline each learn "normal"
//! in constant memory.

/// A damped mean and variance (West's incremental form).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Ewma {
    /// The damped mean.
    pub mean: f64,
    /// The damped variance.
    pub var: f64,
}

impl Ewma {
    /// Starts at `x` with no spread.
    pub fn starting_at(x: f64) -> Ewma {
        Ewma { mean: x, var: 0.0 }
    }

    /// Folds in `x` with weight `alpha` (0 < alpha ≤ 1; larger forgets faster).
    pub fn update(&mut self, alpha: f64, x: f64) {
        let d = x - self.mean;
        self.mean += alpha * d;
        self.var = (1.0 - alpha) * (self.var + alpha * d * d);
    }

    /// Standard deviation.
    pub fn std_dev(&self) -> f64 {
        self.var.max(0.0).sqrt()
    }

    /// How many standard deviations `x` is from the mean, with the deviation
    /// floored at `min_std` so a constant history does not make every change infinite.
    pub fn z(&self, x: f64, min_std: f64) -> f64 {
        (x - self.mean) / self.std_dev().max(min_std)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converges_to_a_constant_and_its_spread_shrinks() {
        let mut e = Ewma::starting_at(0.0);
        for _ in 0..500 {
            e.update(0.05, 10.0);
        }
        assert!((e.mean - 10.0).abs() < 1e-6, "{e:?}");
        assert!(e.var < 1e-6, "{e:?}");
        assert!(e.z(20.0, 1.0) > 9.0);
    }

    #[test]
    fn tracks_the_variance_of_an_alternating_series() {
        let mut e = Ewma::default();
        for i in 0..2000 {
            e.update(0.01, if i % 2 == 0 { 0.0 } else { 2.0 });
        }
        assert!((e.mean - 1.0).abs() < 0.05, "{e:?}");
        assert!((e.std_dev() - 1.0).abs() < 0.1, "{e:?}");
    }
}
