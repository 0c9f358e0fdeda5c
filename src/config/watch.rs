//! Turns config file changes into reload triggers — the config's, and those of the TLS
//! files it names ([`Changes::follow`]): a renewed certificate reloads like an edit.
//!
//! The file's *directory* is watched, not the file: editors replace files by
//! write-then-rename and Kubernetes updates a ConfigMap by swapping the `..data` symlink, and
//! both leave a watch on the old inode blind. But only events that can change what the
//! config path reads count: an event naming the config file itself, or one after which the
//! path resolves to a different file (the `..data` swap). Everything else in the directory
//! (a log file written next to the config, say) is ignored, so it can neither starve nor
//! delay a reload. Bursts are debounced (quiet for [`DEBOUNCE`]) but never past [`CEILING`]
//! after the first event, and the reload itself compares contents, so a spurious trigger
//! costs one read.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;

/// Quiet time after the last event of a burst before a reload is triggered.
pub const DEBOUNCE: Duration = Duration::from_millis(150);
/// A burst that never goes quiet still triggers a reload this long after its first event.
pub const CEILING: Duration = Duration::from_secs(1);

/// A stream of "the config may have changed" ticks; keeps the OS watcher alive.
pub struct Changes {
    watcher: RecommendedWatcher,
    rx: mpsc::Receiver<()>,
    /// For change sources other than files (an API server's watch): debounced the same way.
    tx: mpsc::Sender<()>,
    hangup: Option<tokio::signal::unix::Signal>,
    relevance: std::sync::Arc<Relevance>,
    /// Directories watched (the config's, and each TLS file's).
    dirs: Vec<PathBuf>,
}

impl Changes {
    /// Waits for the next debounced change (or SIGHUP). `false` when the watcher died.
    pub async fn next(&mut self) -> bool {
        let hup = async {
            match self.hangup.as_mut() {
                Some(s) => s.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            got = self.rx.recv() => if got.is_none() { return false },
            _ = hup => {
                tracing::info!("SIGHUP: reloading config");
                return true;
            }
        }
        debounce(&mut self.rx).await
    }

    /// Also reloads when one of `files` changes (the TLS files of the config now running).
    /// Their directories are watched as the config's is (Kubernetes swaps a secret's
    /// `..data` symlink as it swaps a ConfigMap's).
    pub fn follow(&mut self, files: &[PathBuf]) {
        for f in files {
            let dir = parent(f);
            if !self.dirs.contains(&dir) {
                if let Err(e) = self.watcher.watch(&dir, RecursiveMode::NonRecursive) {
                    tracing::warn!(dir = %dir.display(), error = %e, "cannot watch a TLS file's directory; SIGHUP reloads it");
                    continue;
                }
                self.dirs.push(dir);
            }
        }
        let mut followed = self.relevance.files.lock().unwrap_or_else(|p| p.into_inner());
        *followed = files
            .iter()
            .map(|f| (f.clone(), std::fs::canonicalize(f).ok()))
            .collect();
    }

    /// A handle that triggers a (debounced) reload, for changes seen elsewhere.
    pub fn trigger(&self) -> mpsc::Sender<()> {
        self.tx.clone()
    }

    /// Also reloads on any change in `dir` (a directory of manifests: a file added,
    /// edited, removed or swapped in). Watched as the config's directory is.
    pub fn follow_dir(&mut self, dir: &Path) -> std::io::Result<()> {
        let dir = dir.to_path_buf();
        if !self.dirs.contains(&dir) {
            self.watcher
                .watch(&dir, RecursiveMode::NonRecursive)
                .map_err(std::io::Error::other)?;
            self.dirs.push(dir.clone());
        }
        let mut dirs = self.relevance.dirs.lock().unwrap_or_else(|p| p.into_inner());
        if !dirs.contains(&dir) {
            dirs.push(dir);
        }
        Ok(())
    }
}

fn parent(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => Path::new(".").to_path_buf(),
    }
}

/// After a first event: waits until events stop for [`DEBOUNCE`], or [`CEILING`] has passed
/// since the first. `false` when the sender is gone.
async fn debounce(rx: &mut mpsc::Receiver<()>) -> bool {
    let ceiling = tokio::time::Instant::now() + CEILING;
    loop {
        let quiet = tokio::time::Instant::now() + DEBOUNCE;
        match tokio::time::timeout_at(quiet.min(ceiling), rx.recv()).await {
            Ok(Some(())) if tokio::time::Instant::now() < ceiling => continue,
            Ok(Some(())) | Err(_) => return true,
            Ok(None) => return false,
        }
    }
}

