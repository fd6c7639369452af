//! Unique names for generated code and exported models: a wanted name as
//! it is, or with `_2`, `_3`, ... when it is taken. Deterministic: the same
//! requests in the same order give the same names.

use std::collections::HashSet;

#[derive(Debug, Default, Clone)]
pub struct UniqueNames {
    used: HashSet<String>,
}

impl UniqueNames {
    /// `wanted`, or the first of `wanted_2`, `wanted_3`, ... not yet given.
    pub fn claim(&mut self, wanted: &str) -> String {
        let mut name = wanted.to_string();
        let mut count = 1;
        while !self.used.insert(name.clone()) {
            count += 1;
            name = format!("{wanted}_{count}");
        }
        name
    }
}
