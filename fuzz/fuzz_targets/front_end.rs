//! libFuzzer target: the whole allcnnc front end on arbitrary bytes.
//! Seed it with the models: `cargo +nightly fuzz run front_end fuzz/corpus/front_end models`.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    allcnnc_fuzz::front_end(data);
});
