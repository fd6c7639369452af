//! Preprocessing fitted on the training set and stored with a checkpoint.
//!
//! Three kinds:
//! - `none`: the images stay `u8 / 255`;
//! - `mean-std`: per channel, subtract the training mean and divide by the
//!   training standard deviation;
//! - `gcn-zca`: global contrast normalisation, then ZCA whitening, as in
//!   Goodfellow et al. 2013 (maxout) and Springenberg et al. 2015, following
//!   pylearn2 (`CIFAR10(gcn=55.)` then `preprocessing.ZCA()`):
//!   - GCN, per image `x` of `D = C*H*W` values: `x <- x - mean(x)`, then
//!     `x <- scale * x / sqrt(sqrt_bias + sum(x^2))` with `scale = 55`,
//!     `sqrt_bias = 0`; a divisor below `1e-8` is replaced by 1 (a constant
//!     image stays zero). Every image so gets an L2 norm of 55, i.e. a
//!     root-mean-square of `55 / sqrt(D)` (about 1 for CIFAR's 3072 values).
//!     Images here are in `0..=1`, pylearn2's in `0..=255`: with
//!     `sqrt_bias = 0` GCN does not depend on that scale.
//!   - ZCA, fitted on the GCN'd training images: `mean` of each of the D
//!     features, covariance `S = Xc^T Xc / m` of the centred images,
//!     eigendecomposition `S = U diag(lambda) U^T` and
//!     `W = U diag(1 / sqrt(lambda + bias)) U^T` with pylearn2's default
//!     `filter_bias = 0.1` ([`FitOptions::zca_bias`]); applied as
//!     `x <- (x - mean) W`.
//!
//! ZCA is fitted on at most [`FitOptions::zca_max_images`] images (default
//! 20,000, evenly spaced over the training set) so that D = 3072 fits in
//! seconds; with 20,000 samples the 3072 x 3072 covariance is well
//! determined. The covariance and `W` are `f32` products computed with faer,
//! the eigendecomposition is `f64`; `W` is stored as `f32`.
//!
//! Storage: [`Preprocess`] is serde-serialisable as a whole, and for a
//! safetensors checkpoint [`Preprocess::header`] (small, serde) plus
//! [`Preprocess::to_tensors`] (flat named `f32` tensors) round-trip through
//! [`Preprocess::from_tensors`].

use faer::linalg::matmul::matmul;
use faer::linalg::matmul::triangular::{self, BlockStructure};
use faer::{Accum, Mat, MatMut, MatRef, Par, Side};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::{DataError, Dataset, Result};
use crate::plan::Shape;
pub use ::plan::recipe::PreprocessKind;

/// The name prefix of every preprocessing tensor.
pub const TENSOR_PREFIX: &str = "preprocess.";
const MEAN_TENSOR: &str = "preprocess.mean";
const STD_TENSOR: &str = "preprocess.std";
const ZCA_MEAN_TENSOR: &str = "preprocess.zca_mean";
const ZCA_MATRIX_TENSOR: &str = "preprocess.zca_matrix";
/// The ZCA matrix's upper triangle, row by row (`W[i][i..D]` for each `i`):
/// how a bit-symmetric matrix is stored, in half the bytes.
const ZCA_UPPER_TENSOR: &str = "preprocess.zca_matrix_upper";

/// A named flat `f32` tensor: `(name, dims, values)`.
pub type NamedTensor = (String, Vec<usize>, Vec<f32>);

