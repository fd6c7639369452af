//! The Fashion-MNIST subset the command-line tests train and read images
//! from (Debian package `dataset-fashion-mnist`, installed by
//! scripts/test.sh), shared by tests/train_cli.rs, tests/ablate_cli.rs and
//! tests/visualize_cli.rs.

use std::path::Path;

pub const FASHION: &str = "/usr/share/datasets/fashion-mnist";

/// The data set the README's test command installs; a failure that says
/// how to get it, never a test that passes without running.
pub fn require_data() {
    assert!(
        Path::new(FASHION)
            .join("train-images-idx3-ubyte.gz")
            .exists(),
        "{FASHION} is missing: apt-get install dataset-fashion-mnist (scripts/test.sh does)"
    );
}
