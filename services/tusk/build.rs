//! The git commit `tusk --version` names: `TUSK_GIT_COMMIT` when the builder gives it (the
//! image build, whose context leaves out .git), else git's HEAD, else "unknown".

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn main() {
    println!("cargo:rerun-if-env-changed=TUSK_GIT_COMMIT");
    let given = std::env::var("TUSK_GIT_COMMIT")
        .ok()
        .filter(|c| !c.is_empty());
    let commit = given.or_else(|| {
        // Built again when HEAD moves: HEAD names the branch, whose ref (loose or packed)
        // names the commit. Only existing files: a missing one would rerun every build.
        let branch = git(&["symbolic-ref", "-q", "HEAD"]);
        let watched = ["HEAD", "packed-refs"].into_iter().chain(branch.as_deref());
        for file in watched {
            let path = git(&["rev-parse", "--path-format=absolute", "--git-path", file]);
            if let Some(path) = path.filter(|p| std::path::Path::new(p).exists()) {
                println!("cargo:rerun-if-changed={path}");
            }
        }
        git(&["rev-parse", "--short=12", "HEAD"])
    });
    println!(
        "cargo:rustc-env=TUSK_GIT_COMMIT={}",
        commit.unwrap_or_else(|| "unknown".into())
    );
}