/// A checkpoint names its preprocessing kind as the command line does.
mod kind_by_name {
    use super::PreprocessKind;
    use serde::{de::Error, Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(kind: &PreprocessKind, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(kind.name())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<PreprocessKind, D::Error> {
        let name = String::deserialize(d)?;
        name.parse().map_err(D::Error::custom)
    }
}

/// Parameters of fitting.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct FitOptions {
    /// GCN's target L2 norm per image (pylearn2's `gcn=55.`).
    pub gcn_scale: f32,
    /// Added to each covariance eigenvalue before the inverse square root
    /// (pylearn2's ZCA `filter_bias`, default 0.1).
    pub zca_bias: f32,
    /// At most this many training images (evenly spaced) fit the ZCA.
    pub zca_max_images: usize,
}

impl Default for FitOptions {
    fn default() -> Self {
        Self {
            gcn_scale: 55.0,
            zca_bias: 0.1,
            zca_max_images: 20_000,
        }
    }
}

/// Global contrast normalisation of each image (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Gcn {
    pub scale: f32,
    pub sqrt_bias: f32,
    pub min_divisor: f32,
}

impl Gcn {
    pub fn new(scale: f32) -> Self {
        Self {
            scale,
            sqrt_bias: 0.0,
            min_divisor: 1e-8,
        }
    }

    /// Normalises one image in place.
    pub fn apply_image(&self, image: &mut [f32]) {
        if image.is_empty() {
            return;
        }
        let mean = image.iter().map(|&x| f64::from(x)).sum::<f64>() / image.len() as f64;
        let sum_sq: f64 = image.iter().map(|&x| (f64::from(x) - mean).powi(2)).sum();
        let mut divisor = (f64::from(self.sqrt_bias) + sum_sq).sqrt() / f64::from(self.scale);
        if divisor < f64::from(self.min_divisor) {
            divisor = 1.0;
        }
        for x in image.iter_mut() {
            *x = ((f64::from(*x) - mean) / divisor) as f32;
        }
    }

    /// Normalises every image of `images` (`dim` values each), in parallel.
    pub fn apply(&self, images: &mut [f32], dim: usize) {
        images
            .par_chunks_mut(dim.max(1))
            .for_each(|image| self.apply_image(image));
    }
}

/// A fitted ZCA whitening transform of `D = mean.len()` features.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Zca {
    /// The eigenvalue bias it was fitted with.
    pub bias: f32,
    /// How many images it was fitted on.
    pub fit_images: usize,
    /// Mean of each feature over the fitting images.
    pub mean: Vec<f32>,
    /// `W`, `D x D`, symmetric, row-major. Fitting makes it symmetric bit
    /// for bit (the upper triangle mirrored), so that its upper triangle
    /// alone stores it exactly.
    pub matrix: Vec<f32>,
}

/// Images per matrix product when applying ZCA (bounds the scratch memory).
const ZCA_CHUNK: usize = 2048;

impl Zca {
    /// Number of features.
    pub fn dim(&self) -> usize {
        self.mean.len()
    }

    /// Fits on `images` (`dim` values each), using at most `max_images`
    /// evenly spaced ones.
    pub fn fit(images: &[f32], dim: usize, bias: f32, max_images: usize) -> Result<Self> {
        Self::fit_sample(evenly_spaced(images, dim, max_images), dim, bias)
    }

