//! Stable-toolchain stand-in for the libFuzzer driver: runs the fuzz
//! property on every file named (directories are walked one level), e.g. a
//! corpus or a crash file that `cargo fuzz` saved. Exits non-zero on the
//! first failing input, after naming it.

use std::path::PathBuf;

fn main() {
    let mut files: Vec<PathBuf> = Vec::new();
    for arg in std::env::args_os().skip(1) {
        let path = PathBuf::from(arg);
        if path.is_dir() {
            let mut entries: Vec<PathBuf> = std::fs::read_dir(&path)
                .unwrap_or_else(|err| panic!("cannot read {}: {err}", path.display()))
                .filter_map(|entry| entry.ok().map(|entry| entry.path()))
                .filter(|path| path.is_file())
                .collect();
            entries.sort();
            files.extend(entries);
        } else {
            files.push(path);
        }
    }
    let mut valid = 0;
    for file in &files {
        let data = std::fs::read(file)
            .unwrap_or_else(|err| panic!("cannot read {}: {err}", file.display()));
        eprintln!("{}", file.display());
        if allcnnc_fuzz::front_end(&data) {
            valid += 1;
        }
    }
    println!("{} inputs, {valid} valid models, no panic", files.len());
}
