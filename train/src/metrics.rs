//! Sample-quality metrics for the guidance evaluation: how often a classifier
//! recognises the requested class (fidelity), how close the generated feature
//! distribution is to the real one (Fréchet distance, the FID formula), and
//! how spread out the samples of one class are (diversity). Together they
//! show the classifier-free guidance trade-off: stronger guidance buys
//! fidelity with diversity.

use nalgebra::{DMatrix, SymmetricEigen};

/// Fraction of predictions that match: the fidelity axis of the guidance
/// trade-off.
///
/// Lengths must agree and be non-zero; anything else means the caller paired
/// the wrong arrays, which a silently truncated score would hide.
pub fn accuracy(predicted: &[u32], expected: &[u32]) -> Result<f64, String> {
    if predicted.len() != expected.len() {
        return Err(format!(
            "accuracy: {} predictions for {} expected labels",
            predicted.len(),
            expected.len()
        ));
    }
    if predicted.is_empty() {
        return Err("accuracy: no predictions".to_string());
    }
    let correct = predicted
        .iter()
        .zip(expected)
        .filter(|(p, e)| p == e)
        .count();
    Ok(correct as f64 / predicted.len() as f64)
}

/// A Gaussian summary of a feature set, the form the Fréchet distance
/// compares; kept in f64 so the covariance of many samples does not lose
/// precision.
#[derive(Debug, Clone, PartialEq)]
pub struct Gaussian {
    /// Mean, `dim` values.
    pub mean: Vec<f64>,
    /// Covariance, `dim × dim`, row-major.
    pub cov: Vec<f64>,
    /// Number of features per sample.
    pub dim: usize,
    /// Number of samples it was fitted on (0 when built by hand).
    pub count: usize,
}

impl Gaussian {
    /// Fits mean and unbiased (n − 1) covariance to `n` row-major rows of
    /// `dim` features, so that small evaluation sets are not biased towards
    /// a tighter distribution.
    pub fn fit(features: &[f32], dim: usize) -> Result<Gaussian, String> {
        let n = row_count(features, dim, "Gaussian::fit")?;
        if n < 2 {
            return Err(format!(
                "Gaussian::fit: a covariance needs at least 2 samples, got {n}"
            ));
        }
        let mut mean = vec![0.0f64; dim];
        for row in features.chunks_exact(dim) {
            for (m, &x) in mean.iter_mut().zip(row) {
                *m += f64::from(x);
            }
        }
        for m in &mut mean {
            *m /= n as f64;
        }
        // Two passes (centre, then accumulate) rather than E[xxᵀ] − μμᵀ,
        // which cancels catastrophically when the mean is large.
        let mut cov = vec![0.0f64; dim * dim];
        let mut centred = vec![0.0f64; dim];
        for row in features.chunks_exact(dim) {
            for ((c, &x), &m) in centred.iter_mut().zip(row).zip(&mean) {
                *c = f64::from(x) - m;
            }
            for i in 0..dim {
                let ci = centred[i];
                let cov_row = &mut cov[i * dim..(i + 1) * dim];
                // Upper triangle only; mirrored below.
                for j in i..dim {
                    cov_row[j] += ci * centred[j];
                }
            }
        }
        let denom = (n - 1) as f64;
        for i in 0..dim {
            for j in i..dim {
                let v = cov[i * dim + j] / denom;
                cov[i * dim + j] = v;
                cov[j * dim + i] = v;
            }
        }
        Ok(Gaussian {
            mean,
            cov,
            dim,
            count: n,
        })
    }

    fn check(&self, which: &str) -> Result<(), String> {
        if self.dim == 0 {
            return Err(format!("frechet_distance: {which} has dimension 0"));
        }
        if self.mean.len() != self.dim || self.cov.len() != self.dim * self.dim {
            return Err(format!(
                "frechet_distance: {which} has dim {} but {} mean and {} covariance values",
                self.dim,
                self.mean.len(),
                self.cov.len()
            ));
        }
        if !self.mean.iter().chain(&self.cov).all(|v| v.is_finite()) {
            return Err(format!(
                "frechet_distance: {which} has non-finite mean or covariance"
            ));
        }
        Ok(())
    }