    /// Fits on all of `sample` (`dim` values per image), which it centres in
    /// place.
    fn fit_sample(mut sample: Vec<f32>, dim: usize, bias: f32) -> Result<Self> {
        let m = sample.len().checked_div(dim).unwrap_or(0);
        if m == 0 {
            return Err(DataError::EmptyDataset);
        }
        sample.truncate(m * dim);
        let mean = column_mean(&sample, dim);
        sample.par_chunks_mut(dim).for_each(|row| {
            for (x, &mu) in row.iter_mut().zip(&mean) {
                *x -= mu;
            }
        });

        let x = MatRef::from_row_major_slice(&sample, m, dim);
        // Only the lower triangle of the symmetric covariance is computed
        // (half the work) and read.
        let mut cov = Mat::<f32>::zeros(dim, dim);
        triangular::matmul(
            cov.as_mut(),
            BlockStructure::TriangularLower,
            Accum::Replace,
            x.transpose(),
            BlockStructure::Rectangular,
            x,
            BlockStructure::Rectangular,
            1.0 / m as f32,
            Par::rayon(0),
        );
        drop(sample);
        let cov = Mat::<f64>::from_fn(dim, dim, |i, j| f64::from(cov[(i.max(j), i.min(j))]));
        let eigen = cov
            .self_adjoint_eigen(Side::Lower)
            .map_err(|_| DataError::Eigen)?;
        let eigenvalues = eigen.S().column_vector();
        let u = eigen.U();
        // U diag(1 / sqrt(lambda + bias)), then times U^T; small negative
        // eigenvalues are rounding noise of a positive semi-definite matrix.
        let scaled = Mat::<f32>::from_fn(dim, dim, |i, j| {
            let lambda = eigenvalues[j].max(0.0);
            (u[(i, j)] / (lambda + f64::from(bias)).sqrt()) as f32
        });
        let u32 = Mat::<f32>::from_fn(dim, dim, |i, j| u[(i, j)] as f32);
        let mut matrix = vec![0.0f32; dim * dim];
        matmul(
            MatMut::from_row_major_slice_mut(&mut matrix, dim, dim),
            Accum::Replace,
            scaled.as_ref(),
            u32.transpose(),
            1.0,
            Par::rayon(0),
        );
        let mut zca = Self {
            bias,
            fit_images: m,
            mean,
            matrix,
        };
        zca.symmetrize();
        Ok(zca)
    }

    /// Whether `W` equals its transpose bit for bit.
    pub fn is_symmetric(&self) -> bool {
        let dim = self.dim();
        (0..dim).all(|i| {
            (i + 1..dim)
                .all(|j| self.matrix[i * dim + j].to_bits() == self.matrix[j * dim + i].to_bits())
        })
    }

    /// Makes `W` symmetric bit for bit by mirroring its upper triangle
    /// (the two triangles of a fitted matrix differ by rounding only: at
    /// most a few units in the last place).
    pub fn symmetrize(&mut self) {
        let dim = self.dim();
        for i in 0..dim {
            for j in i + 1..dim {
                self.matrix[j * dim + i] = self.matrix[i * dim + j];
            }
        }
    }

    /// The upper triangle of `W`, row by row.
    fn upper(&self) -> Vec<f32> {
        let dim = self.dim();
        let mut packed = Vec::with_capacity(dim * (dim + 1) / 2);
        for i in 0..dim {
            packed.extend_from_slice(&self.matrix[i * dim + i..(i + 1) * dim]);
        }
        packed
    }

    /// The symmetric `D x D` matrix whose upper triangle is `packed`.
    fn from_upper(packed: &[f32], dim: usize) -> Vec<f32> {
        let mut matrix = vec![0.0f32; dim * dim];
        let mut rest = packed;
        for i in 0..dim {
            let (row, tail) = rest.split_at(dim - i);
            matrix[i * dim + i..(i + 1) * dim].copy_from_slice(row);
            for (j, &value) in (i..dim).zip(row) {
                matrix[j * dim + i] = value;
            }
            rest = tail;
        }
        matrix
    }

    /// Whitens `images` (`D` values each) in place.
    pub fn apply(&self, images: &mut [f32]) {
        let dim = self.dim();
        if dim == 0 {
            return;
        }
        let whole = images.len() / dim * dim;
        let images = &mut images[..whole];
        let w = MatRef::from_row_major_slice(&self.matrix, dim, dim);
        let mut scratch = vec![0.0f32; ZCA_CHUNK.min(images.len() / dim) * dim];
        for chunk in images.chunks_mut(ZCA_CHUNK * dim) {
            let rows = chunk.len() / dim;
            chunk.par_chunks_mut(dim).for_each(|row| {
                for (x, &mu) in row.iter_mut().zip(&self.mean) {
                    *x -= mu;
                }
            });
            let out = &mut scratch[..rows * dim];
            matmul(
                MatMut::from_row_major_slice_mut(out, rows, dim),
                Accum::Replace,
                MatRef::from_row_major_slice(chunk, rows, dim),
                w,
                1.0,
                Par::rayon(0),
            );
            chunk.copy_from_slice(out);
        }
    }
}

