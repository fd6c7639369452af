//! Data sets (in progress)
