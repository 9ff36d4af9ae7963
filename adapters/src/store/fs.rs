//! The filesystem store: one file per key, named like the key, in the format
//! of whichever KES wrote it (crypto.md §5). New keys are written crash-safely
//! and never over an existing one.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use kes_core::crypto::SecretBytes;
use kes_core::{Command, StoreError, StoreReply};

use super::contract::KeyStore;

/// Largest key file read (KES: 1 MiB).
const MAX_FILE: u64 = 1 << 20;

/// A directory of key files.
pub struct FsStore {
    dir: PathBuf,
    seq: AtomicU64,
}

impl FsStore {
    /// Opens (creating with mode 0700 if missing) the key directory.
    pub fn open(dir: impl Into<PathBuf>) -> io::Result<Self> {
        let dir = dir.into();
        match fs::metadata(&dir) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(io::Error::other(format!("'{}' is not a directory", dir.display())))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::create_dir_all(&dir)?;
                fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))?;
            }
            Err(e) => return Err(e),
        }
        Ok(Self { dir, seq: AtomicU64::new(0) })
    }

    /// Removes temp files that a crashed writer left behind (they are 0600
    /// but may hold a key's bytes) and returns one line per file for the
    /// log. Only names of the exact temp-file shape are touched, never a key
    /// file (key names cannot contain `.`, temp names start with one). A
    /// temp file counts as stale when the process that wrote it is gone, or
    /// it is older than [`STALE_AGE`] (a live create takes milliseconds), so
    /// another running kes process's create in progress is left alone.
    pub fn remove_stale_temp_files(&self) -> Vec<String> {
        let mut report = Vec::new();
        let Ok(entries) = fs::read_dir(&self.dir) else { return report };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(pid) = name.to_str().and_then(temp_file_pid) else { continue };
            let Ok(meta) = entry.metadata() else { continue };
            if !meta.is_file() {
                continue;
            }
            let age = meta.modified().ok().and_then(|m| m.elapsed().ok()).unwrap_or_default();
            if process_alive(pid) && age < STALE_AGE {
                continue;
            }
            let path = entry.path();
            report.push(match fs::remove_file(&path) {
                Ok(()) => format!("removed stale temp file {} (left by a crash)", path.display()),
                Err(e) => format!("cannot remove stale temp file {}: {e}", path.display()),
            });
        }
        report
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, name: &str) -> Result<PathBuf, StoreError> {
        // The core validated the name; refuse anything path-like regardless.
        if name.is_empty() || name.contains(['/', '\\', '.', '\0']) {
            return Err(StoreError::Failed(format!("refusing key name '{name}'")));
        }
        Ok(self.dir.join(name))
    }

    /// Writes to a private temp file, fsyncs it, then hard-links it to the key's
    /// name: `link` fails if the name exists, so concurrent creates (even from
    /// several processes) have exactly one winner and nothing is overwritten,
    /// and a crash leaves either no key or a complete one. Then the directory
    /// is fsynced so the new name survives power loss.
    fn create(&self, name: &str, value: &SecretBytes) -> Result<StoreReply, StoreError> {
        let target = self.path(name)?;
        let tmp = self.dir.join(format!(
            ".{name}.tmp-{}-{}",
            std::process::id(),
            self.seq.fetch_add(1, Ordering::Relaxed)
        ));
        let result = (|| -> io::Result<()> {
            let mut f = OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
            f.write_all(value.expose())?;
            f.sync_all()?;
            drop(f);
            fs::hard_link(&tmp, &target)
        })();
        let _ = fs::remove_file(&tmp);
        match result {
            Ok(()) => {
                File::open(&self.dir).and_then(|d| d.sync_all()).map_err(fail)?;
                Ok(StoreReply::Created)
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(StoreError::Exists),
            Err(e) => Err(fail(e)),
        }
    }

    fn get(&self, name: &str) -> Result<StoreReply, StoreError> {
        let f = File::open(self.path(name)?).map_err(not_found_or_fail)?;
        let mut buf = Vec::new();
        f.take(MAX_FILE).read_to_end(&mut buf).map_err(fail)?;
        Ok(StoreReply::Value(SecretBytes::new(buf)))
    }

    fn list(&self) -> Result<StoreReply, StoreError> {
        let mut names = Vec::new();
        for entry in fs::read_dir(&self.dir).map_err(unreachable)? {
            let entry = entry.map_err(fail)?;
            if !entry.file_type().map_err(fail)?.is_file() {
                continue;
            }
            if let Some(n) = entry.file_name().to_str() {
                if !n.starts_with('.') {
                    names.push(n.to_owned());
                }
            }
        }
        Ok(StoreReply::Names(names))
    }
}

impl KeyStore for FsStore {
    fn execute(&self, cmd: Command) -> Result<StoreReply, StoreError> {
        match cmd {
            Command::Create { name, value } => self.create(name.as_str(), &value),
            Command::Get { name } => self.get(name.as_str()),
            Command::Delete { name } => {
                fs::remove_file(self.path(name.as_str())?).map_err(not_found_or_fail)?;
                Ok(StoreReply::Deleted)
            }
            Command::List => self.list(),
            Command::Status => {
                let start = Instant::now();
                match fs::metadata(&self.dir) {
                    Ok(m) if m.is_dir() => Ok(StoreReply::Status { latency: start.elapsed() }),
                    Ok(_) => {
                        Err(StoreError::Unreachable("key directory is not a directory".into()))
                    }
                    Err(e) => Err(unreachable(e)),
                }
            }
        }
    }