/// At most `max_images` images of `images` (`dim` values each), evenly
/// spaced over all of them, copied.
fn evenly_spaced(images: &[f32], dim: usize, max_images: usize) -> Vec<f32> {
    let n = images.len().checked_div(dim).unwrap_or(0);
    let m = n.min(max_images);
    let mut sample = vec![0.0f32; m * dim];
    sample
        .par_chunks_mut(dim.max(1))
        .enumerate()
        .for_each(|(row, out)| {
            let index = row * n / m;
            out.copy_from_slice(&images[index * dim..(index + 1) * dim]);
        });
    sample
}

/// Mean of each of the `dim` columns of a row-major matrix, in `f64`.
fn column_mean(rows: &[f32], dim: usize) -> Vec<f32> {
    let n = rows.len() / dim;
    let sums = rows
        .par_chunks(dim)
        .fold(
            || vec![0.0f64; dim],
            |mut acc, row| {
                for (a, &x) in acc.iter_mut().zip(row) {
                    *a += f64::from(x);
                }
                acc
            },
        )
        .reduce(
            || vec![0.0f64; dim],
            |mut a, b| {
                for (x, y) in a.iter_mut().zip(b) {
                    *x += y;
                }
                a
            },
        );
    sums.into_iter()
        .map(|sum| (sum / n.max(1) as f64) as f32)
        .collect()
}

/// The fitted parameters of each kind.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Method {
    None,
    /// Per channel: `x <- (x - mean[c]) / std[c]`.
    MeanStd {
        mean: Vec<f32>,
        std: Vec<f32>,
    },
    GcnZca {
        gcn: Gcn,
        zca: Zca,
    },
}

/// A fitted preprocessing for images of one shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Preprocess {
    pub shape: Shape,
    pub method: Method,
}

/// The small part of a [`Preprocess`]: everything but its tensors. Unknown
/// fields are refused: a misspelt optional field would otherwise read as
/// absent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PreprocessHeader {
    #[serde(with = "kind_by_name")]
    pub kind: PreprocessKind,
    pub shape: Shape,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gcn: Option<Gcn>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zca_bias: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zca_fit_images: Option<usize>,
}

impl Preprocess {
    /// The identity for images of `shape`.
    pub fn identity(shape: Shape) -> Self {
        Self {
            shape,
            method: Method::None,
        }
    }

    /// Fits `kind` on a training set with the default [`FitOptions`].
    pub fn fit(kind: PreprocessKind, train: &Dataset) -> Result<Self> {
        Self::fit_with(kind, train, &FitOptions::default())
    }

    /// Fits `kind` on a training set.
    pub fn fit_with(kind: PreprocessKind, train: &Dataset, options: &FitOptions) -> Result<Self> {
        Self::fit_images(kind, &train.images, train.shape, options)
    }

    /// Fits `kind` on `images` of `shape` (channels-last, `u8 / 255`).
    pub fn fit_images(
        kind: PreprocessKind,
        images: &[f32],
        shape: Shape,
        options: &FitOptions,
    ) -> Result<Self> {
        let dim = shape.len();
        if dim == 0 || images.len() < dim {
            return Err(DataError::EmptyDataset);
        }
        let method = match kind {
            PreprocessKind::None => Method::None,
            PreprocessKind::Normalize => {
                let (mean, std) = channel_mean_std(images, shape.c);
                Method::MeanStd { mean, std }
            }
            PreprocessKind::GcnZca => {
                let gcn = Gcn::new(options.gcn_scale);
                let mut sample = evenly_spaced(images, dim, options.zca_max_images);
                gcn.apply(&mut sample, dim);
                let zca = Zca::fit_sample(sample, dim, options.zca_bias)?;
                Method::GcnZca { gcn, zca }
            }
        };
        Ok(Self { shape, method })
    }

    pub fn kind(&self) -> PreprocessKind {
        match self.method {
            Method::None => PreprocessKind::None,
            Method::MeanStd { .. } => PreprocessKind::Normalize,
            Method::GcnZca { .. } => PreprocessKind::GcnZca,
        }
    }