    fn cov_matrix(&self) -> DMatrix<f64> {
        let m = DMatrix::from_row_slice(self.dim, self.dim, &self.cov);
        // Round-off can leave a fitted covariance slightly asymmetric; the
        // eigen-solver assumes symmetry.
        (&m + m.transpose()) * 0.5
    }
}

/// Fréchet distance between two Gaussians, the formula behind FID:
/// ‖μa − μb‖² + Tr(Σa + Σb − 2 (Σa^½ Σb Σa^½)^½).
///
/// Both square roots come from symmetric eigen-decompositions, which stay
/// real (unlike a general matrix square root of Σa Σb); eigenvalues that
/// round-off pushed slightly below zero are taken as zero, and so is a final
/// result a hair below zero.
pub fn frechet_distance(a: &Gaussian, b: &Gaussian) -> Result<f64, String> {
    a.check("first Gaussian")?;
    b.check("second Gaussian")?;
    if a.dim != b.dim {
        return Err(format!(
            "frechet_distance: dimensions differ ({} vs {})",
            a.dim, b.dim
        ));
    }
    let mean_term: f64 = a
        .mean
        .iter()
        .zip(&b.mean)
        .map(|(x, y)| (x - y) * (x - y))
        .sum();
    let cov_a = a.cov_matrix();
    let cov_b = b.cov_matrix();
    let sqrt_a = psd_sqrt(cov_a.clone())?;
    let inner = &sqrt_a * &cov_b * &sqrt_a;
    let inner = (&inner + inner.transpose()) * 0.5;
    let trace_sqrt_inner: f64 = eigen(inner)?
        .eigenvalues
        .iter()
        .map(|&l| l.max(0.0).sqrt())
        .sum();
    let distance = mean_term + cov_a.trace() + cov_b.trace() - 2.0 * trace_sqrt_inner;
    Ok(distance.max(0.0))
}

fn eigen(m: DMatrix<f64>) -> Result<SymmetricEigen<f64, nalgebra::Dyn>, String> {
    // A bounded iteration count turns a pathological matrix into an error
    // rather than a hang (nalgebra's `new` iterates without limit).
    let max_iterations = 1000 * m.nrows().max(1);
    SymmetricEigen::try_new(m, f64::EPSILON, max_iterations)
        .ok_or_else(|| "frechet_distance: eigen-decomposition did not converge".to_string())
}

/// The symmetric positive semi-definite square root V·diag(√λ)·Vᵀ.
fn psd_sqrt(m: DMatrix<f64>) -> Result<DMatrix<f64>, String> {
    let mut e = eigen(m)?;
    e.eigenvalues.apply(|l| *l = l.max(0.0).sqrt());
    Ok(e.recompose())
}

/// Mean Euclidean distance over all unordered pairs of rows: a diversity
/// score, higher when samples are more spread out.
///
/// Returns 0 when there are fewer than two rows (or `dim` is 0), since no
/// pair means no spread; a trailing partial row is ignored.
pub fn mean_pairwise_distance(features: &[f32], dim: usize) -> f64 {
    if dim == 0 {
        return 0.0;
    }
    let rows: Vec<&[f32]> = features.chunks_exact(dim).collect();
    mean_pairwise(&rows)
}

fn mean_pairwise(rows: &[&[f32]]) -> f64 {
    let n = rows.len();
    if n < 2 {
        return 0.0;
    }
    let mut total = 0.0f64;
    for (i, a) in rows.iter().enumerate() {
        for b in &rows[i + 1..] {
            let squared: f64 = a
                .iter()
                .zip(b.iter())
                .map(|(&x, &y)| {
                    let d = f64::from(x) - f64::from(y);
                    d * d
                })
                .sum();
            total += squared.sqrt();
        }
    }
    total / (n * (n - 1) / 2) as f64
}

