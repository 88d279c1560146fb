//! House rules that a reader relies on, checked over the whole workspace: every source file
//! says what it is for in a `//!` paragraph, and no unfinished-work marker lands.

use std::path::{Path, PathBuf};

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy();
        if path.is_dir() && name != "target" && !name.starts_with('.') {
            sources(&path, out);
        } else if name.ends_with(".rs") {
            out.push(path);
        }
    }
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).ancestors().nth(2).unwrap().to_owned()
}

#[test]
fn every_source_file_starts_with_a_module_doc() {
    let root = workspace();
    let mut files = Vec::new();
    for dir in ["crates", "bench"] {
        sources(&root.join(dir), &mut files);
    }
    assert!(files.len() > 20, "the walk found the sources");
    let missing: Vec<String> = files
        .iter()
        .filter(|f| {
            let text = std::fs::read_to_string(f).unwrap();
            let first = text.lines().find(|l| !l.trim().is_empty() && !l.starts_with("#!["));
            !first.is_some_and(|l| l.starts_with("//!"))
        })
        .map(|f| f.strip_prefix(&root).unwrap().display().to_string())
        .collect();
    assert!(missing.is_empty(), "files without a `//!` module doc: {missing:?}");
}

#[test]
fn no_unfinished_work_markers() {
    let root = workspace();
    let mut files = Vec::new();
    for dir in ["crates", "bench"] {
        sources(&root.join(dir), &mut files);
    }
    let markers = [
        concat!("todo", "!("),
        concat!("unimplemented", "!("),
        concat!("dbg", "!("),
        concat!("TO", "DO"),
    ];
    let mut found = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        for (n, line) in text.lines().enumerate() {
            if markers.iter().any(|m| line.contains(m)) {
                found.push(format!("{}:{}", file.strip_prefix(&root).unwrap().display(), n + 1));
            }
        }
    }
    assert!(found.is_empty(), "use `FIXME: what is wrong and why it is left` instead: {found:?}");
}