    /// Applies the preprocessing to `n` channels-last images in place
    /// (in parallel).
    pub fn apply(&self, images: &mut [f32], n: usize) -> Result<()> {
        let dim = self.shape.len();
        if images.len() != n * dim {
            return Err(DataError::ImageSize {
                expected: self.shape.to_string(),
                found: images.len(),
                n,
            });
        }
        match &self.method {
            Method::None => {}
            Method::MeanStd { mean, std } => {
                let channels = mean.len();
                images.par_chunks_mut(dim).for_each(|image| {
                    for pixel in image.chunks_exact_mut(channels) {
                        for ((x, &mu), &sigma) in pixel.iter_mut().zip(mean).zip(std) {
                            *x = (*x - mu) / sigma;
                        }
                    }
                });
            }
            Method::GcnZca { gcn, zca } => {
                gcn.apply(images, dim);
                zca.apply(images);
            }
        }
        Ok(())
    }

    /// Applies the preprocessing to a whole data set in place.
    pub fn apply_dataset(&self, dataset: &mut Dataset) -> Result<()> {
        let n = dataset.len();
        self.apply(&mut dataset.images, n)
    }

    /// The small, serde-serialisable description (no tensors).
    pub fn header(&self) -> PreprocessHeader {
        let mut header = PreprocessHeader {
            kind: self.kind(),
            shape: self.shape,
            gcn: None,
            zca_bias: None,
            zca_fit_images: None,
        };
        if let Method::GcnZca { gcn, zca } = &self.method {
            header.gcn = Some(*gcn);
            header.zca_bias = Some(zca.bias);
            header.zca_fit_images = Some(zca.fit_images);
        }
        header
    }

    /// The fitted tensors, named `preprocess.*`: `mean` and `std` `[C]` for
    /// mean-std; `zca_mean` `[D]` and, for gcn-zca, the whitening matrix as
    /// `zca_matrix_upper` `[D (D + 1) / 2]` (its upper triangle) when it is
    /// symmetric bit for bit, as every matrix fitted since that form exists
    /// is, else whole as `zca_matrix` `[D, D]`: either way exactly.
    pub fn to_tensors(&self) -> Vec<NamedTensor> {
        self.tensors(true)
    }

    /// The fitted tensors with the whitening matrix always whole
    /// (`zca_matrix` `[D, D]`): for formats read by other programs
    /// (PyTorch's state dict, ONNX), which multiply by the whole matrix.
    pub fn to_tensors_whole(&self) -> Vec<NamedTensor> {
        self.tensors(false)
    }

    /// [`Preprocess::to_tensors`], with the upper triangle of a symmetric
    /// whitening matrix when `packed`.
    fn tensors(&self, packed: bool) -> Vec<NamedTensor> {
        match &self.method {
            Method::None => Vec::new(),
            Method::MeanStd { mean, std } => vec![
                (MEAN_TENSOR.to_string(), vec![mean.len()], mean.clone()),
                (STD_TENSOR.to_string(), vec![std.len()], std.clone()),
            ],
            Method::GcnZca { zca, .. } => {
                let dim = zca.dim();
                let matrix = if packed && zca.is_symmetric() {
                    (
                        ZCA_UPPER_TENSOR.to_string(),
                        vec![dim * (dim + 1) / 2],
                        zca.upper(),
                    )
                } else {
                    (
                        ZCA_MATRIX_TENSOR.to_string(),
                        vec![dim, dim],
                        zca.matrix.clone(),
                    )
                };
                vec![
                    (ZCA_MEAN_TENSOR.to_string(), vec![dim], zca.mean.clone()),
                    matrix,
                ]
            }
        }
    }