/// Within-class diversity: the mean pairwise distance inside each class with
/// at least two items, averaged over those classes.
///
/// Measured per class because guidance collapses each class towards its
/// mode; pooling all classes would mostly measure the distance between
/// classes instead.
pub fn class_diversity(
    features: &[f32],
    dim: usize,
    labels: &[u32],
    num_classes: usize,
) -> Result<f64, String> {
    let n = row_count(features, dim, "class_diversity")?;
    if labels.len() != n {
        return Err(format!(
            "class_diversity: {} labels for {n} feature rows",
            labels.len()
        ));
    }
    let mut by_class: Vec<Vec<&[f32]>> = vec![Vec::new(); num_classes];
    for (row, &label) in features.chunks_exact(dim).zip(labels) {
        let class = by_class
            .get_mut(label as usize)
            .ok_or_else(|| format!("class_diversity: label {label} is outside 0..{num_classes}"))?;
        class.push(row);
    }
    let per_class: Vec<f64> = by_class
        .iter()
        .filter(|rows| rows.len() >= 2)
        .map(|rows| mean_pairwise(rows))
        .collect();
    if per_class.is_empty() {
        return Err("class_diversity: no class has at least 2 items".to_string());
    }
    Ok(per_class.iter().sum::<f64>() / per_class.len() as f64)
}

