//! The fuzz targets on stable, as CI runs them: every seed in `fuzz/corpus/<target>/` and every
//! crash kept in `fuzz/regressions/<target>/` goes through its target, then each target gets
//! a few thousand pseudo-random inputs from a fixed seed (fresh bytes, and seeds with bytes
//! flipped, cut or spliced), so CI exercises more than the seeds without a fuzzer.

use std::path::{Path, PathBuf};

use turnstile_fuzz::TARGETS;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz")
}

/// The files of `fuzz/<kind>/<target>/`, for every target; a directory named after no target is
/// an error (a renamed target would otherwise lose its corpus silently).
fn files(kind: &str) -> Vec<(String, PathBuf)> {
    let dir = fuzz_dir().join(kind);
    let mut files = Vec::new();
    let Ok(targets) = std::fs::read_dir(&dir) else { return files };
    for target in targets {
        let target = target.expect("a directory entry").path();
        if !target.is_dir() {
            continue;
        }
        let name = target.file_name().and_then(|n| n.to_str()).expect("a UTF-8 name").to_owned();
        assert!(TARGETS.iter().any(|(t, _)| *t == name), "{} names no target", target.display());
        for file in std::fs::read_dir(&target).expect("a target directory lists") {
            let path = file.expect("a directory entry").path();
            if path.is_file() && path.file_name().is_some_and(|n| n != ".gitkeep") {
                files.push((name.clone(), path));
            }
        }
    }
    files.sort();
    files
}

fn target(name: &str) -> turnstile_fuzz::Target {
    TARGETS.iter().find(|(t, _)| *t == name).map(|(_, f)| *f).expect("a known target")
}

fn replay(kind: &str) -> usize {
    let files = files(kind);
    for (name, path) in &files {
        let bytes = std::fs::read(path).expect("a corpus file reads");
        // A panic names the file, so the failing input is found at once.
        let outcome = std::panic::catch_unwind(|| target(name)(&bytes));
        assert!(outcome.is_ok(), "{name} panicked on {}", path.display());
    }
    files.len()
}

#[test]
fn every_seed_passes_its_target_and_every_target_has_seeds() {
    replay("corpus");
    let files = files("corpus");
    for (name, _) in TARGETS {
        assert!(files.iter().any(|(t, _)| t == name), "{name} has no seeds in fuzz/corpus/{name}/");
    }
}

#[test]
fn every_regression_passes_its_target() {
    replay("regressions");
}

/// xorshift64: the same inputs on every run and every machine.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % n.max(1) as u64).expect("below a usize")
    }

    fn byte(&mut self) -> u8 {
        self.next().to_le_bytes()[0]
    }
}

/// An input for a target: fresh bytes, or one of its seeds mutated as a fuzzer would.
fn input(rng: &mut Rng, seeds: &[Vec<u8>]) -> Vec<u8> {
    if seeds.is_empty() || rng.below(4) == 0 {
        let len = rng.below(512);
        return (0..len).map(|_| rng.byte()).collect();
    }
    let mut bytes = seeds[rng.below(seeds.len())].clone();
    for _ in 0..=rng.below(4) {
        match rng.below(4) {
            0 if !bytes.is_empty() => {
                let at = rng.below(bytes.len());
                bytes[at] ^= 1 << rng.below(8);
            }
            1 if !bytes.is_empty() => {
                let at = rng.below(bytes.len());
                bytes.truncate(at.max(1));
            }
            2 => {
                let other = &seeds[rng.below(seeds.len())];
                let at = rng.below(other.len());
                bytes.extend_from_slice(&other[at..]);
            }
            _ => {
                let at = rng.below(bytes.len() + 1);
                bytes.insert(at, rng.byte());
            }
        }
    }
    bytes
}

#[test]
fn pseudo_random_inputs_pass_every_target() {
    let corpus = files("corpus");
    for (name, run) in TARGETS {
        let seeds: Vec<Vec<u8>> = corpus
            .iter()
            .filter(|(t, _)| t == name)
            .map(|(_, path)| std::fs::read(path).expect("a corpus file reads"))
            .collect();
        // Targets that write files get fewer, so the test stays quick in a debug build.
        let count = if matches!(*name, "journal_record" | "snapshot_restore") { 300 } else { 3_000 };
        let mut rng = Rng(0x5EED_0000 + name.len() as u64);
        for i in 0..count {
            let bytes = input(&mut rng, &seeds);
            let outcome = std::panic::catch_unwind(|| run(&bytes));
            assert!(outcome.is_ok(), "{name} panicked on pseudo-random input {i}: {bytes:?}");
        }
    }
}