    /// The names this preprocessing's tensors may have in a file: those of
    /// [`Preprocess::to_tensors`], and for gcn-zca both forms of the
    /// whitening matrix (a symmetric matrix may have been written whole by
    /// an older version).
    pub fn tensor_names(&self) -> Vec<&'static str> {
        match &self.method {
            Method::None => Vec::new(),
            Method::MeanStd { .. } => vec![MEAN_TENSOR, STD_TENSOR],
            Method::GcnZca { .. } => vec![ZCA_MEAN_TENSOR, ZCA_MATRIX_TENSOR, ZCA_UPPER_TENSOR],
        }
    }

    /// Makes a ZCA whitening matrix symmetric bit for bit (see
    /// [`Zca::symmetrize`]) so that it is stored as its upper triangle;
    /// other preprocessing is left as it is.
    pub fn symmetrize(&mut self) {
        if let Method::GcnZca { zca, .. } = &mut self.method {
            zca.symmetrize();
        }
    }

    /// Rebuilds a preprocessing from its header and tensors (other tensors
    /// in `tensors` are ignored), refusing values that would turn images
    /// into NaN or infinities: every tensor value and header number must be
    /// finite, a standard deviation and the GCN scale positive, the biases
    /// and the GCN divisor floor at least 0.
    pub fn from_tensors(header: &PreprocessHeader, tensors: &[NamedTensor]) -> Result<Self> {
        let preprocess = Self::from_tensors_unchecked(header, tensors)?;
        preprocess.check()?;
        Ok(preprocess)
    }

    /// The checks of [`Preprocess::from_tensors`].
    fn check(&self) -> Result<()> {
        let bad_tensor = |name: &str, reason: String| DataError::BadPreprocessTensor {
            name: name.to_string(),
            reason,
        };
        let tensors: Vec<(&str, &[f32])> = match &self.method {
            Method::None => Vec::new(),
            Method::MeanStd { mean, std } => vec![(MEAN_TENSOR, mean), (STD_TENSOR, std)],
            Method::GcnZca { zca, .. } => {
                vec![
                    (ZCA_MEAN_TENSOR, &zca.mean),
                    (ZCA_MATRIX_TENSOR, &zca.matrix),
                ]
            }
        };
        for (name, values) in tensors {
            if let Some((index, value)) = values.iter().enumerate().find(|(_, v)| !v.is_finite()) {
                return Err(bad_tensor(name, format!("holds {value} at index {index}")));
            }
        }
        match &self.method {
            Method::None => {}
            Method::MeanStd { std, .. } => {
                if let Some((channel, sigma)) = std.iter().enumerate().find(|(_, s)| **s <= 0.0) {
                    return Err(bad_tensor(
                        STD_TENSOR,
                        format!(
                            "says the std of channel {channel} is {sigma}; a fitted standard deviation is positive"
                        ),
                    ));
                }
            }
            Method::GcnZca { gcn, zca } => {
                let numbers = [
                    ("gcn.scale", gcn.scale, gcn.scale > 0.0),
                    ("gcn.sqrt_bias", gcn.sqrt_bias, gcn.sqrt_bias >= 0.0),
                    ("gcn.min_divisor", gcn.min_divisor, gcn.min_divisor >= 0.0),
                    ("zca_bias", zca.bias, zca.bias >= 0.0),
                ];
                if let Some((name, value, _)) = numbers
                    .iter()
                    .find(|(_, value, ok)| !value.is_finite() || !ok)
                {
                    return Err(DataError::BadPreprocessHeader {
                        reason: format!("`{name}` is {value}, out of range"),
                    });
                }
            }
        }
        Ok(())
    }

    /// [`Preprocess::from_tensors`] without the value checks.
    fn from_tensors_unchecked(header: &PreprocessHeader, tensors: &[NamedTensor]) -> Result<Self> {
        let take = |name: &str, dims: Vec<usize>| -> Result<Vec<f32>> {
            let (_, found_dims, values) = tensors
                .iter()
                .find(|(tensor_name, _, _)| tensor_name == name)
                .ok_or_else(|| DataError::MissingTensor {
                    name: name.to_string(),
                })?;
            if *found_dims != dims || values.len() != dims.iter().product::<usize>() {
                return Err(DataError::TensorDims {
                    name: name.to_string(),
                    expected: dims,
                    found: found_dims.clone(),
                });
            }
            Ok(values.clone())
        };
        let shape = header.shape;
        let gcn_fields =
            header.gcn.is_some() || header.zca_bias.is_some() || header.zca_fit_images.is_some();
        if header.kind != PreprocessKind::GcnZca && gcn_fields {
            return Err(DataError::BadPreprocessHeader {
                reason: format!(
                    "{} with fields of gcn-zca (`gcn`, `zca_bias`, `zca_fit_images`)",
                    header.kind.name()
                ),
            });
        }
        let method = match header.kind {
            PreprocessKind::None => Method::None,
            PreprocessKind::Normalize => Method::MeanStd {
                mean: take(MEAN_TENSOR, vec![shape.c])?,
                std: take(STD_TENSOR, vec![shape.c])?,
            },
            PreprocessKind::GcnZca => {
                let (Some(gcn), Some(bias), Some(fit_images)) =
                    (header.gcn, header.zca_bias, header.zca_fit_images)
                else {
                    return Err(DataError::BadPreprocessHeader {
                        reason: "gcn-zca without `gcn`, `zca_bias` or `zca_fit_images`".to_string(),
                    });
                };
                let dim = shape.len();
                let has = |name: &str| tensors.iter().any(|(tensor, _, _)| tensor == name);
                let matrix = match (has(ZCA_UPPER_TENSOR), has(ZCA_MATRIX_TENSOR)) {
                    (true, true) => {
                        return Err(DataError::BadPreprocessTensor {
                            name: ZCA_UPPER_TENSOR.to_string(),
                            reason: format!(
                                "is there beside `{ZCA_MATRIX_TENSOR}`: a file holds the whitening matrix once, whole or as its upper triangle"
                            ),
                        })
                    }
                    (true, false) => Zca::from_upper(
                        &take(ZCA_UPPER_TENSOR, vec![dim * (dim + 1) / 2])?,
                        dim,
                    ),
                    (false, _) => take(ZCA_MATRIX_TENSOR, vec![dim, dim])?,
                };
                Method::GcnZca {
                    gcn,
                    zca: Zca {
                        bias,
                        fit_images,
                        mean: take(ZCA_MEAN_TENSOR, vec![dim])?,
                        matrix,
                    },
                }
            }
        };
        Ok(Self { shape, method })
    }
}

