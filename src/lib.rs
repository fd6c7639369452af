//! allcnnc
