//! A rule set's content version: a SHA-256 over every file of the rules directory (relative path and
//! bytes, in path order), so the same files give the same version on every replica and any edit —
//! a rule, a manifest, a value set, a data table, a test case — gives a new one.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use aws_lc_rs::digest::{Context, SHA256};

/// Hex digits kept: 48 bits tell versions apart and stay readable in a header or a log line.
const VERSION_HEX_DIGITS: usize = 12;

/// The content version of the rules directory `dir`. Hidden entries (`.git`, and the `..data` /
/// `..2026_…` folders of a Kubernetes ConfigMap volume, whose files are reached through the
/// visible links) are skipped, as the loader skips them.
pub fn of_dir(dir: &Path) -> io::Result<String> {
    let mut files = Vec::new();
    collect(dir, dir, &mut files)?;
    files.sort();
    let mut context = Context::new(&SHA256);
    for relative in &files {
        let bytes = fs::read(dir.join(relative))?;
        let name = relative.to_string_lossy().replace('\\', "/");
        // Length-prefixed fields: no two different trees hash the same byte stream.
        context.update(&(name.len() as u64).to_le_bytes());
        context.update(name.as_bytes());
        context.update(&(bytes.len() as u64).to_le_bytes());
        context.update(&bytes);
    }
    let digest = context.finish();
    let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    Ok(hex.chars().take(VERSION_HEX_DIGITS).collect())
}

fn collect(root: &Path, dir: &Path, files: &mut Vec<PathBuf>) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if crate::registry::is_hidden(&path) {
            continue;
        }
        // `is_dir`/`is_file` follow links, as the loader does.
        if path.is_dir() {
            collect(root, &path, files)?;
        } else if path.is_file()
            && let Ok(relative) = path.strip_prefix(root)
        {
            files.push(relative.to_path_buf());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::of_dir;

    #[test]
    fn same_files_same_version_and_any_edit_changes_it() -> std::io::Result<()> {
        let a = tempfile::tempdir()?;
        let b = tempfile::tempdir()?;
        for dir in [a.path(), b.path()] {
            std::fs::create_dir_all(dir.join("svc"))?;
            std::fs::write(dir.join("svc/service.toml"), "id = \"x\"\n")?;
            std::fs::write(dir.join("svc/rule.rhai"), "1")?;
        }
        let version = of_dir(a.path())?;
        assert_eq!(version.len(), 12);
        assert_eq!(version, of_dir(b.path())?);
        std::fs::write(b.path().join("svc/rule.rhai"), "2")?;
        assert_ne!(version, of_dir(b.path())?);
        // Hidden folders do not count.
        std::fs::create_dir_all(a.path().join(".git"))?;
        std::fs::write(a.path().join(".git/HEAD"), "ref")?;
        assert_eq!(version, of_dir(a.path())?);
        Ok(())
    }
}