/// Whether an event can have changed what `config` (or a followed file or directory) reads.
struct Relevance {
    /// `None`: only followed files and directories count.
    config: Option<PathBuf>,
    /// What the path resolved to when last looked at.
    resolved: Mutex<Option<PathBuf>>,
    /// Followed files, with what each resolved to.
    files: Mutex<Vec<(PathBuf, Option<PathBuf>)>>,
    /// Followed directories: any event inside one counts.
    dirs: Mutex<Vec<PathBuf>>,
}

impl Relevance {
    fn new(config: Option<&Path>) -> Self {
        Relevance {
            config: config.map(Path::to_path_buf),
            resolved: Mutex::new(config.and_then(|c| std::fs::canonicalize(c).ok())),
            files: Mutex::new(Vec::new()),
            dirs: Mutex::new(Vec::new()),
        }
    }

    fn matters(&self, event: &notify::Event) -> bool {
        if matches!(event.kind, EventKind::Access(_)) {
            return false;
        }
        let name = self.config.as_deref().and_then(Path::file_name);
        let names_config = name.is_some() && event.paths.iter().any(|p| p.file_name() == name);
        let dirs = self.dirs.lock().unwrap_or_else(|p| p.into_inner());
        if event
            .paths
            .iter()
            .any(|p| dirs.iter().any(|d| p.parent() == Some(d.as_path())))
        {
            return true;
        }
        drop(dirs);
        // A symlink swap (Kubernetes `..data`) changes the file behind the path.
        let now = self.config.as_deref().and_then(|c| std::fs::canonicalize(c).ok());
        let mut resolved = self.resolved.lock().unwrap_or_else(|p| p.into_inner());
        let mut retargeted = *resolved != now;
        *resolved = now;
        let mut files = self.files.lock().unwrap_or_else(|p| p.into_inner());
        let mut names_file = false;
        for (file, resolved) in files.iter_mut() {
            let name = file.file_name();
            names_file |= event.paths.iter().any(|p| p.file_name() == name);
            let now = std::fs::canonicalize(&*file).ok();
            retargeted |= *resolved != now;
            *resolved = now;
        }
        names_config || names_file || retargeted
    }
}

/// Starts watching `config`'s directory (with no file: only SIGHUP, until something is
/// followed), and SIGHUP.
pub fn watch(config: Option<&Path>) -> std::io::Result<Changes> {
    let (tx, rx) = mpsc::channel(1);
    let relevance = std::sync::Arc::new(Relevance::new(config));
    let judge = relevance.clone();
    let trigger = tx.clone();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if let Ok(ev) = event {
            if judge.matters(&ev) {
                // Full channel = a tick is already pending; that is enough.
                let _ = tx.try_send(());
            }
        }
    })
    .map_err(std::io::Error::other)?;
    let dirs = match config {
        Some(config) => {
            let dir = parent(config);
            watcher
                .watch(&dir, RecursiveMode::NonRecursive)
                .map_err(std::io::Error::other)?;
            vec![dir]
        }
        None => Vec::new(),
    };
    let hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    Ok(Changes {
        watcher,
        rx,
        hangup,
        relevance,
        dirs,
        tx: trigger,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A burst that never goes quiet is cut at the ceiling (paused clock).
    #[tokio::test(start_paused = true)]
    async fn debounce_has_a_ceiling() {
        let (tx, mut rx) = mpsc::channel(1);
        let noise = tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(50)).await;
                let _ = tx.try_send(());
            }
        });
        let started = tokio::time::Instant::now();
        assert!(debounce(&mut rx).await);
        let waited = started.elapsed();
        assert!(waited >= CEILING && waited < CEILING + DEBOUNCE, "{waited:?}");
        noise.abort();
    }

    /// A quiet burst triggers after DEBOUNCE (paused clock).
    #[tokio::test(start_paused = true)]
    async fn debounce_waits_for_quiet() {
        let (tx, mut rx) = mpsc::channel(1);
        tx.try_send(()).unwrap();
        let started = tokio::time::Instant::now();
        assert!(debounce(&mut rx).await);
        assert_eq!(started.elapsed(), DEBOUNCE);
    }

    #[test]
    fn only_events_about_the_config_matter() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("veer.toml");
        std::fs::write(&config, "x").unwrap();
        let r = Relevance::new(Some(&config));
        let event = |path: &Path| notify::Event::new(EventKind::Any).add_path(path.to_path_buf());
        assert!(!r.matters(&event(&dir.path().join("app.log"))));
        assert!(r.matters(&event(&config)));
        let access = notify::Event::new(EventKind::Access(notify::event::AccessKind::Any)).add_path(config.clone());
        assert!(!r.matters(&access));
    }
}
