//! Replays the kept fuzz corpus (`fuzz/corpus/<target>/`, inputs found by
//! `fuzz/run.sh` and minimised) through each fuzz target's body, on stable
//! Rust as an ordinary test: an input that once crashed a target (a panic
//! in its body) fails this test if the bug ever comes back.

#[path = "../../fuzz/src/bodies.rs"]
mod bodies;

use std::path::Path;

#[test]
fn every_kept_fuzz_input_runs_through_its_target() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus");
    let mut total = 0;
    for (name, body) in bodies::TARGETS {
        let dir = root.join(name);
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e} (every target keeps a corpus)", dir.display()))
            .map(|e| e.unwrap().path())
            .filter(|p| p.is_file())
            .collect();
        files.sort();
        assert!(!files.is_empty(), "{name}: no kept inputs in {}", dir.display());
        for f in &files {
            let data = std::fs::read(f).unwrap();
            let run = std::panic::catch_unwind(|| body(&data));
            assert!(run.is_ok(), "{name}: {} panics", f.display());
        }
        total += files.len();
    }
    eprintln!("fuzz corpus: {total} inputs replayed over {} targets", bodies::TARGETS.len());
}
