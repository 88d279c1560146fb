//! Announcements as audio: espeak-ng turns the spoken form of an announcement into a WAV file,
//! which is kept in `DATA/announcements/` under the hash of its text and voice, and served to
//! the PBX from there.
//!
//! A routing decision never waits for the synthesiser: it names the file by its hash at once
//! and rendering starts in the background, at most two at a time. A request for a file that
//! is still being rendered renders it (or waits for the same render) under a timeout. The
//! synthesiser runs as a separate process with its text as one argument, never through a shell.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;

/// How long one rendering may take before it is abandoned.
pub const RENDER_TIMEOUT: Duration = Duration::from_secs(10);
/// How many texts are remembered for rendering on request; the files outlive this.
const MAX_PENDING: usize = 10_000;
/// Renderings at once; more would take the cores the decisions need.
const MAX_RENDERS: usize = 2;

/// Why an announcement has no audio.
#[derive(Debug, thiserror::Error)]
pub enum SpeechError {
    /// No announcement with this hash was made.
    #[error("no announcement {0}")]
    Unknown(String),
    /// The synthesiser is not installed or could not be started.
    #[error(
        "the speech synthesiser `{program}` cannot be run (install the package espeak-ng): {source}"
    )]
    Missing {
        /// The program.
        program: String,
        /// What the system said.
        source: std::io::Error,
    },
    /// The synthesiser failed or took too long.
    #[error("the speech synthesiser failed: {0}")]
    Failed(String),
    /// The file could not be written or read.
    #[error("the announcement file cannot be used: {0}")]
    Io(#[from] std::io::Error),
}

/// The announcements and their audio files.
#[derive(Debug)]
pub struct Speech {
    dir: PathBuf,
    program: String,
    /// Texts by hash, for rendering on request.
    pending: Mutex<HashMap<String, Arc<Pending>>>,
    renders: Arc<Semaphore>,
}

/// A text not rendered yet; its lock makes concurrent requests for it wait for one rendering.
#[derive(Debug)]
struct Pending {
    voice: String,
    text: String,
    rendering: tokio::sync::Mutex<()>,
}

/// The espeak-ng voice for a language tag.
pub fn voice(lang: &str) -> &'static str {
    if lang.eq_ignore_ascii_case("de") { "de" } else { "en-gb" }
}

/// The name of the file for a text in a voice: the first 128 bits of its SHA-256, in hex.
pub fn hash(voice: &str, text: &str) -> String {
    let digest = Sha256::new().chain_update(voice).chain_update([0]).chain_update(text).finalize();
    digest[..16].iter().map(|b| format!("{b:02x}")).collect()
}

impl Speech {
    /// Announcements kept in `dir`, rendered by `program`.
    pub fn new(dir: PathBuf, program: String) -> Speech {
        Speech {
            dir,
            program,
            pending: Mutex::new(HashMap::new()),
            renders: Arc::new(Semaphore::new(MAX_RENDERS)),
        }
    }

    /// True when the synthesiser runs; checked once at start, so that decisions do not name
    /// audio that can never be made.
    pub async fn available(&self) -> bool {
        let run = tokio::process::Command::new(&self.program)
            .arg("--version")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
        matches!(tokio::time::timeout(RENDER_TIMEOUT, run).await, Ok(Ok(s)) if s.success())
    }

    /// Names the audio of `text` in `lang` and starts rendering it if it is not there yet.
    pub fn announce(self: &Arc<Self>, text: &str, lang: &str) -> String {
        let voice = voice(lang);
        let hash = hash(voice, text);
        if self.path(&hash).exists() {
            return hash;
        }
        {
            let mut pending = self.pending.lock().expect("speech lock");
            if pending.contains_key(&hash) {
                return hash;
            }
            if pending.len() >= MAX_PENDING {
                pending.clear();
            }
            let entry = Pending {
                voice: voice.to_owned(),
                text: text.to_owned(),
                rendering: tokio::sync::Mutex::new(()),
            };
            pending.insert(hash.clone(), Arc::new(entry));
        }
        let speech = Arc::clone(self);
        let name = hash.clone();
        tokio::spawn(async move {
            if let Err(e) = speech.wav(&name).await {
                tracing::warn!(announcement = %name, error = %e, "announcement not rendered");
            }
        });
        hash
    }

