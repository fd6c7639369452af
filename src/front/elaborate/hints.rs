//! Spelling hints: the nearest known word by edit distance ("did you mean"),
//! and the names other frameworks give our layer kinds.

/// Common names from other frameworks, mapped to ours.
pub(super) fn alias(kind: &str) -> Option<&'static str> {
    Some(match kind {
        "conv2d" | "convolution" | "Conv2d" => "conv",
        "pool" | "max_pool" | "maxpool2d" | "MaxPool2d" => "maxpool",
        "avg_pool" | "avgpool2d" => "avgpool",
        "fc" | "linear" | "dense" => "conv",
        "relu" => "conv",
        _ => return None,
    })
}

/// The candidate closest to `word` by edit distance, if close enough.
pub fn nearest<'a>(word: &str, candidates: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .map(|candidate| (strsim::damerau_levenshtein(word, candidate), candidate))
        .filter(|(distance, candidate)| {
            *distance <= 2.max(candidate.len() / 3) && *distance < candidate.len()
        })
        .min()
        .map(|(_, candidate)| candidate)
}
