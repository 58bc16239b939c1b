//! Writes the fuzzer's seed corpus, `fuzz/corpus/decode_detect/`, from generators (no binaries are checked in):
//! `cargo run --example fuzz_seeds`. The corpus is replayed by `cargo test --test fuzz_replay`.

#[path = "../tests/common/corpus.rs"]
mod corpus;

fn main() -> std::io::Result<()> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let shared = std::env::var_os("FACEMATCH_SHARED").map(std::path::PathBuf::from).unwrap_or_else(|| root.join("../shared"));
    let face_path = shared.join("faces/deepface/id01/img10.jpg");
    let face = image::open(&face_path).map_err(|e| std::io::Error::other(format!("{}: {e}", face_path.display())))?;
    let dir = root.join("fuzz/corpus/decode_detect");
    std::fs::create_dir_all(&dir)?;
    let seeds = corpus::seeds(&face);
    for (name, bytes) in &seeds {
        std::fs::write(dir.join(name), bytes)?;
    }
    println!("{} seeds in {}", seeds.len(), dir.display());
    Ok(())
}