    fn blocks(&self) -> bool {
        true
    }
}

/// A temp file this old is stale even if a process with its writer's pid
/// runs (pids are reused).
pub const STALE_AGE: std::time::Duration = std::time::Duration::from_secs(600);

/// The writer's pid if `name` is one of our temp files: `.<key>.tmp-<pid>-<seq>`.
fn temp_file_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix('.')?;
    let (key, suffix) = rest.split_once(".tmp-")?;
    let (pid, seq) = suffix.split_once('-')?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if key.is_empty() || key.contains(['.', '/', '\\']) || !digits(pid) || !digits(seq) {
        return None;
    }
    pid.parse().ok()
}

/// Whether a process with this pid runs here. Without /proc (not Linux)
/// nothing is known to run, and only age decides.
fn process_alive(pid: u32) -> bool {
    Path::new("/proc/self").exists() && Path::new("/proc").join(pid.to_string()).exists()
}

fn fail(e: io::Error) -> StoreError {
    StoreError::Failed(format!("fs: {e}"))
}

fn unreachable(e: io::Error) -> StoreError {
    StoreError::Unreachable(format!("fs: {e}"))
}

fn not_found_or_fail(e: io::Error) -> StoreError {
    if e.kind() == io::ErrorKind::NotFound {
        StoreError::NotFound
    } else {
        fail(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kes_core::KeyName;

    fn tempdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("kes-fs-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn create_never_overwrites_and_uses_0600() {
        let dir = tempdir("create");
        let s = FsStore::open(&dir).unwrap();
        let name = KeyName::parse("k").unwrap();
        let v1 = SecretBytes::new(b"one".to_vec());
        assert!(matches!(
            s.execute(Command::Create { name: name.clone(), value: v1 }),
            Ok(StoreReply::Created)
        ));
        let v2 = SecretBytes::new(b"two".to_vec());
        assert_eq!(
            s.execute(Command::Create { name: name.clone(), value: v2 }).unwrap_err(),
            StoreError::Exists
        );
        assert_eq!(fs::read(dir.join("k")).unwrap(), b"one");
        let mode = fs::metadata(dir.join("k")).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        // No temp files are left behind.
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 1);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn concurrent_creates_have_one_winner() {
        let dir = tempdir("race");
        let s = std::sync::Arc::new(FsStore::open(&dir).unwrap());
        let handles: Vec<_> = (0..8)
            .map(|i| {
                let s = s.clone();
                std::thread::spawn(move || {
                    let name = KeyName::parse("same").unwrap();
                    let value = SecretBytes::new(vec![i; 16]);
                    s.execute(Command::Create { name, value }).is_ok()
                })
            })
            .collect();
        let wins = handles.into_iter().map(|h| h.join().unwrap()).filter(|w| *w).count();
        assert_eq!(wins, 1);
        let content = fs::read(dir.join("same")).unwrap();
        assert_eq!(content.len(), 16);
        assert!(content.iter().all(|b| *b == content[0]));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn stale_temp_files_are_removed_and_nothing_else() {
        let dir = tempdir("stale");
        let s = FsStore::open(&dir).unwrap();
        // A crashed writer (no such pid: above Linux's pid_max), ours in
        // progress, a key file and other dot files.
        let dead = ".k.tmp-4194305-3";
        let live = format!(".k.tmp-{}-9", std::process::id());
        for f in [dead, live.as_str(), "k", ".hidden", ".k.tmp-x-1", ".a.b.tmp-4194305-1", "tmp-1"]
        {
            fs::write(dir.join(f), b"secret").unwrap();
        }
        let report = s.remove_stale_temp_files();
        assert_eq!(report.len(), 1, "{report:?}");
        assert!(report[0].contains(dead), "{report:?}");
        let mut left: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        let mut want =
            vec![live.as_str(), "k", ".hidden", ".k.tmp-x-1", ".a.b.tmp-4194305-1", "tmp-1"];
        want.sort();
        assert_eq!(left, want);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn temp_file_names() {
        assert_eq!(temp_file_pid(".my-key.tmp-12-0"), Some(12));
        for not in
            ["my-key.tmp-12-0", ".my-key.tmp-12", ".my-key.tmp--0", "..tmp-1-2", ".k.tmp-1-2x"]
        {
            assert_eq!(temp_file_pid(not), None, "{not}");
        }
    }

    #[test]
    fn missing_and_listing() {
        let dir = tempdir("list");
        let s = FsStore::open(&dir).unwrap();
        let name = KeyName::parse("nope").unwrap();
        assert_eq!(
            s.execute(Command::Get { name: name.clone() }).unwrap_err(),
            StoreError::NotFound
        );
        assert_eq!(s.execute(Command::Delete { name }).unwrap_err(), StoreError::NotFound);
        fs::write(dir.join(".hidden"), b"x").unwrap();
        fs::create_dir(dir.join("sub")).unwrap();
        fs::write(dir.join("real"), b"x").unwrap();
        match s.execute(Command::List).unwrap() {
            StoreReply::Names(n) => assert_eq!(n, vec!["real".to_owned()]),
            other => panic!("{other:?}"),
        }
        fs::remove_dir_all(&dir).unwrap();
    }
}