    /// The WAV file of an announcement, rendered now if it is not there yet.
    pub async fn wav(&self, hash: &str) -> Result<Vec<u8>, SpeechError> {
        let valid = hash.len() == 32 && hash.bytes().all(|b| b.is_ascii_hexdigit());
        if !valid {
            return Err(SpeechError::Unknown(hash.chars().take(40).collect()));
        }
        let path = self.path(hash);
        if let Ok(bytes) = tokio::fs::read(&path).await {
            return Ok(bytes);
        }
        let pending = self
            .pending
            .lock()
            .expect("speech lock")
            .get(hash)
            .cloned()
            .ok_or_else(|| SpeechError::Unknown(hash.to_owned()))?;
        let _rendering = pending.rendering.lock().await;
        // Another request may have rendered it while this one waited.
        if let Ok(bytes) = tokio::fs::read(&path).await {
            return Ok(bytes);
        }
        let _permit =
            self.renders.acquire().await.map_err(|e| SpeechError::Failed(e.to_string()))?;
        self.render(&pending.voice, &pending.text, &path).await?;
        self.pending.lock().expect("speech lock").remove(hash);
        Ok(tokio::fs::read(&path).await?)
    }

    /// Deletes audio files not written for `max_age`, so that announcements of situations long
    /// past do not pile up; returns how many went. A file still wanted is rendered again.
    pub async fn prune(&self, max_age: Duration) -> std::io::Result<usize> {
        let mut entries = match tokio::fs::read_dir(&self.dir).await {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(e),
        };
        let mut removed = 0;
        while let Some(entry) = entries.next_entry().await? {
            let old = entry
                .metadata()
                .await
                .and_then(|m| m.modified())
                .is_ok_and(|t| t.elapsed().is_ok_and(|age| age > max_age));
            if old && tokio::fs::remove_file(entry.path()).await.is_ok() {
                removed += 1;
            }
        }
        Ok(removed)
    }

    fn path(&self, hash: &str) -> PathBuf {
        self.dir.join(format!("{hash}.wav"))
    }

    /// Runs the synthesiser into a temporary file and moves it in place, so that a reader
    /// never sees half a file.
    async fn render(&self, voice: &str, text: &str, path: &Path) -> Result<(), SpeechError> {
        tokio::fs::create_dir_all(&self.dir).await?;
        let partial = path.with_extension(format!("{}.part", std::process::id()));
        let mut command = tokio::process::Command::new(&self.program);
        command
            .args(["-v", voice, "-w"])
            .arg(&partial)
            .arg("--")
            .arg(text)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        let child = command
            .spawn()
            .map_err(|source| SpeechError::Missing { program: self.program.clone(), source })?;
        let output = match tokio::time::timeout(RENDER_TIMEOUT, child.wait_with_output()).await {
            Ok(output) => output?,
            Err(_) => {
                let _ = tokio::fs::remove_file(&partial).await;
                return Err(SpeechError::Failed(format!("no answer within {RENDER_TIMEOUT:?}")));
            }
        };
        if !output.status.success() {
            let _ = tokio::fs::remove_file(&partial).await;
            let stderr = String::from_utf8_lossy(&output.stderr);
            return Err(SpeechError::Failed(stderr.trim().chars().take(200).collect()));
        }
        tokio::fs::rename(&partial, path).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_depends_on_voice_and_text() {
        let a = hash("de", "Hallo");
        assert_eq!(a.len(), 32);
        assert_ne!(a, hash("en-gb", "Hallo"));
        assert_ne!(a, hash("de", "Hallo."));
        assert_eq!(a, hash("de", "Hallo"));
    }
}
