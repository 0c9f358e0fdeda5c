//! Turns config file changes into reload triggers.
//!
//! The file's *directory* is watched, not the file: editors replace files by
//! write-then-rename and Kubernetes updates a ConfigMap by swapping the `..data` symlink, and
//! both leave a watch on the old inode blind. Any event in the directory (other than reads)
//! is a hint; bursts are debounced and the reload itself compares contents, so spurious hints
//! cost one read.

use std::path::Path;
use std::time::Duration;

use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;

/// Quiet time after the last event of a burst before a reload is triggered.
pub const DEBOUNCE: Duration = Duration::from_millis(150);

/// A stream of "the config may have changed" ticks; keeps the OS watcher alive.
pub struct Changes {
    _watcher: RecommendedWatcher,
    rx: mpsc::Receiver<()>,
    hangup: Option<tokio::signal::unix::Signal>,
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
        // Debounce: wait until the directory has been quiet for DEBOUNCE.
        loop {
            match tokio::time::timeout(DEBOUNCE, self.rx.recv()).await {
                Ok(Some(())) => continue,
                Ok(None) => return false,
                Err(_) => return true,
            }
        }
    }
}

/// Starts watching `config`'s directory, and SIGHUP.
pub fn watch(config: &Path) -> std::io::Result<Changes> {
    let dir = match config.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => Path::new(".").to_path_buf(),
    };
    let (tx, rx) = mpsc::channel(1);
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if let Ok(ev) = event {
            if !matches!(ev.kind, EventKind::Access(_)) {
                // Full channel = a tick is already pending; that is enough.
                let _ = tx.try_send(());
            }
        }
    })
    .map_err(std::io::Error::other)?;
    watcher
        .watch(&dir, RecursiveMode::NonRecursive)
        .map_err(std::io::Error::other)?;
    let hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    Ok(Changes {
        _watcher: watcher,
        rx,
        hangup,
    })
}