/// Number of `dim`-wide rows in `features`, or why it has none.
// `is_multiple_of` needs Rust 1.87; the workspace's MSRV is 1.85.
#[allow(clippy::manual_is_multiple_of)]
fn row_count(features: &[f32], dim: usize, what: &str) -> Result<usize, String> {
    if dim == 0 {
        return Err(format!("{what}: dimension is 0"));
    }
    if features.len() % dim != 0 {
        return Err(format!(
            "{what}: {} values are not a whole number of rows of {dim}",
            features.len()
        ));
    }
    Ok(features.len() / dim)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(actual: f64, expected: f64, tol: f64) {
        assert!(
            (actual - expected).abs() <= tol * (1.0 + expected.abs()),
            "expected {expected}, got {actual}"
        );
    }

    fn gaussian(mean: &[f64], cov: &[f64]) -> Gaussian {
        Gaussian {
            mean: mean.to_vec(),
            cov: cov.to_vec(),
            dim: mean.len(),
            count: 0,
        }
    }

    fn diag(values: &[f64]) -> Vec<f64> {
        let d = values.len();
        let mut m = vec![0.0; d * d];
        for (i, &v) in values.iter().enumerate() {
            m[i * d + i] = v;
        }
        m
    }

    /// R·M·Rᵀ for 2×2 row-major M and the rotation by `angle`.
    fn rotate_cov(m: &[f64], angle: f64) -> Vec<f64> {
        let (s, c) = angle.sin_cos();
        let r = [[c, -s], [s, c]];
        let mut out = vec![0.0; 4];
        for i in 0..2 {
            for j in 0..2 {
                let mut v = 0.0;
                for k in 0..2 {
                    for l in 0..2 {
                        v += r[i][k] * m[k * 2 + l] * r[j][l];
                    }
                }
                out[i * 2 + j] = v;
            }
        }
        out
    }

    fn rotate_vec(v: &[f64], angle: f64) -> Vec<f64> {
        let (s, c) = angle.sin_cos();
        vec![c * v[0] - s * v[1], s * v[0] + c * v[1]]
    }

    // Two non-commuting SPD covariances (ΣaΣb ≠ ΣbΣa), so the matrix square
    // root is really exercised.
    const COV_A: [f64; 4] = [2.0, 0.5, 0.5, 1.0];
    const COV_B: [f64; 4] = [1.0, -0.3, -0.3, 3.0];

    #[test]
    fn accuracy_counts_matches() {
        assert_eq!(accuracy(&[1, 2, 3, 4], &[1, 2, 0, 4]), Ok(0.75));
        assert_eq!(accuracy(&[7], &[7]), Ok(1.0));
        assert_eq!(accuracy(&[0, 0], &[1, 1]), Ok(0.0));
    }

    #[test]
    fn accuracy_rejects_mismatched_or_empty() {
        assert!(accuracy(&[1, 2, 3], &[1, 2]).is_err());
        assert!(accuracy(&[], &[1]).is_err());
        assert!(accuracy(&[], &[]).is_err());
    }

    #[test]
    fn fit_matches_hand_computed_moments() {
        // Rows (1,2,0), (3,6,1), (5,4,-1): mean (3,4,0); deviations
        // (-2,-2,0), (0,2,1), (2,0,-1), summed outer products / (3 - 1).
        let features = [1.0, 2.0, 0.0, 3.0, 6.0, 1.0, 5.0, 4.0, -1.0];
        let g = Gaussian::fit(&features, 3).unwrap();
        assert_eq!(g.dim, 3);
        assert_eq!(g.count, 3);
        for (a, e) in g.mean.iter().zip([3.0, 4.0, 0.0]) {
            close(*a, e, 1e-12);
        }
        let expected = [4.0, 2.0, -1.0, 2.0, 4.0, 1.0, -1.0, 1.0, 1.0];
        for (a, e) in g.cov.iter().zip(expected) {
            close(*a, e, 1e-12);
        }
    }

    #[test]
    fn fit_keeps_precision_far_from_origin() {
        // A naive E[x²] − μ² in f32 would lose the unit variance entirely.
        let features = [1.0e6f32, 1.0e6 + 2.0];
        let g = Gaussian::fit(&features, 1).unwrap();
        close(g.mean[0], 1.0e6 + 1.0, 1e-12);
        close(g.cov[0], 2.0, 1e-12);
    }

    #[test]
    fn fit_rejects_bad_shapes() {
        assert!(Gaussian::fit(&[1.0, 2.0], 0).is_err());
        assert!(Gaussian::fit(&[1.0, 2.0, 3.0], 2).is_err());
        assert!(Gaussian::fit(&[1.0, 2.0], 2).is_err()); // one sample
        assert!(Gaussian::fit(&[], 2).is_err()); // no samples
    }

    #[test]
    fn frechet_diagonal_matches_closed_form() {
        let mu1: [f64; 4] = [0.0, 1.0, -2.0, 0.5];
        let mu2 = [1.0, 1.0, 0.0, -0.5];
        let a: [f64; 4] = [1.0, 4.0, 0.25, 9.0];
        let b: [f64; 4] = [2.0, 1.0, 0.25, 0.5];
        let expected: f64 = mu1
            .iter()
            .zip(&mu2)
            .map(|(x, y)| (x - y) * (x - y))
            .sum::<f64>()
            + a.iter()
                .zip(&b)
                .map(|(x, y)| (x.sqrt() - y.sqrt()).powi(2))
                .sum::<f64>();
        let fd = frechet_distance(&gaussian(&mu1, &diag(&a)), &gaussian(&mu2, &diag(&b))).unwrap();
        close(fd, expected, 1e-10);
    }

    #[test]
    fn frechet_is_zero_for_identical_gaussians() {
        let g = gaussian(&[0.3, -1.0], &COV_A);
        close(frechet_distance(&g, &g).unwrap(), 0.0, 1e-10);
        let fitted = Gaussian::fit(&[1.0, 2.0, 0.0, 3.0, 6.0, 1.0, 5.0, 4.0, -1.0], 3).unwrap();
        close(frechet_distance(&fitted, &fitted).unwrap(), 0.0, 1e-10);
    }

    #[test]
    fn frechet_matches_2x2_closed_form_for_non_commuting_covariances() {
        // Σa^½ Σb Σa^½ is similar to Σa Σb, so it has trace tr(Σa Σb) and
        // determinant det Σa · det Σb; for a 2×2 SPD M,
        // Tr √M = √(tr M + 2 √det M).
        let [a11, a12, _, a22] = COV_A;
        let [b11, b12, _, b22] = COV_B;
        let tr_ab = a11 * b11 + 2.0 * a12 * b12 + a22 * b22;
        let det = (a11 * a22 - a12 * a12) * (b11 * b22 - b12 * b12);
        let tr_sqrt = (tr_ab + 2.0 * det.sqrt()).sqrt();
        let (mu1, mu2) = ([1.0, 2.0], [-0.5, 0.0]);
        let expected = (1.5f64 * 1.5 + 2.0 * 2.0) + (a11 + a22) + (b11 + b22) - 2.0 * tr_sqrt;
        let fd = frechet_distance(&gaussian(&mu1, &COV_A), &gaussian(&mu2, &COV_B)).unwrap();
        close(fd, expected, 1e-10);
    }

    #[test]
    fn frechet_is_symmetric() {
        let a = gaussian(&[1.0, 2.0], &COV_A);
        let b = gaussian(&[-0.5, 0.0], &COV_B);
        let ab = frechet_distance(&a, &b).unwrap();
        let ba = frechet_distance(&b, &a).unwrap();
        assert!(ab > 0.1);
        close(ab, ba, 1e-10);
    }

    #[test]
    fn frechet_is_rotation_invariant() {
        let angle = 0.7;
        let (mu1, mu2) = ([1.0, 2.0], [-0.5, 0.0]);
        let plain = frechet_distance(&gaussian(&mu1, &COV_A), &gaussian(&mu2, &COV_B)).unwrap();
        let rotated = frechet_distance(
            &gaussian(&rotate_vec(&mu1, angle), &rotate_cov(&COV_A, angle)),
            &gaussian(&rotate_vec(&mu2, angle), &rotate_cov(&COV_B, angle)),
        )
        .unwrap();
        close(rotated, plain, 1e-10);
        // Rotating the covariances only, with the means left alone, keeps
        // the covariance term too.
        let same_means = frechet_distance(
            &gaussian(&mu1, &rotate_cov(&COV_A, angle)),
            &gaussian(&mu2, &rotate_cov(&COV_B, angle)),
        )
        .unwrap();
        close(same_means, plain, 1e-10);
    }

    #[test]
    fn frechet_tolerates_singular_covariances() {
        // Rank-deficient covariances (fewer samples than features) have zero
        // eigenvalues that round-off can make slightly negative.
        let a = gaussian(&[0.0, 0.0], &[1.0, 1.0, 1.0, 1.0]);
        let b = gaussian(&[0.0, 0.0], &[4.0, 4.0, 4.0, 4.0]);
        // Both are rank 1 along (1,1): variances 2 and 8 → (√2 − √8)² = 2.
        close(frechet_distance(&a, &b).unwrap(), 2.0, 1e-10);
    }

    #[test]
    fn frechet_rejects_bad_gaussians() {
        let two = gaussian(&[0.0, 0.0], &COV_A);
        let one = gaussian(&[0.0], &[1.0]);
        assert!(frechet_distance(&two, &one).is_err());
        assert!(frechet_distance(&one, &two).is_err());
        let short_cov = gaussian(&[0.0, 0.0], &[1.0, 0.0, 0.0]);
        assert!(frechet_distance(&two, &short_cov).is_err());
        let empty = gaussian(&[], &[]);
        assert!(frechet_distance(&empty, &empty).is_err());
        let nan = gaussian(&[f64::NAN, 0.0], &COV_A);
        assert!(frechet_distance(&two, &nan).is_err());
        let inf = gaussian(&[0.0, 0.0], &[f64::INFINITY, 0.0, 0.0, 1.0]);
        assert!(frechet_distance(&inf, &two).is_err());
    }

    #[test]
    fn mean_pairwise_distance_of_3_4_5_triangle() {
        let points = [0.0, 0.0, 3.0, 0.0, 0.0, 4.0];
        close(mean_pairwise_distance(&points, 2), 4.0, 1e-12);
    }

    #[test]
    fn mean_pairwise_distance_without_pairs_is_zero() {
        assert_eq!(mean_pairwise_distance(&[], 2), 0.0);
        assert_eq!(mean_pairwise_distance(&[1.0, 2.0], 2), 0.0);
        assert_eq!(mean_pairwise_distance(&[1.0, 2.0], 0), 0.0);
    }

    #[test]
    fn class_diversity_averages_per_class_means() {
        // Class 0: the 3-4-5 triangle (mean 4); class 1: two points 2 apart
        // (mean 2); class 2: a single item, skipped; class 3: empty.
        let features = [
            0.0, 0.0, //
            10.0, 10.0, //
            3.0, 0.0, //
            12.0, 10.0, //
            0.0, 4.0, //
            -7.0, 5.0,
        ];
        let labels = [0, 1, 0, 1, 0, 2];
        close(
            class_diversity(&features, 2, &labels, 4).unwrap(),
            3.0,
            1e-12,
        );
    }

    #[test]
    fn class_diversity_rejects_bad_input() {
        let features = [0.0, 0.0, 1.0, 1.0, 2.0, 2.0];
        // Label count differs from row count.
        assert!(class_diversity(&features, 2, &[0, 0], 1).is_err());
        // No class has two items.
        assert!(class_diversity(&features, 2, &[0, 1, 2], 3).is_err());
        // Label outside the class range.
        assert!(class_diversity(&features, 2, &[0, 0, 5], 3).is_err());
        // Bad shapes.
        assert!(class_diversity(&features, 0, &[0, 0, 0], 1).is_err());
        assert!(class_diversity(&features, 4, &[0], 1).is_err());
        assert!(class_diversity(&[], 2, &[], 1).is_err());
    }
}
