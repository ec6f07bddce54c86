//! Providers are data: no provider's name appears in the engine's, the sandbox's or the binaries' Rust code.

use tributary_e2e::repo_root;

fn rust_files(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn no_provider_name_in_rust_code() {
    let root = repo_root();
    let mut providers: Vec<String> = std::fs::read_dir(root.join("provider-specs"))
        .unwrap()
        .flatten()
        .filter_map(|e| {
            e.file_name()
                .to_str()
                .and_then(|n| n.strip_suffix(".yaml"))
                .map(str::to_lowercase)
        })
        .collect();
    providers.sort();
    assert!(providers.len() >= 6, "{providers:?}");
    let mut files = Vec::new();
    for dir in ["shared/src", "sandbox/src", "worker/src", "scheduler/src"] {
        rust_files(&root.join(dir), &mut files);
    }
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap().to_lowercase();
        for p in &providers {
            assert!(
                !text.contains(p.as_str()),
                "{} mentions `{p}`: providers belong in provider-specs/",
                file.display()
            );
        }
    }
}
