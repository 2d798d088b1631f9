//! Local scratch space: ffmpeg reads and writes files, so each job gets a directory of its own,
//! removed when the job ends whichever way it ends (success, failure, timeout, lock loss,
//! shutdown, panic): the directory is a guard.
//!
//! Layout: `<WORKER_SCRATCH_DIR>/i-<pid>/<file id>-a<attempt>-<random>/`. Each process owns its
//! `i-<pid>` directory; at start-up a process removes the directories of processes that are
//! gone (what a crash left behind) and its own pid's (a previous life in a fresh container).

use std::io;
use std::path::{Path, PathBuf};

use uuid::Uuid;

/// This process's scratch root.
#[derive(Clone, Debug)]
pub(crate) struct ScratchRoot {
    dir: PathBuf,
}

impl ScratchRoot {
    /// Creates `<base>/i-<pid>`, after removing what dead processes left under `base`.
    pub(crate) fn create(base: &Path) -> io::Result<Self> {
        std::fs::create_dir_all(base)?;
        let own = std::process::id();
        for entry in std::fs::read_dir(base)?.flatten() {
            let name = entry.file_name();
            let Some(pid) = name.to_str().and_then(|n| n.strip_prefix("i-")).and_then(|p| p.parse::<u32>().ok()) else {
                continue;
            };
            if pid == own || !Path::new("/proc").join(pid.to_string()).exists() {
                match std::fs::remove_dir_all(entry.path()) {
                    Ok(()) => {
                        tracing::info!(dir = %entry.path().display(), "removed a dead process's scratch directory")
                    }
                    Err(e) => tracing::warn!(dir = %entry.path().display(), error = %e, "could not remove old scratch"),
                }
            }
        }
        let dir = base.join(format!("i-{own}"));
        std::fs::create_dir_all(&dir)?;
        Ok(ScratchRoot { dir })
    }

    /// The root's path.
    #[cfg(test)]
    pub(crate) fn path(&self) -> &Path {
        &self.dir
    }

    /// A new, empty directory for one attempt of file `id`'s job.
    pub(crate) fn job_dir(&self, id: Uuid, attempt: u64) -> io::Result<ScratchDir> {
        let random = &Uuid::new_v4().simple().to_string()[..8];
        let dir = self.dir.join(format!("{id}-a{attempt}-{random}"));
        std::fs::create_dir(&dir)?;
        Ok(ScratchDir { dir })
    }

    /// Removes the root (at shutdown, once no job runs).
    pub(crate) fn remove(&self) {
        if let Err(e) = std::fs::remove_dir_all(&self.dir)
            && e.kind() != io::ErrorKind::NotFound
        {
            tracing::warn!(dir = %self.dir.display(), error = %e, "could not remove the scratch directory");
        }
    }
}

/// One job's scratch directory, removed with everything in it when dropped.
#[derive(Debug)]
pub(crate) struct ScratchDir {
    dir: PathBuf,
}

impl ScratchDir {
    /// A path inside the directory; `name` is always one of ours, never a client's filename.
    pub(crate) fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// The directory.
    #[cfg(test)]
    pub(crate) fn path(&self) -> &Path {
        &self.dir
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.dir)
            && e.kind() != io::ErrorKind::NotFound
        {
            tracing::warn!(dir = %self.dir.display(), error = %e, "could not remove a job's scratch directory");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_dirs_go_away_and_dead_processes_leftovers_too() {
        let base = tempfile::tempdir().unwrap();
        // A process id that cannot be alive (above the kernel's pid_max limit of 2^22).
        let dead = base.path().join("i-4194305");
        std::fs::create_dir_all(dead.join("x")).unwrap();
        let unrelated = base.path().join("keep-me");
        std::fs::create_dir(&unrelated).unwrap();
        let root = ScratchRoot::create(base.path()).unwrap();
        assert!(!dead.exists() && unrelated.exists());
        let job = root.job_dir(Uuid::nil(), 1).unwrap();
        std::fs::write(job.file("original"), b"x").unwrap();
        let path = job.path().to_owned();
        drop(job);
        assert!(!path.exists());
        root.remove();
        assert!(!root.path().exists());
    }
}