/// Per-channel mean and standard deviation of channels-last images; a
/// constant channel gets standard deviation 1 so that it maps to 0.
fn channel_mean_std(images: &[f32], channels: usize) -> (Vec<f32>, Vec<f32>) {
    let (sums, sums_sq) = images
        .par_chunks(channels * 4096)
        .fold(
            || (vec![0.0f64; channels], vec![0.0f64; channels]),
            |(mut sums, mut sums_sq), chunk| {
                for pixel in chunk.chunks_exact(channels) {
                    for (c, &x) in pixel.iter().enumerate() {
                        sums[c] += f64::from(x);
                        sums_sq[c] += f64::from(x) * f64::from(x);
                    }
                }
                (sums, sums_sq)
            },
        )
        .reduce(
            || (vec![0.0f64; channels], vec![0.0f64; channels]),
            |(mut a, mut a_sq), (b, b_sq)| {
                for c in 0..channels {
                    a[c] += b[c];
                    a_sq[c] += b_sq[c];
                }
                (a, a_sq)
            },
        );
    let count = (images.len() / channels).max(1) as f64;
    let mean: Vec<f32> = sums.iter().map(|&sum| (sum / count) as f32).collect();
    let std = sums
        .iter()
        .zip(&sums_sq)
        .map(|(&sum, &sum_sq)| {
            let mu = sum / count;
            let var = (sum_sq / count - mu * mu).max(0.0);
            let sigma = var.sqrt();
            if sigma < 1e-8 {
                1.0
            } else {
                sigma as f32
            }
        })
        .collect();
    (mean, std)
}
